//! A folder of sqlx-format migration files, read and validated whole before anything connects.
//!
//! sqlx's own resolver skips what it does not recognize, and keeps the last of two files with
//! one version: `1-init.sql`, `2_init.SQL` or a `.down.sql` without its up file are ignored
//! without a word, `+5_x.sql` is version 5, and `1_a.sql` beside `01_b.sql` applies one of them
//! and reports the other as "changed" on every later run. Here each of those is refused, naming
//! the files. What is accepted is read as sqlx reads it (version, description, checksum over
//! the text as written), so databases migrated by sqlx-cli agree with preflight; a UTF-8 byte
//! order mark is dropped from the SQL that runs and from the `-- no-transaction` test.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sqlx::migrate::{Migration, MigrationType};

use super::statements::{Dialect, split, transaction_control};
use sqlx::{AssertSqlSafe, SqlSafeStr};

/// The migrations of one folder, ordered by version, ups before downs.
#[derive(Debug)]
pub struct Folder {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
    /// The file each (version, up or down) came from.
    pub files: BTreeMap<(i64, bool), String>,
}

const FORM: &str =
    "name migrations VERSION_DESCRIPTION.sql (or .up.sql/.down.sql), e.g. 20240101120000_add_users.sql";

impl Folder {
    /// Reads `dir`. Every error names the file and says how to fix it.
    pub fn read(dir: &Path) -> Result<Folder, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list it ({e})"))?;
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list it ({e})"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Hidden files and other extensions (README.md, .gitkeep) are not migrations.
            // (`1_x.sql ` with a blank at the end is looked at: refused below, not ignored.)
            if name.starts_with('.') || !name.trim_end().to_ascii_lowercase().ends_with(".sql") {
                continue;
            }
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(format!(
                        "{name} is named like a migration but is not a file: rename or move it"
                    ));
                }
                // A link to nothing: skipping it would apply the versions after it.
                Err(e) => return Err(format!("cannot read {name} ({e}): fix or remove it")),
            }
            names.push(name);
        }
        names.sort();
        let mut migrations = Vec::new();
        let mut files: BTreeMap<(i64, bool), String> = BTreeMap::new();
        for name in names {
            let (version, kind, description) = parse_name(&name)?;
            let down = kind == MigrationType::ReversibleDown;
            if let Some(other) = files.get(&(version, down)) {
                return Err(format!(
                    "{other} and {name} have the same version {version}: give one of them another version"
                ));
            }
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => format!("{name} is not UTF-8 text: save it as UTF-8"),
                _ => format!("cannot read {name} ({e})"),
            })?;
            let checksum = sqlx::migrate::Migration::new(
                version,
                Cow::Owned(description.clone()),
                kind,
                AssertSqlSafe(text.clone()).into_sql_str(),
                false,
            )
            .checksum;
            let sql = text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned();
            let no_tx = sql.starts_with("-- no-transaction");
            let mut migration = Migration::new(
                version,
                Cow::Owned(description),
                kind,
                AssertSqlSafe(sql).into_sql_str(),
                no_tx,
            );
            migration.checksum = checksum;
            migrations.push(migration);
            files.insert((version, down), name);
        }
        for (&(version, down), name) in &files {
            if down && !files.contains_key(&(version, false)) {
                return Err(format!(
                    "{name} has no up migration ({version}_….up.sql): add it, or remove the down file"
                ));
            }
        }
        migrations.sort_by_key(|m| (m.version, m.migration_type == MigrationType::ReversibleDown));
        Ok(Folder { dir: dir.to_path_buf(), migrations, files })
    }

    /// Refuses a transactional migration that controls the transaction itself: its `COMMIT`
    /// would end the migration's transaction half way, and what follows would run, and fail,
    /// outside it, with the first half applied and the migration not recorded.
    pub fn check_statements(&self, dialect: Dialect) -> Result<(), String> {
        for m in self.migrations.iter().filter(|m| !m.no_tx) {
            let statements = split(m.sql.as_str(), dialect);
            if let Some(s) = transaction_control(&statements) {
                let down = m.migration_type == MigrationType::ReversibleDown;
                let file = self.files.get(&(m.version, down)).map_or("?", String::as_str);
                let first: String = s.text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                return Err(format!(
                    "{file}, line {}: `{first}` controls the transaction, but each migration runs inside one \
                     that preflight commits; remove it, or put `-- no-transaction` on the file's first line",
                    s.line
                ));
            }
        }
        Ok(())
    }

    /// Whether `version` is one of the folder's (up) migrations.
    pub fn has(&self, version: i64) -> bool {
        self.files.contains_key(&(version, false))
    }
}

/// `VERSION_DESCRIPTION.sql`: the version is digits only, the extension lower case.
fn parse_name(name: &str) -> Result<(i64, MigrationType, String), String> {
    if name.trim() != name {
        return Err(format!("'{name}' starts or ends with a blank: rename it; {FORM}"));
    }
    if !name.ends_with(".sql") {
        return Err(format!(
            "{name}: the extension must be .sql in lower case, or the file is ignored; {FORM}"
        ));
    }
    let Some((version, rest)) = name.split_once('_') else {
        return Err(format!("{name} has no '_' after its version; {FORM}"));
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name}: the version '{version}' must be digits only; {FORM}"));
    }
    let version: i64 = version
        .parse()
        .map_err(|_| format!("{name}: the version {version} is too large for a 64-bit number"))?;
    let kind = MigrationType::from_filename(rest);
    // `x.DOWN.sql` would be taken for a simple migration named "x.DOWN", and applied.
    let lower = rest.to_ascii_lowercase();
    if kind == MigrationType::Simple && (lower.ends_with(".up.sql") || lower.ends_with(".down.sql")) {
        return Err(format!(
            "{name}: write .up.sql and .down.sql in lower case, or the file is applied as a simple migration; {FORM}"
        ));
    }
    let description = rest.trim_end_matches(kind.suffix()).replace('_', " ");
    Ok((version, kind, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Folder, String>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, sql) in files {
            std::fs::write(dir.path().join(name), sql).unwrap();
        }
        let read = Folder::read(dir.path());
        (dir, read)
    }

    /// The checksum sqlx gives this text.
    fn plain_checksum(text: &str) -> Cow<'static, [u8]> {
        let sql = AssertSqlSafe(text.to_owned()).into_sql_str();
        Migration::new(1, Cow::Borrowed(""), MigrationType::Simple, sql, false).checksum
    }

    #[test]
    fn the_sqlx_forms_are_read_with_sqlx_checksums() {
        let (_d, f) = folder(&[
            ("1_create.sql", "CREATE TABLE a (id INT);\n"),
            ("2_pair.up.sql", "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON a (id);\n"),
            ("2_pair.down.sql", "DROP INDEX i;\n"),
            ("README.md", "not a migration"),
            (".hidden.sql", "ignored"),
        ]);
        let f = f.unwrap();
        let kinds: Vec<_> = f.migrations.iter().map(|m| (m.version, m.migration_type, m.no_tx)).collect();
        assert_eq!(
            kinds,
            [
                (1, MigrationType::Simple, false),
                (2, MigrationType::ReversibleUp, true),
                (2, MigrationType::ReversibleDown, false)
            ]
        );
        assert_eq!(f.migrations[0].description, "create");
        assert_eq!(f.migrations[0].checksum, plain_checksum("CREATE TABLE a (id INT);\n"));
        assert!(f.has(2) && !f.has(3));
    }

    #[test]
    fn a_byte_order_mark_is_dropped_from_what_runs_not_from_the_checksum() {
        let text = "\u{feff}-- no-transaction\nVACUUM;\n";
        let (_d, f) = folder(&[("1_vacuum.sql", text)]);
        let m = &f.unwrap().migrations[0];
        assert!(m.no_tx);
        assert!(m.sql.as_str().starts_with("-- no-transaction"));
        assert_eq!(m.checksum, plain_checksum(text));
    }

    #[test]
    fn names_sqlx_would_skip_or_misread_are_refused() {
        for (files, says) in [
            (vec!["1-init.sql"], "has no '_'"),
            (vec!["2_init.SQL"], "lower case"),
            (vec!["+5_x.sql"], "digits only"),
            (vec!["-1_x.sql"], "digits only"),
            (vec!["99999999999999999999_x.sql"], "too large"),
            (vec!["1_a.sql", "01_b.sql"], "same version 1"),
            (vec!["1_a.sql", "1_a.up.sql"], "same version 1"),
            (vec!["3_x.down.sql"], "no up migration"),
            (vec!["2_a.up.sql", "2_b.DOWN.sql"], "lower case"),
            (vec!["2_a.UP.sql"], "lower case"),
            (vec!["1_x.sql "], "ends with a blank"),
        ] {
            let contents: Vec<(&str, &str)> = files.iter().map(|n| (*n, "SELECT 1;")).collect();
            let (_d, f) = folder(&contents);
            let err = f.unwrap_err();
            assert!(err.contains(says) && err.contains(files[files.len() - 1]), "{files:?}: {err}");
        }
        let (d, _) = folder(&[]);
        std::fs::write(d.path().join("1_latin1.sql"), b"SELECT '\xe9';").unwrap();
        assert!(Folder::read(d.path()).unwrap_err().contains("not UTF-8"));
    }
}
