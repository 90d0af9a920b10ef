//! The distributed registrar's checks can fail: a registrar without compare-and-swap loses
//! one device's binding when REGISTERs of one address-of-record race through two members
//! (the §10.3 listing check and the lookups see it), and a leader whose watchdog's writes
//! never land leaves expired bindings in the store (the store check sees it).
#![cfg(madsim)]

mod common;

use common::{seeds_caught, spec};
use drongo_io_sim::{run, WorldSpec};

#[test]
fn listing_check_catches_a_registrar_without_compare_and_swap() {
    let broken = WorldSpec {
        mutant_blind_bindings: true,
        ..spec("registrar-concurrent-refresh")
    };
    let caught = seeds_caught(&broken, 10, "lost update");
    assert!(caught >= 8, "{caught} of 10 seeds caught it");
}

#[test]
fn store_check_catches_a_watchdog_whose_removals_never_land() {
    for name in ["registrar-concurrent-refresh", "registrar-leader-crash"] {
        let broken = WorldSpec {
            mutant_idle_watchdog: true,
            ..spec(name)
        };
        let caught = seeds_caught(&broken, 10, "still stored");
        assert!(caught >= 8, "{name}: {caught} of 10 seeds caught it");
    }
}

/// The same scenarios pass unbroken at those seeds (the catches above are the mutants').
#[test]
fn registrar_scenarios_pass_unbroken() {
    for name in [
        "registrar-concurrent-refresh",
        "registrar-node-crash",
        "registrar-leader-crash",
        "region-partition",
        "region-heal",
    ] {
        for seed in 1..=10 {
            let o = run(&spec(name), seed);
            assert!(
                o.violations.is_empty(),
                "{name} seed {seed}: {:?}",
                o.violations
            );
        }
    }
}

#[test]
fn lookup_checks_catch_a_region_that_copies_nothing() {
    let broken = WorldSpec {
        mutant_no_replication: true,
        ..spec("region-partition")
    };
    let caught = seeds_caught(&broken, 10, "registration not copied");
    assert!(caught >= 9, "{caught} of 10 seeds caught it");
}

#[test]
fn lookup_checks_catch_removals_that_never_reach_the_other_region() {
    let broken = WorldSpec {
        mutant_kept_copies: true,
        ..spec("region-heal")
    };
    let caught = seeds_caught(
        &broken,
        10,
        "removed or expired binding listed by the other region",
    );
    assert!(caught >= 5, "{caught} of 10 seeds caught it");
}
