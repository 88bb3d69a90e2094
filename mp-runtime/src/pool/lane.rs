//! A local pool worker's lanes: two one-way rings of messages in memory it shares with the
//! pool's scheduler, jobs one way and answers the other, so that while both sides are awake a
//! job and its answer cross without a system call or a wake-up.
//!
//! The worker's socket stays, for what memory cannot carry and for sleep:
//! - a message with descriptors, or longer than [`MAX_RECORD`], goes on the socket, and a
//!   *marker* (an empty record) in the lane holds its place, so that order is kept;
//! - a side with nothing to read says so in its lane's `sleeping` word, then sleeps in `poll` on
//!   the socket; the other side, after writing a record, takes that word back and sends a one-byte
//!   `Wake` frame on the socket.
//!
//! The memory is a sealed memfd sent to the worker in its first frame: it has no name, so
//! nothing outlives the two processes however they die. A record becomes visible only when the
//! producer moves `tail` past it, so a worker killed while writing leaves nothing half-written
//! behind; the pool reads what the worker finished before it died, as it reads its socket.
//!
//! Neither side trusts the other's words: each keeps its own position in process memory and
//! only publishes it, checks the peer's against the ring's size, and copies a record out before
//! parsing it. A worker that writes nonsense is reported as a protocol error and replaced, as
//! for a malformed answer on its socket.
//!
//! Layout: two 128-byte headers (`tail` on one cache line; `head` and `sleeping` on the next),
//! then the two data areas of [`CAP`] bytes. Records are a 4-byte little-endian length and the
//! message, wrapping around the end of the data area.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::sys::mmap::{Mapping, SharedRegion};

/// The data bytes of each lane (a power of two).
pub(crate) const CAP: usize = 256 * 1024;

/// The longest message that travels in a lane; longer ones go on the socket behind a marker.
/// A worker holds at most about 64 jobs (`Launcher::work_ahead`), so neither lane can fill with
/// records of this size.
pub(crate) const MAX_RECORD: usize = 2048;

const HEADER: usize = 128;
const LEN: usize = 2 * HEADER + 2 * CAP;
const TAIL_AT: usize = 0;
const HEAD_AT: usize = 64;
const SLEEPING_AT: usize = 72;

/// What [`Lanes::recv`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A message, copied into the caller's buffer.
    Message,
    /// The next message is on the socket.
    Marker,
}

/// One end's view of a worker's two lanes: the one it writes and the one it reads.
pub(crate) struct Lanes {
    /// The shared memory; its descriptor is not kept (a worker's lanes cost no descriptor on
    /// either side once the worker has them).
    region: Mapping,
    /// Offset of the header of the lane this end writes (its data follows both headers).
    send: usize,
    /// Offset of the header of the lane this end reads.
    recv: usize,
    /// This end's `tail` of the lane it writes. Only one thread at a time writes a lane (the
    /// scheduler, or a submitter under the pool's lock while the scheduler sleeps), so relaxed
    /// accesses suffice; the atomic only makes the end shareable.
    tail: AtomicU64,
    /// This end's `head` of the lane it reads (one reader thread).
    head: AtomicU64,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes").field("send", &self.send).finish()
    }
}

impl Lanes {
    /// New lanes, seen from the pool's side (it writes jobs into the first), and the memfd to
    /// send to the worker.
    pub(crate) fn create() -> Result<(Lanes, OwnedFd)> {
        let region = SharedRegion::create_reserved(c"mp-pool-lanes", LEN)
            .map_err(|e| Error::io("create a pool worker's shared lanes", e))?;
        let (map, fd) = region.into_mapping();
        Ok((Lanes::new(map, 0), fd))
    }

    /// The lanes whose memfd the pool sent, seen from the worker's side.
    pub(crate) fn attach(fd: OwnedFd) -> Result<Lanes> {
        let region = SharedRegion::from_fd(fd).map_err(|e| match e.kind() {
            // Not a sealed, non-empty memfd: the peer's doing, like a wrong size.
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                Error::protocol(format!("the pool's shared lanes cannot be used: {e}"))
            }
            _ => Error::io("map the pool's shared lanes", e),
        })?;
        if region.len() != LEN {
            return Err(Error::protocol(
                "the pool's shared lanes have the wrong size",
            ));
        }
        Ok(Lanes::new(region.into_mapping().0, HEADER))
    }

    fn new(region: Mapping, send: usize) -> Lanes {
        Lanes {
            region,
            send,
            recv: HEADER - send,
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
        }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at + 8 <= 2 * HEADER);
        self.region.atomic_u64(at)
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at + 4 <= 2 * HEADER);
        self.region.atomic_u32(at)
    }

    /// The data area of the lane whose header is at `lane`.
    fn data(&self, lane: usize) -> *mut u8 {
        // SAFETY: both data areas lie inside the mapping: LEN = 2 headers + 2 CAP.
        unsafe { self.region.as_ptr().add(2 * HEADER + (lane / HEADER) * CAP) }
    }

    /// Copies `src` into the lane this end writes at position `pos`, wrapping around its end.
    fn write_at(&self, pos: u64, src: &[u8]) {
        debug_assert!(src.len() <= CAP);
        let start = (pos as usize) & (CAP - 1);
        let first = src.len().min(CAP - start);
        let base = self.data(self.send);
        // SAFETY: both copies stay inside the data area (`start + first <= CAP`, the rest
        // `<= CAP - first` from its start); the bytes lie past the published `tail`, which the
        // reader does not touch, and `src` is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(start), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies from the lane this end reads at position `pos` into `dst`, wrapping around.
    fn read_at(&self, pos: u64, dst: &mut [u8]) {
        debug_assert!(dst.len() <= CAP);
        let start = (pos as usize) & (CAP - 1);
        let first = dst.len().min(CAP - start);
        let base = self.data(self.recv);
        // SAFETY: as in `write_at`; the bytes belong to a published record before this end's
        // next `head`. A peer that breaks the protocol and writes them meanwhile only changes
        // the bytes copied (plain bytes, checked after the copy), never the bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(base.add(start), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }

    /// Room left in the lane this end writes, or an error if the reader's `head` is impossible.
    fn room(&self) -> Result<usize> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.word64(self.send + HEAD_AT).load(Ordering::Acquire);
        let used = tail.wrapping_sub(head);
        if used > CAP as u64 {
            return Err(Error::protocol(
                "the other side of a pool worker's lane moved its position out of range",
            ));
        }
        Ok(CAP - used as usize)
    }

    fn push(&self, message: &[u8]) -> Result<bool> {
        if self.room()? < 4 + message.len() {
            return Ok(false);
        }
        let tail = self.tail.load(Ordering::Relaxed);
        self.write_at(tail, &(message.len() as u32).to_le_bytes());
        self.write_at(tail.wrapping_add(4), message);
        let tail = tail.wrapping_add(4 + message.len() as u64);
        self.tail.store(tail, Ordering::Relaxed);
        // SeqCst: ordered before the load of `sleeping` in `peer_sleeping` (the reader stores
        // `sleeping` and then loads `tail`; one of the two sees the other).
        self.word64(self.send + TAIL_AT)
            .store(tail, Ordering::SeqCst);
        Ok(true)
    }

    /// Writes `message` (a frame's payload) into the lane; false if it must go on the socket
    /// instead (too long, or no room). Errors mean the reader broke the lane.
    pub(crate) fn send(&self, message: &[u8]) -> Result<bool> {
        if message.is_empty() || message.len() > MAX_RECORD {
            return Ok(false);
        }
        self.push(message)
    }

    /// Writes a marker: the next message is on the socket. False if there is no room.
    pub(crate) fn send_marker(&self) -> Result<bool> {
        self.push(&[])
    }

    /// After a write: whether the reader said it sleeps (it must be woken on the socket). Takes
    /// the word back, so one wake-up is sent per sleep.
    pub(crate) fn peer_sleeping(&self) -> bool {
        self.word32(self.send + SLEEPING_AT)
            .swap(0, Ordering::SeqCst)
            != 0
    }

    /// Whether the lane this end reads holds a record. SeqCst, for [`Lanes::going_to_sleep`]
    /// (a load that costs what an acquire load does on x86).
    pub(crate) fn has_data(&self) -> bool {
        let tail = self.word64(self.recv + TAIL_AT).load(Ordering::SeqCst);
        tail != self.head.load(Ordering::Relaxed)
    }

    /// Takes the next record of the lane this end reads: a message (copied into `out`, which is
    /// cleared first) or a marker; `None` if the lane is empty. Errors mean the writer broke
    /// the lane (a position or length out of range).
    pub(crate) fn recv(&self, out: &mut Vec<u8>) -> Result<Option<Record>> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.word64(self.recv + TAIL_AT).load(Ordering::Acquire);
        let avail = tail.wrapping_sub(head);
        if avail == 0 {
            return Ok(None);
        }
        let broken = || Error::protocol("a pool worker's lane holds a malformed record");
        if avail > CAP as u64 || avail < 4 {
            return Err(broken());
        }
        let mut len = [0u8; 4];
        self.read_at(head, &mut len);
        let len = u32::from_le_bytes(len) as u64;
        if len > MAX_RECORD as u64 || 4 + len > avail {
            return Err(broken());
        }
        out.clear();
        out.resize(len as usize, 0);
        self.read_at(head.wrapping_add(4), out);
        let head = head.wrapping_add(4 + len);
        self.head.store(head, Ordering::Relaxed);
        self.word64(self.recv + HEAD_AT)
            .store(head, Ordering::Release);
        Ok(Some(if len == 0 {
            Record::Marker
        } else {
            Record::Message
        }))
    }

    /// Says this end is about to sleep on the socket. True if a record arrived meanwhile: then
    /// it must not sleep (and calls [`Lanes::awake`]).
    pub(crate) fn going_to_sleep(&self) -> bool {
        self.word32(self.recv + SLEEPING_AT)
            .store(1, Ordering::SeqCst);
        self.has_data()
    }

    /// Says this end is awake again (no wake-up needed).
    pub(crate) fn awake(&self) {
        self.word32(self.recv + SLEEPING_AT)
            .store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Lanes, Lanes) {
        let (pool, fd) = Lanes::create().unwrap();
        (pool, Lanes::attach(fd).unwrap())
    }

    #[test]
    fn messages_and_markers_arrive_in_order_across_the_wrap() {
        let (pool, worker) = pair();
        let mut out = Vec::new();
        let mut sent = 0u64;
        let mut got = 0u64;
        // Many laps of the ring, with lengths that make records straddle its end.
        while got < 5_000 {
            while sent < got + 40 {
                let len = 1 + (sent as usize * 37) % MAX_RECORD;
                let msg = vec![(sent % 251) as u8; len];
                if sent % 7 == 3 {
                    assert!(pool.send_marker().unwrap());
                } else {
                    assert!(pool.send(&msg).unwrap());
                }
                sent += 1;
            }
            let r = worker.recv(&mut out).unwrap().unwrap();
            if got % 7 == 3 {
                assert_eq!(r, Record::Marker);
            } else {
                assert_eq!(r, Record::Message);
                assert_eq!(out.len(), 1 + (got as usize * 37) % MAX_RECORD);
                assert!(out.iter().all(|&b| b == (got % 251) as u8));
            }
            got += 1;
        }
        assert!(worker.recv(&mut out).unwrap().is_some());
    }

    #[test]
    fn a_full_lane_refuses_and_takes_again_once_read() {
        let (pool, worker) = pair();
        let msg = [7u8; MAX_RECORD];
        let mut n = 0;
        while pool.send(&msg).unwrap() {
            n += 1;
        }
        assert_eq!(n, CAP / (MAX_RECORD + 4));
        assert!(!pool.send(&[1u8; MAX_RECORD + 1]).unwrap(), "too long");
        let mut out = Vec::new();
        worker.recv(&mut out).unwrap().unwrap();
        assert!(pool.send(&msg).unwrap());
        // The other lane is independent.
        assert!(worker.send(b"answer").unwrap());
        assert_eq!(pool.recv(&mut out).unwrap(), Some(Record::Message));
        assert_eq!(out, b"answer");
    }

    #[test]
    fn a_sleeping_reader_is_reported_once() {
        let (pool, worker) = pair();
        assert!(!worker.going_to_sleep());
        assert!(pool.send(b"job").unwrap());
        assert!(pool.peer_sleeping());
        assert!(!pool.peer_sleeping(), "one wake-up per sleep");
        assert!(worker.going_to_sleep(), "a record is waiting: do not sleep");
        worker.awake();
        assert!(!pool.peer_sleeping());
    }

    /// A peer that writes impossible positions or lengths gets errors, never a read or write
    /// outside the lanes.
    #[test]
    fn corrupt_positions_and_lengths_are_errors() {
        let (pool, worker) = pair();
        let mut out = Vec::new();
        // The pool's tail far beyond what the worker has read.
        pool.word64(TAIL_AT).store(CAP as u64 + 9, Ordering::SeqCst);
        assert!(matches!(worker.recv(&mut out), Err(Error::Protocol { .. })));
        // A record longer than any message.
        let (pool, worker) = pair();
        assert!(pool.send(b"x").unwrap());
        pool.write_at(0, &u32::MAX.to_le_bytes());
        assert!(matches!(worker.recv(&mut out), Err(Error::Protocol { .. })));
        // A record longer than what was published.
        let (pool, worker) = pair();
        assert!(pool.send(b"abc").unwrap());
        pool.write_at(0, &100u32.to_le_bytes());
        assert!(matches!(worker.recv(&mut out), Err(Error::Protocol { .. })));
        // The reader's head moved past the writer's tail.
        let (pool, worker) = pair();
        worker.word64(HEAD_AT).store(5, Ordering::SeqCst);
        assert!(matches!(pool.send(b"x"), Err(Error::Protocol { .. })));
    }

    #[test]
    fn a_memfd_of_the_wrong_size_is_refused() {
        let (_map, fd) = SharedRegion::create_reserved(c"t", 4096)
            .unwrap()
            .into_mapping();
        assert!(matches!(Lanes::attach(fd), Err(Error::Protocol { .. })));
    }

    #[test]
    fn a_descriptor_that_is_not_a_sealed_memfd_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        match Lanes::attach(file.into()) {
            Err(Error::Protocol { message }) => assert!(message.contains("sealed"), "{message}"),
            other => panic!("expected a protocol error, got {:?}", other.err()),
        }
    }
}
