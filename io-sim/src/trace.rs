//! The canonical trace of a run: one line per message, store operation, fault and check,
//! stamped with simulated time. Its hash is what "byte-identical" is checked against.

use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Inner {
    lines: Vec<String>,
    violations: Vec<String>,
}

/// Shared by every simulated node of one run (they all live in one process).
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Inner>>);

/// Simulated milliseconds since the run began.
pub fn sim_ms() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_millis() as u64
}

impl Trace {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `{time} {who} {what}`.
    pub fn log(&self, who: &str, what: impl Display) {
        let t = sim_ms();
        let line = format!("{:>7}.{:03} {who} {what}", t / 1000, t % 1000);
        self.lock().lines.push(line);
    }

    /// Records a broken invariant (it also goes into the trace).
    pub fn violation(&self, who: &str, what: impl Display) {
        let what = what.to_string();
        self.log(who, format_args!("VIOLATION {what}"));
        self.lock().violations.push(format!("{who}: {what}"));
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn text(&self) -> String {
        let mut s = self.lock().lines.join("\n");
        s.push('\n');
        s
    }

    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
