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
