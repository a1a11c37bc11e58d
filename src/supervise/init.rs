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
//! **Forwarding.** The app runs in a process group of its own, and signals go to that whole
//! group by default, so every member of `sh -c 'a | b'` hears SIGTERM; `--signal-child-only`
//! sends to the app alone. Every catchable signal is forwarded, including SIGSEGV, SIGBUS and
//! other fault signals *sent with kill* (a real fault in preflight would still kill it: the
//! kernel forces those), unless `--rewrite-signal` changes or drops it. SIGTSTP, SIGTTIN and
//! SIGTTOU are forwarded too; preflight itself never stops on them, so as PID 1 it stays able
//! to reap and to forward the SIGCONT that resumes the app.
//!
//! **The terminal.** When preflight leads its terminal's session (PID 1 of `docker run -it`),
//! it gives the terminal up and the app takes it in a session of its own (`child::Terminal`):
//! the SIGHUP and SIGCONT the kernel sends preflight's group for that hand-off are taken before
//! the app starts, never forwarded. Otherwise the app's group becomes the foreground group, if
//! preflight's is. Either way the terminal's own signals (Ctrl-C, Ctrl-Z) reach the app from the
//! kernel, once; preflight, outside the foreground group, does not see them.
//!
//! **Stopping.** SIGTERM and SIGINT (fly.io's default `kill_signal`) are stop signals.
//! `--stop-delay` holds the first one back so a load balancer stops routing first; a second
//! one is forwarded at once. `--stop-timeout` SIGKILLs the group if the app outlives it. When
//! the app exits, what is left of its group gets SIGTERM, then SIGKILL after
//! `--leftover-grace`, because the kernel's SIGKILL at PID 1's exit gives none.
//!
//! **Decisions and system calls.** What to do on a signal, an exit or the passing of time is a
//! pure function (`policy`), tested with a made-up clock; this module only feeds it events and
//! carries out its actions. After the app has started the supervisor moves to `/`, so the
//! directory the app started in can be unmounted.

use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use super::args::SupervisorArgs;
use super::policy::{Action, Ended, Policy};
use crate::child::{self, Setup, Terminal};
use crate::duration::millis;
use crate::error::Error;
use crate::exit::Exit;

/// Starts `argv` and supervises it to the end; returns how preflight should exit.
pub fn supervise(argv: &[OsString], args: &SupervisorArgs) -> Result<Exit, Error> {
    if let Some(death) = args.parent_death {
        child::die_with_parent(death.signal, death.parent)
            .map_err(|e| Error::Internal(format!("cannot set the parent-death signal: {e}")))?;
    }
    if args.subreaper && std::process::id() != 1 {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::Internal(format!("cannot become a child subreaper: {e}")))?;
    }
    let all = Mask::all();
    all.block().map_err(|e| Error::Internal(format!("cannot block signals: {e}")))?;
    // PID 1 of `docker run -it` leads the terminal's session: the app gets a session and the
    // terminal of its own, so the terminal's signals (Ctrl-C, Ctrl-Z, a hang-up) are the app's,
    // and the SIGHUP and SIGCONT the kernel sends as we give it up are taken here, not
    // forwarded. Otherwise the app's group becomes the foreground one, if ours is.
    let terminal = if child::release_terminal() {
        debug!("gave the terminal to the app's own session; ignored the hand-off's SIGHUP and SIGCONT");
        Terminal::Session
    } else {
        Terminal::Foreground
    };

    let started = Instant::now();
    let pid = spawn(argv, args, terminal)?;
    info!(pid = pid.as_raw(), command = %argv[0].to_string_lossy(), "started");
    debug!(argv = ?argv, "full command line");
    // As dumb-init does: the directory the app was started in (a volume) can be unmounted.
    if let Err(e) = nix::unistd::chdir("/") {
        debug!(error = %e, "cannot move the supervisor to /");
    }

    let mut policy = Policy::new(args);
    loop {
        if let Some(ended) = reap(pid) {
            policy.app_ended(ended);
        }
        let group_alive = || killpg(pid, None).is_ok();
        for action in policy.tick(Instant::now(), group_alive) {
            if let Some(exit) = perform(action, pid, args, started) {
                return Ok(exit);
            }
        }
        let timeout = policy.timeout(Instant::now());
        let received = match next_signal(all, timeout) {
            Ok(Some(sig)) => sig,
            Ok(None) => continue,
            Err(errno) => {
                // Not a timeout nor an interruption: the loop can no longer see signals or
                // exits. Spinning on it would burn a core; take the app down with us instead.
                error!(error = %errno, "cannot wait for signals; stopping the app");
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = kill(pid, Signal::SIGKILL);
                return Err(Error::Internal(format!("sigtimedwait failed: {errno}")));
            }
        };
        if received == libc::SIGCHLD {
            continue;
        }
        for action in policy.signal(received, Instant::now()) {
            if let Some(exit) = perform(action, pid, args, started) {
                return Ok(exit);
            }
        }
    }
}

/// Carries out one decision. `Some` when preflight should exit now.
fn perform(action: Action, pid: Pid, args: &SupervisorArgs, started: Instant) -> Option<Exit> {
    match action {
        Action::Forward { signal, group } => {
            let target = if group { -pid.as_raw() } else { pid.as_raw() };
            // SAFETY: kill(2) with plain integers; a real-time signal has no nix `Signal` variant.
            let ok = unsafe { libc::kill(target, signal) } == 0;
            debug!(signal = signal_name(signal), to = target, ok, "forwarded");
        }
        Action::Drop { signal } => debug!(signal = signal_name(signal), "dropped (--rewrite-signal)"),
        Action::Hold { signal, delay } => info!(
            signal = signal_name(signal),
            delay_ms = millis(delay),
            "holding the stop signal (--stop-delay)"
        ),
        Action::KillApp => {
            warn!(timeout_ms = args.stop_timeout.map(millis), "the app outlived --stop-timeout: SIGKILL");
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
        }
        Action::TermLeftovers => {
            debug!("the app's group outlives it: SIGTERM to the rest");
            let _ = killpg(pid, Signal::SIGTERM);
        }
        Action::KillLeftovers => {
            warn!(grace_ms = millis(args.leftover_grace), "leftover processes ignored SIGTERM: SIGKILL");
            let _ = killpg(pid, Signal::SIGKILL);
        }
        Action::Exit { ended, code } => {
            let exit = match ended {
                _ if code != ended.code() => Exit::Child(code),
                Ended::Exited(code) => Exit::Child(code),
                Ended::Signaled(sig) => Exit::Signal(sig),
            };
            let run_ms = millis(started.elapsed());
            if code == ended.code() {
                info!(status = %describe(ended), exit_code = exit.code(), run_ms, "exited");
            } else {
                info!(status = %describe(ended), exit_code = exit.code(), remapped_from = ended.code(), run_ms, "exited");
            }
            return Some(exit);
        }
    }
    None
}

/// Reaps every child that has exited; returns how the app ended if it was among them.
///
/// With libc's `waitpid` and the raw status: nix's turns a death by a real-time signal (which
/// has no `Signal` variant) into an error, and the app's end would never be seen.
fn reap(app: Pid) -> Option<Ended> {
    let mut ended = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) with a valid pointer to an int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return ended,
            -1 => match Errno::last() {
                Errno::ECHILD => return ended,
                Errno::EINTR => {}
                e => {
                    warn!(error = %e, "waitpid failed");
                    return ended;
                }
            },
            pid if pid == app.as_raw() => {
                if libc::WIFEXITED(status) {
                    ended = Some(Ended::Exited(libc::WEXITSTATUS(status) as u8));
                } else if libc::WIFSIGNALED(status) {
                    ended = Some(Ended::Signaled(libc::WTERMSIG(status)));
                }
            }
            pid => debug!(pid, "reaped an orphan"),
        }
    }
}

fn describe(ended: Ended) -> String {
    match ended {
        Ended::Exited(code) => format!("exit {code}"),
        Ended::Signaled(sig) => format!("killed by {}", signal_name(sig)),
    }
}

/// A signal set as the kernel reads it: bit N-1 for signal N, 64 signals.
///
/// Not libc's `sigset_t`: glibc and musl keep signals 32 to 34 for themselves, and their
/// `sigfillset`, `sigaddset` and `sigprocmask` leave them out. A supervisor must not: 34 is
/// glibc's `SIGRTMIN`, which an app may use, and a signal the supervisor neither blocks nor
/// handles kills it (when it is not PID 1), orphaning the app. So the set and the two calls
/// that use it go to the kernel directly.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mask(u64);

impl Mask {
    /// Every signal a process may block: all but SIGKILL and SIGSTOP (the kernel refuses those).
    fn all() -> Mask {
        Mask(!(Mask::bit(libc::SIGKILL) | Mask::bit(libc::SIGSTOP)))
    }

    fn bit(sig: i32) -> u64 {
        1 << (sig - 1)
    }

    #[cfg(test)]
    fn contains(self, sig: i32) -> bool {
        (1..=64).contains(&sig) && self.0 & Mask::bit(sig) != 0
    }

    /// Makes this the thread's signal mask.
    fn block(self) -> Result<(), Errno> {
        // SAFETY: rt_sigprocmask(2) with a valid 8-byte set, no old set, and its size.
        let r = unsafe {
            libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &self.0 as *const u64, 0usize, 8usize)
        };
        if r == 0 { Ok(()) } else { Err(Errno::last()) }
    }
}

/// Waits for a signal from `set`, at most `timeout`. `Ok(None)` on timeout (EAGAIN) or
/// interruption (EINTR); any other error is returned, never taken for "no signal".
fn next_signal(set: Mask, timeout: Option<Duration>) -> Result<Option<i32>, Errno> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    wait_signal(set, ts.as_ref())
}

fn wait_signal(set: Mask, ts: Option<&libc::timespec>) -> Result<Option<i32>, Errno> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    let ts_ptr = ts.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: rt_sigtimedwait(2) with a valid 8-byte set, a writable siginfo_t, `ts_ptr` null
    // or valid, and the set's size.
    let n = unsafe {
        libc::syscall(libc::SYS_rt_sigtimedwait, &set.0 as *const u64, info.as_mut_ptr(), ts_ptr, 8usize)
    };
    if n > 0 {
        return Ok(Some(n as i32));
    }
    match Errno::last() {
        Errno::EAGAIN | Errno::EINTR => Ok(None),
        other => Err(other),
    }
}

/// `SIGTERM`, or `SIG34` for a real-time signal (its number: glibc and musl number SIGRTMIN
/// differently).
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("SIG{sig}"), |s| s.as_str().to_owned())
}

fn spawn(argv: &[OsString], args: &SupervisorArgs, terminal: Terminal) -> Result<Pid, Error> {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let setup = Setup { own_group: true, terminal, parent_death: None, user: args.user.clone() };
    child::prepare(&mut cmd, setup);
    let child = cmd.spawn().map_err(|e| super::exec_error(&argv[0], &e))?;
    // Never waited on through std: the loop reaps every pid itself.
    Ok(Pid::from_raw(child.id() as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_maps_like_a_shell() {
        assert_eq!(Ended::Exited(42).code(), 42);
        assert_eq!(Ended::Signaled(libc::SIGKILL).code(), 137);
        assert_eq!(describe(Ended::Signaled(libc::SIGSEGV)), "killed by SIGSEGV");
    }

    #[test]
    fn a_failing_sigtimedwait_is_an_error_not_a_timeout() {
        // An invalid timeout (nanoseconds out of range) makes the kernel answer EINVAL.
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 2_000_000_000 };
        assert_eq!(wait_signal(Mask::all(), Some(&ts)), Err(Errno::EINVAL));
        assert_eq!(next_signal(Mask(0), Some(Duration::ZERO)), Ok(None), "a timeout is not an error");
    }

    #[test]
    fn every_signal_but_kill_and_stop_is_blocked() {
        let set = Mask::all();
        for sig in [libc::SIGTERM, libc::SIGSEGV, libc::SIGCHLD, 32, 33, 34, 64] {
            assert!(set.contains(sig), "{sig}");
        }
        assert!(!set.contains(libc::SIGKILL) && !set.contains(libc::SIGSTOP));
    }

    #[test]
    fn the_libc_reserved_signals_are_blocked_and_taken() {
        // In a thread of its own: the mask is per thread, and the test harness's threads must
        // keep theirs.
        std::thread::spawn(|| {
            Mask::all().block().unwrap();
            for sig in [32, 33, 34, 40] {
                // SAFETY: tgkill to this very thread, a signal it blocks.
                let me = unsafe { libc::syscall(libc::SYS_gettid) };
                unsafe { libc::syscall(libc::SYS_tgkill, std::process::id(), me, sig) };
                assert_eq!(next_signal(Mask::all(), Some(Duration::from_secs(5))), Ok(Some(sig)));
            }
        })
        .join()
        .unwrap();
    }
}
