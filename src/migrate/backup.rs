//! Backups taken under the lock before anything changes: a consistent SQLite copy made with
//! `VACUUM INTO`, or the operator's own command (`pg_dump`, `mysqldump`). A failed backup stops
//! the phase before any migration runs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::info;

use super::{MigrateConfig, command_env};
use crate::db::DbConn;
use crate::error::Error;
use crate::target::Target;

#[derive(Debug, Clone)]
pub enum Backup {
    /// `VACUUM INTO <dir>/<stem>-<stamp>.db`, keeping the newest `keep` such files.
    Sqlite { dir: PathBuf, stem: String, keep: usize },
    /// A command, split into argv; `$VAR` is expanded when it runs.
    Command(Vec<String>),
}

/// A UTC timestamp that sorts as it reads: `20261122T194000123Z`.
pub fn stamp(now: SystemTime) -> String {
    humantime::format_rfc3339_millis(now).to_string().replace(['-', ':', '.'], "")
}

pub async fn take(
    backup: &Backup,
    conn: &mut DbConn,
    config: &MigrateConfig,
    target: &Target,
) -> Result<(), Error> {
    let stamp = stamp(SystemTime::now());
    match backup {
        Backup::Sqlite { dir, stem, keep } => {
            let DbConn::Sqlite(c) = conn else {
                return Err(failed(backup, "--backup copies SQLite databases only".into()));
            };
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(backup, format!("cannot create {}: {e}", dir.display())))?;
            // Written under a temporary name, synced, then renamed: a backup that failed half
            // way (a full disk, a kill) never carries a backup's name, so it is never counted
            // as one, and never makes pruning delete a good one. What a killed run left behind
            // is removed now: the lock is ours, so no other run is writing it.
            remove_partials(dir, stem);
            let file = dir.join(format!("{stem}-{stamp}.db"));
            // The partial name carries our PID: a run for another database of the same name
            // in the same folder removes only what a dead run left.
            let partial = dir.join(format!(".{stem}-{stamp}.{}.db.partial", std::process::id()));
            let written = async {
                sqlx::query("VACUUM INTO ?")
                    .bind(partial.to_string_lossy().into_owned())
                    .execute(&mut *c)
                    .await
                    .map_err(|e| format!("VACUUM INTO {}: {e}", file.display()))?;
                std::fs::File::open(&partial)
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&partial, &file))
                    .and_then(|()| std::fs::File::open(dir).and_then(|d| d.sync_all()))
                    .map_err(|e| format!("cannot finish {}: {e}", file.display()))
            }
            .await;
            if let Err(why) = written {
                remove_partials(dir, stem);
                return Err(failed(backup, format!("{why}; no partial file was left")));
            }
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            info!(file = %file.display(), bytes = size, "backup written");
            for old in prune(dir, stem, *keep).into_iter().filter(|old| *old != file) {
                match std::fs::remove_file(&old) {
                    Ok(()) => info!(file = %old.display(), "old backup removed"),
                    Err(e) => {
                        tracing::warn!(file = %old.display(), error = %e, "cannot remove an old backup")
                    }
                }
            }
            Ok(())
        }
        Backup::Command(argv) => {
            let mut env = command_env(config, target, target.url.expose().to_owned());
            env.push(("PREFLIGHT_BACKUP_STAMP", stamp.clone()));
            let lookup = |k: &str| match env.iter().find(|(name, _)| *name == k) {
                Some((_, v)) => Some(v.clone()),
                None => std::env::var(k).ok(),
            };
            // Logged and reported as written: an expanded value may be a secret.
            let shown = &argv[0];
            let argv: Vec<String> = argv.iter().map(|a| expand(a, lookup)).collect();
            let status = match super::process::run(&argv, shown, "backup command", &env).await {
                Ok(status) => status,
                // Not the app's exit code 127: the backup failed, and nothing was migrated.
                Err(e @ Error::Exec { .. }) => {
                    return Err(failed(backup, format!("{e}; nothing was backed up")));
                }
                Err(e) => return Err(e),
            };
            if !status.success() {
                return Err(failed(
                    backup,
                    format!(
                        "the backup command '{shown}' failed ({status}); whatever it wrote may be incomplete, \
                         check it before relying on it"
                    ),
                ));
            }
            info!(command = %shown, "backup command done");
            Ok(())
        }
    }
}

fn failed(backup: &Backup, why: String) -> Error {
    let flag = match backup {
        Backup::Sqlite { .. } => "--backup",
        Backup::Command(_) => "--backup-command",
    };
    super::error::MigrateError::Backup { flag, why }.into()
}

/// Removes what unfinished backups of `stem` left in `dir` (the file and SQLite's journals)
/// when the run that wrote them is gone: ours, after a failure, or a killed one's.
fn remove_partials(dir: &Path, stem: &str) {
    let prefix = format!(".{stem}-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        let Some(head) = rest.split(".db.partial").next().filter(|_| rest.contains(".db.partial")) else {
            continue;
        };
        // `STAMP.PID`; a file without a PID is an older preflight's: gone.
        let writer = head.rsplit_once('.').and_then(|(_, pid)| pid.parse::<i32>().ok());
        let alive = writer.is_some_and(|pid| {
            pid as u32 != std::process::id()
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        });
        if !alive {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => info!(file = %entry.path().display(), "unfinished backup removed"),
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unfinished backup")
                }
            }
        }
    }
}

/// `20261122T194000123Z` and a real date and time: a file named otherwise is not ours.
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 19 || b[8] != b'T' || b[18] != b'Z' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        std::str::from_utf8(&b[r]).ok().filter(|d| d.bytes().all(|c| c.is_ascii_digit()))?.parse().ok()
    };
    let (Some(month), Some(day), Some(hour), Some(min), Some(sec), Some(_ms)) =
        (digits(4..6), digits(6..8), digits(9..11), digits(11..13), digits(13..15), digits(15..18))
    else {
        return false;
    };
    digits(0..4).is_some()
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && min < 60
        && sec < 61
}

/// The backups of `stem` in `dir` beyond the newest `keep`, oldest first. Several databases
/// named alike should each have their own `--backup-dir`: they would share the count.
fn prune(dir: &Path, stem: &str, keep: usize) -> Vec<PathBuf> {
    let prefix = format!("{stem}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    p.is_file()
                        && name
                            .strip_prefix(&prefix)
                            .and_then(|rest| rest.strip_suffix(".db"))
                            .is_some_and(is_stamp)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let excess = found.len().saturating_sub(keep);
    found.truncate(excess);
    found
}

/// Expands `$NAME` and `${NAME}` using `lookup`; unknown names expand to nothing, `$$` to `$`.
pub fn expand(arg: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                out.push_str(&lookup(&name).unwrap_or_default());
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let mut name = String::new();
                while let Some(c) = chars.peek().filter(|c| c.is_ascii_alphanumeric() || **c == '_') {
                    name.push(*c);
                    chars.next();
                }
                out.push_str(&lookup(&name).unwrap_or_default());
            }
            _ => out.push('$'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_handles_both_forms_and_escapes() {
        let env = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://x".to_owned()),
            "S" => Some("1".to_owned()),
            _ => None,
        };
        assert_eq!(expand("$DATABASE_URL", env), "postgres://x");
        assert_eq!(expand("/b/app-${S}.dump", env), "/b/app-1.dump");
        assert_eq!(expand("cost $$5 and $ alone, $NOPE.", env), "cost $5 and $ alone, .");
    }

    #[test]
    fn stamps_sort_as_time() {
        let a = stamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_000));
        let b = stamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_001));
        assert_eq!(a, "19700101T000001000Z");
        assert!(a < b);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for s in ["20260101T000000000Z", "20260102T000000000Z", "20260103T000000000Z"] {
            std::fs::write(dir.path().join(format!("app-{s}.db")), "").unwrap();
        }
        std::fs::write(dir.path().join("app.db"), "").unwrap();
        std::fs::write(dir.path().join("other-20260101T000000000Z.db"), "").unwrap();
        let old = prune(dir.path(), "app", 2);
        assert_eq!(old, [dir.path().join("app-20260101T000000000Z.db")]);
    }
}
