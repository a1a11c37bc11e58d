//! Passwords never leave preflight: every error path, driven with a canary password at trace
//! level, in text and in JSON logs, with stdout and stderr searched for any piece of it.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Distinctive, with a comma (which `--wait-for` once split on) and characters a URL encodes.
const CANARY: &str = "cAnAry-9Xq,zZt-Kw7";
/// What must never appear: each half of the canary, raw or percent-encoded.
const PIECES: [&str; 2] = ["cAnAry", "zZt-Kw7"];

fn encoded(s: &str) -> String {
    s.replace(',', "%2C")
}

struct Case {
    what: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    /// A piece of the message that says what is wrong (checked in text logs).
    says: &'static str,
}

fn case(what: &'static str, args: &[&str], code: i32, says: &'static str) -> Case {
    Case { what, args: args.iter().map(|s| (*s).to_owned()).collect(), env: Vec::new(), code, says }
}

fn with_env(mut c: Case, key: &'static str, value: String) -> Case {
    c.env.push((key, value));
    c
}

fn run(c: &Case, format: &str) -> Finished {
    let mut args = vec!["--log-level", "trace", "--log-format", format];
    args.extend(c.args.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Preflight::spawn_with(None, &args, &env).finish(LIMIT)
}

#[test]
fn no_error_path_prints_a_password() {
    let (pg, admin) = Pg::running();
    let port = pg.port.to_string();
    sql_exec(&admin, &format!("CREATE ROLE canary LOGIN SUPERUSER PASSWORD '{CANARY}'"));
    for db in ["failing", "backup", "command", "status", "blocked"] {
        sql_exec(&admin, &format!("CREATE DATABASE {db}"));
    }
    let pw = encoded(CANARY);
    let good = |db: &str| format!("postgres://canary:{pw}@127.0.0.1:{port}/{db}");
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let nobody = format!("127.0.0.1:{dead}");
    let failing = Migrations::new(&[("1_divide.sql", "SELECT 1/0;\n")]);
    let pending = Migrations::new(&[("1_ok.sql", "CREATE TABLE ok (id INTEGER);\n")]);
    // An open transaction holds a lock on the table the migration alters, for the whole test.
    let blocked_db = admin.rsplit_once('/').map(|(base, _)| format!("{base}/blocked")).unwrap();
    sql_exec(&blocked_db, "CREATE TABLE items (id INTEGER)");
    let mut blocker = std::process::Command::new(pg_bin("psql"))
        .arg(&blocked_db)
        .args(["-c", "BEGIN; LOCK TABLE items IN ACCESS SHARE MODE; SELECT pg_sleep(300)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let held = "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'items' AND l.granted";
    wait_until("the blocker to hold its lock", LIMIT, || sql_i64(&blocked_db, held) >= 1);
    let alter = Migrations::new(&[("1_column.sql", "ALTER TABLE items ADD COLUMN c INTEGER;\n")]);

    let cases = vec![
        // Malformed URLs, which no parser accepts and every error message wants to quote.
        case(
            "no // and no host",
            &["wait", "--database-url", &format!("postgres:/canary:{pw}@host/db")],
            2,
            "URL",
        ),
        with_env(
            case("DATABASE_URL without //", &["wait"], 2, "URL"),
            "DATABASE_URL",
            format!("postgres:canary:{pw}@h/db"),
        ),
        case("mysql without host", &["wait", "--database-url", &format!("mysql:/canary:{pw}@h")], 2, "URL"),
        with_env(
            case("a named variable", &["wait", "--database-url-env", "MY_URL"], 2, "MY_URL"),
            "MY_URL",
            format!("postgres:/canary:{pw}@h/db"),
        ),
        case(
            "https wait target",
            &["wait", "--timeout", "300ms", "--wait-for", &format!("https://u:{pw}@{nobody}/x")],
            124,
            "not ready after",
        ),
        case(
            "https target with a bad option",
            &["wait", "--wait-for", &format!("https://u:{pw}@{nobody}/x?status=ok")],
            2,
            "status='ok'",
        ),
        // A URL given without its flag: clap's own error would echo it.
        case(
            "URL without a flag",
            &["wait", &format!("postgres://canary:{pw}@h/db")],
            2,
            "unexpected argument",
        ),
        // The comma in the password is not a target separator on the command line.
        case(
            "comma in a --wait-for password",
            &["wait", "--timeout", "300ms", "--wait-for", &format!("postgres://canary:{CANARY}@{nobody}/db")],
            124,
            "not ready after",
        ),
        with_env(
            case("PREFLIGHT_WAIT_FOR", &["wait", "--timeout", "300ms"], 124, "not ready after"),
            "PREFLIGHT_WAIT_FOR",
            format!("tcp://{nobody},http://u:{pw}@{nobody}/health"),
        ),
        // The driver's warning about a parameter it does not know quotes its value.
        case(
            "PASSWORD= in the query",
            &[
                "wait",
                "--timeout",
                "300ms",
                "--database-url",
                &format!("postgres://canary@{nobody}/db?PASSWORD={pw}"),
            ],
            124,
            "not ready after",
        ),
        case(
            "wrong password",
            &["wait", "--database-url", &format!("postgres://{USER}:{pw}@127.0.0.1:{port}/postgres")],
            3,
            "password",
        ),
        case(
            "failing migration",
            &["migrate", "--database-url", &good("failing"), "--migrations", failing.path()],
            10,
            "1_divide",
        ),
        // A shell-style assignment is refused before anything runs, without quoting it.
        case(
            "assignment before a command",
            &[
                "migrate",
                "--database-url",
                &good("backup"),
                "--migrations",
                pending.path(),
                "--backup-command",
                &format!("PGPASSWORD={CANARY} pg_dump"),
            ],
            2,
            "without a shell",
        ),
        // The backup command's program word is a `$VAR` expansion: logged as written.
        with_env(
            case(
                "expanded backup command",
                &[
                    "migrate",
                    "--database-url",
                    &good("backup"),
                    "--migrations",
                    pending.path(),
                    "--backup-command",
                    "$TOOL --dbname x",
                ],
                15,
                "cannot run '$TOOL'",
            ),
            "TOOL",
            format!("/nonexistent/{CANARY}"),
        ),
        case(
            "failing command",
            &["migrate", "--database-url", &good("command"), "--migrate-command", "sh -c 'exit 4'"],
            17,
            "exit status: 4",
        ),
        case(
            "unbalanced quote",
            &[
                "migrate",
                "--database-url",
                &good("command"),
                "--migrate-command",
                &format!("tool --password {CANARY} 'x"),
            ],
            2,
            "unbalanced quote",
        ),
        case(
            "status --check",
            &["status", "--check", "--database-url", &good("status"), "--migrations", pending.path()],
            16,
            "pending",
        ),
        // --dry-run prints the command on stdout: scrubbed like the logs.
        case(
            "dry run",
            &[
                "migrate",
                "--dry-run",
                "--database-url",
                &good("status"),
                "--alembic-config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/alembic-graph/alembic.ini"),
                "--migrate-command",
                &format!("alembic -x password={CANARY} -x url=postgres://u:{pw}@h/d upgrade heads"),
            ],
            0,
            "dry run",
        ),
        case(
            "redis target",
            &["wait", "--wait-for", &format!("redis://app:{pw}@{nobody}/0"), "--timeout", "300ms"],
            124,
            "not ready after",
        ),
        // Warnings while it waits (the blockers), then exit 18.
        case(
            "blocked DDL",
            &[
                "migrate",
                "--database-url",
                &good("blocked"),
                "--migrations",
                alter.path(),
                "--ddl-lock-timeout",
                "100ms",
                "--ddl-retries",
                "1",
            ],
            18,
            "could not lock its tables",
        ),
        // The app's command line is logged at debug level.
        case(
            "app argv",
            &[
                "run",
                "--database-url",
                &good("status"),
                "--schema",
                "skip",
                "--",
                "true",
                &format!("postgres://canary:{CANARY}@db/app"),
            ],
            0,
            "true",
        ),
    ];

    for c in &cases {
        for format in ["text", "json"] {
            let done = run(c, format);
            assert_eq!(done.code(), Some(c.code), "{}: {done}", c.what);
            for piece in PIECES {
                assert!(
                    !done.stderr.contains(piece) && !done.stdout.contains(piece),
                    "{} ({format}): '{piece}' leaked: {done}",
                    c.what
                );
            }
            if format == "text" {
                assert!(
                    done.stderr.contains(c.says),
                    "{}: the message does not say '{}': {done}",
                    c.what,
                    c.says
                );
            } else {
                for line in done.stderr.lines().filter(|l| !l.trim().is_empty()) {
                    serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| {
                        panic!("{}: a stderr line is not JSON ({e}): {line}\n{done}", c.what)
                    });
                }
            }
        }
    }
    sql_exec(
        &admin,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'psql'",
    );
    blocker.wait().unwrap();
}

/// A short password is hidden where it stands as a value, and nowhere else: hiding every `p`
/// would turn `postgres` into `***ostgres` and show where the password's letters are.
#[test]
fn a_short_password_is_hidden_as_a_token_not_as_a_substring() {
    let dead_port = DeadPort::new();
    let dead = dead_port.port;
    let done = preflight(
        None,
        &[
            "--log-level",
            "trace",
            "wait",
            "--timeout",
            "300ms",
            "--database-url",
            &format!("postgres://u:p@127.0.0.1:{dead}/postgres"),
        ],
        LIMIT,
    );
    done.expect_code(124);
    assert!(done.stderr.contains("postgres://u:***@127.0.0.1"), "{done}");
    assert!(!done.stderr.contains("***ostgres") && !done.stderr.contains("u:p@"), "{done}");
}
