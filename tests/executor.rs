//! `ProcessPoolExecutor`, `Future`, `wait` and `as_completed`, ported from CPython's
//! `test_concurrent_futures` (rows FX-).
//!
//! What changed in the port: a worker that dies fails only the future it was running, with
//! `Error::WorkerDied { pid, signal, exitcode }`, and the executor keeps serving (FX-11, FX-12, FX-23,
//! FX-25; Python breaks the whole executor). `map` yields one `Result` per call and goes on
//! after a failing call (FX-03, gh-108518's behaviour). `submit` after `shutdown` is
//! `Error::InvalidState` (Python's RuntimeError). `Future::result` hands the value over once.
//! `kill_workers` stands for 3.14's `terminate_workers`/`kill_workers` (FX-19, FX-21).
//!
//! Not ported: FX-02's `chunksize` (each call of `Executor::map` is its own task; short tasks are
//! already sent ahead to each worker, so chunking buys little) and the keyword arguments of
//! FX-01; FX-07's and FX-08's type errors (a `NonZeroUsize` buffer size and a `usize` worker
//! count make them unrepresentable; FX-08's 61-worker limit is Windows-only); FX-10 (reference
//! counting; the scheduler drops a task when its result is delivered); FX-13 (no exception types
//! across processes: panics keep message and location, tested for the pool); FX-16's rejection of
//! `max_tasks_per_child` with fork (every start method supports it here); FX-18's and FX-34's
//! garbage-collection half and FX-28 (no GC or interpreter shutdown: dropping the executor is
//! `shutdown(wait = true)`, tested as FX-34); FX-22 is covered by the pool's tests of the same
//! cases (PO-05, PO-22, PO-30: codec errors fail the task, crashes are `WorkerDied`); FX-24
//! (encoding fails in `submit` itself, before anything is queued); FX-26 (no wake-up pipe that
//! can fill: submissions wake the scheduler through an eventfd counter); FX-37/FX-38's duplicate
//! futures (a `Future` is not `Clone`, so a list cannot hold one twice); FX-39's "callbacks added
//! after completion" (callbacks are given at `submit_with`).

mod common;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mp::futures::{ReturnWhen, as_completed, wait};
use mp::{Callbacks, Error, ProcessPoolExecutor, StartMethod};

#[mp::worker]
fn pow(base: u64, exp: u32) -> u64 {
    base.pow(exp)
}

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

#[mp::worker]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mp::worker]
fn pid_after(ms: u64) -> i32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id() as i32
}

#[mp::worker]
fn fail_on(x: u64) -> Result<u64, String> {
    if x == 3 {
        Err(format!("refusing {x}"))
    } else {
        Ok(x)
    }
}

#[mp::worker]
fn says_timed_out() -> Result<u64, String> {
    Err("the operation timed out".into())
}

#[mp::worker]
fn exit_after(ms: u64, code: i32) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::exit(code)
}

#[mp::worker]
fn kill_self() -> u64 {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    0
}

#[mp::worker]
fn byte_len(data: serde_bytes::ByteBuf) -> usize {
    data.len()
}

static STAMP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

#[mp::worker]
fn set_stamp(v: u64) {
    let _ = STAMP.set(v);
}

#[mp::worker]
fn read_stamp() -> u64 {
    STAMP.get().copied().unwrap_or(0)
}

#[mp::worker]
fn refuse() -> Result<(), String> {
    Err("no initialisation today".into())
}

/// Leaves an executor with running futures after `shutdown(wait = false)` and returns.
#[mp::worker]
fn shutdown_no_wait_then_return(method: StartMethod) -> u64 {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .context(mp::get_context(method))
        .build()
        .unwrap();
    let fs: Vec<_> = (0..4)
        .map(|_| ex.submit(sleep_ms, (200,)).unwrap())
        .collect();
    ex.shutdown(false, false);
    std::mem::forget(fs);
    std::mem::forget(ex);
    7
}

fn executor(ctx: &mp::Context, n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .context(*ctx)
        .build()
        .unwrap()
}

for_each_method!(fx_01_submit, |ctx: mp::Context| {
    let ex = executor(&ctx, 5);
    assert_eq!(ex.submit(pow, (2, 8)).unwrap().result().unwrap(), 256);
    let f = ex.submit(square, (9,)).unwrap();
    assert_eq!(f.result().unwrap(), 81);
    assert!(
        matches!(f.result(), Err(Error::InvalidState { .. })),
        "the value goes once"
    );
});

for_each_method!(fx_02_map, |ctx: mp::Context| {
    let ex = executor(&ctx, 5);
    let got: Vec<u64> = ex.map(square, 0..10u64).map(Result::unwrap).collect();
    assert_eq!(got, (0..10).map(|x| x * x).collect::<Vec<_>>());
});

#[test]
fn fx_03_04_map_goes_on_after_a_failing_call() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let out: Vec<_> = ex.map(fail_on, 0..6u64).collect();
    assert_eq!(out.len(), 6);
    for (i, r) in out.iter().enumerate() {
        if i == 3 {
            assert!(matches!(r, Err(Error::TaskFailed { message, .. }) if message == "refusing 3"));
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64);
        }
    }
    // A worker's own "timed out" error is a failed task, not map's timeout.
    let f = ex.submit(says_timed_out, ()).unwrap();
    assert!(matches!(f.result(), Err(Error::TaskFailed { .. })));
}

#[test]
fn fx_05_map_timeout() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    // Start both workers first, so that the timeout does not race their start-up on a busy
    // machine.
    let warm: Vec<_> = (0..2)
        .map(|_| ex.submit(sleep_ms, (100,)).unwrap())
        .collect();
    for f in warm {
        f.result_timeout(LONG).unwrap();
    }
    let mut it = ex
        .map(sleep_ms, vec![0u64, 0, 8_000, 0])
        .timeout(Duration::from_millis(1_500));
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let t = Instant::now();
    assert!(matches!(it.next(), Some(Err(Error::Timeout))));
    assert!(
        t.elapsed() < Duration::from_millis(6_000),
        "{:?}",
        t.elapsed()
    );
    assert!(
        it.next().is_none(),
        "the iterator is exhausted after the timeout"
    );
    ex.kill_workers();
}

#[test]
fn fx_06_dropping_map_cancels_the_rest() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(1).unwrap();
    // 200 calls of 300 ms: a minute of work unless dropping the iterator cancels it.
    let mut it = ex.map(sleep_ms, vec![300u64; 200]);
    assert_eq!(it.next().unwrap().unwrap(), 300);
    drop(it);
    let t = Instant::now();
    ex.shutdown(true, false);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn fx_07_buffersize() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    for size in [1usize, 2, 10, 20] {
        let got: Vec<u64> = ex
            .map(square, (0..10u64).collect::<Vec<_>>())
            .buffersize(NonZeroUsize::new(size).unwrap())
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            (0..10).map(|x| x * x).collect::<Vec<_>>(),
            "buffersize {size}"
        );
    }
    let taken = Arc::new(Mutex::new(0usize));
    let t2 = taken.clone();
    let input = (0..).inspect(move |_: &u64| *t2.lock().unwrap() += 1);
    let mut it = ex
        .map(square, input)
        .buffersize(NonZeroUsize::new(3).unwrap());
    assert_eq!(
        *taken.lock().unwrap(),
        0,
        "nothing is taken before the first next()"
    );
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert_eq!(
        *taken.lock().unwrap(),
        3,
        "only buffersize inputs are taken"
    );
    assert!(ex.map(square, Vec::<u64>::new()).next().is_none());
}

#[test]
fn fx_08_max_workers_zero() {
    let _g = shared();
    assert!(matches!(
        ProcessPoolExecutor::new(0),
        Err(Error::InvalidArgument { .. })
    ));
}

for_each_method!(fx_09_shutdown_right_after_map, |ctx: mp::Context| {
    let ex = executor(&ctx, 5);
    let it = ex.map(square, 0..6u64);
    drop(it);
    let fs: Vec<_> = (0..6u64)
        .map(|i| ex.submit(square, (i,)).unwrap())
        .collect();
    ex.shutdown(true, false);
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result().unwrap(), (i * i) as u64);
    }
});

for_each_method!(
    fx_11_12_dead_worker_fails_only_its_future,
    |ctx: mp::Context| {
        let ex = executor(&ctx, 2);
        let pending: Vec<_> = (0..20)
            .map(|_| ex.submit(sleep_ms, (20,)).unwrap())
            .collect();
        let dead = ex.submit(exit_after, (50, 99)).unwrap();
        let killed = ex.submit(kill_self, ()).unwrap();
        let died = dead.result().unwrap_err();
        assert!(
            matches!(died, Error::WorkerDied { signal: 0, exitcode: 99, pid, .. } if pid > 0),
            "{died:?}"
        );
        assert!(died.to_string().contains("exited with code 99"), "{died}");
        assert!(matches!(
            killed.result(),
            Err(Error::WorkerDied { signal: 9, .. })
        ));
        for f in pending {
            assert_eq!(f.result().unwrap(), 20);
        }
        assert_eq!(ex.submit(square, (4,)).unwrap().result().unwrap(), 16);
    }
);

#[test]
fn fx_14_saturation() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(3).unwrap();
    let fs: Vec<_> = (0..45)
        .map(|_| ex.submit(sleep_ms, (5,)).unwrap())
        .collect();
    let mut most = 0;
    for f in &fs {
        most = most.max(ex.worker_pids().len());
        f.wait(Some(LONG));
    }
    assert!(most <= 3, "{most} workers for max_workers = 3");
}

#[test]
fn fx_15_idle_workers_are_reused() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(3).unwrap();
    let pids: HashSet<i32> = (0..3)
        .map(|_| ex.submit(pid_after, (0,)).unwrap().result().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "three sequential submits use one process");
    assert_eq!(ex.worker_pids().len(), 1);
}

for_each_method!(fx_16_max_tasks_per_child, |ctx: mp::Context| {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(3)
        .context(ctx)
        .build()
        .unwrap();
    let pids: Vec<i32> = (0..4)
        .map(|_| ex.submit(pid_after, (0,)).unwrap().result().unwrap())
        .collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3], "the fourth task runs in a new worker");
    assert!(ex.worker_pids().len() <= 1);
});

for_each_method!(fx_17_20_max_tasks_with_backlog, |ctx: mp::Context| {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .max_tasks_per_child(1)
        .context(ctx)
        .build()
        .unwrap();
    let fs: Vec<_> = (0..6u64)
        .map(|i| ex.submit(square, (i,)).unwrap())
        .collect();
    ex.shutdown(true, false);
    let got: Vec<u64> = fs.into_iter().map(|f| f.result().unwrap()).collect();
    assert_eq!(got, vec![0, 1, 4, 9, 16, 25]);
});

for_each_method!(fx_19_21_kill_workers, |ctx: mp::Context| {
    let ex = executor(&ctx, 2);
    let running = ex.submit(sleep_ms, (30_000,)).unwrap();
    let queued: Vec<_> = (0..10)
        .map(|_| ex.submit(sleep_ms, (30_000,)).unwrap())
        .collect();
    assert!(eventually(LONG, || running.running()));
    let t = Instant::now();
    ex.kill_workers();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(running.result(), Err(Error::PoolBroken { .. })));
    for f in queued {
        assert!(f.result().is_err());
    }
    assert!(matches!(
        ex.submit(square, (1,)),
        Err(Error::InvalidState { .. })
    ));
    ex.kill_workers();
});

for_each_method!(fx_23_crash_after_shutdown_wait, |ctx: mp::Context| {
    let ex = executor(&ctx, 2);
    let f = ex.submit(exit_after, (200, 3)).unwrap();
    ex.shutdown(true, false);
    assert!(matches!(f.result(), Err(Error::WorkerDied { .. })));
});

for_each_method!(
    fx_25_crash_with_big_argument_in_flight,
    |ctx: mp::Context| {
        let ex = executor(&ctx, 1);
        let dies = ex.submit(kill_self, ()).unwrap();
        let big = serde_bytes::ByteBuf::from(vec![7u8; 8 << 20]);
        let after = ex.submit(byte_len, (big,)).unwrap();
        assert!(matches!(
            dies.result(),
            Err(Error::WorkerDied { signal: 9, .. })
        ));
        assert_eq!(after.result_timeout(LONG).unwrap(), 8 << 20);
    }
);

#[test]
fn fx_27_submit_after_shutdown() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(1).unwrap();
    ex.shutdown(true, false);
    assert!(matches!(
        ex.submit(square, (1,)),
        Err(Error::InvalidState { .. })
    ));
}

for_each_method!(fx_29_results_survive_shutdown, |ctx: mp::Context| {
    let ex = executor(&ctx, 2);
    let fs: Vec<_> = (0..50u64)
        .map(|i| ex.submit(square, (i,)).unwrap())
        .collect();
    ex.shutdown(true, false);
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result().unwrap(), (i * i) as u64);
    }
});

#[test]
fn fx_30_shutdown_cancel_futures() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let fs: Vec<_> = (0..50)
        .map(|_| ex.submit(sleep_ms, (100,)).unwrap())
        .collect();
    ex.shutdown(true, true);
    let cancelled = fs.iter().filter(|f| f.cancelled()).count();
    assert!(cancelled > 20, "{cancelled} of 50 cancelled");
    for f in fs.iter().filter(|f| !f.cancelled()) {
        assert_eq!(f.result().unwrap(), 100);
    }
    for f in fs.iter().filter(|f| f.cancelled()) {
        assert!(matches!(f.result(), Err(Error::Cancelled)));
    }
}

for_each_method!(fx_31_35_shutdown_no_wait_at_exit, |ctx: mp::Context| {
    let mut p = started(ctx.process(shutdown_no_wait_then_return, (ctx.start_method(),)));
    assert_eq!(join(&mut p).unwrap(), 7);
});

#[test]
fn fx_32_cancelled_future_before_shutdown() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let busy = ex.submit(sleep_ms, (200,)).unwrap();
    let queued: Vec<_> = (0..5)
        .map(|_| ex.submit(sleep_ms, (200,)).unwrap())
        .collect();
    let last = queued.last().unwrap();
    assert!(last.cancel());
    assert!(last.cancelled());
    ex.shutdown(true, false);
    assert_eq!(busy.result().unwrap(), 200);
}

for_each_method!(fx_33_workers_start_on_demand, |ctx: mp::Context| {
    let ex = executor(&ctx, 5);
    assert!(ex.worker_pids().is_empty());
    let fs: Vec<_> = (0..3)
        .map(|_| ex.submit(sleep_ms, (300,)).unwrap())
        .collect();
    assert!(eventually(LONG, || fs.iter().all(|f| f.running())));
    let pids = ex.worker_pids();
    assert_eq!(pids.len(), 3);
    ex.shutdown(true, false);
    assert!(pids.iter().all(|p| pid_gone(*p)));
});

#[test]
fn fx_36_max_tasks_failing_task_no_wait() {
    let _g = shared();
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let f = ex.submit(fail_on, (3,)).unwrap();
    let g = ex.submit(fail_on, (4,)).unwrap();
    ex.shutdown(false, false);
    assert!(f.result_timeout(LONG).is_err());
    assert_eq!(g.result_timeout(LONG).unwrap(), 4);
}

#[test]
fn fx_37_wait() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let fs = vec![
        ex.submit(sleep_ms, (0,)).unwrap(),
        ex.submit(sleep_ms, (1_500,)).unwrap(),
    ];
    let (done, not_done) = wait(fs, Some(LONG), ReturnWhen::FirstCompleted);
    assert_eq!((done.len(), not_done.len()), (1, 1));

    let fs = vec![
        ex.submit(fail_on, (3,)).unwrap(),
        ex.submit(sleep_ms, (1_500,)).unwrap(),
    ];
    let (done, not_done) = wait(fs, Some(LONG), ReturnWhen::FirstException);
    assert_eq!((done.len(), not_done.len()), (1, 1));
    assert!(done[0].result().is_err());

    let fs: Vec<_> = (0..4).map(|i| ex.submit(square, (i,)).unwrap()).collect();
    let (done, not_done) = wait(fs, Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (4, 0));
    // Without failures, FirstException waits for all.
    let fs: Vec<_> = (0..3).map(|i| ex.submit(square, (i,)).unwrap()).collect();
    let (done, _) = wait(fs, Some(LONG), ReturnWhen::FirstException);
    assert_eq!(done.len(), 3);

    let fs = vec![ex.submit(sleep_ms, (2_000,)).unwrap()];
    let t = Instant::now();
    let (done, not_done) = wait(
        fs,
        Some(Duration::from_millis(100)),
        ReturnWhen::AllCompleted,
    );
    assert!(t.elapsed() < Duration::from_millis(1_500));
    assert_eq!((done.len(), not_done.len()), (0, 1));
}

#[test]
fn fx_38_as_completed() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let fs: Vec<_> = (0..6u64)
        .map(|i| ex.submit(square, (i,)).unwrap())
        .collect();
    let mut got: Vec<u64> = as_completed(fs, None)
        .map(|f| f.unwrap().result().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 4, 9, 16, 25]);

    let done = ex.submit(square, (2,)).unwrap();
    done.wait(Some(LONG));
    let fs = vec![done, ex.submit(sleep_ms, (3_000,)).unwrap()];
    let mut it = as_completed(fs, Some(Duration::from_millis(100)));
    assert_eq!(it.next().unwrap().unwrap().result().unwrap(), 4);
    assert!(matches!(it.next(), Some(Err(Error::Timeout))));
    assert!(it.next().is_none());
}

#[test]
fn fx_39_done_callbacks() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    let ok = ex
        .submit_with(
            square,
            (3,),
            Callbacks::new().on_success(move |v: &u64| tx.send(format!("ok {v}")).unwrap()),
        )
        .unwrap();
    let bad = ex
        .submit_with(
            fail_on,
            (3,),
            Callbacks::new().on_error(move |e: &Error| tx2.send(format!("err {e}")).unwrap()),
        )
        .unwrap();
    assert_eq!(ok.result().unwrap(), 9);
    assert!(bad.result().is_err());
    let mut msgs = vec![
        rx.recv_timeout(LONG).unwrap(),
        rx.recv_timeout(LONG).unwrap(),
    ];
    msgs.sort();
    assert_eq!(msgs, vec!["err task failed: refusing 3", "ok 9"]);
}

#[test]
fn fx_40_41_cancel_and_states() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(1).unwrap();
    let running = ex.submit(sleep_ms, (500,)).unwrap();
    let pending = ex.submit(sleep_ms, (500,)).unwrap();
    let also_pending = ex.submit(sleep_ms, (500,)).unwrap();
    assert!(eventually(LONG, || running.running()));
    assert!(matches!(
        running.result_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert!(!running.cancel(), "a running future cannot be cancelled");
    // The worker may hold one more job sent ahead; the third is surely queued.
    assert!(also_pending.cancel());
    assert!(also_pending.cancel(), "cancel twice is still true");
    assert!(also_pending.cancelled() && also_pending.done() && !also_pending.running());
    assert!(matches!(also_pending.result(), Err(Error::Cancelled)));
    assert_eq!(running.result().unwrap(), 500);
    assert!(running.done() && !running.running() && !running.cancelled());
    assert!(!running.cancel(), "a finished future cannot be cancelled");
    let _ = pending.result();
    let failed = ex.submit(fail_on, (3,)).unwrap();
    failed.wait(Some(LONG));
    assert!(matches!(
        failed.result_timeout(Duration::ZERO),
        Err(Error::TaskFailed { .. })
    ));
}

for_each_method!(fx_42_initializer, |ctx: mp::Context| {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(set_stamp, (42,))
        .context(ctx)
        .build()
        .unwrap();
    let fs: Vec<_> = (0..4).map(|_| ex.submit(read_stamp, ()).unwrap()).collect();
    for f in fs {
        assert_eq!(f.result().unwrap(), 42);
    }
    let ex = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(refuse, ())
        .context(ctx)
        .build()
        .unwrap();
    let first = ex.submit(square, (1,)).unwrap();
    assert!(first.result().is_err());
    assert!(eventually(LONG, || matches!(
        ex.submit(square, (1,)).map(|f| f.result()),
        Ok(Err(Error::PoolBroken { .. }))
    )));
});

#[test]
fn future_is_a_std_future() {
    let _g = shared();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let v = rt.block_on(async { ex.submit(square, (6,)).unwrap().await.unwrap() });
    assert_eq!(v, 36);
}

for_each_method!(fx_34_drop_is_shutdown_wait, |ctx: mp::Context| {
    let ex = executor(&ctx, 2);
    let fs: Vec<_> = (0..10u64)
        .map(|i| ex.submit(sleep_ms, (i * 10,)).unwrap())
        .collect();
    let pids = {
        assert!(eventually(LONG, || !ex.worker_pids().is_empty()));
        ex.worker_pids()
    };
    drop(ex);
    for (i, f) in fs.into_iter().enumerate() {
        assert!(f.done(), "dropping waited for every task");
        assert_eq!(f.result().unwrap(), i as u64 * 10);
    }
    assert!(pids.iter().all(|p| pid_gone(*p)));
});

fn assert_start_failure<T: std::fmt::Debug>(r: mp::Result<T>, text: &str) {
    match r {
        Err(Error::PoolBroken { message }) => {
            assert!(
                message.contains("no worker process could be started"),
                "{message}"
            );
            assert!(message.contains(text), "{message}");
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
}

/// The executor's first worker cannot start (the exec64 reproduction): the future fails with
/// the start error instead of waiting forever, and once starting works again the executor
/// runs what is submitted next.
#[test]
fn a_worker_that_cannot_start_fails_the_future_and_later_submits_retry() {
    let _g = shared();
    let faults = mp::__private::StartFaults::new();
    let ex = mp::__private::executor_start_faults(
        ProcessPoolExecutor::builder()
            .max_workers(2)
            .context(mp::get_context(StartMethod::Spawn)),
        &faults,
    )
    .build()
    .unwrap();
    faults.fail_next(usize::MAX);
    let f = ex.submit(square, (3,)).unwrap();
    assert_start_failure(f.result_timeout(LONG), "injected");
    // Still failing: the next submission tries again and fails the same way.
    let f = ex.submit(square, (4,)).unwrap();
    assert_start_failure(f.result_timeout(LONG), "injected");
    faults.fail_next(0);
    let f = ex.submit(square, (5,)).unwrap();
    assert_eq!(f.result_timeout(LONG).unwrap(), 25);
    assert_eq!(ex.worker_pids().len(), 1);
}

/// The same at a real descriptor limit, in a process of its own so that the limit touches no
/// other test: no descriptor can be opened when the first worker is to start.
#[test]
fn at_the_descriptor_limit_the_future_fails_and_the_executor_recovers() {
    if !in_child_process("at_the_descriptor_limit_the_future_fails_and_the_executor_recovers") {
        return;
    }
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .context(mp::get_context(StartMethod::Spawn))
        .build()
        .unwrap();
    let saved = refuse_new_fds();
    let f = ex.submit(square, (3,)).unwrap();
    let r = f.result_timeout(LONG);
    set_fd_limit(saved);
    assert_start_failure(r, "Too many open files");
    let f = ex.submit(square, (4,)).unwrap();
    assert_eq!(f.result_timeout(LONG).unwrap(), 16);
}
