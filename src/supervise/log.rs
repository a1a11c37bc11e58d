//! The supervise-only process's logger: the same lines as `crate::log` writes (text or one JSON
//! object per line, on stderr), from a small `tracing` subscriber of our own.
//!
//! Why not tracing-subscriber here: its registry (a sharded slab), `EnvFilter` and formatters
//! are most of the code and read-only data the supervisor would touch, and every page touched
//! stays resident for as long as the app runs (`scripts/bench-init.py` measures it against
//! tini). The supervisor logs a handful of events, at one level, with no spans, so it needs
//! none of that. The parent resolves its full filter to that one level (`level_for_supervisor`).

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::error::Error;
use crate::log::LogFormat;

/// The most verbose level the installed filter enables for the supervisor's events: what the
/// parent passes as `--log-level` across the re-exec.
pub fn level_for_supervisor() -> &'static str {
    const TARGET: &str = "preflight::supervise::init";
    if tracing::enabled!(target: TARGET, Level::TRACE) {
        "trace"
    } else if tracing::enabled!(target: TARGET, Level::DEBUG) {
        "debug"
    } else if tracing::enabled!(target: TARGET, Level::INFO) {
        "info"
    } else if tracing::enabled!(target: TARGET, Level::WARN) {
        "warn"
    } else if tracing::enabled!(target: TARGET, Level::ERROR) {
        "error"
    } else {
        "off"
    }
}

/// Installs the supervisor's logger. `level` is one level name (`info`), as the parent passes.
pub fn init(format: LogFormat, level: &str, ansi: bool) -> Result<(), Error> {
    let max = LevelFilter::from_str(level).map_err(|_| {
        Error::usage(format!(
            "--log-level '{level}' is not a level: use trace, debug, info, warn, error or off"
        ))
    })?;
    let logger = Logger { max, json: format == LogFormat::Json, ansi };
    tracing::subscriber::set_global_default(logger)
        .map_err(|e| Error::Internal(format!("cannot install the logger: {e}")))
}

struct Logger {
    max: LevelFilter,
    json: bool,
    ansi: bool,
}

impl Subscriber for Logger {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    // The supervisor opens no spans; these only satisfy the trait.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let level = *event.metadata().level();
        let mut line = String::with_capacity(192);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.json {
            line.push_str("{\"timestamp\":\"");
            timestamp(&mut line, now.as_secs(), now.subsec_micros());
            line.push_str("\",\"level\":\"");
            line.push_str(level.as_str());
            line.push('"');
            event.record(&mut JsonFields { line: &mut line });
            line.push_str("}\n");
        } else {
            let mut fields = TextFields { message: String::new(), rest: String::new(), ansi: self.ansi };
            event.record(&mut fields);
            if self.ansi {
                let color = match level {
                    Level::TRACE => "35",
                    Level::DEBUG => "34",
                    Level::INFO => "32",
                    Level::WARN => "33",
                    Level::ERROR => "31",
                };
                line.push_str("\x1b[2m");
                timestamp(&mut line, now.as_secs(), now.subsec_micros());
                let _ = write!(line, "\x1b[0m \x1b[{color}m{:>5}\x1b[0m ", level.as_str());
            } else {
                timestamp(&mut line, now.as_secs(), now.subsec_micros());
                let _ = write!(line, " {:>5} ", level.as_str());
            }
            line.push_str(&fields.message);
            line.push_str(&fields.rest);
            line.push('\n');
        }
        // The app's command line may hold a password (registered by `app::supervise_only`).
        let line = crate::log::one_line(&line);
        let line = crate::redact::scrub(&line);
        // One write per line, so lines from a crowd of processes on one pipe never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// `2026-11-22T22:15:01.123456Z`, as tracing-subscriber writes it.
fn timestamp(out: &mut String, secs: u64, micros: u32) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Text fields: the message, then ` name=value` with values as `Debug` shows them (strings
/// quoted), as tracing-subscriber's default format does.
struct TextFields {
    message: String,
    rest: String,
    ansi: bool,
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if self.ansi {
            let _ = write!(self.rest, " \x1b[3m{}\x1b[0m\x1b[2m=\x1b[0m{value:?}", field.name());
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// JSON fields, flattened into the event object: numbers and booleans as JSON values, strings
/// as strings, anything else as its `Debug` text.
struct JsonFields<'a> {
    line: &'a mut String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        json_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_string(self.line, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        json_string(self.line, &format!("{value:?}"));
    }
}

/// Appends `s` as a JSON string, escaped as serde_json does.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut s = String::new();
        timestamp(&mut s, 0, 0);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        // 2024-02-29T23:59:59 UTC: a leap day, the last second of it.
        timestamp(&mut s, 1_709_251_199, 123_456);
        assert_eq!(s, "2024-02-29T23:59:59.123456Z");
        s.clear();
        timestamp(&mut s, 4_102_444_800, 7);
        assert_eq!(s, "2100-01-01T00:00:00.000007Z");
    }

    #[test]
    fn json_strings_escape_like_serde_json() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn levels_parse_and_bad_ones_name_the_fix() {
        let err = init(LogFormat::Text, "loud", false).unwrap_err().to_string();
        assert!(err.contains("'loud'") && err.contains("use trace, debug"), "{err}");
    }
}
