//! The errors that end preflight, each tied to its exit code.

use std::ffi::OsString;

use crate::classify::Failure;
use crate::exit::Exit;
use crate::wait::WaitError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or environment. The message names the option and the fix.
    #[error("{0}")]
    Config(String),

    #[error("{target}: {} ({}); {}", failure.message, failure.class, failure.hint())]
    Dependency { target: String, failure: Failure },

    #[error("{}", timeout_message(.timeout, .pending))]
    Timeout { timeout: std::time::Duration, pending: Vec<crate::wait::Pending> },

    #[error("aborted by {name} during {phase}")]
    Signal { signal: i32, name: &'static str, phase: &'static str },

    #[error("cannot run '{}': {reason}; PATH={}", program.to_string_lossy(), path.to_string_lossy())]
    Exec { program: OsString, reason: String, path: OsString, exit: Exit },

    /// A migration-phase failure; the message names the migration, the database's error and
    /// the state the database is left in.
    #[error("{message}")]
    Migrate { message: String, exit: Exit },

    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::Usage,
            Error::Dependency { .. } => Exit::Dependency,
            Error::Timeout { .. } => Exit::Timeout,
            Error::Signal { signal, .. } => Exit::Signal(*signal),
            Error::Exec { exit, .. } => *exit,
            Error::Migrate { exit, .. } => *exit,
            Error::Internal(_) => Exit::Failure,
        }
    }
}

impl From<WaitError> for Error {
    fn from(err: WaitError) -> Self {
        match err {
            WaitError::Permanent { target, failure } => Error::Dependency { target, failure },
            WaitError::Timeout { timeout, pending } => Error::Timeout { timeout, pending },
        }
    }
}

fn timeout_message(timeout: &std::time::Duration, pending: &[crate::wait::Pending]) -> String {
    let what: Vec<String> = pending
        .iter()
        .map(|p| match &p.last {
            Some(f) => {
                format!("{} ({}, last error: {}: {})", p.target, attempts(p.attempts), f.class, f.message)
            }
            None => format!("{} ({})", p.target, attempts(p.attempts)),
        })
        .collect();
    format!(
        "not ready after {}: {}; check that it is up and reachable from here, or raise --timeout",
        humantime::format_duration(*timeout),
        what.join("; ")
    )
}

fn attempts(n: u32) -> String {
    if n == 1 { "1 attempt".into() } else { format!("{n} attempts") }
}
