//! Running the project's own commands (migration tool, schema check, backup) during the
//! migration phase.
//!
//! Each runs without a shell, with stdin closed and **its stdout sent to our stderr**: under
//! `run`, preflight's stdout becomes the app's, and a tool's chatter (`alembic current` prints
//! the revision) must not land in the app's output stream. The signal state preflight changed
//! for itself is restored in the child before exec (see `child`).
//!
//! Each runs in a process group of its own. A stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT)
//! that reaches preflight meanwhile is passed to the whole group, which gets [`GRACE`] to exit
//! before SIGKILL; only once every process of the group is gone does the phase end, and with
//! it the migration lock: a tool's own children (a shell script's, Alembic's) never keep
//! migrating after the lock is released. If preflight is killed outright, the kernel kills the
//! command (`PR_SET_PDEATHSIG`).

use std::os::fd::AsFd;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::error::Error;
use crate::exit::Exit;

/// How long a command's process group has, after a stop signal, before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// Set while a command runs: the phase's own signal watch then leaves the signal to [`run`].
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Whether a command is running and will end the phase itself on a stop signal.
pub fn handles_signals() -> bool {
    RUNNING.load(Ordering::SeqCst)
}

struct Running;

impl Running {
    fn enter() -> Running {
        RUNNING.store(true, Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// Runs `argv` with our environment plus `env`, and waits for it. `shown` is the program as
/// the user wrote it, before any `$VAR` expansion: the only form that is logged.
pub async fn run(
    argv: &[String],
    shown: &str,
    what: &str,
    env: &[(&str, String)],
) -> Result<ExitStatus, Error> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).kill_on_drop(true);
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // From here the signal is ours: listening before the spawn, so that one that comes
    // during it is not lost.
    let _running = Running::enter();
    let mut stops = Vec::new();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        let stream = signal(SignalKind::from_raw(sig as i32))
            .map_err(|e| Error::Internal(format!("cannot handle {}: {e}", sig.as_str())))?;
        stops.push((sig, stream));
    }
    // If preflight itself is killed (SIGKILL, the OOM killer), the lock goes with its
    // connection; the command must go too, or it would migrate unlocked beside the next
    // preflight's: the kernel sends it SIGKILL when we die.
    crate::child::prepare(
        cmd.as_std_mut(),
        crate::child::Setup {
            own_group: true,
            terminal: crate::child::Terminal::Untouched,
            parent_death: Some(nix::libc::SIGKILL),
            user: None,
        },
    );
    info!(command = %shown, "running {what}");
    let mut child = cmd.spawn().map_err(|e| {
        let exit =
            if e.kind() == std::io::ErrorKind::NotFound { Exit::NotFound } else { Exit::NotExecutable };
        Error::Exec {
            program: shown.into(),
            reason: format!("{what}: {e}"),
            path: std::env::var_os("PATH").unwrap_or_default(),
            exit,
        }
    })?;
    let group = Pid::from_raw(child.id().map_or(0, |id| id as i32));
    let stop = std::future::poll_fn(|cx| {
        for (sig, stream) in &mut stops {
            if stream.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*sig);
            }
        }
        std::task::Poll::Pending
    });
    tokio::select! {
        status = child.wait() => status.map_err(|e| Error::Internal(format!("waiting for the {what}: {e}"))),
        sig = stop => {
            warn!(signal = sig.as_str(), command = %shown, "stopping the {what} and its process group");
            let _ = killpg(group, sig);
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                warn!(command = %shown, "the {what} did not exit within {GRACE:?}: SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            group_gone(group).await;
            Err(Error::Signal { signal: sig as i32, name: sig.as_str(), phase: "migrate" })
        }
    }
}

/// Waits until no process of `group` is left (the command's own children included): SIGKILL
/// after [`GRACE`], then at most a few seconds more. As PID 1, the group's orphans are our
/// children, and their zombies are reaped here.
async fn group_gone(group: Pid) {
    let alive = || {
        if std::process::id() == 1 {
            use nix::sys::wait::{WaitPidFlag, waitpid};
            while let Ok(status) = waitpid(Pid::from_raw(-group.as_raw()), Some(WaitPidFlag::WNOHANG)) {
                if status == nix::sys::wait::WaitStatus::StillAlive {
                    break;
                }
            }
        }
        nix::sys::signal::kill(Pid::from_raw(-group.as_raw()), None).is_ok()
    };
    let start = tokio::time::Instant::now();
    let mut killed = false;
    while alive() {
        if !killed && start.elapsed() >= GRACE {
            let _ = killpg(group, Signal::SIGKILL);
            killed = true;
        }
        if start.elapsed() >= GRACE * 2 {
            warn!(group = group.as_raw(), "processes of the command's group are still running");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
