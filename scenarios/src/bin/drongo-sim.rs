//! The scenario runner behind `ci/sim.sh`:
//!
//! ```text
//! drongo-sim list
//! drongo-sim run NAME --seed N [--trace FILE]
//! drongo-sim sweep NAME --seeds A..B [-v]
//! drongo-sim determinism NAME --seed N
//! ```
//! Exit status 0 when every invariant held, 1 when one broke (the broken invariants and
//! the seed are printed), 2 on a usage error.

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    runner::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "drongo-sim runs only in a simulation build: use ci/sim.sh (RUSTFLAGS=\"--cfg madsim\")"
    );
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
mod runner {
    use drongo_io_sim::{run, Counts, Outcome};
    use drongo_scenarios::{all, find, Scenario};
    use std::process::ExitCode;

    fn usage() -> ExitCode {
        eprintln!(
            "usage: drongo-sim list | run NAME --seed N [--trace FILE] | sweep NAME --seeds A..B [-v] | determinism NAME --seed N"
        );
        ExitCode::from(2)
    }

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    fn report(s: &Scenario, o: &Outcome) {
        let wall = o.wall_ms.max(1) as f64 / 1000.0;
        println!(
            "{} seed {}: {} | trace {:016x} ({} lines) | {:.1} sim s in {:.2} wall s ({:.0} sim s/s, {:.0} calls/s)\n  did: {}",
            s.name,
            o.seed,
            if o.violations.is_empty() { "ok" } else { "FAILED" },
            o.hash,
            o.trace.lines().count(),
            o.sim_ms as f64 / 1000.0,
            wall,
            o.sim_ms as f64 / 1000.0 / wall,
            o.counts.calls_attempted as f64 / wall,
            o.counts,
        );
        for v in &o.violations {
            println!("  broken: {v}");
        }
        if !o.violations.is_empty() {
            println!(
                "  replay: ci/sim.sh run {} --seed {} --trace /tmp/{}-{}.trace",
                s.name, o.seed, s.name, o.seed
            );
        }
    }

    fn seeds(range: &str) -> Option<std::ops::RangeInclusive<u64>> {
        let (a, b) = range.split_once("..")?;
        Some(a.parse().ok()?..=b.parse().ok()?)
    }

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let Some(cmd) = args.first() else {
            return usage();
        };
        if cmd == "list" {
            for s in all() {
                println!("{:<28} {}", s.name, s.about);
            }
            return ExitCode::SUCCESS;
        }
        let Some(s) = args.get(1).and_then(|n| find(n)) else {
            eprintln!("unknown scenario; `drongo-sim list` names them");
            return usage();
        };
        let spec = (s.spec)();
        match cmd.as_str() {
            "run" | "determinism" => {
                let Some(seed) = flag(&args, "--seed").and_then(|v| v.parse().ok()) else {
                    return usage();
                };
                let o = run(&spec, seed);
                report(&s, &o);
                if let Some(file) = flag(&args, "--trace") {
                    if let Err(e) = std::fs::write(file, &o.trace) {
                        eprintln!("cannot write {file}: {e}");
                        return ExitCode::from(2);
                    }
                }
                if cmd == "determinism" {
                    let again = run(&spec, seed);
                    if again.hash != o.hash {
                        println!(
                            "{} seed {seed}: NOT DETERMINISTIC: trace {:016x} then {:016x}",
                            s.name, o.hash, again.hash
                        );
                        return ExitCode::FAILURE;
                    }
                    println!("{} seed {seed}: same trace twice ({:016x})", s.name, o.hash);
                }
                if o.violations.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            "sweep" => {
                let Some(range) = flag(&args, "--seeds").and_then(seeds) else {
                    return usage();
                };
                let verbose = args.iter().any(|a| a == "-v");
                let mut failed = Vec::new();
                let mut total = Counts::default();
                let (mut n, mut calls, mut sim_ms, mut wall_ms) = (0u64, 0u64, 0u64, 0u64);
                for seed in range {
                    let o = run(&spec, seed);
                    n += 1;
                    total.add(&o.counts);
                    calls += o.counts.calls_attempted;
                    sim_ms += o.sim_ms;
                    wall_ms += o.wall_ms;
                    if verbose || !o.violations.is_empty() {
                        report(&s, &o);
                    }
                    if !o.violations.is_empty() {
                        failed.push(seed);
                    }
                }
                let wall = wall_ms.max(1) as f64 / 1000.0;
                println!(
                    "{}: {n} seeds, {} | {calls} calls, {:.0} simulated s in {wall:.1} wall s ({:.0} sim s/s, {:.0} calls/s)",
                    s.name,
                    if failed.is_empty() {
                        "every seed passed".to_string()
                    } else {
                        format!("failing seeds: {failed:?}")
                    },
                    sim_ms as f64 / 1000.0,
                    sim_ms as f64 / 1000.0 / wall,
                    calls as f64 / wall,
                );
                println!("  did: {total}");
                // A sweep whose runs answered no call at all tested nothing (one short run
                // may answer none by chance; see `vacuity` in io-sim).
                let vacuous = total.calls_answered == 0;
                if vacuous {
                    println!("  VACUOUS: no call was answered in any seed");
                }
                if failed.is_empty() && !vacuous {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            _ => usage(),
        }
    }
}
