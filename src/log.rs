//! Structured logs on stderr, as text or one JSON object per line. stdout belongs to the app.
//! Every line passes through [`redact::scrub`] on its way out.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;
use crate::error::Error;
use crate::redact;

/// Whether text logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    /// When stderr is a terminal and NO_COLOR is unset or empty (https://no-color.org).
    Auto,
    Always,
    Never,
}

impl Color {
    /// Whether to write ANSI colour codes on stderr.
    pub fn ansi(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// Log line format on stderr: human-readable text or one JSON object per line. Here, not in
/// `cli`, so the supervise-only mode (which never builds the CLI) shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. sqlx's own chatter is kept at warn unless the filter names
/// it, so `--log-level debug` shows preflight's attempts rather than every driver event.
pub fn init(config: &LogConfig) -> Result<(), Error> {
    let directives = if config.filter.contains("sqlx") {
        config.filter.clone()
    } else {
        format!("{},sqlx=warn", config.filter)
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| {
        Error::usage(format!(
            "--log-level / PREFLIGHT_LOG '{}' is not a valid filter ({e}): use e.g. info or debug",
            config.filter
        ))
    })?;
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(ScrubbedStderr).with_target(false);
    let result = match config.format {
        LogFormat::Text => builder.with_ansi(config.ansi).try_init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init()
        }
    };
    result.map_err(|e| Error::Internal(format!("cannot install the logger: {e}")))
}

/// One event, one line: a line break inside it (a database's multi-line error, a file name
/// with a newline) is written as `\n`, so that a log collector never splits an event or takes
/// its second half for an event of its own.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if !body.contains(['\n', '\r']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = body.replace('\r', "\\r").replace('\n', "\\n");
    if body.len() < text.len() {
        out.push('\n');
    }
    std::borrow::Cow::Owned(out)
}

/// Hands each event a buffer, and writes the whole event, scrubbed, to stderr when it is done:
/// a URL split across two writes could not be recognized.
struct ScrubbedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(Vec::new())
    }
}

struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let text = String::from_utf8_lossy(&self.0);
            let text = one_line(&text);
            let _ = std::io::stderr().write_all(redact::scrub(&text).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_event_is_one_line() {
        assert_eq!(one_line("plain\n"), "plain\n");
        assert_eq!(one_line("ERROR a\nb\r\nc\n"), "ERROR a\\nb\\r\\nc\n");
        assert_eq!(one_line("no newline at the end\nx"), "no newline at the end\\nx");
    }
}
