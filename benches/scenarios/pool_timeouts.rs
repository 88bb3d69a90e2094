//! `pool_timeouts` (bench.py §16): 10,000 tasks of about 10 µs of CPU on a pool of 2 workers,
//! every task under a 20 ms time limit; 1% of them (`i % 100 == 7`, as in bench.py's
//! `workers.busy_or_hang`) hang, and each must be killed at its limit (its worker killed and
//! replaced) and fail with [`mp::Error::TimeLimitExceeded`], while every other task returns its
//! own `i`. The Python side is `pebble.ProcessPool(max_workers=2)` with
//! `schedule(busy_or_hang, args=(i,), timeout=0.02)`: in the shared bench.py (`throughput` and
//! the two `kill_past_limit_*` lines), and, with every line below, in
//! `benches/python/pool_timeouts.py` (needs `pip install pebble`):
//!
//! ```text
//! python3 ../shared/bench/compare.py --only pool_timeouts \
//!     --python-cmd "python3 benches/python/pool_timeouts.py"
//! ```
//!
//! Submission: one `apply_async` per task on a [`Pool::with_time_limit`] view of the pool. That
//! is the closest mirror of pebble's `schedule(f, args, timeout=)`: one task per call, each
//! with its own limit and its own result handle, submitted one after another by the caller. (A
//! chunked `imap_unordered` would save only the per-task overhead, a few µs of the 12 µs a task
//! costs, against an ideal bound that is 95% hang time, and it would run the items before a
//! hang in its chunk twice; it is not reported.)
//!
//! One pool of 2 workers serves the warm-up repetition and the timed ones, as in
//! `pool_map_small` (bench.py builds a fresh pebble pool per repetition and starts its workers
//! inside the timed region, with its first `schedule`; with the kills, the workers are replaced
//! a hundred times per repetition either way). Timed: from before the first submission until
//! every task's outcome is in. Lines:
//!
//! - `throughput` (tasks/s): median of `10_000 / elapsed` over the timed repetitions;
//! - `elapsed` (s): the median elapsed time; `ideal_bound` (s): `(10_000 × 10 µs + 100 × 20 ms) /
//!   2 workers` = 1.05 s, computed from the sizes; `ratio_to_ideal` (unit `s/s`, so that
//!   `compare.py` ranks it as a time, lower is better): median elapsed / ideal bound;
//! - `kill_late_p50`, `kill_late_p99` (ms), over the hung tasks of every timed repetition: from
//!   the moment a hung task's limit expired to the moment its failure reached the parent. The
//!   limit's expiry is the worker's own [`mp::task_deadline`] (its watchdog's start of the item
//!   plus 20 ms), which the task writes to shared memory (a [`RawArray`] that the pool's
//!   initializer hands to every worker, replacements included) as a `CLOCK_MONOTONIC` time
//!   before it hangs; the arrival is read, on the same clock, in the task's `on_error` callback,
//!   which runs on the pool's thread when the failure is delivered. p99 is
//!   `statistics.quantiles(n=100)[98]`, as for `pipe_pingpong`;
//! - `kill_past_limit_p50`, `kill_past_limit_max` (ms): bench.py's single kills: 21 hanging
//!   tasks one at a time on a pool of 1 worker, `apply` time minus 20 ms.
//!
//! Verified every repetition: 9,900 results equal to their `i`, 100 `TimeLimitExceeded` errors
//! with the 20 ms limit, each on a hanging `i`, each hanging task's deadline recorded and its
//! failure seen by the callback; anything else is a benchmark error. A hanging task sleeps 60 s
//! (bench.py's an hour), so that a kill that never comes fails the check within a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mp::{Callbacks, Error, Pool, RawArray};

use crate::common::{Options, Scenario, emit, median, ms, quantile_99};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "pool_timeouts",
        run: pool_timeouts,
    }]
}

/// Every task's time limit.
const LIMIT: Duration = Duration::from_millis(20);
/// A task's CPU time when it does not hang.
const WORK: Duration = Duration::from_micros(10);
/// How long a hanging task sleeps: far past the limit (a task that returns fails the check).
const HANG: Duration = Duration::from_secs(60);
/// The pool's workers.
const WORKERS: u32 = 2;
/// bench.py's single kills.
const SINGLE_KILLS: usize = 21;

fn e(err: Error) -> String {
    err.to_string()
}

fn hangs(i: u64) -> bool {
    i % 100 == 7
}

/// Where hanging task `i`'s deadline is written: `i / 100`.
fn slot(i: u64) -> usize {
    (i / 100) as usize
}

/// The `CLOCK_MONOTONIC` deadlines of the hanging tasks, in ns (set by the initializer).
static DEADLINES: OnceLock<RawArray<u64>> = OnceLock::new();

#[mp::worker]
fn keep_deadlines(deadlines: RawArray<u64>) {
    let _ = DEADLINES.set(deadlines);
}

/// bench.py's `workers.busy_or_hang`: hangs when `i % 100 == 7`, else spins 10 µs and returns
/// `i`. A hanging task first records when its limit expires.
#[mp::worker]
fn busy_or_hang(i: u64) -> u64 {
    if hangs(i) {
        if let (Some(deadline), Some(deadlines)) = (mp::task_deadline(), DEADLINES.get()) {
            let _ = deadlines.set(slot(i), monotonic_ns_of(deadline));
        }
        std::thread::sleep(HANG);
    }
    let t = Instant::now();
    while t.elapsed() < WORK {
        std::hint::spin_loop();
    }
    i
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of `Instant`, readable in every process.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `t` on the `CLOCK_MONOTONIC` scale, in ns.
fn monotonic_ns_of(t: Instant) -> u64 {
    let (now, now_ns) = (Instant::now(), monotonic_ns());
    if t >= now {
        now_ns + (t - now).as_nanos() as u64
    } else {
        now_ns.saturating_sub((now - t).as_nanos() as u64)
    }
}

/// What one repetition measured.
struct Round {
    elapsed: f64,
    /// Per hanging task: from its deadline to its failure's arrival, ms.
    late: Vec<f64>,
    /// Per hanging task: how long it had run when its worker's watchdog fired, past the limit, ms.
    watchdog_late: Vec<f64>,
}

fn pool_timeouts(o: &Options) -> Result<(), String> {
    let n = o.size(10_000, 2_000) as u64;
    let hung: Vec<u64> = (0..n).filter(|&i| hangs(i)).collect();
    let ideal = (n as f64 * WORK.as_secs_f64() + hung.len() as f64 * LIMIT.as_secs_f64())
        / f64::from(WORKERS);

    let deadlines = RawArray::<u64>::new(hung.len()).map_err(e)?;
    let pool = Pool::builder()
        .processes(WORKERS as usize)
        .initializer(keep_deadlines, (deadlines.clone(),))
        .build()
        .map_err(e)?;
    let limited = pool.with_time_limit(LIMIT).map_err(e)?;
    let (mut times, mut rates, mut late, mut watchdog_late) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=o.reps {
        let r = one_round(&limited, &deadlines, n, &hung)?;
        if o.verbose {
            eprintln!(
                "#   pool_timeouts round {rep}: {:.3} s, kill late p50 {:.2} ms max {:.2} ms \
                 (watchdog p50 {:.2} ms max {:.2} ms)",
                r.elapsed,
                median(&mut r.late.clone()),
                r.late.iter().cloned().fold(f64::MIN, f64::max),
                median(&mut r.watchdog_late.clone()),
                r.watchdog_late.iter().cloned().fold(f64::MIN, f64::max),
            );
        }
        if rep > 0 {
            times.push(r.elapsed);
            rates.push(n as f64 / r.elapsed);
            late.extend(r.late);
            watchdog_late.extend(r.watchdog_late);
        }
    }
    drop(limited);
    drop(pool);
    let elapsed = median(&mut times);
    emit("pool_timeouts", "throughput", median(&mut rates), "tasks/s");
    emit("pool_timeouts", "elapsed", elapsed, "s");
    emit("pool_timeouts", "ideal_bound", ideal, "s");
    emit("pool_timeouts", "ratio_to_ideal", elapsed / ideal, "s/s");
    let p99 = quantile_99(&mut late.clone());
    emit("pool_timeouts", "kill_late_p50", median(&mut late), "ms");
    emit("pool_timeouts", "kill_late_p99", p99, "ms");
    if o.verbose {
        eprintln!(
            "#   pool_timeouts: the watchdogs fired {:.3} ms (p50) / {:.3} ms (p99) past the limit",
            median(&mut watchdog_late.clone()),
            quantile_99(&mut watchdog_late)
        );
    }

    // bench.py's single kills: one hanging task at a time on one worker.
    let single = Pool::new(1).map_err(e)?;
    check_value(single.apply(busy_or_hang, (0,)).map_err(e)?, 0)?;
    let single_limited = single.with_time_limit(LIMIT).map_err(e)?;
    let mut past = Vec::with_capacity(SINGLE_KILLS);
    for _ in 0..SINGLE_KILLS {
        let t = Instant::now();
        let r = single_limited.apply(busy_or_hang, (7,));
        let dt = t.elapsed();
        match r {
            Err(err) => check_timeout(&err, 7)?,
            Ok(v) => return Err(format!("pool_timeouts: a hanging task returned {v}")),
        }
        past.push(ms(dt) - ms(LIMIT));
    }
    let max = past.iter().cloned().fold(f64::MIN, f64::max);
    emit(
        "pool_timeouts",
        "kill_past_limit_p50",
        median(&mut past),
        "ms",
    );
    emit("pool_timeouts", "kill_past_limit_max", max, "ms");
    Ok(())
}

/// One repetition: every task submitted, then every outcome collected and checked.
fn one_round(
    limited: &Pool,
    deadlines: &RawArray<u64>,
    n: u64,
    hung: &[u64],
) -> Result<Round, String> {
    deadlines.copy_from_slice(&vec![0; hung.len()]).map_err(e)?;
    let arrivals: Arc<Vec<AtomicU64>> = Arc::new(hung.iter().map(|_| AtomicU64::new(0)).collect());
    let t = Instant::now();
    let mut pending = Vec::with_capacity(n as usize);
    for i in 0..n {
        let r = if hangs(i) {
            let arrivals = arrivals.clone();
            let on_error =
                move |_: &Error| arrivals[slot(i)].store(monotonic_ns(), Ordering::Relaxed);
            limited.apply_async_with(busy_or_hang, (i,), Callbacks::new().on_error(on_error))
        } else {
            limited.apply_async(busy_or_hang, (i,))
        };
        pending.push(r.map_err(e)?);
    }
    let outcomes: Vec<mp::Result<u64>> = pending.into_iter().map(|r| r.get()).collect();
    let elapsed = t.elapsed().as_secs_f64();

    let (mut ok, mut killed) = (0, 0);
    let mut watchdog_late = Vec::with_capacity(hung.len());
    for (i, out) in (0..n).zip(outcomes) {
        match out {
            Ok(v) if !hangs(i) => {
                check_value(v, i)?;
                ok += 1;
            }
            Ok(v) => return Err(format!("pool_timeouts: hanging task {i} returned {v}")),
            Err(err) => {
                check_timeout(&err, i)?;
                if let Error::TimeLimitExceeded { elapsed, .. } = err {
                    watchdog_late.push(ms(elapsed) - ms(LIMIT));
                }
                killed += 1;
            }
        }
    }
    if ok != n as usize - hung.len() || killed != hung.len() {
        return Err(format!(
            "pool_timeouts: {ok} ok and {killed} killed, expected {} and {}",
            n as usize - hung.len(),
            hung.len()
        ));
    }
    let mut late = Vec::with_capacity(hung.len());
    for &i in hung {
        let deadline = deadlines.get(slot(i)).map_err(e)?;
        let arrived = arrivals[slot(i)].load(Ordering::Relaxed);
        if deadline == 0 || arrived == 0 {
            return Err(format!(
                "pool_timeouts: hanging task {i}: deadline recorded {}, failure seen {}",
                deadline != 0,
                arrived != 0
            ));
        }
        late.push((arrived as f64 - deadline as f64) / 1e6);
    }
    Ok(Round {
        elapsed,
        late,
        watchdog_late,
    })
}

fn check_value(v: u64, i: u64) -> Result<(), String> {
    if v == i {
        Ok(())
    } else {
        Err(format!("pool_timeouts: task {i} returned {v}"))
    }
}

/// `err` must be the 20 ms time limit of hanging task `i`.
fn check_timeout(err: &Error, i: u64) -> Result<(), String> {
    match err {
        Error::TimeLimitExceeded { limit, .. } if *limit == LIMIT && hangs(i) => Ok(()),
        other => Err(format!("pool_timeouts: task {i} failed: {other:?}")),
    }
}
