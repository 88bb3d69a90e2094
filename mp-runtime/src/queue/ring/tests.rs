//! The ring's unit tests: corrupt shared memory, and a process killed at every crash point of
//! every transition (see [`crash`]).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::*;
use crate::queue::crash::{Ended, killed_at};

fn put(ring: &Ring, bytes: &[u8]) -> Result<()> {
    ring.put(bytes, &[], false, Deadline::after(Some(Duration::ZERO)))
}

fn get(ring: &Ring) -> Result<Vec<u8>> {
    ring.get(false, Deadline::after(Some(Duration::ZERO)), |bytes, _| {
        Ok(bytes.to_vec())
    })
}

/// Overwrites the length of the record at the ring's head, as a misbehaving process could.
fn corrupt_head_record(ring: &Ring, len: u32) {
    let head = End::load(&ring.header().head.0, Ordering::Relaxed);
    let mut rh = [0u8; RECORD_HEADER as usize];
    ring.read_at(head.off, &mut rh);
    rh[..4].copy_from_slice(&len.to_le_bytes());
    ring.write_at(head.off, &rh);
}

#[test]
fn a_record_longer_than_the_ring_is_an_error_and_the_queue_recovers() {
    let ring = Ring::create(0, 4096).unwrap();
    put(&ring, b"first").unwrap();
    put(&ring, b"second").unwrap();
    corrupt_head_record(&ring, u32::MAX - 7);
    assert!(matches!(get(&ring), Err(Error::Protocol { .. })));
    assert_eq!(ring.count(), 0);
    put(&ring, b"third").unwrap();
    assert_eq!(get(&ring).unwrap(), b"third");
}

#[test]
fn offsets_that_do_not_add_up_are_an_error_on_put_get_and_shutdown() {
    let ring = Ring::create(0, 4096).unwrap();
    let h = ring.header();
    put(&ring, b"x").unwrap();
    // Head past tail: a subtraction that would underflow.
    let tail = End::load(&h.tail.0, Ordering::Relaxed);
    h.head
        .0
        .store(tail.advanced(64, 0).word(), Ordering::Relaxed);
    assert!(matches!(get(&ring), Err(Error::Protocol { .. })));
    assert_eq!(ring.count(), 0);
    put(&ring, b"z").unwrap();
    assert_eq!(get(&ring).unwrap(), b"z");
    // Tail far beyond head: more pending bytes than the ring holds. Producers see it once
    // their idea of the room runs out.
    put(&ring, b"w").unwrap();
    let tail = End::load(&h.tail.0, Ordering::Relaxed);
    h.tail
        .0
        .store(tail.advanced(1 << 20, 0).word(), Ordering::Relaxed);
    assert!(matches!(put(&ring, b"y"), Err(Error::Protocol { .. })));
    assert_eq!(ring.count(), 0);
    put(&ring, b"v").unwrap();
    assert_eq!(get(&ring).unwrap(), b"v");
    put(&ring, b"u").unwrap();
    corrupt_head_record(&ring, 1 << 20);
    ring.shutdown(true);
    assert!(matches!(get(&ring), Err(Error::ShutDown)));
}

#[test]
fn a_lock_taken_over_from_a_dead_holder_finds_a_corrupt_ring_emptied_on_get() {
    let ring = Ring::create(0, 4096).unwrap();
    put(&ring, b"x").unwrap();
    corrupt_head_record(&ring, 1 << 20);
    // A thread id beyond pid_max: a holder that cannot be alive.
    ring.header()
        .consumers
        .lock
        .store(0x3FFF_FFF0, Ordering::Relaxed);
    assert!(matches!(get(&ring), Err(Error::Protocol { .. })));
    assert_eq!(ring.count(), 0);
    assert!(matches!(get(&ring), Err(Error::Empty)));
}

// ---- Crash points ------------------------------------------------------------------------

/// An item of the crash tests: its number, in bytes padded to `pad` bytes, and optionally a
/// pipe whose content is the number again (so that a handle delivered with the wrong item
/// shows).
#[derive(Clone, Copy)]
struct Item {
    id: u64,
    pad: usize,
    handle: bool,
}

impl Item {
    fn small(id: u64) -> Item {
        Item {
            id,
            pad: (id as usize * 7) % 40,
            handle: false,
        }
    }

    fn with_handle(id: u64) -> Item {
        Item {
            handle: true,
            ..Item::small(id)
        }
    }

    /// Over a sixteenth of a 4 KiB ring: travels in a memfd of its own.
    fn large(id: u64) -> Item {
        Item {
            pad: 1000,
            ..Item::small(id)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = self.id.to_le_bytes().to_vec();
        b.resize(8 + self.pad, self.id as u8);
        b
    }

    /// The pipe's read end, holding the item's number.
    fn handle(&self) -> Option<OwnedFd> {
        self.handle.then(|| {
            let (r, mut w) = std::io::pipe().unwrap();
            w.write_all(&self.id.to_le_bytes()).unwrap();
            OwnedFd::from(r)
        })
    }

    fn put(&self, ring: &Ring) {
        let fd = self.handle();
        let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        ring.put(
            &self.bytes(),
            &fds,
            false,
            Deadline::after(Some(Duration::ZERO)),
        )
        .unwrap();
    }
}

/// Takes one item and checks it: bytes as put, and its handle (if any) holding its number.
fn take(ring: &Ring) -> Option<u64> {
    let got = ring.get(
        false,
        Deadline::after(Some(Duration::ZERO)),
        |bytes, fds| Ok((bytes.to_vec(), fds)),
    );
    let (bytes, fds) = match got {
        Ok(g) => g,
        Err(Error::Empty) | Err(Error::ShutDown) => return None,
        Err(e) => panic!("get: {e}"),
    };
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert!(
        bytes[8..].iter().all(|b| *b == id as u8),
        "item {id} corrupt"
    );
    assert!(fds.len() <= 1, "item {id} came with {} handles", fds.len());
    if let Some(fd) = fds.into_iter().next() {
        let mut f = std::fs::File::from(fd);
        let mut b = [0u8; 8];
        f.read_exact(&mut b).unwrap();
        assert_eq!(
            u64::from_le_bytes(b),
            id,
            "item {id} came with another's handle"
        );
    }
    Some(id)
}

/// Takes every item; checks that `qsize` said how many there were.
fn drain(ring: &Ring) -> Vec<u64> {
    let before = ring.count();
    let mut got = Vec::new();
    while let Some(id) = take(ring) {
        got.push(id);
    }
    assert_eq!(
        before,
        got.len() as u64,
        "qsize {before} but {got:?} came out"
    );
    assert_eq!(ring.count(), 0);
    got
}

/// The ring still works after whatever happened: a new item goes in and comes out alone.
fn still_works(ring: &Ring) {
    Item::with_handle(999).put(ring);
    Item::small(998).put(ring);
    assert_eq!(drain(ring), vec![999, 998]);
}

/// Runs `op` on a ring made by `setup` in a child killed at its first, second, … crash point,
/// until the child finishes; after each, `check` looks at the ring the child left. Returns
/// how many crash points there were.
fn sweep(setup: impl Fn() -> Ring, op: impl Fn(&Ring), check: impl Fn(&Ring, Ended)) -> u32 {
    for k in 1..10_000 {
        let ring = setup();
        let ended = killed_at(k, || op(&ring));
        check(&ring, ended);
        if ended == Ended::Finished {
            return k - 1;
        }
    }
    unreachable!("an operation without end")
}

fn ring_with(len: usize, items: &[Item]) -> Ring {
    let ring = Ring::create(0, len).unwrap();
    for i in items {
        i.put(&ring);
    }
    ring
}

fn joinable_with(len: usize, items: &[Item]) -> Ring {
    let ring = Ring::create(0, len).unwrap();
    ring.make_joinable();
    for i in items {
        i.put(&ring);
    }
    ring
}

fn ids(items: &[Item]) -> Vec<u64> {
    items.iter().map(|i| i.id).collect()
}

/// A producer killed during a sequence of puts: what it put is there in order, plus at most the
/// one it was putting (whose `put` had not returned), each with its own handle.
fn puts_survive_a_kill_anywhere(before: &[Item], puts: &[Item], len: usize) {
    let points = sweep(
        || ring_with(len, before),
        |ring| {
            for i in puts {
                i.put(ring);
            }
        },
        |ring, ended| {
            let got = drain(ring);
            let expect_min = ids(before);
            assert!(got.starts_with(&expect_min), "{got:?}");
            let rest = &got[before.len()..];
            assert!(ids(puts).starts_with(rest), "{got:?}");
            if ended == Ended::Finished {
                assert_eq!(rest.len(), puts.len());
            }
            still_works(ring);
        },
    );
    assert!(points >= puts.len() as u32);
}

/// A consumer killed during a sequence of gets: the items not taken are all there, in order,
/// each with its own handle; at most the one being taken is gone.
fn gets_survive_a_kill_anywhere(items: &[Item], gets: usize, len: usize) {
    let points = sweep(
        || ring_with(len, items),
        |ring| {
            for _ in 0..gets {
                take(ring).unwrap();
            }
        },
        |ring, ended| {
            let got = drain(ring);
            let all = ids(items);
            assert!(all.ends_with(&got), "{got:?}");
            if ended == Ended::Finished {
                assert_eq!(got.len(), items.len() - gets);
            }
            still_works(ring);
        },
    );
    assert!(points >= gets as u32);
}

#[test]
fn crash_points_of_put() {
    puts_survive_a_kill_anywhere(&[Item::small(1)], &[Item::small(2), Item::small(3)], 4096);
}

#[test]
fn crash_points_of_put_with_handles_across_segments() {
    // Unit tests give each side segment the smallest buffer: a few frames fill it.
    let before: Vec<Item> = (1..4).map(Item::with_handle).collect();
    let puts: Vec<Item> = (4..20).map(Item::with_handle).collect();
    puts_survive_a_kill_anywhere(&before, &puts, 1 << 16);
}

#[test]
fn crash_points_of_put_large() {
    puts_survive_a_kill_anywhere(&[Item::small(1)], &[Item::large(2), Item::large(3)], 4096);
}

#[test]
fn crash_points_of_get() {
    let items: Vec<Item> = (1..5).map(Item::small).collect();
    gets_survive_a_kill_anywhere(&items, 2, 4096);
}

#[test]
fn crash_points_of_get_with_handles_across_segments() {
    // The consumer of the review (qkill): killed right after taking a side frame, it must not
    // cost any later item its handle.
    let items: Vec<Item> = (1..20).map(Item::with_handle).collect();
    gets_survive_a_kill_anywhere(&items, 12, 1 << 16);
}

#[test]
fn crash_points_of_get_decoded_in_place() {
    // Over 256 bytes but under a sixteenth of the ring: decoded where it lies, then taken.
    let big = |id| Item {
        pad: 1000,
        ..Item::small(id)
    };
    let items = [big(1), Item::small(2), big(3), big(4)];
    gets_survive_a_kill_anywhere(&items, 3, 1 << 16);
}

#[test]
fn crash_points_of_get_large() {
    let items = [Item::large(1), Item::small(2), Item::large(3)];
    gets_survive_a_kill_anywhere(&items, 2, 4096);
}

#[test]
fn crash_points_of_a_restart_by_a_producer() {
    // A producer that finds the ring empty far into the data area puts a skip record and its
    // own at the start, in one publication.
    let setup = || {
        let ring = ring_with(4096, &[Item::small(1)]);
        for i in 2.. {
            Item::small(i).put(&ring);
            take(&ring).unwrap();
            let tail = End::load(&ring.header().tail.0, Ordering::Relaxed);
            if u64::from(tail.off) % 4096 > 1100 {
                break;
            }
        }
        drain(&ring);
        ring
    };
    // Producers look once every sixteenth of a small ring; a consumer keeps up with them.
    let op = |ring: &Ring| {
        for i in 50..58 {
            Item::small(i).put(ring);
            assert_eq!(take(ring), Some(i));
        }
    };
    sweep(setup, op, |ring, _| {
        let got = drain(ring);
        assert!(
            got.len() <= 1 && got.iter().all(|i| (50..58).contains(i)),
            "{got:?}"
        );
        still_works(ring);
    });
    let ring = setup();
    op(&ring);
    let tail = End::load(&ring.header().tail.0, Ordering::Relaxed);
    assert!(u64::from(tail.off) % 4096 < 1024, "restarted: {tail:?}");
}

/// Sweeps `gets` gets on the ring of `setup`, checking the leftovers against what it holds;
/// there must be at least `points` crash points.
fn gets_after(setup: impl Fn() -> Ring, gets: usize, points: u32) {
    let found = sweep(
        &setup,
        |ring| {
            for _ in 0..gets {
                take(ring).unwrap();
            }
        },
        |ring, ended| {
            let all = drain(&setup());
            let got = drain(ring);
            assert!(all.ends_with(&got), "{got:?} is not a tail of {all:?}");
            if ended == Ended::Finished {
                assert_eq!(got.len(), all.len() - gets);
            }
            still_works(ring);
        },
    );
    assert!(found >= points, "{found} crash points");
}

#[test]
fn crash_points_of_records_that_wrap_around_the_end() {
    // A 4 KiB ring with 4000 bytes taken: the next records straddle the end of the data area.
    // One item stays pending, so the ring never drains (which would restart it).
    let setup = || {
        let ring = ring_with(4096, &[Item::small(0)]);
        for i in 1.. {
            Item::small(i).put(&ring);
            take(&ring).unwrap();
            let tail = End::load(&ring.header().tail.0, Ordering::Relaxed);
            if u64::from(tail.off) % 4096 > 3900 {
                break;
            }
        }
        ring
    };
    let tail = End::load(&setup().header().tail.0, Ordering::Relaxed);
    assert!(u64::from(tail.off) % 4096 > 3900, "{tail:?}");
    puts_survive_a_kill_anywhere_on(&setup, &[Item::small(200), Item::with_handle(201)]);
    gets_after(
        || {
            let ring = setup();
            Item::small(200).put(&ring);
            Item::small(201).put(&ring);
            ring
        },
        3,
        3,
    );
}

fn puts_survive_a_kill_anywhere_on(setup: &impl Fn() -> Ring, puts: &[Item]) {
    sweep(
        setup,
        |ring| {
            for i in puts {
                i.put(ring);
            }
        },
        |ring, ended| {
            let before = drain(&setup());
            let got = drain(ring);
            assert!(got.starts_with(&before), "{got:?}");
            let rest = &got[before.len()..];
            assert!(ids(puts).starts_with(rest), "{got:?}");
            if ended == Ended::Finished {
                assert_eq!(rest.len(), puts.len());
            }
            still_works(ring);
        },
    );
}

/// Bytes of memory the ring's pages take.
fn resident(ring: &Ring) -> u64 {
    nix::sys::stat::fstat(ring.region_fd()).unwrap().st_blocks as u64 * 512
}

#[test]
fn crash_points_of_a_restart_by_a_consumer_that_gives_memory_back() {
    // 5 MiB of items on an 8 MiB ring; the last get restarts the ring (skip record, tail, head:
    // the review's case of a consumer killed between the stores) and gives all but the first
    // 4 MiB back.
    let item = Item {
        id: 7,
        pad: 200,
        handle: false,
    };
    let setup = || {
        let ring = Ring::create(0, 8 << 20).unwrap();
        let n = (5 << 20) / 224 + 1;
        for _ in 0..n {
            item.put(&ring);
        }
        for _ in 0..n - 1 {
            take(&ring).unwrap();
        }
        ring
    };
    assert!(resident(&setup()) > 5 << 20);
    let points = sweep(
        setup,
        |ring| {
            take(ring).unwrap();
        },
        |ring, _| {
            assert!(drain(ring).len() <= 1);
            still_works(ring);
        },
    );
    assert!(points >= 3);
    let ring = setup();
    take(&ring).unwrap();
    // The header page, the 4 MiB kept, and the page of the skip record written after.
    assert!(
        resident(&ring) <= KEEP_RESIDENT + 2 * 4096,
        "{}",
        resident(&ring)
    );
}

#[test]
fn crash_points_of_an_immediate_shutdown() {
    // Items with and without handles, two taken and one of those marked done; an immediate
    // shutdown killed anywhere leaves the count of unfinished items exact.
    let items = [
        Item::with_handle(1),
        Item::small(2),
        Item::with_handle(3),
        Item::large(4),
        Item::with_handle(5),
    ];
    let setup = || {
        let ring = joinable_with(4096, &items);
        take(&ring).unwrap();
        take(&ring).unwrap();
        assert!(ring.task_done());
        ring
    };
    let points = sweep(
        setup,
        |ring| ring.shutdown(true),
        |ring, ended| {
            let pending = ring.count();
            assert!(pending == 0 || pending == 3, "{pending}");
            // One taken item is not done yet: it stays unfinished whatever was dropped.
            assert_eq!(ring.unfinished(), pending as u32 + 1);
            let got = drain(ring);
            assert!(got.is_empty() || got == vec![3, 4, 5], "{got:?}");
            assert_eq!(ring.unfinished(), 1 + got.len() as u32);
            for _ in 0..=got.len() {
                assert!(ring.task_done());
            }
            assert!(!ring.task_done());
            assert_eq!(
                ring.join(Deadline::after(Some(Duration::ZERO))),
                Joined::Finished
            );
            if ended == Ended::Finished {
                assert!(got.is_empty());
            }
            assert!(ring.is_shut_down() || ended == Ended::Killed);
        },
    );
    assert!(points >= 4);
}

#[test]
fn a_put_killed_after_its_frame_leaves_a_stale_frame_that_is_skipped() {
    // The frame is sent, the record never published: the next item must get its own handle.
    let ring = ring_with(4096, &[Item::with_handle(1)]);
    let ended = killed_at(2, || Item::with_handle(2).put(&ring));
    assert_eq!(ended, Ended::Killed);
    Item::with_handle(3).put(&ring);
    assert_eq!(drain(&ring), vec![1, 3]);
}

/// One producer and one consumer thread, big records decoded in place while the next ones are
/// written, restarts on both sides: every record arrives intact and in order.
fn concurrent_flow(ring_len: usize, sizes: impl Fn(u64) -> usize + Send + Sync + 'static, n: u64) {
    let ring = std::sync::Arc::new(Ring::create(0, ring_len).unwrap());
    let sizes = std::sync::Arc::new(sizes);
    let producer = {
        let (ring, sizes) = (ring.clone(), sizes.clone());
        std::thread::spawn(move || {
            for i in 0..n {
                let mut b = vec![i as u8; sizes(i)];
                b[..8].copy_from_slice(&i.to_le_bytes());
                ring.put(
                    &b,
                    &[],
                    true,
                    Deadline::after(Some(Duration::from_secs(60))),
                )
                .unwrap();
            }
        })
    };
    for i in 0..n {
        let b = ring
            .get(
                true,
                Deadline::after(Some(Duration::from_secs(60))),
                |b, _| Ok(b.to_vec()),
            )
            .unwrap();
        assert_eq!(b.len(), sizes(i), "record {i}");
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), i);
        assert!(b[8..].iter().all(|x| *x == i as u8), "record {i} corrupt");
    }
    producer.join().unwrap();
    assert_eq!(ring.count(), 0);
}

#[test]
fn big_records_decoded_in_place_while_the_next_are_written() {
    concurrent_flow(8 << 20, |i| 100_000 + (i as usize * 7919) % 300_000, 3_000);
}

#[test]
fn small_records_flow_through_restarts() {
    concurrent_flow(1 << 20, |i| 8 + (i as usize % 50), 300_000);
}

#[test]
fn crash_points_of_producers_taking_skip_records_for_consumers() {
    // A producer restarted the ring and no consumer has come since: the skip record sits at
    // `head`. Producers that run out of room take it themselves rather than wait.
    let setup = || {
        let ring = ring_with(4096, &[Item::small(1)]);
        for i in 2.. {
            Item::small(i).put(&ring);
            take(&ring).unwrap();
            let tail = End::load(&ring.header().tail.0, Ordering::Relaxed);
            if u64::from(tail.off) % 4096 > 2000 {
                break;
            }
        }
        drain(&ring);
        // Puts (each taken at once) until one restarts the ring: its record lands at the start
        // of the data area, after the skip record, and is left there.
        for i in 100.. {
            Item::small(i).put(&ring);
            let tail = End::load(&ring.header().tail.0, Ordering::Relaxed);
            if u64::from(tail.off) % 4096 < 1024 {
                break;
            }
            take(&ring).unwrap();
        }
        ring
    };
    let before = drain(&setup());
    // Enough to need the room behind the skip record.
    let puts: Vec<Item> = (500..560).map(Item::small).collect();
    puts_survive_a_kill_anywhere_on(&setup, &puts);
    let ring = setup();
    let skip_at = End::load(&ring.header().head.0, Ordering::Relaxed);
    for i in &puts {
        i.put(&ring);
    }
    let head = End::load(&ring.header().head.0, Ordering::Relaxed);
    assert!(
        head != skip_at && head.count == skip_at.count,
        "skip taken: {head:?}"
    );
    let mut all = before;
    all.extend(ids(&puts));
    assert_eq!(drain(&ring), all);
}

#[test]
fn many_producer_and_consumer_threads_keep_each_producers_order() {
    let ring = std::sync::Arc::new(Ring::create(0, 1 << 20).unwrap());
    let (producers, consumers, per) = (3u64, 3u64, 20_000u64);
    let deadline = || Deadline::after(Some(Duration::from_secs(60)));
    let puts: Vec<_> = (0..producers)
        .map(|p| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    // Sizes from a few bytes to records decoded in place.
                    let mut b = vec![p as u8; 16 + (i as usize * 31) % 700];
                    b[..8].copy_from_slice(&(p * per + i).to_le_bytes());
                    ring.put(&b, &[], true, deadline()).unwrap();
                }
            })
        })
        .collect();
    let gets: Vec<_> = (0..consumers)
        .map(|_| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(v) = ring.get(true, deadline(), |b, _| {
                    let v = u64::from_le_bytes(b[..8].try_into().unwrap());
                    assert!(
                        b[8..].iter().all(|x| u64::from(*x) == v / per),
                        "{v} corrupt"
                    );
                    Ok(v)
                }) {
                    if v == u64::MAX {
                        break;
                    }
                    got.push(v);
                }
                got
            })
        })
        .collect();
    for p in puts {
        p.join().unwrap();
    }
    for _ in 0..consumers {
        ring.put(&u64::MAX.to_le_bytes(), &[], true, deadline())
            .unwrap();
    }
    let mut all = Vec::new();
    for g in gets {
        let got = g.join().unwrap();
        for p in 0..producers {
            let mine: Vec<u64> = got.iter().copied().filter(|v| v / per == p).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} out of order"
            );
        }
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..producers * per).collect::<Vec<_>>());
    assert_eq!(ring.count(), 0);
}

/// A JoinableQueue consumer killed anywhere in a get, or after it: an item it took is owed by
/// it, and `join` counts it as lost once it is gone; an item it did not take is still in the
/// ring. Nothing is counted twice, nothing is missed, `join` never waits forever.
#[test]
fn crash_points_of_a_joinable_get_and_its_task_done() {
    let items = [Item::small(1), Item::with_handle(2), Item::large(3)];
    let points = sweep(
        || joinable_with(1 << 16, &items),
        |ring| {
            take(ring).unwrap();
            assert!(ring.task_done());
            take(ring).unwrap();
        },
        |ring, ended| {
            let left = ring.count() as u32;
            // The child is reaped: whatever it held and did not mark done is lost.
            let took = items.len() as u32 - left;
            let lost = match ring.join(Deadline::after(Some(Duration::ZERO))) {
                Joined::Finished => 0,
                Joined::Lost(n) => n,
                Joined::TimedOut => {
                    // Items are left (or a lost one is noticed only now): drain them.
                    let got = drain(ring);
                    assert_eq!(got.len() as u32, left);
                    for _ in &got {
                        assert!(ring.task_done());
                    }
                    match ring.join(Deadline::after(Some(Duration::from_secs(10)))) {
                        Joined::Finished => 0,
                        Joined::Lost(n) => n,
                        Joined::TimedOut => panic!("join waits forever ({ended:?})"),
                    }
                }
            };
            // Of what the child took, one was marked done (if it got that far); the rest is
            // lost.
            assert!(lost <= took && took - lost <= 1, "took {took}, lost {lost}");
            if ended == Ended::Finished {
                assert_eq!((took, lost), (2, 1));
            }
            assert_eq!(ring.unfinished(), 0);
            assert!(!ring.task_done(), "nothing is left to mark done");
            assert_eq!(
                ring.join(Deadline::after(Some(Duration::ZERO))),
                Joined::Finished,
                "a loss is reported once"
            );
            still_works(ring);
        },
    );
    assert!(points >= 6, "{points}");
}

/// A consumer that finishes its items and exits leaves nothing lost; one killed holding two
/// leaves two; a live one holding an item keeps `join` waiting.
#[test]
fn join_counts_only_the_items_of_dead_consumers() {
    let ring = joinable_with(1 << 16, &[Item::small(1), Item::small(2), Item::small(3)]);
    assert_eq!(
        killed_at(u32::MAX, || {
            take(&ring).unwrap();
            assert!(ring.task_done());
        }),
        Ended::Finished
    );
    assert_eq!(ring.unfinished(), 2);
    // Taken by this (live) process: join waits for it.
    take(&ring).unwrap();
    assert_eq!(
        ring.join(Deadline::after(Some(Duration::from_millis(120)))),
        Joined::TimedOut
    );
    assert_eq!(
        killed_at(u32::MAX, || {
            take(&ring).unwrap();
        }),
        Ended::Finished
    );
    assert!(ring.task_done());
    assert_eq!(
        ring.join(Deadline::after(Some(Duration::from_secs(10)))),
        Joined::Lost(1)
    );
}

/// A consumer that drops its handle before exiting hands its unmarked items over (Python's
/// `get` in one process, `task_done` in another): `join` waits for them, and another process
/// marks them done.
#[test]
fn a_consumer_that_drops_its_handle_hands_its_items_over() {
    let ring = joinable_with(1 << 16, &[Item::small(1)]);
    let fds = || RingFds {
        region: ring.region_fd().try_clone_to_owned().unwrap(),
        side_a: ring.other_fds()[0].try_clone_to_owned().unwrap(),
        side_b: ring.other_fds()[1].try_clone_to_owned().unwrap(),
        event: ring.other_fds()[2].try_clone_to_owned().unwrap(),
    };
    let theirs = fds();
    assert_eq!(
        killed_at(u32::MAX, move || {
            let handle = Ring::from_fds(theirs).unwrap();
            take(&handle).unwrap();
            drop(handle);
        }),
        Ended::Finished
    );
    assert_eq!(
        ring.join(Deadline::after(Some(Duration::from_millis(120)))),
        Joined::TimedOut
    );
    assert!(ring.task_done());
    assert_eq!(
        ring.join(Deadline::after(Some(Duration::ZERO))),
        Joined::Finished
    );
}
