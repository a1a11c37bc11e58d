//! End-to-end tests of the migration phase against real PostgreSQL, MariaDB and SQLite.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

/// The same schema for every backend; `slow` is a statement that takes a moment, so that
/// concurrent migrators really overlap.
fn schema(slow: &str) -> Vec<(&'static str, String)> {
    vec![
        ("20240101000000_create_items.sql", "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL);\n".into()),
        ("20240102000000_seed.sql", format!("{slow}\nINSERT INTO items (id, name) VALUES (1, 'first');\n")),
        ("20240103000000_more.sql", "INSERT INTO items (id, name) VALUES (2, 'second');\nCREATE TABLE tags (id INTEGER PRIMARY KEY);\n".into()),
    ]
}

/// `migrate` again finds the schema current and takes no lock: the checksums preflight wrote
/// are the ones it computes from the files.
fn assert_rerun_is_a_no_op(url: &str, m: &Migrations) {
    let again = preflight(None, &["migrate", "--database-url", url, "--migrations", m.path()], LONG);
    again.expect_code(0);
    assert!(
        again.stderr.contains("schema is current") && again.stderr.contains("lock_taken=false"),
        "{again}"
    );
}

fn files<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(n, s)| (*n, s.as_str())).collect()
}

fn assert_crowd_applied_once(url: &str, results: &[Finished]) {
    for done in results {
        done.expect_code(0).expect_no_password();
        assert!(!done.stderr.contains("already exists"), "{done}");
    }
    assert_eq!(sql_i64(url, "SELECT COUNT(*) FROM _sqlx_migrations"), 3);
    assert_eq!(sql_i64(url, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"), 3);
    assert_eq!(sql_i64(url, "SELECT COUNT(*) FROM items"), 2);
    let appliers = results.iter().filter(|d| d.stderr.contains("migrations done applied=3")).count();
    assert_eq!(appliers, 1, "exactly one process applies the migrations");
}

#[test]
fn twenty_concurrent_migrators_apply_each_migration_once_on_postgres() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let s = schema("SELECT pg_sleep(0.5);");
    let m = Migrations::new(&files(&s));
    let url = pg.url("127.0.0.1");
    let results = crowd(20, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    assert_crowd_applied_once(&url, &results);
    // The others waited for the lock and said who held it.
    assert!(results.iter().any(|d| d.stderr.contains("holder=preflight/")), "{}", results[0]);
}

#[test]
fn twenty_concurrent_migrators_apply_each_migration_once_on_mariadb() {
    let mut db = MariaDb::new();
    db.start();
    let s = schema("DO SLEEP(0.5);");
    let m = Migrations::new(&files(&s));
    let url = db.url_for(PASSWORD, "app");
    let results = crowd(20, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    assert_crowd_applied_once(&url, &results);
}

#[test]
fn twenty_concurrent_migrators_apply_each_migration_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema("");
    let m = Migrations::new(&files(&s));
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let results = crowd(20, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    assert_crowd_applied_once(&url, &results);
}

#[test]
fn a_second_run_is_a_no_op_that_takes_no_lock() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let s = schema("");
    let m = Migrations::new(&files(&s));
    let url = pg.url("127.0.0.1");
    let first = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    first.expect_code(0);
    assert!(first.stderr.contains("lock_taken=true"), "{first}");
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("schema is current"), "{done}");
    assert!(done.stderr.contains("lock_taken=false"), "{done}");
}

#[test]
fn a_failing_migration_leaves_postgres_unchanged_and_the_app_is_not_started() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_items.sql", "CREATE TABLE items (id INTEGER);\n")]);
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    m.add("2_broken.sql", "CREATE TABLE more_items (id INTEGER);\nINSERT INTO nowhere VALUES (1);\n");
    let marker = m.dir.path().join("app-started");
    let done = preflight(
        None,
        &["run", "--database-url", &url, "--migrations", m.path(), "--", "touch", marker.to_str().unwrap()],
        LONG,
    );
    done.expect_code(10).expect_no_password();
    assert!(!marker.exists(), "the app started: {done}");
    for needle in ["2_broken.sql", "line 2", "42P01", "nothing of it was applied"] {
        assert!(done.stderr.contains(needle), "{needle}: {done}");
    }
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 1);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'more_items'"), 0);
}

#[test]
fn a_failing_migration_leaves_sqlite_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let m = Migrations::new(&[("1_items.sql", "CREATE TABLE items (id INTEGER);\n")]);
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    m.add("2_broken.sql", "CREATE TABLE more_items (id INTEGER);\nINSERT INTO nowhere VALUES (1);\n");
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(10);
    assert!(done.stderr.contains("2_broken.sql") && done.stderr.contains("no such table"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 1);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'more_items'"), 0);
}

#[test]
fn a_failing_migration_on_mariadb_says_the_database_may_be_partly_changed() {
    let mut db = MariaDb::new();
    db.start();
    let url = db.url_for(PASSWORD, "app");
    let m = Migrations::new(&[(
        "1_broken.sql",
        "CREATE TABLE partial (id INTEGER);\nINSERT INTO nowhere VALUES (1);\n",
    )]);
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(10);
    assert!(done.stderr.contains("partially changed") && done.stderr.contains("1146"), "{done}");
    // The next run refuses the dirty state rather than guessing.
    let again = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    again.expect_code(11);
    assert!(
        again.stderr.contains("dirty") && again.stderr.contains("DELETE FROM _sqlx_migrations"),
        "{again}"
    );
}

#[test]
fn a_changed_file_is_refused_and_a_missing_one_unless_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let m = Migrations::new(&[
        ("1_a.sql", "CREATE TABLE a (id INTEGER);\n"),
        ("2_b.sql", "CREATE TABLE b (id INTEGER);\n"),
    ]);
    let args = ["migrate", "--database-url", &url, "--migrations", m.path()];
    preflight(None, &args, LONG).expect_code(0);

    // CRLF line endings change the checksum.
    m.add("2_b.sql", "CREATE TABLE b (id INTEGER);\r\n");
    let done = preflight(None, &args, LONG);
    done.expect_code(12);
    assert!(done.stderr.contains("2_b.sql") && done.stderr.contains("CRLF"), "{done}");

    m.remove("2_b.sql");
    let done = preflight(None, &args, LONG);
    done.expect_code(13);
    assert!(done.stderr.contains("--ignore-missing"), "{done}");
    let done = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--ignore-missing"],
        LONG,
    );
    done.expect_code(0);
}

#[test]
fn readers_start_only_after_the_writer_finishes() {
    let (_pg, url) = Pg::running();
    let s = schema("SELECT pg_sleep(0.3);");
    let m = Migrations::new(&files(&s));
    let marker = m.dir.path().join("reader-started");
    let count_sql = "SELECT COUNT(*) FROM items";
    let mut reader = Preflight::spawn(
        None,
        &[
            "run",
            "--database-url",
            &url,
            "--migrations",
            m.path(),
            "--schema",
            "wait",
            "--",
            "sh",
            "-c",
            &format!("touch {}", marker.display()),
        ],
    );
    reader.wait_for_line(&["waiting for another process to migrate"], LONG);
    assert!(!marker.exists());
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    let done = reader.finish(LONG);
    done.expect_code(0);
    assert!(marker.exists(), "{done}");
    assert_eq!(sql_i64(&url, count_sql), 2);
    assert!(done.stderr.contains("lock_taken=false"), "a reader takes no lock: {done}");
}

#[test]
fn readers_without_a_writer_time_out_with_124() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\n")]);
    let done = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--schema", "wait", "--timeout", "2s"],
        LONG,
    );
    done.expect_code(124);
    assert!(done.elapsed < Duration::from_secs(4), "{done}");
    assert_eq!(
        sql_i64(&format!("{url}?mode=ro"), "SELECT COUNT(*) FROM sqlite_master"),
        0,
        "a reader writes nothing"
    );
}

#[test]
fn stamp_adopts_an_existing_database_without_running_the_migrations() {
    let (_pg, url) = Pg::running();
    // The database already has the schema, made by hand (like `alembic stamp head` users).
    sql_exec(&url, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL);");
    let s = schema("");
    let m = Migrations::new(&files(&s));
    let status =
        preflight(None, &["status", "--database-url", &url, "--migrations", m.path(), "--check"], LONG);
    status.expect_code(16);
    assert_eq!(status.stdout.matches(" pending ").count(), 3, "{status}");
    assert!(
        status
            .stdout
            .ends_with("0 applied, 3 pending, 0 changed, 0 missing, 0 dirty: the schema is not current\n"),
        "{status}"
    );

    preflight(
        None,
        &["migrate", "stamp", "20240102000000", "--database-url", &url, "--migrations", m.path()],
        LONG,
    )
    .expect_code(0);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM items"), 0, "stamp ran no SQL");
    let status = preflight(
        None,
        &["status", "--database-url", &url, "--migrations", m.path(), "--format", "json"],
        LONG,
    );
    status.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(status.stdout.trim()).unwrap();
    let states: Vec<&str> =
        v["migrations"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["applied", "applied", "pending"], "{status}");
    assert_eq!(v["current"], false);

    preflight(None, &["migrate", "stamp", "--database-url", &url, "--migrations", m.path()], LONG)
        .expect_code(0);
    preflight(None, &["status", "--database-url", &url, "--migrations", m.path(), "--check"], LONG)
        .expect_code(0);
}

#[test]
fn dry_run_lists_pending_migrations_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let s = schema("");
    let m = Migrations::new(&files(&s));
    let done =
        preflight(None, &["migrate", "--dry-run", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(0);
    assert_eq!(done.stdout.lines().filter(|l| l.starts_with("would apply")).count(), 3, "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM sqlite_master"), 0);
}

#[test]
fn single_transaction_applies_all_or_nothing() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[
        ("1_a.sql", "CREATE TABLE a (id INTEGER);\n"),
        ("2_b.sql", "CREATE TABLE b (id INTEGER);\n"),
        ("3_c.sql", "INSERT INTO nowhere VALUES (1);\n"),
    ]);
    let args = ["migrate", "--database-url", &url, "--migrations", m.path(), "--single-transaction"];
    let done = preflight(None, &args, LONG);
    done.expect_code(10);
    assert!(done.stderr.contains("3_c.sql") && done.stderr.contains("whole batch was rolled back"), "{done}");
    assert_eq!(
        sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('a', 'b', '_sqlx_migrations')"),
        1
    );
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 0);

    m.add("3_c.sql", "CREATE TABLE c (id INTEGER);\n");
    preflight(None, &args, LONG).expect_code(0);
    assert_eq!(
        sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success AND execution_time > 0"),
        3
    );

    m.add("4_d.sql", "-- no-transaction\nCREATE TABLE d (id INTEGER);\n");
    let done = preflight(None, &args, LONG);
    done.expect_code(10);
    assert!(done.stderr.contains("no-transaction") && done.stderr.contains("4_d.sql"), "{done}");
}

#[test]
fn a_lock_held_too_long_times_out_naming_the_holder() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_slow.sql", "SELECT pg_sleep(4);\n")]);
    let mut holder = Preflight::spawn(None, &["migrate", "--database-url", &url, "--migrations", m.path()]);
    holder.wait_for_line(&["migration lock acquired"], LONG);
    let done = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--lock-timeout", "1s"],
        LONG,
    );
    done.expect_code(14);
    assert!(done.stderr.contains("held by preflight/"), "{done}");
    // It gives up at the timeout it was given, not a random delay before it.
    let migrate_ms: u64 = done
        .stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("migrate_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no migrate_ms: {done}"));
    assert!(migrate_ms >= 1000, "gave up after {migrate_ms} ms: {done}");
    holder.finish(LONG).expect_code(0);
}

/// A server that stops answering while preflight waits for the lock (frozen, or a network
/// that drops packets) does not hold it past --lock-timeout: a query that never returns is cut
/// by the bound on the whole wait.
#[test]
fn a_frozen_server_does_not_stretch_the_lock_timeout() {
    let (pg, url) = Pg::running();
    let m = Migrations::new(&[("1_slow.sql", "SELECT pg_sleep(6);\n")]);
    let mut holder = Preflight::spawn(None, &["migrate", "--database-url", &url, "--migrations", m.path()]);
    holder.wait_for_line(&["migration lock acquired"], LONG);
    let mut waiter = Preflight::spawn(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--lock-timeout", "3s"],
    );
    waiter.wait_for_line(&["waiting for the migration lock"], LONG);
    pg.freeze(true);
    /// Thaws the server however the test ends.
    struct Thaw<'a>(&'a Pg);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            self.0.freeze(false);
        }
    }
    let _thaw = Thaw(&pg);
    let done = waiter.finish(Duration::from_secs(15));
    done.expect_code(14);
    assert!(done.stderr.contains("within 3s"), "{done}");
    // The deadline plus the one-second bound, with room for a slow machine; without the bound a
    // query to the frozen server would wait for the attempt timeout or for ever.
    assert!(done.elapsed < Duration::from_secs(7), "{done}");
    drop(_thaw);
    let _ = holder.finish(LONG);
}

#[test]
fn a_killed_lock_holder_frees_the_lock_and_leaves_nothing_half_applied() {
    use nix::sys::signal::Signal;
    for (signal, code) in [(Signal::SIGKILL, None), (Signal::SIGTERM, Some(143))] {
        let (_pg, url) = Pg::running();
        let m = Migrations::new(&[("1_slow.sql", "CREATE TABLE half (id INTEGER);\nSELECT pg_sleep(30);\n")]);
        let args = ["migrate", "--database-url", &url, "--migrations", m.path()];
        let mut holder = Preflight::spawn(None, &args);
        holder.wait_for_line(&["migration lock acquired"], LONG);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder.pid()), signal).unwrap();
        let stopped = holder.finish(LONG);
        assert_eq!(stopped.code(), code, "{stopped}");
        assert!(stopped.elapsed < Duration::from_secs(5), "{stopped}");
        // The server notices the closed connection within a second
        // (client_connection_check_interval), rolls back and frees the lock, long before the
        // 30 s statement would have ended. Nothing was recorded, so the (now quick) migration
        // is simply pending and the next run applies it.
        m.add("1_slow.sql", "CREATE TABLE half (id INTEGER);\n");
        let done = preflight(None, &args, LONG);
        done.expect_code(0);
        assert!(done.elapsed < Duration::from_secs(10), "{signal}: the lock was not freed promptly: {done}");
        assert!(done.stderr.contains("applied=1"), "{done}");
        assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"), 1);
    }
}

#[test]
fn sqlx_and_preflight_see_each_others_migrations_as_current() {
    let (_pg, url) = Pg::running();
    let s = schema("");
    let m = Migrations::new(&files(&s));
    // sqlx's own migrator first.
    let dir = m.dir.path().to_path_buf();
    let url2 = url.clone();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
        use sqlx::Connection;
        let migrator = sqlx::migrate::Migrator::new(dir.join("")).await.unwrap();
        let mut c = sqlx::PgConnection::connect(&url2).await.unwrap();
        migrator.run_direct(None, &mut c, false).await.unwrap();
    });
    preflight(None, &["status", "--database-url", &url, "--migrations", m.path(), "--check"], LONG)
        .expect_code(0);

    // And the reverse, on a second database: preflight first, then sqlx finds nothing to do
    // (it would fail on a checksum mismatch or apply twice on a version it did not see).
    let (_pg2, url3) = Pg::running();
    preflight(None, &["migrate", "--database-url", &url3, "--migrations", m.path()], LONG).expect_code(0);
    let dir = m.dir.path().to_path_buf();
    let url4 = url3.clone();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
        use sqlx::Connection;
        let migrator = sqlx::migrate::Migrator::new(dir.join("")).await.unwrap();
        let mut c = sqlx::PgConnection::connect(&url4).await.unwrap();
        migrator.run_direct(None, &mut c, false).await.unwrap();
    });
    assert_eq!(sql_i64(&url3, "SELECT COUNT(*) FROM items"), 2);
    assert_eq!(sql_i64(&url3, "SELECT COUNT(*) FROM _sqlx_migrations"), 3);
}

fn reversible() -> Migrations {
    Migrations::new(&[
        ("1_a.up.sql", "CREATE TABLE a (id INTEGER);\n"),
        ("1_a.down.sql", "DROP TABLE a;\n"),
        ("2_b.up.sql", "CREATE TABLE b (id INTEGER);\nINSERT INTO b VALUES (1);\n"),
        ("2_b.down.sql", "DROP TABLE b;\n"),
    ])
}

#[test]
fn revert_then_apply_again_round_trips_on_postgres() {
    let (_pg, url) = Pg::running();
    let m = reversible();
    let tables = "SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('a', 'b')";
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    assert_eq!(sql_i64(&url, tables), 2);

    let done =
        preflight(None, &["migrate", "revert", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("reverted version=2"), "{done}");
    assert_eq!(sql_i64(&url, tables), 1);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 1);

    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    assert_eq!(sql_i64(&url, tables), 2);
    preflight(
        None,
        &["migrate", "revert", "--to", "0", "--database-url", &url, "--migrations", m.path()],
        LONG,
    )
    .expect_code(0);
    assert_eq!(sql_i64(&url, tables), 0);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 0);
}

#[test]
fn revert_refuses_a_migration_without_a_down_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\n")]);
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    let done =
        preflight(None, &["migrate", "revert", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(10);
    assert!(done.stderr.contains("1_a.sql has no .down.sql"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 1);
}

#[test]
fn reset_is_refused_without_the_flag_and_rebuilds_from_zero_with_it() {
    let (_pg, url) = Pg::running();
    let m = reversible();
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    sql_exec(&url, "INSERT INTO b VALUES (2), (3); CREATE TABLE stray (id INTEGER);");

    let done = preflight(None, &["migrate", "reset", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("--confirm-destroy-all-data"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM b"), 3, "refused means untouched");

    let args =
        ["migrate", "reset", "--confirm-destroy-all-data", "--database-url", &url, "--migrations", m.path()];
    preflight(None, &args, LONG).expect_code(0);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM b"), 1, "only the seed row is back");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'stray'"), 0);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 2);
}

#[test]
fn sqlite_backups_are_written_before_migrating_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("sqlite:{}", db.display());
    let backups = dir.path().join("backups");
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\nINSERT INTO a VALUES (1);\n")]);
    let args = |extra: &[&str]| {
        let mut v = vec!["migrate", "--database-url", &url, "--migrations", m.path(), "--backup"];
        v.extend_from_slice(&["--backup-dir", backups.to_str().unwrap(), "--backup-keep", "2"]);
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let list = || {
        let mut v: Vec<String> = std::fs::read_dir(&backups)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let run = |a: Vec<String>| preflight(None, &a.iter().map(String::as_str).collect::<Vec<_>>(), LONG);
    run(args(&[])).expect_code(0);
    assert_eq!(list().len(), 1, "a backup is taken before the first migration");
    // Nothing pending: no backup.
    run(args(&[])).expect_code(0);
    assert_eq!(list().len(), 1);
    for i in 2..=4 {
        m.add(&format!("{i}_more.sql"), &format!("INSERT INTO a VALUES ({i});\n"));
        run(args(&[])).expect_code(0);
    }
    let kept = list();
    assert_eq!(kept.len(), 2, "{kept:?}");
    // The newest backup is the state before migration 4: three rows.
    let newest = format!("sqlite:{}?mode=ro", backups.join(&kept[1]).display());
    assert_eq!(sql_i64(&newest, "SELECT COUNT(*) FROM a"), 3);
}

#[test]
fn a_migration_command_on_sqlite_is_backed_up_unless_the_check_says_current() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("sqlite:{}", db.display());
    sql_exec(&format!("{url}?mode=rwc"), "CREATE TABLE a (id INTEGER); INSERT INTO a VALUES (1);");
    let backups = dir.path().join("backups");
    // The "migration tool" adds a row; the "check" says current once a second row exists.
    let tool = dir.path().join("tool.py");
    std::fs::write(
        &tool,
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[2])\nn = c.execute('SELECT COUNT(*) FROM a').fetchone()[0]\n\
         if sys.argv[1] == 'check':\n    sys.exit(0 if n >= 2 else 1)\nc.execute('INSERT INTO a VALUES (2)')\nc.commit()\n",
    )
    .unwrap();
    let migrate = format!("python3 {} migrate {}", tool.display(), db.display());
    let check = format!("python3 {} check {}", tool.display(), db.display());
    let args = [
        "migrate",
        "--database-url",
        &url,
        "--migrate-command",
        &migrate,
        "--schema-check-command",
        &check,
        "--backup",
        "--backup-dir",
        backups.to_str().unwrap(),
    ];
    preflight(None, &args, LONG).expect_code(0);
    let taken: Vec<_> = std::fs::read_dir(&backups).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM a"), 2, "the command ran");
    let copy = format!("sqlite:{}?mode=ro", taken[0].display());
    assert_eq!(sql_i64(&copy, "SELECT COUNT(*) FROM a"), 1, "the backup is the state before the command");
    // Current now: no command, no backup.
    let done = preflight(None, &args, LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("schema is current"), "{done}");
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM a"), 2);
}

#[test]
fn a_failing_backup_command_stops_before_any_migration() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\n")]);
    let done = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--backup-command", "sh -c 'exit 7'"],
        LONG,
    );
    done.expect_code(15).expect_no_password();
    assert!(
        done.stderr.contains("no migration ran") && done.stderr.contains("drop --backup-command"),
        "{done}"
    );
    assert!(done.stderr.contains("may be incomplete"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'a'"), 0);
    // A command that cannot start is a failed backup too (15, naming the flag), not the app's
    // 127.
    let done = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--backup-command", "pg_dmup -Fc"],
        LONG,
    );
    done.expect_code(15).expect_no_password();
    assert!(done.stderr.contains("--backup-command") && done.stderr.contains("'pg_dmup'"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'a'"), 0);

    // A working command gets `$VAR`s expanded (the URL it must dump, the stamp) and the same
    // URL in its environment.
    let out = m.dir.path().join("dump-marker");
    let cmd = format!(
        "sh -c 'printf \"%s\\n%s\\n%s\\n\" \"$1\" \"$2\" \"$DATABASE_URL\" > {}' sh ${{PREFLIGHT_BACKUP_STAMP}} $DATABASE_URL",
        out.display()
    );
    preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--backup-command", &cmd],
        LONG,
    )
    .expect_code(0);
    let written = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 3, "{written:?}");
    assert!(lines[0].ends_with('Z') && lines[0].len() == 19, "{written:?}");
    assert_eq!(lines[1], url, "the expanded $DATABASE_URL");
    assert_eq!(lines[2], url, "DATABASE_URL in the command's environment");
}

fn alembic() -> (String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = format!("{root}/target/test-venv/bin/alembic");
    assert!(std::path::Path::new(&bin).exists(), "{bin} is missing: run scripts/install-test-deps.sh");
    (bin, format!("{root}/tests/fixtures/alembic/alembic.ini"))
}

#[test]
fn five_concurrent_alembic_upgrades_run_one_at_a_time_under_the_lock() {
    let (_pg, url) = Pg::running();
    let (alembic, ini) = alembic();
    let upgrade = format!("{alembic} -c {ini} upgrade head");
    let check = format!("{alembic} -c {ini} current --check-heads");
    let env = [("DATABASE_URL", url.as_str()), ("PYTHONDONTWRITEBYTECODE", "1")];
    // A reader first: it waits, taking no lock, until the check command passes.
    let reader = Preflight::spawn_with(
        None,
        &[
            "run",
            "--migrate-command",
            &upgrade,
            "--schema",
            "wait",
            "--schema-check-command",
            &check,
            "--",
            "true",
        ],
        &env,
    );
    // Each writer's upgrade notes when it starts and ends: under the lock, the runs follow each
    // other, so the log alternates start, end, start, end.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let logged = format!(
        "sh -c 'echo start >> {log}; {upgrade}; rc=$?; echo end >> {log}; exit $rc'",
        log = log.display()
    );
    let writers: Vec<Preflight> = (0..5)
        .map(|_| Preflight::spawn_with(None, &["migrate", "--migrate-command", &logged], &env))
        .collect();
    for w in writers {
        let done = w.finish(LONG);
        done.expect_code(0).expect_no_password();
        assert!(!done.stderr.contains("already exists") && !done.stderr.contains("Traceback"), "{done}");
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(runs, "start\nend\n".repeat(5), "the upgrades overlapped");
    let done = reader.finish(LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("lock_taken=false"), "a reader takes no lock: {done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM alembic_version WHERE version_num = '0002'"), 1);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM alembic_version"), 1);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM notes"), 1);
}

#[test]
fn a_failing_migration_command_is_exit_17_and_keeps_the_app_from_starting() {
    let (_pg, url) = Pg::running();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("app-started");
    let done = Preflight::spawn_with(
        None,
        &[
            "run",
            "--migrate-command",
            "sh -c 'echo boom >&2; exit 3'",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ],
        &[("DATABASE_URL", &url)],
    )
    .finish(LONG);
    done.expect_code(17);
    assert!(done.stderr.contains("boom") && !marker.exists(), "{done}");
}

#[test]
fn schema_skip_neither_migrates_nor_waits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\n")]);
    let done = preflight(
        None,
        &[
            "run",
            "--database-url",
            &url,
            "--migrations",
            m.path(),
            "--schema",
            "skip",
            "--",
            "echo",
            "app ran",
        ],
        LONG,
    );
    done.expect_code(0);
    assert_eq!(done.stdout.trim(), "app ran");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM sqlite_master"), 0, "nothing was migrated");
}

/// Folders sqlx would read silently wrong (a lookalike name skipped, a version read from `+5`,
/// two files with one version, a down file alone) and a stamp of a version no file has are
/// refused before anything connects: exit 2, the file named, no database created.
#[test]
fn malformed_folders_and_unknown_versions_are_refused_before_connecting() {
    for (files, args, says) in [
        (vec!["1_a.sql", "01_b.sql"], vec![], "01_b.sql and 1_a.sql have the same version 1"),
        (vec!["1_init.sql", "2-users.sql"], vec![], "2-users.sql has no '_'"),
        (vec!["1_init.sql", "2_users.SQL"], vec![], "2_users.SQL: the extension must be .sql"),
        (vec!["+5_x.sql"], vec![], "the version '+5' must be digits only"),
        (vec!["1_init.sql", "2_x.down.sql"], vec![], "2_x.down.sql has no up migration"),
        (vec!["1_init.sql"], vec!["stamp", "2026010100000"], "stamp 2026010100000: no migration"),
        (vec!["1_init.sql"], vec!["revert", "--to", "7"], "--to 7: no migration"),
    ] {
        let m = Migrations::new(&[]);
        for f in &files {
            m.add(f, "CREATE TABLE t (id INTEGER);\n");
        }
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let url = format!("sqlite:{}", db.display());
        let mut argv = vec!["migrate"];
        argv.extend(&args);
        argv.extend(["--database-url", &url, "--migrations", m.path()]);
        let done = preflight(None, &argv, LONG);
        done.expect_code(2);
        assert!(done.stderr.contains(says), "{files:?} {args:?}: {done}");
        assert!(!done.stderr.contains("ready"), "it connected: {done}");
        assert!(!db.exists(), "a database was created: {done}");
    }
}

/// A `-- no-transaction` file saved with a byte order mark (Windows editors) still runs
/// outside a transaction: `CREATE INDEX CONCURRENTLY` would fail inside one.
#[test]
fn a_byte_order_mark_does_not_hide_no_transaction() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_table.sql", "CREATE TABLE items (id INTEGER);\n")]);
    m.add("2_index.sql", "\u{feff}-- no-transaction\nCREATE INDEX CONCURRENTLY items_id ON items (id);\n");
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(0).expect_no_password();
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'items_id'"), 1, "{done}");
    // The checksum is sqlx's (over the file as written): a second run is a no-op, not "changed".
    assert_rerun_is_a_no_op(&url, &m);
}

/// A reader that finds a dirty row (a migration recorded as started, never finished) fails at
/// once with exit 11 when nobody holds the migration lock: no writer will clean it up, and
/// waiting for the deadline would only hide it. While the lock is held (a writer at work: on
/// MySQL a migration in progress looks dirty from outside) it keeps waiting.
#[test]
fn a_reader_on_a_dirty_row_fails_at_once_unless_a_writer_holds_the_lock() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_items.sql", "CREATE TABLE items (id INTEGER);\n")]);
    let reader = ["run", "--schema", "wait", "--database-url", &url, "--migrations", m.path()];
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    sql_exec(&url, "UPDATE _sqlx_migrations SET success = false");

    // sqlx's lock key for the database `postgres`, held by another session.
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let key = 0x3d32_ad9e * i64::from(CRC.checksum(b"postgres"));
    let mut holder = std::process::Command::new(pg_bin("psql"))
        .arg(&url)
        .args(["-c", &format!("SELECT pg_advisory_lock({key})"), "-c", "SELECT pg_sleep(120)"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let advisory = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";
    wait_until("the lock to be held", LONG, || sql_i64(&url, advisory) == 1);
    let waited = preflight(None, &[&reader[..], &["--timeout", "1500ms", "--", "true"]].concat(), LONG);
    waited.expect_code(124);
    assert!(waited.stderr.contains("waiting for another process to migrate"), "{waited}");

    // The holder's session ends (its backend, asleep in pg_sleep, would not notice psql's death).
    sql_exec(&url, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'");
    holder.wait().unwrap();
    wait_until("the lock to be released", LONG, || sql_i64(&url, advisory) == 0);
    let failed = preflight(None, &[&reader[..], &["--timeout", "5m", "--", "true"]].concat(), LONG);
    failed.expect_code(11).expect_no_password();
    assert!(failed.stderr.contains("1_items.sql") && failed.stderr.contains("dirty"), "{failed}");
}

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs (the tests run as root)");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// A backup that runs out of space fails with exit 15, before any migration, and leaves
/// nothing under a backup's name: the good backups stay, and none is pruned for it.
#[test]
fn a_backup_that_runs_out_of_space_leaves_nothing_and_keeps_the_good_one() {
    let disk = SmallDisk::new("256k");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let m = Migrations::new(&[("1_t.sql", "CREATE TABLE t (v TEXT);\n")]);
    let backups = disk.0.path().to_str().unwrap();
    let args = [
        "migrate",
        "--database-url",
        &url,
        "--migrations",
        m.path(),
        "--backup",
        "--backup-dir",
        backups,
        "--backup-keep",
        "1",
    ];
    let list = || {
        let mut v: Vec<String> = std::fs::read_dir(backups)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    preflight(None, &args, LONG).expect_code(0);
    let good = list();
    assert_eq!(good.len(), 1, "{good:?}");

    // About 600 KB of data: its copy no longer fits.
    sql_exec(
        &url,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) \
         INSERT INTO t SELECT hex(randomblob(1000)) FROM c",
    );
    m.add("2_more.sql", "CREATE TABLE u (id INTEGER);\n");
    let full = preflight(None, &args, LONG);
    full.expect_code(15);
    assert!(
        full.stderr.contains("no partial file was left") && full.stderr.contains("drop --backup"),
        "{full}"
    );
    assert_eq!(list(), good, "{full}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations"), 1, "a migration ran: {full}");
}

/// SIGTERM while `--migrate-command` runs: the command's whole process group gets it (a
/// grandchild too), preflight exits 143 only once the group is gone, and only then is the
/// lock free. Before, the direct child was killed and its children went on migrating.
#[test]
fn sigterm_stops_the_migration_commands_whole_group_before_the_lock_is_released() {
    let (_pg, url) = Pg::running();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let command = format!("sh -c '{script}'");
    let mut p = Preflight::spawn(None, &["migrate", "--database-url", &url, "--migrate-command", &command]);
    p.wait_for_line(&["running migration command"], LONG);
    wait_until("the grandchild to start", LONG, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let lock_held = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";
    assert_eq!(sql_i64(&url, lock_held), 1);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
    let done = p.finish(LONG);
    done.expect_code(143).expect_no_password();
    assert!(done.stderr.contains("stopping the migration command and its process group"), "{done}");
    // Gone when preflight was: not a zombie either (its parent, the shell, is gone too).
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(grandchild), None).is_ok();
    let zombie =
        std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|s| s.contains(") Z "));
    assert!(!alive || zombie, "the grandchild {grandchild} outlived preflight: {done}");
    wait_until("the lock to be released", LONG, || sql_i64(&url, lock_held) == 0);
}

/// preflight killed outright (SIGKILL, the OOM killer) mid-command: its lock goes with its
/// connection, and the command must go too, or it would go on migrating beside the next
/// preflight's.
#[test]
fn a_killed_preflight_takes_its_migration_command_with_it() {
    let (_pg, url) = Pg::running();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("command.pid");
    let command = format!("sh -c 'echo $$ > {}; exec sleep 300'", pidfile.display());
    let mut p = Preflight::spawn(None, &["migrate", "--database-url", &url, "--migrate-command", &command]);
    p.wait_for_line(&["running migration command"], LONG);
    wait_until("the command to start", LONG, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    p.finish(LONG);
    let gone = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    };
    wait_until("the orphaned command to die", LONG, gone);
}

/// The SQLite lock file says who holds it and since when; a holder that is not preflight (an
/// operator's flock) is reported as unknown, not under the name of the last preflight that
/// held it, and not as held "for 0s".
#[test]
fn the_sqlite_lock_holder_is_reported_as_known() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("sqlite:{}", db.display());
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\n")]);
    let args = ["migrate", "--database-url", &url, "--migrations", m.path(), "--lock-timeout", "1s"];
    // A first run leaves its name behind only while it holds the lock.
    preflight(None, &args[..5], LONG).expect_code(0);
    m.add("2_b.sql", "CREATE TABLE b (id INTEGER);\n");
    let lock = format!("{}.lock", db.display());
    let mut held = std::process::Command::new("flock").args(["-x", &lock, "sleep", "60"]).spawn().unwrap();
    wait_until("flock to hold the lock", LONG, || {
        std::fs::File::open(&lock)
            .is_ok_and(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err())
    });
    let done = preflight(None, &args, LONG);
    held.kill().unwrap();
    held.wait().unwrap();
    done.expect_code(14);
    assert!(done.stderr.contains("held by a process that did not say who it is"), "{done}");
    assert!(!done.stderr.contains("preflight/") && !done.stderr.contains("for 0s"), "{done}");
}

/// A migration that runs in preflight's transaction must not control it: its COMMIT would
/// apply the first half, and the rest would fail outside it. Refused before anything connects,
/// with the file and line; a `-- no-transaction` file may.
#[test]
fn transaction_control_inside_a_transactional_migration_is_refused() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[(
        "1_half.sql",
        "CREATE TABLE half (id INTEGER);\n-- a comment; with a semicolon\nCOMMIT;\nSELECT 1/0;\n",
    )]);
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("1_half.sql, line 3: `COMMIT`"), "{done}");
    assert!(done.stderr.contains("-- no-transaction"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'half'"), 0);

    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("app.db").display());
    let m = Migrations::new(&[("1_undo.sql", "CREATE TABLE t (id INTEGER);\nROLLBACK;\n")]);
    let done = preflight(None, &["migrate", "--database-url", &sqlite, "--migrations", m.path()], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("1_undo.sql, line 2: `ROLLBACK`"), "{done}");
    assert!(!dir.path().join("app.db").exists(), "{done}");
}

/// A `-- no-transaction` file runs one statement at a time on PostgreSQL: two
/// `CREATE INDEX CONCURRENTLY` in one file would otherwise share an implicit transaction.
#[test]
fn a_no_transaction_file_runs_statement_by_statement() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_table.sql", "CREATE TABLE items (a INTEGER, b INTEGER);\n")]);
    m.add(
        "2_indexes.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY items_a ON items (a);\nCREATE INDEX CONCURRENTLY items_b ON items (b);\n",
    );
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(0).expect_no_password();
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN ('items_a', 'items_b')"), 2);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"), 2);
    assert_rerun_is_a_no_op(&url, &m);
}

/// An open transaction of the app's holds a lock on a table a migration alters. The migration
/// waits --ddl-lock-timeout at most (so the app's own queries never queue behind it for long),
/// is rolled back and tried again; when the tries are spent, exit 18 names the blocker and the
/// table is unchanged. When the blocker ends in time, the migration goes through.
#[test]
fn a_migration_blocked_by_an_open_transaction_gives_way_then_retries() {
    let (_pg, url) = Pg::running();
    sql_exec(&url, "CREATE TABLE items (id INTEGER)");
    let m = Migrations::new(&[("1_column.sql", "ALTER TABLE items ADD COLUMN c INTEGER;\n")]);
    let blocker = || {
        std::process::Command::new(pg_bin("psql"))
            .arg(&url)
            .args(["-c", "BEGIN; LOCK TABLE items IN ACCESS SHARE MODE; SELECT pg_sleep(120)"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let held = "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'items' AND l.granted";
    let end_blocker = |mut child: std::process::Child| {
        sql_exec(
            &url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'psql'",
        );
        child.wait().unwrap();
    };
    let args = ["migrate", "--database-url", &url, "--migrations", m.path(), "--ddl-lock-timeout", "200ms"];

    // An older transaction that holds no table lock: open, but not the blocker.
    let mut decoy = std::process::Command::new(pg_bin("psql"))
        .arg(&url)
        .env("PGAPPNAME", "decoy")
        .args(["-c", "BEGIN; SELECT txid_current(); SELECT pg_sleep(120)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let decoy_open =
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'decoy' AND xact_start IS NOT NULL";
    wait_until("the decoy's transaction", LONG, || sql_i64(&url, decoy_open) >= 1);
    let child = blocker();
    wait_until("the blocker to hold its lock", LONG, || sql_i64(&url, held) >= 1);
    let done = preflight(None, &[&args[..], &["--ddl-retries", "2"]].concat(), LONG);
    done.expect_code(18).expect_no_password();
    assert!(done.stderr.contains("1_column.sql could not lock its tables within 200ms (3 tries)"), "{done}");
    assert!(
        done.stderr.contains("psql, idle in transaction") || done.stderr.contains("psql, active"),
        "{done}"
    );
    // The blocker is named first, with the table it holds, before the older decoy.
    let error = done.stderr.lines().find(|l| l.contains("ERROR")).unwrap_or_default();
    let (named, decoy_at) = (error.find("(psql,"), error.find("(decoy,"));
    assert!(named.is_some() && (decoy_at.is_none() || named < decoy_at), "{done}");
    assert!(error.contains("holds locks on items"), "{done}");
    sql_exec(&url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'decoy'");
    let _ = decoy.wait();
    assert_eq!(done.stderr.matches("trying again").count(), 2, "{done}");
    assert_eq!(
        sql_i64(
            &url,
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'c'"
        ),
        0
    );

    // The blocker ends while the migration waits between tries: it goes through.
    let mut p = Preflight::spawn(None, &[&args[..], &["--ddl-retries", "50"]].concat());
    p.wait_for_line(&["trying again"], LONG);
    end_blocker(child);
    let done = p.finish(LONG);
    done.expect_code(0);
    assert_eq!(
        sql_i64(
            &url,
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'c'"
        ),
        1
    );
}

/// `status` lists every migration first, then exits with the problem's own code: 12 for a
/// changed file, 13 for one missing here; `--check` alone is 16 for pending ones.
#[test]
fn status_lists_then_exits_with_the_problems_code() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let m = Migrations::new(&[
        ("1_a.sql", "CREATE TABLE a (id INTEGER);\n"),
        ("2_b.sql", "CREATE TABLE b (id INTEGER);\n"),
    ]);
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    m.add("1_a.sql", "CREATE TABLE a (id INTEGER, changed INTEGER);\n");
    let changed = preflight(None, &["status", "--database-url", &url, "--migrations", m.path()], LONG);
    changed.expect_code(12);
    assert!(changed.stdout.contains(" changed ") && changed.stdout.contains(" applied "), "{changed}");
    m.add("1_a.sql", "CREATE TABLE a (id INTEGER);\n");
    m.remove("2_b.sql");
    let missing = preflight(None, &["status", "--database-url", &url, "--migrations", m.path()], LONG);
    missing.expect_code(13);
    assert!(missing.stdout.contains("missing"), "{missing}");
}

/// Revert targets that are not behind the database are exit 2 with SQL files too, an empty
/// database included; a link to nothing in the folder is refused, not skipped.
#[test]
fn sql_reverts_past_what_is_applied_and_dangling_links_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("app.db").display());
    let m = Migrations::new(&[
        ("1_a.up.sql", "CREATE TABLE a (id INTEGER);\n"),
        ("1_a.down.sql", "DROP TABLE a;\n"),
    ]);
    m.add("2_b.up.sql", "CREATE TABLE b (id INTEGER);\n");
    m.add("2_b.down.sql", "DROP TABLE b;\n");
    let revert = |args: &[&str]| {
        let mut argv = vec!["migrate", "revert", "--database-url", &url, "--migrations", m.path()];
        argv.extend_from_slice(args);
        preflight(None, &argv, LONG)
    };
    revert(&["--steps", "1"]).expect_code(2);
    preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG).expect_code(0);
    revert(&["--to", "1"]).expect_code(0);
    let ahead = revert(&["--to", "2"]);
    ahead.expect_code(2);
    assert!(ahead.stderr.contains("is not applied"), "{ahead}");
    let past = revert(&["--steps", "5"]);
    past.expect_code(2);
    assert!(past.stderr.contains("only 1 migrations are applied"), "{past}");

    std::os::unix::fs::symlink("/nonexistent/0_x.sql", m.dir.path().join("0_x.sql")).unwrap();
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", m.path()], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("cannot read 0_x.sql"), "{done}");
}

/// Pruning keeps the backup just written, even when a file named for a later time (a clock
/// that was ahead, a copy from another host) sorts after it; files not named by a real time
/// are not backups at all.
#[test]
fn pruning_never_deletes_the_backup_just_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("sqlite:{}", db.display());
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    std::fs::write(backups.join("app-20991203T000000000Z.db"), "from the future").unwrap();
    std::fs::write(backups.join("app-99999999T999999999Z.db"), "not a time").unwrap();
    let m = Migrations::new(&[("1_a.sql", "CREATE TABLE a (id INTEGER);\n")]);
    let done = preflight(
        None,
        &[
            "migrate",
            "--database-url",
            &url,
            "--migrations",
            m.path(),
            "--backup",
            "--backup-dir",
            backups.to_str().unwrap(),
            "--backup-keep",
            "1",
        ],
        LONG,
    );
    done.expect_code(0);
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}: {done}");
    assert!(names.contains(&"app-99999999T999999999Z.db".to_owned()), "{names:?}");
    assert!(names.contains(&"app-20991203T000000000Z.db".to_owned()), "{names:?}");
}

/// The server drops the migrating session (57P01, as when PostgreSQL restarts between the wait
/// and the migration): that is "not yet", not a permanent failure. The phase is tried again
/// within the deadline, reads the state afresh and goes on.
#[test]
fn a_session_terminated_mid_migration_is_retried_within_the_deadline() {
    let (_pg, url) = Pg::running();
    // A sequence is not rolled back: the first try terminates itself, the next ones go through.
    sql_exec(&url, "CREATE SEQUENCE once");
    let m = Migrations::new(&[
        ("1_a.sql", "CREATE TABLE a (id INTEGER);\n"),
        (
            "2_b.sql",
            "SELECT CASE WHEN nextval('once') = 1 THEN pg_terminate_backend(pg_backend_pid()) END;\nCREATE TABLE b (id INTEGER);\n",
        ),
    ]);
    let done = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--timeout", "30s"],
        LONG,
    );
    done.expect_code(0).expect_no_password();
    assert!(done.stderr.contains("trying again") && done.stderr.contains("57P01"), "{done}");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM _sqlx_migrations WHERE success"), 2);
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('a', 'b')"), 2);
}

/// SIGTERM while a MySQL migration runs: MySQL would run the rest of the file's statements
/// after the client went away, so preflight kills its session from a second connection first.
#[test]
fn sigterm_stops_a_mariadb_migration_in_progress() {
    let mut db = MariaDb::new();
    db.start();
    let url = db.url_for(PASSWORD, "app");
    let m = Migrations::new(&[(
        "1_slow.sql",
        "CREATE TABLE first_half (id INTEGER);\nSELECT SLEEP(20);\nCREATE TABLE second_half (id INTEGER);\n",
    )]);
    let mut p = Preflight::spawn(None, &["migrate", "--database-url", &url, "--migrations", m.path()]);
    p.wait_for_line(&["migration lock acquired"], LONG);
    let sleeping = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP%'";
    wait_until("the migration to reach its SLEEP", LONG, || sql_i64(&url, sleeping) == 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid()), nix::sys::signal::Signal::SIGTERM).unwrap();
    let done = p.finish(LONG);
    done.expect_code(143).expect_no_password();
    assert!(done.stderr.contains("was stopped (KILL)"), "{done}");
    // The session is gone at once, not after its SLEEP, and nothing after it ran.
    assert_eq!(sql_i64(&url, sleeping), 0, "{done}");
    let tables = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 'second_half'";
    assert_eq!(sql_i64(&url, tables), 0, "{done}");
}

/// `migrate new` writes the next file where the migrations are, prints its path, touches no
/// database; the file it writes is a valid migration.
#[test]
fn migrate_new_creates_a_file_that_migrate_then_applies() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("db/migrations");
    let folder_s = folder.to_str().unwrap();
    let done = preflight(None, &["migrate", "new", "add users", "--migrations", folder_s], LONG);
    done.expect_code(0);
    let path = done.stdout.trim();
    let name = std::path::Path::new(path).file_name().unwrap().to_str().unwrap();
    assert!(name.len() == "20261203101300_add_users.sql".len() && name.ends_with("_add_users.sql"), "{done}");
    std::fs::write(path, "CREATE TABLE users (id INTEGER);\n").unwrap();
    let done = preflight(None, &["migrate", "new", "-r", "orders", "--migrations", folder_s], LONG);
    done.expect_code(0);
    assert_eq!(done.stdout.lines().count(), 2, "{done}");
    let db = dir.path().join("app.db");
    let url = format!("sqlite:{}", db.display());
    let done = preflight(None, &["migrate", "--database-url", &url, "--migrations", folder_s], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("applied=2"), "{done}");
    let done = preflight(None, &["migrate", "new", "no/slashes", "--migrations", folder_s], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("cannot be a migration name"), "{done}");
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 3);
}
