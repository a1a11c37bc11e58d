//! The signal state preflight inherited, recorded before Rust's runtime changes it, and put back
//! before the app is exec'd.
//!
//! # Theory of operation
//! A process inherits two pieces of signal state across `execve`: the **mask** (blocked signals)
//! and the **ignored** dispositions (handled signals are reset to default by the kernel). The app
//! should start with exactly what preflight's parent gave preflight, so that `docker run` and a
//! shell's `nohup` behave as they would without us. Two things in our process disturb that:
//!
//! * Rust's start-up code sets SIGPIPE to ignored before `main`, and an ignored disposition
//!   survives exec. An app that relies on dying of SIGPIPE (`yes | head`) would then loop on
//!   EPIPE instead.
//! * tokio installs handlers for the signals we wait on. Exec resets handlers to default, which
//!   is right unless the parent had set them to *ignored*.
//!
//! So [`record`] runs from `.init_array`, which the C runtime (glibc and musl alike) calls before
//! Rust's `main` and thus before std touches SIGPIPE, and stores the mask and the ignored set.
//! [`restore_for_exec`] then re-ignores exactly the inherited ignored signals, sets every other
//! ignored one back to default, and reinstates the mask, immediately before `execve`.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::libc;

/// Bit `n - 1` is signal `n`, for signals 1..=64 (the kernel's whole range on Linux).
static IGNORED: AtomicU64 = AtomicU64::new(0);
static BLOCKED: AtomicU64 = AtomicU64::new(0);
static RECORDED: AtomicBool = AtomicBool::new(false);

#[used]
#[unsafe(link_section = ".init_array")]
static RECORD_AT_LOAD: extern "C" fn() = record;

const MAX_SIGNAL: libc::c_int = 64;

extern "C" fn record() {
    let mut ignored = 0u64;
    let mut blocked = 0u64;
    // SAFETY: querying dispositions and the mask with null `act`/`set` changes nothing; the
    // out-parameters are plain C structs that the kernel fills.
    unsafe {
        for sig in 1..=MAX_SIGNAL {
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) == 0
                && old.assume_init().sa_sigaction == libc::SIG_IGN
            {
                ignored |= 1 << (sig - 1);
            }
        }
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
        if libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set.as_mut_ptr()) == 0 {
            let set = set.assume_init();
            for sig in 1..=MAX_SIGNAL {
                if libc::sigismember(&set, sig) == 1 {
                    blocked |= 1 << (sig - 1);
                }
            }
        }
    }
    IGNORED.store(ignored, Ordering::Relaxed);
    BLOCKED.store(blocked, Ordering::Relaxed);
    RECORDED.store(true, Ordering::Release);
}

/// The inherited (ignored, blocked) sets, as bit masks.
pub fn inherited() -> (u64, u64) {
    if !RECORDED.load(Ordering::Acquire) {
        // Only if the loader skipped .init_array, which no supported libc does.
        record();
    }
    (IGNORED.load(Ordering::Relaxed), BLOCKED.load(Ordering::Relaxed))
}

/// Puts the inherited dispositions and mask back. Call right before `execve`, or in a forked
/// child before it execs.
pub fn restore_for_exec() {
    let (ignored, blocked) = inherited();
    // SAFETY: sigaction and sigprocmask with valid, fully initialised arguments; failures (for
    // SIGKILL, SIGSTOP, or the two signals glibc reserves) are expected and harmless.
    unsafe {
        for sig in 1..=MAX_SIGNAL {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            if libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) != 0 {
                continue;
            }
            let want_ignored = ignored & (1 << (sig - 1)) != 0;
            let is_ignored = old.assume_init().sa_sigaction == libc::SIG_IGN;
            if want_ignored != is_ignored {
                let mut act = MaybeUninit::<libc::sigaction>::zeroed().assume_init();
                act.sa_sigaction = if want_ignored { libc::SIG_IGN } else { libc::SIG_DFL };
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut());
            }
        }
        let mut set = MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        for sig in 1..=MAX_SIGNAL {
            if blocked & (1 << (sig - 1)) != 0 {
                libc::sigaddset(&mut set, sig);
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigpipe_is_recorded_as_it_was_before_rust_ignored_it() {
        // The test harness's parent (cargo) leaves SIGPIPE at default; Rust's runtime has since
        // ignored it in this process. The record must show the former.
        let (ignored, _) = inherited();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0);
    }
}
