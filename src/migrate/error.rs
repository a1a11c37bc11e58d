//! What stops the migration phase. Each case carries what the message needs (the migration's
//! file, the database's error as its source, the state the database is left in) and chooses its
//! own exit code; it becomes the base [`Error`] at the phase's edge (`From`), so nothing above
//! the phase builds migration prose, and nothing in the phase picks exit codes by hand.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::classify::describe_sqlx;
use crate::error::Error;
use crate::exit::Exit;
use crate::redact::scrub_owned;

/// Where a failed migration leaves the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// In a transaction, rolled back whole.
    RolledBack,
    /// `-- no-transaction`: statements before the failing one may have taken effect.
    NoTransaction,
    /// MySQL/MariaDB commit DDL as they go; the row is dirty.
    MySqlDirty { version: i64 },
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Left::RolledBack => f.write_str("it was rolled back: nothing of it was applied"),
            Left::NoTransaction => f.write_str(
                "it ran without a transaction (-- no-transaction), so statements before the failure may have \
                 taken effect",
            ),
            Left::MySqlDirty { version } => write!(
                f,
                "MySQL commits DDL as it goes, so the database may be partially changed and the migration is \
                 recorded as dirty: repair the schema by hand, then DELETE FROM _sqlx_migrations WHERE version = \
                 {version} and run again"
            ),
        }
    }
}

/// Where a migration that gave up waiting for a table lock leaves the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    RolledBack,
    MySqlPartial,
    StatementsBefore,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Blocked::RolledBack => "it was rolled back, nothing of it was applied",
            Blocked::MySqlPartial => "MySQL may have applied part of it",
            Blocked::StatementsBefore => "the statements before the one that waited were applied",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    // ---- a migration failed: exit 3
    #[error(
        "migration {migration} failed{}: {}; {left}{}",
        at_line(*line),
        scrub_owned(&describe_sqlx(source)),
        earlier_note(*earlier, done)
    )]
    Failed {
        migration: String,
        line: Option<usize>,
        #[source]
        source: sqlx::Error,
        left: Left,
        /// Migrations of this run already `done` (applied, or reverted) before this one.
        earlier: usize,
        done: &'static str,
    },

    #[error(
        "{} failed{}: {}; nothing was applied (the whole batch was rolled back)",
        migration.as_deref().map_or_else(|| "the batch".to_owned(), |m| format!("migration {m}")),
        at_line(*line),
        scrub_owned(&describe_sqlx(source))
    )]
    BatchFailed {
        migration: Option<String>,
        line: Option<usize>,
        #[source]
        source: sqlx::Error,
    },

    /// What else sqlx's migrator reports (its message may quote the URL: scrubbed).
    #[error("{}", scrub_owned(&source.to_string()))]
    Migrator {
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    #[error("migration {migration} has no .down.sql, so it cannot be reverted; nothing was reverted")]
    NoDown { migration: String },

    #[error(
        "migration {migration} is marked -- no-transaction and cannot run inside --single-transaction; apply \
         it on its own or drop the flag; nothing was applied"
    )]
    NoTransactionInBatch { migration: String },

    #[error(
        "{what} '{program}' succeeded, but the database is {at}, not {expected}{next}: does env.py connect to \
         another database than preflight (it gets DATABASE_URL), or use another version table \
         (--alembic-version-table)?"
    )]
    ElsewhereAfterAlembic { what: String, program: String, at: String, expected: String, next: String },

    #[error("cannot open the lock file {}: {source}; the database's directory must be writable", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // ---- the database's record disagrees with the files
    #[error(
        "migration {migration} is dirty: it started and did not finish (success = false in _sqlx_migrations){}; \
         repair the schema by hand, then DELETE FROM _sqlx_migrations WHERE version = {version} and run again",
        if *mysql { ", and MySQL may have applied part of it" } else { "" }
    )]
    Dirty { migration: String, version: i64, mysql: bool },

    #[error(
        "migration {migration} changed after it was applied (checksum mismatch; CRLF line endings cause this \
         too): restore the file as it was applied, and put new changes in a new migration"
    )]
    Changed { migration: String },

    #[error(
        "migration {version} ({description}) is applied in the database but missing from {}: restore the file, \
         or pass --ignore-missing if a newer release applied it",
        dir.display()
    )]
    Missing { version: i64, description: String, dir: PathBuf },

    #[error(
        "{table} names revision(s) {} that no revision file in {locations} has: restore the files, or pass \
         --ignore-missing if a newer release applied them",
        revisions.join(", ")
    )]
    MissingRevisions { table: String, revisions: Vec<String>, locations: String },

    // ---- waits that ran out
    #[error(
        "could not take the migration lock on {target} within {}{}: another migration is still running; raise \
         --lock-timeout, or find and stop the holder",
        humantime::format_duration(*within),
        holder.as_deref().map(|h| format!(" (held by {h})")).unwrap_or_default()
    )]
    LockTimeout { target: String, within: Duration, holder: Option<String> },

    #[error(
        "migration {migration} could not lock its tables within {waited} ({tries} tries); {left}; {done} \
         migrations before it were applied; the oldest open transactions here: {blockers}; end them (or wait \
         until they end) and run again, or raise --ddl-lock-timeout / --ddl-retries"
    )]
    DdlBlocked { migration: String, waited: String, tries: u32, left: Blocked, done: usize, blockers: String },

    #[error(
        "the schema is still not current after {}: is the writer (a process with --schema apply) running? Raise \
         --timeout if its migrations take longer",
        humantime::format_duration(*waited)
    )]
    NeverCurrent { waited: Duration },

    #[error("the schema is not current (see the list above)")]
    NotCurrent,

    // ---- commands
    #[error(
        "the migration command '{program}' failed ({status}); its own output above says why; the database is \
         in whatever state the command left it"
    )]
    CommandFailed { program: String, status: ExitStatus },

    #[error(
        "the schema check command '{program}' is broken ({status}): a check exits 0 when the schema is current \
         and 1 when not; exit 2 usually means an option its version lacks (Alembic before 1.17 has no \
         `current --check-heads`: use --alembic-config instead)"
    )]
    CheckBroken { program: String, status: ExitStatus },

    #[error(
        "{what} '{program}' failed ({status}); the database is {at}{next}; Alembic's own output above says why"
    )]
    AlembicFailed { what: String, program: String, status: ExitStatus, at: String, next: String },

    #[error("backup failed, so no migration ran: {why}; fix the backup or drop {flag}")]
    Backup { flag: &'static str, why: String },

    // ---- asked for what the database's state does not allow: exit 2, nothing touched
    #[error("--steps {steps}: only {applied} {unit} applied{at}; use fewer, or --to {all}")]
    TooManySteps { steps: u32, applied: usize, unit: &'static str, at: String, all: &'static str },

    #[error("--to {spec}: {what} is not applied{at}; revert only goes back, migrate goes forward")]
    NotApplied { spec: String, what: String, at: String },

    #[error(
        "the database is {at}, on {branches} branches: --steps does not say which to go back on; name the \
         revision to go back to with --to"
    )]
    WhichBranch { at: String, branches: usize },

    #[error(
        "the version table {table} is not one Alembic wrote: {why}; give the table env.py uses with \
         --alembic-version-table (Alembic's default is alembic_version)"
    )]
    ForeignVersionTable { table: String, why: String },

    #[error(
        "the version table {table} holds {older} and {newer}, and {newer} descends from {older}: Alembic refuses \
         such a table (\"overlaps with other requested revisions\"); delete the row {older}"
    )]
    Overlapping { table: String, older: String, newer: String },

    #[error("{flag} '{raw}': give a migration version (the number before '_' in its file name)")]
    NotAVersion { flag: String, raw: String },

    #[error("--alembic-config {}: {why}", ini.display())]
    AlembicIni { ini: PathBuf, why: String },

    #[error("revision file {}: {why}; preflight reads revision files without running them", file.display())]
    RevisionFile { file: PathBuf, why: String },

    #[error(
        "--alembic-version-table '{name}': write a table name (letters, digits, _), optionally with its schema: \
         schema.table"
    )]
    VersionTableName { name: String },

    /// A revision the project's graph cannot resolve (the graph's own message).
    #[error("{0}")]
    Revision(String),
}

impl MigrateError {
    pub fn exit(&self) -> Exit {
        use MigrateError::*;
        match self {
            Failed { .. }
            | BatchFailed { .. }
            | Migrator { .. }
            | NoDown { .. }
            | NoTransactionInBatch { .. }
            | ElsewhereAfterAlembic { .. }
            | LockFile { .. } => Exit::MigrationFailed,
            Dirty { .. } => Exit::Dirty,
            Changed { .. } => Exit::Changed,
            Missing { .. } | MissingRevisions { .. } => Exit::Missing,
            LockTimeout { .. } => Exit::LockTimeout,
            DdlBlocked { .. } => Exit::DdlBlocked,
            NeverCurrent { .. } => Exit::Timeout,
            NotCurrent => Exit::NotCurrent,
            CommandFailed { .. } | CheckBroken { .. } | AlembicFailed { .. } => Exit::CommandFailed,
            Backup { .. } => Exit::BackupFailed,
            TooManySteps { .. }
            | NotApplied { .. }
            | WhichBranch { .. }
            | ForeignVersionTable { .. }
            | Overlapping { .. }
            | NotAVersion { .. }
            | AlembicIni { .. }
            | RevisionFile { .. }
            | VersionTableName { .. }
            | Revision(_) => Exit::Usage,
        }
    }
}

impl From<MigrateError> for Error {
    fn from(e: MigrateError) -> Error {
        match e.exit() {
            Exit::Usage => Error::Usage(Box::new(e)),
            exit => Error::Migrate { exit, source: Box::new(e) },
        }
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

fn earlier_note(earlier: usize, done: &str) -> String {
    if earlier > 0 {
        format!("; {earlier} earlier migration(s) of this run stay {done}")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_cases_become_usage_errors_and_the_rest_keep_their_code() {
        let usage: Error = MigrateError::Revision("no such revision".into()).into();
        assert!(matches!(usage, Error::Usage(_)));
        assert_eq!(usage.exit(), Exit::Usage);
        let blocked: Error = MigrateError::DdlBlocked {
            migration: "2_b.sql".into(),
            waited: "5s".into(),
            tries: 6,
            left: Blocked::RolledBack,
            done: 1,
            blockers: "unknown".into(),
        }
        .into();
        assert_eq!(blocked.exit(), Exit::DdlBlocked);
        assert!(
            blocked
                .to_string()
                .starts_with("migration 2_b.sql could not lock its tables within 5s (6 tries)")
        );
        // The migration error is the source, not a copy of its prose.
        let source = std::error::Error::source(&blocked).expect("a source");
        assert!(source.downcast_ref::<MigrateError>().is_some());
    }

    #[test]
    fn a_failed_migration_keeps_the_database_error_as_its_source() {
        let e = MigrateError::Failed {
            migration: "1_a.sql".into(),
            line: Some(3),
            source: sqlx::Error::Protocol("boom".into()),
            left: Left::MySqlDirty { version: 1 },
            earlier: 2,
            done: "applied",
        };
        let text = e.to_string();
        assert!(text.starts_with("migration 1_a.sql failed at line 3: "), "{text}");
        assert!(
            text.contains("WHERE version = 1 and run again; 2 earlier migration(s) of this run stay applied")
        );
        assert!(std::error::Error::source(&e).unwrap().downcast_ref::<sqlx::Error>().is_some());
        assert_eq!(e.exit(), Exit::MigrationFailed);
    }
}
