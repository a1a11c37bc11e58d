//! Starting the application. For now preflight always execs it, so the app replaces preflight
//! and keeps its pid; supervising as PID 1 comes with its own module.

pub mod sigconf;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::error::Error;
use crate::exit::Exit;

/// Replaces this process with `argv`, searching PATH like a shell does. Only returns on failure.
pub fn exec(argv: &[OsString]) -> Error {
    let program = argv.first().cloned().unwrap_or_default();
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let args = match args {
        Ok(args) if !args.is_empty() => args,
        Ok(_) => {
            return Error::Config("run needs a command after --, e.g. -- gunicorn app:app".into());
        }
        Err(_) => {
            return Error::Config(format!(
                "the command '{}' contains a NUL byte: remove it",
                program.to_string_lossy()
            ));
        }
    };
    sigconf::restore_for_exec();
    let errno = match nix::unistd::execvp(&args[0], &args) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    let (reason, exit) = match errno {
        Errno::ENOENT | Errno::ENOTDIR => ("not found".to_owned(), Exit::NotFound),
        Errno::EACCES | Errno::EPERM | Errno::ENOEXEC | Errno::EISDIR => (
            format!("not executable ({})", errno.desc()),
            Exit::NotExecutable,
        ),
        other => (other.desc().to_owned(), Exit::NotExecutable),
    };
    Error::Exec {
        program,
        reason,
        path: std::env::var_os("PATH").unwrap_or_default(),
        exit,
    }
}
