//! preflight as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`): signals,
//! reaping, exit statuses, what the app inherits, privilege dropping.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(30);

/// A Python app that appends the name of every signal it gets to a file (argv 1), and exits 0
/// once it has recorded argv 2 of them. It creates `<file>.ready` once its handlers are set.
const RECORDER: &str = r#"
import signal, sys
out, count = sys.argv[1], int(sys.argv[2])
seen = 0
def handler(n, frame):
    global seen
    with open(out, "a") as f:
        f.write(signal.Signals(n).name + "\n")
    seen += 1
    if seen == count:
        sys.exit(0)
for s in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTERM"):
    signal.signal(getattr(signal, s), handler)
open(out + ".ready", "w").close()
while True:
    signal.pause()
"#;

fn send(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap();
}

#[test]
fn signals_sent_to_preflight_reach_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("signals");
    let out_s = out.to_str().unwrap();
    let p = Preflight::spawn_pid1(&["run", "--", "python3", "-c", RECORDER, out_s, "7"], &[]);
    let pid = p.inner_pid();
    let ready = format!("{out_s}.ready");
    wait_until("the app's handlers", LONG, || Path::new(&ready).exists());
    let sent =
        [Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH];
    for (i, sig) in sent.iter().enumerate() {
        send(pid, *sig);
        wait_until(&format!("{sig} to arrive"), LONG, || {
            std::fs::read_to_string(&out).unwrap_or_default().lines().count() == i + 1
        });
    }
    send(pid, Signal::SIGTERM);
    let done = p.finish(LONG);
    done.expect_code(0);
    let got = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = got.lines().collect();
    assert_eq!(names, ["SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTERM"], "{done}");
}

#[test]
fn exit_statuses_pass_through() {
    for (script, code) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("exit 255", 255),
        ("kill -KILL $$", 137),
        ("kill -SEGV $$", 139),
    ] {
        let done = Preflight::spawn_pid1(&["run", "--", "sh", "-c", script], &[]).finish(LONG);
        assert_eq!(done.code(), Some(code), "{script}: {done}");
    }
}

#[test]
fn a_thousand_orphaned_grandchildren_leave_no_zombie() {
    // Each `(sleep 0.2 &)` subshell exits at once, orphaning its sleep to PID 1, which must reap
    // it when it ends. The app then counts zombies in the namespace.
    let script = r#"
        for i in $(seq 1000); do (sleep 0.2 &); done
        i=0
        while [ $i -lt 150 ]; do
            alive=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c '(sleep) [RSD]')
            [ "$alive" -eq 0 ] && break
            sleep 0.1; i=$((i+1))
        done
        # PID 1 reaps on SIGCHLD: give it up to 5 s, then report what is left.
        i=0
        while [ $i -lt 50 ]; do
            zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == "Z"' | wc -l)
            [ "$zombies" -eq 0 ] && break
            sleep 0.1; i=$((i+1))
        done
        echo "zombies=$zombies"
    "#;
    let done = Preflight::spawn_pid1(&["run", "--", "sh", "-c", script], &[]).finish(Duration::from_secs(60));
    done.expect_code(0);
    assert!(done.stdout.contains("zombies=0"), "{done}");
}

#[test]
fn a_trapped_sigterm_exits_0_and_an_ignored_one_is_killed_after_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let r = ready.display();
    let trapped = format!("trap 'exit 0' TERM; touch {r}; while :; do sleep 0.1; done");
    let p = Preflight::spawn_pid1(&["run", "--", "sh", "-c", &trapped], &[]);
    wait_until("the trap", LONG, || ready.exists());
    send(p.inner_pid(), Signal::SIGTERM);
    p.finish(LONG).expect_code(0);

    std::fs::remove_file(&ready).unwrap();
    let ignoring = format!("trap '' TERM; touch {r}; sleep 30");
    let p = Preflight::spawn_pid1(&["run", "--stop-timeout", "1s", "--", "sh", "-c", &ignoring], &[]);
    wait_until("the trap", LONG, || ready.exists());
    let sent = Instant::now();
    send(p.inner_pid(), Signal::SIGTERM);
    let done = p.finish(LONG);
    done.expect_code(137);
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}: {done}");
}

/// Apps that show what they inherited, run directly (a shell would reset its own mask): their
/// SigBlk and SigIgn lines, and their open descriptors.
const INSPECTORS: [&[&str]; 2] =
    [&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"], &["ls", "/proc/self/fd"]];

/// The kernel's `struct sigaction` on x86_64, for `rt_sigaction(2)` called directly: glibc's
/// wrapper refuses signals 32 and 33, which a test harness may have left ignored.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Runs `sh -c INSPECT` under `unshare`, through preflight in `mode` (or directly with `None`),
/// from a parent whose signal state is clean or deliberately dirty.
fn inspect(pid1: bool, mode: Option<&str>, dirty: bool, app: &[&str]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let mut cmd = std::process::Command::new("env");
    if pid1 {
        cmd.args(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]);
    }
    if let Some(mode) = mode {
        cmd.args([bin(), "run", "--init", mode, "--database-url", &url, "--"]);
    }
    cmd.args(app).env("PREFLIGHT_LOG", "info");
    // SAFETY: only signal-mask and disposition system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for sig in 1..=64 {
                if sig == 9 || sig == 19 {
                    continue;
                }
                let ignore = dirty && sig == nix::libc::SIGUSR1;
                let act = KernelSigaction { handler: usize::from(ignore), flags: 0, restorer: 0, mask: 0 };
                nix::libc::syscall(
                    nix::libc::SYS_rt_sigaction,
                    sig,
                    &act as *const KernelSigaction,
                    0usize,
                    8usize,
                );
            }
            let mut set = nix::sys::signal::SigSet::empty();
            if dirty {
                set.add(Signal::SIGUSR2);
            }
            nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&set), None)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: Duration::ZERO,
        desc: format!("{cmd:?}"),
    }
}

#[test]
fn the_app_inherits_preflights_signal_state_and_descriptors_not_its_own() {
    // As PID 1 (unshare clears the mask it passes on, so only ignores differ) and as a plain
    // child (where the parent's blocked mask reaches preflight too).
    for pid1 in [true, false] {
        for dirty in [false, true] {
            // The same shell, started without preflight, shows what the app should see.
            let baseline = inspect(pid1, None, dirty, INSPECTORS[0]);
            baseline.expect_code(0);
            let ign = if dirty { "0000000000000200" } else { "0000000000000000" };
            assert!(baseline.stdout.contains(&format!("SigIgn:\t{ign}")), "{baseline}");
            if !pid1 {
                let blk = if dirty { "0000000000000800" } else { "0000000000000000" };
                assert!(baseline.stdout.contains(&format!("SigBlk:\t{blk}")), "{baseline}");
            }
            // Both modes: supervised (after a re-exec that sheds the database phase) and exec'd.
            let fds = inspect(pid1, None, dirty, INSPECTORS[1]);
            for mode in ["always", "never"] {
                let got = inspect(pid1, Some(mode), dirty, INSPECTORS[0]);
                got.expect_code(0);
                assert_eq!(got.stdout, baseline.stdout, "{mode}, pid1={pid1}, dirty={dirty}: {got}");
                let got = inspect(pid1, Some(mode), dirty, INSPECTORS[1]);
                got.expect_code(0);
                assert_eq!(got.stdout, fds.stdout, "descriptors, {mode}, pid1={pid1}: {got}");
            }
        }
    }
}

#[test]
fn exec_mode_keeps_the_pid_so_the_app_is_pid_1() {
    let done =
        Preflight::spawn_pid1(&["run", "--init", "never", "--", "sh", "-c", "echo pid=$$"], &[]).finish(LONG);
    done.expect_code(0);
    assert_eq!(done.stdout.trim(), "pid=1", "{done}");
    let done = Preflight::spawn_pid1(&["run", "--", "sh", "-c", "echo pid=$$"], &[]).finish(LONG);
    done.expect_code(0);
    // Auto mode supervises as PID 1: the app is its child, with a PID of its own.
    let pid: i32 = done.stdout.trim().strip_prefix("pid=").and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!(pid > 1, "{done}");
}

#[test]
fn user_drops_privileges_without_supplementary_groups() {
    let done = Preflight::spawn_pid1(&["run", "--user", "65534:65534", "--", "id"], &[]).finish(LONG);
    done.expect_code(0);
    let id = done.stdout.trim();
    assert!(id.starts_with("uid=65534(") && id.contains(" gid=65534("), "{done}");
    let groups = id.split(" groups=").nth(1).unwrap_or_default();
    assert_eq!(groups.split(',').count(), 1, "{done}");
    assert!(groups.starts_with("65534("), "{done}");
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126_when_supervising() {
    let done = Preflight::spawn_pid1(&["run", "--", "no-such-command-xyz"], &[]).finish(LONG);
    done.expect_code(127);
    assert!(done.stderr.contains("no-such-command-xyz") && done.stderr.contains("PATH="), "{done}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let done = Preflight::spawn_pid1(&["run", "--", file.to_str().unwrap()], &[]).finish(LONG);
    done.expect_code(126);
}

#[test]
fn sigterm_during_a_slow_migration_rolls_it_back_and_never_starts_the_app() {
    let (_pg, url) = Pg::running();
    let m = Migrations::new(&[("1_slow.sql", "CREATE TABLE half (id INTEGER);\nSELECT pg_sleep(30);\n")]);
    let marker = m.dir.path().join("app-started");
    let p = Preflight::spawn_pid1(
        &["run", "--database-url", &url, "--migrations", m.path(), "--", "touch", marker.to_str().unwrap()],
        &[],
    );
    let pid = p.inner_pid();
    let mut p = p;
    p.wait_for_line(&["migration lock acquired"], LONG);
    send(pid, Signal::SIGTERM);
    let done = p.finish(LONG);
    done.expect_code(143);
    assert!(done.elapsed < Duration::from_secs(10) && !marker.exists(), "{done}");
    // Rolled back and unlocked: a quick version of the migration applies at once.
    m.add("1_slow.sql", "CREATE TABLE half (id INTEGER);\n");
    let again = preflight(
        None,
        &["migrate", "--database-url", &url, "--migrations", m.path(), "--lock-timeout", "5s"],
        LONG,
    );
    again.expect_code(0);
    assert!(again.stderr.contains("applied=1"), "{again}");
}

/// Starts the recorder under preflight as PID 1 with `flags`, waits until it is ready, and
/// returns it with the path of its record.
fn recorder(dir: &Path, flags: &[&str], count: &str) -> (Preflight, std::path::PathBuf) {
    let out = dir.join("signals");
    let out_s = out.to_str().unwrap().to_owned();
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "python3", "-c", RECORDER, &out_s, count]);
    let p = Preflight::spawn_pid1(&args, &[]);
    let ready = format!("{out_s}.ready");
    wait_until("the app's handlers", LONG, || Path::new(&ready).exists());
    (p, out)
}

#[test]
fn rewrite_signal_forwards_another_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (p, out) = recorder(dir.path(), &["--rewrite-signal", "SIGTERM:SIGUSR1"], "1");
    send(p.inner_pid(), Signal::SIGTERM);
    p.finish(LONG).expect_code(0);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "SIGUSR1\n");
}

#[test]
fn stop_delay_holds_the_first_stop_signal() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let (p, out) = recorder(dir.path(), &["--stop-delay", "1s"], "1");
        let sent = Instant::now();
        send(p.inner_pid(), sig);
        let done = p.finish(LONG);
        done.expect_code(0);
        let took = sent.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(4),
            "{sig}: {took:?}: {done}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), sig.as_str());
    }
}

#[test]
fn signals_reach_every_member_of_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let script =
        format!("python3 -c '{RECORDER}' {} 1 | python3 -c '{RECORDER}' {} 1", a.display(), b.display());
    let p = Preflight::spawn_pid1(&["run", "--", "sh", "-c", &script], &[]);
    for f in [&a, &b] {
        let ready = format!("{}.ready", f.display());
        wait_until("both ends of the pipe", LONG, || Path::new(&ready).exists());
    }
    send(p.inner_pid(), Signal::SIGTERM);
    // The shell dies of it too (143); what matters is that both ends heard it.
    p.finish(LONG).expect_code(143);
    for f in [&a, &b] {
        assert_eq!(std::fs::read_to_string(f).unwrap(), "SIGTERM\n");
    }
}

#[test]
fn leftovers_of_the_apps_group_get_sigterm_then_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("leftover");
    // The app exits as soon as the background member of its group it leaves behind has its
    // handlers in place (the recorder's `.ready` file).
    let script = format!(
        "python3 -c '{RECORDER}' {0} 1 & while [ ! -e {0}.ready ]; do sleep 0.02; done; exit 3",
        out.display()
    );
    let done = Preflight::spawn_pid1(&["run", "--", "sh", "-c", &script], &[]).finish(LONG);
    done.expect_code(3);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "SIGTERM\n", "{done}");

    // One that ignores SIGTERM is killed after the grace, not waited for.
    let ready = dir.path().join("ready");
    let stubborn = format!(
        "(trap '' TERM; touch {0}; sleep 30) & while [ ! -e {0} ]; do sleep 0.02; done; exit 0",
        ready.display()
    );
    let done = Preflight::spawn_pid1(&["run", "--leftover-grace", "500ms", "--", "sh", "-c", &stubborn], &[])
        .finish(LONG);
    done.expect_code(0);
    assert!(done.elapsed < Duration::from_secs(5), "{done}");
    assert!(done.stderr.contains("SIGKILL"), "{done}");
}

#[test]
fn the_supervise_only_process_keeps_the_json_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}/app.db", dir.path().display());
    let done =
        Preflight::spawn_pid1(&["--log-format", "json", "run", "--database-url", &url, "--", "true"], &[])
            .finish(LONG);
    done.expect_code(0);
    for line in done.stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("message").is_some(), "{line}");
    }
    // The supervisor's own lines: the same keys and JSON types as the rest of the log.
    let exited = done.stderr.lines().find(|l| l.contains("\"message\":\"exited\"")).expect("exited line");
    let v: serde_json::Value = serde_json::from_str(exited).unwrap();
    assert_eq!(v["level"], "INFO", "{exited}");
    assert_eq!(v["status"], "exit 0", "{exited}");
    assert_eq!(v["exit_code"], 0, "{exited}");
    assert!(v["run_ms"].is_u64(), "{exited}");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(is_timestamp(ts), "{exited}");
    let started = done.stderr.lines().find(|l| l.contains("\"message\":\"started\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(started).unwrap();
    assert!(v["pid"].is_u64() && v["command"] == "true", "{started}");
}

/// `2026-11-22T22:15:01.123456Z`, within a day of now.
fn is_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    let shape = b.len() == 27
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = now / 86_400;
    // Only the year is checked against the clock: enough to catch a wrong epoch or calendar.
    let year: u64 = ts.get(..4).and_then(|y| y.parse().ok()).unwrap_or(0);
    shape && (1970 + days / 366..=1970 + days / 365 + 1).contains(&year)
}

#[test]
fn the_supervise_only_process_keeps_the_text_format_and_the_level() {
    // Default: text at info, so the supervisor's `exited` line and no debug lines.
    let done = Preflight::spawn_pid1(&["run", "--", "sh", "-c", "exit 7"], &[]).finish(LONG);
    done.expect_code(7);
    let exited = done.stderr.lines().find(|l| l.contains(" exited ")).unwrap_or_else(|| panic!("{done}"));
    let (ts, rest) = exited.split_once(' ').unwrap();
    assert!(is_timestamp(ts), "{exited}");
    assert!(rest.starts_with(" INFO exited status=exit 7 exit_code=7 run_ms="), "{exited}");
    assert!(!done.stderr.contains("DEBUG"), "{done}");

    // A filter that raises preflight alone to debug reaches the supervisor as debug.
    let done = Preflight::spawn_pid1(&["--log-level", "warn,preflight=debug", "run", "--", "true"], &[])
        .finish(LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("DEBUG full command line argv=[\"true\"]"), "{done}");
    // And one that silences info silences the supervisor's info lines too.
    let done = Preflight::spawn_pid1(&["--log-level", "warn", "run", "--", "true"], &[]).finish(LONG);
    done.expect_code(0);
    assert_eq!(done.stderr, "", "{done}");
}

#[test]
fn leftovers_that_are_not_our_children_are_still_waited_for() {
    // Run the supervise-only mode directly, neither PID 1 nor a subreaper: the leftover is
    // re-parented elsewhere, so its end sends preflight no SIGCHLD.
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let stubborn = format!(
        "(trap '' TERM; touch {0}; sleep 30) & while [ ! -e {0} ]; do sleep 0.02; done; exit 5",
        ready.display()
    );
    let done =
        Preflight::spawn(None, &["__supervise", "--leftover-grace", "300ms", "--", "sh", "-c", &stubborn])
            .finish(LONG);
    done.expect_code(5);
    assert!(done.stderr.contains("SIGKILL"), "{done}");
    assert!(done.elapsed < Duration::from_secs(5), "waited for a signal instead of the group: {done}");
}

// ---------------------------------------------------------------------------------------------
// Parity with tini and dumb-init: each option as PID 1 of a new PID namespace and as a child
// subreaper (`--init always`, not PID 1).

#[derive(Debug, Clone, Copy)]
enum As {
    Pid1,
    Subreaper,
}

const BOTH: [As; 2] = [As::Pid1, As::Subreaper];

/// Starts `run FLAGS -- APP` in mode `mode`.
fn supervised(mode: As, flags: &[&str], app: &[&str]) -> Preflight {
    let mut args = vec!["run"];
    if matches!(mode, As::Subreaper) {
        args.extend(["--init", "always"]);
    }
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(app);
    match mode {
        As::Pid1 => Preflight::spawn_pid1(&args, &[]),
        As::Subreaper => Preflight::spawn(None, &args),
    }
}

/// The supervisor's pid here (in PID 1 mode, the process `unshare` forked).
fn supervisor(mode: As, p: &Preflight) -> i32 {
    match mode {
        As::Pid1 => p.inner_pid(),
        As::Subreaper => p.pid(),
    }
}

fn recorder_as(mode: As, dir: &Path, flags: &[&str], count: &str) -> (Preflight, i32, std::path::PathBuf) {
    let out = dir.join("signals");
    let out_s = out.to_str().unwrap().to_owned();
    let p = supervised(mode, flags, &["python3", "-c", RECORDER, &out_s, count]);
    let pid = supervisor(mode, &p);
    let ready = format!("{out_s}.ready");
    wait_until("the app's handlers", LONG, || Path::new(&ready).exists());
    (p, pid, out)
}

#[test]
fn remap_exit_reports_chosen_codes_as_others_signal_deaths_included() {
    for mode in BOTH {
        // Killed by SIGTERM (143) → 0, logged with the code it had.
        let p = supervised(mode, &["--remap-exit", "143:0"], &["sh", "-c", "kill -TERM $$"]);
        let done = p.finish(LONG);
        done.expect_code(0);
        assert!(done.stderr.contains("remapped_from=143"), "{mode:?}: {done}");
        // Repeatable; codes not named pass through.
        let p = supervised(mode, &["--remap-exit", "3:0", "--remap-exit", "4:9"], &["sh", "-c", "exit 4"]);
        p.finish(LONG).expect_code(9);
        let p = supervised(mode, &["--remap-exit", "3:0"], &["sh", "-c", "exit 5"]);
        p.finish(LONG).expect_code(5);
    }
    // The variable takes a comma-separated list.
    let done = Preflight::spawn_with(
        None,
        &["run", "--init", "always", "--", "sh", "-c", "exit 1"],
        &[("PREFLIGHT_REMAP_EXIT", "2:0,1:0")],
    )
    .finish(LONG);
    done.expect_code(0);
    // Not PID 1 with --init auto: preflight supervises (exec would leave nobody to remap).
    let done = preflight(None, &["run", "--remap-exit", "7:0", "--", "sh", "-c", "exit 7"], LONG);
    done.expect_code(0);
    assert!(done.stderr.contains("mode=\"supervise\""), "{done}");
    // --init never cannot remap: refused before anything runs.
    let done =
        preflight(None, &["run", "--init", "never", "--remap-exit", "7:0", "--", "sh", "-c", "exit 7"], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("--remap-exit needs preflight to supervise"), "{done}");
    for bad in ["143", "143:", "256:0", "a:b", "1:-1"] {
        let done = preflight(None, &["run", "--remap-exit", bad, "--", "true"], LONG);
        done.expect_code(2);
        assert!(done.stderr.contains(&format!("--remap-exit '{bad}'")), "{done}");
    }
    // One code, two meanings: refused, not first-wins.
    let done = preflight(None, &["run", "--remap-exit", "1:0", "--remap-exit", "1:3", "--", "true"], LONG);
    done.expect_code(2);
    assert!(done.stderr.contains("gives exit code 1 two meanings ('1:0' and '1:3')"), "{done}");
    // SIGCHLD is the supervisor's own: neither rewritten nor a parent-death signal.
    for flags in [["--rewrite-signal", "SIGCHLD:SIGTERM"], ["--parent-death-signal", "CHLD"]] {
        let done =
            preflight(None, &[&["run", "--init", "always"][..], &flags, &["--", "true"]].concat(), LONG);
        done.expect_code(2);
        assert!(done.stderr.contains("SIGCHLD"), "{flags:?}: {done}");
    }
}

#[test]
fn rewrite_signal_to_none_drops_the_signal() {
    for mode in BOTH {
        for drop in ["SIGUSR1:none", "USR1:0"] {
            let dir = tempfile::tempdir().unwrap();
            let (p, pid, out) =
                recorder_as(mode, dir.path(), &["--rewrite-signal", drop, "--log-level", "debug"], "1");
            let mut p = p;
            send(pid, Signal::SIGUSR1);
            p.wait_for_line(&["dropped", "SIGUSR1"], LONG);
            send(pid, Signal::SIGUSR2);
            let done = p.finish(LONG);
            done.expect_code(0);
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "SIGUSR2\n", "{mode:?} {drop}: {done}");
        }
    }
}

#[test]
fn the_supervisor_leaves_the_apps_directory_and_goes_by_its_own_name() {
    for mode in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("started");
        let script = format!("touch {}; exec sleep 30", flag.display());
        let mut args = vec!["run"];
        if matches!(mode, As::Subreaper) {
            args.extend(["--init", "always"]);
        }
        args.extend(["--", "sh", "-c", &script]);
        let mut cmd = std::process::Command::new(if matches!(mode, As::Pid1) { "unshare" } else { bin() });
        if matches!(mode, As::Pid1) {
            cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", bin()]);
        }
        let mut child = cmd
            .args(&args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the app to start", LONG, || flag.exists());
        let supervisor = match mode {
            As::Pid1 => std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<i32>()
                .unwrap(),
            As::Subreaper => child.id() as i32,
        };
        let cwd = |pid: i32| std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        wait_until("the supervisor to move to /", LONG, || cwd(supervisor) == Path::new("/"));
        // Re-executed through /proc/self/exe, it would be `exe` to ps, top and pkill.
        let comm = std::fs::read_to_string(format!("/proc/{supervisor}/comm")).unwrap();
        assert_eq!(comm.trim_end(), "preflight", "{mode:?}: the supervisor's process name");
        let app = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", supervisor)).unwrap();
        let app: i32 = app.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(cwd(app), dir.path().canonicalize().unwrap(), "{mode:?}: the app keeps its directory");
        send(supervisor, Signal::SIGTERM);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "{mode:?}");
    }
}

#[test]
fn parent_death_signal_reaches_the_supervisor_which_stops_the_app() {
    // As PID 1: unshare is the parent. Its --kill-child asks SIGKILL for preflight; ours
    // replaces it, so preflight gets SIGTERM and forwards it instead of dying with the app.
    let dir = tempfile::tempdir().unwrap();
    let (p, _, out) = recorder_as(As::Pid1, dir.path(), &["--parent-death-signal", "SIGTERM"], "1");
    send(p.pid(), Signal::SIGKILL);
    wait_until("the app to hear SIGTERM", LONG, || {
        std::fs::read_to_string(&out).unwrap_or_default() == "SIGTERM\n"
    });
    drop(p.finish(LONG));

    // As a subreaper under a shell that is killed: the option survives the re-exec into the
    // supervise-only mode. The app records SIGTERM, and the supervisor exits with it.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("signals");
    let log = dir.path().join("log");
    let script = format!(
        "{} run --init always --parent-death-signal TERM -- python3 -c '{}' {} 1 2>{} & wait",
        bin(),
        RECORDER.replace('\'', "'\\''"),
        out.display(),
        log.display()
    );
    let mut shell = std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let ready = dir.path().join("signals.ready");
    wait_until("the app's handlers", LONG, || ready.exists());
    shell.kill().unwrap();
    shell.wait().unwrap();
    wait_until("the app to hear SIGTERM", LONG, || {
        std::fs::read_to_string(&out).unwrap_or_default() == "SIGTERM\n"
    });
    wait_until("the supervisor to exit", LONG, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("exited")
    });

    // Without the option, the orphaned supervisor and its app just go on (the reason to have it).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("signals");
    let script = format!(
        "{} run --init always -- python3 -c '{}' {} 1 2>/dev/null & echo $! > {}/pid; wait",
        bin(),
        RECORDER.replace('\'', "'\\''"),
        out.display(),
        dir.path().display()
    );
    let mut shell = std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap();
    wait_until("the app's handlers", LONG, || dir.path().join("signals.ready").exists());
    shell.kill().unwrap();
    shell.wait().unwrap();
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(kill(Pid::from_raw(pid), None).is_ok(), "the supervisor is still running");
    assert!(!out.exists(), "the app heard nothing");
    send(pid, Signal::SIGTERM);
    wait_until("the supervisor to stop", LONG, || kill(Pid::from_raw(pid), None).is_err());
}

// ---------------------------------------------------------------------------------------------
// Under a terminal (`docker run -it`), driven through a real pseudo-terminal by
// tests/support/pty-drive.py.

#[derive(Debug, Clone, Copy)]
enum Tty {
    /// preflight leads the terminal's session, as PID 1 of `docker run -it` does: it hands the
    /// terminal to the app's own session.
    SessionLeader,
    /// PID 1 of a new PID namespace whose parent (`unshare`) leads the session: the app's
    /// group becomes the terminal's foreground group.
    Pid1InAnotherSession,
}

/// Runs preflight `args` under a new pseudo-terminal and plays `steps` (("expect", text) or
/// ("send", text)). Returns the terminal's output and the exit code.
fn under_pty(how: Tty, args: &[&str], steps: &[(&str, &str)]) -> (String, i32) {
    let mut cmd = std::process::Command::new("python3");
    let steps = serde_json::to_string(steps).unwrap();
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty-drive.py")).arg(&steps).arg("--");
    if matches!(how, Tty::Pid1InAnotherSession) {
        cmd.args(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]);
    }
    let out = cmd.arg(bin()).args(args).env_remove("DATABASE_URL").output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("pty-drive: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let output = report["output"].as_str().unwrap().to_owned();
    assert!(
        report["failed"].is_null(),
        "{how:?} {args:?}: step {} failed; output:\n{output}",
        report["failed"]
    );
    let code = report["code"].as_i64().unwrap_or_else(|| panic!("{how:?}: killed by a signal: {report}"));
    (output, code as i32)
}

/// Ctrl-C reaches the app once, from the terminal itself; preflight does not pass on a second
/// copy, and the SIGHUP/SIGCONT of the terminal hand-off never reach the app (it would die of
/// SIGHUP, exit 129, before printing anything).
#[test]
fn under_a_terminal_ctrl_c_reaches_the_app_once_and_the_hand_off_not_at_all() {
    let app = "trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 0.05; done";
    for how in [Tty::SessionLeader, Tty::Pid1InAnotherSession] {
        for extra in [&[][..], &["--signal-child-only"][..]] {
            let mut args = vec!["run", "--init", "always"];
            args.extend_from_slice(extra);
            args.extend(["--", "sh", "-c", app]);
            let (output, code) =
                under_pty(how, &args, &[("expect", "ready"), ("send", "\u{3}"), ("expect", "got-int")]);
            assert_eq!(code, 5, "{how:?} {extra:?}: {output}");
            assert_eq!(output.matches("got-int").count(), 1, "{how:?} {extra:?}: {output}");
        }
    }
}

/// An interactive shell as the app keeps its job control: Ctrl-Z stops its foreground job,
/// `fg` resumes it (the job hears SIGCONT), Ctrl-C ends it, and the shell's exit code is
/// preflight's.
#[test]
fn an_interactive_shell_under_preflight_keeps_job_control() {
    // One process that forks nothing, so that Ctrl-Z cannot land between a fork and a wait.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.py");
    std::fs::write(
        &script,
        "import os, signal\n\
         signal.signal(signal.SIGCONT, lambda *a: print('cont', flush=True))\n\
         signal.signal(signal.SIGINT, lambda *a: os._exit(0))\n\
         print('st' + str(1 + 1), flush=True)\n\
         while True:\n    signal.pause()\n",
    )
    .unwrap();
    let job = format!("python3 {}\n", script.display());
    let steps = [
        ("expect", "$ "),
        ("send", &job),
        ("expect", "st2"),
        ("send", "\u{1a}"),
        ("expect", "Stopped"),
        ("expect", "$ "),
        ("send", "fg\n"),
        ("expect", "cont"),
        ("send", "\u{3}"),
        ("expect", "$ "),
        ("send", "echo done$((2+3)); exit 4\n"),
        ("expect", "done5"),
    ];
    for how in [Tty::SessionLeader, Tty::Pid1InAnotherSession] {
        let args = ["run", "--init", "always", "--", "env", "PS1=$ ", "bash", "--norc", "--noprofile", "-i"];
        let (output, code) = under_pty(how, &args, &steps);
        assert_eq!(code, 4, "{how:?}: {output}");
    }
}

/// Colour in text logs: on a terminal unless NO_COLOR is set, never otherwise, or as --color
/// says; the supervise-only process follows the parent's decision.
#[test]
fn colour_follows_the_terminal_no_color_and_the_flag() {
    let esc = "\u{1b}[";
    let app = ["--", "sh", "-c", "echo ready"];
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--init", "always"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&app);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = run(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (output, _) = under_pty(Tty::SessionLeader, &args, &[("expect", "ready")]);
    assert_eq!(output.matches("INFO").count(), output.matches(&format!("{esc}32m INFO")).count(), "{output}");
    assert!(output.contains(&format!("{esc}32m INFO{esc}0m exited")), "the supervisor colours too: {output}");
    let with = |name: &str, value: &str| {
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty-drive.py"))
            .arg(r#"[["expect","ready"]]"#)
            .arg("--")
            .arg(bin())
            .args(&args)
            .env(name, value);
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report = with("NO_COLOR", "1");
    assert!(report.contains("exited") && !report.contains("\\u001b["), "{report}");
    let report = with("PREFLIGHT_COLOR", "never");
    assert!(report.contains("exited") && !report.contains("\\u001b["), "{report}");
    // Not a terminal: plain, unless asked.
    let done = preflight(None, &run(&[]).iter().map(String::as_str).collect::<Vec<_>>(), LONG);
    assert!(!done.stderr.contains(esc), "{done}");
    let done =
        preflight(None, &run(&["--color", "always"]).iter().map(String::as_str).collect::<Vec<_>>(), LONG);
    assert!(done.stderr.contains(&format!("{esc}32m INFO{esc}0m exited")), "{done}");
}

/// Signals a C library keeps for itself (32 to 34: 34 is glibc's SIGRTMIN, which apps use) and
/// real-time ones: the supervisor blocks and forwards them like any other, as PID 1 and as a
/// subreaper, and reports an app's death by one (nix's waitpid cannot express it; the
/// supervisor used to wait forever).
#[test]
fn real_time_and_reserved_signals_are_forwarded_and_deaths_by_them_reported() {
    const NUMBERS: &str = r#"
import signal, sys
out = sys.argv[1]
def handler(n, frame):
    with open(out, "a") as f:
        f.write(f"{n}\n")
    if n == 40:
        sys.exit(0)
for n in (34, 40):
    signal.signal(n, handler)
open(out + ".ready", "w").close()
while True:
    signal.pause()
"#;
    for mode in BOTH {
        let p = supervised(mode, &[], &["python3", "-c", "import os; os.kill(os.getpid(), 40)"]);
        let done = p.finish(LONG);
        done.expect_code(128 + 40);
        assert!(done.stderr.contains("killed by SIG40"), "{mode:?}: {done}");

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("numbers");
        let out_s = out.to_str().unwrap();
        let p = supervised(mode, &[], &["python3", "-c", NUMBERS, out_s]);
        let pid = supervisor(mode, &p);
        let ready = format!("{out_s}.ready");
        wait_until("the app's handlers", LONG, || Path::new(&ready).exists());
        // SAFETY: kill(2) with plain integers.
        assert_eq!(unsafe { nix::libc::kill(pid, 34) }, 0);
        wait_until("34 to arrive", LONG, || std::fs::read_to_string(&out).is_ok_and(|s| s == "34\n"));
        assert_eq!(unsafe { nix::libc::kill(pid, 40) }, 0);
        p.finish(LONG).expect_code(0);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "34\n40\n", "{mode:?}");

        // 32 kills a supervisor that leaves it unblocked (as a subreaper); this one passes it
        // on, and the app, which has no handler for it, dies of it. (glibc's posix_spawn, as
        // the test harness uses it, sets 32 and 33 to "ignored" in the child, which exec keeps
        // and the app would inherit: they are put back to default first, by the kernel's call,
        // which the C libraries do not let through.)
        let mut cmd = match mode {
            As::Pid1 => {
                let mut c = std::process::Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child", bin()]);
                c
            }
            As::Subreaper => std::process::Command::new(bin()),
        };
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                for sig in 32..=34 {
                    // struct kernel_sigaction { handler = SIG_DFL, flags, restorer, mask }.
                    let default = [0usize; 4];
                    nix::libc::syscall(nix::libc::SYS_rt_sigaction, sig, default.as_ptr(), 0usize, 8usize);
                }
                Ok(())
            });
        }
        let mut args = vec!["run", "--log-level", "debug"];
        if matches!(mode, As::Subreaper) {
            args.extend(["--init", "always"]);
        }
        args.extend(["--", "sleep", "60"]);
        let mut p = Preflight::spawn_cmd(cmd, &args, &[]);
        let pid = supervisor(mode, &p);
        p.wait_for_line(&["started"], LONG);
        assert_eq!(unsafe { nix::libc::kill(pid, 32) }, 0);
        let done = p.finish(LONG);
        done.expect_code(128 + 32);
        assert!(done.stderr.contains("killed by SIG32"), "{mode:?}: {done}");
    }
}

/// The app's command line is logged (debug) and quoted in errors by the supervise-only process
/// too: a password in it is hidden there as everywhere.
#[test]
fn the_supervise_only_process_hides_passwords_in_the_command_line() {
    let pw = "Sup3r,s3cr3t')";
    let url = format!("postgres://app:{pw}@db/app");
    for mode in BOTH {
        let p = supervised(mode, &["--log-level", "debug"], &["true", &url]);
        let done = p.finish(LONG);
        done.expect_code(0);
        assert!(done.stderr.contains("full command line"), "{mode:?}: {done}");
        assert!(!done.stderr.contains("s3cr3t"), "{mode:?}: {done}");
        let p = supervised(mode, &[], &[&format!("/nonexistent/{url}")]);
        let done = p.finish(LONG);
        done.expect_code(127);
        assert!(!done.stderr.contains("s3cr3t"), "{mode:?}: {done}");
    }
}

/// Arguments and variables need not be UTF-8: the app's are passed through byte for byte, a
/// bad one of preflight's own is an argument error (2), and a stray variable is no reason to
/// panic.
#[test]
fn arguments_and_variables_that_are_not_utf8_never_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("arg");
    for init in ["never", "always"] {
        let done = std::process::Command::new(bin())
            .args(["run", "--init", init, "--", "sh", "-c", "printf %s \"$1\" > \"$2\"", "sh"])
            .arg(latin1)
            .arg(&out)
            .env("SOME_VARIABLE", latin1)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(done.status.code(), Some(0), "{init}: {}", String::from_utf8_lossy(&done.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), b"caf\xe9", "{init}");
    }
    let done = std::process::Command::new(bin())
        .args(["wait", "--timeout"])
        .arg(latin1)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
    let done = std::process::Command::new(bin())
        .args(["wait"])
        .env("PREFLIGHT_WAIT_FOR", latin1)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PREFLIGHT_WAIT_FOR is not UTF-8"), "{stderr}");
}
