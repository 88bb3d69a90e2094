//! Queue, JoinableQueue and SimpleQueue, ported from CPython's `_TestQueue` and
//! `TestSimpleQueue` (rows QU-), plus what Python does not promise: an item whose `put` returned
//! is delivered even if its producer is SIGKILLed at once, and many producers and consumers lose
//! and duplicate nothing.
//!
//! What changed in the port: `put(block, timeout)` is `put` / `put_timeout` / `try_put` (likewise
//! `get`); an item that cannot be encoded is an error from `put` itself (QU-13, QU-14), not a
//! message printed by a feeder thread; `close()` makes this process's `put`/`get` fail with
//! `Error::Closed` (QU-16, QU-17, QU-24); `qsize` is exact everywhere (QU-10); `ShutDown` is
//! `Error::ShutDown` and `ValueError` from `task_done` is `Error::InvalidState` (QU-19..22). Also
//! here: `connection::wait` over queues. Not ported: QU-25/26 (manager proxies, part of the
//! manager).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use mp::{Connection, Error, JoinableQueue, Pipe, Queue, SimpleQueue, TryPutError};

#[mp::worker]
fn drain(q: Queue<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    while let Ok(v) = q.try_get() {
        out.push(v);
    }
    out
}

#[mp::worker]
fn put_range(q: Queue<u32>, from: u32, to: u32) {
    for i in from..to {
        q.put(i).unwrap();
    }
}

#[mp::worker]
fn put_then_die(q: Queue<u32>, n: u32) {
    for i in 0..n {
        q.put(i).unwrap();
    }
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

#[mp::worker]
fn joinable_consumer(q: JoinableQueue<Option<u32>>, results: Queue<(u32, u64)>) {
    let (mut n, mut sum) = (0u32, 0u64);
    loop {
        let item = q.get_timeout(LONG).unwrap();
        q.task_done().unwrap();
        match item {
            Some(v) => {
                n += 1;
                sum += u64::from(v);
            }
            None => break,
        }
    }
    results.put((n, sum)).unwrap();
}

#[mp::worker]
fn simple_queue_child(q: SimpleQueue<u32>) -> (bool, Vec<u32>) {
    let was_empty = q.is_empty();
    let mut got = Vec::new();
    while !q.is_empty() {
        got.push(q.get().unwrap());
    }
    (was_empty, got)
}

#[mp::worker]
fn producer(q: Queue<(u32, u32)>, id: u32, n: u32) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

#[mp::worker]
fn consumer(q: Queue<(u32, u32)>, producers: u32) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    loop {
        let item = q.get_timeout(LONG).unwrap();
        if item.0 == u32::MAX {
            break;
        }
        got.push(item);
    }
    let _ = producers;
    got
}

/// Tries every put and get form on a shut-down queue; returns the errors' names.
#[mp::worker]
fn shut_down_ops(q: JoinableQueue<u32>) -> Vec<String> {
    let name = |r: mp::Result<()>| match r {
        Err(Error::ShutDown) => "ShutDown".to_string(),
        other => format!("{other:?}"),
    };
    vec![
        name(q.put(1)),
        name(q.try_put(1).map_err(Error::from)),
        name(q.get().map(drop)),
        name(q.try_get().map(drop)),
    ]
}

#[mp::worker]
fn join_queue(q: JoinableQueue<u32>) {
    q.join_timeout(LONG).unwrap();
}

#[mp::worker]
fn get_one(q: JoinableQueue<u32>) -> u32 {
    q.get_timeout(LONG).unwrap()
}

/// Blocks in `get` (or in `put` on a full bounded queue) and reports how it ended.
#[mp::worker]
fn blocked_call(q: Queue<u32>, put: bool) -> bool {
    let r = if put { q.put(9) } else { q.get().map(drop) };
    matches!(r, Err(Error::ShutDown))
}

#[mp::worker]
fn put_one_later(q: Queue<u32>, go: Connection<()>) {
    go.recv().unwrap();
    q.put(5).unwrap();
}

/// Puts two items, then dies holding the queue's lock.
#[mp::worker]
fn die_holding_the_lock(q: Queue<u32>) {
    q.put(1).unwrap();
    q.put(2).unwrap();
    mp::__private::hold_queue_lock(&q);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

#[mp::worker]
fn echo_handle(q: Queue<Connection<String>>) {
    let conn = q.get_timeout(LONG).unwrap();
    conn.send(&"through a queued connection".into()).unwrap();
}

#[test]
fn qu_01_02_03_bounded_queue_fills() {
    let _g = shared();
    let q = Queue::<u32>::bounded(6).unwrap();
    assert!(q.is_empty() && !q.is_full());
    q.put(1).unwrap();
    q.put_timeout(2, Duration::from_secs(1)).unwrap();
    q.try_put(3).unwrap();
    q.put(4).unwrap();
    q.put_timeout(5, Duration::ZERO).unwrap();
    q.try_put(6).unwrap();
    assert!(q.is_full());
    assert_eq!(q.qsize(), 6);
    assert!(matches!(q.try_put(7), Err(TryPutError::Full(7))));
    assert!(matches!(
        q.put_timeout(7, Duration::ZERO),
        Err(TryPutError::Full(7))
    ));
}

#[test]
fn qu_04_put_timeout_waits_then_fails() {
    let _g = shared();
    let q = Queue::<u32>::bounded(1).unwrap();
    q.put(1).unwrap();
    let t = Instant::now();
    let timeout = Duration::from_millis(200);
    assert!(matches!(
        q.put_timeout(2, timeout),
        Err(TryPutError::Full(2))
    ));
    assert!(t.elapsed() >= timeout);
}

for_each_method!(qu_05_drained_by_another_process, |ctx: mp::Context| {
    let q = Queue::<u32>::bounded(6).unwrap();
    for i in 0..6 {
        q.put(i).unwrap();
    }
    let mut p = started(ctx.process(drain, (q.clone(),)));
    assert_eq!(join(&mut p).unwrap(), (0..6).collect::<Vec<_>>());
    assert!(q.is_empty() && !q.is_full());
});

#[test]
fn qu_06_07_08_get_forms() {
    let _g = shared();
    let q = Queue::<u32>::new().unwrap();
    for i in 0..4 {
        q.put(i).unwrap();
    }
    assert_eq!(q.get_timeout(LONG).unwrap(), 0);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 1);
    assert_eq!(q.try_get().unwrap(), 2);
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 3);
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(matches!(q.get_timeout(Duration::ZERO), Err(Error::Empty)));
    let t = Instant::now();
    let timeout = Duration::from_millis(200);
    assert!(matches!(q.get_timeout(timeout), Err(Error::Empty)));
    assert!(t.elapsed() >= timeout);
}

for_each_method!(
    qu_09_parent_then_child_items_in_order,
    |ctx: mp::Context| {
        let q = Queue::<u32>::new().unwrap();
        for i in 0..10 {
            q.put(i).unwrap();
        }
        let mut p = started(ctx.process(put_range, (q.clone(), 10, 20)));
        join(&mut p).unwrap();
        let got: Vec<u32> = (0..20).map(|_| q.get_timeout(LONG).unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    }
);

#[test]
fn qu_10_qsize_is_exact() {
    let _g = shared();
    let q = Queue::<u32>::new().unwrap();
    assert_eq!(q.qsize(), 0);
    q.put(1).unwrap();
    assert_eq!(q.qsize(), 1);
    q.put(2).unwrap();
    assert_eq!(q.qsize(), 2);
    q.get_timeout(LONG).unwrap();
    assert_eq!(q.qsize(), 1);
    q.get_timeout(LONG).unwrap();
    assert_eq!(q.qsize(), 0);
}

for_each_method!(qu_11_joinable_queue_with_workers, |ctx: mp::Context| {
    let q = JoinableQueue::<Option<u32>>::new().unwrap();
    let results = Queue::<(u32, u64)>::new().unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| started(ctx.process(joinable_consumer, (q.clone(), results.clone()))))
        .collect();
    for i in 0..10 {
        q.put(Some(i)).unwrap();
    }
    q.join_timeout(LONG).unwrap();
    for _ in 0..4 {
        q.put(None).unwrap();
    }
    q.join_timeout(LONG).unwrap();
    let (mut n, mut sum) = (0, 0);
    for _ in 0..4 {
        let (a, b) = results.get_timeout(LONG).unwrap();
        n += a;
        sum += b;
    }
    assert_eq!((n, sum), (10, 45));
    for mut w in workers {
        join(&mut w).unwrap();
    }
    assert!(matches!(q.task_done(), Err(Error::InvalidState { .. })));
});

for_each_method!(
    qu_12_items_survive_a_producer_killed_after_put,
    |ctx: mp::Context| {
        let q = Queue::<u32>::new().unwrap();
        let mut p = started(ctx.process(put_then_die, (q.clone(), 1000)));
        assert!(matches!(
            join(&mut p),
            Err(Error::ProcessFailed { exitcode: -9, .. })
        ));
        let got: Vec<u32> = (0..1000).map(|_| q.get_timeout(LONG).unwrap()).collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert!(q.is_empty());
    }
);

#[test]
fn qu_13_14_unencodable_item_is_an_error_and_takes_no_room() {
    let _g = shared();
    let q = Queue::<Connection<u8>>::bounded(1).unwrap();
    let (mut closed, other) = Pipe::<u8>::duplex().unwrap();
    closed.close();
    let err = q.put(closed).unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    assert!(err.to_string().contains("closed Connection"), "{err}");
    assert_eq!(q.qsize(), 0);
    q.put(other).unwrap();
    assert_eq!(q.qsize(), 1);
    q.get_timeout(LONG).unwrap();
    assert!(q.is_empty());
}

#[test]
fn qu_16_17_put_and_get_after_close() {
    let _g = shared();
    let q = Queue::<u32>::new().unwrap();
    let other_handle = q.clone();
    q.put(1).unwrap();
    q.close();
    q.close();
    assert!(matches!(q.put(2), Err(Error::Closed)));
    assert!(matches!(other_handle.get(), Err(Error::Closed)));
}

for_each_method!(qu_23_24_simple_queue_in_children, |ctx: mp::Context| {
    let q = SimpleQueue::<u32>::new().unwrap();
    let mut p = started(ctx.process(simple_queue_child, (q.clone(),)));
    assert_eq!(join(&mut p).unwrap(), (true, vec![]));
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let mut p = started(ctx.process(simple_queue_child, (q.clone(),)));
    assert_eq!(join(&mut p).unwrap(), (false, (0..5).collect()));
    q.close();
    q.close();
    assert!(matches!(q.put(1), Err(Error::Closed)));
});

for_each_method!(handles_travel_through_a_queue, |ctx: mp::Context| {
    let q = Queue::<Connection<String>>::new().unwrap();
    let mut p = started(ctx.process(echo_handle, (q.clone(),)));
    let (a, b) = Pipe::<String>::duplex().unwrap();
    q.put(b).unwrap();
    assert_eq!(a.recv_timeout(LONG).unwrap(), "through a queued connection");
    join(&mut p).unwrap();
});

#[test]
fn large_items_round_trip() {
    let _g = shared();
    let q = Queue::<Vec<u8>>::new().unwrap();
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    q.put(big.clone()).unwrap();
    q.put(vec![1, 2, 3]).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), big);
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![1, 2, 3]);
}

#[test]
fn bounded_zero_is_rejected() {
    let _g = shared();
    assert!(matches!(
        Queue::<u8>::bounded(0),
        Err(Error::InvalidArgument { .. })
    ));
}

for_each_method!(
    many_producers_many_consumers_lose_nothing,
    |ctx: mp::Context| {
        let (producers, consumers, per) = (4u32, 3u32, 5_000u32);
        let q = Queue::<(u32, u32)>::bounded(64).unwrap();
        let cs: Vec<_> = (0..consumers)
            .map(|_| started(ctx.process(consumer, (q.clone(), producers))))
            .collect();
        let ps: Vec<_> = (0..producers)
            .map(|id| started(ctx.process(producer, (q.clone(), id, per))))
            .collect();
        for mut p in ps {
            join(&mut p).unwrap();
        }
        for _ in 0..consumers {
            q.put((u32::MAX, 0)).unwrap();
        }
        let mut all = Vec::new();
        for mut c in cs {
            let got = join(&mut c).unwrap();
            // Each consumer sees every producer's items in increasing order.
            for id in 0..producers {
                let seq: Vec<u32> = got
                    .iter()
                    .filter(|(p, _)| *p == id)
                    .map(|(_, i)| *i)
                    .collect();
                assert!(
                    seq.windows(2).all(|w| w[0] < w[1]),
                    "producer {id} out of order"
                );
            }
            all.extend(got);
        }
        assert_eq!(
            all.len() as u32,
            producers * per,
            "lost or duplicated items"
        );
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "duplicated items");
        assert!(q.is_empty());
    }
);

for_each_method!(qu_19_shutdown_of_an_empty_queue, |ctx: mp::Context| {
    let q = JoinableQueue::<u32>::new().unwrap();
    let mut waiter = started(ctx.process(join_queue, (q.clone(),)));
    q.shutdown(false);
    assert!(q.is_shut_down());
    assert_eq!(q.qsize(), 0);
    join(&mut waiter).unwrap();
    assert!(matches!(q.put(1), Err(Error::ShutDown)));
    assert!(matches!(
        q.try_put(1),
        Err(TryPutError::Failed(1, Error::ShutDown))
    ));
    assert!(matches!(q.get(), Err(Error::ShutDown)));
    assert!(matches!(q.try_get(), Err(Error::ShutDown)));
    let mut other = started(ctx.process(shut_down_ops, (q.clone(),)));
    assert_eq!(join(&mut other).unwrap(), vec!["ShutDown"; 4]);
});

for_each_method!(qu_20_shutdown_of_a_non_empty_queue, |ctx: mp::Context| {
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put(7).unwrap();
    q.shutdown(false);
    assert!(matches!(q.put(8), Err(Error::ShutDown)));
    let mut getter = started(ctx.process(get_one, (q.clone(),)));
    assert_eq!(join(&mut getter).unwrap(), 7);
    let mut waiter = started(ctx.process(join_queue, (q.clone(),)));
    assert!(matches!(
        q.join_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(waiter.is_alive());
    q.task_done().unwrap();
    join(&mut waiter).unwrap();
    assert!(matches!(q.get(), Err(Error::ShutDown)));
});

for_each_method!(
    qu_21_immediate_shutdown_drops_pending_items,
    |ctx: mp::Context| {
        let q = JoinableQueue::<u32>::new().unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        let mut waiter = started(ctx.process(join_queue, (q.clone(),)));
        q.shutdown(true);
        assert_eq!(q.qsize(), 0);
        join(&mut waiter).unwrap();
        q.join_timeout(LONG).unwrap();
        assert!(matches!(q.get(), Err(Error::ShutDown)));
        assert!(matches!(q.task_done(), Err(Error::InvalidState { .. })));
    }
);

#[test]
fn qu_22_immediate_shutdown_keeps_items_already_taken_unfinished() {
    let _g = shared();
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    q.shutdown(true);
    assert!(matches!(
        q.join_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    q.task_done().unwrap();
    q.join_timeout(LONG).unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidState { .. })));
}

#[test]
fn immediate_shutdown_discards_handles_and_large_items() {
    let _g = shared();
    let q = Queue::<(Option<Connection<u8>>, serde_bytes::ByteBuf)>::new().unwrap();
    let (a, _b) = Pipe::<u8>::duplex().unwrap();
    q.put((Some(a), serde_bytes::ByteBuf::new())).unwrap();
    q.put((None, serde_bytes::ByteBuf::from(vec![3u8; 20 << 20])))
        .unwrap();
    q.put((None, serde_bytes::ByteBuf::from(vec![4u8; 8])))
        .unwrap();
    q.shutdown(true);
    assert_eq!(q.qsize(), 0);
    assert!(matches!(q.try_get(), Err(Error::ShutDown)));
}

for_each_method!(
    shutdown_wakes_blocked_getters_and_putters,
    |ctx: mp::Context| {
        let empty = Queue::<u32>::new().unwrap();
        let full = Queue::<u32>::bounded(1).unwrap();
        full.put(1).unwrap();
        let mut getter = started(ctx.process(blocked_call, (empty.clone(), false)));
        let mut putter = started(ctx.process(blocked_call, (full.clone(), true)));
        empty.shutdown(false);
        full.shutdown(false);
        assert!(join(&mut getter).unwrap());
        assert!(join(&mut putter).unwrap());
        assert_eq!(full.get_timeout(LONG).unwrap(), 1);
    }
);

for_each_method!(wait_reports_queues_with_items, |ctx: mp::Context| {
    let q1 = Queue::<u32>::new().unwrap();
    let q2 = Queue::<u32>::new().unwrap();
    let (go_tx, go_rx) = Pipe::<()>::duplex().unwrap();
    assert!(
        mp::connection::wait(&[&q1, &q2], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
    let mut p = started(ctx.process(put_one_later, (q2.clone(), go_rx)));
    go_tx.send(&()).unwrap();
    assert_eq!(
        mp::connection::wait(&[&q1, &q2], Some(LONG)).unwrap(),
        vec![1]
    );
    assert_eq!(q2.try_get().unwrap(), 5);
    assert!(
        mp::connection::wait(&[&q1, &q2], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
    join(&mut p).unwrap();
    let s = p.sentinel().unwrap();
    assert_eq!(
        mp::connection::wait(&[&q1, &q2, &s], Some(LONG)).unwrap(),
        vec![2]
    );
    q1.put(1).unwrap();
    assert_eq!(
        mp::connection::wait(&[&q1, &q2, &s], Some(LONG)).unwrap(),
        vec![0, 2]
    );
    q2.shutdown(false);
    assert_eq!(
        mp::connection::wait(&[&q2], Some(Duration::ZERO)).unwrap(),
        vec![0]
    );
});

#[test]
fn wait_on_a_queue_times_out_and_sees_items_put_before_it() {
    let _g = shared();
    let q = JoinableQueue::<u32>::new().unwrap();
    let t = Instant::now();
    let timeout = Duration::from_millis(200);
    assert!(
        mp::connection::wait(&[&q], Some(timeout))
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= timeout);
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(mp::connection::wait(&[&q], Some(LONG)).unwrap(), vec![0]);
    q.get_timeout(LONG).unwrap();
    assert_eq!(mp::connection::wait(&[&q], Some(LONG)).unwrap(), vec![0]);
    q.get_timeout(LONG).unwrap();
    assert!(
        mp::connection::wait(&[&q], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
}

/// A value whose decoding panics (a user `Deserialize` with a bug).
#[derive(serde::Serialize)]
struct PanicsOnDecode;

impl<'de> serde::Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("decoding bug");
    }
}

#[test]
fn a_panic_while_decoding_leaves_the_queue_usable() {
    let _g = shared();
    let q = Queue::<PanicsOnDecode>::new().unwrap();
    q.put(PanicsOnDecode).unwrap();
    q.put(PanicsOnDecode).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.get()));
    assert!(caught.is_err());
    assert_eq!(q.qsize(), 1);
    // The lock was released: another put and a timed get do not hang.
    q.put(PanicsOnDecode).unwrap();
    assert_eq!(q.qsize(), 2);
}

for_each_method!(
    a_holder_killed_with_the_lock_does_not_block_the_queue,
    |ctx: mp::Context| {
        let q = Queue::<u32>::new().unwrap();
        let mut p = started(ctx.process(die_holding_the_lock, (q.clone(),)));
        assert!(matches!(
            join(&mut p),
            Err(Error::ProcessFailed { exitcode: -9, .. })
        ));
        // The next locker notices the dead holder, repairs the count and carries on.
        q.put_timeout(3, LONG).unwrap();
        assert_eq!(q.qsize(), 3);
        let got: Vec<u32> = (0..3).map(|_| q.get_timeout(LONG).unwrap()).collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    }
);

for_each_method!(
    a_queue_of_one_hands_over_every_item_between_processes,
    |ctx: mp::Context| {
        // Every put waits for space and every get for an item: exercises both wake-up paths.
        let q = Queue::<u32>::bounded(1).unwrap();
        let n = 20_000;
        let mut p = started(ctx.process(put_range, (q.clone(), 0, n)));
        for i in 0..n {
            assert_eq!(q.get_timeout(LONG).unwrap(), i);
        }
        join(&mut p).unwrap();
        assert!(q.is_empty());
    }
);

/// Raises this process's open-file limit to its hard limit and returns it: the kernel caps the
/// descriptors a user has in flight at that limit.
fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_max
}

fn dev_null() -> mp::Handle {
    mp::Handle::from(std::os::fd::OwnedFd::from(
        std::fs::File::open("/dev/null").unwrap(),
    ))
}

#[test]
fn an_unbounded_queue_takes_thousands_of_handles_without_blocking() {
    let _g = shared();
    // One socket buffer holds a few hundred frames with handles: beyond that, `put` used to
    // wait forever for a consumer.
    let n = 5_000u64.min(open_file_limit() / 2);
    let q = Queue::<(u64, mp::Handle)>::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let putter = std::thread::spawn({
        let q = q.clone();
        move || {
            for i in 0..n {
                q.put((i, dev_null())).unwrap();
            }
            tx.send(()).unwrap();
        }
    });
    rx.recv_timeout(LONG)
        .expect("put blocked on an unbounded queue");
    putter.join().unwrap();
    assert_eq!(q.qsize() as u64, n);
    for i in 0..n {
        let (j, h) = q.get_timeout(LONG).unwrap();
        assert_eq!(j, i);
        let fd: std::os::fd::OwnedFd = h.into();
        assert!(std::fs::File::from(fd).metadata().is_ok());
    }
    assert!(q.is_empty());
}

/// Not `Clone`: a retry loop must get it back from the error.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Unique(u32);

#[test]
fn try_put_and_put_timeout_give_the_item_back() {
    let _g = shared();
    let q = Queue::<Unique>::bounded(1).unwrap();
    q.put(Unique(1)).unwrap();
    let mut item = Unique(2);
    let mut full = 0;
    loop {
        match q.try_put(item) {
            Ok(()) => break,
            Err(TryPutError::Full(back)) => {
                full += 1;
                item = back;
                assert_eq!(q.get_timeout(LONG).unwrap(), Unique(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(full, 1);
    let e = q
        .put_timeout(Unique(3), Duration::from_millis(10))
        .unwrap_err();
    assert!(e.is_full());
    assert_eq!(e.to_string(), "the queue is full");
    assert_eq!(format!("{e:?}"), "Full(..)");
    assert_eq!(e.into_inner(), Unique(3));
    // `?` turns it into `mp::Error::Full`.
    let via_question_mark = || -> mp::Result<()> {
        q.try_put(Unique(4))?;
        Ok(())
    };
    assert!(matches!(via_question_mark(), Err(Error::Full)));
    q.shutdown(false);
    match q.try_put(Unique(5)) {
        Err(TryPutError::Failed(Unique(5), Error::ShutDown)) => {}
        other => panic!("{other:?}"),
    }
    let (item, err) = q.put_timeout(Unique(6), LONG).unwrap_err().into_parts();
    assert_eq!(
        (item, err.to_string()),
        (Unique(6), Error::ShutDown.to_string())
    );
}

#[test]
fn an_item_that_cannot_be_encoded_comes_back_from_try_put() {
    let _g = shared();
    let q = Queue::<Connection<u8>>::new().unwrap();
    let (mut closed, _other) = Pipe::<u8>::duplex().unwrap();
    closed.close();
    match q.try_put(closed) {
        Err(TryPutError::Failed(back, Error::Codec { .. })) => assert!(back.send(&1).is_err()),
        other => panic!("{other:?}"),
    }
    assert!(q.is_empty());
}

// ---- Processes killed at random points -------------------------------------------------------

/// A random number from the kernel.
fn random() -> u64 {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    u64::from_le_bytes(b)
}

type Small = (u64, serde_bytes::ByteBuf);
type WithHandle = (u64, mp::Handle);

fn small_item(i: u64) -> Small {
    (
        i,
        serde_bytes::ByteBuf::from(vec![i as u8; (i % 200) as usize]),
    )
}

#[mp::worker]
fn loop_producer(q: Queue<Small>, done: Connection<u64>, n: u64) {
    for i in 0..n {
        q.put(small_item(i)).unwrap();
        done.send(&i).unwrap();
    }
}

#[mp::worker]
fn loop_producer_handles(q: Queue<WithHandle>, done: Connection<u64>, n: u64) {
    for i in 0..n {
        q.put((i, dev_null())).unwrap();
        done.send(&i).unwrap();
    }
}

/// Takes items and reports each, until told to stop and the queue is empty.
fn consume_until_stopped<T: serde::Serialize + serde::de::DeserializeOwned>(
    q: &Queue<T>,
    got: &Connection<u64>,
    stop: &Connection<()>,
    check: impl Fn(T) -> u64,
) {
    loop {
        match q.try_get() {
            Ok(item) => got.send(&check(item)).unwrap(),
            Err(Error::Empty) => {
                let objects: [&dyn mp::connection::Waitable; 2] = [q, stop];
                let ready = mp::connection::wait(&objects, Some(LONG)).unwrap();
                if ready == [1] && q.is_empty() {
                    return;
                }
            }
            Err(e) => panic!("get: {e}"),
        }
    }
}

#[mp::worker]
fn loop_consumer(q: Queue<Small>, got: Connection<u64>, stop: Connection<()>) {
    consume_until_stopped(&q, &got, &stop, |(i, bytes)| {
        assert_eq!(
            bytes.into_vec(),
            small_item(i).1.into_vec(),
            "item {i} corrupt"
        );
        i
    });
}

#[mp::worker]
fn loop_consumer_handles(q: Queue<WithHandle>, got: Connection<u64>, stop: Connection<()>) {
    consume_until_stopped(&q, &got, &stop, |(i, h)| {
        let fd: std::os::fd::OwnedFd = h.into();
        assert!(
            std::fs::File::from(fd).metadata().is_ok(),
            "item {i}: bad handle"
        );
        i
    });
}

/// Collects what a child reports until it exits.
fn reports(conn: Connection<u64>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while let Ok(i) = conn.recv_timeout(LONG) {
            v.push(i);
        }
        v
    })
}

/// Iterations of each kill loop: `MP_KILL_LOOPS`, 20 by default.
fn kill_loops() -> u64 {
    std::env::var("MP_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// A producer and a consumer on one queue, each SIGKILLed at a random point in most rounds
/// (the review's fault harness). Whatever the points: nothing put is lost except at most the
/// one item a killed consumer was taking, nothing is delivered twice, `qsize` is exact and
/// nobody is left blocked.
fn kill_loop<T: serde::Serialize + serde::de::DeserializeOwned + 'static>(
    handles: bool,
    start: impl Fn(
        &mp::Context,
        &Queue<T>,
        Connection<u64>,
        Connection<u64>,
        Connection<()>,
    ) -> (mp::Process<()>, mp::Process<()>),
    id_of: impl Fn(T) -> u64,
) {
    let ctx = mp::get_context(mp::StartMethod::ForkServer);
    let (mut kills, mut lost_total) = (0, 0);
    for round in 0..kill_loops() {
        let q = Queue::<T>::new().unwrap();
        let (done_r, done_w) = Pipe::<u64>::simplex().unwrap();
        let (got_r, got_w) = Pipe::<u64>::simplex().unwrap();
        let (stop_tx, stop_rx) = Pipe::<()>::duplex().unwrap();
        let (mut putter, mut taker) = start(&ctx, &q, done_w, got_w, stop_rx);
        let (done, got) = (reports(done_r), reports(got_r));
        let r = random();
        // Starting the two takes about a millisecond; the producer runs for a few more.
        std::thread::sleep(Duration::from_micros(500 + random() % 8_000));
        if r.is_multiple_of(2) {
            let _ = putter.kill();
            kills += 1;
        }
        std::thread::sleep(Duration::from_micros(random() % 3_000));
        let consumer_killed = !r.is_multiple_of(3);
        if consumer_killed {
            let _ = taker.kill();
            kills += 1;
        }
        assert!(putter.join_timeout(LONG), "round {round}: producer stuck");
        // The consumer may be dead already: then nobody reads this.
        let _ = stop_tx.send(&());
        assert!(taker.join_timeout(LONG), "round {round}: consumer stuck");
        assert!(
            consumer_killed || taker.exitcode() == Some(0),
            "round {round}: consumer failed: {:?}",
            taker.join()
        );
        let put = done.join().unwrap();
        let mut seen = std::collections::HashMap::<u64, u32>::new();
        for i in got.join().unwrap() {
            *seen.entry(i).or_default() += 1;
        }
        let qsize = q.qsize();
        let mut drained = 0;
        loop {
            match q.try_get() {
                Ok(item) => {
                    *seen.entry(id_of(item)).or_default() += 1;
                    drained += 1;
                }
                Err(Error::Empty) => break,
                Err(e) => panic!("round {round}: get: {e}"),
            }
        }
        let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        let lost = put.iter().filter(|i| !seen.contains_key(i)).count();
        assert!(dups.is_empty(), "round {round}: delivered twice: {dups:?}");
        assert!(
            lost == 0 || (consumer_killed && lost == 1),
            "round {round}: lost {lost} of {} (consumer killed: {consumer_killed})",
            put.len()
        );
        assert_eq!(
            qsize, drained,
            "round {round}: qsize {qsize} but {drained} left"
        );
        lost_total += lost;
    }
    eprintln!(
        "kill loop ({}): {} rounds, {kills} kills, {lost_total} items lost with their consumer",
        if handles { "handles" } else { "small items" },
        kill_loops()
    );
}

#[test]
fn processes_killed_at_random_points_lose_and_duplicate_nothing() {
    let _g = shared();
    kill_loop::<Small>(
        false,
        |ctx, q, done, got, stop| {
            (
                started(ctx.process(loop_producer, (q.clone(), done, 3_000))),
                started(ctx.process(loop_consumer, (q.clone(), got, stop))),
            )
        },
        |(i, _)| i,
    );
}

#[test]
fn processes_killed_at_random_points_lose_and_duplicate_no_handle() {
    let _g = shared();
    kill_loop::<WithHandle>(
        true,
        |ctx, q, done, got, stop| {
            (
                started(ctx.process(loop_producer_handles, (q.clone(), done, 600))),
                started(ctx.process(loop_consumer_handles, (q.clone(), got, stop))),
            )
        },
        |(i, _)| i,
    );
}

/// Takes items until the queue stays empty for 20 ms (every item was put before it started),
/// marking each in `states`: 1 once taken,
/// 2 once `task_done` returned. A few microseconds of work each, so that kills land anywhere.
#[mp::worker]
fn marking_consumer(q: JoinableQueue<u32>, states: mp::RawArray<u8>) {
    while let Ok(i) = q.get_timeout(Duration::from_millis(20)) {
        states.set(i as usize, 1).unwrap();
        let until = std::time::Instant::now() + Duration::from_micros(20);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        q.task_done().unwrap();
        states.set(i as usize, 2).unwrap();
    }
}

/// A JoinableQueue's consumer SIGKILLed at a random point, while another goes on: `join` never
/// waits forever, and reports as lost at most the one item the killed consumer held, and only
/// an item whose `task_done` did not come back.
#[test]
fn joinable_consumers_killed_at_random_points_never_leave_join_waiting() {
    let _g = shared();
    let ctx = mp::get_context(mp::StartMethod::ForkServer);
    let rounds = kill_loops() * 5;
    let (mut lost_total, mut clean) = (0, 0);
    for round in 0..rounds {
        let q = JoinableQueue::<u32>::new().unwrap();
        let n = 60;
        let states = mp::RawArray::<u8>::new(n).unwrap();
        for i in 0..n as u32 {
            q.put(i).unwrap();
        }
        let mut victim = started(ctx.process(marking_consumer, (q.clone(), states.clone())));
        let mut other = started(ctx.process(marking_consumer, (q.clone(), states.clone())));
        std::thread::sleep(Duration::from_micros(random() % 3_000));
        let _ = victim.kill();
        assert!(
            victim.join_timeout(LONG),
            "round {round}: consumer not reaped"
        );
        let outcome = q.join_timeout(LONG);
        assert!(other.join_timeout(LONG), "round {round}: consumer stuck");
        let unfinished = states.to_vec().iter().filter(|s| **s != 2).count();
        let lost = match outcome {
            Ok(()) => 0,
            Err(Error::ItemsLost { count }) => count as usize,
            Err(e) => panic!("round {round}: join: {e}"),
        };
        assert!(
            unfinished <= 1,
            "round {round}: {unfinished} items not done"
        );
        assert!(
            lost <= unfinished,
            "round {round}: {lost} lost, {unfinished} not done"
        );
        assert_eq!(q.qsize(), 0, "round {round}");
        assert!(
            matches!(q.join_timeout(Duration::ZERO), Ok(())),
            "round {round}: a loss is reported once"
        );
        lost_total += lost;
        clean += usize::from(lost == 0);
    }
    eprintln!("joinable kill loop: {rounds} rounds, {lost_total} items lost, {clean} clean");
}
