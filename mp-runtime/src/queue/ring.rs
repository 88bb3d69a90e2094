//! The shared ring behind every queue: messages in anonymous shared memory, guarded by a robust
//! futex lock, with futex sequence words to sleep on.
//!
//! ```text
//! page 0: Header (atomics)          pages 1..: data ring of `data_len` bytes (a power of two)
//! record: len u32 | flags u32 | tag u64 | payload, padded to 8 bytes (may wrap around)
//! ```
//! **Every transition is one store.** The ring's state is two 64-bit words: `tail` holds the
//! number of messages ever put and the byte offset where the next record goes, `head` the number
//! ever taken and the offset of the oldest record (offsets count modulo 2^32 and map into the
//! data area modulo `data_len`). A put writes its record past `tail` and then publishes it, with
//! its count, in one store of `tail`; a get takes a record with one store of `head`. `qsize` is
//! the difference of the two counts, so it is exact and needs no repair. A holder of the lock
//! killed at any instruction leaves either the old or the new state, never a mix: a put that
//! dies before its store leaves nothing behind, a get that dies before its store leaves the
//! message in place, and a message whose `put` returned is in shared memory whatever happens to
//! its producer. [`super::crash::point`] marks the place after each store; the unit tests below
//! kill a process at every one of them and check what the others find.
//!
//! When a get drains the ring, the next records restart at the start of the data area, so that
//! a steady flow reuses the same warm pages: a *skip* record (a filler that is not a message)
//! is written at `tail` to cover the rest of the lap, `tail` moves past it, then `head` follows.
//! Each of the three states is a consistent ring. Once the ring had grown past
//! [`KEEP_RESIDENT`], the pages beyond are given back to the kernel at that point.
//!
//! Descriptors cannot live in shared memory: a message with handles, or one too large for the
//! ring (stored in a memfd of its own), has a frame on the queue's side channel ([`super::side`]),
//! named by the record's tag.
//!
//! JoinableQueue's count of unfinished items is `puts - done - discarded`: `done` counts
//! `task_done` calls, and items dropped by an immediate shutdown are recorded in `discard`, whose
//! open/closed encoding keeps that count exact across a death in the middle of the drop.
//!
//! Readiness for `connection::wait` costs nothing until someone waits: a waiter registers in
//! `pollers` and polls an eventfd, which is kept readable exactly while the queue has items (or is
//! shut down) and `pollers` was non-zero at some point, all under the lock.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::crash;
use super::side::{Sent, Side, SideWords};
use crate::error::{Error, Result};
use crate::sync::{futex, robust};
use crate::sys::mmap::SharedRegion;
use crate::sys::poll::Deadline;

const MAGIC: u64 = 0x6d70_7175_6575_6532; // "mpqueue2"
const HEADER_LEN: usize = 4096;
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);
const RECORD_HEADER: u64 = 16;
/// The ring's virtual size; pages are only allocated while they hold pending messages.
pub(crate) const DEFAULT_RING: usize = 256 << 20;
/// Ring memory kept allocated when the queue drains; the rest is given back to the kernel.
const KEEP_RESIDENT: u64 = 4 << 20;

/// How long even a non-blocking `put` or `get` waits for the lock: it is only held for a copy,
/// so "the queue is busy" must not read as "the queue is empty" (or full).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Messages up to this size are copied out of the ring and decoded after the lock is released.
const INLINE: usize = 256;

const FLAG_FDS: u32 = 1;
const FLAG_LARGE: u32 = 2;
/// A filler record that is not a message: `len` is its whole size.
const FLAG_SKIP: u32 = 4;

/// The shared header, in cache lines grouped by who writes them: the state changed under the
/// lock, the side channel's words, the sequence words that consumers and producers sleep on, and
/// the JoinableQueue counters.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    max_items: AtomicU64,
    data_len: AtomicU64,
    locked: Locked,
    side: SideLine,
    items: Sleepable,
    space: Sleepable,
    joins: Joins,
}

/// Changed only under `lock` (which lives on the same line, so a holder touches one line).
#[repr(C, align(64))]
struct Locked {
    lock: robust::Word,
    /// Non-zero once `shutdown` was called.
    shutdown: AtomicU32,
    /// Whether the eventfd is readable.
    signaled: AtomicU32,
    /// Callers of `connection::wait` currently polling the eventfd (changed without the lock).
    pollers: AtomicU32,
    /// [`End`] of the ring where records are added.
    tail: AtomicU64,
    /// [`End`] of the ring where records are taken.
    head: AtomicU64,
    /// The offset where the current lap of the ring began (where it last restarted).
    lap_base: AtomicU64,
    /// Messages dropped by immediate shutdowns (see [`Discard`]).
    discard: AtomicU64,
}

#[repr(C, align(64))]
struct SideLine(SideWords);

/// A futex sequence word and the number of processes asleep on it.
#[repr(C, align(64))]
struct Sleepable {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

/// JoinableQueue's counters.
#[repr(C, align(64))]
struct Joins {
    /// `task_done` calls (wrapping).
    done: AtomicU32,
    /// Processes in `join`.
    joiners: AtomicU32,
    /// Bumped when the count of unfinished items may have reached zero; joiners sleep on it.
    seq: AtomicU32,
}

/// One end of the ring as stored in one 64-bit word: how many messages went through it, and
/// its byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct End {
    count: u32,
    off: u32,
}

impl End {
    fn load(word: &AtomicU64, order: Ordering) -> End {
        let w = word.load(order);
        End {
            count: (w >> 32) as u32,
            off: w as u32,
        }
    }

    fn word(self) -> u64 {
        (u64::from(self.count) << 32) | u64::from(self.off)
    }

    /// This end moved past a record of `size` bytes, counting `messages` messages.
    fn advanced(self, size: u64, messages: u32) -> End {
        End {
            count: self.count.wrapping_add(messages),
            off: self.off.wrapping_add(size as u32),
        }
    }
}

/// The messages dropped by immediate shutdowns, as stored in `Locked::discard`: `total` is
/// exact while the drop is closed; an open drop, begun when `head` had counted `from` messages
/// (modulo 2^31), adds what `head` counted since. Opening, moving `head` and closing are one
/// store each, so a dropper that dies leaves an exact total, which the next lock holder closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Discard {
    total: u32,
    open_from: Option<u32>,
}

impl Discard {
    const OPEN: u64 = 1 << 63;
    const FROM_MASK: u32 = (1 << 31) - 1;

    fn load(word: &AtomicU64) -> Discard {
        let w = word.load(Ordering::Acquire);
        Discard {
            total: w as u32,
            open_from: (w & Discard::OPEN != 0).then_some((w >> 32) as u32 & Discard::FROM_MASK),
        }
    }

    fn word(self) -> u64 {
        let open = match self.open_from {
            None => 0,
            Some(from) => Discard::OPEN | (u64::from(from & Discard::FROM_MASK) << 32),
        };
        open | u64::from(self.total)
    }

    /// The total, given the messages `head` has counted.
    fn total(self, head_count: u32) -> u32 {
        match self.open_from {
            None => self.total,
            Some(from) => self
                .total
                .wrapping_add(head_count.wrapping_sub(from) & Discard::FROM_MASK),
        }
    }
}

/// One process's view of a shared ring.
#[derive(Debug)]
pub(crate) struct Ring {
    region: SharedRegion,
    /// Frames for descriptors and large messages.
    side: Side,
    /// Readable while the queue has items and someone waits on it (see the module docs).
    event: OwnedFd,
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
    Wait(u32),
}

impl Ring {
    /// A new ring holding at most `max_items` messages (0: no limit but memory). `data_len` is
    /// rounded up to a power of two of at least a page.
    pub(crate) fn create(max_items: u64, data_len: usize) -> Result<Ring> {
        let data_len = data_len.max(4096).next_power_of_two().min(1 << 31);
        let region = SharedRegion::create(c"mp-queue", HEADER_LEN + data_len)
            .map_err(|e| Error::io("create queue memory", e))?;
        let side = Side::create()?;
        let event = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| Error::sys("create queue eventfd", e))?;
        let ring = Ring {
            region,
            side,
            event: event.into(),
        };
        let h = ring.header();
        h.max_items.store(max_items, Ordering::Relaxed);
        h.data_len.store(data_len as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(ring)
    }

    /// The ring described by descriptors received from another process.
    pub(crate) fn from_fds(fds: RingFds) -> std::result::Result<Ring, String> {
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
            event: fds.event,
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
        [a, b, self.event.as_fd()]
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
    fn write_at(&self, off: u32, src: &[u8]) {
        let len = self.data_len();
        let start = (u64::from(off) % len) as usize;
        let first = src.len().min(len as usize - start);
        // SAFETY: the data area is `len` bytes after the header; `start + first <= len` and the
        // wrapped rest fits at offset 0 (callers reserve at most `len` bytes). The lock is held,
        // so no other process writes these bytes; readers only read published records.
        unsafe {
            let base = self.region.as_ptr().add(HEADER_LEN);
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(start), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies from the ring at logical offset `off` into `dst`, wrapping around the end.
    fn read_at(&self, off: u32, dst: &mut [u8]) {
        let len = self.data_len();
        let start = (u64::from(off) % len) as usize;
        let first = dst.len().min(len as usize - start);
        // SAFETY: as in `write_at`, with the roles reversed; `dst` is a distinct Rust buffer.
        unsafe {
            let base = self.region.as_ptr().add(HEADER_LEN);
            std::ptr::copy_nonoverlapping(base.add(start), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }

    fn lock(&self, deadline: Deadline) -> Option<()> {
        let h = self.header();
        match robust::lock(&h.locked.lock, deadline)? {
            robust::Acquired::Clean => {}
            robust::Acquired::OwnerDied => self.repair(),
        }
        Some(())
    }

    fn unlock(&self) {
        robust::unlock(&self.header().locked.lock);
    }

    /// After a holder died. The ring is consistent (every transition is one store), but an
    /// immediate shutdown may have been cut short, and the eventfd may disagree with its flag.
    fn repair(&self) {
        let h = self.header();
        let discard = Discard::load(&h.locked.discard);
        if discard.open_from.is_some() {
            let head = End::load(&h.locked.head, Ordering::Acquire);
            let closed = Discard {
                total: discard.total(head.count),
                open_from: None,
            };
            h.locked.discard.store(closed.word(), Ordering::Release);
        }
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.event, &mut buf);
        h.locked.signaled.store(0, Ordering::Relaxed);
        if h.locked.pollers.load(Ordering::SeqCst) > 0
            && (self.count() > 0 || h.locked.shutdown.load(Ordering::Relaxed) != 0)
        {
            self.signal();
        }
    }

    /// The record at `head`, checked against the published bytes up to `tail`: shared memory
    /// written by another process is never trusted to stay inside the ring. [`Error::Protocol`]
    /// if the offsets or the record do not fit (lock held).
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
    /// the queue stays usable (lock held).
    fn discard_corrupt(&self) {
        self.drop_pending(false);
    }

    /// Drops every pending message in one store of `head`, counting them as discarded (lock
    /// held); with `frames`, also the frames of those that have one. Returns how many.
    fn drop_pending(&self, frames: bool) -> u32 {
        let h = self.header();
        let head = End::load(&h.locked.head, Ordering::Acquire);
        let tail = End::load(&h.locked.tail, Ordering::Acquire);
        let dropped = tail.count.wrapping_sub(head.count);
        let before = Discard::load(&h.locked.discard);
        let open = Discard {
            total: before.total(head.count),
            open_from: Some(head.count),
        };
        h.locked.discard.store(open.word(), Ordering::Release);
        crash::point();
        h.locked.head.store(tail.word(), Ordering::Release);
        crash::point();
        let closed = Discard {
            total: open.total(tail.count),
            open_from: None,
        };
        h.locked.discard.store(closed.word(), Ordering::Release);
        crash::point();
        if frames {
            // The records stay readable until the next put: release their descriptors now
            // rather than when a later consumer finds the frames stale.
            let mut off = head.off;
            while off != tail.off {
                let Ok(r) = self.record_at(off, tail.off) else {
                    break;
                };
                if r.flags & (FLAG_FDS | FLAG_LARGE) != 0 && r.flags & FLAG_SKIP == 0 {
                    let _ = self.side.peek(&h.side.0, r.tag);
                    self.side.consume(r.tag);
                    crash::point();
                }
                off = off.wrapping_add(r.size as u32);
            }
        }
        dropped
    }

    /// Messages in the ring.
    pub(crate) fn count(&self) -> u64 {
        let h = self.header();
        let head = End::load(&h.locked.head, Ordering::Acquire);
        let tail = End::load(&h.locked.tail, Ordering::Acquire);
        let n = tail.count.wrapping_sub(head.count);
        // A head read before a get and a tail read after more puts never look negative; a
        // wrapped difference would only come from a torn pair of loads.
        if n > 1 << 31 { 0 } else { u64::from(n) }
    }

    /// Whether a bounded ring holds its maximum number of messages.
    pub(crate) fn is_full(&self) -> bool {
        let max = self.header().max_items.load(Ordering::Relaxed);
        max != 0 && self.count() >= max
    }

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
        loop {
            let step = self.try_put(&message, deadline)?;
            let seen = match step {
                Step::Done(()) => return Ok(()),
                Step::Wait(seen) => seen,
            };
            if !block {
                return Err(Error::Full);
            }
            let h = self.header();
            if !wait_for_change(&h.space.seq, seen, &h.space.sleepers, deadline) {
                return Err(Error::Full);
            }
        }
    }

    fn try_put(&self, m: &Message<'_>, deadline: Deadline) -> Result<Step<()>> {
        let h = self.header();
        self.lock(deadline.at_least(LOCK_GRACE))
            .ok_or(Error::Full)?;
        let max = h.max_items.load(Ordering::Relaxed);
        let head = End::load(&h.locked.head, Ordering::Relaxed);
        let tail = End::load(&h.locked.tail, Ordering::Relaxed);
        if h.locked.shutdown.load(Ordering::Relaxed) != 0 {
            self.unlock();
            return Err(Error::ShutDown);
        }
        let used = u64::from(tail.off.wrapping_sub(head.off));
        if used > self.data_len() {
            self.discard_corrupt();
            self.unlock();
            return Err(corrupt());
        }
        let count = u64::from(tail.count.wrapping_sub(head.count));
        if (max != 0 && count >= max) || used + m.rec > self.data_len() {
            let seen = h.space.seq.load(Ordering::SeqCst);
            self.unlock();
            return Ok(Step::Wait(seen));
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
            match self.side.send(&h.side.0, &side_fds) {
                Ok(Sent::Tag(t)) => tag = t,
                // A bounded queue waits for consumers to make room; an unbounded one must not
                // block, and reports the limit.
                Ok(Sent::NoRoom) if max != 0 => {
                    let seen = h.space.seq.load(Ordering::SeqCst);
                    self.unlock();
                    return Ok(Step::Wait(seen));
                }
                Ok(Sent::NoRoom) => {
                    self.unlock();
                    return Err(Error::Full);
                }
                Err(e) => {
                    self.unlock();
                    return Err(e);
                }
            }
        }
        let len = m.bytes.len() as u32;
        let mut rh = [0u8; RECORD_HEADER as usize];
        rh[..4].copy_from_slice(&len.to_le_bytes());
        rh[4..8].copy_from_slice(&flags.to_le_bytes());
        rh[8..].copy_from_slice(&tag.to_le_bytes());
        self.write_at(tail.off, &rh);
        if m.memfd.is_none() {
            self.write_at(tail.off.wrapping_add(RECORD_HEADER as u32), m.bytes);
        }
        h.locked
            .tail
            .store(tail.advanced(m.rec, 1).word(), Ordering::Release);
        crash::point();
        h.items.seq.fetch_add(1, Ordering::SeqCst);
        if h.locked.pollers.load(Ordering::SeqCst) > 0 {
            self.signal();
        }
        self.unlock();
        if h.items.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&h.items.seq, 1);
        }
        Ok(Step::Done(()))
    }

    /// Takes one message and returns what `decode` makes of its bytes and descriptors.
    /// `decode` runs under the lock, on the bytes where they lie in shared memory (no copy
    /// unless the record wraps around the ring's end). `block == false` fails at once if empty.
    pub(crate) fn get<R>(
        &self,
        block: bool,
        deadline: Deadline,
        mut decode: impl FnMut(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<R> {
        loop {
            let seen = match self.try_get(deadline, &mut decode)? {
                Step::Done(m) => return m,
                Step::Wait(seen) => seen,
            };
            if !block {
                return Err(Error::Empty);
            }
            let h = self.header();
            if !wait_for_change(&h.items.seq, seen, &h.items.sleepers, deadline) {
                return Err(Error::Empty);
            }
        }
    }

    fn try_get<R>(
        &self,
        deadline: Deadline,
        decode: &mut impl FnMut(&[u8], Vec<OwnedFd>) -> Result<R>,
    ) -> Result<Step<Result<R>>> {
        let h = self.header();
        self.lock(deadline.at_least(LOCK_GRACE))
            .ok_or(Error::Empty)?;
        let held = Held(self);
        let (head, tail, record) = loop {
            let head = End::load(&h.locked.head, Ordering::Relaxed);
            let tail = End::load(&h.locked.tail, Ordering::Acquire);
            if head.off == tail.off {
                let seen = h.items.seq.load(Ordering::SeqCst);
                let shut = h.locked.shutdown.load(Ordering::Relaxed) != 0;
                drop(held);
                return if shut {
                    Err(Error::ShutDown)
                } else {
                    Ok(Step::Wait(seen))
                };
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
            h.locked
                .head
                .store(head.advanced(record.size, 0).word(), Ordering::Release);
            crash::point();
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
            match self.side.peek(&h.side.0, tag) {
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
        // Take the record: its bytes stay in place until the lock is released.
        let new_head = head.advanced(size, 1);
        let drained = new_head.off == tail.off;
        let restart = drained && self.restart(tail);
        if !restart {
            h.locked.head.store(new_head.word(), Ordering::Release);
            crash::point();
        }
        if has_frame {
            self.side.consume(tag);
            crash::point();
        }
        if drained && h.locked.shutdown.load(Ordering::Relaxed) == 0 {
            self.unsignal();
        }
        h.space.seq.fetch_add(1, Ordering::SeqCst);
        // A small message is copied out and decoded after the lock is released, which keeps
        // the critical section short for the next producer.
        let mut inline = [0u8; INLINE];
        let small = flags & FLAG_LARGE == 0 && len <= INLINE;
        let body = head.off.wrapping_add(RECORD_HEADER as u32);
        if small {
            self.read_at(body, &mut inline[..len]);
        }
        let decoded = if small {
            Decoded::Later(fds)
        } else {
            Decoded::Now(fds.and_then(|mut fds| {
                if flags & FLAG_LARGE != 0 {
                    if fds.is_empty() {
                        return Err(Error::protocol("a large queue message lost its memory"));
                    }
                    let memfd = fds.remove(0);
                    with_memfd_bytes(memfd, len, |bytes| decode(bytes, fds))
                } else {
                    self.with_bytes_at(body, len, |bytes| decode(bytes, fds))
                }
            }))
        };
        if restart {
            self.give_back_memory(tail);
        }
        drop(held);
        if h.space.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&h.space.seq);
        }
        let result = match decoded {
            Decoded::Now(r) => r,
            Decoded::Later(fds) => fds.and_then(|fds| decode(&inline[..len], fds)),
        };
        Ok(Step::Done(result))
    }

    /// Takes the last record (the one before `tail`) and restarts the ring at the start of the
    /// data area: a skip record covers the rest of the lap, `tail` moves past it, then `head`.
    /// False (nothing stored) if `tail` is at a lap's start already or too close to its end
    /// for a skip record; the caller then takes the record itself (lock held).
    fn restart(&self, tail: End) -> bool {
        let h = self.header();
        let len = self.data_len();
        let rest = (len - u64::from(tail.off) % len) % len;
        if rest < RECORD_HEADER {
            return false;
        }
        let mut rh = [0u8; RECORD_HEADER as usize];
        rh[..4].copy_from_slice(&(rest as u32).to_le_bytes());
        rh[4..8].copy_from_slice(&FLAG_SKIP.to_le_bytes());
        self.write_at(tail.off, &rh);
        let restarted = tail.advanced(rest, 0);
        h.locked.tail.store(restarted.word(), Ordering::Release);
        crash::point();
        let head = End::load(&h.locked.head, Ordering::Relaxed);
        h.locked.head.store(
            End {
                count: head.count.wrapping_add(1),
                off: restarted.off,
            }
            .word(),
            Ordering::Release,
        );
        crash::point();
        true
    }

    /// Calls `f` with the `len` bytes at logical offset `off`: in place if they do not wrap
    /// around the ring's end, else copied out. The lock must be held.
    fn with_bytes_at<R>(&self, off: u32, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let data_len = self.data_len();
        let start = (u64::from(off) % data_len) as usize;
        if start + len <= data_len as usize {
            // SAFETY: the bytes lie inside the data area (checked just above) and belong to a
            // published record; the lock is held, so no producer writes them while `f` runs.
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

    /// After a restart (the ring is empty and the last lap ended at `tail`): if that lap went
    /// past [`KEEP_RESIDENT`], return the pages beyond it to the kernel, so that memory follows
    /// the pending items, not the ring's size (lock held).
    fn give_back_memory(&self, tail: End) {
        let h = self.header();
        let len = self.data_len();
        let base = h.locked.lap_base.load(Ordering::Relaxed) as u32;
        let lap = u64::from(tail.off.wrapping_sub(base));
        let restarted = End::load(&h.locked.tail, Ordering::Relaxed).off;
        h.locked
            .lap_base
            .store(u64::from(restarted), Ordering::Relaxed);
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

    /// Makes the eventfd readable if it is not (lock held).
    fn signal(&self) {
        let h = self.header();
        if h.locked.signaled.load(Ordering::Relaxed) == 0 {
            let _ = nix::unistd::write(&self.event, &1u64.to_ne_bytes());
            h.locked.signaled.store(1, Ordering::Relaxed);
        }
    }

    /// Makes the eventfd unreadable if it is readable (lock held).
    fn unsignal(&self) {
        let h = self.header();
        if h.locked.signaled.load(Ordering::Relaxed) != 0 {
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(&self.event, &mut buf);
            h.locked.signaled.store(0, Ordering::Relaxed);
        }
    }

    /// Registers a waiter and returns the descriptor to poll: readable once the queue has an
    /// item or is shut down. Pair with [`Ring::end_wait`].
    pub(crate) fn begin_wait(&self) -> std::os::fd::BorrowedFd<'_> {
        let h = self.header();
        if self.lock(Deadline::NEVER).is_some() {
            h.locked.pollers.fetch_add(1, Ordering::SeqCst);
            if self.count() > 0 || h.locked.shutdown.load(Ordering::Relaxed) != 0 {
                self.signal();
            }
            self.unlock();
        }
        self.event.as_fd()
    }

    /// Unregisters a waiter of [`Ring::begin_wait`].
    pub(crate) fn end_wait(&self) {
        self.header().locked.pollers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Shuts the queue down: every later `put` and every `get` of an empty queue is
    /// [`Error::ShutDown`]. `immediate` also discards the pending items, counting them as done.
    /// Wakes everyone blocked on the queue.
    pub(crate) fn shutdown(&self, immediate: bool) {
        let h = self.header();
        if self.lock(Deadline::NEVER).is_none() {
            return;
        }
        h.locked.shutdown.store(1, Ordering::SeqCst);
        crash::point();
        if immediate && self.drop_pending(true) > 0 {
            self.wake_joiners();
        }
        self.signal();
        h.items.seq.fetch_add(1, Ordering::SeqCst);
        h.space.seq.fetch_add(1, Ordering::SeqCst);
        self.unlock();
        futex::wake_all(&h.items.seq);
        futex::wake_all(&h.space.seq);
    }

    /// Whether [`Ring::shutdown`] was called.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.header().locked.shutdown.load(Ordering::Acquire) != 0
    }

    /// Takes the lock and keeps it (test support for holder death).
    pub(crate) fn hold_lock_forever(&self) {
        let _ = self.lock(Deadline::NEVER);
    }

    /// JoinableQueue's items put and not yet marked done (nor discarded), with `done` as
    /// the count of `task_done` calls (read before the other counts, so the difference is
    /// never negative).
    fn unfinished_with(&self, done: u32) -> u32 {
        let h = self.header();
        let head = End::load(&h.locked.head, Ordering::SeqCst);
        let discarded = Discard::load(&h.locked.discard).total(head.count);
        let tail = End::load(&h.locked.tail, Ordering::SeqCst);
        tail.count.wrapping_sub(done).wrapping_sub(discarded)
    }

    /// JoinableQueue's items put and not yet marked done (nor discarded).
    pub(crate) fn unfinished(&self) -> u32 {
        self.unfinished_with(self.header().joins.done.load(Ordering::SeqCst))
    }

    /// Marks one item done; false if none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let h = self.header();
        loop {
            let done = h.joins.done.load(Ordering::SeqCst);
            let unfinished = self.unfinished_with(done);
            if unfinished == 0 || unfinished > 1 << 31 {
                return false;
            }
            if h.joins
                .done
                .compare_exchange(
                    done,
                    done.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
            {
                if unfinished == 1 {
                    self.wake_joiners();
                }
                return true;
            }
        }
    }

    /// Wakes the processes in [`Ring::join`], if any, to look at the counts again.
    fn wake_joiners(&self) {
        let h = self.header();
        if h.joins.joiners.load(Ordering::SeqCst) > 0 {
            h.joins.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&h.joins.seq);
        }
    }

    /// Waits until no item is unfinished; false if the deadline passed first.
    pub(crate) fn join(&self, deadline: Deadline) -> bool {
        let h = self.header();
        h.joins.joiners.fetch_add(1, Ordering::SeqCst);
        let finished = loop {
            let seen = h.joins.seq.load(Ordering::SeqCst);
            if self.unfinished() == 0 {
                break true;
            }
            if !futex::wait(&h.joins.seq, seen, deadline) {
                break self.unfinished() == 0;
            }
        };
        h.joins.joiners.fetch_sub(1, Ordering::SeqCst);
        finished
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

/// Polls of a sequence word before sleeping on it: a peer on another core usually moves it
/// within microseconds, which is cheaper to watch than to sleep through (two system calls).
const SEQ_SPINS: u32 = 1000;

/// Waits until `seq` moves past `seen`, registered in `sleepers` while asleep. False if the
/// deadline passed first.
fn wait_for_change(seq: &AtomicU32, seen: u32, sleepers: &AtomicU32, deadline: Deadline) -> bool {
    for _ in 0..SEQ_SPINS {
        if seq.load(Ordering::Acquire) != seen {
            return true;
        }
        std::hint::spin_loop();
    }
    sleepers.fetch_add(1, Ordering::SeqCst);
    let woke = futex::wait(seq, seen, deadline);
    sleepers.fetch_sub(1, Ordering::SeqCst);
    woke
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

/// A message decoded under the lock, or its descriptors kept for decoding a copied-out small
/// message after the lock is released.
enum Decoded<R> {
    Now(Result<R>),
    Later(Result<Vec<OwnedFd>>),
}

/// Releases the ring's lock when dropped, also if decoding a message panics.
struct Held<'a>(&'a Ring);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

#[cfg(test)]
mod tests;
