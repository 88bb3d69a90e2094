//! Pool scenarios of bench.py: `pool_map_small`, `pool_imap_unordered`, `pool_apply_async` and
//! `pool_cpu_scaling`, plus the per-task overhead of one `apply` round trip against a raw
//! socketpair round trip measured in the same run (`raw_rtt_median`). (`pool_timeouts` is in
//! `pool_timeouts.rs`.)
//!
//! `pool_map_small_time_limit` is ours alone, with no Python side (Python's `Pool` has no time
//! limits): `pool_map_small`'s two workloads, same sizes, on a pool without a time limit and on
//! one built with `time_limit(60 s)`, which never fires, alternating which runs first, one
//! untimed round then `3 × reps` timed ones (each `map` of the default chunk size lasts a few
//! ms, so more samples than `pool_map_small`'s). Lines `<workload>_no_limit` and
//! `<workload>_limit_60s` (tasks/s, medians) and `<workload>_ratio` (x, the median of the rounds'
//! with-limit ÷ without ratios; 1 means the limit costs nothing).
//!
//! Mirroring notes: Python's `workers.square` and `workers.cpu_task` are `#[mp::worker]`s with the
//! same arithmetic (`cpu_task` is the same 31-bit LCG, so results are equal); pools use the
//! default start method and are created outside the timed region, as in Python.

use std::time::{Duration, Instant};

use mp::Pool;

use crate::common::{Options, Scenario, emit, median, raw_echo_rtts};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "pool_map_small",
            run: pool_map_small,
        },
        Scenario {
            name: "pool_map_small_time_limit",
            run: pool_map_small_time_limit,
        },
        Scenario {
            name: "pool_imap_unordered",
            run: pool_imap_unordered,
        },
        Scenario {
            name: "pool_apply_async",
            run: pool_apply_async,
        },
        Scenario {
            name: "pool_cpu_scaling",
            run: pool_cpu_scaling,
        },
    ]
}

fn e(err: mp::Error) -> String {
    err.to_string()
}

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

/// `iters` steps of a 31-bit LCG from `seed` (Python's `workers.cpu_task`).
#[mp::worker]
fn cpu_task(seed: u64, iters: u64) -> u64 {
    let mut x = seed;
    for _ in 0..iters {
        x = (x.wrapping_mul(1_103_515_245).wrapping_add(12_345)) & 0x7FFF_FFFF;
    }
    x
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

/// `pool_map_small`'s two workloads: metric name, items, chunk size (`None`: Python's default).
fn map_small_cases(o: &Options) -> [(&'static str, usize, Option<usize>); 2] {
    [
        ("default_chunksize", o.size(200_000, 100_000), None),
        ("chunksize_1", o.size(20_000, 5_000), Some(1)),
    ]
}

/// One timed `map` of `square` over `0..n` on `pool`, checked against `expected`: tasks/s.
fn timed_map(
    pool: &Pool,
    n: usize,
    chunksize: Option<usize>,
    expected: &[u64],
) -> Result<f64, String> {
    let t = Instant::now();
    let out = match chunksize {
        None => pool.map(square, 0..n as u64),
        Some(c) => pool.map_chunked(square, 0..n as u64, c),
    }
    .map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    check(out == expected, "pool.map returned wrong squares")?;
    Ok(n as f64 / dt)
}

fn pool_map_small(o: &Options) -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    for (metric, n, chunksize) in map_small_cases(o) {
        let expected: Vec<u64> = (0..n as u64).map(|i| i * i).collect();
        let mut rates = Vec::new();
        for rep in 0..=o.reps {
            let rate = timed_map(&pool, n, chunksize, &expected)?;
            if rep > 0 {
                rates.push(rate);
            }
        }
        emit("pool_map_small", metric, median(&mut rates), "tasks/s");
    }
    Ok(())
}

/// `pool_map_small`'s two workloads on a pool without a time limit and on one built with a
/// generous limit (60 s, never reached), in alternating order round by round: what a time limit
/// costs when it never fires (the worker's watchdog notes each item's start).
fn pool_map_small_time_limit(o: &Options) -> Result<(), String> {
    let plain = Pool::new(2).map_err(e)?;
    let limited = Pool::builder()
        .processes(2)
        .time_limit(Duration::from_secs(60))
        .build()
        .map_err(e)?;
    let rounds = 3 * o.reps;
    for (metric, n, chunksize) in map_small_cases(o) {
        let expected: Vec<u64> = (0..n as u64).map(|i| i * i).collect();
        let rate = |pool: &Pool| timed_map(pool, n, chunksize, &expected);
        let (mut without, mut with, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=rounds {
            let (w, l) = if round % 2 == 0 {
                let w = rate(&plain)?;
                (w, rate(&limited)?)
            } else {
                let l = rate(&limited)?;
                (rate(&plain)?, l)
            };
            if round > 0 {
                without.push(w);
                with.push(l);
                ratios.push(l / w);
            }
        }
        let lines = [
            ("no_limit", median(&mut without), "tasks/s"),
            ("limit_60s", median(&mut with), "tasks/s"),
            ("ratio", median(&mut ratios), "x"),
        ];
        for (suffix, value, unit) in lines {
            let name = format!("{metric}_{suffix}");
            emit("pool_map_small_time_limit", &name, value, unit);
        }
    }
    Ok(())
}

fn pool_imap_unordered(o: &Options) -> Result<(), String> {
    let n = o.size(200_000, 100_000) as u64;
    let pool = Pool::new(2).map_err(e)?;
    let expected: Vec<u64> = (0..n).map(|i| i * i).collect();
    let mut rates = Vec::new();
    for rep in 0..=o.reps {
        let t = Instant::now();
        let mut out = pool
            .imap_unordered_chunked(square, 0..n, 64)
            .map_err(e)?
            .collect::<mp::Result<Vec<u64>>>()
            .map_err(e)?;
        let dt = t.elapsed().as_secs_f64();
        out.sort_unstable();
        check(out == expected, "imap_unordered returned wrong squares")?;
        if rep > 0 {
            rates.push(n as f64 / dt);
        }
    }
    emit(
        "pool_imap_unordered",
        "chunksize_64",
        median(&mut rates),
        "tasks/s",
    );
    emit(
        "pool_imap_unordered",
        "idle_consumer_cpu",
        crate::pool_idle::idle_consumer_cpu(&pool)?,
        "% of a core",
    );
    Ok(())
}

fn pool_apply_async(o: &Options) -> Result<(), String> {
    let n = o.size(20_000, 5_000) as u64;
    let pool = Pool::new(2).map_err(e)?;
    let expected: Vec<u64> = (0..n).map(|i| i * i).collect();
    let mut rates = Vec::new();
    for rep in 0..=o.reps {
        let t = Instant::now();
        let pending = (0..n)
            .map(|i| pool.apply_async(square, (i,)))
            .collect::<mp::Result<Vec<_>>>()
            .map_err(e)?;
        let out = pending
            .into_iter()
            .map(|r| r.get())
            .collect::<mp::Result<Vec<u64>>>()
            .map_err(e)?;
        let dt = t.elapsed().as_secs_f64();
        check(out == expected, "apply_async returned wrong squares")?;
        if rep > 0 {
            rates.push(n as f64 / dt);
        }
    }
    emit(
        "pool_apply_async",
        "apply_async_get",
        median(&mut rates),
        "tasks/s",
    );

    // Per-task overhead: one apply at a time, against a raw socketpair round trip.
    let rounds = o.size(20_000, 5_000);
    let mut rtts = Vec::with_capacity(rounds);
    for i in 0..rounds as u64 {
        let t = Instant::now();
        let v = pool.apply(square, (i,)).map_err(e)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
        check(v == i * i, "apply returned a wrong square")?;
    }
    emit(
        "pool_apply_async",
        "apply_rtt_median",
        median(&mut rtts),
        "us",
    );
    emit(
        "pool_apply_async",
        "raw_rtt_median",
        median(&mut raw_echo_rtts(0, rounds)?),
        "us",
    );
    Ok(())
}

fn pool_cpu_scaling(o: &Options) -> Result<(), String> {
    let iters = o.size(2_000_000, 200_000) as u64;
    let reps = o.size(5, 3);
    let pools = [Pool::new(1).map_err(e)?, Pool::new(2).map_err(e)?];
    for p in &pools {
        p.map_chunked(cpu_task_1000, 0..2u64, 1).map_err(e)?;
    }
    // Python's workload, timed as Python times it.
    let [t1, t2] = time_pools(&pools, iters, reps)?;
    emit("pool_cpu_scaling", "pool1_seconds", t1, "s");
    emit("pool_cpu_scaling", "pool2_seconds", t2, "s");
    // Compiled, those steps take about 13 ms in all: too short to time a speedup on a shared
    // 2-vCPU machine, where one preemption is a sizeable part of it. The speedup is timed on
    // 50 times the steps (about 0.65 s on one worker), so it says how the pool scales.
    let [l1, l2] = time_pools(&pools, iters * 50, reps)?;
    emit("pool_cpu_scaling", "speedup", l1 / l2, "x");
    Ok(())
}

/// Median seconds for 16 `cpu_task(seed, iters)` on each pool, checking their results.
fn time_pools(pools: &[Pool; 2], iters: u64, reps: usize) -> Result<[f64; 2], String> {
    let items = 16u64;
    let mut times = [Vec::new(), Vec::new()];
    let mut results: [Option<Vec<u64>>; 2] = [None, None];
    for _ in 0..reps {
        for (k, p) in pools.iter().enumerate() {
            let t = Instant::now();
            let out = p
                .starmap(cpu_task, (0..items).map(|s| (s, iters)))
                .map_err(e)?;
            times[k].push(t.elapsed().as_secs_f64());
            let first = results[k].get_or_insert_with(|| out.clone());
            check(*first == out, "pool_cpu_scaling: results changed")?;
        }
    }
    check(results[0] == results[1], "Pool(1) and Pool(2) disagree")?;
    check(
        results[0].as_ref().map(|r| r[1]) == Some(cpu_task(1, iters)),
        "pool_cpu_scaling: wrong task result",
    )?;
    Ok([median(&mut times[0]), median(&mut times[1])])
}

/// The warm-up task: `cpu_task(seed, 1000)`.
#[mp::worker]
fn cpu_task_1000(seed: u64) -> u64 {
    cpu_task(seed, 1000)
}
