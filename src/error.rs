//! The errors that end preflight, each tied to its exit code.

use std::ffi::OsString;

use crate::classify::Failure;
use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, environment or project files: exit 2, nothing touched. The part that found
    /// the problem gives its own typed error (`config::ConfigError`, the usage cases of
    /// `migrate::MigrateError`); its message names the option and the fix.
    #[error(transparent)]
    Usage(Box<dyn std::error::Error + Send + Sync>),

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

    /// A migration-phase failure (`migrate::MigrateError`, which chose the exit code): it names
    /// the migration, the database's error and the state the database is left in.
    #[error("{source}")]
    Migrate {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        exit: Exit,
    },

    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A usage error in a few words of prose, for the parts below the CLI that have one or two
    /// such cases and no error type of their own (the supervisor's flags, the log filter).
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage(message.into().into())
    }

    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Dependency { .. } => Exit::Dependency,
            Error::Timeout(_) => Exit::Timeout,
            Error::Signal { signal, .. } => Exit::Signal(*signal),
            Error::Exec { exit, .. } => *exit,
            Error::Migrate { exit, .. } => *exit,
            Error::Internal(_) => Exit::Failure,
        }
    }
}
