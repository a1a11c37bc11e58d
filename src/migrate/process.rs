//! Running the project's own commands (migration tool, schema check, backup) during the
//! migration phase.
//!
//! Each runs without a shell, with stdin closed and **its stdout sent to our stderr**: under
//! `run`, preflight's stdout becomes the app's, and a tool's chatter (`alembic current` prints
//! the revision) must not land in the app's output stream. The signal state preflight changed
//! for itself is restored in the child before exec (see `supervise::sigconf`).

use std::os::fd::AsFd;
use std::process::{ExitStatus, Stdio};

use tracing::info;

use crate::error::Error;
use crate::exit::Exit;

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
    // SAFETY: restore_for_exec only calls sigaction and pthread_sigmask, which are
    // async-signal-safe, and reads atomics.
    unsafe {
        cmd.pre_exec(|| {
            crate::supervise::sigconf::restore_for_exec();
            Ok(())
        });
    }
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
    child.wait().await.map_err(|e| Error::Internal(format!("waiting for the {what}: {e}")))
}
