//! Durations as the logs show them. Shared by every phase and by the supervisor, which needs
//! nothing else from the wait phase.

use std::time::Duration;

/// Whole milliseconds, saturating (a log field, never a panic).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
