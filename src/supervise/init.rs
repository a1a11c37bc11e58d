//! preflight as the init of its container: start the app, forward signals, reap zombies, and
//! exit with the app's status.
//!
//! # Theory of operation
//! **What the kernel does.** PID 1 of a PID namespace gets no default signal actions: a signal
//! it has no handler for is dropped, so `docker stop`'s SIGTERM would do nothing. Orphans are
//! re-parented to PID 1 (or to the nearest `PR_SET_CHILD_SUBREAPER` ancestor) and stay zombies
//! until it waits for them. When PID 1 exits, the kernel SIGKILLs the rest of the namespace.
//!
//! **Who owns what.** This module runs in a process that has no async runtime: `run` re-execs
//! `/proc/self/exe` into the hidden `__supervise` mode after waiting and migrating, so neither
//! tokio (whose child reaping would steal statuses from a `waitpid(-1)` loop, and vice versa)
//! nor the database phase's memory and sockets are present. This loop is then the one and only
//! caller of `wait*` in the process, so no exit status can be stolen.
//!
//! **Signals.** Before the app is started, every signal except SIGKILL and SIGSTOP is blocked,
//! and the loop takes them synchronously with `sigtimedwait`: no handler runs, nothing can race
//! the loop, and timeouts (stop delay, stop timeout, leftover grace) come from the same call.
//! The child gets the signal mask and ignored set preflight *inherited* (see `sigconf`), not this
//! blocked one, restored between fork and exec.
//!
//! **Reaping.** SIGCHLD is a flag, not a count: several children exiting together deliver one.
//! So on every SIGCHLD (and every timeout) the loop calls `waitpid(-1, WNOHANG)` until nothing
//! is left to reap, and recognizes the main child *inside* that loop by its pid; it never waits
//! for one pid in particular (the hang catatonit had).
//!
//! **Forwarding.** The app runs in a process group of its own (and, on a terminal, the
//! foreground group), and signals go to that whole group by default, so every member of
//! `sh -c 'a | b'` hears SIGTERM; `--signal-child-only` sends to the app alone. Every catchable
//! signal is forwarded, including SIGSEGV, SIGBUS and other fault signals *sent with kill* (a
//! real fault in preflight would still kill it: the kernel forces those). SIGTSTP, SIGTTIN and
//! SIGTTOU are forwarded too; preflight itself never stops on them, so as PID 1 it stays able
//! to reap and to forward the SIGCONT that resumes the app.
//!
//! **Stopping.** SIGTERM and SIGINT (fly.io's default `kill_signal`) are stop signals.
//! `--stop-delay` holds the first one back so a load balancer stops routing first; a second
//! one is forwarded at once. `--stop-timeout` SIGKILLs the group if the app outlives it. When
//! the app exits, what is left of its group gets SIGTERM, then SIGKILL after
//! `--leftover-grace`, because the kernel's SIGKILL at PID 1's exit gives none.

use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use super::user::User;
use crate::error::Error;
use crate::exit::Exit;
use crate::wait::millis;

/// How often to look for the app's group while leftovers that are not our children remain.
const GROUP_POLL: Duration = Duration::from_millis(100);

/// How to supervise. Built by `config` (and passed across the re-exec as flags).
#[derive(Debug, Clone, Default)]
pub struct InitConfig {
    pub stop_timeout: Option<Duration>,
    pub stop_delay: Option<Duration>,
    pub leftover_grace: Duration,
    /// `(from, to)`: a signal received as `from` is forwarded as `to`.
    pub rewrites: Vec<(i32, i32)>,
    pub child_only: bool,
    pub user: Option<User>,
    /// Become a child subreaper (when not PID 1), so orphans come back to us.
    pub subreaper: bool,
}

/// Starts `argv` and supervises it to the end; returns how preflight should exit.
pub fn supervise(argv: &[OsString], config: &InitConfig) -> Result<Exit, Error> {
    if config.subreaper && std::process::id() != 1 {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::Internal(format!("cannot become a child subreaper: {e}")))?;
    }
    let all = all_signals();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), None)
        .map_err(|e| Error::Internal(format!("cannot block signals: {e}")))?;

    let started = Instant::now();
    let child = spawn(argv, config)?;
    let pid = Pid::from_raw(child.id() as i32);
    // `child` is never waited on through std: our loop reaps every pid itself.
    drop(child);
    info!(pid = pid.as_raw(), command = %argv[0].to_string_lossy(), "started");
    debug!(argv = ?argv, "full command line");

    let mut state = State {
        pid,
        child_only: config.child_only,
        status: None,
        stop_at: None,
        held: None,
        leftovers_until: None,
    };
    loop {
        reap(&mut state);
        if let Some(status) = state.status {
            if !state.group_alive() {
                let exit = exit_for(status);
                info!(status = %describe(status), exit_code = exit.code(), run_ms = millis(started.elapsed()), "exited");
                return Ok(exit);
            }
            match state.leftovers_until {
                None => {
                    debug!("the app's group outlives it: SIGTERM to the rest");
                    let _ = killpg(pid, Signal::SIGTERM);
                    state.leftovers_until = Some(Instant::now() + config.leftover_grace);
                }
                Some(until) if Instant::now() >= until => {
                    warn!(
                        grace_ms = millis(config.leftover_grace),
                        "leftover processes ignored SIGTERM: SIGKILL"
                    );
                    let _ = killpg(pid, Signal::SIGKILL);
                    state.leftovers_until = Some(Instant::now() + Duration::from_secs(3600));
                }
                Some(_) => {}
            }
        }
        if let Some((sig, at)) = state.held
            && Instant::now() >= at
        {
            state.held = None;
            state.forward(sig);
            state.stop_started(config);
        }
        if let Some(at) = state.stop_at
            && Instant::now() >= at
            && state.status.is_none()
        {
            warn!(timeout_ms = config.stop_timeout.map(millis), "the app outlived --stop-timeout: SIGKILL");
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
            state.stop_at = None;
        }
        let mut timeout = state.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
        if state.status.is_some() {
            // Leftovers that are not our children (preflight is neither PID 1 nor a subreaper)
            // send no SIGCHLD when they go: look at the group again soon.
            timeout = Some(timeout.map_or(GROUP_POLL, |t| t.min(GROUP_POLL)));
        }
        let Some(received) = next_signal(&all, timeout) else {
            continue;
        };
        if received == libc::SIGCHLD {
            continue;
        }
        let sig = config.rewrites.iter().find(|(from, _)| *from == received).map_or(received, |(_, to)| *to);
        let is_stop = received == libc::SIGTERM || received == libc::SIGINT;
        match (is_stop, config.stop_delay, state.held) {
            (true, Some(delay), None) if state.stop_at.is_none() => {
                info!(
                    signal = signal_name(received),
                    delay_ms = millis(delay),
                    "holding the stop signal (--stop-delay)"
                );
                state.held = Some((sig, Instant::now() + delay));
            }
            (true, _, Some(_)) => {
                // A second stop signal: the operator insists.
                state.held = None;
                state.forward(sig);
                state.stop_started(config);
            }
            _ => {
                state.forward(sig);
                if is_stop {
                    state.stop_started(config);
                }
            }
        }
    }
}

struct State {
    pid: Pid,
    child_only: bool,
    /// The main child's wait status, once it has been reaped.
    status: Option<WaitStatus>,
    /// When to SIGKILL after a stop signal (`--stop-timeout`).
    stop_at: Option<Instant>,
    /// A stop signal held back by `--stop-delay`, and when to send it.
    held: Option<(i32, Instant)>,
    /// When leftover group members get SIGKILL.
    leftovers_until: Option<Instant>,
}

impl State {
    fn forward(&self, sig: i32) {
        let pid = self.pid.as_raw();
        let target = if self.child_only || self.status.is_some() { pid } else { -pid };
        // SAFETY: kill(2) with plain integers; a real-time signal has no nix `Signal` variant.
        let ok = unsafe { libc::kill(target, sig) } == 0;
        debug!(signal = signal_name(sig), to = target, ok, "forwarded");
    }

    fn stop_started(&mut self, config: &InitConfig) {
        if self.stop_at.is_none()
            && let Some(timeout) = config.stop_timeout
        {
            self.stop_at = Some(Instant::now() + timeout);
        }
    }

    fn group_alive(&self) -> bool {
        !self.child_only && killpg(self.pid, None).is_ok()
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.stop_at, self.held.map(|(_, at)| at), self.leftovers_until].into_iter().flatten().min()
    }
}

/// Reaps every child that has exited, remembering the main one's status.
fn reap(state: &mut State) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(status) => {
                if status.pid() == Some(state.pid) {
                    state.status = Some(status);
                } else {
                    debug!(pid = status.pid().map(Pid::as_raw), "reaped an orphan");
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                warn!(error = %e, "waitpid failed");
                return;
            }
        }
    }
}

fn exit_for(status: WaitStatus) -> Exit {
    match status {
        WaitStatus::Exited(_, code) => Exit::Child(code as u8),
        WaitStatus::Signaled(_, sig, _) => Exit::Signal(sig as i32),
        _ => Exit::Failure,
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            format!("killed by {sig}{}", if core { " (core dumped)" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

/// Every signal a process may block: all but SIGKILL and SIGSTOP (the kernel refuses those).
fn all_signals() -> SigSet {
    let mut set = SigSet::all();
    set.remove(Signal::SIGKILL);
    set.remove(Signal::SIGSTOP);
    set
}

/// Waits for a signal from `set`, at most `timeout`. `None` on timeout or interruption.
fn next_signal(set: &SigSet, timeout: Option<Duration>) -> Option<i32> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as _,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `set` is a valid sigset, `info` a writable siginfo_t, `ts_ptr` null or valid.
    let n = unsafe { libc::sigtimedwait(set.as_ref(), info.as_mut_ptr(), ts_ptr) };
    (n > 0).then_some(n)
}

/// `SIGTERM`, or `SIGRT34` for a real-time signal.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("SIGRT{sig}"), |s| s.as_str().to_owned())
}

fn spawn(argv: &[OsString], config: &InitConfig) -> Result<std::process::Child, Error> {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let user = config.user.clone();
    // SAFETY: between fork and exec only async-signal-safe calls: setpgid, tcsetpgrp, isatty,
    // sigaction, sigprocmask, setgroups, setgid, setuid.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            if libc::isatty(libc::STDIN_FILENO) == 1 {
                // Become the terminal's foreground group. SIGTTOU is blocked here (our mask), so
                // tcsetpgrp from what is still a background group does not stop us.
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            }
            super::sigconf::restore_for_exec();
            if let Some(user) = &user {
                user.switch()?;
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| super::exec_error(&argv[0], &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_maps_like_a_shell() {
        let pid = Pid::from_raw(10);
        assert_eq!(exit_for(WaitStatus::Exited(pid, 42)).code(), 42);
        assert_eq!(exit_for(WaitStatus::Signaled(pid, Signal::SIGKILL, false)).code(), 137);
        assert_eq!(exit_for(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)).code(), 139);
    }

    #[test]
    fn every_signal_but_kill_and_stop_is_blocked() {
        let set = all_signals();
        assert!(
            set.contains(Signal::SIGTERM) && set.contains(Signal::SIGSEGV) && set.contains(Signal::SIGCHLD)
        );
        assert!(!set.contains(Signal::SIGKILL) && !set.contains(Signal::SIGSTOP));
    }
}
