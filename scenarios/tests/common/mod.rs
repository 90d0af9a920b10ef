//! What the scenario tests share: a scenario's spec by name, and how many seeds of a
//! (broken) spec a check catches.
#![allow(dead_code)]

use drongo_io_sim::{run, WorldSpec};
use drongo_scenarios::find;

pub fn spec(name: &str) -> WorldSpec {
    (find(name).expect("scenario exists").spec)()
}

/// How many of seeds 1..=`seeds` of `spec` report a violation that contains `what`.
pub fn seeds_caught(spec: &WorldSpec, seeds: u64, what: &str) -> usize {
    (1..=seeds)
        .filter(|seed| run(spec, *seed).violations.iter().any(|v| v.contains(what)))
        .count()
}
