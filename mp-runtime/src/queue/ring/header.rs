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
use super::holders;

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
    /// Who holds the items taken from a JoinableQueue (see [`super::holders`]).
    pub(super) holders: [holders::Holder; holders::SLOTS],
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
    /// A JoinableQueue get in progress (see [`super::holders`]).
    pub(super) intent: holders::Intent,
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
    /// Non-zero for a JoinableQueue: gets count who holds each item.
    pub(super) joinable: AtomicU32,
    /// Items counted as lost (their consumer died before `task_done`), not reported yet.
    pub(super) lost: AtomicU32,
    /// One past the highest holder slot ever claimed.
    pub(super) holders_used: AtomicU32,
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
