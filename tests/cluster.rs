//! Cluster pools on MPI (`--features mpi`). This binary is both sides: run by `cargo test` it is
//! the driver, which launches itself with `mpiexec.mpich` (every launch bounded by `timeout`)
//! and checks what the job did and left behind; run with `--rank SCENARIO` under `mpiexec`, it
//! is the program of every rank (rank 0 runs the scenario, the others are node agents through
//! `mp::__private::main`, which is what `#[mp::main]` expands to).
//!
//! One launch on one host checks the local pool's behaviours on a cluster pool (map order, imap
//! laziness, chunking, callbacks, errors per task, a task SIGKILLed on an agent, terminate,
//! close/join, time limits, terminate of a running task, memory limits, initializer,
//! max_tasks_per_child, executor, handles refused, 1 MiB arguments
//! and results, short and long messages mixed in order, what worker processes inherit). Other launches: a job of one rank, a rank with a
//! different registry, a failing `main`, an agent rank SIGKILLed, and a job across three network
//! namespaces joined by a bridge (created and always deleted by the test). After each launch no
//! process of it is left, and `/dev/shm` holds nothing of ours.

use std::collections::HashSet;
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mp::cluster::{Auto, Mpi};

#[path = "common/netns.rs"]
mod netns;
use mp::{Callbacks, Error, Pool, ProcessPoolExecutor};
use netns::Hosts;

const MPIEXEC: &str = "mpiexec.mpich";
/// The bound of one `mpiexec` launch: a hang is a failure, not a stuck CI.
const LAUNCH_LIMIT: u64 = 120;
/// Every blocking wait on rank 0.
const LONG: Duration = Duration::from_secs(60);
/// Marks every process of the launches of this run, to find leftovers.
const MARKER: &str = "MP_CLUSTER_TEST_RUN";

// ---------------------------------------------------------------- workers

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

#[mp::worker]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[mp::worker]
fn fails_on_3(x: u64) -> Result<u64, String> {
    if x == 3 {
        Err(format!("item {x} refused"))
    } else {
        Ok(x)
    }
}

#[mp::worker]
fn panics_on_5(x: u64) -> u64 {
    assert!(x != 5, "item 5 panicked");
    x
}

#[mp::worker]
fn killed_on_7(x: u64) -> u64 {
    if x == 7 {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    x
}

/// Whether this worker process maps the bulk areas its node agent shares for long messages.
#[mp::worker]
fn maps_bulk_areas(_: u64) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .contains("mp-cluster-bulk")
}

#[mp::worker]
fn echo_bytes(b: Vec<u8>) -> Vec<u8> {
    let mut b = b;
    b.reverse();
    b
}

#[mp::worker]
fn takes_connection(c: mp::Connection<u64>) -> u64 {
    c.recv().unwrap_or(0)
}

#[mp::worker]
fn returns_handle() -> mp::Handle {
    let f: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    mp::Handle::from(f)
}

/// The launcher's variables among `vars`.
fn launcher_vars(vars: impl Iterator<Item = String>) -> Vec<String> {
    vars.filter(|k| {
        ["PMI_", "PMIX_", "HYDRA_", "OMPI_", "MPI_LOCAL"]
            .iter()
            .any(|p| k.starts_with(p))
    })
    .collect()
}

/// A worker process's view of itself: pid, variables from an MPI launcher it or its parent (the
/// node agent's fork server, started before MPI) has, and whether it holds its node agent's PMI
/// socket (the descriptor `PMI_FD` names in the agent).
#[mp::worker]
fn inspect(_i: u64) -> (i32, Vec<String>, Result<bool, String>) {
    let mut bad = launcher_vars(std::env::vars().map(|(k, _)| k));
    let parent = nix::unistd::getppid().as_raw();
    if Some(parent) != rank_ancestor() {
        let environ = std::fs::read(format!("/proc/{parent}/environ")).unwrap_or_default();
        let names = environ.split(|b| *b == 0).map(|v| {
            let v = String::from_utf8_lossy(v);
            v.split('=').next().unwrap_or_default().to_owned()
        });
        bad.extend(
            launcher_vars(names)
                .into_iter()
                .map(|v| format!("parent {parent}: {v}")),
        );
    }
    let pmi = (|| {
        let agent = rank_ancestor().ok_or("no ancestor is an MPI rank")?;
        let fd = env_of(agent, "PMI_FD").ok_or("the agent has no PMI_FD")?;
        let socket = std::fs::read_link(format!("/proc/{agent}/fd/{fd}"))
            .map_err(|e| format!("agent {agent} fd {fd}: {e}"))?;
        let mine = std::fs::read_dir("/proc/self/fd").map_err(|e| e.to_string())?;
        Ok(mine
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == socket)))
    })();
    (std::process::id() as i32, bad, pmi)
}

/// The value of variable `name` in process `pid`'s environment.
fn env_of(pid: i32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .find(|v| v.starts_with(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(&v[prefix.len()..]).into_owned())
}

/// The nearest ancestor of this process that is an MPI rank (its node agent).
fn rank_ancestor() -> Option<i32> {
    let mut pid = nix::unistd::getppid().as_raw();
    while pid > 1 {
        if env_of(pid, "PMI_RANK").is_some() {
            return Some(pid);
        }
        pid = parent_of(pid);
    }
    None
}

/// Blocks far longer than any test waits, until its process is killed.
#[mp::worker]
fn blocks() {
    std::thread::sleep(Duration::from_secs(600));
}

/// Allocates and touches `mib` MiB, then frees it.
#[mp::worker]
fn use_mib(mib: usize) -> usize {
    let v = vec![1u8; mib << 20];
    std::hint::black_box(&v).len() >> 20
}

static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[mp::worker]
fn set_tag(tag: String) {
    let _ = TAG.set(tag);
}

#[mp::worker]
fn read_tag() -> String {
    TAG.get().cloned().unwrap_or_default()
}

/// SIGKILLs the node agent this worker runs under.
#[mp::worker]
fn kill_my_agent() -> i32 {
    let agent = rank_ancestor().unwrap_or(0);
    if agent > 1 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    agent
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

/// The address of this worker's network interface (what tells the namespaces apart).
#[mp::worker]
fn where_am_i() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(3)
            .unwrap_or("none")
            .to_owned(),
        Err(_) => "none".into(),
    }
}

// ---------------------------------------------------------------- rank 0's scenarios

/// Collects the checks of one scenario: each prints `ok NAME` or `FAILED NAME: why`.
#[derive(Default)]
struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                println!("FAILED {name}: {why}");
                self.failed += 1;
            }
        }
    }

    fn exit(&self) -> ExitCode {
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        }
    }
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

fn e(err: Error) -> String {
    format!("{err:?}")
}

fn cluster_pool(per_node: usize) -> Result<Pool, String> {
    Pool::builder()
        .backend(Mpi::world())
        .processes_per_node(per_node)
        .build()
        .map_err(e)
}

fn scenario_pool() -> ExitCode {
    let mut c = Checks::default();
    let pool = match cluster_pool(2) {
        Ok(p) => p,
        Err(why) => {
            println!("FAILED build: {why}");
            return ExitCode::from(2);
        }
    };
    c.check(
        "two agents with two workers each",
        ensure(
            pool.processes() == 4 && pool.worker_pids().len() == 4,
            || format!("{pool:?} {:?}", pool.worker_pids()),
        ),
    );
    c.check(
        "map keeps input order",
        (|| {
            let out = pool.map(square, 0..2000u64).map_err(e)?;
            ensure(
                out == (0..2000u64).map(|x| x * x).collect::<Vec<_>>(),
                || "wrong squares".into(),
            )
        })(),
    );
    c.check(
        "map_chunked and starmap",
        (|| {
            let out = pool.map_chunked(square, 0..100u64, 7).map_err(e)?;
            ensure(
                out == (0..100u64).map(|x| x * x).collect::<Vec<_>>(),
                || "wrong squares".into(),
            )?;
            let sums = pool.starmap(add, vec![(1, 2), (3, 4)]).map_err(e)?;
            ensure(sums == vec![3, 7], || format!("{sums:?}"))
        })(),
    );
    c.check(
        "imap is lazy and ordered",
        (|| {
            let pulled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let p2 = pulled.clone();
            let input = (0..1_000_000u64).inspect(move |_| {
                p2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
            let first: Vec<u64> = pool
                .imap(square, input)
                .map_err(e)?
                .take(5)
                .collect::<mp::Result<_>>()
                .map_err(e)?;
            let n = pulled.load(std::sync::atomic::Ordering::SeqCst);
            ensure(first == vec![0, 1, 4, 9, 16] && n < 10_000, || {
                format!("{first:?} after pulling {n} items")
            })
        })(),
    );
    c.check(
        "imap_unordered yields every result",
        (|| {
            let mut got: Vec<u64> = pool
                .imap_unordered(square, 0..500u64)
                .map_err(e)?
                .collect::<mp::Result<_>>()
                .map_err(e)?;
            got.sort();
            ensure(
                got == (0..500u64).map(|x| x * x).collect::<Vec<_>>(),
                || "missing results".into(),
            )
        })(),
    );
    c.check(
        "a failing item fails only itself, also inside a chunk",
        (|| {
            let r: Vec<mp::Result<u64>> = pool
                .imap_chunked(fails_on_3, 0..10u64, 4)
                .map_err(e)?
                .collect();
            let failed: Vec<usize> = (0..10).filter(|i| r[*i].is_err()).collect();
            ensure(failed == vec![3], || format!("{r:?}"))?;
            ensure(
                r[3].as_ref().err().and_then(Error::item_index) == Some(3),
                || format!("{:?}", r[3]),
            )?;
            match pool.map(fails_on_3, 0..10u64) {
                Err(Error::TaskFailed { message, .. }) if message.contains("item 3") => Ok(()),
                other => Err(format!("map: {other:?}")),
            }
        })(),
    );
    c.check(
        "callbacks run on rank 0",
        (|| {
            let (tx, rx) = mpsc::channel();
            let tx2 = tx.clone();
            let ok = pool
                .apply_async_with(
                    square,
                    (4,),
                    Callbacks::new().on_success(move |v| {
                        let _ = tx.send(format!("ok {v}"));
                    }),
                )
                .map_err(e)?;
            let bad = pool
                .apply_async_with(
                    fails_on_3,
                    (3,),
                    Callbacks::new().on_error(move |err| {
                        let _ = tx2.send(format!("err {err}"));
                    }),
                )
                .map_err(e)?;
            ensure(ok.get().map_err(e)? == 16, || "apply_async".into())?;
            ensure(bad.get().is_err(), || "the failing task succeeded".into())?;
            let mut seen = [
                rx.recv_timeout(LONG).map_err(|x| x.to_string())?,
                rx.recv_timeout(LONG).map_err(|x| x.to_string())?,
            ];
            seen.sort();
            ensure(
                seen[0] == "err task failed: item 3 refused" && seen[1] == "ok 16",
                || format!("{seen:?}"),
            )
        })(),
    );
    c.check("errors fail their task only; a SIGKILLed task process is replaced", (|| {
        let before = pool.worker_pids();
        let r: Vec<mp::Result<u64>> = pool.imap(panics_on_5, 0..10u64).map_err(e)?.collect();
        ensure(
            matches!(&r[5], Err(Error::WorkerPanicked { message, .. }) if message.contains("item 5"))
                && r.iter().filter(|x| x.is_ok()).count() == 9,
            || format!("{r:?}"),
        )?;
        let r: Vec<mp::Result<u64>> = pool.imap(killed_on_7, 0..20u64).map_err(e)?.collect();
        ensure(
            matches!(&r[7], Err(Error::WorkerDied { signal: 9, .. }))
                && r.iter().filter(|x| x.is_ok()).count() == 19,
            || format!("{r:?}"),
        )?;
        let after = pool.map(square, 0..100u64).map_err(e)?;
        ensure(after.len() == 100 && pool.processes() == 4, || "pool shrank".into())?;
        let now = pool.worker_pids();
        ensure(now.len() == 4 && now != before, || format!("{before:?} -> {now:?}"))
    })());
    c.check(
        "handles are refused at submit",
        (|| {
            let (a, _b) = mp::Pipe::<u64>::duplex().map_err(e)?;
            match pool.apply_async(takes_connection, (a,)) {
                Err(Error::NotPortable { type_name }) if type_name.contains("Connection") => {}
                other => return Err(format!("apply_async: {:?}", other.map(|_| ()))),
            }
            let (a, _b) = mp::Pipe::<u64>::duplex().map_err(e)?;
            match pool.map(takes_connection, vec![a]) {
                Err(Error::NotPortable { .. }) => {}
                other => return Err(format!("map: {other:?}")),
            }
            let (a, _b) = mp::Pipe::<u64>::duplex().map_err(e)?;
            let first = pool.imap(takes_connection, vec![a]).map_err(e)?.next();
            ensure(
                matches!(first, Some(Err(Error::NotPortable { .. }))),
                || format!("imap: {first:?}"),
            )?;
            match pool.apply(returns_handle, ()) {
                Err(Error::TaskFailed { message, .. })
                    if message.contains("cannot leave its node") => {}
                other => return Err(format!("a result with a handle: {other:?}")),
            }
            ensure(pool.apply(square, (3,)).map_err(e)? == 9, || {
                "pool broken".into()
            })
        })(),
    );
    c.check(
        "1 MiB arguments and results",
        (|| {
            let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
            let mut want = big.clone();
            want.reverse();
            let one = pool.apply(echo_bytes, (big.clone(),)).map_err(e)?;
            ensure(one == want, || "1 MiB came back wrong".into())?;
            let many = pool.map_chunked(echo_bytes, vec![big; 8], 1).map_err(e)?;
            ensure(many.iter().all(|b| *b == want), || {
                "8 × 1 MiB came back wrong".into()
            })?;
            // Short and long messages mixed, both ways and in order: a long job's items and a
            // long answer travel as messages of their own between the short ones, and between
            // an agent and its worker in their shared bulk areas (16 MiB each way), but for one
            // longer than that, which takes the socket.
            let sizes = [
                3usize,
                70_000,
                0,
                65_536,
                65_535,
                200_000,
                1,
                1 << 20,
                17,
                17 << 20,
                64 * 1024 - 9,
            ];
            let inputs: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| (0..n).map(|i| (i * 7 + k) as u8).collect())
                .collect();
            for chunk in [1, 3] {
                let back = pool
                    .map_chunked(echo_bytes, inputs.clone(), chunk)
                    .map_err(e)?;
                for (k, (got, sent)) in back.iter().zip(&inputs).enumerate() {
                    let mut want = sent.clone();
                    want.reverse();
                    ensure(*got == want, || {
                        format!(
                            "item {k} ({} bytes, chunks of {chunk}) came back wrong",
                            sent.len()
                        )
                    })?;
                }
            }
            let mapped = pool.map_chunked(maps_bulk_areas, 0..16u64, 1).map_err(e)?;
            ensure(mapped.contains(&true), || {
                "no worker that ran long jobs maps bulk areas".into()
            })
        })(),
    );
    c.check(
        "worker processes inherit no MPI state and are not rank 0's children",
        (|| {
            let me = std::process::id() as i32;
            let seen = pool.map_chunked(inspect, 0..32u64, 1).map_err(e)?;
            for (pid, bad, pmi) in &seen {
                ensure(bad.is_empty(), || format!("worker {pid} inherited {bad:?}"))?;
                ensure(*pmi == Ok(false), || {
                    format!("worker {pid}: holds the PMI socket: {pmi:?}")
                })?;
                let mut p = *pid;
                while p > 1 {
                    ensure(p != me, || format!("worker {pid} descends from rank 0"))?;
                    p = parent_of(p);
                }
            }
            Ok(())
        })(),
    );
    c.check(
        "wrong options are clear errors",
        (|| {
            let fork = Pool::builder()
                .backend(Mpi::world())
                .start_method(mp::StartMethod::Fork)
                .build();
            ensure(matches!(fork, Err(Error::InvalidArgument { .. })), || {
                format!("{fork:?}")
            })?;
            let sized = Pool::builder().backend(Mpi::world()).processes(3).build();
            ensure(matches!(sized, Err(Error::InvalidArgument { .. })), || {
                format!("{sized:?}")
            })?;
            let zero = Pool::builder()
                .backend(Mpi::world())
                .processes_per_node(0)
                .build();
            ensure(matches!(zero, Err(Error::InvalidArgument { .. })), || {
                format!("{zero:?}")
            })
        })(),
    );
    c.check(
        "initializer, Spawn and max_tasks_per_child",
        (|| {
            let p = Pool::builder()
                .backend(Mpi::world())
                .processes_per_node(1)
                .initializer(set_tag, ("ready".to_string(),))
                .start_method(mp::StartMethod::Spawn)
                .max_tasks_per_child(1)
                .build()
                .map_err(e)?;
            let tags = p.starmap(read_tag, vec![(); 6]).map_err(e)?;
            ensure(tags.iter().all(|t| t == "ready"), || format!("{tags:?}"))?;
            let pids: HashSet<i32> = p
                .map_chunked(inspect, 0..6u64, 1)
                .map_err(e)?
                .into_iter()
                .map(|x| x.0)
                .collect();
            ensure(pids.len() == 6, || format!("{pids:?}"))
        })(),
    );
    c.check(
        "executor on the cluster",
        (|| {
            let ex = ProcessPoolExecutor::builder()
                .backend(Mpi::world())
                .processes_per_node(1)
                .build()
                .map_err(e)?;
            ensure(ex.max_workers() == 2, || format!("{}", ex.max_workers()))?;
            let f = ex.submit(square, (12,)).map_err(e)?;
            ensure(f.result_timeout(LONG).map_err(e)? == 144, || {
                "submit".into()
            })?;
            let v: mp::Result<Vec<u64>> = ex.map(square, 0..50u64).collect();
            ensure(v.map_err(e)?.len() == 50, || "map".into())?;
            ex.shutdown(true, false);
            Ok(())
        })(),
    );
    c.check(
        "time limits, terminate and memory limits kill the worker on its node",
        (|| {
            let p = Pool::builder()
                .backend(Mpi::world())
                .processes_per_node(1)
                .time_limit(Duration::from_secs(30))
                .memory_limit_per_child(2 << 30)
                .build()
                .map_err(e)?;
            let limit = Duration::from_millis(300);
            let quick = p.with_time_limit(limit).map_err(e)?;
            match quick.apply(blocks, ()) {
                Err(Error::TimeLimitExceeded { limit: l, .. }) if l == limit => {}
                other => return Err(format!("time limit: {other:?}")),
            }
            let stuck = p.apply_async(blocks, ()).map_err(e)?;
            ensure(stuck.terminate(), || {
                "terminate did not stop the task".into()
            })?;
            ensure(matches!(stuck.get(), Err(Error::Cancelled)), || {
                "terminate: not Cancelled".into()
            })?;
            match p.map_chunked(use_mib, vec![1, 8192, 2], 1) {
                Err(Error::MemoryLimitExceeded { index: Some(1), .. }) => {}
                other => return Err(format!("memory limit: {other:?}")),
            }
            ensure(p.apply(square, (3,)).map_err(e)? == 9, || {
                "the pool goes on".into()
            })?;
            let grace = Pool::builder()
                .backend(Mpi::world())
                .time_limit(limit)
                .time_limit_grace(limit)
                .build();
            ensure(matches!(grace, Err(Error::InvalidArgument { .. })), || {
                "a grace on a cluster is refused".into()
            })
        })(),
    );
    c.check(
        "close, join and terminate",
        (|| {
            let p = cluster_pool(1)?;
            let stuck: Vec<_> = (0..3)
                .map(|_| p.apply_async(blocks, ()))
                .collect::<mp::Result<_>>()
                .map_err(e)?;
            let t = Instant::now();
            p.terminate();
            ensure(t.elapsed() < LONG, || "terminate took too long".into())?;
            for r in stuck {
                ensure(matches!(r.get(), Err(Error::PoolBroken { .. })), || {
                    "a task survived".into()
                })?;
            }
            pool.close();
            ensure(
                matches!(pool.apply(square, (1,)), Err(Error::InvalidState { .. })),
                || "apply after close".into(),
            )?;
            pool.join().map_err(e)
        })(),
    );
    c.exit()
}

fn scenario_single() -> ExitCode {
    let mut c = Checks::default();
    c.check(
        "one rank is no cluster",
        match cluster_pool(1) {
            Err(why) if why.contains("NoClusterPeers") && why.contains("single rank") => Ok(()),
            other => Err(format!("{:?}", other.map(|_| ()))),
        },
    );
    c.check(
        "Auto falls back to a local pool",
        (|| {
            let p = Pool::builder()
                .backend(Auto)
                .processes(2)
                .build()
                .map_err(e)?;
            ensure(p.processes() == 2, || format!("{p:?}"))?;
            ensure(p.map(square, 0..10u64).map_err(e)?.len() == 10, || {
                "map".into()
            })
        })(),
    );
    c.exit()
}

fn scenario_mismatch() -> ExitCode {
    let mut c = Checks::default();
    c.check(
        "a different registry fails build",
        match cluster_pool(1) {
            Err(why) if why.contains("ClusterMismatch") && why.contains("skewed::extra") => Ok(()),
            other => Err(format!("{:?}", other.map(|_| ()))),
        },
    );
    c.exit()
}

fn scenario_agent_killed() -> ExitCode {
    let pool = match cluster_pool(1) {
        Ok(p) => p,
        Err(why) => {
            println!("FAILED build: {why}");
            return ExitCode::from(2);
        }
    };
    println!("killing agent {:?}", pool.apply(kill_my_agent, ()));
    // The launcher ends the job: this rank is killed while it keeps using the pool.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(LAUNCH_LIMIT) {
        let _ = pool.map(square, 0..100u64);
    }
    println!("rank 0 outlived its agent");
    ExitCode::from(9)
}

fn scenario_namespaces() -> ExitCode {
    let mut c = Checks::default();
    c.check(
        "a pool across three network namespaces",
        (|| {
            let pool = cluster_pool(2)?;
            let out = pool.map(square, 0..1000u64).map_err(e)?;
            ensure(
                out == (0..1000u64).map(|x| x * x).collect::<Vec<_>>(),
                || "squares".into(),
            )?;
            let mine = where_am_i(); // rank 0's own address, for comparison
            let places: HashSet<String> = pool
                .starmap(where_am_i, vec![(); 16])
                .map_err(e)?
                .into_iter()
                .collect();
            ensure(places.len() == 2 && !places.contains(&mine), || {
                format!("rank 0 at {mine}, workers at {places:?}")
            })?;
            let r: Vec<mp::Result<u64>> = pool.imap(killed_on_7, 0..20u64).map_err(e)?.collect();
            ensure(
                matches!(&r[7], Err(Error::WorkerDied { signal: 9, .. })),
                || format!("{r:?}"),
            )?;
            let big: Vec<u8> = vec![7; 1 << 20];
            ensure(
                pool.apply(echo_bytes, (big,)).map_err(e)?.len() == 1 << 20,
                || "1 MiB".into(),
            )
        })(),
    );
    c.exit()
}

fn rank_main(scenario: &str) -> ExitCode {
    match scenario {
        "pool" => scenario_pool(),
        "single" => scenario_single(),
        "mismatch" => scenario_mismatch(),
        "agent-killed" => scenario_agent_killed(),
        "namespaces" => scenario_namespaces(),
        "exit-code" => ExitCode::from(3),
        "panic" => panic!("rank 0's main panics (expected by the test)"),
        other => {
            println!("FAILED unknown scenario {other}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------- the driver

/// What one launch did.
struct Launch {
    code: Option<i32>,
    output: String,
    elapsed: Duration,
}

fn marker() -> String {
    format!("{}", std::process::id())
}

/// Runs `prefix… mpiexec.mpich args…` under `timeout`, with this run's marker.
fn launch(prefix: &[&str], args: &[String], env: &[(&str, &str)]) -> Launch {
    let t = Instant::now();
    let mut words: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    words.extend(["timeout", "-k", "5", &LAUNCH_LIMIT.to_string(), MPIEXEC].map(String::from));
    words.extend(args.iter().cloned());
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]).env(MARKER, marker());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run timeout/mpiexec");
    Launch {
        code: out.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        elapsed: t.elapsed(),
    }
}

fn exe() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn rank_args(n: usize, scenario: &str) -> Vec<String> {
    vec![
        "-n".into(),
        n.to_string(),
        exe(),
        "--rank".into(),
        scenario.into(),
    ]
}

/// Processes of this run's launches still alive (zombies count: nobody reaped them).
fn leftovers() -> Vec<String> {
    let needle = format!("{MARKER}={}", marker());
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{name}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            let cmd = std::fs::read_to_string(format!("/proc/{name}/cmdline")).unwrap_or_default();
            found.push(format!("{name} {}", cmd.replace('\0', " ")));
        }
    }
    found
}

fn shm_entries() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("mp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The launch's processes are all gone within a few seconds (the launcher may still be killing
/// them when `mpiexec` returns), and it left nothing in /dev/shm.
fn nothing_left(shm_before: &HashSet<String>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = leftovers();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("processes left behind: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let new: Vec<String> = shm_entries().difference(shm_before).cloned().collect();
    ensure(new.is_empty(), || {
        format!("/dev/shm entries left behind: {new:?}")
    })
}

fn expect_success(l: &Launch) -> Result<(), String> {
    ensure(l.code == Some(0) && !l.output.contains("FAILED"), || {
        format!("exit {:?} after {:?}:\n{}", l.code, l.elapsed, l.output)
    })
}

fn test_outside_mpi() -> Result<(), String> {
    match Pool::builder()
        .backend(Mpi::world())
        .processes_per_node(1)
        .build()
    {
        Err(Error::NoClusterPeers { hint }) if hint.contains("mpiexec") => {}
        other => return Err(format!("pool: {:?}", other.map(|_| ()))),
    }
    match ProcessPoolExecutor::builder().backend(Mpi::world()).build() {
        Err(Error::NoClusterPeers { .. }) => {}
        other => return Err(format!("executor: {:?}", other.map(|_| ()))),
    }
    let p = Pool::builder()
        .backend(Auto)
        .processes(2)
        .processes_per_node(7)
        .build()
        .map_err(e)?;
    ensure(p.processes() == 2, || format!("{p:?}"))?;
    ensure(
        p.map(square, 0..10u64).map_err(e)? == (0..10u64).map(|x| x * x).collect::<Vec<_>>(),
        || "map".into(),
    )?;
    // Locally, handles still travel: only a cluster pool refuses them.
    let (a, b) = mp::Pipe::<u64>::duplex().map_err(e)?;
    b.send(&5).map_err(e)?;
    ensure(p.apply(takes_connection, (a,)).map_err(e)? == 5, || {
        "local handle".into()
    })
}

fn test_pool_on_three_ranks(shm: &HashSet<String>) -> Result<(), String> {
    let l = launch(&[], &rank_args(3, "pool"), &[]);
    print!("{}", indent(&l.output));
    expect_success(&l)?;
    nothing_left(shm)
}

fn test_single_rank(shm: &HashSet<String>) -> Result<(), String> {
    let l = launch(&[], &rank_args(1, "single"), &[]);
    expect_success(&l)?;
    nothing_left(shm)
}

fn test_without_mp_main(shm: &HashSet<String>) -> Result<(), String> {
    let args: Vec<String> = ["-n", "2", &exe(), "--plain"].map(String::from).to_vec();
    let l = launch(&[], &args, &[]);
    expect_success(&l)?;
    nothing_left(shm)
}

fn test_mismatch(shm: &HashSet<String>) -> Result<(), String> {
    let mut args = rank_args(1, "mismatch");
    args.push(":".into());
    args.extend(rank_args(2, "mismatch"));
    args.push("--skew".into());
    let l = launch(&[], &args, &[]);
    expect_success(&l)?;
    nothing_left(shm)
}

fn test_exit_code(shm: &HashSet<String>) -> Result<(), String> {
    let l = launch(&[], &rank_args(3, "exit-code"), &[]);
    ensure(l.code == Some(3), || {
        format!("exit {:?}:\n{}", l.code, l.output)
    })?;
    nothing_left(shm)
}

fn test_agent_killed(shm: &HashSet<String>) -> Result<(), String> {
    let l = launch(&[], &rank_args(3, "agent-killed"), &[]);
    ensure(
        l.code.is_some_and(|c| c != 0 && c != 124 && c != 137)
            && l.elapsed < Duration::from_secs(30)
            && !l.output.contains("outlived"),
        || format!("exit {:?} after {:?}:\n{}", l.code, l.elapsed, l.output),
    )?;
    nothing_left(shm)
}

fn test_namespaces(shm: &HashSet<String>) -> Result<(), String> {
    let mut hosts = Hosts::create()?;
    let mut args = hosts.mpiexec_args()?;
    args.extend(rank_args(3, "namespaces"));
    // Launch, PMI and the launcher's control traffic go over TCP through the bridge. MPI's own
    // messages take whatever UCX picks: its TCP transport hangs in MPI_Finalize in the UCX of
    // Debian 12 (1.13, openucx/ucx#8738), so it is not forced; the namespaces share /dev/shm.
    let ns1 = hosts.ns(1);
    let l = launch(&["ip", "netns", "exec", &ns1], &args, &[]);
    print!("{}", indent(&l.output));
    drop(hosts);
    expect_success(&l)?;
    nothing_left(shm)
}

/// This process's open descriptors and what they are.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let target = std::fs::read_link(e.path()).ok()?;
                    // The directory being read is itself open while it is listed.
                    (!target.starts_with("/proc")).then(|| {
                        format!("{}={}", e.file_name().to_string_lossy(), target.display())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn driver() -> ExitCode {
    if Command::new(MPIEXEC).arg("--version").output().is_err() {
        println!("{MPIEXEC} is not installed (apt-get install mpich libmpich-dev)");
        println!("0 passed, 1 failed");
        return ExitCode::FAILURE;
    }
    let shm = shm_entries();
    type Test = fn(&HashSet<String>) -> Result<(), String>;
    let tests: &[(&str, Test)] = &[
        ("outside_mpi_is_no_cluster_peers_and_auto_is_local", |_| {
            test_outside_mpi()
        }),
        ("pool_behaviours_on_three_ranks", test_pool_on_three_ranks),
        ("single_rank_is_no_cluster_peers", test_single_rank),
        (
            "rank_without_mp_main_is_told_to_add_it",
            test_without_mp_main,
        ),
        ("mismatched_registry_fails_build", test_mismatch),
        ("agents_exit_with_rank_0s_code_or_panic", test_exit_code),
        ("sigkilled_agent_rank_ends_the_job", test_agent_killed),
        ("pool_across_network_namespaces", test_namespaces),
    ];
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    let mut fds_before = None;
    for (name, test) in tests {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        if fds_before.is_none() && *name != "outside_mpi_is_no_cluster_peers_and_auto_is_local" {
            // After the local pool's test, whose fork server stays: the launches open nothing
            // that outlives them.
            fds_before = Some(open_fds());
        }
        let t = Instant::now();
        match test(&shm) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", t.elapsed());
            }
            Err(why) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1?})\n{why}", t.elapsed());
            }
        }
    }
    if let Some(before) = fds_before {
        let after = open_fds();
        if after == before {
            passed += 1;
            println!("test no_descriptors_left_by_the_launches ... ok");
        } else {
            failed += 1;
            println!(
                "test no_descriptors_left_by_the_launches ... FAILED\n{before:?} -> {after:?}"
            );
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--plain") {
        // Every rank runs this `main`, which is not `#[mp::main]`: no rank is an agent.
        return match cluster_pool(1) {
            Err(why) if why.contains("NoClusterPeers") && why.contains("#[mp::main]") => {
                ExitCode::SUCCESS
            }
            other => {
                println!("FAILED without #[mp::main]: {:?}", other.map(|_| ()));
                ExitCode::from(2)
            }
        };
    }
    match args.iter().position(|a| a == "--rank") {
        Some(i) => {
            let scenario = args.get(i + 1).cloned().unwrap_or_default();
            if args.iter().any(|a| a == "--skew") {
                mp::__private::cluster_skew_registry("skewed::extra: fn() -> ()");
            }
            mp::__private::main(move || rank_main(&scenario))
        }
        None => driver(),
    }
}
