//! Manager scenarios of bench.py (§11): `manager_dict_ops`, with the raw round trip measured in
//! the same run, and the same workload against a manager reached over TCP loopback.
//!
//! - `set_get`: a child does `n × (d[i] = i*i; d[i])` on a `DictProxy<u64, u64>` of a local
//!   manager (abstract Unix socket), between two barrier waits; one op = one proxy call, as in
//!   Python.
//! - `set_get_tcp`: the same against a manager serving on `127.0.0.1:0` (Python's remote
//!   manager path), for comparison; Python has no such figure.
//! - `raw_rtt_median`: 8-byte messages over a socketpair to a forked echo child (the floor of a
//!   call that needs an answer); a set+get pair is two calls.
//!
//! - `manager_queue` `throughput`: a child puts `0..n` on a manager's queue, the parent gets all
//!   `n` (timed from the barrier to the last get), as in Python; `throughput_tcp` the same over
//!   TCP loopback.
//!
//! Mirroring notes: Python's keys are `int` and its warm-up key a `str`; here the warm-up key is
//! `u64::MAX`. Children are started with the default start method, as in Python.

use std::time::Instant;

use mp::manager::{DictProxy, QueueProxy};
use mp::{Barrier, Manager};

use crate::common::{Options, Scenario, emit, median, raw_echo_rtts};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "manager_dict_ops",
            run: manager_dict_ops,
        },
        Scenario {
            name: "manager_queue",
            run: manager_queue,
        },
    ]
}

fn e(err: mp::Error) -> String {
    err.to_string()
}

const WARMUP_KEY: u64 = u64::MAX;

#[mp::worker]
fn dict_set_get(barrier: Barrier, d: DictProxy<u64, u64>, n: u64) -> Result<(), String> {
    for _ in 0..100 {
        d.set(&WARMUP_KEY, &0).map_err(e)?;
        if d.get(&WARMUP_KEY).map_err(e)? != Some(0) {
            return Err("manager dict warm-up read back a wrong value".into());
        }
    }
    barrier.wait().map_err(e)?;
    for i in 0..n {
        d.set(&i, &(i * i)).map_err(e)?;
        if d.get(&i).map_err(e)? != Some(i * i) {
            return Err(format!("manager dict returned a wrong value for key {i}"));
        }
    }
    barrier.wait().map_err(e)?;
    Ok(())
}

/// The median rate of `2n / seconds` over the timed repetitions, against `manager`.
fn dict_rate(o: &Options, manager: &Manager, n: u64) -> Result<f64, String> {
    let mut rates = Vec::new();
    for rep in 0..=o.reps {
        let d = manager.dict::<u64, u64>().map_err(e)?;
        let barrier = Barrier::new(2).map_err(e)?;
        let mut child = mp::Process::new(dict_set_get, (barrier.clone(), d.clone(), n));
        child.start().map_err(e)?;
        barrier.wait().map_err(e)?;
        let t0 = Instant::now();
        barrier.wait().map_err(e)?;
        let dt = t0.elapsed().as_secs_f64();
        child.join().map_err(e)?;
        let items = d.items().map_err(e)?;
        let ok = items.len() as u64 == n + 1
            && items
                .iter()
                .all(|(k, v)| (*k == WARMUP_KEY && *v == 0) || *v == k * k);
        if !ok {
            return Err("manager_dict_ops: dict contents wrong after the run".into());
        }
        if rep > 0 {
            rates.push(2.0 * n as f64 / dt);
        }
    }
    Ok(median(&mut rates))
}

fn manager_dict_ops(o: &Options) -> Result<(), String> {
    let n = o.size(10_000, 2_000) as u64;
    let local = Manager::start().map_err(e)?;
    emit(
        "manager_dict_ops",
        "set_get",
        dict_rate(o, &local, n)?,
        "ops/s",
    );
    local.shutdown().map_err(e)?;

    let mut raw = raw_echo_rtts(1000, o.size(20_000, 5_000))?;
    emit("manager_dict_ops", "raw_rtt_median", median(&mut raw), "us");

    let tcp = Manager::serve("127.0.0.1:0", mp::current_process().authkey()).map_err(e)?;
    emit(
        "manager_dict_ops",
        "set_get_tcp",
        dict_rate(o, &tcp, n)?,
        "ops/s",
    );
    tcp.shutdown().map_err(e)?;
    Ok(())
}

#[mp::worker]
fn put_ints(barrier: Barrier, q: QueueProxy<u64>, n: u64) -> Result<(), String> {
    barrier.wait().map_err(e)?;
    for i in 0..n {
        q.put(i).map_err(e)?;
    }
    Ok(())
}

/// The median rate of `n / seconds` over the timed repetitions, against `manager`.
fn queue_rate(o: &Options, manager: &Manager, n: u64) -> Result<f64, String> {
    let q = manager.queue::<u64>().map_err(e)?;
    let mut rates = Vec::new();
    for rep in 0..=o.reps {
        let barrier = Barrier::new(2).map_err(e)?;
        let mut child = mp::Process::new(put_ints, (barrier.clone(), q.clone(), n));
        child.start().map_err(e)?;
        barrier.wait().map_err(e)?;
        let t0 = Instant::now();
        for i in 0..n {
            let got = q.get().map_err(e)?;
            if got != i {
                return Err(format!(
                    "manager_queue: messages lost, duplicated or reordered ({got} for {i})"
                ));
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        child.join().map_err(e)?;
        if rep > 0 {
            rates.push(n as f64 / dt);
        }
    }
    Ok(median(&mut rates))
}

fn manager_queue(o: &Options) -> Result<(), String> {
    let n = o.size(20_000, 2_000) as u64;
    let local = Manager::start().map_err(e)?;
    emit(
        "manager_queue",
        "throughput",
        queue_rate(o, &local, n)?,
        "msgs/s",
    );
    local.shutdown().map_err(e)?;
    let tcp = Manager::serve("127.0.0.1:0", mp::current_process().authkey()).map_err(e)?;
    emit(
        "manager_queue",
        "throughput_tcp",
        queue_rate(o, &tcp, n)?,
        "msgs/s",
    );
    tcp.shutdown().map_err(e)?;
    Ok(())
}
