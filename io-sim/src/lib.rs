//! The simulated world Drongo is tested in: madsim runs Drongo's own node runtime
//! (`drongo::runtime::run`, its event loop, group commit and persist-before-send
//! ordering) on simulated time and a simulated network, next to a simulated store server,
//! strict SIP user agents driven by a seeded workload, and faults from a plan. A run
//! produces a canonical text trace (and its hash) and the list of invariants it broke.
//!
//! Only built under `RUSTFLAGS="--cfg madsim"` (see `ci/sim.sh`).
#![cfg(madsim)]

pub mod ledger;
pub mod link;
mod mutants;
pub mod store;
pub mod terms;
pub mod trace;
pub mod ua;
pub mod world;

pub use ledger::Counts;
pub use mutants::RegMutants;
pub use world::{run, run_with, Fault, Outcome, Trigger, WorldSpec};
