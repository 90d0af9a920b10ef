//! The canonical trace of a run: one line per message, store operation, fault and check,
//! stamped with simulated time. Its hash is what "byte-identical" is checked against.
//!
//! The hash is taken line by line as the run goes (FNV-1a over each line and its `\n`,
//! the same as hashing the whole text at the end), so a sweep that only compares hashes
//! never builds the text: `Trace::quiet` formats each line straight into the hash.

use std::fmt::{Display, Write};
use std::sync::{Arc, Mutex, MutexGuard};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

struct Inner {
    /// The text so far, when it is kept.
    text: Option<String>,
    /// FNV-1a of every line so far, each followed by `\n`.
    hash: u64,
    lines: usize,
    violations: Vec<String>,
}

/// Formatting target that hashes (and, when the text is kept, appends) what is written.
struct Sink<'a>(&'a mut Inner);

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut h = self.0.hash;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0.hash = h;
        if let Some(t) = &mut self.0.text {
            t.push_str(s);
        }
        Ok(())
    }
}

/// Shared by every simulated node of one run (they all live in one process).
#[derive(Clone)]
pub struct Trace(Arc<Mutex<Inner>>);

impl Default for Trace {
    /// A trace that keeps its text.
    fn default() -> Self {
        Self::new(true)
    }
}

/// Simulated milliseconds since the run began.
pub fn sim_ms() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_millis() as u64
}

impl Trace {
    fn new(keep_text: bool) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            text: keep_text.then(String::new),
            hash: FNV_OFFSET,
            lines: 0,
            violations: Vec::new(),
        })))
    }

    /// A trace that only hashes its lines (what a sweep needs).
    pub fn quiet() -> Self {
        Self::new(false)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `{time} {who} {what}`.
    pub fn log(&self, who: &str, what: impl Display) {
        let t = sim_ms();
        let mut inner = self.lock();
        inner.lines += 1;
        let _ = writeln!(
            Sink(&mut inner),
            "{:>7}.{:03} {who} {what}",
            t / 1000,
            t % 1000
        );
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

    /// The whole text (empty for a quiet trace).
    pub fn text(&self) -> String {
        self.lock().text.clone().unwrap_or_default()
    }

    /// FNV-1a of the text, kept or not.
    pub fn hash(&self) -> u64 {
        self.lock().hash
    }

    pub fn len(&self) -> usize {
        self.lock().lines
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message's fingerprint in the trace: eight bytes a step (FNV's byte a step over every
/// message of a run was the largest part of the trace's cost), stable across Rust versions
/// and platforms, unlike `DefaultHasher`. Not for anything but telling two messages apart.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    h ^ (h >> 29)
}
