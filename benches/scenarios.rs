//! `mp`'s mirror of `../shared/bench/python/bench.py`: the same scenarios, sizes, warm-up,
//! repetitions and median rule, printed as the same JSON lines so that
//! `python3 ../shared/bench/compare.py` joins the two on `(scenario, metric)`.
//!
//! ```text
//! cargo bench --bench scenarios                 # full sizes
//! cargo bench --bench scenarios -- --quick      # smoke test
//! cargo bench --bench scenarios -- --only process_start
//! ```
//!
//! Besides Python's figures, each scenario prints raw OS baselines measured in the same run
//! (metrics prefixed `raw_`), so that every `mp` figure can be read against what the OS allows.
//! Notes on mirroring: Python's `noop` target is a `#[mp::worker] fn noop()`; "start_join" is
//! `Process::new` + `start` + `join`, one process at a time, as in Python.

use std::time::Instant;

#[path = "scenarios/channels.rs"]
mod channels;
#[path = "scenarios/common.rs"]
mod common;
#[path = "scenarios/manager.rs"]
mod manager;
#[path = "scenarios/pool.rs"]
mod pool;
#[path = "scenarios/pool_idle.rs"]
mod pool_idle;
#[path = "scenarios/pool_timeouts.rs"]
mod pool_timeouts;
#[path = "scenarios/process_start.rs"]
mod process_start;
#[path = "scenarios/sync.rs"]
mod sync;

use common::{Options, Scenario};

/// Every scenario, in bench.py's order.
fn all() -> Vec<Scenario> {
    let mut all = process_start::scenarios();
    all.extend(pool::scenarios());
    all.extend(channels::scenarios());
    all.extend(sync::scenarios());
    all.extend(manager::scenarios());
    all.extend(pool_timeouts::scenarios());
    all
}

#[mp::main]
fn main() {
    if std::env::args().nth(1).as_deref() == Some("--exit-at-once") {
        // The raw posix_spawn baseline starts this binary with this flag.
        return;
    }
    let opts = Options::from_args();
    if opts.list {
        for s in all() {
            println!("{}", s.name);
        }
        return;
    }
    eprintln!("{}", common::header(&opts));
    let mut failed = false;
    let scenarios = all();
    let names: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    for s in &scenarios {
        if !opts.selected_among(s.name, &names) {
            continue;
        }
        let t = Instant::now();
        if let Err(e) = (s.run)(&opts) {
            eprintln!("scenario {} failed: {e}", s.name);
            failed = true;
        }
        if opts.verbose {
            eprintln!("{}: {:.1?}", s.name, t.elapsed());
        }
    }
    if failed {
        std::process::exit(1);
    }
}
