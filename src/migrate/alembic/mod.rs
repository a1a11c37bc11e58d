//! The Alembic source: an Alembic project, read without Python.
//!
//! Starting Python and importing SQLAlchemy costs about a second, on every boot of every replica,
//! just to learn that nothing is to be done; and `alembic current --check-heads` does not exist
//! before Alembic 1.17. So preflight reads the project itself: `alembic.ini` (`ini`), every
//! revision file's identifiers (`script`), the revision graph and its heads (`graph`), and the
//! rows of `alembic_version` through the connection the wait phase already has. Alembic runs only
//! when something is to be done: `alembic -c INI upgrade heads` (or `stamp`, `downgrade`) under the
//! cluster-wide lock, after which the rows are read again to check that the database is where the
//! command should have left it, and to say where it stopped when it is not.

pub mod graph;
mod ini;
mod script;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::error::MigrateError;
use super::{Action, MigrateConfig, Reading, SchemaSource, backup, command_env, db_error, process, store};
use crate::db::DbConn;
use crate::error::Error;
use crate::target::Target;
use graph::{Graph, Position, Revision};

/// An Alembic project, read once, before anything connects.
#[derive(Debug)]
pub struct Project {
    /// The ini file as given: the commands get `-c` with it.
    pub ini: PathBuf,
    pub graph: Graph,
    /// Where the revision files were looked for, for messages.
    pub locations: Vec<PathBuf>,
    /// `alembic_version`, or what `--alembic-version-table` says env.py uses.
    pub version_table: String,
}

impl Project {
    /// Reads `ini` and every revision file it points at. Every error is a configuration error
    /// (exit 2) that names the file.
    pub fn load(ini: &Path, version_table: &str) -> Result<Project, Error> {
        let bad = |why: String| Error::from(MigrateError::AlembicIni { ini: ini.to_path_buf(), why });
        if !valid_table_name(version_table) {
            return Err(MigrateError::VersionTableName { name: version_table.to_owned() }.into());
        }
        let text = std::fs::read_to_string(ini).map_err(|e| bad(format!("cannot read it ({e})")))?;
        let here = std::path::absolute(ini)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let section = ini::section(&text, "alembic", &here)
            .map_err(|e| bad(e.0))?
            .ok_or_else(|| bad("it has no [alembic] section: is it Alembic's ini file?".into()))?;
        let get = |key: &str| section.get(key).map_err(|e| bad(e.0));
        let script_location = get("script_location")?.ok_or_else(|| {
            let toml = ini.parent().map(|d| d.join("pyproject.toml")).filter(|t| t.is_file());
            bad(format!(
                "[alembic] has no script_location: set it to the folder that holds env.py{}",
                if toml.is_some() {
                    " (preflight reads alembic.ini only, not pyproject.toml's [tool.alembic]: put \
                     script_location and version_locations in alembic.ini)"
                } else {
                    ""
                }
            ))
        })?;
        if section.boolean("sourceless").map_err(|e| bad(e.0))? {
            return Err(bad(
                "sourceless = true: preflight reads revision .py files and cannot read .pyc-only projects"
                    .into(),
            ));
        }
        let recursive = section.boolean("recursive_version_locations").map_err(|e| bad(e.0))?;
        // Package resources (`myapp:migrations`) are looked for where Python would import them from.
        let mut search = vec![PathBuf::from(".")];
        if let Some(paths) = get("prepend_sys_path")? {
            search.extend(
                ini::split_locations(&section, &paths).map_err(|e| bad(e.0))?.into_iter().map(PathBuf::from),
            );
        }
        let script_dir = ini::resolve_location(&script_location, &search).map_err(bad)?;
        if !script_dir.is_dir() {
            return Err(bad(format!(
                "script_location {} is not a folder (a relative path is read from the working directory, as \
                 Alembic does; %(here)s/… is relative to the ini file)",
                script_dir.display()
            )));
        }
        let locations = match get("version_locations")? {
            Some(raw) => ini::split_locations(&section, &raw)
                .map_err(|e| bad(e.0))?
                .iter()
                .map(|l| ini::resolve_location(l, &search))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?,
            None => vec![script_dir.join("versions")],
        };
        // A file reached twice (a folder listed twice, a location inside another, two links to
        // one file) is read once, as Alembic does: by its real path. Folders are resolved once
        // each; only a file that is itself a link costs a lookup of its own.
        let mut seen = BTreeSet::new();
        let mut files = Vec::new();
        for location in &locations {
            if !location.is_dir() {
                // Alembic skips it without a word; a typo here means no revision is ever read.
                warn!(location = %location.display(), "an Alembic version location does not exist: no revision is read from it");
                continue;
            }
            let real = location.canonicalize().unwrap_or_else(|_| location.clone());
            for (file, link) in revision_files(location, recursive).map_err(|e| bad(e.to_string()))? {
                let key = if link {
                    file.canonicalize().unwrap_or_else(|_| file.clone())
                } else {
                    real.join(file.strip_prefix(location).unwrap_or(&file))
                };
                if seen.insert(key) {
                    files.push(file);
                }
            }
        }
        if files.is_empty() {
            warn!(ini = %ini.display(), "no revision file found: is script_location or version_locations right?");
        }
        let revisions = read_revisions(&files)?;
        let graph = Graph::new(revisions).map_err(bad)?;
        Ok(Project { ini: ini.to_path_buf(), graph, locations, version_table: version_table.to_owned() })
    }

    /// The argv of `alembic -c INI VERB ARGS…`.
    fn alembic(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec!["alembic".to_owned(), "-c".to_owned(), self.ini.display().to_string()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }
}

fn valid_table_name(name: &str) -> bool {
    let part = |p: &str| {
        p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

/// The `.py` files Alembic would load from `dir`, sorted as it sorts them, each with whether it
/// is a symbolic link. As Alembic's walk, a recursive scan does not enter linked folders.
fn revision_files(dir: &Path, recursive: bool) -> std::io::Result<Vec<(PathBuf, bool)>> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // The entry's type comes with the listing; only a symlink costs a stat.
        let Ok(kind) = entry.file_type() else { continue };
        let link = kind.is_symlink();
        if kind.is_dir() || (link && path.is_dir()) {
            if recursive && !link && name != "__pycache__" {
                dirs.push(path);
            }
            continue;
        }
        // Alembic matches a link by the name of the file it resolves to.
        let name = match link {
            true => match path.canonicalize() {
                Ok(real) => real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                Err(_) => continue,
            },
            false => name,
        };
        if name.ends_with(".py") && !name.starts_with(".#") && !name.starts_with("__init__") {
            files.push((path, link));
        }
    }
    for d in dirs {
        files.extend(revision_files(&d, recursive)?);
    }
    Ok(files)
}

/// Reads the revision files in order, through one buffer.
fn read_revisions(files: &[PathBuf]) -> Result<Vec<Revision>, Error> {
    let mut buf = Vec::new();
    files.iter().map(|file| read_revision(file, &mut buf)).collect()
}

/// Reads and parses one revision file, through `buf` (reused from file to file: a project
/// is read at every start, and most revision files are a few kilobytes).
fn read_revision(file: &Path, buf: &mut Vec<u8>) -> Result<Revision, Error> {
    let bad = |why: String| Error::from(MigrateError::RevisionFile { file: file.to_path_buf(), why });
    let len = read_all(file, buf).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let bytes = &buf[..len];
    // Python source is UTF-8 unless a coding line says otherwise: the rare path.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => std::borrow::Cow::Owned(decode_declared(bytes).ok_or_else(|| {
            bad("it is not UTF-8 and has no Latin-1 coding line, so Python would refuse it too: save it as UTF-8".into())
        })?),
    };
    let declared = script::read(&text).map_err(|e| bad(e.0))?;
    let id = match declared.revision {
        Some(id) => id,
        // Alembic 0.1's files named the revision only in the file name.
        None => legacy_id(file).ok_or_else(|| {
            bad("preflight finds no `revision = \"…\"` at its top level (it reads that form only, as Alembic's template writes it); a helper module does not belong in the versions folder".into())
        })?,
    };
    let down = declared.down_revision.ok_or_else(|| {
        bad(format!("revision {id} has no `down_revision = …` (None for the first revision)"))
    })?;
    Ok(Revision {
        id,
        down,
        depends_on: declared.depends_on,
        branch_labels: declared.branch_labels,
        message: declared.message,
        file: file.to_path_buf(),
    })
}

/// Reads the whole file into the front of `buf` and returns its length. `buf` stays
/// initialized and only grows, so a reused buffer costs neither a zero-fill nor the size
/// lookup `fs::read` makes first.
fn read_all(file: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(file)?;
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize((buf.len() * 2).max(16 * 1024), 0);
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A file that is not UTF-8, decoded as its PEP 263 coding line says when that is Latin-1
/// (each byte is the code point of the same number; cp1252 differs only in 0x80-0x9f, which
/// revision messages do not use). `None` without such a line: Python refuses the file.
fn decode_declared(bytes: &[u8]) -> Option<String> {
    let head: Vec<&[u8]> = bytes.split(|&b| b == b'\n').take(2).collect();
    let latin1 = head.iter().any(|line| {
        let line = String::from_utf8_lossy(line).to_ascii_lowercase();
        line.trim_start().starts_with('#')
            && line.split("coding").nth(1).is_some_and(|rest| {
                let name = rest.trim_start_matches([':', '=']).trim_start();
                ["latin-1", "latin1", "iso-8859-1", "iso8859-1", "l1", "cp1252", "windows-1252"]
                    .iter()
                    .any(|n| name.starts_with(n))
            })
    });
    latin1.then(|| bytes.iter().map(|&b| char::from(b)).collect())
}

fn legacy_id(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    (!stem.is_empty() && stem.chars().all(|c| c.is_ascii_hexdigit())).then(|| stem.to_owned())
}

/// Why the version table could not be read.
enum RowsError {
    /// The connection or the server failed.
    Db(sqlx::Error),
    /// The table is there but is not Alembic's: another column layout, a NULL or empty id.
    Shape(String),
}

impl From<sqlx::Error> for RowsError {
    fn from(e: sqlx::Error) -> Self {
        RowsError::Db(e)
    }
}

/// The server refused the query itself (no such column, say): the table is not one Alembic
/// wrote. Anything else is the connection's problem.
fn shape(e: sqlx::Error) -> RowsError {
    match e.as_database_error() {
        Some(db) => RowsError::Shape(format!("it has no readable version_num column ({})", db.message())),
        None => RowsError::Db(e),
    }
}

fn ids(rows: Vec<Option<String>>) -> Result<Vec<String>, RowsError> {
    rows.into_iter()
        .map(|id| match id {
            Some(id) if !id.trim().is_empty() => Ok(id),
            _ => Err(RowsError::Shape("a row has no revision id (NULL or empty)".into())),
        })
        .collect()
}

/// Reads the rows of the version table; a table that does not exist yet reads as no rows.
async fn read_rows(conn: &mut DbConn, table: &str) -> Result<Vec<String>, RowsError> {
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, table),
    };
    match conn {
        DbConn::Pg(c) => {
            let quoted = match schema {
                Some(s) => format!("\"{s}\".\"{name}\""),
                None => format!("\"{name}\""),
            };
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&quoted)
                .fetch_one(&mut *c)
                .await?;
            if !exists {
                return Ok(Vec::new());
            }
            let sql = format!("SELECT CAST(version_num AS TEXT) FROM {quoted}");
            ids(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *c).await.map_err(shape)?)
        }
        DbConn::MySql(c) => {
            let exists: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
            )
            .bind(schema)
            .bind(name)
            .fetch_one(&mut *c)
            .await?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            let quoted = match schema {
                Some(s) => format!("`{s}`.`{name}`"),
                None => format!("`{name}`"),
            };
            let sql = format!("SELECT CAST(version_num AS CHAR) FROM {quoted}");
            ids(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *c).await.map_err(shape)?)
        }
        DbConn::Sqlite(c) => {
            let exists: bool = sqlx::query_scalar(
                // SQLite's names are case-insensitive, and a view reads as well as a table.
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type IN ('table', 'view') AND lower(name) = lower(?)",
            )
            .bind(name)
            .fetch_one(&mut *c)
            .await?;
            if !exists {
                return Ok(Vec::new());
            }
            let sql = format!("SELECT CAST(version_num AS TEXT) FROM \"{name}\"");
            ids(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *c).await.map_err(shape)?)
        }
    }
}

/// What a command must have left the database at.
type PositionCheck<'a> = Box<dyn Fn(&Position) -> bool + 'a>;

/// The Alembic source, for one run of the phase.
pub(super) struct Alembic<'a> {
    project: &'a Project,
    /// `--migrate-command`, replacing `alembic -c INI upgrade heads`.
    upgrade: Option<&'a [String]>,
    target: &'a Target,
    config: &'a MigrateConfig,
}

impl<'a> Alembic<'a> {
    pub fn new(
        project: &'a Project,
        upgrade: Option<&'a [String]>,
        target: &'a Target,
        config: &'a MigrateConfig,
    ) -> Self {
        Alembic { project, upgrade, target, config }
    }

    fn graph(&self) -> &Graph {
        &self.project.graph
    }

    /// Where the database is; a row no file has is an error (13) unless `--ignore-missing`.
    async fn position(&self, conn: &mut DbConn) -> Result<Position, Error> {
        let position = self.read_position(conn).await?;
        self.check_missing(&position)?;
        Ok(position)
    }

    fn check_missing(&self, position: &Position) -> Result<(), Error> {
        if !position.missing.is_empty() && !self.config.ignore_missing {
            return Err(MigrateError::MissingRevisions {
                table: self.project.version_table.clone(),
                revisions: position.missing.clone(),
                locations: self.locations(),
            }
            .into());
        }
        Ok(())
    }

    async fn read_position(&self, conn: &mut DbConn) -> Result<Position, Error> {
        let table = &self.project.version_table;
        let rows = read_rows(conn, table).await.map_err(|e| match e {
            RowsError::Db(e) => db_error(self.target, &e),
            RowsError::Shape(why) => MigrateError::ForeignVersionTable { table: table.clone(), why }.into(),
        })?;
        let position = self.graph().locate(&rows);
        if let Some((older, newer)) = self.graph().overlapping(&position.rows) {
            let (older, newer) = (older.to_owned(), newer.to_owned());
            return Err(MigrateError::Overlapping { table: table.clone(), older, newer }.into());
        }
        Ok(position)
    }

    fn locations(&self) -> String {
        self.project.locations.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Whether `position` is what `action` asks for.
    fn satisfied(&self, position: &Position, action: &Action) -> Result<bool, Error> {
        if !position.missing.is_empty() {
            // Only with --ignore-missing: a newer release is ahead of these files.
            return Ok(true);
        }
        Ok(match action {
            // Compared as what is applied, not as rows: with `depends_on`, Alembic keeps fewer
            // rows than there are heads.
            Action::Stamp(spec) => {
                let want = self.resolve(spec.as_deref().unwrap_or("heads"))?;
                position.applied == self.graph().ancestors(&want)
            }
            _ => position.at_heads,
        })
    }

    /// A revert is checked against where the database is before anything runs: exit 2 for a
    /// target that is not behind it, rather than Alembic's error under the lock.
    fn check_revert(&self, before: &Position, to: Option<&str>, steps: u32) -> Result<(), Error> {
        let at = self.describe(before);
        match to {
            None if before.rows.len() > 1 => {
                Err(MigrateError::WhichBranch { at, branches: before.rows.len() }.into())
            }
            None if steps as usize > before.applied.len() => Err(MigrateError::TooManySteps {
                steps,
                applied: before.applied.len(),
                unit: "revisions are",
                at: format!(" (the database is {at})"),
                all: "base",
            }
            .into()),
            None => Ok(()),
            Some(spec) => {
                for target in self.resolve(spec)? {
                    if !before.applied.contains(&target) {
                        return Err(MigrateError::NotApplied {
                            spec: spec.to_owned(),
                            what: format!("revision {target}"),
                            at: format!(" (the database is {at})"),
                        }
                        .into());
                    }
                }
                Ok(())
            }
        }
    }

    fn resolve(&self, spec: &str) -> Result<Vec<String>, Error> {
        Ok(self.graph().resolve(spec).map_err(MigrateError::Revision)?)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        command_env(self.config, self.target, self.target.sqlalchemy_url())
    }

    /// `at 0004 'merge'`, or `at no revision (alembic_version is empty)`.
    fn describe(&self, position: &Position) -> String {
        if position.rows.is_empty() {
            return format!("at no revision ({} is empty)", self.project.version_table);
        }
        let rows: Vec<String> = position
            .rows
            .iter()
            .map(|id| match self.graph().get(id) {
                Some(r) if !r.message.is_empty() => format!("{id} '{}'", r.message),
                _ => id.clone(),
            })
            .collect();
        format!("at {}", rows.join(" + "))
    }

    fn describe_next(&self, position: &Position) -> String {
        match position.next(self.graph()) {
            Some(r) => format!(
                "; the next revision, {} '{}' ({}), is not applied",
                r.id,
                r.message,
                r.file.display()
            ),
            None => String::new(),
        }
    }

    /// Runs one Alembic command under the lock and checks where it left the database.
    async fn run_checked(
        &self,
        conn: &mut DbConn,
        argv: &[String],
        what: &str,
        check: impl Fn(&Position) -> bool,
        expected: &str,
    ) -> Result<Position, Error> {
        let status = process::run(argv, &argv[0], what, &self.env()).await?;
        let after = self.position(conn).await?;
        if !status.success() {
            return Err(MigrateError::AlembicFailed {
                what: what.to_owned(),
                program: argv[0].clone(),
                status,
                at: self.describe(&after),
                next: self.describe_next(&after),
            }
            .into());
        }
        if !check(&after) {
            return Err(MigrateError::ElsewhereAfterAlembic {
                what: what.to_owned(),
                program: argv[0].clone(),
                at: self.describe(&after),
                expected: expected.to_owned(),
                next: self.describe_next(&after),
            }
            .into());
        }
        Ok(after)
    }

    async fn backup(&self, conn: &mut DbConn) -> Result<(), Error> {
        match &self.config.backup {
            Some(b) => backup::take(b, conn, self.config, self.target).await,
            None => Ok(()),
        }
    }

    async fn upgrade(&self, conn: &mut DbConn, before: &Position) -> Result<usize, Error> {
        let argv = match self.upgrade {
            Some(argv) => argv.to_vec(),
            None => self.project.alembic(&["upgrade", "heads"]),
        };
        let pending = before.pending(self.graph()).len();
        info!(from = %self.describe(before), to = %self.graph().heads.join(" + "), pending, "upgrading with Alembic");
        let heads = self.graph().heads.join(" + ");
        let after = self
            .run_checked(
                conn,
                &argv,
                "the migration command",
                |p| p.at_heads,
                &format!("at the heads ({heads})"),
            )
            .await?;
        Ok(before.applied.len().abs_diff(after.applied.len()))
    }

    /// `preflight status` for an Alembic project. `true` when current.
    pub async fn status(&self, conn: &mut DbConn, json: bool) -> Result<bool, Error> {
        // The listing first, missing rows included: that is when it is needed most. The exit
        // code (13 for a missing revision) follows.
        let position = self.read_position(conn).await?;
        // With --ignore-missing, a database ahead of these files counts as current.
        let current = match position.missing.is_empty() {
            true => self.satisfied(&position, &Action::Apply { dry_run: false })?,
            false => self.config.ignore_missing,
        };
        let graph = self.graph();
        let state = |r: &Revision| if position.applied.contains(&r.id) { "applied" } else { "pending" };
        if json {
            let mut revisions: Vec<serde_json::Value> = graph
                .revisions
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "revision": r.id,
                        "down_revisions": r.down,
                        "depends_on": r.depends_on,
                        "branch_labels": r.branch_labels,
                        "message": r.message,
                        "file": r.file.display().to_string(),
                        "state": state(r),
                        "head": graph.heads.contains(&r.id),
                    })
                })
                .collect();
            revisions.extend(
                position.missing.iter().map(|id| serde_json::json!({ "revision": id, "state": "missing" })),
            );
            let out = serde_json::json!({
                "current": current,
                "heads": graph.heads,
                "database": position.rows,
                "revisions": revisions,
            });
            println!("{}", crate::redact::scrub(&out.to_string()));
        } else {
            let mut out = format!("{:<16} {:<8} MESSAGE\n", "REVISION", "STATE");
            let (mut applied, mut pending) = (0, 0);
            for r in &graph.revisions {
                let mut marks = Vec::new();
                if graph.heads.contains(&r.id) {
                    marks.push("head".to_owned());
                }
                if r.down.len() > 1 {
                    marks.push(format!("merges {}", r.down.join(" + ")));
                }
                if !r.branch_labels.is_empty() {
                    marks.push(format!("branch {}", r.branch_labels.join(", ")));
                }
                if !r.depends_on.is_empty() {
                    marks.push(format!("depends on {}", r.depends_on.join(", ")));
                }
                let marks =
                    if marks.is_empty() { String::new() } else { format!("  ({})", marks.join("; ")) };
                let state = state(r);
                if state == "applied" {
                    applied += 1;
                } else {
                    pending += 1;
                }
                out.push_str(&format!("{:<16} {:<8} {}{marks}\n", r.id, state, r.message));
            }
            for id in &position.missing {
                out.push_str(&format!(
                    "{id:<16} missing  (in {}, no revision file)\n",
                    self.project.version_table
                ));
            }
            let rows = if position.rows.is_empty() { "(none)".to_owned() } else { position.rows.join(", ") };
            out.push_str(&format!("database at: {rows}\nheads:       {}\n", graph.heads.join(", ")));
            out.push_str(&format!(
                "{applied} applied, {pending} pending, {} missing: the schema is {}\n",
                position.missing.len(),
                if current { "current" } else { "not current" }
            ));
            print!("{}", crate::redact::scrub(&out));
        }
        self.check_missing(&position)?;
        if !current {
            warn!(pending = position.pending(graph).len(), "schema is not current");
        }
        Ok(current)
    }
}

impl SchemaSource for Alembic<'_> {
    async fn read(&self, conn: Option<&mut DbConn>, action: &Action) -> Result<Reading, Error> {
        let conn = conn.expect("the Alembic source reads the database");
        let position = self.position(conn).await?;
        let current = self.satisfied(&position, action)?;
        if !position.missing.is_empty() {
            warn!(
                missing = %position.missing.join(", "),
                "the database is at revisions these files do not have; --ignore-missing: taking it as current"
            );
        }
        let pending = position.pending(self.graph());
        let argv = match self.upgrade {
            Some(argv) => argv.to_vec(),
            None => self.project.alembic(&["upgrade", "heads"]),
        };
        let mut plan = vec![format!(
            "would run: {}",
            shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_default()
        )];
        plan.extend(
            pending.iter().map(|r| format!("would apply {} {} ({})", r.id, r.message, r.file.display())),
        );
        Ok(Reading {
            current,
            doubt: None,
            pending: Some(pending.len()),
            detail: self.describe(&position),
            plan,
        })
    }

    async fn apply_locked(&self, conn: &mut DbConn, action: &Action) -> Result<usize, Error> {
        let before = self.position(conn).await?;
        match action {
            Action::Apply { .. } => {
                if self.satisfied(&before, action)? {
                    info!("another process applied the migrations while we waited for the lock");
                    return Ok(0);
                }
                self.backup(conn).await?;
                self.upgrade(conn, &before).await
            }
            Action::Stamp(spec) => {
                let spec = spec.as_deref().unwrap_or("heads");
                if self.satisfied(&before, action)? {
                    info!(revision = spec, "already stamped");
                    return Ok(0);
                }
                let want: BTreeSet<String> = self.resolve(spec)?.into_iter().collect();
                self.backup(conn).await?;
                let argv = self.project.alembic(&["stamp", spec]);
                let graph = self.graph();
                let after = self
                    .run_checked(conn, &argv, "alembic stamp", |p| p.applied == graph.ancestors(&want), spec)
                    .await?;
                info!(database = %self.describe(&after), "stamped");
                Ok(want.len())
            }
            Action::Revert { to, steps } => {
                self.check_revert(&before, to.as_deref(), *steps)?;
                if before.rows.is_empty() {
                    info!("nothing to revert: no revision is applied");
                    return Ok(0);
                }
                let (arg, check): (String, PositionCheck) = match to {
                    Some(spec) => {
                        let targets = self.resolve(spec)?;
                        if before.rows.iter().collect::<BTreeSet<_>>() == targets.iter().collect() {
                            info!(revision = %spec, "nothing to revert: the database is there already");
                            return Ok(0);
                        }
                        let graph = self.graph();
                        let check = move |p: &Position| {
                            // Every target still applied, and nothing above any of them.
                            targets.iter().all(|t| p.applied.contains(t))
                                && p.rows.iter().all(|row| {
                                    targets.iter().all(|t| row == t || !graph.ancestors([row]).contains(t))
                                })
                                && (!targets.is_empty() || p.rows.is_empty())
                        };
                        (spec.clone(), Box::new(check))
                    }
                    None => {
                        let expected = before.applied.len().saturating_sub(*steps as usize);
                        (format!("-{steps}"), Box::new(move |p: &Position| p.applied.len() == expected))
                    }
                };
                self.backup(conn).await?;
                let argv = self.project.alembic(&["downgrade", &arg]);
                let after = self
                    .run_checked(conn, &argv, "alembic downgrade", check, &format!("downgraded to {arg}"))
                    .await?;
                info!(database = %self.describe(&after), "reverted");
                Ok(before.applied.len().saturating_sub(after.applied.len()))
            }
            Action::Reset => {
                self.backup(conn).await?;
                store::drop_all(conn).await.map_err(|e| db_error(self.target, &e))?;
                // The version table may live in another schema than the ones dropped
                // (`version_table_schema`): left there, it would say the empty database is
                // at the heads, and the upgrade would do nothing.
                store::drop_table(conn, &self.project.version_table)
                    .await
                    .map_err(|e| db_error(self.target, &e))?;
                warn!("reset: every object in the database was dropped; upgrading from no revision");
                let empty = self.graph().locate(&[]);
                self.upgrade(conn, &empty).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_latin_1_coding_line_is_honoured() {
        let text = super::decode_declared(b"# -*- coding: latin-1 -*-\n\"\"\"caf\xe9\"\"\"\n").unwrap();
        assert!(text.contains("caf\u{e9}"), "{text}");
        assert!(super::decode_declared(b"\"\"\"caf\xe9\"\"\"\n").is_none());
    }
}
