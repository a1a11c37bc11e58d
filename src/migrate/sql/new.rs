//! `preflight migrate new NAME`: the next migration file, named as sqlx-cli names it, so
//! nobody needs a second tool to start one.
//!
//! The version is the UTC time (`20261203101300_add_users.sql`), or, in a folder whose
//! migrations are numbered 1, 2, 3…, the next number at the same width (`0004_add_users.sql`).
//! `--reversible` (or a folder that already uses `.up.sql`/`.down.sql`) makes the pair.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Versions below this are sequence numbers; timestamps have 14 digits.
const TIMESTAMPS_FROM: i64 = 10_000_000_000;

/// Creates the file(s) in `dir` (created if missing) and returns their paths. `now` is the
/// clock (a parameter for the tests).
pub fn create(dir: &Path, name: &str, reversible: bool, now: SystemTime) -> Result<Vec<PathBuf>, String> {
    let slug = slug(name)?;
    let existing = existing(dir)?;
    let reversible = reversible || existing.iter().any(|(_, _, up)| *up);
    let latest = existing.iter().map(|(v, _, _)| *v).max();
    let version = match latest {
        Some(latest) if latest < TIMESTAMPS_FROM => {
            let width = existing.iter().map(|(_, digits, _)| *digits).max().unwrap_or(1);
            format!("{:0width$}", latest + 1)
        }
        latest => {
            let stamp: i64 = timestamp(now).parse().expect("digits");
            // A clock behind the newest file must not put the new one before it.
            latest.map_or(stamp, |l| stamp.max(l + 1)).to_string()
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {} ({e})", dir.display()))?;
    let names: Vec<String> = if reversible {
        vec![format!("{version}_{slug}.up.sql"), format!("{version}_{slug}.down.sql")]
    } else {
        vec![format!("{version}_{slug}.sql")]
    };
    let mut created = Vec::new();
    for (i, file) in names.iter().enumerate() {
        let path = dir.join(file);
        let body = match (reversible, i) {
            (false, _) => format!("-- {name}\n"),
            (true, 0) => format!("-- {name}\n"),
            (true, _) => format!("-- Revert: {name}\n"),
        };
        // create_new: never overwrite a migration someone wrote in the same second.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()));
        if let Err(e) = written {
            for done in &created {
                let _ = std::fs::remove_file(done);
            }
            return Err(format!("cannot create {} ({e})", path.display()));
        }
        created.push(path);
    }
    Ok(created)
}

/// `add users` → `add_users`; letters, digits, `_` and `-` only.
fn slug(name: &str) -> Result<String, String> {
    let slug: String = name.trim().chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
    if slug.is_empty() || !slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "'{name}' cannot be a migration name: use letters, digits, spaces, _ and -, e.g. add_users"
        ));
    }
    Ok(slug)
}

/// (version, its number of digits, whether it is an `.up.sql`) for each migration file.
fn existing(dir: &Path) -> Result<Vec<(i64, usize, bool)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {} ({e})", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((digits, rest)) = name.split_once('_') else { continue };
        if !name.ends_with(".sql") || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(version) = digits.parse::<i64>() {
            found.push((version, digits.len(), rest.ends_with(".up.sql")));
        }
    }
    Ok(found)
}

/// `YYYYMMDDhhmmss` in UTC.
fn timestamp(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now).to_string().chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_new_folder_gets_a_timestamped_file_and_the_pair_when_reversible() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("migrations");
        // 2026-12-03T10:13:00Z
        let made = create(&folder, "add users", false, at(1_796_292_780)).unwrap();
        assert_eq!(names(&made), ["20261203101300_add_users.sql"]);
        assert_eq!(std::fs::read_to_string(&made[0]).unwrap(), "-- add users\n");
        let made = create(&folder, "add_orders", true, at(1_796_292_781)).unwrap();
        assert_eq!(names(&made), ["20261203101301_add_orders.up.sql", "20261203101301_add_orders.down.sql"]);
        // The folder now uses pairs: the next one is a pair too; a clock behind the newest
        // file still sorts after it.
        let made = create(&folder, "late", false, at(1_000_000_000)).unwrap();
        assert_eq!(names(&made), ["20261203101302_late.up.sql", "20261203101302_late.down.sql"]);
    }

    #[test]
    fn a_numbered_folder_gets_the_next_number_at_its_width() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["0001_init.sql", "0002_users.sql", "README.md"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let made = create(dir.path(), "orders", false, at(1_796_292_780)).unwrap();
        assert_eq!(names(&made), ["0003_orders.sql"]);
    }

    #[test]
    fn bad_names_are_refused_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../escape", "a/b", "drop;table"] {
            assert!(
                create(dir.path(), bad, false, at(1_796_292_780))
                    .unwrap_err()
                    .contains("cannot be a migration name")
            );
        }
        // A file already at this second's version: the new one goes after it, never over it.
        std::fs::write(dir.path().join("20261203101300_x.down.sql"), "keep").unwrap();
        let made = create(dir.path(), "x", true, at(1_796_292_780)).unwrap();
        assert_eq!(names(&made), ["20261203101301_x.up.sql", "20261203101301_x.down.sql"]);
        assert_eq!(std::fs::read_to_string(dir.path().join("20261203101300_x.down.sql")).unwrap(), "keep");
        // A folder that cannot be created is an error naming it.
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(create(&file.join("sub"), "x", false, at(1_796_292_780)).unwrap_err().contains("a-file/sub"));
    }
}
