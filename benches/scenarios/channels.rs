//! Channel scenarios of bench.py: `queue_small` (§5), `queue_small_mpmc` (§5b), `queue_large`
//! (§6), `pipe_pingpong` (§7), `pipe_bandwidth` (§8) and `joinable_queue` (§14), with raw
//! baselines measured in the same run (`raw_*` metrics: a plain shared-memory ring between two
//! processes, a socketpair ping-pong, a socket byte stream). The Python side of
//! `queue_small_mpmc` is also in `benches/python/queue_small_mpmc.py`; `pipe_pingpong_pairs` is
//! ours alone, its Python side in `benches/python/pipe_pingpong_pairs.py`.
//!
//! Mirroring notes: Python's `Barrier` that starts the timed region is a pipe handshake here (the
//! child says ready, the parent starts the clock and says go); "small int" messages are `u64`;
//! the 1 MiB payloads are `serde_bytes::ByteBuf` items (queue) and raw byte messages (pipe).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use mp::{Connection, JoinableQueue, Pipe, Queue};

use crate::common::{Options, Scenario, emit, median, metric_value, quantile_99, raw_echo_rtts};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "queue_small",
            run: queue_small,
        },
        Scenario {
            name: "queue_small_mpmc",
            run: queue_small_mpmc,
        },
        Scenario {
            name: "queue_large",
            run: queue_large,
        },
        Scenario {
            name: "pipe_pingpong",
            run: pipe_pingpong,
        },
        Scenario {
            name: "pipe_pingpong_pairs",
            run: pipe_pingpong_pairs,
        },
        Scenario {
            name: "pipe_bandwidth",
            run: pipe_bandwidth,
        },
        Scenario {
            name: "joinable_queue",
            run: joinable_queue,
        },
    ]
}

fn e(err: mp::Error) -> String {
    err.to_string()
}

#[mp::worker]
fn small_producer(q: Queue<u64>, gate: Connection<u8>, n: u64) {
    gate.send(&1).unwrap();
    gate.recv().unwrap();
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn queue_small(o: &Options) -> Result<(), String> {
    let n = o.size(200_000, 50_000) as u64;
    let q = Queue::<u64>::new().map_err(e)?;
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let (gate, child_gate) = Pipe::<u8>::duplex().map_err(e)?;
        let mut p = mp::Process::new(small_producer, (q.clone(), child_gate, n));
        p.start().map_err(e)?;
        gate.recv().map_err(e)?;
        let t = Instant::now();
        gate.send(&1).map_err(e)?;
        for i in 0..n {
            let v = q.get().map_err(e)?;
            if v != i {
                return Err(format!("expected {i}, got {v}"));
            }
        }
        let dt = t.elapsed().as_secs_f64();
        p.join().map_err(e)?;
        if rep > 0 {
            samples.push(n as f64 / dt);
        }
    }
    emit("queue_small", "throughput", median(&mut samples), "msgs/s");
    let mut raw = Vec::new();
    for rep in 0..=o.reps {
        let rate = raw_spsc_ring(n)?;
        if rep > 0 {
            raw.push(rate);
        }
    }
    emit("queue_small", "raw_spsc_ring", median(&mut raw), "msgs/s");
    Ok(())
}

/// The hardware's figure for `queue_small`: `n` u64s through a plain single-producer,
/// single-consumer ring of 4,096 slots in shared memory, from a forked child to this process.
/// Each side keeps its own index on a cache line of its own and reads the other's only when its
/// cached copy says empty (or full); waiting is pure spinning (with a yield now and then, in
/// case both processes share a CPU). Nothing here survives a crash or sleeps: it is the ceiling.
fn raw_spsc_ring(n: u64) -> Result<f64, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    const SLOTS: usize = 4096;
    #[repr(C, align(64))]
    struct Index(AtomicU64);
    #[repr(C)]
    struct Ring {
        head: Index,
        tail: Index,
        slots: [AtomicU64; SLOTS],
    }
    let size = std::mem::size_of::<Ring>();
    // SAFETY: a fresh anonymous shared mapping, zero-filled (a valid `Ring`: atomics only),
    // unmapped below after the child is reaped.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err("mmap failed".into());
    }
    // SAFETY: the mapping is `size` bytes, page-aligned, and holds a zeroed `Ring`.
    let ring = unsafe { &*(ptr as *const Ring) };
    let wait = |spins: &mut u32| {
        *spins += 1;
        if spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    };
    let (mut gate, mut child_gate) = UnixStream::pair().map_err(|x| x.to_string())?;
    // SAFETY: the child only spins on the shared ring, reads one byte and `_exit`s.
    let child = match unsafe { nix::unistd::fork() }.map_err(|x| x.to_string())? {
        nix::unistd::ForkResult::Child => {
            let mut go = [0u8; 1];
            let _ = child_gate.read_exact(&mut go);
            let (mut tail, mut head_seen, mut spins) = (0u64, 0u64, 0u32);
            while tail < n {
                while tail - head_seen == SLOTS as u64 {
                    head_seen = ring.head.0.load(Ordering::Acquire);
                    wait(&mut spins);
                }
                ring.slots[tail as usize % SLOTS].store(tail, Ordering::Relaxed);
                tail += 1;
                ring.tail.0.store(tail, Ordering::Release);
            }
            // SAFETY: `_exit` ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let t = Instant::now();
    gate.write_all(&[1]).map_err(|x| x.to_string())?;
    let (mut head, mut tail_seen, mut spins, mut bad) = (0u64, 0u64, 0u32, None);
    while head < n {
        while head == tail_seen {
            tail_seen = ring.tail.0.load(Ordering::Acquire);
            wait(&mut spins);
        }
        let v = ring.slots[head as usize % SLOTS].load(Ordering::Relaxed);
        if v != head && bad.is_none() {
            bad = Some((head, v));
        }
        head += 1;
        ring.head.0.store(head, Ordering::Release);
    }
    let dt = t.elapsed().as_secs_f64();
    let _ = nix::sys::wait::waitpid(child, None);
    // SAFETY: the child is gone and `ring` is not used past this point.
    unsafe { libc::munmap(ptr, size) };
    match bad {
        Some((i, v)) => Err(format!("raw ring: slot {i} held {v}")),
        None => Ok(n as f64 / dt),
    }
}

#[mp::worker]
fn mpmc_producer(q: Queue<Option<u64>>, barrier: mp::Barrier, from: u64, to: u64) {
    barrier.wait().unwrap();
    for i in from..to {
        q.put(Some(i)).unwrap();
    }
    q.put(None).unwrap();
}

#[mp::worker]
fn mpmc_consumer(q: Queue<Option<u64>>, results: Queue<(u64, u64, u64)>, barrier: mp::Barrier) {
    barrier.wait().unwrap();
    let (mut count, mut sum, mut xor) = (0, 0, 0);
    while let Some(v) = q.get().unwrap() {
        count += 1;
        sum += v;
        xor ^= v;
    }
    results.put((count, sum, xor)).unwrap();
}

/// §5b: 4 producers put a quarter of the ints each, then `None`; 4 consumers take until their
/// first `None` and report (count, sum, xor). Timed from the barrier to the 4th report.
fn queue_small_mpmc(o: &Options) -> Result<(), String> {
    let (n, k) = (o.size(200_000, 40_000) as u64, 4u64);
    let per = n / k;
    let expect_xor = (0..k * per).fold(0, |x, i| x ^ i);
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let q = Queue::<Option<u64>>::new().map_err(e)?;
        let results = Queue::<(u64, u64, u64)>::new().map_err(e)?;
        let barrier = mp::Barrier::new(2 * k as u32 + 1).map_err(e)?;
        let mut children = Vec::new();
        for i in 0..k {
            let args = (q.clone(), barrier.clone(), i * per, (i + 1) * per);
            let mut p = mp::Process::new(mpmc_producer, args);
            p.start().map_err(e)?;
            children.push(p);
        }
        for _ in 0..k {
            let args = (q.clone(), results.clone(), barrier.clone());
            let mut p = mp::Process::new(mpmc_consumer, args);
            p.start().map_err(e)?;
            children.push(p);
        }
        barrier.wait().map_err(e)?;
        let t = Instant::now();
        let mut got = Vec::new();
        for _ in 0..k {
            got.push(results.get().map_err(e)?);
        }
        let dt = t.elapsed().as_secs_f64();
        for mut p in children {
            p.join().map_err(e)?;
        }
        let count: u64 = got.iter().map(|g| g.0).sum();
        let sum: u64 = got.iter().map(|g| g.1).sum();
        let xor = got.iter().fold(0, |x, g| x ^ g.2);
        if count != k * per || sum != k * per * (k * per - 1) / 2 || xor != expect_xor {
            return Err(format!("consumers saw {got:?}, expected {} items", k * per));
        }
        if rep > 0 {
            samples.push((k * per) as f64 / dt);
        }
    }
    emit(
        "queue_small_mpmc",
        "throughput",
        median(&mut samples),
        "msgs/s",
    );
    Ok(())
}

/// Byte buffers travel as one serde `bytes` value (`serde_bytes`), not as a sequence of `u8`.
type Bytes = serde_bytes::ByteBuf;

#[mp::worker]
fn large_producer(q: Queue<Bytes>, gate: Connection<u8>, n: u32) {
    let item = Bytes::from((0..1 << 20).map(|i| (i % 256) as u8).collect::<Vec<u8>>());
    gate.send(&1).unwrap();
    gate.recv().unwrap();
    for _ in 0..n {
        q.put(item.clone()).unwrap();
    }
}

fn queue_large(o: &Options) -> Result<(), String> {
    let n = o.size(2_000, 200) as u32;
    let q = Queue::<Bytes>::new().map_err(e)?;
    let expected: Vec<u8> = (0..1 << 20).map(|i| (i % 256) as u8).collect();
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let (gate, child_gate) = Pipe::<u8>::duplex().map_err(e)?;
        let mut p = mp::Process::new(large_producer, (q.clone(), child_gate, n));
        p.start().map_err(e)?;
        gate.recv().map_err(e)?;
        let t = Instant::now();
        gate.send(&1).map_err(e)?;
        let mut last = Vec::new();
        for _ in 0..n {
            let m = q.get().map_err(e)?;
            if m.len() != 1 << 20
                || m[..16] != expected[..16]
                || m[m.len() - 16..] != expected[expected.len() - 16..]
            {
                return Err("corrupt 1 MiB item".into());
            }
            last = m.into_vec();
        }
        let dt = t.elapsed().as_secs_f64();
        if last != expected {
            return Err("last item differs".into());
        }
        p.join().map_err(e)?;
        if rep > 0 {
            samples.push(f64::from(n) * (1u64 << 20) as f64 / dt / 1e6);
        }
    }
    emit("queue_large", "throughput", median(&mut samples), "MB/s");
    raw_stream(o, "queue_large")
}

#[mp::worker]
fn echo_u64(conn: Connection<u64>) {
    while let Ok(v) = conn.recv() {
        if v == u64::MAX {
            break;
        }
        conn.send(&v).unwrap();
    }
}

fn pipe_pingpong(o: &Options) -> Result<(), String> {
    let n = o.size(20_000, 5_000);
    let (a, b) = Pipe::<u64>::duplex().map_err(e)?;
    let mut p = mp::Process::new(echo_u64, (b,));
    p.start().map_err(e)?;
    for i in 0..1000 {
        a.send(&i).map_err(e)?;
        a.recv().map_err(e)?;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        a.send(&i).map_err(e)?;
        let r = a.recv().map_err(e)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        if r != i {
            return Err(format!("echo {r} for {i}"));
        }
    }
    a.send(&u64::MAX).map_err(e)?;
    p.join().map_err(e)?;
    let p99 = quantile_99(&mut samples.clone());
    emit("pipe_pingpong", "rtt_median", median(&mut samples), "us");
    emit("pipe_pingpong", "rtt_p99", p99, "us");

    // Raw baseline: 8-byte messages over a socketpair with a forked echo child.
    let mut raw = raw_echo_rtts(1000, n)?;
    emit("pipe_pingpong", "raw_rtt_median", median(&mut raw), "us");
    Ok(())
}

/// Ping-pong pairs running at once in `pipe_pingpong_pairs`.
const PAIRS: usize = 8;
/// The flag with which `pipe_pingpong_pairs` runs this binary again for one measured round
/// (with or without `MP_SPIN=0`); with [`PAIRS_IDLE`] too, the round is followed by the idle
/// figure.
const PAIRS_CHILD: &str = "--pairs-child";
const PAIRS_IDLE: &str = "--pairs-idle";

/// One side of a ping-pong pair: at each `1` on `gate`, `n` round trips with an `echo_u64`
/// child, then `n` back on `gate`; anything else ends it (and its echo).
#[mp::worker]
fn pinger(conn: Connection<u64>, gate: Connection<u64>, n: u64) {
    while let Ok(1) = gate.recv() {
        for i in 0..n {
            conn.send(&i).unwrap();
            assert_eq!(conn.recv().unwrap(), i);
        }
        gate.send(&n).unwrap();
    }
    conn.send(&u64::MAX).unwrap();
}

/// `pipe_pingpong_pairs`: 8 ping-pong pairs (16 processes) at once on the machine's CPUs; total
/// round trips per second, with the spin before sleeping (`total_rate`) and with `MP_SPIN=0`
/// (`total_rate_no_spin`). Each repetition runs this binary twice, once each way, alternating
/// which goes first; each run times one round right after an untimed one. (Both sides run in
/// fresh processes alike: timing one side in this process and the other in a child measured
/// this process's side 10–25% slower even with spinning off on both.) Then, in the last run
/// with spinning, with all 16 processes blocked in `recv` for 10 ms, the CPU they use over the
/// next second, read from `/proc/<pid>/stat`, per process (`idle_recv_cpu`, % of one core).
fn pipe_pingpong_pairs(o: &Options) -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == PAIRS_CHILD) {
        return pairs_round(o, args.iter().any(|a| a == PAIRS_IDLE));
    }
    let mut rates = Vec::new();
    let mut no_spin = Vec::new();
    let mut idle = None;
    for rep in 0..o.reps {
        let last = rep + 1 == o.reps;
        for spin in if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            let figures = pairs_child(o, spin, spin && last)?;
            let rate = figure(&figures, "child_rate")?;
            if spin {
                rates.push(rate);
                if last {
                    idle = Some(figure(&figures, "idle_recv_cpu")?);
                }
            } else {
                no_spin.push(rate);
            }
        }
    }
    let unit = "round trips/s";
    emit(
        "pipe_pingpong_pairs",
        "total_rate",
        median(&mut rates),
        unit,
    );
    emit(
        "pipe_pingpong_pairs",
        "total_rate_no_spin",
        median(&mut no_spin),
        unit,
    );
    if let Some(idle) = idle {
        emit("pipe_pingpong_pairs", "idle_recv_cpu", idle, "% of a core");
    }
    Ok(())
}

/// A child run of `pipe_pingpong_pairs`: the 16 processes, an untimed round, a timed one
/// (`child_rate`), and with `idle` the CPU they use while blocked (`idle_recv_cpu`).
fn pairs_round(o: &Options, idle: bool) -> Result<(), String> {
    let n = o.size(10_000, 1_000) as u64;
    let mut gates = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..PAIRS {
        let (a, b) = Pipe::<u64>::duplex().map_err(e)?;
        let (gate, child_gate) = Pipe::<u64>::duplex().map_err(e)?;
        let mut echo = mp::Process::new(echo_u64, (b,));
        echo.start().map_err(e)?;
        let mut ping = mp::Process::new(pinger, (a, child_gate, n));
        ping.start().map_err(e)?;
        procs.push(echo);
        procs.push(ping);
        gates.push(gate);
    }
    let round = || -> Result<f64, String> {
        let t = Instant::now();
        for g in &gates {
            g.send(&1).map_err(e)?;
        }
        for g in &gates {
            if g.recv().map_err(e)? != n {
                return Err("a pinger did not finish its round trips".into());
            }
        }
        Ok((PAIRS as u64 * n) as f64 / t.elapsed().as_secs_f64())
    };
    round()?;
    emit(
        "pipe_pingpong_pairs",
        "child_rate",
        round()?,
        "round trips/s",
    );
    if idle {
        // Every child now waits in `recv` (an echo for its pinger, a pinger for its gate).
        std::thread::sleep(std::time::Duration::from_millis(10));
        let pids: Vec<i32> = procs.iter().filter_map(|p| p.pid()).collect();
        let before: Vec<u64> = pids
            .iter()
            .map(|&p| cpu_ticks(p))
            .collect::<Result<_, _>>()?;
        let window = Instant::now();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let after: Vec<u64> = pids
            .iter()
            .map(|&p| cpu_ticks(p))
            .collect::<Result<_, _>>()?;
        let secs = window.elapsed().as_secs_f64() * pids.len() as f64;
        let used: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        emit(
            "pipe_pingpong_pairs",
            "idle_recv_cpu",
            used as f64 / ticks_per_second() / secs * 100.0,
            "% of a core",
        );
    }
    for g in &gates {
        g.send(&0).map_err(e)?;
    }
    for p in &mut procs {
        p.join().map_err(e)?;
    }
    Ok(())
}

/// Runs this binary again for one round of `pipe_pingpong_pairs`, with spinning or with
/// `MP_SPIN=0` (read once per process, inherited by its children); the lines it printed.
fn pairs_child(o: &Options, spin: bool, idle: bool) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|x| x.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--only", "pipe_pingpong_pairs", PAIRS_CHILD]);
    if idle {
        cmd.arg(PAIRS_IDLE);
    }
    if o.quick {
        cmd.arg("--quick");
    }
    if spin {
        cmd.env_remove("MP_SPIN");
    } else {
        cmd.env("MP_SPIN", "0");
    }
    let out = cmd.output().map_err(|x| x.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "a run of pipe_pingpong_pairs failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of metric `metric` in the result lines `figures` of a child run.
fn figure(figures: &str, metric: &str) -> Result<f64, String> {
    metric_value(figures.lines(), metric)
        .ok_or_else(|| format!("a run of pipe_pingpong_pairs printed no {metric}: {figures}"))
}

/// `utime + stime` of process `pid` in clock ticks (proc_pid_stat(5), fields 14 and 15, counted
/// after the command name, which may hold spaces).
fn cpu_ticks(pid: i32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|x| x.to_string())?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
    match (next(), next()) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(format!("unexpected /proc/{pid}/stat")),
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf(3) takes a constant and touches no memory of ours.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

#[mp::worker]
fn chunk_sender(conn: Connection<()>, chunks: u64) {
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(cmd) = conn.recv_bytes() {
        if cmd != b"go" {
            break;
        }
        for i in 0..chunks {
            let len = buf.len();
            buf[..8].copy_from_slice(&i.to_le_bytes());
            buf[len - 8..].copy_from_slice(&i.to_le_bytes());
            conn.send_bytes(&buf).unwrap();
        }
    }
}

fn pipe_bandwidth(o: &Options) -> Result<(), String> {
    let chunks = 64u64;
    let (a, b) = Pipe::<()>::duplex().map_err(e)?;
    let mut p = mp::Process::new(chunk_sender, (b, chunks));
    p.start().map_err(e)?;
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let t = Instant::now();
        a.send_bytes(b"go").map_err(e)?;
        for i in 0..chunks {
            let m = a.recv_bytes().map_err(e)?;
            let n = m.len();
            if n != 1 << 20 || m[..8] != i.to_le_bytes() || m[n - 8..] != i.to_le_bytes() {
                return Err(format!("chunk {i} corrupt"));
            }
        }
        let dt = t.elapsed().as_secs_f64();
        if rep > 0 {
            samples.push((chunks << 20) as f64 / dt / 1e6);
        }
    }
    a.send_bytes(b"stop").map_err(e)?;
    p.join().map_err(e)?;
    emit("pipe_bandwidth", "throughput", median(&mut samples), "MB/s");
    raw_stream(o, "pipe_bandwidth")
}

/// 64 MiB through a socketpair in 1 MiB writes, read into one reused buffer: what the kernel
/// allows for a byte stream between two processes.
fn raw_stream(o: &Options, scenario: &str) -> Result<(), String> {
    let total = 64u64 << 20;
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let (mut x, mut y) = UnixStream::pair().map_err(|e| e.to_string())?;
        // SAFETY: the child only writes its socket and calls `_exit`.
        match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
            nix::unistd::ForkResult::Child => {
                drop(x);
                let buf = vec![7u8; 1 << 20];
                for _ in 0..64 {
                    if y.write_all(&buf).is_err() {
                        break;
                    }
                }
                // SAFETY: `_exit` is always safe; it never returns.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(y);
                let t = Instant::now();
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0u64;
                while got < total {
                    let n = x.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                let dt = t.elapsed().as_secs_f64();
                let _ = nix::sys::wait::waitpid(child, None);
                if rep > 0 {
                    samples.push(got as f64 / dt / 1e6);
                }
            }
        }
    }
    emit(scenario, "raw_stream", median(&mut samples), "MB/s");
    Ok(())
}

#[mp::worker]
fn joinable_consumer(
    q: JoinableQueue<Option<u64>>,
    results: Queue<(u64, u64)>,
    gate: Connection<u8>,
) {
    gate.send(&1).unwrap();
    let (mut n, mut sum) = (0, 0);
    loop {
        let item = q.get().unwrap();
        q.task_done().unwrap();
        match item {
            Some(v) => {
                n += 1;
                sum += v;
            }
            None => break,
        }
    }
    results.put((n, sum)).unwrap();
}

fn joinable_queue(o: &Options) -> Result<(), String> {
    let n = o.size(50_000, 10_000) as u64;
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let q = JoinableQueue::<Option<u64>>::new().map_err(e)?;
        let results = Queue::<(u64, u64)>::new().map_err(e)?;
        let mut consumers = Vec::new();
        for _ in 0..2 {
            let (gate, child_gate) = Pipe::<u8>::duplex().map_err(e)?;
            let mut p =
                mp::Process::new(joinable_consumer, (q.clone(), results.clone(), child_gate));
            p.start().map_err(e)?;
            gate.recv().map_err(e)?;
            consumers.push(p);
        }
        let t = Instant::now();
        for i in 0..n {
            q.put(Some(i)).map_err(e)?;
        }
        q.join().map_err(e)?;
        let dt = t.elapsed().as_secs_f64();
        for _ in 0..2 {
            q.put(None).map_err(e)?;
        }
        let (mut count, mut sum) = (0, 0);
        for _ in 0..2 {
            let (c, s) = results.get().map_err(e)?;
            count += c;
            sum += s;
        }
        for mut p in consumers {
            p.join().map_err(e)?;
        }
        if count != n || sum != n * (n - 1) / 2 {
            return Err(format!("consumers saw {count} items summing to {sum}"));
        }
        if rep > 0 {
            samples.push(n as f64 / dt);
        }
    }
    emit(
        "joinable_queue",
        "throughput",
        median(&mut samples),
        "items/s",
    );
    Ok(())
}
