//! The ring's shared header and the encodings of its words.
//!
//! The header is laid out in cache lines by who writes them. Producers write their line (their
//! lock, what they last saw of `head`, the side channel's words) and `tail`; consumers write
//! theirs and `head`. In a steady flow each side finds its own lines in its cache: a producer
//! reads `head` only when its copy says the ring is full, a consumer reads `tail` only when its
//! copy says the ring is empty, and neither writes a line the other keeps reading except the
//! one word that publishes its progress.

use crate::sync::robust;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::super::side::SideWords;
use super::super::wake::Waiters;

/// The shared header at the start of a ring's memory.
#[repr(C)]
pub(super) struct Header {
    pub(super) magic: AtomicU64,
    pub(super) max_items: AtomicU64,
    /// Size of the data area, a power of two.
    pub(super) data_len: AtomicU64,
    /// Non-zero once `shutdown` was called.
    pub(super) shutdown: AtomicU32,
    pub(super) producers: Producers,
    /// [`End`] where records are added; written by producers.
    pub(super) tail: Word,
    pub(super) consumers: Consumers,
    /// [`End`] where records are taken; written by consumers.
    pub(super) head: Word,
    /// Consumers waiting for items.
    pub(super) items: Waiters,
    /// Producers waiting for room.
    pub(super) space: Waiters,
    pub(super) ready: Readiness,
    pub(super) joins: Joins,
}

/// Written by producers, under their lock (which lives on the same line).
#[repr(C, align(64))]
pub(super) struct Producers {
    pub(super) lock: robust::Word,
    /// The last `head` producers read: room that is known to be free.
    pub(super) head_seen: AtomicU64,
    /// The offset where the ring last restarted, to tell how far a lap went.
    pub(super) lap_base: AtomicU32,
    pub(super) side: SideWords,
}

/// Written by consumers, under their lock (which lives on the same line).
#[repr(C, align(64))]
pub(super) struct Consumers {
    pub(super) lock: robust::Word,
    /// The last `tail` consumers read: records that are known to be published.
    pub(super) tail_seen: AtomicU64,
    /// Messages dropped by immediate shutdowns (see [`Discard`]).
    pub(super) discard: AtomicU64,
}

/// One 64-bit word on a cache line of its own.
#[repr(C, align(64))]
pub(super) struct Word(pub(super) AtomicU64);

/// What `connection::wait` needs, changed under `lock` (a lock of its own, taken only while
/// someone waits on the queue).
#[repr(C, align(64))]
pub(super) struct Readiness {
    pub(super) lock: robust::Word,
    /// Whether the eventfd is readable.
    pub(super) signaled: AtomicU32,
    /// Callers of `connection::wait` currently polling the eventfd (changed without the lock).
    pub(super) pollers: AtomicU32,
}

/// JoinableQueue's counters.
#[repr(C, align(64))]
pub(super) struct Joins {
    /// `task_done` calls (wrapping).
    pub(super) done: AtomicU32,
    /// Processes in `join`.
    pub(super) joiners: AtomicU32,
    /// Bumped when the count of unfinished items may have reached zero; joiners sleep on it.
    pub(super) seq: AtomicU32,
}

/// One end of the ring as stored in one 64-bit word: how many messages went through it, and
/// its byte offset (both counting modulo 2^32; offsets map into the data area modulo its size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct End {
    pub(super) count: u32,
    pub(super) off: u32,
}

impl End {
    #[inline]
    pub(super) fn load(word: &AtomicU64, order: Ordering) -> End {
        End::from_word(word.load(order))
    }

    #[inline]
    pub(super) fn from_word(w: u64) -> End {
        End {
            count: (w >> 32) as u32,
            off: w as u32,
        }
    }

    #[inline]
    pub(super) fn word(self) -> u64 {
        (u64::from(self.count) << 32) | u64::from(self.off)
    }

    /// This end moved past a record of `size` bytes, counting `messages` messages.
    #[inline]
    pub(super) fn advanced(self, size: u64, messages: u32) -> End {
        End {
            count: self.count.wrapping_add(messages),
            off: self.off.wrapping_add(size as u32),
        }
    }
}

/// The messages dropped by immediate shutdowns, as stored in `Consumers::discard`: `total` is
/// exact while the drop is closed; an open drop, begun when `head` had counted `from` messages
/// (modulo 2^31), adds what `head` counted since. Opening, moving `head` and closing are one
/// store each, so a dropper that dies leaves an exact total, which the next consumer closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Discard {
    pub(super) total: u32,
    pub(super) open_from: Option<u32>,
}

impl Discard {
    const OPEN: u64 = 1 << 63;
    const FROM_MASK: u32 = (1 << 31) - 1;

    pub(super) fn load(word: &AtomicU64) -> Discard {
        let w = word.load(Ordering::Acquire);
        Discard {
            total: w as u32,
            open_from: (w & Discard::OPEN != 0).then_some((w >> 32) as u32 & Discard::FROM_MASK),
        }
    }

    pub(super) fn word(self) -> u64 {
        let open = match self.open_from {
            None => 0,
            Some(from) => Discard::OPEN | (u64::from(from & Discard::FROM_MASK) << 32),
        };
        open | u64::from(self.total)
    }

    /// The total, given the messages `head` has counted.
    pub(super) fn total(self, head_count: u32) -> u32 {
        match self.open_from {
            None => self.total,
            Some(from) => self
                .total
                .wrapping_add(head_count.wrapping_sub(from) & Discard::FROM_MASK),
        }
    }
}
