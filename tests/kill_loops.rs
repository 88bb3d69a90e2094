//! SIGKILL at random points, in loops: the holders of a `Condition`'s lock, a pool's workers in
//! the middle of a map, the fork server between starts, and processes that leaked shared memory
//! segments (with their resource tracker killed too, half of the time). After each kill the
//! survivors go on: the lock is taken again, the map completes or fails only the killed task,
//! the starts and joins complete, and no segment is left in `/dev/shm`. (The queue's loops are
//! in `queue.rs`.)
//!
//! The number of iterations is `MP_KILL_LOOPS` (default 10, which `cargo test` runs in a few
//! seconds; `.ci/run` raises it). The random pauses choose *where* a kill lands; nothing waits
//! on them for correctness, and every blocking call is bounded.

mod common;

use std::time::Duration;

use common::*;
use mp::StartMethod;

/// How many iterations each loop runs.
fn iterations() -> usize {
    std::env::var("MP_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn random() -> u64 {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A pause of up to `max_us` microseconds: where the next kill lands.
fn somewhere(max_us: u64) {
    std::thread::sleep(Duration::from_micros(random() % max_us));
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[mp::worker]
fn cond_holder(cond: mp::Condition, counter: mp::Value<u64>) {
    loop {
        let mut g = match cond.acquire() {
            Ok(g) => g,
            Err(mp::Error::OwnerDied) => cond.acquire().unwrap(),
            Err(e) => panic!("{e}"),
        };
        counter.set(counter.get().unwrap() + 1).unwrap();
        g.notify_all();
        let _ = g.wait_timeout(Duration::from_millis(1));
    }
}

/// Two processes take a condition's lock, notify and wait, in a loop, until killed at a random
/// point: the survivor always gets the lock (at most once with `OwnerDied`) and can wait and
/// notify.
#[test]
fn condition_holders_killed_anywhere() {
    let _g = shared();
    for it in 0..iterations() {
        let cond = mp::Condition::new().unwrap();
        let counter = mp::Value::new(0u64).unwrap();
        let mut holders: Vec<_> = (0..2)
            .map(|_| {
                started(mp::Process::new(
                    cond_holder,
                    (cond.clone(), counter.clone()),
                ))
            })
            .collect();
        somewhere(20_000);
        for h in &holders {
            h.kill().unwrap();
        }
        for h in &mut holders {
            assert!(h.join_timeout(LONG), "iteration {it}: a holder did not die");
        }
        let mut g = match cond.acquire_timeout(LONG) {
            Ok(Some(g)) => g,
            Ok(None) => panic!("iteration {it}: the lock stayed held after its holders died"),
            Err(mp::Error::OwnerDied) => cond
                .acquire_timeout(LONG)
                .unwrap()
                .expect("the lock is free after OwnerDied"),
            Err(e) => panic!("iteration {it}: {e}"),
        };
        let _ = g.wait_timeout(Duration::from_millis(1)).unwrap();
        g.notify_all();
    }
}

#[mp::worker]
fn slow_square(x: u64) -> u64 {
    // Tasks of a few milliseconds, so that kills land inside them.
    let until = std::time::Instant::now() + Duration::from_millis(x % 7);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    x * x
}

/// A worker of a pool is killed at a random point of a map: the map completes, or fails with
/// `WorkerDied`, never hangs; the pool keeps its size and serves the next map.
#[test]
fn pool_workers_killed_anywhere() {
    let _g = shared();
    let pool = mp::Pool::new(3).unwrap();
    let expected: Vec<u64> = (0..40u64).map(|x| x * x).collect();
    for it in 0..iterations() {
        let r = pool.map_async(slow_square, 0..40u64).unwrap();
        somewhere(30_000);
        let pids = pool.worker_pids();
        if !pids.is_empty() {
            kill(pids[(random() % pids.len() as u64) as usize]);
        }
        match r.get_timeout(LONG) {
            Ok(v) => assert_eq!(v, expected, "iteration {it}"),
            Err(mp::Error::WorkerDied { .. }) => {}
            Err(e) => panic!("iteration {it}: {e}"),
        }
        assert_eq!(pool.apply(slow_square, (3,)).unwrap(), 9, "iteration {it}");
    }
    assert!(eventually(LONG, || pool.worker_pids().len() == 3));
    pool.close();
    pool.join().unwrap();
}

#[mp::worker]
fn ident(x: u64) -> u64 {
    x
}

/// The fork server is killed between starts: a start either works or fails with an error, and
/// every started child is joined with its result (or its unknown status).
#[test]
fn forkserver_killed_between_starts() {
    let _g = shared();
    let ctx = mp::get_context(StartMethod::ForkServer);
    let mut ok = 0;
    for it in 0..iterations() {
        let mut started_now = Vec::new();
        for j in 0..3u64 {
            let mut p = ctx.process(ident, (j,));
            if p.start().is_ok() {
                started_now.push((j, p));
            }
            if j == 1
                && random().is_multiple_of(2)
                && let Some(pid) = mp::forkserver::server_pid()
            {
                kill(pid);
            }
        }
        for (j, mut p) in started_now {
            assert!(p.join_timeout(LONG), "iteration {it}: a join hung");
            if let Ok(v) = p.join() {
                assert_eq!(v, j);
                ok += 1;
            }
        }
    }
    // Most starts succeed: a kill costs at most the children in flight.
    assert!(ok >= iterations(), "only {ok} children ran");
    let mut p = started(ctx.process(ident, (7,)));
    assert_eq!(join(&mut p).unwrap(), 7);
}

/// Creates `n` named segments and leaks them (only the resource tracker can unlink them), with
/// the tracker killed halfway when asked; then says so and waits to be killed.
#[mp::worker]
fn leak_segments(n: u64, kill_tracker: bool, ready: mp::Connection<()>) {
    for i in 0..n {
        let s = mp::shared_memory::SharedMemory::create(4096).unwrap();
        if kill_tracker
            && i == n / 2
            && let Some(pid) = mp::__private::resource_tracker_pid()
        {
            kill(pid);
            // Dead (a zombie of ours) before the next registration, which must notice.
            assert!(eventually(LONG, || pid_gone(pid)));
        }
        std::mem::forget(s);
    }
    ready.send(&()).unwrap();
    let _ = ready.recv();
}

fn our_segments() -> usize {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mp-"))
        .count()
}

/// Processes that leaked segments are killed, anywhere while creating them or once done, half
/// of them after their tracker was killed too: the (restarted) tracker unlinks everything. (A
/// process killed between its tracker's death and its next registration would leave its earlier
/// segments behind, with nothing left to unlink them; the test kills a tracker only on purpose,
/// and then lets the next registration notice.)
#[test]
fn leaked_segments_are_unlinked_after_kills() {
    let _g = shared();
    let before = our_segments();
    for it in 0..iterations() {
        let (ours, theirs) = mp::Pipe::<()>::duplex().unwrap();
        let mut p = started(
            mp::get_context(StartMethod::Spawn)
                .process(leak_segments, (6, it.is_multiple_of(2), theirs)),
        );
        if random().is_multiple_of(2) {
            // Killed once every segment exists (and, when the tracker was killed, after the
            // next segment's registration started a new one).
            ours.recv_timeout(LONG).unwrap();
        } else if it % 2 == 1 {
            // Killed anywhere while creating (the tracker alive): generated names are
            // registered before the segment exists, so no moment leaks one.
            somewhere(20_000);
        }
        p.kill().unwrap();
        assert!(
            p.join_timeout(LONG),
            "iteration {it}: the leaker did not die"
        );
    }
    assert!(
        eventually(LONG, || our_segments() <= before),
        "{} segments left in /dev/shm",
        our_segments() - before
    );
}
