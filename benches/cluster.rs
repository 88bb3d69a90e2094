//! Cluster pools against the local pool and against `mpi4py.futures`, side by side in one run,
//! printed as the same JSON lines as the other scenarios (`--features mpi`).
//!
//! ```text
//! cargo bench --features mpi --bench cluster                # full sizes
//! cargo bench --features mpi --bench cluster -- --quick     # smoke run
//! cargo bench --features mpi --bench cluster -- --only cluster_dispatch
//! ```
//!
//! The driver measures a local pool of 2 processes itself, then launches this binary with
//! `mpiexec.mpich -n 3` on this host (rank 0 and two node agents of one worker each: the same 2
//! workers), then across three network namespaces (one rank per namespace; needs root), then the
//! Python mirror `benches/python/cluster.py` under `python3 -m mpi4py.futures` on the same MPICH
//! (if mpi4py imports). Metrics are prefixed `local_`, `mpi_`, `mpi_netns_` and `mpi4py_`;
//! `cluster_targets` prints the ratios the targets are stated in.
//!
//! Scenarios: `cluster_dispatch` (a trivial worker mapped at chunk 1, 16 and 256: items/s),
//! `cluster_latency` (one `apply` round trip at a time: p50 and p99), `cluster_scaling` (tasks of
//! about 1 ms of CPU: tasks/s and the fraction of the workers' ideal rate), `cluster_payload`
//! (1 MiB arguments and results: one round trip, and MiB/s both ways with both workers busy),
//! `cluster_idle` (CPU of an idle node agent and of rank 0, as % of one core).

use std::process::Command;
use std::time::{Duration, Instant};

use mp::Pool;
use mp::cluster::Mpi;

#[path = "scenarios/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../tests/common/netns.rs"]
mod netns;

use common::{Options, median};

thread_local! {
    /// Every line this process printed, for the target ratios.
    static PRINTED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Prints one result line (as `common::emit`) and keeps it.
fn emit(scenario: &str, metric: &str, value: f64, unit: &str) {
    common::emit(scenario, metric, value, unit);
    PRINTED.with(|p| {
        p.borrow_mut().push(format!(
            "{{\"scenario\": \"{scenario}\", \"metric\": \"{metric}\", \"value\": {value}, \"unit\": \"{unit}\"}}"
        ))
    });
}

/// Workers in every configuration: one per core of a 2-core machine.
const WORKERS: usize = 2;

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

/// `iters` steps of a 31-bit LCG (the scenarios' `cpu_task`).
#[mp::worker]
fn cpu_task(seed: u64, iters: u64) -> u64 {
    let mut x = seed;
    for _ in 0..iters {
        x = (x.wrapping_mul(1_103_515_245).wrapping_add(12_345)) & 0x7FFF_FFFF;
    }
    x
}

#[mp::worker]
fn echo(b: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    b
}

/// The pid of the node agent this worker runs under (its nearest ancestor that is an MPI rank).
#[mp::worker]
fn my_agent() -> i32 {
    let mut pid = std::os::unix::process::parent_id() as i32;
    while pid > 1 {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"PMI_RANK="))
        {
            return pid;
        }
        pid = parent_of(pid);
    }
    0
}

fn parent_of(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1).and_then(|p| p.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn e(err: mp::Error) -> String {
    err.to_string()
}

/// The measurements of one configuration, metrics prefixed with `prefix`.
fn measure(prefix: &str, pool: &Pool, o: &Options) -> Result<(), String> {
    let _ = pool.map(square, 0..1000u64).map_err(e)?;
    if o.selected("cluster_dispatch") {
        for (chunk, full, quick) in [
            (1, 20_000, 4_000),
            (16, 200_000, 40_000),
            (256, 2_000_000, 400_000),
        ] {
            let n = o.size(full, quick) as u64;
            let mut rates = Vec::new();
            for _ in 0..o.reps {
                let t = Instant::now();
                let out = pool.map_chunked(square, 0..n, chunk).map_err(e)?;
                rates.push(n as f64 / t.elapsed().as_secs_f64());
                if out.len() as u64 != n || out[3] != 9 {
                    return Err("map returned wrong squares".into());
                }
            }
            emit(
                "cluster_dispatch",
                &format!("{prefix}_chunk_{chunk}"),
                median(&mut rates),
                "items/s",
            );
        }
    }
    if o.selected("cluster_latency") {
        let rounds = o.size(4_000, 500);
        let mut rtts = Vec::with_capacity(rounds);
        for i in 0..(rounds + 100) as u64 {
            let t = Instant::now();
            let v = pool.apply(square, (i,)).map_err(e)?;
            if i >= 100 {
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
            if v != i * i {
                return Err("apply returned a wrong square".into());
            }
        }
        rtts.sort_by(|a, b| a.total_cmp(b));
        let p99 = rtts[(rtts.len() * 99 / 100).min(rtts.len() - 1)];
        emit(
            "cluster_latency",
            &format!("{prefix}_p50"),
            median(&mut rtts),
            "us",
        );
        emit("cluster_latency", &format!("{prefix}_p99"), p99, "us");
    }
    if o.selected("cluster_scaling") {
        let iters = iters_per_ms();
        let n = o.size(800, 200) as u64;
        let mut rates = Vec::new();
        for _ in 0..o.reps {
            let t = Instant::now();
            pool.starmap_async_with(
                cpu_task,
                (0..n).map(|s| (s, iters)),
                Some(1),
                Default::default(),
            )
            .and_then(|r| r.get())
            .map_err(e)?;
            rates.push(n as f64 / t.elapsed().as_secs_f64());
        }
        let rate = median(&mut rates);
        emit(
            "cluster_scaling",
            &format!("{prefix}_1ms_tasks"),
            rate,
            "tasks/s",
        );
        emit(
            "cluster_scaling",
            &format!("{prefix}_efficiency"),
            rate / (WORKERS as f64 * 1000.0),
            "fraction",
        );
    }
    if o.selected("cluster_payload") {
        let mib = serde_bytes::ByteBuf::from(vec![0x5a; 1 << 20]);
        let rounds = o.size(200, 40);
        let mut ms = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let back = pool.apply(echo, (mib.clone(),)).map_err(e)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if back.len() != 1 << 20 {
                return Err("1 MiB came back cut".into());
            }
        }
        emit(
            "cluster_payload",
            &format!("{prefix}_1mib_round_trip"),
            median(&mut ms),
            "ms",
        );
        let n = o.size(256, 64);
        let mut rates = Vec::new();
        for _ in 0..o.reps {
            // Built before the clock starts, as the mirror's list of one object n times is.
            let input = vec![mib.clone(); n];
            let t = Instant::now();
            pool.map_chunked(echo, input, 1).map_err(e)?;
            rates.push(2.0 * n as f64 / t.elapsed().as_secs_f64());
        }
        emit(
            "cluster_payload",
            &format!("{prefix}_1mib_both_ways"),
            median(&mut rates),
            "MiB/s",
        );
    }
    Ok(())
}

/// LCG steps that take about 1 ms here (calibrated in this process).
fn iters_per_ms() -> u64 {
    let probe = 2_000_000u64;
    let t = Instant::now();
    std::hint::black_box(cpu_task(1, std::hint::black_box(probe)));
    let ns = t.elapsed().as_nanos().max(1) as u64;
    (probe * 1_000_000 / ns).max(1)
}

/// CPU of an idle node agent and of rank 0 while a pool sits idle, as % of one core.
fn measure_idle(prefix: &str, pool: &Pool, o: &Options) -> Result<(), String> {
    if !o.selected("cluster_idle") {
        return Ok(());
    }
    let mut agents: Vec<i32> = pool.starmap(my_agent, vec![(); 32]).map_err(e)?;
    agents.sort();
    agents.dedup();
    agents.retain(|p| *p > 1);
    let window = Duration::from_secs(o.size(10, 3) as u64);
    let before: Vec<f64> = agents.iter().map(|p| cpu_seconds(&p.to_string())).collect();
    let me = cpu_seconds("self");
    let t = Instant::now();
    // The measurement itself: the pool sits idle for the window.
    std::thread::sleep(window);
    let idle = t.elapsed().as_secs_f64();
    let per_agent: Vec<f64> = agents
        .iter()
        .zip(&before)
        .map(|(p, b)| (cpu_seconds(&p.to_string()) - b) / idle * 100.0)
        .collect();
    let worst = per_agent.iter().copied().fold(0.0, f64::max);
    emit(
        "cluster_idle",
        &format!("{prefix}_agent_cpu"),
        worst,
        "% of a core",
    );
    emit(
        "cluster_idle",
        &format!("{prefix}_rank0_cpu"),
        (cpu_seconds("self") - me) / idle * 100.0,
        "% of a core",
    );
    Ok(())
}

/// Rank 0 of an MPI launch: the measurements on a cluster pool with 2 workers in all.
fn rank_main(prefix: String) {
    let o = Options::from_args();
    let result = Pool::builder()
        .backend(Mpi::world())
        .processes_per_node(1)
        .build()
        .map_err(e)
        .and_then(|pool| {
            if pool.processes() != WORKERS {
                return Err(format!(
                    "{} workers, not {WORKERS}: launch 3 ranks",
                    pool.processes()
                ));
            }
            measure(&prefix, &pool, &o)?;
            measure_idle(&prefix, &pool, &o)
        });
    if let Err(why) = result {
        eprintln!("cluster bench on MPI failed: {why}");
        std::process::exit(1);
    }
}

/// Runs a launch, forwards its JSON lines to stdout and returns them.
fn run(cmd: &mut Command, what: &str) -> Vec<String> {
    match cmd.output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(str::to_owned)
                .collect();
            for l in &lines {
                println!("{l}");
            }
            if !out.status.success() {
                eprintln!(
                    "{what} failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            lines
        }
        Err(err) => {
            eprintln!("{what} could not start: {err}");
            Vec::new()
        }
    }
}

fn value(lines: &[String], metric: &str) -> Option<f64> {
    common::metric_value(lines.iter().map(String::as_str), metric)
}

fn mpiexec_rank(extra: &[String], prefix: &str, forwarded: &[String]) -> Command {
    let exe = std::env::current_exe().expect("this binary");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "900", "mpiexec.mpich"])
        .args(extra)
        .args(["-n", "3"])
        .arg(exe)
        .args(["--rank", prefix])
        .args(forwarded);
    cmd
}

fn driver() {
    let o = Options::from_args();
    let forwarded: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    eprintln!("{}", common::header(&o));
    let mut lines = Vec::new();
    let local = Pool::new(WORKERS).expect("a local pool");
    if let Err(why) = measure("local", &local, &o) {
        eprintln!("local pool failed: {why}");
    }
    drop(local);
    lines.extend(run(
        &mut mpiexec_rank(&[], "mpi", &forwarded),
        "MPI on one host",
    ));
    match netns::Hosts::create() {
        Ok(mut hosts) => match hosts.mpiexec_args() {
            Ok(args) => {
                let inner = mpiexec_rank(&args, "mpi_netns", &forwarded);
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &hosts.ns(1)])
                    .arg(inner.get_program())
                    .args(inner.get_args());
                lines.extend(run(&mut cmd, "MPI across namespaces"));
            }
            Err(why) => eprintln!("namespaces: {why}"),
        },
        Err(why) => eprintln!("no network namespaces (run as root): {why}"),
    }
    let mirror = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/cluster.py");
    let has_mpi4py = Command::new("python3")
        .args(["-c", "import mpi4py.futures"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_mpi4py {
        let mut cmd = Command::new("timeout");
        cmd.args([
            "-k",
            "5",
            "900",
            "mpiexec.mpich",
            "-n",
            "3",
            "python3",
            "-m",
            "mpi4py.futures",
        ])
        .arg(mirror)
        .args(&forwarded);
        lines.extend(run(&mut cmd, "mpi4py.futures"));
    } else {
        eprintln!(
            "mpi4py is not installed: MPICC=mpicc.mpich pip install --no-binary=mpi4py mpi4py"
        );
    }
    // The targets, from this run's figures.
    lines.extend(PRINTED.with(|p| p.borrow().clone()));
    if let (Some(m), Some(l)) = (
        value(&lines, "mpi_chunk_16"),
        value(&lines, "local_chunk_16"),
    ) {
        emit("cluster_targets", "mpi_vs_local_chunk_16", m / l, "x");
    }
    if let (Some(m), Some(p)) = (
        value(&lines, "mpi_chunk_16"),
        value(&lines, "mpi4py_chunk_16"),
    ) {
        emit("cluster_targets", "mpi_vs_mpi4py_chunk_16", m / p, "x");
    }
}

#[mp::main]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--rank") {
        Some(i) => rank_main(args.get(i + 1).cloned().unwrap_or_else(|| "mpi".into())),
        None => driver(),
    }
}
