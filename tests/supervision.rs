//! Supervision of pool and executor tasks: time limits that kill the worker running an item
//! past its limit (and only that item fails), per pool and per call, with a grace period and a
//! deadline the worker can read; bad settings refused when the pool is built.

mod common;

use std::time::Duration;

use common::*;
use mp::{Error, Pool, ProcessPoolExecutor};
use serde::{Deserialize, Serialize};

const HOUR: Duration = Duration::from_secs(3600);

/// Hangs (sleeps for an hour) on `target`, else returns `x`.
#[mp::worker]
fn hang_on(x: u64, target: u64) -> u64 {
    if x == target {
        std::thread::sleep(HOUR);
    }
    x
}

#[mp::worker]
fn hang_item(x: u64) -> u64 {
    if x == 2 {
        std::thread::sleep(HOUR);
    }
    x * 10
}

#[mp::worker]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Blocks reading a pipe whose writer never writes.
#[mp::worker]
fn block_on_read(c: mp::Connection<u8>) -> u8 {
    c.recv().unwrap_or(0)
}

/// Ignores SIGTERM, then hangs.
#[mp::worker]
fn ignore_term_and_hang() -> u8 {
    // SAFETY: setting a disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    std::thread::sleep(HOUR);
    0
}

#[mp::worker]
fn my_deadline_left() -> Option<Duration> {
    mp::task_deadline().map(|d| d.saturating_duration_since(std::time::Instant::now()))
}

/// Decoding 7 takes an hour.
#[derive(Debug, Serialize)]
struct SlowDecode(u8);

impl<'de> Deserialize<'de> for SlowDecode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u8::deserialize(d)?;
        if v == 7 {
            std::thread::sleep(HOUR);
        }
        Ok(SlowDecode(v))
    }
}

#[mp::worker]
fn takes_slow(x: SlowDecode) -> u8 {
    x.0
}

fn timed_pool(ctx: &mp::Context, n: usize, limit: Duration) -> Pool {
    Pool::builder()
        .processes(n)
        .context(*ctx)
        .time_limit(limit)
        .build()
        .unwrap()
}

fn expect_time_limit(e: &Error, limit: Duration, index: Option<usize>) -> i32 {
    match e {
        Error::TimeLimitExceeded {
            limit: l,
            elapsed,
            pid,
            index: i,
        } => {
            assert_eq!(*l, limit);
            assert!(*elapsed >= limit, "{elapsed:?}");
            assert_eq!(*i, index);
            *pid
        }
        other => panic!("expected a time limit, got {other:?}"),
    }
}

for_each_method!(
    a_hung_item_fails_alone_and_its_worker_is_replaced,
    |ctx: mp::Context| {
        let limit = Duration::from_millis(300);
        let p = timed_pool(&ctx, 2, limit);
        // A chunk of 4 whose item 2 hangs: only that item fails; the others of its chunk run again
        // elsewhere and keep their results.
        let r: Vec<_> = p.imap_chunked(hang_item, 0..8u64, 4).unwrap().collect();
        for (i, x) in r.iter().enumerate() {
            if i == 2 {
                let pid = expect_time_limit(x.as_ref().unwrap_err(), limit, Some(2));
                assert!(eventually(LONG, || pid_gone(pid)), "worker {pid} is gone");
                assert!(!p.worker_pids().contains(&pid));
            } else {
                assert_eq!(*x.as_ref().unwrap(), i as u64 * 10);
            }
        }
        // One item per task, unordered; and a whole map returns the first error.
        let r: Vec<_> = p
            .imap_unordered(hang_item, 0..5u64)
            .unwrap()
            .collect::<Vec<_>>();
        assert_eq!(r.iter().filter(|x| x.is_err()).count(), 1);
        let err = p.map_chunked(hang_item, 0..6u64, 3).unwrap_err();
        expect_time_limit(&err, limit, Some(2));
        assert!(eventually(LONG, || p.worker_pids().len() == 2));
        assert_eq!(p.apply(sleep_ms, (1,)).unwrap(), 1, "the pool goes on");
        p.close();
        p.join().unwrap();
    }
);

for_each_method!(a_call_sets_its_own_limit, |ctx: mp::Context| {
    let p = Pool::builder().processes(1).context(ctx).build().unwrap();
    let limit = Duration::from_millis(200);
    let quick = p.with_time_limit(limit).unwrap();
    // A worker blocked forever on a pipe read.
    let (keep, theirs) = mp::Pipe::<u8>::duplex().unwrap();
    let r = quick.apply_async(block_on_read, (theirs,)).unwrap();
    expect_time_limit(&r.get_timeout(LONG).unwrap_err(), limit, None);
    drop(keep);
    // Without the view, no limit applies.
    assert_eq!(p.apply(sleep_ms, (400,)).unwrap(), 400);
    // A limit hit while the item's arguments decode.
    let err = quick.apply(takes_slow, (SlowDecode(7),)).unwrap_err();
    expect_time_limit(&err, limit, None);
    assert_eq!(quick.apply(takes_slow, (SlowDecode(8),)).unwrap(), 8);
    drop(quick);
    assert_eq!(
        p.apply(sleep_ms, (1,)).unwrap(),
        1,
        "dropping a view keeps the pool"
    );
});

#[test]
fn time_queued_does_not_count() {
    let _g = shared();
    // One worker, four tasks of 400 ms under a limit of 1.5 s: together they take longer than
    // the limit, each alone does not.
    let p = Pool::builder()
        .processes(1)
        .time_limit(Duration::from_millis(1500))
        .build()
        .unwrap();
    let r = p.map_chunked(sleep_ms, vec![400; 4], 1).unwrap();
    assert_eq!(r, vec![400; 4]);
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_after_its_grace() {
    let _g = shared();
    let limit = Duration::from_millis(200);
    let p = Pool::builder()
        .processes(1)
        .time_limit(limit)
        .time_limit_grace(Duration::from_millis(200))
        .build()
        .unwrap();
    let before = p.worker_pids();
    let err = p.apply(ignore_term_and_hang, ()).unwrap_err();
    let pid = expect_time_limit(&err, limit, None);
    assert_eq!(before, vec![pid]);
    assert!(pid_gone(pid) || eventually(LONG, || pid_gone(pid)));
    assert_eq!(p.apply(sleep_ms, (1,)).unwrap(), 1);
}

#[test]
fn a_worker_reads_its_deadline() {
    let _g = shared();
    let p = Pool::builder()
        .processes(1)
        .time_limit(Duration::from_secs(600))
        .build()
        .unwrap();
    let left = p.apply(my_deadline_left, ()).unwrap().expect("a deadline");
    assert!(
        left > Duration::from_secs(60) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    let plain = Pool::new(1).unwrap();
    assert_eq!(plain.apply(my_deadline_left, ()).unwrap(), None);
    assert_eq!(mp::task_deadline(), None);
}

#[test]
fn bad_limits_are_refused_when_the_pool_is_built() {
    let _g = shared();
    let e = Pool::builder()
        .time_limit(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = Pool::builder()
        .time_limit(Duration::from_secs(1))
        .time_limit_grace(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let p = Pool::new(1).unwrap();
    assert!(matches!(
        p.with_time_limit(Duration::ZERO),
        Err(Error::InvalidArgument { .. })
    ));
    let e = ProcessPoolExecutor::builder()
        .time_limit(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn executor_calls_past_their_limit_fail_alone() {
    let _g = shared();
    let limit = Duration::from_millis(250);
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let f = ex.submit_with_time_limit(hang_on, (1, 1), limit).unwrap();
    let g = ex.submit(hang_on, (2, 0)).unwrap();
    expect_time_limit(&f.result_timeout(LONG).unwrap_err(), limit, None);
    assert_eq!(g.result_timeout(LONG).unwrap(), 2);
    let r: Vec<_> = ex.map(hang_item, 0..5u64).time_limit(limit).collect();
    for (i, x) in r.iter().enumerate() {
        match i {
            2 => {
                expect_time_limit(x.as_ref().unwrap_err(), limit, Some(2));
            }
            _ => assert_eq!(*x.as_ref().unwrap(), i as u64 * 10),
        }
    }
    ex.shutdown(true, false);
}

// ---- Stopping a running task -----------------------------------------------------------------

#[mp::worker]
fn my_pid() -> u32 {
    std::process::id()
}

/// Says it started, then hangs.
#[mp::worker]
fn started_then_hang(c: mp::Connection<u32>) -> u8 {
    let _ = c.send(&std::process::id());
    std::thread::sleep(HOUR);
    0
}

for_each_method!(
    terminate_stops_a_running_task_and_only_it,
    |ctx: mp::Context| {
        let p = Pool::builder().processes(1).context(ctx).build().unwrap();
        let (ours, theirs) = mp::Pipe::<u32>::duplex().unwrap();
        let hung = p.apply_async(started_then_hang, (theirs,)).unwrap();
        // Sent ahead to the same worker, behind the hung task.
        let next = p.apply_async(sleep_ms, (1,)).unwrap();
        let worker = ours.recv_timeout(LONG).unwrap() as i32;
        assert!(hung.terminate());
        assert!(matches!(hung.get_timeout(LONG), Err(Error::Cancelled)));
        assert_eq!(
            next.get_timeout(LONG).unwrap(),
            1,
            "the other task runs elsewhere"
        );
        assert!(
            eventually(LONG, || pid_gone(worker)),
            "the worker was killed"
        );
        assert!(eventually(LONG, || p.worker_pids().len() == 1));
        // A finished task is not terminated: its result stands.
        let done = p.apply_async(sleep_ms, (1,)).unwrap();
        assert!(done.wait_timeout(LONG));
        assert!(!done.terminate());
        assert_eq!(done.get().unwrap(), 1);
        p.close();
        p.join().unwrap();
    }
);

/// A task sent ahead to a busy worker is cancelled at once; the task the worker runs finishes,
/// and the worker is killed only when it reaches the cancelled one.
#[test]
fn terminating_a_task_sent_ahead_spares_the_one_running() {
    let _g = shared();
    let p = Pool::new(1).unwrap();
    let first = p.apply_async(sleep_ms, (300,)).unwrap();
    let second = p.apply_async(hang_on, (1, 1)).unwrap();
    assert!(second.terminate());
    assert_eq!(first.get_timeout(LONG).unwrap(), 300);
    assert!(matches!(second.get_timeout(LONG), Err(Error::Cancelled)));
    assert!(p.apply(my_pid, ()).unwrap() > 0);
}

/// Terminate racing the task's own end: exactly one outcome, the one `terminate` reports.
#[test]
fn terminate_racing_completion_has_exactly_one_outcome() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let (mut stopped, mut finished) = (0, 0);
    for i in 0..60u64 {
        let r = p.apply_async(sleep_ms, (i % 4,)).unwrap();
        std::thread::sleep(Duration::from_micros(i * 50));
        if r.terminate() {
            assert!(
                matches!(r.get_timeout(LONG), Err(Error::Cancelled)),
                "round {i}"
            );
            stopped += 1;
        } else {
            assert_eq!(r.get_timeout(LONG).unwrap(), i % 4, "round {i}");
            finished += 1;
        }
    }
    assert_eq!(stopped + finished, 60);
    assert_eq!(p.apply(sleep_ms, (1,)).unwrap(), 1);
}

#[test]
fn terminate_stops_every_task_of_a_map() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let r = p
        .map_async_with(hang_item, 0..8u64, Some(2), mp::Callbacks::new())
        .unwrap();
    assert!(r.terminate());
    assert!(matches!(r.get_timeout(LONG), Err(Error::Cancelled)));
    assert_eq!(p.map(sleep_ms, [1, 1]).unwrap(), vec![1, 1]);
}

#[test]
fn executor_terminate_stops_a_running_call_and_cancel_keeps_pythons_meaning() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let f = ex.submit(hang_on, (1, 1)).unwrap();
    assert!(eventually(LONG, || f.running()));
    assert!(!f.cancel(), "cancel() does not stop a running call");
    assert!(f.terminate());
    assert!(f.cancelled() && f.done());
    assert!(matches!(f.result_timeout(LONG), Err(Error::Cancelled)));
    assert_eq!(
        ex.submit(hang_on, (2, 0))
            .unwrap()
            .result_timeout(LONG)
            .unwrap(),
        2
    );
    ex.shutdown(true, false);
}

// ---- Restart intensity --------------------------------------------------------------------------

#[mp::worker]
fn abort_now() {
    std::process::abort();
}

#[mp::worker]
fn abort_on(x: u64) -> u64 {
    if x == 0 {
        std::process::abort();
    }
    x
}

for_each_method!(
    an_initializer_that_aborts_breaks_the_pool_instead_of_looping,
    |ctx: mp::Context| {
        let p = Pool::builder()
            .processes(2)
            .context(ctx)
            .initializer(abort_now, ())
            .restart_intensity(3, Duration::from_secs(600))
            .build()
            .unwrap();
        // The first tasks fail with their workers; once the fourth worker died, every task fails
        // with the reason.
        let broken = (0..50).find_map(|_| match p.apply(sleep_ms, (1,)) {
            Err(Error::PoolBroken { message }) => Some(message),
            Err(Error::WorkerDied { .. }) => None,
            other => panic!("unexpected {other:?}"),
        });
        let message = broken.expect("the pool broke");
        assert!(message.contains("restart_intensity"), "{message}");
        assert!(
            eventually(LONG, || p.worker_pids().is_empty()),
            "no worker is started again"
        );
        assert!(matches!(
            p.apply(sleep_ms, (1,)),
            Err(Error::PoolBroken { .. })
        ));
    }
);

#[test]
fn poison_items_count_against_the_intensity_and_kills_on_purpose_do_not() {
    let _g = shared();
    let p = Pool::builder()
        .processes(1)
        .time_limit(Duration::from_millis(100))
        .restart_intensity(2, Duration::from_secs(600))
        .build()
        .unwrap();
    // Time limits and terminate kill workers on purpose: not counted.
    for _ in 0..3 {
        assert!(matches!(
            p.apply(hang_on, (1, 1)),
            Err(Error::TimeLimitExceeded { .. })
        ));
        assert!(p.apply_async(hang_on, (1, 1)).unwrap().terminate());
    }
    // Two items that abort are replaced; the third breaks the pool.
    for _ in 0..2 {
        assert!(matches!(
            p.apply(abort_on, (0,)),
            Err(Error::WorkerDied { .. })
        ));
        assert_eq!(p.apply(abort_on, (5,)).unwrap(), 5);
    }
    assert!(matches!(
        p.apply(abort_on, (0,)),
        Err(Error::WorkerDied { .. })
    ));
    assert!(matches!(
        p.apply(abort_on, (5,)),
        Err(Error::PoolBroken { .. })
    ));
}

// ---- Memory -------------------------------------------------------------------------------------

/// This process's `VmData` (or `VmRSS`) in bytes.
fn own_memory(key: &str) -> u64 {
    proc_status_bytes("self", key).expect("/proc/self/status lists it")
}

/// Allocates and touches `mib` MiB and keeps it (a leak); returns this worker's pid.
#[mp::worker]
fn leak_mib(mib: usize) -> u32 {
    let v = vec![1u8; mib << 20];
    std::hint::black_box(&v);
    std::mem::forget(v);
    std::process::id()
}

/// Allocates and touches `mib` MiB, one MiB at a time (a worker that grows in a loop), then
/// frees it.
#[mp::worker]
fn use_mib(mib: usize) -> usize {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        held.push(vec![1u8; 1 << 20]);
    }
    std::hint::black_box(&held).len()
}

/// A pool of one worker that retires above this process's resident memory plus `headroom`; a
/// retirement is not a death, so the tight restart intensity would catch a worker that died.
fn one_worker_with_memory_headroom(ctx: mp::Context, headroom: u64) -> Pool {
    Pool::builder()
        .processes(1)
        .context(ctx)
        .max_memory_per_child(own_memory("VmRSS") + headroom)
        .restart_intensity(1, Duration::from_secs(600))
        .build()
        .unwrap()
}

for_each_method!(
    a_worker_above_max_memory_is_replaced_after_its_task,
    |ctx: mp::Context| {
        let p = one_worker_with_memory_headroom(ctx, 128 << 20);
        let small = p.apply(leak_mib, (1,)).unwrap();
        assert_eq!(
            p.apply(leak_mib, (1,)).unwrap(),
            small,
            "under the limit, the worker stays"
        );
        for _ in 0..3 {
            // Every task succeeds; the worker that went over is replaced (not counted as a death).
            let big = p.apply(leak_mib, (256,)).unwrap();
            assert!(
                eventually(LONG, || pid_gone(big as i32)),
                "worker {big} retired"
            );
            assert_ne!(p.apply(leak_mib, (0,)).unwrap(), big);
        }
    }
);

/// Allocates and touches `mib` MiB one MiB at a time, keeps a small block allocated after them
/// (so that freeing them leaves a hole the allocator cannot trim from the top of its heap),
/// frees the rest, and returns this worker's pid.
#[mp::worker]
fn free_below_a_pin(mib: usize) -> u32 {
    let held: Vec<Vec<u8>> = (0..mib).map(|_| vec![1u8; 1 << 20]).collect();
    let pin = vec![2u8; 256 << 10];
    std::hint::black_box(&held);
    drop(held);
    std::mem::forget(std::hint::black_box(pin));
    std::process::id()
}

for_each_method!(
    memory_a_task_freed_does_not_retire_its_worker,
    |ctx: mp::Context| {
        let p = one_worker_with_memory_headroom(ctx, 128 << 20);
        let first = p.apply(free_below_a_pin, (256,)).unwrap();
        // The allocator kept the freed 256 MiB for reuse; the limit counts memory in use.
        assert_eq!(p.apply(free_below_a_pin, (256,)).unwrap(), first);
        assert_eq!(p.apply(leak_mib, (0,)).unwrap(), first, "the worker stays");
    }
);

for_each_method!(
    an_allocation_past_the_hard_limit_fails_only_its_item,
    |ctx: mp::Context| {
        let hard = own_memory("VmData") + (256 << 20);
        let p = Pool::builder()
            .processes(2)
            .context(ctx)
            .memory_limit_per_child(hard)
            .build()
            .unwrap();
        let sizes = [1usize, 2048, 2, 8];
        let r: Vec<_> = p.imap(use_mib, sizes).unwrap().collect();
        for (i, x) in r.iter().enumerate() {
            if i == 1 {
                match x {
                    Err(e @ Error::MemoryLimitExceeded { limit, index, .. }) => {
                        assert_eq!((*limit, *index), (hard, Some(1)));
                        assert_eq!(e.item_index(), Some(1));
                    }
                    other => panic!("expected a memory limit, got {other:?}"),
                }
            } else {
                assert_eq!(*x.as_ref().unwrap(), sizes[i]);
            }
        }
        assert_eq!(p.apply(use_mib, (64,)).unwrap(), 64, "the pool goes on");
    }
);

#[test]
fn bad_supervision_settings_are_refused_when_the_pool_is_built() {
    let _g = shared();
    let refused = |b: mp::PoolBuilder| match b.build() {
        Err(Error::InvalidArgument { message }) => message,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let m = refused(Pool::builder().restart_intensity(0, Duration::from_secs(1)));
    assert!(m.contains("max_restarts"), "{m}");
    let m = refused(Pool::builder().restart_intensity(5, Duration::ZERO));
    assert!(m.contains("period"), "{m}");
    let m = refused(Pool::builder().memory_limit_per_child(1 << 20));
    assert!(m.contains("idle worker"), "{m}");
    let m = refused(Pool::builder().max_memory_per_child(0));
    assert!(m.contains("max_memory_per_child"), "{m}");
    let e = ProcessPoolExecutor::builder()
        .restart_intensity(0, Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}
