//! Starting a process the way preflight starts all of its own: the app (exec'd in place or
//! supervised) and the migration phase's commands. One place decides what a child inherits:
//! the signal state preflight itself inherited (`sigconf`), its process group, the terminal,
//! the identity (`user`) and whether it dies with preflight.
//!
//! Everything in [`prepare`]'s hook runs between fork and exec, so it makes only
//! async-signal-safe system calls, on values computed before the fork.

pub mod sigconf;
pub mod user;

use std::os::unix::process::CommandExt;

use nix::libc;

use user::User;

/// How the child gets the terminal on its standard input, if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// Leave it as it is (no terminal, or a command of the migration phase).
    Untouched,
    /// Make the child's group the terminal's foreground group, if preflight's group is the
    /// foreground one now: Ctrl-C and Ctrl-Z then reach the app, not preflight. A background
    /// preflight (`preflight run -- app &` in a shell) never takes the terminal from the shell.
    Foreground,
    /// The child starts a session of its own and takes the terminal as its controlling one:
    /// for a preflight that was the session leader and gave the terminal up (see
    /// [`release_terminal`]). Hang-ups and hand-offs of preflight's session then never reach it.
    Session,
}

/// What a child gets besides its command line.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Put the child in a process group of its own (signals then go to the whole group).
    pub own_group: bool,
    pub terminal: Terminal,
    /// Signal the child gets when preflight dies (`PR_SET_PDEATHSIG`); the child gives up
    /// instead of starting when preflight is already gone.
    pub parent_death: Option<i32>,
    pub user: Option<User>,
}

/// Installs `setup` into `cmd`, to run in the child between fork and exec.
pub fn prepare(cmd: &mut std::process::Command, setup: Setup) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook only makes system calls that are async-signal-safe (setsid, setpgid,
    // ioctl, tcgetpgrp, tcsetpgrp, prctl, getppid, sigaction, sigprocmask, setgroups, setgid,
    // setuid) on values captured before the fork.
    unsafe {
        cmd.pre_exec(move || {
            match setup.terminal {
                Terminal::Session => {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Best effort: a terminal someone else took meanwhile stays theirs.
                    libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0);
                }
                _ if setup.own_group => {
                    libc::setpgid(0, 0);
                }
                _ => {}
            }
            if setup.terminal == Terminal::Foreground
                && setup.own_group
                && libc::isatty(libc::STDIN_FILENO) == 1
                && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgid(parent.as_raw())
            {
                // SIGTTOU is still blocked here (preflight's mask), so tcsetpgrp from what is
                // now a background group does not stop the child.
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            }
            sigconf::restore_for_exec();
            if let Some(sig) = setup.parent_death {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Asked after preflight may already have died: then nobody would signal us.
                // An OS error, not a message: nothing may allocate between fork and exec, and
                // std hands only the errno to the parent.
                if libc::getppid() != parent.as_raw() {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            if let Some(user) = &setup.user {
                user.switch()?;
            }
            Ok(())
        });
    }
}

/// Makes the kernel send `sig` to this process when its parent dies, then checks that the
/// parent is still `parent` (the one it had when the option was read): if it died before the
/// request, the kernel never will, so the signal is raised here. `PR_SET_PDEATHSIG` survives a
/// plain exec; the supervise-only mode asks again all the same, since only the check closes
/// the window in which the parent died during the re-exec.
pub fn die_with_parent(sig: i32, parent: i32) -> std::io::Result<()> {
    // SAFETY: prctl, getppid and kill with plain integers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::kill(libc::getpid(), sig);
        }
    }
    Ok(())
}

/// When preflight is the session leader and its standard input is its controlling terminal
/// (PID 1 of `docker run -it`), gives the terminal up so the app can take it in a session of
/// its own ([`Terminal::Session`]). The kernel sends the terminal's foreground group (ours)
/// SIGHUP and SIGCONT as it is given up; with every signal blocked they are pending, and are
/// taken here, so they are never forwarded to the app: the "tty hand-off" signals. Returns
/// whether the terminal was given up.
pub fn release_terminal() -> bool {
    // SAFETY: plain system calls on our own descriptors and signal set.
    unsafe {
        let me = libc::getpid();
        if libc::isatty(libc::STDIN_FILENO) != 1
            || libc::getsid(0) != me
            || libc::tcgetsid(libc::STDIN_FILENO) != me
        {
            return false;
        }
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCNOTTY) != 0 {
            return false;
        }
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGCONT);
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let mut taken = 0;
        while taken < 4 && libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) > 0 {
            taken += 1;
        }
    }
    true
}
