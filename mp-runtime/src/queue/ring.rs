//! The shared ring behind every queue: messages in anonymous shared memory, guarded by a robust
//! futex lock, with futex sequence words to sleep on.
//!
//! ```text
//! page 0: Header (atomics)          pages 1..: data ring of `data_len` bytes
//! record: len u32 | flags u32 | seq u64 | payload, padded to 8 bytes (may wrap around)
//! ```
//! `head` and `tail` are monotonically increasing byte offsets; a record becomes visible when
//! `tail` is stored past it and is gone when `head` is. A put that dies before storing `tail`
//! leaves nothing behind; a get that dies before storing `head` leaves the message in place. A
//! message whose `put` returned is therefore in shared memory, whatever happens to its producer.
//!
//! Descriptors cannot live in shared memory: a message with handles, or one too large for the
//! ring (stored in a memfd of its own), sends a side frame on a socket shared by all handles of
//! the queue, tagged with the record's `seq`, before the record is published. Consumers take
//! side frames in the same order, under the same lock.
//!
//! Readiness for `connection::wait` costs nothing until someone waits: a waiter registers in
//! `pollers` and polls an eventfd, which is kept readable exactly while the queue has items (or is
//! shut down) and `pollers` was non-zero at some point, all under the lock.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::super::sync::{futex, robust};
use crate::error::{Error, Result};
use crate::sys::mmap::SharedRegion;
use crate::sys::poll::{Deadline, readable};
use crate::transport::frame::{recv_frame, send_frame};

const MAGIC: u64 = 0x6d70_7175_6575_6531; // "mpqueue1"
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

/// The shared header, in cache lines grouped by who writes them: the state changed under the
/// lock, the sequence words that consumers and producers sleep on, and the JoinableQueue counter.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    max_items: AtomicU64,
    data_len: AtomicU64,
    /// Non-zero for a JoinableQueue: only then is `unfinished` counted.
    joinable: AtomicU64,
    locked: Locked,
    items: Sleepable,
    space: Sleepable,
    unfinished: Padded,
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
    count: AtomicU64,
    head: AtomicU64,
    tail: AtomicU64,
    next_seq: AtomicU64,
}

/// A futex sequence word and the number of processes asleep on it.
#[repr(C, align(64))]
struct Sleepable {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

/// A counter on a line of its own.
#[repr(C, align(64))]
struct Padded(AtomicU32);

/// One process's view of a shared ring.
#[derive(Debug)]
pub(crate) struct Ring {
    region: SharedRegion,
    /// Side channel for descriptors: frames are sent on `side_tx` and received on `side_rx`.
    side_tx: OwnedFd,
    side_rx: OwnedFd,
    /// Readable while the queue has items and someone waits on it (see the module docs).
    event: OwnedFd,
}

/// The descriptors that represent a ring in a message.
pub(crate) struct RingFds {
    pub(crate) region: OwnedFd,
    pub(crate) side_tx: OwnedFd,
    pub(crate) side_rx: OwnedFd,
    pub(crate) event: OwnedFd,
}

enum Step<T> {
    Done(T),
    Wait(u32),
}

impl Ring {
    /// A new ring holding at most `max_items` messages (0: no limit but memory).
    pub(crate) fn create(max_items: u64, data_len: usize, joinable: bool) -> Result<Ring> {
        let data_len = data_len.next_multiple_of(4096);
        let region = SharedRegion::create(c"mp-queue", HEADER_LEN + data_len)
            .map_err(|e| Error::io("create queue memory", e))?;
        let (side_tx, side_rx) = crate::transport::socket::stream_pair()?;
        let event = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| Error::sys("create queue eventfd", e))?;
        let ring = Ring {
            region,
            side_tx,
            side_rx,
            event: event.into(),
        };
        let h = ring.header();
        h.max_items.store(max_items, Ordering::Relaxed);
        h.data_len.store(data_len as u64, Ordering::Relaxed);
        h.joinable.store(u64::from(joinable), Ordering::Relaxed);
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
            side_tx: fds.side_tx,
            side_rx: fds.side_rx,
            event: fds.event,
        };
        let h = ring.header();
        let data_len = h.data_len.load(Ordering::Relaxed);
        if h.magic.load(Ordering::Acquire) != MAGIC
            || data_len == 0
            || !data_len.is_multiple_of(8)
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
    /// The side socket's ends and the eventfd, in that order.
    pub(crate) fn other_fds(&self) -> [std::os::fd::BorrowedFd<'_>; 3] {
        [
            self.side_tx.as_fd(),
            self.side_rx.as_fd(),
            self.event.as_fd(),
        ]
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
    fn write_at(&self, off: u64, src: &[u8]) {
        let len = self.data_len();
        let start = (off % len) as usize;
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
    fn read_at(&self, off: u64, dst: &mut [u8]) {
        let len = self.data_len();
        let start = (off % len) as usize;
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

    /// After a holder died: the ring itself is consistent (publication is one store), but the
    /// message count may be off by one; count the records again. A ring whose records do not
    /// add up is emptied (see [`Ring::discard_corrupt`]).
    fn repair(&self) {
        let h = self.header();
        let (mut off, tail) = (
            h.locked.head.load(Ordering::Relaxed),
            h.locked.tail.load(Ordering::Relaxed),
        );
        let mut n = 0;
        while off != tail {
            match self.record_at(off, tail) {
                Ok(r) => off += r.size,
                Err(_) => {
                    self.discard_corrupt();
                    return;
                }
            }
            n += 1;
        }
        h.locked.count.store(n, Ordering::Release);
    }

    /// The header of the record at `head`, checked against the published bytes up to `tail`:
    /// shared memory written by another process is never trusted to stay inside the ring.
    /// [`Error::Protocol`] if the offsets or the record do not fit (lock held).
    fn record_at(&self, head: u64, tail: u64) -> Result<Record> {
        let pending = tail
            .checked_sub(head)
            .filter(|p| *p >= RECORD_HEADER && *p <= self.data_len());
        let Some(pending) = pending else {
            return Err(corrupt());
        };
        let mut rh = [0u8; RECORD_HEADER as usize];
        self.read_at(head, &mut rh);
        let record = Record::parse(&rh);
        if record.size > pending {
            return Err(corrupt());
        }
        Ok(record)
    }

    /// Drops every pending message of a ring whose offsets or records are corrupt, so that
    /// the queue stays usable (lock held).
    fn discard_corrupt(&self) {
        let h = self.header();
        let tail = h.locked.tail.load(Ordering::Relaxed);
        h.locked.head.store(tail, Ordering::Release);
        h.locked.count.store(0, Ordering::Release);
    }

    /// Messages in the ring.
    pub(crate) fn count(&self) -> u64 {
        self.header().locked.count.load(Ordering::Acquire)
    }

    /// Whether a bounded ring holds its maximum number of messages.
    pub(crate) fn is_full(&self) -> bool {
        let h = self.header();
        let max = h.max_items.load(Ordering::Relaxed);
        max != 0 && h.locked.count.load(Ordering::Acquire) >= max
    }

    /// Puts one encoded message. `block == false` fails at once when full.
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
        loop {
            let step = self.try_put(bytes, fds, memfd.as_ref(), rec, large, deadline)?;
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

    fn try_put(
        &self,
        bytes: &[u8],
        fds: &[RawFd],
        memfd: Option<&SharedRegion>,
        rec: u64,
        large: bool,
        deadline: Deadline,
    ) -> Result<Step<()>> {
        let h = self.header();
        self.lock(deadline.at_least(LOCK_GRACE))
            .ok_or(Error::Full)?;
        let max = h.max_items.load(Ordering::Relaxed);
        let (head, tail) = (
            h.locked.head.load(Ordering::Relaxed),
            h.locked.tail.load(Ordering::Relaxed),
        );
        let count = h.locked.count.load(Ordering::Relaxed);
        if h.locked.shutdown.load(Ordering::Relaxed) != 0 {
            self.unlock();
            return Err(Error::ShutDown);
        }
        let used = tail.checked_sub(head).filter(|u| *u <= self.data_len());
        let Some(used) = used else {
            self.discard_corrupt();
            self.unlock();
            return Err(corrupt());
        };
        if (max != 0 && count >= max) || used + rec > self.data_len() {
            let seen = h.space.seq.load(Ordering::SeqCst);
            self.unlock();
            return Ok(Step::Wait(seen));
        }
        let seq = h.locked.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut flags = 0;
        if large || !fds.is_empty() {
            let mut side_fds: Vec<RawFd> = Vec::with_capacity(fds.len() + 1);
            if let Some(m) = memfd {
                side_fds.push(m.as_fd().as_raw_fd());
                flags |= FLAG_LARGE;
            }
            if !fds.is_empty() {
                flags |= FLAG_FDS;
            }
            side_fds.extend_from_slice(fds);
            // The side socket buffer holds thousands of these small frames; if it is ever full,
            // give the lock back and let consumers drain it.
            if !crate::sys::poll::writable(self.side_tx.as_fd()) {
                self.unlock();
                let writable = crate::sys::poll::wait_writable(self.side_tx.as_fd(), deadline)
                    .map_err(|e| Error::io("wait for room in the queue's side socket", e))?;
                if !writable {
                    return Err(Error::Full);
                }
                return self.try_put(bytes, fds, memfd, rec, large, deadline);
            }
            if let Err(e) = send_frame(self.side_tx.as_fd(), &seq.to_le_bytes(), &side_fds) {
                self.unlock();
                return Err(e);
            }
        }
        let len = bytes.len() as u32;
        let mut rh = [0u8; RECORD_HEADER as usize];
        rh[..4].copy_from_slice(&len.to_le_bytes());
        rh[4..8].copy_from_slice(&flags.to_le_bytes());
        rh[8..].copy_from_slice(&seq.to_le_bytes());
        self.write_at(tail, &rh);
        if !large {
            self.write_at(tail + RECORD_HEADER, bytes);
        }
        h.locked.tail.store(tail + rec, Ordering::Release);
        h.locked.count.store(count + 1, Ordering::Release);
        if h.joinable.load(Ordering::Relaxed) != 0 {
            h.unfinished.0.fetch_add(1, Ordering::SeqCst);
        }
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
        let (head, tail) = (
            h.locked.head.load(Ordering::Relaxed),
            h.locked.tail.load(Ordering::Acquire),
        );
        if head == tail {
            let seen = h.items.seq.load(Ordering::SeqCst);
            let shut = h.locked.shutdown.load(Ordering::Relaxed) != 0;
            drop(held);
            return if shut {
                Err(Error::ShutDown)
            } else {
                Ok(Step::Wait(seen))
            };
        }
        let Record {
            len,
            flags,
            seq,
            size,
        } = match self.record_at(head, tail) {
            Ok(r) => r,
            Err(e) => {
                self.discard_corrupt();
                return Err(e);
            }
        };
        let len = len as usize;
        let fds = if flags & (FLAG_FDS | FLAG_LARGE) != 0 {
            self.take_side_frame(seq)
        } else {
            Ok(Vec::new())
        };
        // Consume the record first: its bytes stay in place until the lock is released.
        let new_head = head + size;
        let drained = new_head == tail;
        if drained {
            // Empty: restart at the ring's start, so a steady flow reuses the same warm pages.
            let restart = tail.checked_next_multiple_of(self.data_len()).unwrap_or(0);
            h.locked.tail.store(restart, Ordering::Release);
            h.locked.head.store(restart, Ordering::Release);
            if h.locked.shutdown.load(Ordering::Relaxed) == 0 {
                self.unsignal();
            }
        } else {
            h.locked.head.store(new_head, Ordering::Release);
        }
        let count = h.locked.count.load(Ordering::Relaxed);
        h.locked
            .count
            .store(count.saturating_sub(1), Ordering::Release);
        h.space.seq.fetch_add(1, Ordering::SeqCst);
        // A small message is copied out and decoded after the lock is released, which keeps
        // the critical section short for the next producer.
        let mut inline = [0u8; INLINE];
        let small = flags & FLAG_LARGE == 0 && len <= INLINE;
        if small {
            self.read_at(head + RECORD_HEADER, &mut inline[..len]);
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
                    self.with_bytes_at(head + RECORD_HEADER, len, |bytes| decode(bytes, fds))
                }
            }))
        };
        if drained {
            self.give_back_memory(tail % self.data_len());
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

    /// Calls `f` with the `len` bytes at logical offset `off`: in place if they do not wrap
    /// around the ring's end, else copied out. The lock must be held.
    fn with_bytes_at<R>(&self, off: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let data_len = self.data_len();
        let start = (off % data_len) as usize;
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

    /// The side frame tagged `seq`; older frames (left by a consumer that died) are dropped.
    fn take_side_frame(&self, seq: u64) -> Result<Vec<OwnedFd>> {
        loop {
            if !readable(
                self.side_rx.as_fd(),
                Deadline::after(Some(std::time::Duration::ZERO)),
            )
            .unwrap_or(false)
            {
                return Err(Error::protocol(
                    "the handles of a queue message were lost (a consumer died while taking it)",
                ));
            }
            let f = recv_frame(self.side_rx.as_fd(), 64)?;
            let tag = <[u8; 8]>::try_from(f.payload.as_slice())
                .map(u64::from_le_bytes)
                .map_err(|_| Error::protocol("bad queue side frame"))?;
            if tag == seq {
                return Ok(f.fds);
            }
            if tag > seq {
                return Err(Error::protocol("queue side frames out of order"));
            }
        }
    }

    /// After the queue drained: if the ring had grown past [`KEEP_RESIDENT`] (`high` is how
    /// far the last lap went), return the pages beyond it to the kernel, so that memory follows
    /// the pending items, not the ring's size.
    fn give_back_memory(&self, high: u64) {
        let len = self.data_len();
        if high <= KEEP_RESIDENT || len <= KEEP_RESIDENT {
            return;
        }
        let _ = nix::fcntl::fallocate(
            self.region.as_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            (HEADER_LEN as u64 + KEEP_RESIDENT) as i64,
            (len - KEEP_RESIDENT) as i64,
        );
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
            if h.locked.count.load(Ordering::Relaxed) > 0
                || h.locked.shutdown.load(Ordering::Relaxed) != 0
            {
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
        if immediate {
            let mut dropped = 0u32;
            loop {
                let (head, tail) = (
                    h.locked.head.load(Ordering::Relaxed),
                    h.locked.tail.load(Ordering::Relaxed),
                );
                if head == tail {
                    break;
                }
                let Ok(record) = self.record_at(head, tail) else {
                    self.discard_corrupt();
                    break;
                };
                if record.flags & (FLAG_FDS | FLAG_LARGE) != 0 {
                    let _ = self.take_side_frame(record.seq);
                }
                h.locked.head.store(head + record.size, Ordering::Release);
                dropped += 1;
            }
            h.locked.count.store(0, Ordering::SeqCst);
            let before = h
                .unfinished
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                    Some(v.saturating_sub(dropped))
                })
                .unwrap_or(0);
            if before != 0 && before <= dropped {
                futex::wake_all(&h.unfinished.0);
            }
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

    /// The JoinableQueue counter of messages put and not yet marked done.
    pub(crate) fn unfinished(&self) -> &AtomicU32 {
        &self.header().unfinished.0
    }
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
    /// The message's length in bytes (in the ring, or in its own memory if `FLAG_LARGE`).
    len: u32,
    flags: u32,
    /// The tag of the record's side frame, if it has one.
    seq: u64,
    /// Bytes the record takes in the ring, header included.
    size: u64,
}

impl Record {
    fn parse(rh: &[u8; RECORD_HEADER as usize]) -> Record {
        let [l0, l1, l2, l3, f0, f1, f2, f3, s @ ..] = *rh;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let in_ring = if flags & FLAG_LARGE != 0 {
            0
        } else {
            u64::from(len)
        };
        Record {
            len,
            flags,
            seq: u64::from_le_bytes(s),
            size: RECORD_HEADER + in_ring.next_multiple_of(8),
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
mod tests {
    use super::*;

    fn put(ring: &Ring, bytes: &[u8]) -> Result<()> {
        ring.put(
            bytes,
            &[],
            false,
            Deadline::after(Some(std::time::Duration::ZERO)),
        )
    }

    fn get(ring: &Ring) -> Result<Vec<u8>> {
        ring.get(
            false,
            Deadline::after(Some(std::time::Duration::ZERO)),
            |bytes, _| Ok(bytes.to_vec()),
        )
    }

    /// Overwrites the length of the record at the ring's head, as a misbehaving process could.
    fn corrupt_head_record(ring: &Ring, len: u32) {
        let head = ring.header().locked.head.load(Ordering::Relaxed);
        let mut rh = [0u8; RECORD_HEADER as usize];
        ring.read_at(head, &mut rh);
        rh[..4].copy_from_slice(&len.to_le_bytes());
        ring.write_at(head, &rh);
    }

    #[test]
    fn a_record_longer_than_the_ring_is_an_error_and_the_queue_recovers() {
        let ring = Ring::create(0, 4096, false).unwrap();
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
        let ring = Ring::create(0, 4096, false).unwrap();
        put(&ring, b"x").unwrap();
        let locked = &ring.header().locked;
        // Head past tail: a subtraction that would underflow.
        locked.head.store(u64::MAX - 3, Ordering::Relaxed);
        assert!(matches!(put(&ring, b"y"), Err(Error::Protocol { .. })));
        put(&ring, b"z").unwrap();
        assert_eq!(get(&ring).unwrap(), b"z");
        // Tail far beyond head: more pending bytes than the ring holds.
        put(&ring, b"w").unwrap();
        locked.tail.fetch_add(1 << 40, Ordering::Relaxed);
        assert!(matches!(get(&ring), Err(Error::Protocol { .. })));
        put(&ring, b"v").unwrap();
        corrupt_head_record(&ring, 1 << 20);
        ring.shutdown(true);
        assert!(matches!(get(&ring), Err(Error::ShutDown)));
    }

    #[test]
    fn a_lock_taken_over_from_a_dead_holder_recounts_a_corrupt_ring_as_empty() {
        let ring = Ring::create(0, 4096, false).unwrap();
        put(&ring, b"x").unwrap();
        corrupt_head_record(&ring, 1 << 20);
        // A thread id beyond pid_max: a holder that cannot be alive.
        ring.header()
            .locked
            .lock
            .store(0x3FFF_FFF0, Ordering::Relaxed);
        assert!(matches!(get(&ring), Err(Error::Empty)));
        assert_eq!(ring.count(), 0);
    }
}
