//! End-to-end tests of the wait phase against real servers, real namespaces and the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Databases that start late, or answer before they are ready

#[test]
fn wait_succeeds_when_postgres_starts_late() {
    let mut pg = Pg::new("127.0.0.1", None);
    let url = pg.url("127.0.0.1");
    let mut p =
        Preflight::spawn(None, &["--log-level", "debug", "wait", "--database-url", &url, "--timeout", "30s"]);
    // The scenario: the server comes up after preflight has failed a few attempts.
    p.wait_for_line(&["attempt failed", "attempt=3"], LONG);
    pg.spawn();
    let done = p.finish(LONG);
    done.expect_code(0).expect_no_password();
    assert!(attempts_when_ready(&done) >= 4, "{done}");
}

/// The `attempts=N` of the `ready` line.
fn attempts_when_ready(done: &Finished) -> u32 {
    done.stderr
        .lines()
        .find(|l| l.contains(" ready "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("attempts=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ready line with attempts: {done}"))
}

#[test]
fn wait_succeeds_when_mariadb_starts_late() {
    let mut db = MariaDb::new();
    let url = db.url_for(PASSWORD, "app");
    let mut p =
        Preflight::spawn(None, &["--log-level", "debug", "wait", "--database-url", &url, "--timeout", "40s"]);
    p.wait_for_line(&["attempt failed", "attempt=3"], LONG);
    db.spawn();
    let done = p.finish(Duration::from_secs(45));
    done.expect_code(0).expect_no_password();
    assert!(attempts_when_ready(&done) >= 4, "{done}");
}

/// Once the dependency is up it is seen within a bound set by --backoff-max (a random delay
/// below it, plus one attempt), not at some later retry: a generous 10x bound.
#[test]
fn a_dependency_that_comes_up_is_seen_within_the_backoff_ceiling() {
    let dead = DeadPort::new();
    let target = format!("tcp://127.0.0.1:{}", dead.port);
    let mut p = Preflight::spawn(
        None,
        &[
            "--log-level",
            "debug",
            "wait",
            "--wait-for",
            &target,
            "--backoff-max",
            "200ms",
            "--timeout",
            "30s",
        ],
    );
    p.wait_for_line(&["attempt failed", "attempt=6"], LONG);
    let listener = dead.listen();
    let up = std::time::Instant::now();
    let done = p.finish(LONG);
    let seen = up.elapsed();
    drop(listener);
    done.expect_code(0);
    assert!(seen < Duration::from_secs(2), "seen {seen:?} after it came up: {done}");
}

#[test]
fn postgres_answering_57p03_on_an_open_port_is_not_ready_until_logins_work() {
    // A standby with hot_standby=off accepts TCP and answers every startup message with
    // 57P03, exactly like a server in crash recovery, but for as long as we need.
    let mut pg = Pg::new("127.0.0.1", None).into_standby();
    pg.start_standby();
    let url = pg.url("127.0.0.1");
    let mut p =
        Preflight::spawn(None, &["wait", "--database-url", &url, "--timeout", "30s", "--log-level", "debug"]);
    let line = p.wait_for_line(&["attempt failed", "57P03"], LONG);
    assert!(line.contains("class=not_ready"), "{line}");
    // Still waiting through several more 57P03 answers: an open port is not "ready".
    for _ in 0..3 {
        p.wait_for_line(&["attempt failed", "57P03"], LONG);
    }
    pg.promote();
    let done = p.finish(LONG);
    done.expect_code(0);
    let ready_at = done.stderr.find(" ready ").expect("a ready line");
    assert!(done.stderr[..ready_at].contains("57P03"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// Failing fast

#[test]
fn wrong_password_fails_fast_on_postgres_without_echoing_it() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let url = pg.url_for("127.0.0.1", "wrong-Pa55word", "postgres");
    let done = preflight(None, &["wait", "--database-url", &url], LONG);
    done.expect_code(3);
    assert!(done.elapsed < Duration::from_secs(2), "{done}");
    assert!(done.stderr.contains("28P01") && done.stderr.contains("password"), "{done}");
    assert!(!done.stderr.contains("wrong-Pa55word"), "{done}");
}

#[test]
fn wrong_password_fails_fast_on_mariadb_without_echoing_it() {
    let mut db = MariaDb::new();
    db.start();
    let done = preflight(None, &["wait", "--database-url", &db.url_for("wrong-Pa55word", "app")], LONG);
    done.expect_code(3);
    assert!(done.elapsed < Duration::from_secs(2), "{done}");
    assert!(done.stderr.contains("1045"), "{done}");
    assert!(!done.stderr.contains("wrong-Pa55word"), "{done}");
}

#[test]
fn missing_database_fails_fast_on_both_servers() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let mut my = MariaDb::new();
    my.start();
    for (url, code) in
        [(pg.url_for("127.0.0.1", PASSWORD, "nosuchdb"), "3D000"), (my.url_for(PASSWORD, "nosuchdb"), "1049")]
    {
        let done = preflight(None, &["wait", "--database-url", &url], LONG);
        done.expect_code(3).expect_no_password();
        assert!(done.elapsed < Duration::from_secs(2), "{done}");
        assert!(done.stderr.contains(code) && done.stderr.contains("create the database"), "{done}");
    }
}

#[test]
fn tls_required_by_the_url_but_not_offered_fails_fast() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let url = format!("{}?sslmode=require", pg.url("127.0.0.1"));
    let done = preflight(None, &["wait", "--database-url", &url], LONG);
    done.expect_code(3).expect_no_password();
    assert!(done.elapsed < Duration::from_secs(2), "{done}");
    assert!(done.stderr.contains("TLS") && done.stderr.contains("sslmode"), "{done}");
}

#[test]
fn retry_login_errors_keeps_waiting_until_the_deadline() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let url = pg.url_for("127.0.0.1", PASSWORD, "nosuchdb");
    let done =
        preflight(None, &["wait", "--database-url", &url, "--retry-login-errors", "--timeout", "1s"], LONG);
    done.expect_code(124).expect_no_password();
    assert!(done.stderr.contains("3D000"), "{done}");
}

#[test]
fn malformed_url_fails_fast_with_a_usage_error_and_no_password() {
    let url = format!("postgres://app:{PASSWORD}@[::1:5432/app");
    let done = preflight(None, &["wait", "--database-url", &url], LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.elapsed < Duration::from_secs(2), "{done}");
    assert!(done.stderr.contains("malformed URL") && done.stderr.contains("DATABASE_URL"), "{done}");

    let done = preflight(None, &["wait", "--database-url", &format!("redis://u:{PASSWORD}@h/0")], LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.stderr.contains("unsupported database URL scheme"), "{done}");
}

#[test]
fn database_url_env_names_the_variable_that_holds_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let direct = format!("sqlite:{}", dir.path().join("direct.db").display());
    let pooled = format!("postgres://app:{PASSWORD}@[::1]:1/app");
    let args = ["wait", "--database-url-env", "DIRECT_DATABASE_URL", "--timeout", "5s"];
    let env = [("DATABASE_URL", pooled.as_str()), ("DIRECT_DATABASE_URL", direct.as_str())];
    let done = Preflight::spawn_with(None, &args, &env).finish(LONG);
    done.expect_code(0).expect_no_password();
    assert!(done.stderr.contains("direct.db") && !done.stderr.contains("[::1]"), "{done}");

    let env = [("DATABASE_URL", pooled.as_str())];
    let done = Preflight::spawn_with(None, &args, &env).finish(LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.stderr.contains("DIRECT_DATABASE_URL is not set"), "{done}");

    let bad = format!("postgres://app:{PASSWORD}@[::1:5432/app");
    let env = [("DIRECT_DATABASE_URL", bad.as_str())];
    let done = Preflight::spawn_with(None, &args, &env).finish(LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.stderr.contains("DIRECT_DATABASE_URL: malformed URL"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// IPv6 and DNS

#[test]
fn wait_succeeds_when_only_ipv6_address_listens_behind_an_aaaa_only_name() {
    let ns = Netns::new("v6only");
    ns.add_address("fd00:5::10/128");
    ns.set_hosts("fd00:5::10 db.internal\n");
    let mut pg = Pg::new("fd00:5::10", Some(&ns.name));
    pg.start();
    let done =
        preflight(Some(&ns), &["wait", "--database-url", &pg.url("db.internal"), "--timeout", "10s"], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("address=[fd00:5::10]"), "{done}");
}

#[test]
fn dead_ipv4_address_does_not_delay_a_live_ipv6_one() {
    let ns = Netns::new("dead4");
    ns.add_address("fd00:5::10/128");
    ns.add_dead_host("192.0.2.10");
    ns.set_hosts("192.0.2.10 dual.internal\nfd00:5::10 dual.internal\n");
    let mut pg = Pg::new("fd00:5::10", Some(&ns.name));
    pg.start();
    let done =
        preflight(Some(&ns), &["wait", "--database-url", &pg.url("dual.internal"), "--timeout", "10s"], LONG);
    done.expect_code(0);
    assert!(done.elapsed < Duration::from_secs(1), "{done}");
}

#[test]
fn dead_ipv6_address_costs_one_stagger_before_a_live_ipv4_one() {
    // IPv6 is tried first, so here happy eyeballs has to move on to IPv4 by itself.
    let ns = Netns::new("dead6");
    ns.add_dead_host("fd00:dead::10");
    ns.set_hosts("fd00:dead::10 dual.internal\n127.0.0.1 dual.internal\n");
    let mut pg = Pg::new("127.0.0.1", Some(&ns.name));
    pg.start();
    let done =
        preflight(Some(&ns), &["wait", "--database-url", &pg.url("dual.internal"), "--timeout", "10s"], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("address=127.0.0.1"), "{done}");
    assert!(done.elapsed < Duration::from_secs(1), "{done}");
}

#[test]
fn ipv6_loopback_literal_works() {
    let mut pg = Pg::new("::1", None);
    pg.start();
    let done = preflight(None, &["wait", "--database-url", &pg.url("[::1]")], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("address=[::1]"), "{done}");
    let done = preflight(None, &["wait", "--wait-for", &format!("tcp://[::1]:{}", pg.port)], LONG);
    done.expect_code(0);
}

#[test]
fn a_name_added_to_dns_while_waiting_is_picked_up() {
    let ns = Netns::new("dns");
    let mut pg = Pg::new("127.0.0.1", Some(&ns.name));
    pg.start();
    let mut p = Preflight::spawn(
        Some(&ns),
        &["wait", "--database-url", &pg.url("late.internal"), "--timeout", "20s"],
    );
    p.wait_for_line(&["waiting", "class=dns"], LONG);
    ns.set_hosts("127.0.0.1 late.internal\n");
    let done = p.finish(LONG);
    done.expect_code(0);
    assert!(done.stderr.contains(" ready "), "{done}");
}

// ---------------------------------------------------------------------------------------------
// Deadline, signals, logs, several targets

#[test]
fn a_target_that_never_comes_up_ends_with_124_at_the_deadline() {
    let dead = DeadPort::new();
    let port = dead.port;
    let done =
        preflight(None, &["wait", "--wait-for", &format!("tcp://127.0.0.1:{port}"), "--timeout", "2s"], LONG);
    done.expect_code(124);
    assert!(done.elapsed >= Duration::from_secs(2), "{done}");
    assert!(done.elapsed < Duration::from_secs(3), "{done}");
    assert!(done.stderr.contains("not ready after 2s"), "{done}");
}

#[test]
fn sigterm_during_wait_exits_143_promptly_and_never_starts_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let marker_arg = marker.to_str().unwrap();
    for (signal, code) in [(nix::sys::signal::Signal::SIGTERM, 143), (nix::sys::signal::Signal::SIGINT, 130)]
    {
        let dead = DeadPort::new();
        let target = format!("tcp://127.0.0.1:{}", dead.port);
        let mut p = Preflight::spawn(
            None,
            &["run", "--wait-for", &target, "--backoff-max", "100ms", "--", "touch", marker_arg],
        );
        p.wait_for_line(&["waiting"], LONG);
        let sent = std::time::Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid()), signal).unwrap();
        // The target comes up at once: a preflight that ignored the signal, or acted on it
        // only later, would see it ready within 100 ms and start the command.
        let listener = dead.listen();
        let done = p.finish(LONG);
        drop(listener);
        done.expect_code(code);
        assert!(sent.elapsed() < Duration::from_millis(500), "{done}");
        assert!(!marker.exists(), "the command ran: {done}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dead = DeadPort::new();
    let port = dead.port;
    let done = preflight(
        None,
        &[
            "--log-format",
            "json",
            "wait",
            "--wait-for",
            &format!("tcp://127.0.0.1:{port}"),
            "--timeout",
            "6s",
            "--log-level",
            "debug",
        ],
        LONG,
    );
    done.expect_code(124);
    let mut levels = std::collections::BTreeSet::new();
    for line in done.stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        levels.insert(v["level"].as_str().unwrap().to_owned());
    }
    assert!(levels.contains("DEBUG") && levels.contains("ERROR"), "{levels:?}");
    assert!(done.stderr.contains("\"message\":\"still waiting\""), "{done}");
}

/// An HTTP server that answers each request with `status` after `delay`.
fn slow_http(status: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(50) {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let _ =
                    write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            });
        }
    });
    port
}

#[test]
fn several_targets_are_waited_for_in_parallel() {
    let delay = Duration::from_millis(1500);
    let a = slow_http(200, delay);
    let b = slow_http(204, delay);
    let done = preflight(
        None,
        &[
            "wait",
            "--wait-for",
            &format!("http://127.0.0.1:{a}/healthz"),
            "--wait-for",
            &format!("http://localhost:{b}/ready?deep=1"),
        ],
        LONG,
    );
    done.expect_code(0);
    assert_eq!(done.stderr.matches(" ready ").count(), 2, "{done}");
    // In sequence it would take 3 s or more.
    assert!(done.elapsed < Duration::from_millis(2600), "{done}");
}

#[test]
fn http_status_other_than_2xx_is_not_ready() {
    let port = slow_http(503, Duration::ZERO);
    let done = preflight(
        None,
        &["wait", "--wait-for", &format!("http://127.0.0.1:{port}/"), "--timeout", "1s"],
        LONG,
    );
    done.expect_code(124);
    assert!(done.stderr.contains("HTTP 503"), "{done}");
}

// ---------------------------------------------------------------------------------------------
// SQLite and run

#[test]
fn sqlite_waits_for_its_volume_directory() {
    let root = tempfile::tempdir().unwrap();
    let volume = root.path().join("volume");
    let url = format!("sqlite:{}/app.db", volume.display());
    let mut p = Preflight::spawn(None, &["wait", "--database-url", &url, "--timeout", "20s"]);
    p.wait_for_line(&["waiting", "does not exist"], LONG);
    std::fs::create_dir(&volume).unwrap();
    let done = p.finish(LONG);
    done.expect_code(0);
    assert!(Path::new(&volume.join("app.db")).exists(), "{done}");
}

#[test]
fn run_execs_the_command_in_place_after_the_wait() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", root.path().display());
    let done =
        preflight(None, &["run", "--database-url", &url, "--", "sh", "-c", "echo pid=$$; exit 42"], LONG);
    done.expect_code(42);
    // exec, not spawn: the shell has preflight's pid, which the "starting" line logged.
    let pid = done.stdout.trim().strip_prefix("pid=").expect("the command printed its pid");
    assert!(done.stderr.contains(&format!("pid={pid} ")), "{done}");
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    let done = preflight(None, &["run", "--", "no-such-command-xyz"], LONG);
    done.expect_code(127);
    assert!(done.stderr.contains("no-such-command-xyz") && done.stderr.contains("PATH="), "{done}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let done = preflight(None, &["run", "--", file.to_str().unwrap()], LONG);
    done.expect_code(126);
}

#[test]
fn postgres_over_a_unix_socket_with_the_password_in_the_query() {
    let mut pg = Pg::new("127.0.0.1", None);
    pg.start();
    let url = format!(
        "postgres:///postgres?host={}&port={}&user={USER}&password={PASSWORD}",
        pg.data.display(),
        pg.port
    );
    let done = preflight(None, &["wait", "--database-url", &url], LONG);
    done.expect_code(0).expect_no_password();
    assert!(done.stderr.contains(&format!("address={}", pg.data.display())), "{done}");
    assert!(done.stderr.contains("password=***"), "{done}");
}

/// Boolean variables take the spellings people use in env files and Helm values, not only
/// `true`/`false` (the list is src/cli.rs's `BOOLEAN_VARIABLES`).
#[test]
fn boolean_variables_take_yes_no_on_off_and_digits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("b.db").display());
    for var in [
        "PREFLIGHT_SIGNAL_CHILD_ONLY",
        "PREFLIGHT_IGNORE_MISSING",
        "PREFLIGHT_SINGLE_TRANSACTION",
        "PREFLIGHT_BACKUP",
        "PREFLIGHT_RETRY_LOGIN_ERRORS",
    ] {
        for value in ["1", "0", "yes", "No", "on", "OFF", "true", "false"] {
            let done =
                Preflight::spawn_with(None, &["run", "--database-url", &url, "--", "true"], &[(var, value)])
                    .finish(Duration::from_secs(30));
            assert_eq!(done.code(), Some(0), "{var}={value}: {done}");
        }
        let done =
            Preflight::spawn_with(None, &["run", "--database-url", &url, "--", "true"], &[(var, "maybe")])
                .finish(Duration::from_secs(30));
        assert_eq!(done.code(), Some(2), "{var}=maybe: {done}");
        assert!(done.stderr.contains("not a boolean"), "{done}");
    }
}

/// `sqlite:////abs/path.db` is absolute in SQLAlchemy's spelling and must not become the
/// relative `abs/path.db` (a different, empty database).
#[test]
fn four_slash_sqlite_urls_are_absolute() {
    let cwd = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("app.db");
    let url = format!("sqlite:///{}", file.display());
    assert!(url.starts_with("sqlite:////"), "{url}");
    let done = Preflight::spawn_in(cwd.path(), &["wait", "--database-url", &url], &[]).finish(LONG);
    done.expect_code(0);
    assert!(file.exists(), "{done}");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "a relative file was created: {done}");
}

/// Bad input is refused before the first connection: nothing is created, nothing is started.
#[test]
fn bad_input_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let started = dir.path().join("started");
    let url = format!("sqlite:{}", db.display());
    let touch = started.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "run",
                "--database-url",
                &url,
                "--stop-timeout",
                "600y",
                "--init",
                "always",
                "--",
                "touch",
                touch,
            ],
            "more than a year",
        ),
        (vec!["run", "--database-url", &url, "--timeout", "1000y", "--", "touch", touch], "more than a year"),
        (
            vec![
                "run",
                "--database-url",
                &url,
                "--migrations",
                "/nonexistent/migrations",
                "--",
                "touch",
                touch,
            ],
            "no such directory",
        ),
    ] {
        let done = preflight(None, &args, LONG);
        done.expect_code(2);
        assert!(done.stderr.contains(says), "{done}");
        assert!(!done.stderr.contains("ready"), "it connected first: {done}");
        assert!(!db.exists() && !started.exists(), "{done}");
    }
}

/// In a namespace whose ephemeral port range is the one port 40001, a connect to
/// 127.0.0.1:40001 with nothing listening always reaches itself (TCP simultaneous open). No
/// target may take that for a server: TCP and HTTP refuse it by its addresses, and a database
/// handshake reads back its own bytes, a protocol error that is retried, never "ready" and
/// never a permanent failure.
#[test]
fn a_connection_that_reaches_itself_is_never_ready() {
    let ns = Netns::new("self");
    let out = ns.command("sysctl").args(["-w", "net.ipv4.ip_local_port_range=40001 40001"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let tcp = preflight(Some(&ns), &["wait", "--wait-for", "tcp://127.0.0.1:40001", "--timeout", "1s"], LONG);
    tcp.expect_code(124);
    assert!(
        tcp.stderr.contains("nothing listens on 127.0.0.1:40001 (the connection reached itself)"),
        "{tcp}"
    );
    for url in [
        "http://127.0.0.1:40001/health",
        "postgres://app:pw@127.0.0.1:40001/app",
        "postgres://app:pw@127.0.0.1:40001/app?sslmode=disable",
        "mysql://app:pw@127.0.0.1:40001/app",
    ] {
        let done = preflight(Some(&ns), &["wait", "--wait-for", url, "--timeout", "1s"], LONG);
        done.expect_code(124);
        assert!(!done.stderr.contains("INFO ready"), "{done}");
    }
}

/// Docker and Kubernetes secrets are files: the URL is read from DATABASE_URL_FILE (one
/// trailing newline dropped), other targets from PREFLIGHT_WAIT_FOR_FILE, one per line. Errors
/// name the file, never what is in it.
#[test]
fn secrets_are_read_from_files() {
    let (_pg, url) = Pg::running();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, format!("{url}\n")).unwrap();
    let secret_s = secret.to_str().unwrap();
    let done = Preflight::spawn_with(None, &["wait", "--timeout", "20s"], &[("DATABASE_URL_FILE", secret_s)])
        .finish(LONG);
    done.expect_code(0).expect_no_password();
    assert!(done.stderr.contains("ready"), "{done}");
    let done = preflight(None, &["wait", "--database-url-file", secret_s, "--timeout", "20s"], LONG);
    done.expect_code(0).expect_no_password();

    // Beside DATABASE_URL: exclusive, as the postgres image has it.
    let env = [("DATABASE_URL_FILE", secret_s), ("DATABASE_URL", url.as_str())];
    let done = Preflight::spawn_with(None, &["wait"], &env).finish(LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.stderr.contains("exclusive"), "{done}");

    // Missing, empty, or holding a malformed URL: exit 2 naming the file; the contents never shown.
    let missing = dir.path().join("nope");
    let done = preflight(None, &["wait", "--database-url-file", missing.to_str().unwrap()], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains(&format!("{}: cannot read it", missing.display())), "{done}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let done = preflight(None, &["wait", "--database-url-file", empty.to_str().unwrap()], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("it is empty"), "{done}");
    let malformed = dir.path().join("malformed");
    std::fs::write(&malformed, format!("postgres:/app:{PASSWORD}@db/app\n")).unwrap();
    let done = preflight(None, &["wait", "--database-url-file", malformed.to_str().unwrap()], LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.stderr.contains("--database-url-file / DATABASE_URL_FILE"), "{done}");

    // Targets from a file: comments and blank lines skipped; a bad line is named by number.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let targets = dir.path().join("targets");
    std::fs::write(&targets, format!("# dependencies\n\ntcp://127.0.0.1:{port}\n{url}\n")).unwrap();
    let env = [("PREFLIGHT_WAIT_FOR_FILE", targets.to_str().unwrap())];
    let done = Preflight::spawn_with(None, &["wait", "--timeout", "20s"], &env).finish(LONG);
    done.expect_code(0).expect_no_password();
    assert_eq!(done.stderr.matches("INFO ready").count(), 2, "{done}");
    std::fs::write(&targets, format!("tcp://127.0.0.1:{port}\nredis:/x:{PASSWORD}@r\n")).unwrap();
    let done = Preflight::spawn_with(None, &["wait"], &env).finish(LONG);
    done.expect_code(2).expect_no_password();
    assert!(done.stderr.contains("line 2"), "{done}");
}

/// The mistakes people bring from other tools get the fix in the message, exit 2.
#[test]
fn common_mistakes_get_the_fix() {
    let done = preflight(None, &["run", "gunicorn", "app:app"], LONG);
    done.expect_code(2);
    assert!(
        done.stderr.contains("tip: the app's command goes after --: preflight run [OPTIONS] -- gunicorn"),
        "{done}"
    );
    let done = preflight(None, &["wait", "--wait-for", "db:5432"], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("'db:5432' has no scheme: for a port, write tcp://db:5432"), "{done}");
    let done = preflight(None, &["wait", "--wait-for", "amqp://rabbit:5672"], LONG);
    done.expect_code(2);
    assert!(
        done.stderr.contains("unsupported scheme 'amqp': a target is tcp://HOST:PORT, http(s)://"),
        "{done}"
    );
    let done =
        Preflight::spawn_with(None, &["run", "--", "true"], &[("PREFLIGHT_INIT", "sometimes")]).finish(LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("the environment variable PREFLIGHT_INIT"), "{done}");
    // Given on the command line, the flag is what is wrong: no word about the variable.
    let done = preflight(None, &["run", "--init", "sometimes", "--", "true"], LONG);
    done.expect_code(2);
    assert!(!done.stderr.contains("environment variable"), "{done}");
}

/// `unix:///PATH` is ready when the socket accepts a connection, `file:///PATH` when the path
/// exists; both are waited for when they come later.
#[test]
fn unix_sockets_and_files_are_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let flag = dir.path().join("shared/ready");
    let (sock_t, flag_t) = (format!("unix://{}", sock.display()), format!("file://{}", flag.display()));
    let mut p =
        Preflight::spawn(None, &["wait", "--wait-for", &sock_t, "--wait-for", &flag_t, "--timeout", "20s"]);
    p.wait_for_line(&["waiting", "app.sock"], LONG);
    p.wait_for_line(&["waiting", "does not exist yet"], LONG);
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::create_dir_all(flag.parent().unwrap()).unwrap();
    std::fs::write(&flag, "").unwrap();
    let done = p.finish(LONG);
    done.expect_code(0);
    assert_eq!(done.stderr.matches("INFO ready").count(), 2, "{done}");

    // A socket file nobody listens on is not ready.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let target = format!("unix://{}", stale.display());
    let done = preflight(None, &["wait", "--wait-for", &target, "--timeout", "500ms"], LONG);
    done.expect_code(124);
    for bad in ["unix://app.sock", "file://", "unix:///"] {
        let done = preflight(None, &["wait", "--wait-for", bad], LONG);
        done.expect_code(2);
        assert!(done.stderr.contains("needs an absolute path"), "{done}");
    }
}

/// A real redis-server with a password: ready only once it logs in and answers PING; a wrong
/// password, none, or a database it does not have fail fast (exit 3), never printing the
/// password; a server that starts late is waited for.
#[test]
fn redis_is_ready_when_it_logs_in_and_answers_ping() {
    let redis = Redis::running();
    let done = preflight(None, &["wait", "--wait-for", &redis.url(2), "--timeout", "10s"], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("INFO ready") && !done.stderr.contains("r3dis-Pw"), "{done}");

    let port = redis.port;
    for (url, says) in [
        (format!("redis://:wrong@127.0.0.1:{port}"), "WRONGPASS"),
        (format!("redis://127.0.0.1:{port}"), "NOAUTH"),
        (redis.url(9), "DB index is out of range"),
    ] {
        let started = std::time::Instant::now();
        let done = preflight(None, &["wait", "--wait-for", &url, "--timeout", "20s"], LONG);
        done.expect_code(3);
        assert!(done.stderr.contains(says) && !done.stderr.contains("r3dis-Pw"), "{url}: {done}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}: did not fail fast: {done}");
    }

    // Started after preflight has seen it down: waited for.
    drop(redis);
    let url = format!("redis://:{}@127.0.0.1:{port}/0", Redis::PASSWORD.replace(',', "%2C"));
    let mut p = Preflight::spawn(None, &["wait", "--wait-for", &url, "--timeout", "20s"]);
    p.wait_for_line(&["waiting", "redis://"], LONG);
    let _late = Redis::spawn_on(port);
    let done = p.finish(LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("INFO ready"), "{done}");

    for bad in ["rediss://cache:6380?insecure=maybe", "redis://cache/x", "redis://user@cache"] {
        let done = preflight(None, &["wait", "--wait-for", bad], LONG);
        done.expect_code(2);
    }
}

/// Makes a CA and a certificate it signs for localhost and 127.0.0.1 (openssl), in `dir`.
fn test_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=preflight test CA", "-days", "2"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]]
        .concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// https:// against a local server whose certificate a CA made by the test signed: trusted with
/// ?ca=, refused without it (exit 3, the reason given), accepted with ?insecure=1; status sets
/// and a body match decide readiness.
#[test]
fn https_targets_check_the_certificate_status_and_body() {
    let dir = tempfile::tempdir().unwrap();
    test_ca(dir.path());
    /// Stops the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/https-server.py"))
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.0.stdout.take().unwrap()), &mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca = ca.display();
    let wait = |target: String, timeout: &str| {
        preflight(
            None,
            &["wait", "--wait-for", &target, "--timeout", timeout, "--attempt-timeout", "2s"],
            LONG,
        )
    };
    for host in ["localhost", "127.0.0.1"] {
        wait(format!("https://{host}:{port}/health?ca={ca}"), "10s").expect_code(0);
    }
    let done = wait(format!("https://localhost:{port}/health"), "10s");
    done.expect_code(3);
    assert!(done.stderr.contains("UnknownIssuer") && done.stderr.contains("ca=PATH"), "{done}");
    wait(format!("https://localhost:{port}/health?insecure=1"), "10s").expect_code(0);
    wait(format!("https://localhost:{port}/health?ca={ca}&body=%22ok%22"), "10s").expect_code(0);
    let done = wait(format!("https://localhost:{port}/health?ca={ca}&body=healthy"), "1s");
    done.expect_code(124);
    assert!(done.stderr.contains("the body does not match"), "{done}");
    let done = wait(format!("https://localhost:{port}/other?ca={ca}"), "1s");
    done.expect_code(124);
    assert!(done.stderr.contains("HTTP 503"), "{done}");
    wait(format!("https://localhost:{port}/other?ca={ca}&status=2xx,503"), "10s").expect_code(0);
    let done = wait(format!("https://localhost:{port}/health?ca=/nonexistent/ca.pem"), "10s");
    done.expect_code(2);
    assert!(done.stderr.contains("ca=/nonexistent/ca.pem: cannot read it"), "{done}");
}

/// rediss:// against Debian's redis-server with TLS only, its certificate signed by a CA the
/// test makes: logs in over TLS with ?ca=, fails fast (3) without it, and ?insecure=1 skips the
/// check.
#[test]
fn rediss_targets_log_in_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    test_ca(dir.path());
    let redis = Redis::running_tls(&dir.path().join("server.pem"), &dir.path().join("server.key"));
    let pw = Redis::PASSWORD.replace(',', "%2C");
    let ca = dir.path().join("ca.pem");
    let wait = |target: String| {
        preflight(None, &["wait", "--wait-for", &target, "--timeout", "10s", "--attempt-timeout", "2s"], LONG)
    };
    let done = wait(format!("rediss://:{pw}@localhost:{}/1?ca={}", redis.port, ca.display()));
    done.expect_code(0);
    assert!(!done.stderr.contains("r3dis-Pw"), "{done}");
    let done = wait(format!("rediss://:{pw}@localhost:{}/1", redis.port));
    done.expect_code(3);
    assert!(done.stderr.contains("UnknownIssuer"), "{done}");
    wait(format!("rediss://:{pw}@127.0.0.1:{}/?insecure=1", redis.port)).expect_code(0);
    // A wrong password is refused over TLS as in the clear.
    let done = wait(format!("rediss://:wrong@localhost:{}/?ca={}", redis.port, ca.display()));
    done.expect_code(3);
    // Plain redis:// to the TLS port is not ready (the server drops it), never "ready".
    let done = preflight(
        None,
        &["wait", "--wait-for", &format!("redis://:{pw}@127.0.0.1:{}", redis.port), "--timeout", "1s"],
        LONG,
    );
    done.expect_code(124);
}

/// Shell completions and the manual page come from the same command tree as --help.
#[test]
fn completions_and_the_man_page_are_generated() {
    // (Read whole: a script is larger than a pipe's buffer.)
    let output = |args: &[&str]| {
        let out = std::process::Command::new(bin()).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), out.stderr.is_empty())
    };
    for (shell, needle) in
        [("bash", "_preflight()"), ("zsh", "#compdef preflight"), ("fish", "complete -c preflight")]
    {
        let (code, stdout, quiet) = output(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}");
        assert!(stdout.contains(needle) && stdout.contains("wait-for") && quiet, "{shell}: {stdout}");
    }
    let (code, stdout, _) = output(&["man"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(".TH preflight"), "{stdout}");
    let done = preflight(None, &["completions", "tcsh"], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("bash"), "{done}");
}
