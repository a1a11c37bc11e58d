//! Every exit code preflight can return, in one place. The README's table is checked against
//! this list by `the_readme_lists_every_code`; `exit_codes_are_distinct` keeps the numbers
//! honest.

use std::process::ExitCode;

/// Why preflight ended. The numeric codes are part of the public interface: orchestrators and
/// scripts branch on them, so a code never changes meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every phase succeeded (and, for `run` in supervise mode, the app exited 0).
    Success,
    /// An internal error that fits no other code (a bug, or the OS refusing a basic call).
    Failure,
    /// A usage or configuration error: bad flag, malformed URL, bad duration. Nothing was touched.
    Usage,
    /// A dependency answered with an error waiting will not fix: wrong password, missing
    /// database, TLS misconfiguration.
    Dependency,
    /// A migration failed. The message says what state the database is left in.
    MigrationFailed,
    /// A migration is recorded as started but not finished (`success = false`).
    Dirty,
    /// An applied migration's file changed since (checksum mismatch).
    Changed,
    /// A migration is applied in the database but missing locally (see `--ignore-missing`).
    Missing,
    /// `--lock-timeout` passed while another process held the migration lock.
    LockTimeout,
    /// The pre-migration backup failed; no migration ran.
    BackupFailed,
    /// `status --check`: the schema is not current.
    NotCurrent,
    /// `--migrate-command` (or `--schema-check-command` in apply mode) exited non-zero.
    CommandFailed,
    /// A migration could not lock its tables within `--ddl-lock-timeout`, in every try: the
    /// app's open transactions held them. Nothing of it was applied.
    DdlBlocked,
    /// The overall deadline (`--timeout`) passed with a target still not ready.
    Timeout,
    /// The command was found but could not be executed (permissions, not an executable).
    NotExecutable,
    /// The command was not found on PATH.
    NotFound,
    /// Aborted by signal N: the process exits 128+N, as a shell would report it.
    Signal(i32),
    /// The supervised app exited with this status; preflight passes it through.
    Child(u8),
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Dependency => 3,
            // 10-19: migrations. 124-127 follow coreutils' timeout(1) and POSIX shells.
            Exit::MigrationFailed => 10,
            Exit::Dirty => 11,
            Exit::Changed => 12,
            Exit::Missing => 13,
            Exit::LockTimeout => 14,
            Exit::BackupFailed => 15,
            Exit::NotCurrent => 16,
            Exit::CommandFailed => 17,
            Exit::DdlBlocked => 18,
            Exit::Timeout => 124,
            Exit::NotExecutable => 126,
            Exit::NotFound => 127,
            Exit::Signal(n) => (128 + n) as u8,
            Exit::Child(code) => code,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code preflight itself decides. A new variant fails to compile in `fixed` until it
    /// is listed here, and then fails `the_readme_lists_every_code` until it is documented.
    const FIXED: [Exit; 16] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::Dependency,
        Exit::MigrationFailed,
        Exit::Dirty,
        Exit::Changed,
        Exit::Missing,
        Exit::LockTimeout,
        Exit::BackupFailed,
        Exit::NotCurrent,
        Exit::CommandFailed,
        Exit::DdlBlocked,
        Exit::Timeout,
        Exit::NotExecutable,
        Exit::NotFound,
    ];

    /// Whether `e` is in [`FIXED`]; the match has no wildcard on purpose.
    fn fixed(e: Exit) -> bool {
        match e {
            Exit::Success
            | Exit::Failure
            | Exit::Usage
            | Exit::Dependency
            | Exit::MigrationFailed
            | Exit::Dirty
            | Exit::Changed
            | Exit::Missing
            | Exit::LockTimeout
            | Exit::BackupFailed
            | Exit::NotCurrent
            | Exit::CommandFailed
            | Exit::DdlBlocked
            | Exit::Timeout
            | Exit::NotExecutable
            | Exit::NotFound => FIXED.contains(&e),
            Exit::Signal(_) | Exit::Child(_) => false,
        }
    }

    #[test]
    fn exit_codes_are_distinct() {
        assert!(FIXED.iter().all(|e| fixed(*e)));
        let mut codes: Vec<u8> = FIXED.iter().map(|e| e.code()).collect();
        codes.push(Exit::Signal(15).code());
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), FIXED.len() + 1);
    }

    #[test]
    fn the_readme_lists_every_code() {
        let readme = include_str!("../README.md");
        let table = readme.split("## Exit codes").nth(1).and_then(|t| t.split("\n## ").next()).unwrap();
        let mut documented: Vec<u8> =
            table.lines().filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok()).collect();
        documented.sort_unstable();
        let mut codes: Vec<u8> = FIXED.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        assert_eq!(documented, codes, "the README's exit-code table and exit.rs disagree");
        assert!(table.contains("| 128+N |") && table.contains("| other |"));
    }

    #[test]
    fn signals_map_to_128_plus_n() {
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::Signal(2).code(), 130);
        assert_eq!(Exit::Signal(9).code(), 137);
    }
}
