//! The errors that end preflight, each tied to its exit code.

use std::ffi::OsString;

use crate::classify::Failure;
use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or environment. The message names the option and the fix.
    #[error("{0}")]
    Config(String),

    #[error("{target}: {} ({}); {}", failure.message, failure.class, failure.hint())]
    Dependency { target: String, failure: Failure },

    /// The deadline passed with a dependency still not ready. The phase that waited says
    /// which and how (`wait::WaitError`): this type sits below the phases and knows none of
    /// their types.
    #[error("{0}")]
    Timeout(#[source] Box<dyn std::error::Error + Send + Sync>),

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
            Error::Timeout(_) => Exit::Timeout,
            Error::Signal { signal, .. } => Exit::Signal(*signal),
            Error::Exec { exit, .. } => *exit,
            Error::Migrate { exit, .. } => *exit,
            Error::Internal(_) => Exit::Failure,
        }
    }
}
