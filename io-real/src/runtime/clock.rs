//! The node's wall clock: the only place the runtime reads the time.

use drongo_core::UnixMillis;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The node's wall clock: the system clock plus a fixed offset. The offset is zero in
/// production; the simulation gives nodes clocks that disagree within a bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pub offset_ms: i64,
}

impl Clock {
    pub fn now(&self) -> UnixMillis {
        now_ms().saturating_add_signed(self.offset_ms)
    }
}
