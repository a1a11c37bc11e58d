//! The Alembic source end to end: real Alembic from PyPI at two versions (1.14.1, before
//! `current --check-heads` existed, and 1.20.1), on SQLite, PostgreSQL and MariaDB, with a
//! project laid out as many are (the script folder is `migrations/`, a second version location,
//! a merge, a branch label, a revision that fails on demand).
//!
//! Every test puts a recording `alembic` first on PATH, so it can prove when Python ran and
//! when it did not.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug)]
enum Version {
    /// 1.14.1: what projects pin; no `current --check-heads`.
    Old,
    /// 1.20.1.
    New,
}

/// A copy of the fixture project, and a PATH whose `alembic` records each call.
struct Project {
    dir: tempfile::TempDir,
    path_env: String,
}

impl Project {
    fn new(version: Version) -> Project {
        let root = env!("CARGO_MANIFEST_DIR");
        let venv = match version {
            Version::Old => format!("{root}/target/test-venv-old"),
            Version::New => format!("{root}/target/test-venv"),
        };
        assert!(
            Path::new(&format!("{venv}/bin/alembic")).exists(),
            "{venv} is missing: run scripts/install-test-deps.sh"
        );
        let dir = tempfile::Builder::new().prefix("pf-alembic-").tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .args(["-a", &format!("{root}/tests/fixtures/alembic-graph/."), dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let shim = bin.join("alembic");
        let log = dir.path().join("calls.log");
        std::fs::write(
            &shim,
            format!("#!/bin/sh\necho \"$*\" >> {}\nexec {venv}/bin/alembic \"$@\"\n", log.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_env = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Project { dir, path_env }
    }

    fn ini(&self) -> String {
        self.dir.path().join("alembic.ini").display().to_string()
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Every `alembic` call so far, one line of arguments each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.file("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![("PATH", self.path_env.as_str()), ("PYTHONDONTWRITEBYTECODE", "1")];
        env.extend_from_slice(extra);
        env
    }

    /// `preflight VERB… --alembic-config INI --database-url URL ARGS…`
    fn spawn(&self, verb: &[&str], url: &str, args: &[&str], extra: &[(&str, &str)]) -> Preflight {
        let ini = self.ini();
        let mut argv: Vec<&str> = verb.to_vec();
        argv.extend(["--alembic-config", &ini, "--database-url", url]);
        argv.extend_from_slice(args);
        Preflight::spawn_with(None, &argv, &self.env(extra))
    }

    fn run(&self, verb: &[&str], url: &str, args: &[&str]) -> Finished {
        self.spawn(verb, url, args, &[]).finish(LONG)
    }
}

enum Db {
    Sqlite(tempfile::TempDir),
    Pg(Pg),
    Maria(MariaDb),
}

impl Db {
    fn sqlite() -> Db {
        Db::Sqlite(tempfile::Builder::new().prefix("pf-alembic-db-").tempdir().unwrap())
    }

    fn pg() -> Db {
        Db::Pg(Pg::running().0)
    }

    fn maria() -> Db {
        let mut db = MariaDb::new();
        db.start();
        Db::Maria(db)
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite:{}/app.db", dir.path().display()),
            Db::Pg(pg) => pg.url("127.0.0.1"),
            Db::Maria(db) => db.url_for(PASSWORD, "app"),
        }
    }

    fn rows(&self) -> Vec<String> {
        let mut rows = sql_strings(&self.url(), "SELECT version_num FROM alembic_version");
        rows.sort();
        rows
    }

    fn has_table(&self, name: &str) -> bool {
        let sql = match self {
            Db::Sqlite(_) => {
                format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{name}'")
            }
            Db::Pg(_) => format!("SELECT COUNT(*) FROM pg_tables WHERE tablename = '{name}'"),
            Db::Maria(_) => format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '{name}'"
            ),
        };
        sql_i64(&self.url(), &sql) == 1
    }
}

/// Readers started first, one writer, a no-op restart, status, revert, stamp: the whole life of a
/// project on one database and one Alembic version.
fn lifecycle(db: Db, version: Version) {
    let p = Project::new(version);
    let url = db.url();

    // A reader before the writer: it waits, taking no lock and starting no Python.
    let mut reader = p.spawn(&["run"], &url, &["--schema", "wait", "--", "echo", "reader started"], &[]);
    reader.wait_for_line(&["waiting for another process to migrate"], LONG);
    assert!(p.calls().is_empty(), "a reader started Python: {:?}", p.calls());

    let done = p.run(&["migrate"], &url, &[]);
    done.expect_code(0).expect_no_password();
    assert_eq!(db.rows(), ["0005"], "{done}");
    assert!(db.has_table("reports") && db.has_table("audit"), "{done}");
    assert_eq!(p.calls().len(), 1, "{:?}", p.calls());
    assert!(p.calls()[0].ends_with("upgrade heads"), "{:?}", p.calls());

    let read = reader.finish(LONG);
    read.expect_code(0);
    assert_eq!(read.stdout.trim(), "reader started", "{read}");
    assert!(read.stderr.contains("schema is current") && read.stderr.contains("lock_taken=false"), "{read}");

    // The no-op restart: no Python, the app starts.
    let noop = p.run(&["run"], &url, &["--", "echo", "app"]);
    noop.expect_code(0);
    assert_eq!(noop.stdout.trim(), "app", "{noop}");
    assert!(noop.stderr.contains("schema is current") && noop.stderr.contains("0005"), "{noop}");
    assert_eq!(p.calls().len(), 1, "a no-op start ran Alembic: {:?}", p.calls());

    // status, as JSON.
    let st = p.run(&["status"], &url, &["--format", "json", "--check"]);
    st.expect_code(0);
    let json: serde_json::Value =
        serde_json::from_str(st.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {st}"));
    assert_eq!(json["current"], true);
    assert_eq!(json["heads"], serde_json::json!(["0005"]));
    assert_eq!(json["database"], serde_json::json!(["0005"]));
    let revs = json["revisions"].as_array().unwrap();
    let ids: Vec<&str> = revs.iter().map(|r| r["revision"].as_str().unwrap()).collect();
    assert_eq!(ids, ["0001", "0002", "0003", "0003r", "0004", "0005"]);
    assert!(revs.iter().all(|r| r["state"] == "applied"), "{st}");
    assert_eq!(revs[3]["branch_labels"], serde_json::json!(["reports"]));
    assert_eq!(revs[4]["down_revisions"], serde_json::json!(["0003", "0003r"]));
    assert_eq!(revs[4]["message"], "merge tags and reports");

    // Revert one step, then status --check says not current and names what is pending.
    p.run(&["migrate", "revert"], &url, &["--steps", "1"]).expect_code(0);
    assert_eq!(db.rows(), ["0004"]);
    assert!(!db.has_table("audit"));
    let st = p.run(&["status"], &url, &["--check"]);
    st.expect_code(16);
    assert!(
        st.stdout.contains("0005             pending  create audit, or fail when asked to  (head)"),
        "{st}"
    );
    assert!(st.stdout.contains("database at: 0004"), "{st}");

    // Revert through the merge to before the branch point.
    let down = p.run(&["migrate", "revert"], &url, &["--to", "0002"]);
    down.expect_code(0);
    assert_eq!(db.rows(), ["0002"], "{down}");
    assert!(!db.has_table("reports"));

    // Stamp the heads: recorded, not run.
    p.run(&["migrate", "stamp"], &url, &["heads"]).expect_code(0);
    assert_eq!(db.rows(), ["0005"]);
    assert!(!db.has_table("reports"), "stamp ran a migration");
    let calls = p.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[1].ends_with("downgrade -1") && calls[2].ends_with("downgrade 0002"), "{calls:?}");
    assert!(calls[3].ends_with("stamp heads"), "{calls:?}");
}

#[test]
fn alembic_1_14_on_sqlite() {
    lifecycle(Db::sqlite(), Version::Old);
}

#[test]
fn alembic_1_20_on_sqlite() {
    lifecycle(Db::sqlite(), Version::New);
}

#[test]
fn alembic_1_14_on_postgres() {
    lifecycle(Db::pg(), Version::Old);
}

#[test]
fn alembic_1_20_on_postgres() {
    lifecycle(Db::pg(), Version::New);
}

#[test]
fn alembic_1_14_on_mariadb() {
    lifecycle(Db::maria(), Version::Old);
}

#[test]
fn alembic_1_20_on_mariadb() {
    lifecycle(Db::maria(), Version::New);
}

/// A failing revision: exit 17, the revision the database stopped at, the next one with its
/// message and file, and the app never starts.
fn failure_names_the_revision(db: Db, version: Version) {
    let p = Project::new(version);
    let url = db.url();
    let marker = p.file("app-started");
    let done = p
        .spawn(&["run"], &url, &["--", "touch", marker.to_str().unwrap()], &[("FIXTURE_FAIL_AT_0005", "1")])
        .finish(LONG);
    done.expect_code(17).expect_no_password();
    assert!(!marker.exists(), "the app started: {done}");
    // transaction_per_migration: 0001-0004 committed, 0005 rolled back.
    assert_eq!(db.rows(), ["0004"], "{done}");
    let last = done.stderr.lines().rev().find(|l| l.contains("ERROR")).unwrap_or_default();
    for needle in [
        "at 0004 'merge tags and reports'",
        "the next revision, 0005 'create audit, or fail when asked to'",
        "0005_audit.py",
    ] {
        assert!(last.contains(needle), "{needle} missing from {last}\n{done}");
    }
}

#[test]
fn a_failing_revision_is_named_on_postgres() {
    failure_names_the_revision(Db::pg(), Version::New);
}

#[test]
fn a_failing_revision_is_named_on_sqlite_with_alembic_1_14() {
    failure_names_the_revision(Db::sqlite(), Version::Old);
}

#[test]
fn five_writers_run_alembic_once_when_behind_and_never_when_current() {
    let Db::Pg(pg) = Db::pg() else { unreachable!() };
    let db = Db::Pg(pg);
    let url = db.url();
    let p = Project::new(Version::New);
    let writers: Vec<Preflight> = (0..5).map(|_| p.spawn(&["run"], &url, &["--", "true"], &[])).collect();
    for w in writers {
        w.finish(LONG).expect_code(0).expect_no_password();
    }
    let calls = p.calls();
    assert_eq!(calls.iter().filter(|c| c.contains("upgrade")).count(), 1, "{calls:?}");
    assert_eq!(db.rows(), ["0005"]);

    let writers: Vec<Preflight> = (0..5).map(|_| p.spawn(&["run"], &url, &["--", "true"], &[])).collect();
    for w in writers {
        let done = w.finish(LONG);
        done.expect_code(0);
        assert!(
            done.stderr.contains("schema is current") && done.stderr.contains("lock_taken=false"),
            "{done}"
        );
    }
    assert_eq!(p.calls().len(), 1, "a current database ran Alembic: {:?}", p.calls());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let db = Db::sqlite();
    let p = Project::new(Version::New);
    let done = p.run(&["migrate"], &db.url(), &["--dry-run"]);
    done.expect_code(0);
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert!(lines[0].starts_with("would run: alembic -c ") && lines[0].ends_with(" upgrade heads"), "{done}");
    assert_eq!(lines.len(), 7, "{done}");
    assert!(lines[4].starts_with("would apply 0003r create reports (the reports branch) ("), "{done}");
    assert!(p.calls().is_empty());
    assert_eq!(sql_i64(&db.url(), "SELECT COUNT(*) FROM sqlite_master"), 0);
}

/// Unreadable projects are exit 2 naming the file, before anything connects: the SQLite file is
/// not even created.
#[test]
fn unreadable_projects_are_refused_before_anything_connects() {
    let cases: [(&str, &str, &str); 5] = [
        ("0006_x.py", "revision = make_id()\ndown_revision = '0005'\n", "0006_x.py: line 1: revision"),
        ("0006_x.py", "revision = '0006'\ndown_revision = '0099'\n", "down_revision '0099'"),
        ("0006_x.py", "revision = '0005'\ndown_revision = '0004'\n", "declared twice"),
        ("0006_x.py", "revision = '0006'\ndown_revision = '0007'\n", "cycle"),
        ("helpers.py", "def helper():\n    return 1\n", "helpers.py: preflight finds no `revision"),
    ];
    for (name, body, needle) in cases {
        let p = Project::new(Version::New);
        let versions = p.file("migrations/versions");
        std::fs::write(versions.join(name), body).unwrap();
        if needle == "cycle" {
            std::fs::write(versions.join("0007_y.py"), "revision = '0007'\ndown_revision = '0006'\n")
                .unwrap();
        }
        let db = Db::sqlite();
        let done = p.run(&["run"], &db.url(), &["--", "true"]);
        done.expect_code(2);
        assert!(done.stderr.contains(needle), "{needle}: {done}");
        let Db::Sqlite(dir) = &db else { unreachable!() };
        assert!(!dir.path().join("app.db").exists(), "the database was touched: {done}");
        assert!(p.calls().is_empty());
    }
}

#[test]
fn missing_revisions_are_exit_13_unless_ignored() {
    let db = Db::sqlite();
    let p = Project::new(Version::New);
    p.run(&["migrate"], &db.url(), &[]).expect_code(0);
    sql_exec(&db.url(), "UPDATE alembic_version SET version_num = 'f00d'");
    let done = p.run(&["run"], &db.url(), &["--", "true"]);
    done.expect_code(13);
    assert!(done.stderr.contains("f00d") && done.stderr.contains("--ignore-missing"), "{done}");
    p.run(&["run"], &db.url(), &["--ignore-missing", "--", "true"]).expect_code(0);
    assert_eq!(p.calls().len(), 1);
    // status lists everything, the missing row included, then exits 13.
    let st = p.run(&["status"], &db.url(), &[]);
    st.expect_code(13);
    assert!(st.stdout.contains("f00d             missing") && st.stdout.contains("0001"), "{st}");
}

/// Found with no flag: ./alembic.ini; and a `migrations/` folder of Python files is not mistaken
/// for an empty SQL folder.
#[test]
fn the_project_is_found_in_the_working_directory_and_never_mistaken_for_sql() {
    let db = Db::sqlite();
    let url = db.url();
    let p = Project::new(Version::New);
    let env = p.env(&[]);
    let done = Preflight::spawn_in(p.dir.path(), &["migrate", "--database-url", &url], &env).finish(LONG);
    done.expect_code(0);
    assert_eq!(db.rows(), ["0005"]);

    // The same script folder without its ini: refused, naming the flag.
    std::fs::remove_file(p.file("alembic.ini")).unwrap();
    let reader = Preflight::spawn_in(
        p.dir.path(),
        &["run", "--database-url", &url, "--schema", "wait", "--", "true"],
        &env,
    )
    .finish(LONG);
    reader.expect_code(2);
    assert!(reader.stderr.contains("./migrations") && reader.stderr.contains("--alembic-config"), "{reader}");
    let explicit = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", p.file("migrations").to_str().unwrap()],
        LONG,
    );
    explicit.expect_code(2);
    assert!(explicit.stderr.contains("--alembic-config"), "{explicit}");
    // With no source at all, a reader is a configuration error rather than an early start.
    let empty = tempfile::tempdir().unwrap();
    let none = Preflight::spawn_in(
        empty.path(),
        &["run", "--database-url", &url, "--schema", "wait", "--", "true"],
        &[],
    )
    .finish(LONG);
    none.expect_code(2);
    assert!(none.stderr.contains("--schema wait needs"), "{none}");
}

/// The generic command source: a reader with only a check command; check output kept off the
/// app's stdout; a broken check (Alembic 1.14 has no --check-heads) reported as broken.
#[test]
fn check_commands_for_readers_and_broken_checks() {
    let db = Db::sqlite();
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("migrated");
    let check = format!("sh -c 'echo CHECK-OUTPUT; test -f {}'", flag.display());
    let mut reader = Preflight::spawn_with(
        None,
        &[
            "run",
            "--database-url",
            &url,
            "--schema",
            "wait",
            "--schema-check-command",
            &check,
            "--",
            "echo",
            "app",
        ],
        &[],
    );
    reader.wait_for_line(&["waiting for another process to migrate"], LONG);
    std::fs::write(&flag, "").unwrap();
    let done = reader.finish(LONG);
    done.expect_code(0);
    assert_eq!(done.stdout.trim(), "app", "check output reached stdout: {done}");
    assert!(done.stderr.contains("CHECK-OUTPUT"), "{done}");

    let p = Project::new(Version::Old);
    let old_check = format!("alembic -c {} current --check-heads", p.ini());
    let env = p.env(&[]);
    let started = std::time::Instant::now();
    let broken = Preflight::spawn_with(
        None,
        &[
            "run",
            "--database-url",
            &url,
            "--schema",
            "wait",
            "--schema-check-command",
            &old_check,
            "--",
            "true",
        ],
        &env,
    )
    .finish(LONG);
    broken.expect_code(17);
    assert!(
        broken.stderr.contains("is broken (exit status: 2)") && broken.stderr.contains("--alembic-config"),
        "{broken}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a broken check was retried to the deadline: {broken}"
    );
}

// ---------------------------------------------------------------------------------------------
// Projects built per test, for layouts the fixture does not have.

impl Project {
    /// The fixture's env.py and venv, with no revision and this `[alembic]` section
    /// (`script_location` is `%(here)s/migrations`).
    fn bare(version: Version, alembic_section: &str) -> Project {
        let p = Project::new(version);
        std::fs::remove_dir_all(p.file("migrations/versions")).unwrap();
        std::fs::remove_dir_all(p.file("extra_versions")).unwrap();
        std::fs::create_dir(p.file("migrations/versions")).unwrap();
        let ini = std::fs::read_to_string(p.file("alembic.ini")).unwrap();
        let rest = &ini[ini.find("[loggers]").unwrap()..];
        std::fs::write(p.file("alembic.ini"), format!("[alembic]\n{alembic_section}\n\n{rest}")).unwrap();
        p
    }

    /// A revision that creates table `t_ID`, written at `rel` (under the project).
    fn revision(&self, rel: &str, id: &str, down: &str, depends_on: &str) {
        let path = self.file(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!(
                "\"\"\"create t_{id}\"\"\"\nfrom alembic import op\n\nrevision = \"{id}\"\ndown_revision = {down}\n\
                 branch_labels = None\ndepends_on = {depends_on}\n\n\ndef upgrade():\n    \
                 op.execute(\"CREATE TABLE t_{id} (id INTEGER)\")\n\n\ndef downgrade():\n    \
                 op.execute(\"DROP TABLE t_{id}\")\n"
            ),
        )
        .unwrap();
    }
}

/// `b` depends on `c`, a head of another branch. Alembic then keeps the single row `b`: that
/// is at the heads, on the first run and on every restart (no exit 10, no second upgrade).
#[test]
fn a_dependency_on_another_branch_is_at_the_heads_with_one_row() {
    let p = Project::bare(Version::New, "script_location = %(here)s/migrations");
    p.revision("migrations/versions/a.py", "a", "None", "None");
    p.revision("migrations/versions/c.py", "c", "None", "None");
    p.revision("migrations/versions/b.py", "b", "\"a\"", "\"c\"");
    let db = Db::sqlite();
    let url = db.url();
    let first = p.run(&["migrate"], &url, &[]);
    first.expect_code(0);
    assert_eq!(db.rows(), ["b"], "{first}");
    assert!(db.has_table("t_c"));
    let again = p.run(&["run"], &url, &["--", "true"]);
    again.expect_code(0);
    assert!(again.stderr.contains("schema is current"), "{again}");
    p.run(&["status"], &url, &["--check"]).expect_code(0);
    assert_eq!(p.calls().len(), 1, "{:?}", p.calls());
}

/// Folders are walked as Alembic walks them: `recursive_version_locations` is on only when
/// it is exactly `true`; a recursive walk does not enter linked folders (a link to the parent
/// is no loop, a linked folder adds no head); a file reached through two links is read once.
#[test]
fn version_folders_are_walked_as_alembic_walks_them() {
    let p = Project::bare(
        Version::New,
        "script_location = %(here)s/migrations\nrecursive_version_locations = true",
    );
    p.revision("migrations/versions/a.py", "a", "None", "None");
    p.revision("migrations/versions/deep/b.py", "b", "\"a\"", "None");
    p.revision("shared/c.py", "c", "\"b\"", "None");
    p.revision("elsewhere/z.py", "z", "None", "None");
    let versions = p.file("migrations/versions");
    std::os::unix::fs::symlink("../../shared/c.py", versions.join("c1.py")).unwrap();
    std::os::unix::fs::symlink("../../shared/c.py", versions.join("c2.py")).unwrap();
    std::os::unix::fs::symlink("../../elsewhere", versions.join("linked")).unwrap();
    std::os::unix::fs::symlink("..", versions.join("loop")).unwrap();
    let db = Db::sqlite();
    let url = db.url();
    let done = p.run(&["migrate"], &url, &[]);
    done.expect_code(0);
    assert_eq!(db.rows(), ["c"], "{done}");
    assert!(!db.has_table("t_z"), "{done}");
    p.run(&["run"], &url, &["--", "true"]).expect_code(0);
    assert_eq!(p.calls().len(), 1, "{:?}", p.calls());

    // `True` is not `true` to Alembic: deep/ is not read, by either.
    let q = Project::bare(
        Version::New,
        "script_location = %(here)s/migrations\nrecursive_version_locations = True",
    );
    q.revision("migrations/versions/a.py", "a", "None", "None");
    q.revision("migrations/versions/deep/b.py", "b", "\"a\"", "None");
    let db = Db::sqlite();
    let done = q.run(&["migrate"], &db.url(), &[]);
    done.expect_code(0);
    assert_eq!(db.rows(), ["a"], "{done}");
}

/// A version table in its own schema is dropped by reset too: left behind, it would say the
/// emptied database is at the heads, and nothing would be rebuilt.
#[test]
fn reset_drops_a_version_table_in_another_schema() {
    let p = Project::bare(Version::New, "script_location = %(here)s/migrations");
    p.revision("migrations/versions/a.py", "a", "None", "None");
    p.revision("migrations/versions/b.py", "b", "\"a\"", "None");
    let db = Db::pg();
    let url = db.url();
    sql_exec(&url, "CREATE SCHEMA s");
    let env = [("VERSION_TABLE", "vt"), ("VERSION_TABLE_SCHEMA", "s")];
    let table = ["--alembic-version-table", "s.vt"];
    p.spawn(&["migrate"], &url, &table, &env).finish(LONG).expect_code(0);
    let reset = p
        .spawn(&["migrate", "reset"], &url, &[&table[..], &["--confirm-destroy-all-data"]].concat(), &env)
        .finish(LONG);
    reset.expect_code(0);
    assert!(db.has_table("t_a") && db.has_table("t_b"), "nothing was rebuilt: {reset}");
    assert_eq!(sql_strings(&url, "SELECT version_num FROM s.vt"), ["b"]);
    assert_eq!(p.calls().len(), 2, "{:?}", p.calls());
}

/// Revert targets that are not behind the database are exit 2, before Alembic runs, and
/// leave the database as it was.
#[test]
fn revert_targets_that_are_not_behind_are_refused_without_running_alembic() {
    let p = Project::new(Version::New);
    let db = Db::sqlite();
    let url = db.url();
    p.run(&["migrate"], &url, &[]).expect_code(0);
    p.run(&["migrate", "revert"], &url, &["--to", "0002"]).expect_code(0);
    let calls = p.calls().len();
    for (args, says) in [
        (vec!["--steps", "0"], "--steps 0 reverts nothing"),
        (vec!["--steps", "99"], "only 2 revisions are applied"),
        (vec!["--to", "heads"], "revert goes back"),
        (vec!["--to", "0004"], "revision 0004 is not applied"),
    ] {
        let done = p.run(&["migrate", "revert"], &url, &args);
        done.expect_code(2);
        assert!(done.stderr.contains(says), "{args:?}: {done}");
        assert_eq!(db.rows(), ["0002"], "{done}");
    }
    assert_eq!(p.calls().len(), calls, "Alembic ran: {:?}", p.calls());
}

/// A version table that is not Alembic's (another layout, a NULL id) is a configuration
/// error naming the flag, not a dependency failure (exit 3).
#[test]
fn a_version_table_of_another_shape_is_a_configuration_error() {
    let p = Project::new(Version::New);
    let db = Db::sqlite();
    let url = db.url();
    sql_exec(
        &format!("{url}?mode=rwc"),
        "CREATE TABLE badv (id INTEGER); CREATE TABLE alembic_version (version_num VARCHAR(32)); INSERT INTO alembic_version VALUES (NULL)",
    );
    for table in ["badv", "alembic_version"] {
        let done = p.run(&["status"], &url, &["--alembic-version-table", table]);
        done.expect_code(2);
        assert!(
            done.stderr.contains("is not one Alembic wrote")
                && done.stderr.contains("--alembic-version-table"),
            "{done}"
        );
    }
}

/// A version location that does not exist reads no revision, as in Alembic, but says so.
#[test]
fn a_missing_version_location_is_reported() {
    let p = Project::bare(
        Version::New,
        "script_location = %(here)s/migrations\nversion_locations = %(here)s/nope",
    );
    let db = Db::sqlite();
    let done = p.run(&["run"], &db.url(), &["--", "true"]);
    done.expect_code(0);
    assert!(done.stderr.contains("does not exist") && done.stderr.contains("nope"), "{done}");
    assert!(done.stderr.contains("no revision file found"), "{done}");
}

/// Rows one of which descends from another are not a table Alembic wrote (it refuses to
/// upgrade from them): exit 2, not "current". A table spelled in another case is the same
/// table to SQLite. A revert on an empty database is a target past what is applied: exit 2.
#[test]
fn version_tables_alembic_would_not_write_and_empty_reverts() {
    let p = Project::new(Version::New);
    let db = Db::sqlite();
    let url = db.url();
    sql_exec(
        &format!("{url}?mode=rwc"),
        "CREATE TABLE alembic_version (version_num VARCHAR(32)); INSERT INTO alembic_version VALUES ('0004'), ('0005')",
    );
    let st = p.run(&["status"], &url, &["--check"]);
    st.expect_code(2);
    assert!(st.stderr.contains("holds 0004 and 0005") && st.stderr.contains("delete the row 0004"), "{st}");

    let db = Db::sqlite();
    let url = db.url();
    for args in [&["--steps", "1"][..], &["--to", "0001"][..]] {
        let done = p.run(&["migrate", "revert"], &url, args);
        done.expect_code(2);
    }
    sql_exec(
        &format!("{url}?mode=rwc"),
        "CREATE TABLE ALEMBIC_VERSION (version_num VARCHAR(32)); INSERT INTO ALEMBIC_VERSION VALUES ('0005')",
    );
    let done = p.run(&["run"], &url, &["--", "true"]);
    done.expect_code(0);
    assert!(done.stderr.contains("schema is current"), "{done}");
    assert!(p.calls().is_empty(), "{:?}", p.calls());
}
