//! `Pool`, ported from CPython's `_TestPool`, `_TestPoolWorkerErrors`, `_TestPoolWorkerLifetime`
//! and `TestInitializers` (rows PO-), plus what Python does not survive: a worker killed,
//! aborted, crashed or exiting mid-task fails only that task and the pool keeps serving (PO-30),
//! Ctrl-C during `map`, and a pool dropped with work in flight.
//!
//! What changed in the port: `map` returns `Result<Vec<_>>` (the first failing item's error);
//! `imap`/`imap_unordered` yield one `Result` per item, so a failing item does not end the
//! iteration; Python's `get(timeout)` is `get_timeout`; `terminate` fails unfinished tasks with
//! `Error::PoolBroken` instead of leaving them pending forever; dropping a pool terminates it.
//! A worker's panic keeps its message and `file:line:col` (PO-16, instead of a remote
//! traceback); a returned `Err` is `Error::TaskFailed` with its text.
//!
//! Not ported: PO-01's kwargs and PO-12's `Pool(-1)` (no keyword arguments in Rust; the
//! process count is a `usize`); PO-07, PO-10 and PO-17 (a Rust iterator cannot raise: a
//! panicking input iterator panics in the caller, as any iterator does; PO-07's "the pool stays
//! usable" part is checked); PO-19 (reference counting: the pool drops a task's arguments and
//! results when it completes, which the hygiene test's bounded descriptors and memory cover);
//! PO-20 (no ResourceWarning: dropping a pool terminates it, tested below).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use mp::{Callbacks, Connection, Error, Pipe, Pool, StartMethod};
use serde::{Deserialize, Serialize};

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

#[mp::worker]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[mp::worker]
fn with_pid(x: u64) -> (u64, i32) {
    (x, std::process::id() as i32)
}

#[mp::worker]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[mp::worker]
fn pid_after_ms(ms: u64) -> i32 {
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
fn huge_error(x: u64) -> Result<u64, String> {
    if x == 0 {
        Err("e".repeat(1 << 20))
    } else {
        Ok(x)
    }
}

#[mp::worker]
fn panic_on(x: u64) -> u64 {
    if x == 3 {
        panic!("expected panic on {x}");
    }
    x
}

/// How `die_on` ends its process.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum Death {
    Kill,
    Abort,
    Segfault,
    Exit,
}

#[mp::worker]
fn die_on(job: (u64, u64, Death)) -> u64 {
    let (x, target, how) = job;
    if x == target {
        use nix::sys::signal::{Signal, raise};
        match how {
            Death::Kill => {
                let _ = raise(Signal::SIGKILL);
            }
            // SAFETY: abort() never returns; nothing to uphold.
            Death::Abort => unsafe { libc::abort() },
            Death::Segfault => {
                // The default action, not a handler the runtime may have installed.
                // SAFETY: SIG_DFL installs no handler code.
                unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
                let _ = raise(Signal::SIGSEGV);
            }
            Death::Exit => std::process::exit(3),
        }
    }
    x * x
}

/// Sends its pid, then waits until the other end closes.
#[mp::worker]
fn report_and_block(report: Connection<i32>) -> u64 {
    report.send(&(std::process::id() as i32)).unwrap();
    let _ = report.recv();
    0
}

/// Squares `x`; one of the gated items first waits (up to a minute) for the gate.
#[mp::worker]
fn square_gated(item: (u64, bool, mp::Event)) -> u64 {
    let (x, gated, gate) = item;
    if gated {
        gate.wait_timeout(Duration::from_secs(60));
    }
    x * x
}

/// Serializing it always fails.
#[derive(Debug, Deserialize)]
struct NoEncode(u8);

impl Serialize for NoEncode {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("NoEncode refuses to be encoded"))
    }
}

#[mp::worker]
fn takes_no_encode(x: NoEncode) -> u64 {
    u64::from(x.0)
}

#[mp::worker]
fn returns_no_encode(x: u8) -> NoEncode {
    NoEncode(x)
}

/// Decoding 13 fails.
#[derive(Debug, Serialize)]
struct NoThirteen(u8);

impl<'de> Deserialize<'de> for NoThirteen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            13 => Err(serde::de::Error::custom("13 does not decode")),
            v => Ok(NoThirteen(v)),
        }
    }
}

#[mp::worker]
fn returns_no_thirteen(x: u8) -> NoThirteen {
    NoThirteen(x)
}

static TAG: OnceLock<String> = OnceLock::new();

#[mp::worker]
fn set_tag(tag: String) {
    let _ = TAG.set(tag);
}

#[mp::worker]
fn read_tag() -> String {
    TAG.get().cloned().unwrap_or_default()
}

#[mp::worker]
fn refuse_init() -> Result<(), String> {
    Err("initializer refused".into())
}

#[mp::worker]
fn nested_sum(n: u64) -> u64 {
    let pool = Pool::new(2).unwrap();
    pool.map(square, 0..n).unwrap().iter().sum()
}

/// A child with the default SIGINT action that runs `map` over long tasks, after sending the
/// pids of its pool's workers.
#[mp::worker]
fn map_until_interrupted(method: StartMethod, report: Connection<Vec<i32>>) {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) }.unwrap();
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    report.send(&pool.worker_pids()).unwrap();
    let _ = pool.map_chunked(sleep_ms, vec![300_000u64; 4], 1);
}

static LEAKED: OnceLock<Pool> = OnceLock::new();

/// Leaves a running pool in a global, like PO-26's script, and returns.
#[mp::worker]
fn leak_pool(method: StartMethod) -> u64 {
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    let v = pool.apply(square, (5,)).unwrap();
    let _ = LEAKED.set(pool);
    v
}

/// Starts a pool with so few descriptors left that a worker start fails part-way.
#[mp::worker]
fn pool_with_few_fds(method: StartMethod) -> (String, usize) {
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let limit = open + 12;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the struct we pass; nothing else.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    let err = match Pool::builder().processes(50).start_method(method).build() {
        Ok(_) => "pool started".to_owned(),
        Err(e) => e.to_string(),
    };
    (err, mp::active_children().len())
}

fn pool(ctx: &mp::Context, n: usize) -> Pool {
    Pool::builder().processes(n).context(*ctx).build().unwrap()
}

fn squares(n: u64) -> Vec<u64> {
    (0..n).map(|x| x * x).collect()
}

for_each_method!(po_01_apply, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    assert_eq!(p.apply(square, (5,)).unwrap(), 25);
    assert_eq!(p.apply(add, (2, 3)).unwrap(), 5);
});

for_each_method!(po_02_map, |ctx: mp::Context| {
    let p = pool(&ctx, 4);
    assert_eq!(p.map(square, 0..10u64).unwrap(), squares(10));
    assert_eq!(p.map_chunked(square, 0..100u64, 20).unwrap(), squares(100));
    assert_eq!(p.map_chunked(square, 0..7u64, 1).unwrap(), squares(7));
});

for_each_method!(po_03_starmap_and_async, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    let pairs: Vec<(u64, u64)> = (0..10).map(|i| (i, i * 2)).collect();
    let want: Vec<u64> = pairs.iter().map(|(a, b)| a + b).collect();
    assert_eq!(p.starmap(add, pairs.clone()).unwrap(), want);
    assert_eq!(p.starmap_async(add, pairs).unwrap().get().unwrap(), want);
    assert_eq!(
        p.map_async(square, 0..10u64).unwrap().get().unwrap(),
        squares(10)
    );
});

/// Per test (`K`): items counted as this process encodes them, and results as it decodes them,
/// to see how far `map` runs ahead of the results it has taken.
static ENCODED: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static DECODED: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static MOST_AHEAD: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

/// An argument, counted as it is encoded.
#[derive(Deserialize)]
struct Counted<const K: usize>(serde_bytes::ByteBuf);

impl<const K: usize> Serialize for Counted<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let encoded = ENCODED[K].fetch_add(1, Ordering::SeqCst) + 1;
        let ahead = encoded.saturating_sub(DECODED[K].load(Ordering::SeqCst));
        MOST_AHEAD[K].fetch_max(ahead, Ordering::SeqCst);
        self.0.serialize(s)
    }
}

/// A small result, counted as it is decoded.
#[derive(Serialize)]
struct Tallied<const K: usize>(usize);

impl<'de, const K: usize> Deserialize<'de> for Tallied<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = usize::deserialize(d)?;
        DECODED[K].fetch_add(1, Ordering::SeqCst);
        Ok(Tallied(v))
    }
}

/// Slower than encoding its argument, so that a `map` without a bound would run far ahead.
#[mp::worker]
fn tally(x: Counted<0>) -> Tallied<0> {
    std::thread::sleep(Duration::from_millis(2));
    Tallied(x.0.len())
}

/// The same, for the test of small items.
#[mp::worker]
fn tally_small(x: Counted<1>) -> Tallied<1> {
    std::thread::sleep(Duration::from_millis(1));
    Tallied(x.0.len())
}

/// A large input is not encoded all at once (each item's encoding held until its result
/// comes): `map` stops encoding once 32 MiB of chunks are unfinished, and goes on as they
/// finish. Arguments of 1 MiB take the path that decodes on the calling thread.
#[test]
fn map_holds_a_bounded_encoding_ahead_of_its_results_not_the_whole_input() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let (n, mib) = (120, 1 << 20);
    let items = (0..n).map(|i| Counted(serde_bytes::ByteBuf::from(vec![i as u8; mib + i])));
    let out = p.map_chunked(tally, items, 1).unwrap();
    let got: Vec<usize> = out.iter().map(|t| t.0).collect();
    assert_eq!(got, (0..n).map(|i| mib + i).collect::<Vec<_>>());
    assert_eq!(DECODED[0].load(Ordering::SeqCst), n);
    // 32 chunks of a little over 1 MiB, and the one being encoded.
    let most = MOST_AHEAD[0].load(Ordering::SeqCst);
    assert!(
        most <= 33,
        "map encoded {most} items ahead of the results it had taken"
    );
}

/// The same bound for arguments under 64 KiB, which take the path that decodes on the pool's
/// thread: 72 MiB of them, of which about 32 MiB are encoded ahead.
#[test]
fn map_of_small_items_holds_the_same_bound() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let (n, len) = (1200, 60 * 1024);
    let items = (0..n).map(|i| Counted(serde_bytes::ByteBuf::from(vec![i as u8; len + i % 7])));
    let out = p.map_chunked(tally_small, items, 1).unwrap();
    let got: Vec<usize> = out.iter().map(|t| t.0).collect();
    assert_eq!(got, (0..n).map(|i| len + i % 7).collect::<Vec<_>>());
    assert_eq!(DECODED[1].load(Ordering::SeqCst), n);
    // 32 MiB / 60 KiB = 546 chunks, the one being encoded, and the first item's probe.
    let most = MOST_AHEAD[1].load(Ordering::SeqCst);
    assert!(
        (100..=560).contains(&most),
        "map encoded {most} items ahead of the results it had taken"
    );
}

/// Fails on the argument of 1 MiB + 3 bytes; slower than encoding its argument.
#[mp::worker]
fn fail_on_third(x: serde_bytes::ByteBuf) -> Result<usize, String> {
    std::thread::sleep(Duration::from_millis(2));
    match x.len() - (1 << 20) {
        3 => Err("refusing the third".into()),
        n => Ok(n),
    }
}

/// A `map` held back by its bound on encodings ahead still returns the first failure.
#[test]
fn a_map_held_back_by_its_bound_returns_the_first_failure() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let items = (0..80).map(|i| serde_bytes::ByteBuf::from(vec![0u8; (1 << 20) + i]));
    let err = p.map_chunked(fail_on_third, items, 1).unwrap_err();
    assert!(
        matches!(&err, Error::TaskFailed { message, index: Some(3), .. } if message == "refusing the third"),
        "{err}"
    );
    assert_eq!(p.apply(square, (4,)).unwrap(), 16, "the pool still serves");
}

#[test]
fn po_04_map_async_callbacks() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let (c1, c2) = (calls.clone(), calls.clone());
    let cb = Callbacks::new()
        .on_success(move |v: &Vec<u64>| c1.lock().unwrap().push(format!("ok {}", v.len())))
        .on_error(move |e: &Error| c2.lock().unwrap().push(format!("err {e}")));
    let r = p.map_async_with(square, 0..10u64, None, cb).unwrap();
    assert_eq!(r.get().unwrap(), squares(10));
    assert_eq!(*calls.lock().unwrap(), vec!["ok 10".to_owned()]);

    calls.lock().unwrap().clear();
    let (c1, c2) = (calls.clone(), calls.clone());
    let cb = Callbacks::new()
        .on_success(move |_: &Vec<u64>| c1.lock().unwrap().push("ok".into()))
        .on_error(move |e: &Error| c2.lock().unwrap().push(format!("err {e}")));
    let r = p.map_async_with(fail_on, 0..10u64, Some(1), cb).unwrap();
    assert!(
        matches!(r.get(), Err(Error::TaskFailed { message, index: Some(3), .. }) if message == "refusing 3")
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["err task failed on input item 3: refusing 3".to_owned()]
    );
}

#[test]
fn po_05_unencodable_argument_fails_map() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let err = p.map(takes_no_encode, vec![NoEncode(1)]).unwrap_err();
    assert!(
        matches!(&err, Error::Codec { message, .. } if message.contains("NoEncode")),
        "{err}"
    );
    assert!(p.apply_async(takes_no_encode, (NoEncode(1),)).is_err());
    assert_eq!(p.apply(square, (3,)).unwrap(), 9, "the pool still serves");
}

#[test]
fn po_06_empty_map_async_does_not_stall() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let r = p
        .map_async_with(square, Vec::<u64>::new(), Some(1), Callbacks::new())
        .unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), Vec::<u64>::new());
}

#[test]
fn po_07_panicking_input_leaves_pool_usable() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let bad = (0..10u64).map(|x| if x == 5 { panic!("input fails") } else { x });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.map(square, bad)));
    assert!(caught.is_err());
    assert_eq!(p.map(square, 0..5u64).unwrap(), squares(5));
}

#[test]
fn po_08_apply_async_and_timeout() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    assert_eq!(p.apply_async(square, (7,)).unwrap().get().unwrap(), 49);
    let slow = p.apply_async(sleep_ms, (2_000,)).unwrap();
    let t = Instant::now();
    assert!(matches!(
        slow.get_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(1_500),
        "{waited:?}"
    );
    assert!(!slow.ready());
    assert!(slow.successful().is_err(), "successful() before ready");
    assert_eq!(slow.get_timeout(LONG).unwrap(), 2_000);
}

for_each_method!(po_09_imap, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    let v: Vec<u64> = p
        .imap(square, 0..10u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(v, squares(10));
    let input: Vec<u64> = (0..1000).collect();
    let it = p.imap_chunked(square, input, 100).unwrap();
    assert_eq!(it.len(), 1000);
    let v: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(v, squares(1000));
});

for_each_method!(po_11_imap_unordered, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    let mut v: Vec<u64> = p
        .imap_unordered(square, 0..100u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    v.sort();
    assert_eq!(v, squares(100));
    let mut v: Vec<u64> = p
        .imap_unordered_chunked(square, 0..1000u64, 53)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    v.sort();
    assert_eq!(v, squares(1000));
    // A failing item is one Err among the results.
    let r: Vec<_> = p.imap_unordered(fail_on, 0..10u64).unwrap().collect();
    assert_eq!(r.iter().filter(|r| r.is_err()).count(), 1);
});

#[test]
fn po_12_make_pool() {
    let _g = shared();
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument { .. })));
    let p = Pool::new(3).unwrap();
    assert_eq!(p.processes(), 3);
    assert_eq!(p.worker_pids().len(), 3);
}

for_each_method!(po_13_terminate_with_queued_work, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    let r = p
        .map_async_with(sleep_ms, vec![10_000u64; 10_000], Some(1), Callbacks::new())
        .unwrap();
    let pids = p.worker_pids();
    let t = Instant::now();
    p.terminate();
    p.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(r.get(), Err(Error::PoolBroken { .. })));
    assert!(pids.iter().all(|p| pid_gone(*p)));
});

#[test]
fn po_14_empty_iterables() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let empty = Vec::<u64>::new;
    assert_eq!(p.map(square, empty()).unwrap(), empty());
    assert_eq!(p.imap(square, empty()).unwrap().count(), 0);
    assert_eq!(p.imap_unordered(square, empty()).unwrap().count(), 0);
    assert_eq!(
        p.map_async(square, empty()).unwrap().get().unwrap(),
        empty()
    );
    assert_eq!(p.starmap(add, Vec::new()).unwrap(), empty());
}

#[test]
fn po_15_terminated_pool_refuses_work() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    p.terminate();
    assert!(matches!(
        p.map_async(square, 0..3u64),
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(
        p.apply(square, (1,)),
        Err(Error::InvalidState { .. })
    ));
    let p = Pool::new(1).unwrap();
    p.close();
    assert!(matches!(
        p.apply(square, (1,)),
        Err(Error::InvalidState { .. })
    ));
    p.join().unwrap();
}

#[test]
fn po_16_panic_keeps_message_and_location() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    match p.apply(panic_on, (3,)) {
        Err(Error::WorkerPanicked {
            message, location, ..
        }) => {
            assert_eq!(message, "expected panic on 3");
            assert!(location.starts_with("tests/pool.rs:"), "{location}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        p.apply(panic_on, (4,)).unwrap(),
        4,
        "the same workers go on"
    );
}

for_each_method!(po_18_failing_map_then_close_join, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    assert!(p.map_chunked(fail_on, 0..10u64, 1).is_err());
    let slow = p.apply_async(sleep_ms, (300,)).unwrap();
    let err = p.map(huge_error, 0..4u64).unwrap_err();
    assert!(matches!(&err, Error::TaskFailed { message, .. } if message.len() == 1 << 20));
    p.close();
    p.join().unwrap();
    assert_eq!(
        slow.get().unwrap(),
        300,
        "close + join waited for the task in flight"
    );
});

#[test]
fn po_21_apply_async_error_callback() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = p
        .apply_async_with(
            fail_on,
            (3,),
            Callbacks::new().on_error(move |e: &Error| tx.send(e.to_string()).unwrap()),
        )
        .unwrap();
    assert!(matches!(r.get(), Err(Error::TaskFailed { .. })));
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "task failed: refusing 3");
}

#[test]
fn po_22_results_that_do_not_travel() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let pids = p.worker_pids();
    for _ in 0..20 {
        let (tx, rx) = std::sync::mpsc::channel();
        let r = p
            .apply_async_with(
                returns_no_thirteen,
                (13,),
                Callbacks::new().on_error(move |e: &Error| tx.send(e.to_string()).unwrap()),
            )
            .unwrap();
        assert!(matches!(r.get(), Err(Error::Codec { .. })));
        let text = rx.recv_timeout(LONG).unwrap();
        assert!(text.contains("could not be decoded"), "{text}");
        assert!(matches!(
            p.apply(returns_no_encode, (1,)),
            Err(Error::Codec { message, index: None, .. }) if message.contains("could not be sent")
        ));
    }
    assert_eq!(p.apply(returns_no_thirteen, (12,)).unwrap().0, 12);
    assert_eq!(p.worker_pids(), pids, "no worker was lost");
}

for_each_method!(po_23_max_tasks_per_child, |ctx: mp::Context| {
    let p = Pool::builder()
        .processes(2)
        .max_tasks_per_child(10)
        .context(ctx)
        .build()
        .unwrap();
    let first = p.worker_pids();
    let out = p.map_chunked(with_pid, 0..100u64, 1).unwrap();
    assert_eq!(
        out.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    let pids: std::collections::HashSet<i32> = out.iter().map(|(_, p)| *p).collect();
    assert!(pids.iter().all(|p| *p > 0));
    assert!(
        pids.len() >= 10,
        "{} distinct workers ran 100 tasks",
        pids.len()
    );
    assert_ne!(p.worker_pids(), first, "workers were replaced");
});

for_each_method!(po_23b_max_tasks_per_child_one, |ctx: mp::Context| {
    let p = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .context(ctx)
        .build()
        .unwrap();
    let a = p.apply(with_pid, (1,)).unwrap().1;
    let b = p.apply(with_pid, (2,)).unwrap().1;
    assert_ne!(a, b, "each task ran in a fresh worker");
});

for_each_method!(po_24_max_tasks_early_close, |ctx: mp::Context| {
    let p = Pool::builder()
        .processes(2)
        .max_tasks_per_child(1)
        .context(ctx)
        .build()
        .unwrap();
    let results: Vec<_> = (0..6u64)
        .map(|i| p.apply_async(square, (i,)).unwrap())
        .collect();
    p.close();
    p.join().unwrap();
    let got: Vec<u64> = results.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, squares(6));
});

#[test]
fn po_25_invalid_max_tasks_per_child() {
    let _g = shared();
    let r = Pool::builder().processes(1).max_tasks_per_child(0).build();
    assert!(matches!(r, Err(Error::InvalidArgument { .. })));
}

for_each_method!(po_26_pool_left_in_a_global_at_exit, |ctx: mp::Context| {
    let mut p = started(ctx.process(leak_pool, (ctx.start_method(),)));
    assert_eq!(join(&mut p).unwrap(), 25);
});

for_each_method!(po_27_initializer, |ctx: mp::Context| {
    let p = Pool::builder()
        .processes(2)
        .initializer(set_tag, ("ready".to_string(),))
        .context(ctx)
        .build()
        .unwrap();
    let tags: Vec<String> = p.starmap(read_tag, vec![(); 8]).unwrap();
    assert!(tags.iter().all(|t| t == "ready"), "{tags:?}");
    // An initializer that fails breaks the pool instead of restarting workers forever.
    let p = Pool::builder()
        .processes(2)
        .initializer(refuse_init, ())
        .context(ctx)
        .build()
        .unwrap();
    match p.apply(square, (1,)) {
        Err(Error::PoolBroken { message }) => {
            assert!(message.contains("initializer refused"), "{message}")
        }
        Err(Error::WorkerDied { .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        p.apply(square, (1,)),
        Err(Error::PoolBroken { .. })
    ));
});

for_each_method!(
    po_28_failed_start_kills_started_workers,
    |ctx: mp::Context| {
        let mut p = started(ctx.process(pool_with_few_fds, (ctx.start_method(),)));
        let (err, children) = join(&mut p).unwrap();
        assert_ne!(err, "pool started");
        assert_eq!(
            children, 0,
            "workers started before the failure remain: {err}"
        );
    }
);

for_each_method!(po_29_large_pool, |ctx: mp::Context| {
    let p = pool(&ctx, 200);
    assert_eq!(
        p.map(square, 0..1000u64).unwrap().iter().sum::<u64>(),
        332_833_500
    );
});

fn death_in_map(ctx: mp::Context, how: Death, signal: i32) {
    let p = pool(&ctx, 2);
    let jobs = (0..1000u64).map(|x| (x, 500, how));
    let out: Vec<mp::Result<u64>> = p.imap(die_on, jobs).unwrap().collect();
    for (x, r) in out.iter().enumerate() {
        if x == 500 {
            assert!(
                matches!(r, Err(Error::WorkerDied { signal: s, .. }) if *s == signal),
                "{r:?}"
            );
        } else {
            assert_eq!(*r.as_ref().unwrap(), (x * x) as u64);
        }
    }
    assert_eq!(p.worker_pids().len(), 2, "the dead worker was replaced");
    assert_eq!(p.map(square, 0..10u64).unwrap(), squares(10));
}

for_each_method!(po_30_sigkill_mid_map, |ctx: mp::Context| {
    death_in_map(ctx, Death::Kill, 9)
});

for_each_method!(po_30_abort_mid_map, |ctx: mp::Context| {
    death_in_map(ctx, Death::Abort, 6)
});

for_each_method!(po_30_segfault_mid_map, |ctx: mp::Context| {
    death_in_map(ctx, Death::Segfault, 11)
});

for_each_method!(po_30_exit_mid_map, |ctx: mp::Context| {
    death_in_map(ctx, Death::Exit, 0)
});

for_each_method!(po_30_external_sigkill, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    let (ours, theirs) = Pipe::<i32>::duplex().unwrap();
    let blocked = p.apply_async(report_and_block, (theirs,)).unwrap();
    let pid = ours.recv_timeout(LONG).unwrap();
    let others = p
        .map_async_with(square, 0..1000u64, Some(1), Callbacks::new())
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match blocked.get_timeout(LONG) {
        Err(Error::WorkerDied {
            pid: p,
            signal: 9,
            exitcode: -9,
            ..
        }) => assert_eq!(p, pid),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(others.get_timeout(LONG).unwrap(), squares(1000));
});

for_each_method!(ctrl_c_during_map, |ctx: mp::Context| {
    let (ours, theirs) = Pipe::<Vec<i32>>::duplex().unwrap();
    let mut child = started(ctx.process(map_until_interrupted, (ctx.start_method(), theirs)));
    let workers = ours.recv_timeout(LONG).unwrap();
    assert_eq!(workers.len(), 2);
    let t = Instant::now();
    child.interrupt().unwrap();
    assert!(
        child.join_timeout(Duration::from_secs(10)),
        "no prompt exit"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        child.join(),
        Err(Error::ProcessFailed { exitcode: -2, .. })
    ));
    assert!(
        eventually(LONG, || workers.iter().all(|p| pid_gone(*p))),
        "workers outlived their pool's process"
    );
});

for_each_method!(drop_with_work_in_flight, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    let pids = p.worker_pids();
    let pending: Vec<_> = (0..100)
        .map(|_| p.apply_async(sleep_ms, (10_000,)).unwrap())
        .collect();
    let t = Instant::now();
    drop(p);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    for r in pending {
        assert!(matches!(r.get(), Err(Error::PoolBroken { .. })));
    }
    assert!(pids.iter().all(|p| pid_gone(*p)));
});

for_each_method!(nested_pool, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    assert_eq!(p.apply(nested_sum, (10,)).unwrap(), 285);
});

#[test]
fn bound_on_tasks_in_flight() {
    let _g = shared();
    let p = Pool::builder()
        .processes(2)
        .max_tasks_in_flight(3)
        .build()
        .unwrap();
    let rs: Vec<_> = (0..50u64)
        .map(|i| p.apply_async(square, (i,)).unwrap())
        .collect();
    let got: Vec<u64> = rs.into_iter().map(|r| r.get().unwrap()).collect();
    assert_eq!(got, squares(50));
    assert_eq!(p.map_chunked(square, 0..100u64, 7).unwrap(), squares(100));
}

#[test]
fn async_result_is_a_future() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let v = rt.block_on(async {
        let a = p.apply_async(square, (5,)).unwrap();
        let b = p.map_async(square, 0..4u64).unwrap();
        (a.await.unwrap(), b.await.unwrap())
    });
    assert_eq!(v, (25, squares(4)));
}

#[test]
fn imap_takes_input_lazily() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let taken = Arc::new(Mutex::new(0u64));
    let t2 = taken.clone();
    let input = (0..).inspect(move |_: &u64| *t2.lock().unwrap() += 1);
    let first: Vec<u64> = p
        .imap(square, input)
        .unwrap()
        .take(5)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, squares(5));
    // At most the window ahead of the consumer (up to 256 chunks of one item while results
    // stream in), the five taken, and the chunk being read.
    let taken = *taken.lock().unwrap();
    assert!(
        taken <= 256 + 5 + 1,
        "an endless input is not drained ({taken} taken)"
    );
}

/// A consumer of a fast stream waits for several chunks at once; a chunk that arrives while the
/// others it waits for cannot (they wait for this very consumer) is still delivered.
#[test]
fn imap_delivers_a_result_its_consumer_needs_while_it_batches() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let gate = mp::Event::new().unwrap();
    // Many quick items first (the consumer learns that results stream in), then one quick item
    // and, behind it, items that wait until the consumer has seen every result before them.
    let n = 4000u64;
    let first_gated = n - 9;
    let input: Vec<(u64, bool, mp::Event)> = (0..n)
        .map(|x| (x, x >= first_gated, gate.clone()))
        .collect();
    let it = p.imap_unordered(square_gated, input).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let opener = gate.clone();
    let consumer = std::thread::spawn(move || {
        let mut got = Vec::new();
        for r in it {
            got.push(r.unwrap());
            if got.len() as u64 == first_gated {
                opener.set();
            }
        }
        tx.send(got).unwrap();
    });
    let got = rx.recv_timeout(Duration::from_secs(50));
    gate.set();
    consumer.join().unwrap();
    let mut got = got.expect("a finished result was held back while its consumer waited");
    got.sort_unstable();
    assert_eq!(got, squares(n));
}

/// Ordered and unordered streams long enough to batch keep every result, in order for `imap`.
#[test]
fn imap_streams_keep_every_result() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let n = 30_000u64;
    let ordered: Vec<u64> = p
        .imap_chunked(square, 0..n, 7)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, squares(n));
    let mut unordered: Vec<u64> = p
        .imap_unordered_chunked(square, 0..n, 3)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, squares(n));
}

#[test]
fn close_lets_live_iterators_finish() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let it = p.imap(square, 0..50u64).unwrap();
    p.close();
    let v: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(v, squares(50));
    p.join().unwrap();
}

#[test]
fn join_requires_close() {
    let _g = shared();
    let p = Pool::new(1).unwrap();
    assert!(matches!(p.join(), Err(Error::InvalidState { .. })));
}

/// A path that serde cannot encode (not UTF-8).
fn odd_path(tail: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = b"/tmp/".to_vec();
    bytes.extend_from_slice(tail);
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
}

#[mp::worker]
fn path_len(p: std::path::PathBuf) -> usize {
    p.as_os_str().len()
}

#[mp::worker]
fn path_of(x: u8) -> std::path::PathBuf {
    if x == 3 {
        odd_path(b"\xff")
    } else {
        odd_path(&[b'a' + x])
    }
}

#[mp::worker]
fn bytes_len(p: mp::PathBytes) -> usize {
    p.as_os_str().len()
}

#[mp::worker]
fn takes_no_thirteen(x: NoThirteen) -> u8 {
    x.0
}

/// Asserts that every result is `Ok` except those at `bad`, which match `is_bad` and name
/// their input index.
fn only_these_fail<T: std::fmt::Debug>(
    r: &[mp::Result<T>],
    bad: &[usize],
    is_bad: impl Fn(&Error) -> bool,
) {
    for (i, item) in r.iter().enumerate() {
        match item {
            Ok(_) => assert!(!bad.contains(&i), "item {i} should have failed"),
            Err(e) => {
                assert!(bad.contains(&i), "item {i} failed: {e}");
                assert!(is_bad(e), "item {i}: {e:?}");
                assert_eq!(e.item_index(), Some(i), "{e}");
            }
        }
    }
}

for_each_method!(one_bad_item_fails_only_itself, |ctx: mp::Context| {
    let p = pool(&ctx, 2);
    // A returned `Err`, a panic: the other items of the chunk (0..4, 0..3) keep their results.
    let r: Vec<_> = p.imap_chunked(fail_on, 0..10u64, 4).unwrap().collect();
    only_these_fail(
        &r,
        &[3],
        |e| matches!(e, Error::TaskFailed { message, .. } if message == "refusing 3"),
    );
    assert_eq!(*r[2].as_ref().unwrap(), 2);
    let r: Vec<_> = p.imap_chunked(panic_on, 0..6u64, 3).unwrap().collect();
    only_these_fail(
        &r,
        &[3],
        |e| matches!(e, Error::WorkerPanicked { message, .. } if message == "expected panic on 3"),
    );
    let r: Vec<_> = p
        .imap_unordered_chunked(panic_on, 0..6u64, 6)
        .unwrap()
        .collect();
    assert_eq!(r.iter().filter(|x| x.is_err()).count(), 1);
    // An argument that cannot be encoded (a path that is not UTF-8), in the parent.
    let paths = vec![
        odd_path(b"a"),
        odd_path(b"\xff"),
        odd_path(b"bc"),
        odd_path(b"d"),
    ];
    let r: Vec<_> = p
        .imap_chunked(path_len, paths.clone(), 4)
        .unwrap()
        .collect();
    only_these_fail(&r, &[1], |e| {
        matches!(e, Error::Codec { message, .. }
            if message.contains("PathBuf") && message.contains("path_bytes"))
    });
    assert_eq!(*r[2].as_ref().unwrap(), 7);
    // A result that cannot be encoded, in the worker.
    let r: Vec<_> = p.imap_chunked(path_of, 0..6u8, 6).unwrap().collect();
    only_these_fail(
        &r,
        &[3],
        |e| matches!(e, Error::Codec { message, .. } if message.contains("could not be sent")),
    );
    // `map` returns the first failing item's error.
    let err = p.map_chunked(fail_on, 0..10u64, 5).unwrap_err();
    assert_eq!(err.item_index(), Some(3), "{err}");
    let err = p.map_chunked(path_len, paths.clone(), 2).unwrap_err();
    assert!(matches!(err, Error::Codec { index: Some(1), .. }), "{err}");
    // With `PathBytes`, every path travels.
    let wrapped: Vec<mp::PathBytes> = paths.into_iter().map(mp::PathBytes::from).collect();
    assert_eq!(
        p.map_chunked(bytes_len, wrapped, 4).unwrap(),
        vec![6, 6, 7, 6]
    );
});

#[test]
fn an_item_that_does_not_decode_fails_with_its_index() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    // An argument that does not decode in the worker: the items before it run; those after it
    // cannot be located in the bytes and say so.
    let r: Vec<_> = p
        .imap_chunked(takes_no_thirteen, (10..16).map(NoThirteen), 6)
        .unwrap()
        .collect();
    assert_eq!(*r[2].as_ref().unwrap(), 12);
    let err = r[3].as_ref().unwrap_err();
    assert!(
        matches!(err, Error::Codec { index: Some(3), message } if message.contains("NoThirteen")),
        "{err}"
    );
    assert!(r[4..].iter().all(|x| matches!(x, Err(Error::Codec { .. }))));
    // A result that does not decode in the parent: likewise.
    let r: Vec<_> = p
        .imap_chunked(returns_no_thirteen, 10..16u8, 6)
        .unwrap()
        .collect();
    assert_eq!(r[2].as_ref().unwrap().0, 12);
    let err = r[3].as_ref().unwrap_err();
    assert!(
        matches!(err, Error::Codec { index: Some(3), message } if message.contains("NoThirteen")),
        "{err}"
    );
    assert_eq!(p.apply(square, (3,)).unwrap(), 9, "the pool still serves");
}

#[test]
fn imap_ends_when_its_pool_is_terminated() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    let mut it = p.imap(square, 0u64..).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    p.terminate();
    let rest = it.take(100_000).count();
    assert!(rest < 100_000, "an endless input stops with its pool");
}

#[test]
fn callbacks_may_submit_and_drop_the_pool() {
    let _g = shared();
    let p = Arc::new(Pool::new(2).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = p.clone();
    let r = p
        .apply_async_with(
            square,
            (3,),
            Callbacks::new().on_success(move |v: &u64| {
                let next = inner.apply_async(square, (*v,)).unwrap();
                tx.send(next).unwrap();
                drop(inner); // may be the last handle: dropping must not wait for this thread
            }),
        )
        .unwrap();
    assert_eq!(r.get().unwrap(), 9);
    let next = rx.recv_timeout(LONG).unwrap();
    assert_eq!(next.get_timeout(LONG).unwrap(), 81);
    let pids = p.worker_pids();
    drop(p);
    assert!(eventually(LONG, || pids.iter().all(|p| pid_gone(*p))));

    // The last handle dropped inside a callback terminates the pool from its own thread.
    let p = Arc::new(Pool::new(2).unwrap());
    let pids = p.worker_pids();
    let inner = p.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = p
        .apply_async_with(
            sleep_ms,
            (100,),
            Callbacks::new().on_success(move |_: &u64| {
                drop(inner);
                tx.send(()).unwrap();
            }),
        )
        .unwrap();
    drop(p);
    rx.recv_timeout(LONG).unwrap();
    assert_eq!(r.get().unwrap(), 100);
    assert!(eventually(LONG, || pids.iter().all(|p| pid_gone(*p))));
}

#[test]
fn callbacks_submitting_to_a_bounded_pool_never_wait_for_themselves() {
    let _g = shared();
    let p = Arc::new(
        Pool::builder()
            .processes(2)
            .max_tasks_in_flight(2)
            .build()
            .unwrap(),
    );
    let blocker = p.apply_async(sleep_ms, (60_000,)).unwrap();
    let inner = p.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = p
        .apply_async_with(
            square,
            (3,),
            Callbacks::new().on_success(move |v: &u64| {
                // The finished task's place is already free: this fits.
                let first = inner.apply_async(square, (*v,));
                // Now the bound is reached, and only this thread could free a place.
                let second = inner.apply_async(square, (1,));
                tx.send((first, second.err())).unwrap();
            }),
        )
        .unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), 9);
    let (first, second) = rx.recv_timeout(LONG).expect("the callback did not block");
    assert_eq!(first.unwrap().get_timeout(LONG).unwrap(), 81);
    assert!(
        matches!(&second, Some(Error::InvalidState { message }) if message.contains("max_tasks_in_flight")),
        "{second:?}"
    );
    assert!(!blocker.ready());
    let t = Instant::now();
    drop(p);
    assert!(matches!(
        blocker.get_timeout(LONG),
        Err(Error::PoolBroken { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// Short jobs are packed onto one worker, but a worker gets more only once it has answered
/// since it was last idle: right after a flood of short jobs, two slow ones still run on two
/// workers at once, not one after the other.
#[test]
fn slow_jobs_after_short_ones_go_to_different_workers() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    for _ in 0..3 {
        assert_eq!(p.map_chunked(square, 0..2000u64, 1).unwrap(), squares(2000));
        let pids = p.map_chunked(pid_after_ms, [300u64, 300], 1).unwrap();
        assert_ne!(pids[0], pids[1], "both slow jobs ran on worker {}", pids[0]);
    }
}

/// A caller that waits for each result before the next keeps using one worker, whichever
/// path its task takes (written by the caller to an idle worker, or dispatched by the
/// scheduler): on a cluster, a worker that sat idle answers later, as its agent backs off.
#[test]
fn a_caller_waiting_for_each_result_keeps_one_worker() {
    let _g = shared();
    let p = Pool::new(2).unwrap();
    // Both workers have started and answered.
    let pids = p.map_chunked(pid_after_ms, [50u64, 50], 1).unwrap();
    assert_ne!(pids[0], pids[1]);
    let first = p.apply(pid_after_ms, (0,)).unwrap();
    for i in 0..300 {
        assert_eq!(p.apply(pid_after_ms, (0,)).unwrap(), first, "call {i}");
    }
}

fn kill_worker(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// A worker that dies while no new one can start (the `exhaust pool-replace` reproduction) is
/// replaced once starting works again: the pool retries with a backoff instead of shrinking
/// for good.
#[test]
fn a_worker_that_cannot_be_replaced_at_once_is_replaced_later() {
    let _g = shared();
    let faults = mp::__private::StartFaults::new();
    let pool = mp::__private::pool_start_faults(
        Pool::builder()
            .processes(2)
            .context(mp::get_context(StartMethod::Spawn)),
        &faults,
    )
    .build()
    .unwrap();
    let victim = pool.worker_pids()[0];
    faults.fail_next(3);
    kill_worker(victim);
    assert!(
        eventually(LONG, || {
            let pids = pool.worker_pids();
            pids.len() == 2 && !pids.contains(&victim)
        }),
        "the pool did not get back to 2 workers: {:?}",
        pool.worker_pids()
    );
    assert_eq!(faults.left(), 0, "every failed start was retried");
    assert_eq!(pool.map(square, 0..10u64).unwrap().len(), 10);
}

/// With no worker at all and none able to start, queued tasks fail with the start error
/// instead of waiting forever; once starting works again the pool is whole and runs tasks.
#[test]
fn when_no_worker_can_start_tasks_fail_and_the_pool_recovers() {
    let _g = shared();
    let faults = mp::__private::StartFaults::new();
    let pool = mp::__private::pool_start_faults(
        Pool::builder()
            .processes(1)
            .context(mp::get_context(StartMethod::Spawn)),
        &faults,
    )
    .build()
    .unwrap();
    faults.fail_next(usize::MAX);
    kill_worker(pool.worker_pids()[0]);
    assert!(eventually(LONG, || pool.worker_pids().is_empty()));
    match pool.apply_async(square, (3,)).unwrap().get_timeout(LONG) {
        Err(Error::PoolBroken { message }) => {
            assert!(
                message.contains("no worker process could be started"),
                "{message}"
            );
            assert!(message.contains("injected"), "{message}");
        }
        other => panic!("expected a start failure, got {other:?}"),
    }
    faults.fail_next(0);
    assert!(
        eventually(LONG, || pool.worker_pids().len() == 1),
        "no worker started once starting works again"
    );
    assert_eq!(
        pool.apply_async(square, (4,))
            .unwrap()
            .get_timeout(LONG)
            .unwrap(),
        16
    );
}

/// The same at a real descriptor limit, in a process of its own: a killed worker cannot be
/// replaced while no descriptor can be opened, the other worker serves meanwhile, and the pool
/// is whole again once the limit is lifted.
#[test]
fn at_the_descriptor_limit_a_dead_worker_is_replaced_once_the_limit_is_lifted() {
    if !in_child_process(
        "at_the_descriptor_limit_a_dead_worker_is_replaced_once_the_limit_is_lifted",
    ) {
        return;
    }
    let pool = Pool::builder()
        .processes(2)
        .context(mp::get_context(StartMethod::Spawn))
        .build()
        .unwrap();
    let victim = pool.worker_pids()[0];
    let saved = refuse_new_fds();
    kill_worker(victim);
    let shrunk = eventually(LONG, || pool.worker_pids().len() == 1);
    let served = pool
        .apply_async(square, (5,))
        .and_then(|r| r.get_timeout(LONG));
    set_fd_limit(saved);
    assert!(shrunk, "{:?}", pool.worker_pids());
    assert_eq!(served.unwrap(), 25);
    assert!(
        eventually(LONG, || pool.worker_pids().len() == 2),
        "the pool did not get back to 2 workers: {:?}",
        pool.worker_pids()
    );
}

/// The CPU time this process has used (clock_gettime(CLOCK_PROCESS_CPUTIME_ID)).
fn own_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the whole call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spins until this process has used `ms` more milliseconds of CPU (not of wall time, so a busy
/// machine makes it slower, never shorter).
#[mp::worker]
fn burn_cpu(ms: u64) -> u64 {
    let start = own_cpu_time();
    let mut x = 0u64;
    while own_cpu_time() - start < Duration::from_millis(ms) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    x
}

#[test]
fn cpu_time_counts_the_workers() {
    // Under the fork server the workers are not children of this process, so the parent's own
    // accounting (getrusage(RUSAGE_CHILDREN), /usr/bin/time) misses them; `cpu_time` does not.
    let pool = Pool::new(1).unwrap();
    let before = pool.cpu_time().unwrap();
    pool.apply(burn_cpu, (300,)).unwrap();
    let used = pool.cpu_time().unwrap().saturating_sub(before);
    // /proc counts in clock ticks (10 ms), so allow for rounding below the 300 ms burned.
    assert!(used >= Duration::from_millis(250), "{used:?}");
}
