//! Starting the application: exec it in preflight's place, or supervise it as its init (see
//! `init`).

pub mod args;
pub mod init;
pub mod log;
pub mod policy;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::child::{sigconf, user};
use crate::error::Error;
use crate::exit::Exit;

/// The error for a command that could not be started: 127 when it is not found, 126 when it
/// cannot be executed.
pub fn exec_error(program: &OsString, e: &std::io::Error) -> Error {
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let (reason, exit) = match errno {
        Errno::ENOENT | Errno::ENOTDIR => ("not found".to_owned(), Exit::NotFound),
        Errno::EACCES | Errno::EPERM | Errno::ENOEXEC | Errno::EISDIR => {
            (format!("not executable ({})", errno.desc()), Exit::NotExecutable)
        }
        _ => (e.to_string(), Exit::NotExecutable),
    };
    Error::Exec { program: program.clone(), reason, path: std::env::var_os("PATH").unwrap_or_default(), exit }
}

/// Replaces this process with `argv`, searching PATH like a shell does, as `user` if given.
/// Only returns on failure.
pub fn exec(argv: &[OsString], user: Option<&user::User>) -> Error {
    let program = argv.first().cloned().unwrap_or_default();
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let args = match args {
        Ok(args) if !args.is_empty() => args,
        Ok(_) => {
            return Error::usage("run needs a command after --, e.g. -- gunicorn app:app");
        }
        Err(_) => {
            return Error::usage(format!(
                "the command '{}' contains a NUL byte: remove it",
                program.to_string_lossy()
            ));
        }
    };
    if let Some(user) = user
        && let Err(e) = user.switch()
    {
        return Error::Internal(format!("cannot switch to --user {}: {e}", user.spec));
    }
    sigconf::restore_for_exec();
    let errno = match nix::unistd::execvp(&args[0], &args) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    exec_error(&program, &std::io::Error::from_raw_os_error(errno as i32))
}

/// Re-executes preflight itself into its supervise-only mode, so that nothing of the wait and
/// migration phases (the async runtime, its signal handling, memory, sockets) stays behind
/// while the app runs. Only returns on failure.
pub fn reexec_supervisor(flags: &[String], argv: &[OsString]) -> Error {
    let mut args: Vec<Vec<u8>> = vec![b"preflight".to_vec(), b"__supervise".to_vec()];
    args.extend(flags.iter().map(|f| f.as_bytes().to_vec()));
    args.push(b"--".to_vec());
    args.extend(argv.iter().map(|a| a.as_bytes().to_vec()));
    let Ok(args) = args.into_iter().map(CString::new).collect::<Result<Vec<_>, _>>() else {
        return Error::usage("the command contains a NUL byte: remove it");
    };
    // Not std's exec: it would reset SIGPIPE after we restored the inherited disposition, and
    // the new image must record what preflight itself inherited.
    sigconf::restore_for_exec();
    let errno = match nix::unistd::execv(c"/proc/self/exe", &args) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    Error::Internal(format!("cannot re-execute /proc/self/exe to supervise the app: {errno}"))
}
