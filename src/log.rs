//! Structured logs on stderr, as text or one JSON object per line. stdout belongs to the app.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::LogConfig;
use crate::error::Error;

/// Installs the global subscriber. sqlx's own chatter is kept at warn unless the filter names
/// it, so `--log-level debug` shows preflight's attempts rather than every driver event.
pub fn init(config: &LogConfig) -> Result<(), Error> {
    let directives = if config.filter.contains("sqlx") {
        config.filter.clone()
    } else {
        format!("{},sqlx=warn", config.filter)
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| {
        Error::Config(format!(
            "--log-level / PREFLIGHT_LOG '{}' is not a valid filter ({e}): use e.g. info or debug",
            config.filter
        ))
    })?;
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let result = match config.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
        }
    };
    result.map_err(|e| Error::Internal(format!("cannot install the logger: {e}")))
}
