//! Who holds the items of a `JoinableQueue` that were taken and not yet marked done, so that an
//! item whose consumer died before `task_done` can be counted as lost instead of keeping
//! `join()` waiting forever.
//!
//! Each consumer process claims a slot in the ring's header, keyed by its pid and its tag
//! (`sys::thread_tag`: pids are reused). A slot counts the items its process `taken` and the
//! `done` marked for them.
//! Every transition is one store:
//!
//! - A get writes its slot's `taken + 1` *before* the store of `head` that takes the item, so
//!   that a reader who adds `qsize` and the slots' counts never misses the item (it may count it
//!   twice for an instant, which only makes `join` wait a little longer). The get first records
//!   its intent (slot, `taken` before, `head` before) on the consumers' line; a consumer that
//!   takes the lock over from a dead one reads it and puts `taken` back if `head` did not move.
//! - `task_done` adds one to `done` of its own slot with a compare-and-swap (or of any slot that
//!   owes an item, for an item taken by another process).
//! - A `join` that finds a slot owing items whose process is gone moves `done` up to `taken`
//!   (one compare-and-swap), adds what it moved to the lost count that the next finished
//!   `join` reports, and frees the slot.
//!
//! A process that drops its handle on the queue (a consumer that returns, or unwinds from a
//! panic) *releases* its slot: what it still owes stays unfinished, for another process to mark
//! done (Python's pattern of `get` in one process and `task_done` in another), and is never
//! counted as lost. Only a process that dies without dropping it (SIGKILL, an abort, a crash)
//! loses its items. A process that finds no free slot (more live consumer processes than slots)
//! uses slot 0, the shared slot, whose items are never counted as lost either.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::super::crash;
use crate::sys::thread_tag;

/// Slots in the header; slot 0 is shared.
pub(super) const SLOTS: usize = 128;

/// Set in a slot's `pid` when its process dropped its handle: its items are not lost.
const RELEASED: u32 = 1 << 31;

/// One consumer process's counts, on a cache line of its own: consumers in different processes
/// do not take each other's line as they count.
#[repr(C, align(64))]
#[derive(Default)]
pub(super) struct Holder {
    /// The process's pid, with [`RELEASED`] once it dropped its handle; 0 for a free slot
    /// (always 0 for the shared slot).
    pid: AtomicU32,
    /// Its [`thread_tag`] (its main thread's), telling a reused pid apart.
    tag: AtomicU32,
    /// Items it took (wrapping).
    taken: AtomicU32,
    /// Items marked done for it (wrapping; never past `taken`).
    done: AtomicU32,
}

impl Holder {
    /// Items taken and not marked done.
    fn owed(&self) -> u32 {
        let done = self.done.load(Ordering::Acquire);
        let taken = self.taken.load(Ordering::Acquire);
        owed(taken, done)
    }
}

/// `taken - done`, 0 if that is not a plausible count (memory written outside the protocol).
fn owed(taken: u32, done: u32) -> u32 {
    let n = taken.wrapping_sub(done);
    if n > 1 << 30 { 0 } else { n }
}

/// The intent of a get in progress, on the consumers' line (written under their lock).
#[repr(C)]
#[derive(Default)]
pub(super) struct Intent {
    /// `(slot + 1) << 32 | taken before`; 0 when no get is in progress.
    word: AtomicU64,
    /// The count of `head` before the get.
    head: AtomicU32,
}

/// The JoinableQueue words of the header.
pub(super) struct Words<'a> {
    pub(super) slots: &'a [Holder; SLOTS],
    /// One past the highest slot ever claimed: the slots above are never looked at.
    pub(super) used: &'a AtomicU32,
    pub(super) intent: &'a Intent,
    /// Items counted as lost and not reported yet.
    pub(super) lost: &'a AtomicU32,
}

/// Which slot this process uses for a ring, and for which pid it was claimed (a forked child
/// claims its own).
#[derive(Debug, Default)]
pub(super) struct Mine {
    pid: AtomicU32,
    slot: AtomicU32,
}

impl Words<'_> {
    /// The slot this process counts its items in, claimed on first use.
    pub(super) fn slot(&self, mine: &Mine) -> usize {
        let pid = crate::sys::pid::current();
        if mine.pid.load(Ordering::Relaxed) == pid {
            let slot = mine.slot.load(Ordering::Relaxed) as usize;
            // Still ours (another handle of this process may have released it).
            if slot == 0 || self.slots[slot].pid.load(Ordering::Relaxed) == pid {
                return slot;
            }
        }
        let slot = self.claim(pid);
        mine.slot.store(slot as u32, Ordering::Relaxed);
        mine.pid.store(pid, Ordering::Relaxed);
        slot
    }

    fn claim(&self, pid: u32) -> usize {
        let tag = thread_tag::own(pid);
        // A slot this process released (through another handle) is taken back as it is.
        for (i, h) in self.slots.iter().enumerate().skip(1) {
            if h.pid.load(Ordering::SeqCst) == pid | RELEASED
                && h.tag.load(Ordering::SeqCst) == tag
                && h.pid
                    .compare_exchange(pid | RELEASED, pid, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return i;
            }
        }
        for (i, h) in self.slots.iter().enumerate().skip(1) {
            let holder = h.pid.load(Ordering::SeqCst);
            let free = holder == 0
                || (h.owed() == 0
                    && (holder & RELEASED != 0
                        || !thread_tag::still_running(holder, h.tag.load(Ordering::SeqCst))));
            if free
                && h.pid
                    .compare_exchange(holder, pid, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                h.tag.store(tag, Ordering::SeqCst);
                // Counts start level: whatever a previous holder left is settled.
                let taken = h.taken.load(Ordering::SeqCst);
                h.done.store(taken, Ordering::SeqCst);
                self.used.fetch_max(i as u32 + 1, Ordering::SeqCst);
                return i;
            }
        }
        0
    }

    /// Before the store of `head` that takes an item (consumers' lock held): counts it in
    /// `slot`, recording the intent.
    pub(super) fn begin_take(&self, slot: usize, head_count: u32) {
        // Release stores: each is seen after the ones before it (by the next holder of the
        // lock, and by a reader of the counts, who reads `head` before the slots), and the
        // store of `head` that follows is seen after them all.
        let h = &self.slots[slot];
        let taken = h.taken.load(Ordering::Relaxed);
        self.intent.head.store(head_count, Ordering::Release);
        self.intent.word.store(
            ((slot as u64 + 1) << 32) | u64::from(taken),
            Ordering::Release,
        );
        crash::point();
        h.taken.store(taken.wrapping_add(1), Ordering::Release);
        crash::point();
    }

    /// After the store of `head` (consumers' lock held).
    pub(super) fn end_take(&self) {
        self.intent.word.store(0, Ordering::Release);
        crash::point();
    }

    /// After a consumer died holding the lock: undoes its count if it did not take the item
    /// (`head_count` is `head` now).
    pub(super) fn repair(&self, head_count: u32) {
        let w = self.intent.word.load(Ordering::SeqCst);
        if w == 0 {
            return;
        }
        let slot = (w >> 32) as usize - 1;
        if let Some(h) = self.slots.get(slot)
            && self.intent.head.load(Ordering::SeqCst) == head_count
        {
            h.taken.store(w as u32, Ordering::SeqCst);
        }
        self.intent.word.store(0, Ordering::SeqCst);
    }

    /// The slots ever claimed (and the shared one).
    fn in_use(&self) -> &[Holder] {
        let used = (self.used.load(Ordering::SeqCst) as usize).clamp(1, SLOTS);
        &self.slots[..used]
    }

    /// Items taken and not marked done, over all slots.
    pub(super) fn owed(&self) -> u32 {
        self.slots
            .iter()
            .fold(0u32, |n, h| n.wrapping_add(h.owed()))
    }

    /// Marks one item done: one of this process's (`mine`) if it owes any, else any slot's.
    /// False if no slot owes an item.
    pub(super) fn done(&self, mine: usize) -> bool {
        let used = self.in_use().len();
        let order = std::iter::once(mine).chain((0..used).filter(|i| *i != mine));
        for i in order {
            let h = &self.slots[i];
            loop {
                let done = h.done.load(Ordering::Acquire);
                let taken = h.taken.load(Ordering::Acquire);
                if owed(taken, done) == 0 {
                    break;
                }
                if h.done
                    .compare_exchange(
                        done,
                        done.wrapping_add(1),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                {
                    return true;
                }
            }
        }
        false
    }

    /// Counts the items of slots whose process is gone as lost and frees those slots; returns
    /// how many were counted.
    pub(super) fn collect_dead(&self) -> u32 {
        let mut lost = 0u32;
        // A slot whose get was cut short is repaired by the next consumer to take the lock
        // (the item may still be in the ring): not before.
        let pending = match self.intent.word.load(Ordering::SeqCst) {
            0 => usize::MAX,
            w => (w >> 32) as usize - 1,
        };
        for (i, h) in self.in_use().iter().enumerate().skip(1) {
            let pid = h.pid.load(Ordering::SeqCst);
            if i == pending
                || pid == 0
                || pid & RELEASED != 0
                || h.owed() == 0
                || thread_tag::still_running(pid, h.tag.load(Ordering::SeqCst))
            {
                continue;
            }
            let done = h.done.load(Ordering::SeqCst);
            let taken = h.taken.load(Ordering::SeqCst);
            let n = owed(taken, done);
            if n > 0
                && h.done
                    .compare_exchange(done, taken, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                crash::point();
                self.lost.fetch_add(n, Ordering::SeqCst);
                lost = lost.wrapping_add(n);
                let _ = h
                    .pid
                    .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
        lost
    }

    /// This process drops its handle: what its slot still owes is for others to mark done,
    /// never lost.
    pub(super) fn release(&self, mine: &Mine) {
        let pid = crate::sys::pid::current();
        if mine.pid.load(Ordering::Relaxed) != pid {
            return;
        }
        let slot = mine.slot.load(Ordering::Relaxed) as usize;
        if slot != 0 {
            let _ = self.slots[slot].pid.compare_exchange(
                pid,
                pid | RELEASED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// The items counted as lost since the last report, reset to 0.
    pub(super) fn take_lost(&self) -> u32 {
        self.lost.swap(0, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let tag = thread_tag::own(me);
        assert!(thread_tag::still_running(me, tag));
        // Another tag under the same id (a process that got a dead holder's pid).
        let other = if tag ^ 2 == thread_tag::UNKNOWN {
            tag ^ 4
        } else {
            tag ^ 2
        };
        assert!(!thread_tag::still_running(me, other));
        assert!(!thread_tag::still_running(
            u32::MAX - 1,
            thread_tag::UNKNOWN
        ));
    }
}
