//! The scenario runner behind `ci/sim.sh`:
//!
//! ```text
//! drongo-sim list
//! drongo-sim run NAME --seed N [--trace FILE]
//! drongo-sim sweep NAME --seeds A..B [--jobs N] [-v]
//! drongo-sim determinism NAME --seed N
//! ```
//! Exit status 0 when every invariant held, 1 when one broke (the broken invariants and
//! the seed are printed), 2 on a usage error.

/// mimalloc: a run allocates and frees many small buffers per simulated message (glibc
/// malloc was a quarter of the runner's profile). Addresses never reach the trace, so the
/// allocator cannot change a run.
#[cfg(madsim)]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    use drongo_io_sim::{run, run_with, Counts, Outcome};
    use drongo_scenarios::{all, find, Scenario};
    use std::process::ExitCode;

    fn usage() -> ExitCode {
        eprintln!(
            "usage: drongo-sim list | run NAME --seed N [--trace FILE] | sweep NAME --seeds A..B [--jobs N] [-v] | determinism NAME --seed N"
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
            o.lines,
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

    /// The line a sweep worker (`--part`) ends with: its totals, for the parent to add up.
    const PART: &str = "sweep-part";

    /// What a sweep (or a part of one) added up.
    #[derive(Default)]
    struct Totals {
        n: u64,
        sim_ms: u64,
        /// Sum of each run's wall time: one core's time, whatever the number of workers.
        wall_ms: u64,
        failed: Vec<u64>,
        counts: Counts,
    }

    impl Totals {
        fn encode(&self) -> String {
            let failed: Vec<String> = self.failed.iter().map(u64::to_string).collect();
            let counts: Vec<String> = self.counts.to_array().iter().map(u64::to_string).collect();
            format!(
                "{} {} {} [{}] {}",
                self.n,
                self.sim_ms,
                self.wall_ms,
                failed.join(","),
                counts.join(" ")
            )
        }

        fn decode(line: &str) -> Option<Self> {
            let mut w = line.split_whitespace();
            let n = w.next()?.parse().ok()?;
            let sim_ms = w.next()?.parse().ok()?;
            let wall_ms = w.next()?.parse().ok()?;
            let failed = w.next()?.strip_prefix('[')?.strip_suffix(']')?;
            let failed = failed
                .split(',')
                .filter(|f| !f.is_empty())
                .map(|f| f.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            let mut a = [0u64; 25];
            for x in &mut a {
                *x = w.next()?.parse().ok()?;
            }
            Some(Self {
                n,
                sim_ms,
                wall_ms,
                failed,
                counts: Counts::from_array(a),
            })
        }

        fn add(&mut self, o: &Totals) {
            self.n += o.n;
            self.sim_ms += o.sim_ms;
            self.wall_ms += o.wall_ms;
            self.failed.extend(&o.failed);
            self.counts.add(&o.counts);
        }
    }

    /// Runs the seeds one after the other in this process (only the trace's hash is
    /// kept: a failing seed's replay line rebuilds its text).
    fn sweep_here(
        s: &Scenario,
        spec: &drongo_io_sim::WorldSpec,
        range: std::ops::RangeInclusive<u64>,
        verbose: bool,
    ) -> Totals {
        let mut t = Totals::default();
        for seed in range {
            let o = run_with(spec, seed, false);
            t.n += 1;
            t.counts.add(&o.counts);
            t.sim_ms += o.sim_ms;
            t.wall_ms += o.wall_ms;
            if verbose || !o.violations.is_empty() {
                report(s, &o);
            }
            if !o.violations.is_empty() {
                t.failed.push(seed);
            }
        }
        t
    }

    /// Splits the seeds over `jobs` worker processes (this binary with `--part`), passes
    /// their reports through and adds up their totals. Separate processes, not threads:
    /// madsim keeps its world in thread-local state, and a worker's memory goes with it.
    fn sweep_parts(
        s: &Scenario,
        range: std::ops::RangeInclusive<u64>,
        jobs: u64,
        verbose: bool,
    ) -> Option<Totals> {
        let exe = std::env::current_exe().ok()?;
        let (a, b) = (*range.start(), *range.end());
        let size = (b.saturating_sub(a) + 1).div_ceil(jobs);
        let mut workers = Vec::new();
        let mut lo = a;
        while lo <= b {
            let hi = lo.saturating_add(size - 1).min(b);
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["sweep", s.name, "--seeds", &format!("{lo}..{hi}"), "--part"]);
            if verbose {
                cmd.arg("-v");
            }
            cmd.stdout(std::process::Stdio::piped());
            workers.push(cmd.spawn().ok()?);
            lo = hi.saturating_add(1);
            if hi == b {
                break;
            }
        }
        // Each worker's output is read on a thread of its own, so that none blocks on a
        // full pipe; reports are printed worker by worker, in seed order.
        let readers: Vec<_> = workers
            .into_iter()
            .map(|mut w| {
                std::thread::spawn(move || {
                    let mut out = String::new();
                    if let Some(mut o) = w.stdout.take() {
                        let _ = std::io::Read::read_to_string(&mut o, &mut out);
                    }
                    let ok = w.wait().map(|st| st.success()).unwrap_or(false);
                    (ok, out)
                })
            })
            .collect();
        let mut total = Totals::default();
        let mut all_reported = true;
        for r in readers {
            let (ok, out) = r.join().ok()?;
            let mut part = None;
            for line in out.lines() {
                match line.strip_prefix(PART) {
                    Some(rest) => part = Totals::decode(rest),
                    None => println!("{line}"),
                }
            }
            match part {
                Some(p) if ok => total.add(&p),
                _ => all_reported = false,
            }
        }
        total.failed.sort_unstable();
        all_reported.then_some(total)
    }

    fn summarize(s: &Scenario, t: &Totals, jobs: u64, elapsed_s: f64) -> ExitCode {
        let core_s = t.wall_ms.max(1) as f64 / 1000.0;
        let calls = t.counts.calls_attempted;
        println!(
            "{}: {} seeds, {} | {calls} calls, {:.0} simulated s in {core_s:.1} s of one core ({:.0} sim s/s, {:.0} calls/s per core); {elapsed_s:.1} s elapsed on {jobs} job(s)",
            s.name,
            t.n,
            if t.failed.is_empty() {
                "every seed passed".to_string()
            } else {
                format!("failing seeds: {:?}", t.failed)
            },
            t.sim_ms as f64 / 1000.0,
            t.sim_ms as f64 / 1000.0 / core_s,
            calls as f64 / core_s,
        );
        println!("  did: {}", t.counts);
        // A sweep whose runs answered no call at all tested nothing (one short run may
        // answer none by chance; see `vacuity` in io-sim).
        let vacuous = t.counts.calls_answered == 0;
        if vacuous {
            println!("  VACUOUS: no call was answered in any seed");
        }
        if t.failed.is_empty() && !vacuous {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn seeds(range: &str) -> Option<std::ops::RangeInclusive<u64>> {
        let (a, b) = range.split_once("..")?;
        Some(a.parse().ok()?..=b.parse().ok()?)
    }

    pub fn main() -> ExitCode {
        // The nodes' own log lines, for reading a failing seed: `RUST_LOG=warn drongo-sim
        // run …` (stderr; off unless asked for, so a sweep stays quiet and fast).
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
        }
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
                if args.iter().any(|a| a == "--part") {
                    let t = sweep_here(&s, &spec, range, verbose);
                    println!("{PART} {}", t.encode());
                    return ExitCode::SUCCESS;
                }
                let jobs = flag(&args, "--jobs")
                    .and_then(|j| j.parse::<u64>().ok())
                    .unwrap_or(1)
                    .max(1);
                let started = std::time::Instant::now();
                let t = if jobs == 1 {
                    Some(sweep_here(&s, &spec, range, verbose))
                } else {
                    sweep_parts(&s, range, jobs, verbose)
                };
                let Some(t) = t else {
                    eprintln!("a sweep worker failed to run or to report");
                    return ExitCode::from(2);
                };
                summarize(&s, &t, jobs, started.elapsed().as_secs_f64())
            }
            _ => usage(),
        }
    }
}
