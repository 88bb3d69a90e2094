//! The shared ring behind every queue: messages in anonymous shared memory, with one robust
//! futex lock for producers and one for consumers.
//!
//! ```text
//! pages 0-3: Header (atomics)       pages 4..: data ring of `data_len` bytes (a power of two)
//! record: len u32 | flags u32 | tag u64 | payload, padded to 8 bytes (may wrap around)
//! ```
//! **Every transition is one store.** The ring's state is two 64-bit words: `tail` holds the
//! number of messages ever put and the byte offset where the next record goes, `head` the number
//! ever taken and the offset of the oldest record (offsets count modulo 2^32 and map into the
//! data area modulo `data_len`). A put writes its record past `tail` and then publishes it, with
//! its count, in one store of `tail`; a get takes a record with one store of `head`. `qsize` is
//! the difference of the two counts, so it is exact and needs no repair. A process killed at any
//! instruction leaves either the old or the new state, never a mix: a put that dies before its
//! store leaves nothing behind, a get that dies before its store leaves the message in place,
//! and a message whose `put` returned is in shared memory whatever happens to its producer.
//! [`super::crash::point`] marks the place after each store; the unit tests kill a process at
//! every one of them and check what the others find.
//!
//! **Two locks.** Producers serialize on their lock and write only `tail` and their own cache
//! line; consumers serialize on theirs and write only `head` and their line (see
//! [`header`]). A producer reads `head` only when the room it last saw runs out, a consumer reads
//! `tail` only when the records it last saw run out, so in a steady flow the two sides share no
//! written cache line but the one word each publishes, and a consumer that fell behind takes a
//! whole run of records per read of `tail`. A consumer decodes a large record where it lies and
//! gives the bytes back with its store of `head`, so the next producer writes meanwhile. A record
//! with handles, or one whose value calls another process as it is decoded (a manager proxy), is
//! copied out and decoded after the lock is released, so that no consumer waits on another
//! process while it holds the lock.
//!
//! **Restart and memory.** Records go forward through the data area; once they are past
//! [`RESTART_AT`] and the ring is empty, the ring restarts at the start of the data area, so that
//! a steady flow keeps reusing the same warm pages. A *skip* record (a filler that is not a
//! message) covers the rest of the lap. Either side may do it: a producer that finds the ring
//! empty (it looks once per page of records) puts the skip record and its own record in one
//! publication; a consumer that drains the ring takes the producers' lock if it is free, moves
//! `tail` past a skip record, then `head`. Every intermediate state is a consistent ring. A
//! producer short of room with skip records at `head` takes them itself, so a restart never
//! costs room even if no consumer runs. If the lap went past [`KEEP_RESIDENT`], the pages beyond
//! are given back to the kernel at the restart.
//!
//! **Waiting** spins on an adaptive budget, then sleeps on a futex word that the other side
//! only reads while nobody sleeps (see [`super::wake`]).
//!
//! Descriptors cannot live in shared memory: a message with handles, or one too large for the
//! ring (stored in a memfd of its own), has a frame on the queue's side channel ([`super::side`]),
//! named by the record's tag.
//!
//! JoinableQueue's count of unfinished items is the items in the ring plus those taken and not
//! yet marked done, which each consumer process counts in a slot of its own ([`holders`]), so
//! that the items of a consumer that died can be counted as lost.

mod header;
mod holders;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use self::header::{End, Header};
use super::barrier;
use super::crash;
use super::ready::{self, Ready};
use super::side::{Sent, Side};
use super::wake::{self, Spin};
use crate::codec::{self, Attempt};
use crate::error::{Error, Result};
use crate::sync::{futex, robust};
use crate::sys::mmap::SharedRegion;
use crate::sys::poll::Deadline;

const MAGIC: u64 = 0x6d70_7175_6575_6534; // "mpqueue4"
const HEADER_LEN: usize = 16384;
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);
const RECORD_HEADER: u64 = 16;
/// The ring's virtual size; pages are only allocated while they hold pending messages.
pub(crate) const DEFAULT_RING: usize = 256 << 20;
/// Ring memory kept allocated when the queue drains; the rest is given back to the kernel.
const KEEP_RESIDENT: u64 = 4 << 20;
/// A ring that drains with its records this far into the data area (or a quarter of a smaller
/// ring) restarts at the start: far enough to make restarts rare, near enough to keep a steady
/// flow within the CPU's caches.
const RESTART_AT: u64 = 256 << 10;

/// Where a ring restarts: [`RESTART_AT`], or a quarter of a smaller ring.
fn restart_at(len: u64) -> u64 {
    RESTART_AT.min(len >> 2)
}

/// How long even a non-blocking `put` or `get` waits for a lock: it is only held for a copy,
/// so "the queue is busy" must not read as "the queue is empty" (or full).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Messages up to this size are copied out of the ring and decoded after the lock is released.
const INLINE: usize = 256;

const FLAG_FDS: u32 = 1;
const FLAG_LARGE: u32 = 2;
/// A filler record that is not a message: `len` is its whole size.
const FLAG_SKIP: u32 = 4;

/// One process's view of a shared ring.
#[derive(Debug)]
pub(crate) struct Ring {
    region: SharedRegion,
    /// Frames for descriptors and large messages.
    side: Side,
    /// Readiness for `connection::wait`.
    ready: Ready,
    /// This process's spin budgets: consumers waiting for items, producers waiting for room.
    spin_items: Spin,
    spin_space: Spin,
    /// The holder slot of this process (JoinableQueue).
    mine: holders::Mine,
}

/// The descriptors that represent a ring in a message.
pub(crate) struct RingFds {
    pub(crate) region: OwnedFd,
    pub(crate) side_a: OwnedFd,
    pub(crate) side_b: OwnedFd,
    pub(crate) event: OwnedFd,
}

enum Step<T> {
    Done(T),
    /// Not now: wait until the other side's word moves from this value.
    Wait(u64),
}

impl Ring {
    /// A new ring holding at most `max_items` messages (0: no limit but memory). `data_len` is
    /// rounded up to a power of two of at least a page.
    pub(crate) fn create(max_items: u64, data_len: usize) -> Result<Ring> {
        barrier::register();
        let data_len = data_len.max(4096).next_power_of_two().min(1 << 31);
        let region = SharedRegion::create(c"mp-queue", HEADER_LEN + data_len)
            .map_err(|e| Error::io("create queue memory", e))?;
        let ring = Ring {
            region,
            side: Side::create()?,
            ready: Ready::create()?,
            spin_items: Spin::default(),
            spin_space: Spin::default(),
            mine: holders::Mine::default(),
        };
        let h = ring.header();
        h.max_items.store(max_items, Ordering::Relaxed);
        h.data_len.store(data_len as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(ring)
    }

    /// The ring described by descriptors received from another process.
    pub(crate) fn from_fds(fds: RingFds) -> std::result::Result<Ring, String> {
        barrier::register();
        let region = SharedRegion::from_fd(fds.region)
            .map_err(|e| format!("cannot map the memory of the queue received: {e}"))?;
        if region.len() <= HEADER_LEN {
            return Err(
                "the descriptor received is not an mp queue (its memory is too small)".into(),
            );
        }
        let ring = Ring {
            region,
            side: Side::from_fds(fds.side_a, fds.side_b),
            ready: Ready::from_fd(fds.event),
            spin_items: Spin::default(),
            spin_space: Spin::default(),
            mine: holders::Mine::default(),
        };
        let h = ring.header();
        let data_len = h.data_len.load(Ordering::Relaxed);
        if h.magic.load(Ordering::Acquire) != MAGIC
            || !data_len.is_power_of_two()
            || !(4096..=1 << 31).contains(&data_len)
            || data_len > (ring.region.len() - HEADER_LEN) as u64
        {
            return Err(
                "the descriptor received is not an mp queue (its header does not match)".into(),
            );
        }
        Ok(ring)
    }

    pub(crate) fn region_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.region.as_fd()
    }

    /// The side channel's two ends and the eventfd, in that order.
    pub(crate) fn other_fds(&self) -> [std::os::fd::BorrowedFd<'_>; 3] {
        let [a, b] = self.side.fds();
        [a, b, self.ready.fd()]
    }

    fn header(&self) -> &Header {
        // SAFETY: the region is at least HEADER_LEN bytes (checked on creation and on receipt),
        // page-aligned, and Header consists of atomics only, valid for any bit pattern.
        unsafe { &*(self.region.as_ptr() as *const Header) }
    }

    fn data_len(&self) -> u64 {
        self.header().data_len.load(Ordering::Relaxed)
    }

    /// Copies `src` into the ring at logical offset `off`, wrapping around the end.
    #[inline]
    fn write_at(&self, off: u32, src: &[u8]) {
        let len = self.data_len() as usize;
        let start = (off as usize) & (len - 1);
        // SAFETY: the data area is `len` bytes after the header; the first copy ends at
        // `start + first <= len` and the wrapped rest fits at offset 0 (callers reserve at most
        // `len` bytes). The producers' lock is held and the bytes lie past `tail`, where no
        // consumer reads.
        unsafe {
            let base = self.region.as_ptr().add(HEADER_LEN);
            if start + src.len() <= len {
                std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(start), src.len());
            } else {
                let first = len - start;
                std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(start), first);
                std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
            }
        }
    }

    /// Copies from the ring at logical offset `off` into `dst`, wrapping around the end.
    #[inline]
    fn read_at(&self, off: u32, dst: &mut [u8]) {
        let len = self.data_len() as usize;
        let start = (off as usize) & (len - 1);
        // SAFETY: as in `write_at`, with the roles reversed: the consumers' lock is held and the
        // bytes belong to a published record before `head`'s next store, which no producer
        // writes; `dst` is a distinct Rust buffer.
        unsafe {
            let base = self.region.as_ptr().add(HEADER_LEN);
            if start + dst.len() <= len {
                std::ptr::copy_nonoverlapping(base.add(start), dst.as_mut_ptr(), dst.len());
            } else {
                let first = len - start;
                std::ptr::copy_nonoverlapping(base.add(start), dst.as_mut_ptr(), first);
                std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
            }
        }
    }

    /// Calls `f` with the `len` bytes at logical offset `off`: in place if they do not wrap
    /// around the ring's end, else copied out (consumers' lock held, record not yet taken).
    fn with_bytes_at<R>(&self, off: u32, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let data_len = self.data_len();
        let start = (u64::from(off) & (data_len - 1)) as usize;
        if start + len <= data_len as usize {
            // SAFETY: the bytes lie inside the data area (checked just above) and belong to a
            // published record that `head` has not passed, so no producer writes them while
            // `f` runs.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.region.as_ptr().add(HEADER_LEN + start), len)
            };
            f(bytes)
        } else {
            let mut bytes = vec![0u8; len];
            self.read_at(off, &mut bytes);
            f(&bytes)
        }
    }

    fn ready_words(&self) -> ready::Words<'_> {
        let r = &self.header().ready;
        ready::Words {
            lock: &r.lock,
            signaled: &r.signaled,
            pollers: &r.pollers,
        }
    }

    fn holders(&self) -> holders::Words<'_> {
        let h = self.header();
        holders::Words {
            slots: &h.holders,
            used: &h.joins.holders_used,
            intent: &h.consumers.intent,
            lost: &h.joins.lost,
        }
    }

    /// Makes this a JoinableQueue's ring: its gets count who holds each item, for
    /// [`Ring::join`]. Called before the ring is shared.
    pub(crate) fn make_joinable(&self) {
        self.header().joins.joinable.store(1, Ordering::SeqCst);
    }

    fn is_joinable(&self) -> bool {
        self.header().joins.joinable.load(Ordering::Relaxed) != 0
    }

    /// Whether a waiter of `connection::wait` should find the queue ready.
    fn has_items_or_shut_down(&self) -> bool {
        self.count() > 0 || self.is_shut_down()
    }

    // ---- Locks ------------------------------------------------------------------------------

    fn lock_producers(&self, deadline: Deadline) -> Option<Producers<'_>> {
        let h = self.header();
        // A producer that died holding the lock left at most a record past `tail` (invisible)
        // and a frame nobody will claim (dropped as stale): nothing to repair.
        robust::lock(&h.producers.lock, deadline)?;
        Some(Producers(self))
    }

    fn lock_consumers(&self, deadline: Deadline) -> Option<Consumers<'_>> {
        let h = self.header();
        if robust::lock(&h.consumers.lock, deadline)? == robust::Acquired::OwnerDied {
            let head = End::load(&h.head.0, Ordering::SeqCst);
            self.holders().repair(head.count);
        }
        Some(Consumers {
            ring: self,
            take_on_drop: None,
            owing: false,
        })
    }

    // ---- Records ----------------------------------------------------------------------------

    /// The record at `head`, checked against the published bytes up to `tail`: shared memory
    /// written by another process is never trusted to stay inside the ring. [`Error::Protocol`]
    /// if the offsets or the record do not fit.
    fn record_at(&self, head: u32, tail: u32) -> Result<Record> {
        let pending = u64::from(tail.wrapping_sub(head));
        if pending < RECORD_HEADER || pending > self.data_len() {
            return Err(corrupt());
        }
        let mut rh = [0u8; RECORD_HEADER as usize];
        self.read_at(head, &mut rh);
        let record = Record::parse(&rh);
        if record.size > pending || record.size < RECORD_HEADER || !record.size.is_multiple_of(8) {
            return Err(corrupt());
        }
        Ok(record)
    }

    /// Drops every pending message of a ring whose offsets or records are corrupt, so that
    /// the queue stays usable (consumers' lock held).
    fn discard_corrupt(&self) {
        self.drop_pending(false);
    }

    /// Drops every pending message in one store of `head` (consumers' lock held); with
    /// `frames`, also the frames of those that have one. Returns how many. Dropped items leave
    /// a JoinableQueue's unfinished count with them: nobody holds them.
    fn drop_pending(&self, frames: bool) -> u32 {
        let h = self.header();
        let head = End::load(&h.head.0, Ordering::Acquire);
        let tail = End::load(&h.tail.0, Ordering::Acquire);
        let dropped = tail.count.wrapping_sub(head.count);
        h.consumers.tail_seen.store(tail.word(), Ordering::Relaxed);
        h.head.0.store(tail.word(), Ordering::SeqCst);
        crash::point();
        if frames {
            // The records stay readable until the next put: release their descriptors now
            // rather than when a later consumer finds the frames stale.
            let mut off = head.off;
            while off != tail.off {
                let Ok(r) = self.record_at(off, tail.off) else {
                    break;
                };
                if r.flags & FLAG_SKIP == 0 && r.flags & (FLAG_FDS | FLAG_LARGE) != 0 {
                    let _ = self.side.peek(&h.producers.side, r.tag);
                    self.side.consume(r.tag);
                    crash::point();
                }
                off = off.wrapping_add(r.size as u32);
            }
        }
        dropped
    }

    // ---- Counts -----------------------------------------------------------------------------

    /// Messages in the ring.
    pub(crate) fn count(&self) -> u64 {
        let h = self.header();
        let head = End::load(&h.head.0, Ordering::SeqCst);
        let tail = End::load(&h.tail.0, Ordering::SeqCst);
        let n = tail.count.wrapping_sub(head.count);
        // `head` is read first and only grows, so the difference is never negative; a huge
        // one could only come from memory written outside the protocol.
        if n > 1 << 31 { 0 } else { u64::from(n) }
    }

    /// Whether a bounded ring holds its maximum number of messages.
    pub(crate) fn is_full(&self) -> bool {
        let max = self.header().max_items.load(Ordering::Relaxed);
        max != 0 && self.count() >= max
    }

    // ---- Put --------------------------------------------------------------------------------

    /// Puts one encoded message. `block == false` fails at once when full. A full bounded
    /// queue, and an unbounded one whose handles reached the kernel's limits, is
    /// [`Error::Full`].
    pub(crate) fn put(
        &self,
        bytes: &[u8],
        fds: &[RawFd],
        block: bool,
        deadline: Deadline,
    ) -> Result<()> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "a queue item of {} bytes encoded is larger than the 4 GiB a queue carries; \
                     split it, or pass a SharedMemory segment instead",
                    bytes.len()
                ),
            });
        }
        let data_len = self.data_len();
        let large = bytes.len() as u64 > data_len / 16;
        let payload_in_ring = if large { 0 } else { bytes.len() as u64 };
        let rec = RECORD_HEADER + payload_in_ring.next_multiple_of(8);
        // A large payload is written to its own memfd before taking the lock.
        let memfd = if large {
            let r = SharedRegion::create(c"mp-queue-item", bytes.len().max(1))
                .map_err(|e| Error::io("create message memory", e))?;
            // SAFETY: the region was just created with room for `bytes` and is private to us.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), r.as_ptr(), bytes.len());
            }
            Some(r)
        } else {
            None
        };
        let message = Message {
            bytes,
            fds,
            memfd: memfd.as_ref(),
            rec,
        };
        let h = self.header();
        loop {
            let seen = match self.try_put(&message, deadline)? {
                Step::Done(()) => return Ok(()),
                Step::Wait(seen) => seen,
            };
            if !block {
                return Err(Error::Full);
            }
            let moved = || {
                h.head.0.load(Ordering::SeqCst) != seen || h.shutdown.load(Ordering::SeqCst) != 0
            };
            if !wake::wait(&self.spin_space, &h.space, deadline, moved) {
                return Err(Error::Full);
            }
        }
    }

    fn try_put(&self, m: &Message<'_>, deadline: Deadline) -> Result<Step<()>> {
        let h = self.header();
        let Some(lock) = self.lock_producers(deadline.at_least(LOCK_GRACE)) else {
            return Err(Error::Full);
        };
        if h.shutdown.load(Ordering::Relaxed) != 0 {
            return Err(Error::ShutDown);
        }
        let max = h.max_items.load(Ordering::Relaxed);
        let len = self.data_len();
        let tail = End::load(&h.tail.0, Ordering::Relaxed);
        let fits = |head: End, skip: u64| {
            let used = u64::from(tail.off.wrapping_sub(head.off));
            let count = tail.count.wrapping_sub(head.count);
            used + skip + m.rec <= len && (max == 0 || u64::from(count) < max)
        };
        let mut head = End::load(&h.producers.head_seen, Ordering::Relaxed);
        // Far into the ring, look (once a page, or a sixteenth of a small ring) whether consumers
        // took everything: then the record goes to the start of the data area, after a skip
        // record, so that a steady flow stays on the same warm pages (see `restart` for the
        // consumers' side of this). Sizes are powers of two: remainders are masks.
        let pos = u64::from(tail.off) & (len - 1);
        let mut skip = 0;
        let every = (restart_at(len) >> 2).min(4096) as u32;
        if pos >= restart_at(len) && (tail.off ^ tail.off.wrapping_add(m.rec as u32)) >= every {
            head = self.refresh_head();
            if len - pos >= RECORD_HEADER
                && fits(head, len - pos)
                && self.nothing_left_behind(head, tail)
            {
                skip = len - pos;
            }
        }
        if !fits(head, skip) {
            head = self.refresh_head();
            if u64::from(tail.off.wrapping_sub(head.off)) > len {
                // Only a process writing outside the protocol puts `tail` a lap past `head`.
                if let Some(_consumers) = self.lock_consumers(deadline.at_least(LOCK_GRACE)) {
                    self.discard_corrupt();
                }
                return Err(corrupt());
            }
            if !fits(head, skip) {
                head = self.take_skips(head, tail, deadline);
                if !fits(head, skip) {
                    return Ok(Step::Wait(head.word()));
                }
            }
        }
        let mut flags = 0;
        let mut tag = 0;
        if m.memfd.is_some() || !m.fds.is_empty() {
            let mut side_fds: Vec<RawFd> = Vec::with_capacity(m.fds.len() + 1);
            if let Some(memfd) = m.memfd {
                side_fds.push(memfd.as_fd().as_raw_fd());
                flags |= FLAG_LARGE;
            }
            if !m.fds.is_empty() {
                flags |= FLAG_FDS;
            }
            side_fds.extend_from_slice(m.fds);
            match self.side.send(&h.producers.side, &side_fds)? {
                Sent::Tag(t) => tag = t,
                // A bounded queue waits for consumers to make room; an unbounded one must not
                // block, and reports the limit.
                Sent::NoRoom if max != 0 => return Ok(Step::Wait(self.refresh_head().word())),
                Sent::NoRoom => return Err(Error::Full),
            }
        }
        let mut at = tail.off;
        if skip > 0 {
            if head.off == tail.off {
                // The ring is empty: the pages past what is kept can go back to the kernel.
                // (Not while a consumer still decodes a record: consumers give memory back
                // when they drain the ring.)
                self.give_back_memory(tail);
            }
            self.write_skip(tail.off, skip);
            at = tail.off.wrapping_add(skip as u32);
            h.producers.lap_base.store(at, Ordering::Relaxed);
        }
        let len = m.bytes.len() as u32;
        let mut rh = [0u8; RECORD_HEADER as usize];
        rh[..4].copy_from_slice(&len.to_le_bytes());
        rh[4..8].copy_from_slice(&flags.to_le_bytes());
        rh[8..].copy_from_slice(&tag.to_le_bytes());
        self.write_at(at, &rh);
        if m.memfd.is_none() {
            self.write_at(at.wrapping_add(RECORD_HEADER as u32), m.bytes);
        }
        let published = End {
            count: tail.count.wrapping_add(1),
            off: at.wrapping_add(m.rec as u32),
        };
        h.tail.0.store(published.word(), Ordering::Release);
        crash::point();
        drop(lock);
        barrier::light();
        h.items.wake();
        self.ready
            .changed(&self.ready_words(), || self.has_items_or_shut_down());
        Ok(Step::Done(()))
    }

    /// Whether a restart at `tail` leaves no record behind that a consumer may not come for:
    /// the ring is empty, or holds one record that a consumer is taking right now (it holds
    /// the consumers' lock, so it will take the skip record next). Otherwise a consumer that
    /// stopped would leave the skip record's room unusable until it comes back.
    fn nothing_left_behind(&self, head: End, tail: End) -> bool {
        if head.off == tail.off {
            return true;
        }
        let h = self.header();
        robust::is_locked(&h.consumers.lock)
            && self.record_at(head.off, tail.off).is_ok_and(|r| {
                r.flags & FLAG_SKIP == 0 && r.size == u64::from(tail.off.wrapping_sub(head.off))
            })
    }

    /// Reads `head` and remembers it as the producers' idea of it (producers' lock held).
    fn refresh_head(&self) -> End {
        let h = self.header();
        let head = End::load(&h.head.0, Ordering::SeqCst);
        h.producers.head_seen.store(head.word(), Ordering::Relaxed);
        head
    }

    /// Producers short of room, with skip records at `head` (left by a restart that no
    /// consumer has passed yet, say because none is running): take them on the consumers'
    /// behalf, so that a restart never costs the ring its room. Returns `head` after
    /// (producers' lock held).
    fn take_skips(&self, head: End, tail: End, deadline: Deadline) -> End {
        let skip_at = |head: End| {
            self.record_at(head.off, tail.off)
                .is_ok_and(|r| r.flags & FLAG_SKIP != 0)
        };
        if !skip_at(head) {
            return head;
        }
        let Some(_consumers) = self.lock_consumers(deadline.at_least(LOCK_GRACE)) else {
            return head;
        };
        let h = self.header();
        // Consumers' idea of `tail` must never fall behind `head`.
        h.consumers.tail_seen.store(tail.word(), Ordering::Relaxed);
        loop {
            let head = End::load(&h.head.0, Ordering::SeqCst);
            match self.record_at(head.off, tail.off) {
                Ok(r) if r.flags & FLAG_SKIP != 0 => self.take(head.advanced(r.size, 0)),
                _ => return self.refresh_head(),
            }
        }
    }

    /// Writes a skip record of `size` bytes at `off`.
    fn write_skip(&self, off: u32, size: u64) {
        let mut rh = [0u8; RECORD_HEADER as usize];
        rh[..4].copy_from_slice(&(size as u32).to_le_bytes());
        rh[4..8].copy_from_slice(&FLAG_SKIP.to_le_bytes());
        self.write_at(off, &rh);
    }

    /// The ring is empty with `tail` at `tail` and about to restart (producers' lock held): if
    /// the lap since the last restart went past [`KEEP_RESIDENT`], gives the pages beyond it
    /// back to the kernel, so that memory follows the pending items, not the ring's size.
    fn give_back_memory(&self, tail: End) {
        let h = self.header();
        let len = self.data_len();
        let lap = u64::from(
            tail.off
                .wrapping_sub(h.producers.lap_base.load(Ordering::Relaxed)),
        );
        if lap <= KEEP_RESIDENT || len <= KEEP_RESIDENT {
            return;
        }
        let _ = nix::fcntl::fallocate(
            self.region.as_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            (HEADER_LEN as u64 + KEEP_RESIDENT) as i64,
            (len - KEEP_RESIDENT) as i64,
        );
        crash::point();
    }

    // ---- Get --------------------------------------------------------------------------------

    /// Takes one message and returns what `decode` makes of its bytes and descriptors.
    /// `decode` runs on the bytes where they lie in shared memory (no copy unless the record
    /// wraps around the ring's end). `block == false` fails at once if empty.
    pub(crate) fn get<R>(
        &self,
        block: bool,
        deadline: Deadline,
        mut decode: impl FnMut(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        let h = self.header();
        loop {
            let seen = match self.try_get(deadline, &mut decode)? {
                Step::Done(m) => return m,
                Step::Wait(seen) => seen,
            };
            if !block {
                return Err(Error::Empty);
            }
            let moved = || {
                h.tail.0.load(Ordering::SeqCst) != seen || h.shutdown.load(Ordering::SeqCst) != 0
            };
            if !wake::wait(&self.spin_items, &h.items, deadline, moved) {
                return Err(Error::Empty);
            }
        }
    }

    /// Waits until the ring holds an item or was shut down, without taking anything; false
    /// if `deadline` passed first. (For a consumer that must look at something else between
    /// seeing an item and taking it.)
    pub(crate) fn wait_for_item(&self, deadline: Deadline) -> bool {
        let h = self.header();
        let seen = h.tail.0.load(Ordering::SeqCst);
        if self.has_items_or_shut_down() {
            return true;
        }
        let moved =
            || h.tail.0.load(Ordering::SeqCst) != seen || h.shutdown.load(Ordering::SeqCst) != 0;
        wake::wait(&self.spin_items, &h.items, deadline, moved)
    }

    fn try_get<R>(
        &self,
        deadline: Deadline,
        decode: &mut impl FnMut(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<Step<Result<R>>> {
        let h = self.header();
        // Claimed before the lock is taken: a first claim reads /proc.
        let slot = self.is_joinable().then(|| self.holders().slot(&self.mine));
        let Some(mut lock) = self.lock_consumers(deadline.at_least(LOCK_GRACE)) else {
            return Err(Error::Empty);
        };
        let (head, tail, record) = loop {
            let head = End::load(&h.head.0, Ordering::Relaxed);
            let mut tail = End::load(&h.consumers.tail_seen, Ordering::Relaxed);
            if head.off == tail.off {
                tail = End::load(&h.tail.0, Ordering::SeqCst);
                h.consumers.tail_seen.store(tail.word(), Ordering::Relaxed);
                if head.off == tail.off {
                    return if h.shutdown.load(Ordering::SeqCst) != 0 {
                        Err(Error::ShutDown)
                    } else {
                        Ok(Step::Wait(tail.word()))
                    };
                }
            }
            let record = match self.record_at(head.off, tail.off) {
                Ok(r) => r,
                Err(e) => {
                    self.discard_corrupt();
                    return Err(e);
                }
            };
            if record.flags & FLAG_SKIP == 0 {
                break (head, tail, record);
            }
            self.take(head.advanced(record.size, 0));
        };
        let Record {
            len,
            flags,
            tag,
            size,
        } = record;
        let len = len as usize;
        let has_frame = flags & (FLAG_FDS | FLAG_LARGE) != 0;
        let fds = if has_frame {
            match self.side.peek(&h.producers.side, tag) {
                Ok(Some(fds)) => Ok(fds),
                // Not there (only a process writing outside the protocol causes this): the
                // message cannot be rebuilt, so it is taken with an error.
                Ok(None) => Err(Error::protocol(
                    "the handles of a queue item were lost (a process wrote outside the queue's \
                     protocol)",
                )),
                // Nothing was taken (say, no descriptor left in this process): try again later.
                Err(e) => return Err(e),
            }
        } else {
            Ok(Vec::new())
        };
        let taken = head.advanced(size, 1);
        if let Some(slot) = slot {
            // Counted as held before `head` moves (whichever path moves it).
            self.holders().begin_take(slot, head.count);
            lock.owing = true;
        }
        let body = head.off.wrapping_add(RECORD_HEADER as u32);
        let mut inline = [0u8; INLINE];
        let decoded = if flags & FLAG_LARGE != 0 {
            Decoded::Memfd(fds)
        } else if len <= INLINE {
            // Copied out and decoded after the lock is released, which keeps the critical
            // section short for the next consumer.
            self.read_at(body, &mut inline[..len]);
            Decoded::Later(fds)
        } else if fds.as_ref().is_ok_and(Vec::is_empty) {
            // Decoded in place before the bytes are given back; taken even if decoding panics.
            // A value that would call another process (a manager proxy) is copied out instead
            // and decoded after the lock is released: a slow manager must not stall the other
            // consumers.
            lock.take_on_drop = Some(taken);
            let attempt = codec::without_remote_calls(|| {
                self.with_bytes_at(body, len, |b| decode(b, Vec::new()))
            });
            lock.take_on_drop = None;
            match attempt {
                Attempt::Done(r) => Decoded::Now(r),
                Attempt::Refused => Decoded::Copied(self.copy_out(body, len), Ok(Vec::new())),
            }
        } else {
            // Handles cost more than a copy; decoding them may also call another process.
            Decoded::Copied(self.copy_out(body, len), fds)
        };
        self.take(taken);
        if lock.owing {
            self.holders().end_take();
            lock.owing = false;
        }
        if has_frame {
            self.side.consume(tag);
            crash::point();
        }
        if taken.off == tail.off {
            let now = End::load(&h.tail.0, Ordering::SeqCst);
            h.consumers.tail_seen.store(now.word(), Ordering::Relaxed);
            if now.off == taken.off {
                self.restart(taken);
            }
        }
        drop(lock);
        barrier::light();
        h.space.wake();
        self.ready
            .changed(&self.ready_words(), || self.has_items_or_shut_down());
        let result = match decoded {
            Decoded::Now(r) => r,
            Decoded::Later(fds) => fds.and_then(|fds| decode(&inline[..len], fds)),
            Decoded::Copied(bytes, fds) => fds.and_then(|fds| decode(&bytes, fds)),
            Decoded::Memfd(fds) => fds.and_then(|mut fds| {
                if fds.is_empty() {
                    return Err(Error::protocol("a large queue message lost its memory"));
                }
                let memfd = fds.remove(0);
                with_memfd_bytes(memfd, len, |bytes| decode(bytes, fds))
            }),
        };
        Ok(Step::Done(result))
    }

    /// A copy of the `len` bytes at `off` (which may wrap around the ring's end).
    fn copy_out(&self, off: u32, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.read_at(off, &mut bytes);
        bytes
    }

    /// Moves `head` to `to` (consumers' lock held).
    fn take(&self, to: End) {
        self.header().head.0.store(to.word(), Ordering::Release);
        crash::point();
    }

    /// The ring just drained at `at` (consumers' lock held): if the lap went past
    /// [`KEEP_RESIDENT`], restarts it at the start of the data area and gives the memory
    /// beyond back (see the module docs). Skipped if a producer holds its lock: producers look
    /// for an empty ring themselves (and leave the ring alone otherwise, so that a steady flow
    /// does not pull their cache line to the consumers).
    fn restart(&self, at: End) {
        let h = self.header();
        let len = self.data_len();
        let pos = u64::from(at.off) & (len - 1);
        let lap = u64::from(
            at.off
                .wrapping_sub(h.producers.lap_base.load(Ordering::Relaxed)),
        );
        if lap <= KEEP_RESIDENT || pos == 0 {
            return;
        }
        if !robust::try_lock_free(&h.producers.lock) {
            return;
        }
        let _producers = Producers(self);
        let tail = End::load(&h.tail.0, Ordering::Relaxed);
        let rest = (len - pos) & (len - 1);
        if tail != at || (rest != 0 && rest < RECORD_HEADER) {
            return;
        }
        self.give_back_memory(tail);
        let restarted = tail.advanced(rest, 0);
        if rest != 0 {
            self.write_skip(tail.off, rest);
            // Producers' idea of `head` must never be ahead of it.
            h.producers.head_seen.store(at.word(), Ordering::Relaxed);
            h.tail.0.store(restarted.word(), Ordering::SeqCst);
            crash::point();
            h.consumers
                .tail_seen
                .store(restarted.word(), Ordering::Relaxed);
            self.take(restarted);
        }
        h.producers.lap_base.store(restarted.off, Ordering::Relaxed);
    }

    // ---- Waiting, shutdown, JoinableQueue ---------------------------------------------------

    /// Registers a waiter and returns the descriptor to poll: readable once the queue has an
    /// item or is shut down. Pair with [`Ring::end_wait`].
    pub(crate) fn begin_wait(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ready
            .begin_wait(&self.ready_words(), || self.has_items_or_shut_down())
    }

    /// Unregisters a waiter of [`Ring::begin_wait`].
    pub(crate) fn end_wait(&self) {
        self.ready.end_wait(&self.ready_words());
    }

    /// Shuts the queue down: every later `put` and every `get` of an empty queue is
    /// [`Error::ShutDown`]. `immediate` also discards the pending items, counting them as done.
    /// Wakes everyone blocked on the queue.
    pub(crate) fn shutdown(&self, immediate: bool) {
        let h = self.header();
        {
            let Some(_producers) = self.lock_producers(Deadline::NEVER) else {
                return;
            };
            let Some(_consumers) = self.lock_consumers(Deadline::NEVER) else {
                return;
            };
            h.shutdown.store(1, Ordering::SeqCst);
            crash::point();
            if immediate && self.drop_pending(true) > 0 {
                self.wake_joiners();
            }
        }
        h.items.wake_everyone();
        h.space.wake_everyone();
        self.ready
            .changed(&self.ready_words(), || self.has_items_or_shut_down());
    }

    /// Whether [`Ring::shutdown`] was called.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.header().shutdown.load(Ordering::SeqCst) != 0
    }

    /// Takes both locks and keeps them (test support for holder death).
    pub(crate) fn hold_lock_forever(&self) {
        std::mem::forget(self.lock_producers(Deadline::NEVER));
        std::mem::forget(self.lock_consumers(Deadline::NEVER));
    }

    /// JoinableQueue's items put and not yet marked done (nor discarded): those in the ring,
    /// and those taken whose holders owe a `task_done`. Read in this order: a get counts its
    /// item as held before it moves `head`, so an item being taken is never missed.
    pub(crate) fn unfinished(&self) -> u32 {
        (self.count() as u32).wrapping_add(self.holders().owed())
    }

    /// Marks one item done; false if none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let holders = self.holders();
        let mine = holders.slot(&self.mine);
        if !holders.done(mine) {
            return false;
        }
        let h = self.header();
        // Items still in the ring mean some are unfinished: the holders' counts (a cache line
        // per consumer process) are read only when it is empty.
        if h.joins.joiners.load(Ordering::SeqCst) > 0 && self.count() == 0 && self.unfinished() == 0
        {
            self.wake_joiners();
        }
        true
    }

    /// Wakes the processes in [`Ring::join`], if any, to look at the counts again.
    fn wake_joiners(&self) {
        let h = self.header();
        if h.joins.joiners.load(Ordering::SeqCst) > 0 {
            h.joins.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&h.joins.seq);
        }
    }

    /// Waits until no item is unfinished. Items whose consumer process died before marking
    /// them done are counted as lost (looked for every [`LOST_CHECK`] while waiting).
    pub(crate) fn join(&self, deadline: Deadline) -> Joined {
        let h = self.header();
        h.joins.joiners.fetch_add(1, Ordering::SeqCst);
        let finished = loop {
            let seen = h.joins.seq.load(Ordering::SeqCst);
            if self.unfinished() == 0 {
                break true;
            }
            futex::wait(&h.joins.seq, seen, deadline.at_most(LOST_CHECK));
            if self.holders().collect_dead() > 0 {
                self.wake_joiners();
            }
            if deadline.passed() {
                break self.unfinished() == 0;
            }
        };
        h.joins.joiners.fetch_sub(1, Ordering::SeqCst);
        if finished {
            match self.holders().take_lost() {
                0 => Joined::Finished,
                n => Joined::Lost(n),
            }
        } else {
            Joined::TimedOut
        }
    }
}

/// How often a waiting [`Ring::join`] looks for items held by consumers that died.
const LOST_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// How [`Ring::join`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// Every item was marked done.
    Finished,
    /// Every item was marked done or lost: this many were taken by consumers that died first.
    Lost(u32),
    /// The deadline passed first.
    TimedOut,
}

impl Drop for Ring {
    /// A consumer that drops its handle (rather than dying) hands what it owes to others.
    fn drop(&mut self) {
        if self.is_joinable() {
            self.holders().release(&self.mine);
        }
    }
}

/// The producers' lock, released when dropped.
struct Producers<'a>(&'a Ring);

impl Drop for Producers<'_> {
    fn drop(&mut self) {
        robust::unlock(&self.0.header().producers.lock);
    }
}

/// The consumers' lock, released when dropped, also if decoding a message panics; the record
/// being decoded in place is then taken first, so that a message that cannot be decoded does
/// not block the queue.
struct Consumers<'a> {
    ring: &'a Ring,
    take_on_drop: Option<End>,
    /// A JoinableQueue get counted its item as held and has not finished moving `head`.
    owing: bool,
}

impl Drop for Consumers<'_> {
    fn drop(&mut self) {
        if let Some(to) = self.take_on_drop.take() {
            self.ring.take(to);
        }
        if self.owing {
            self.ring.holders().end_take();
        }
        robust::unlock(&self.ring.header().consumers.lock);
    }
}

/// What `try_put` writes.
struct Message<'a> {
    bytes: &'a [u8],
    fds: &'a [RawFd],
    memfd: Option<&'a SharedRegion>,
    /// Bytes its record takes in the ring.
    rec: u64,
}

/// A record's header, as read from the ring.
struct Record {
    /// The message's length in bytes (in the ring, or in its own memory if `FLAG_LARGE`); the
    /// whole record's size for a skip record.
    len: u32,
    flags: u32,
    /// The tag of the record's side frame, if it has one.
    tag: u64,
    /// Bytes the record takes in the ring, header included.
    size: u64,
}

impl Record {
    fn parse(rh: &[u8; RECORD_HEADER as usize]) -> Record {
        let [l0, l1, l2, l3, f0, f1, f2, f3, s @ ..] = *rh;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let size = if flags & FLAG_SKIP != 0 {
            u64::from(len)
        } else if flags & FLAG_LARGE != 0 {
            RECORD_HEADER
        } else {
            RECORD_HEADER + u64::from(len).next_multiple_of(8)
        };
        Record {
            len,
            flags,
            tag: u64::from_le_bytes(s),
            size,
        }
    }
}

/// The queue's shared memory does not hold what `mp` wrote there.
fn corrupt() -> Error {
    Error::protocol(
        "the queue's shared memory is corrupt (a process wrote outside the queue's protocol); \
         its pending items were discarded",
    )
}

/// Calls `f` with the first `len` bytes of a large message's own memory.
fn with_memfd_bytes<R>(fd: OwnedFd, len: usize, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    let region = SharedRegion::from_fd(fd).map_err(|e| Error::io("map message memory", e))?;
    if region.len() < len {
        return Err(Error::protocol(
            "a large queue message is shorter than announced",
        ));
    }
    // SAFETY: the mapping holds at least `len` bytes (checked above) and lives until `f`
    // returns; the producer finished writing before it sent the descriptor.
    f(unsafe { std::slice::from_raw_parts(region.as_ptr(), len) })
}

/// A message taken under the lock, for decoding: done already (in place), or its bytes copied
/// out, or in its own memory, with its descriptors.
enum Decoded<R> {
    Now(Result<R>),
    Later(Result<Vec<OwnedFd>>),
    Copied(Vec<u8>, Result<Vec<OwnedFd>>),
    Memfd(Result<Vec<OwnedFd>>),
}

#[cfg(test)]
mod tests;
