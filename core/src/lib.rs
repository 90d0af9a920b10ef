//! Drongo's sans-IO SIP core.
//!
//! Everything here is a pure state machine: inputs are bytes, messages, commands and the
//! current time (`now`, wall-clock milliseconds); outputs are drained by the caller with
//! `poll_*` methods. No sockets, no clock, no thread RNG: randomness comes from an injected
//! [`ids::IdGen`] so that the same seed gives the same run.

pub mod auth;
pub mod b2bua;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod dialog;
pub mod ids;
pub mod lb;
mod map;
pub mod message;
pub mod metrics;
pub mod node;
pub mod registrar;
mod sink;
pub mod store;
pub mod transaction;

/// Wall-clock time in milliseconds since the Unix epoch.
///
/// Wall clock rather than a monotonic instant so that a deadline written by one node means
/// the same thing to another node that loads it.
pub type UnixMillis = u64;
