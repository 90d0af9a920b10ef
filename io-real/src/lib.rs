//! Drongo on tokio: real UDP and TCP transports, store backends, the admin endpoint, and
//! the runtime that drives the sans-IO core and keeps its batches durable before visible.

pub mod admin;
pub mod lb;
pub mod runtime;
pub mod store;
