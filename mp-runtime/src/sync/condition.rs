//! `Condition`: a condition variable shared between processes, over a [`Lock`].
//!
//! Protocol (in shared memory: `counts` packs `waiting` and `signals` into one word, so that a
//! waiter can leave without the lock):
//! - `wait`: under the lock `waiting += 1`; release the lock; then until a signal is taken or
//!   the deadline passes: read `seq`, try to take a signal (`signals -= 1`), else sleep on
//!   `seq`. A waiter that timed out leaves in one atomic step, without the lock: it takes a
//!   signal that arrived meanwhile (it was notified after all), or else `waiting -= 1`. Then it
//!   takes the lock again.
//! - `notify(n)` (lock held): `k = min(n, waiting)`; `waiting -= k`, `signals += k`, `seq += 1`,
//!   wake `k` sleepers; then, still holding the lock, wait until those `k` signals are taken
//!   (bounded by [`DRAIN_LIMIT`], for a waiter that died). A waiter that arrives later needs
//!   the lock to register, so it cannot take a signal meant for an earlier one (Python's
//!   `Condition` has the same hand-shake). With nobody waiting nothing is stored, so a later
//!   `wait` still waits.
//!
//! `waiting + signals` is the number of registered waiters, so exactly `k` waiters return
//! notified, all of them waiting when `notify` was called. Wake-ups that find no signal
//! (another waiter took it, or the kernel woke us spuriously) go back to sleep: the caller never
//! sees them.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::futex;
use super::lock::{Lock, LockGuard};
use super::object::{Header, Object};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;

/// How long `notify` waits for the waiters it signalled to take their signals. Only a waiter
/// that died (or is stopped) takes longer; its signal is then left for anyone.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// `counts`: waiters registered and not notified in the high half, signals not yet taken in
/// the low half.
const ONE_WAITING: u64 = 1 << 32;

#[repr(C)]
pub(crate) struct CondHeader {
    counts: AtomicU64,
    /// Bumped by every notify; waiters sleep on it.
    seq: AtomicU32,
    /// Bumped by every waiter that takes a signal; a notifier sleeps on it while `draining`.
    taken: AtomicU32,
    /// Non-zero while a notifier waits for its signals to be taken.
    draining: AtomicU32,
}

fn waiting(counts: u64) -> u32 {
    (counts >> 32) as u32
}

fn signals(counts: u64) -> u32 {
    counts as u32
}

// SAFETY: atomics only.
unsafe impl Header for CondHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-cond2");
    const KIND: &'static std::ffi::CStr = c"mp-condition";
}

/// A condition variable shared between processes (Python's `multiprocessing.Condition`).
///
/// Waiting and notifying happen through the [`ConditionGuard`] that
/// [`acquire`](Condition::acquire) returns, so they always hold the lock, as Python requires.
/// The lock is the condition's own, or one given to [`with_lock`](Condition::with_lock).
///
/// ```
/// use std::time::Duration;
/// let cond = mp::Condition::new()?;
/// let mut g = cond.acquire()?;
/// assert!(!g.wait_timeout(Duration::from_millis(10))?); // nobody notifies
/// g.notify_all(); // nobody waits: nothing is stored
/// assert!(!g.wait_timeout(Duration::ZERO)?);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Condition {
    lock: Lock,
    obj: Object<CondHeader>,
}

impl Condition {
    /// A condition with a lock of its own.
    pub fn new() -> Result<Condition> {
        Condition::with_lock(Lock::new()?)
    }

    /// A condition over `lock` (Python's `Condition(lock)`): holding a guard of the condition
    /// holds `lock`.
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition {
            lock,
            obj: Object::create(0, |_| {})?,
        })
    }

    /// The lock the condition uses.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock; wait and notify through the guard. Errors as for [`Lock::acquire`].
    pub fn acquire(&self) -> Result<ConditionGuard<'_>> {
        Ok(ConditionGuard {
            cond: self,
            guard: Some(self.lock.acquire()?),
        })
    }

    /// Like [`acquire`](Condition::acquire), giving up after `timeout` (`Ok(None)`).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<ConditionGuard<'_>>> {
        Ok(self.lock.acquire_timeout(timeout)?.map(|g| ConditionGuard {
            cond: self,
            guard: Some(g),
        }))
    }

    fn h(&self) -> &CondHeader {
        self.obj.header()
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Condition({:?}, waiting={})>",
            self.lock,
            waiting(self.h().counts.load(Ordering::Relaxed))
        )
    }
}

/// The lock of a [`Condition`], held; dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// `None` only inside `wait`.
    guard: Option<LockGuard<'a>>,
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits until notified, and takes the lock again.
    ///
    /// [`Error::OwnerDied`] if a holder of the lock died while this thread waited; the guard
    /// holds the lock again all the same.
    pub fn wait(&mut self) -> Result<()> {
        self.wait_until(Deadline::NEVER).map(|_| ())
    }

    /// Like [`wait`](ConditionGuard::wait), for at most `timeout`: true if notified, false if
    /// the time ran out. The lock is held again in both cases.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    /// Waits until `predicate()` holds, re-checking it after every notification; returns at
    /// once if it already holds. The predicate runs with the lock held.
    pub fn wait_for(&mut self, mut predicate: impl FnMut() -> bool) -> Result<()> {
        while !predicate() {
            self.wait_until(Deadline::NEVER)?;
        }
        Ok(())
    }

    /// Like [`wait_for`](ConditionGuard::wait_for), for at most `timeout`; returns the
    /// predicate's last value.
    pub fn wait_for_timeout(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = Deadline::after(Some(timeout));
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.passed() {
                return Ok(false);
            }
            self.wait_until(deadline)?;
        }
    }

    fn wait_until(&mut self, deadline: Deadline) -> Result<bool> {
        let h = self.cond.h();
        h.counts.fetch_add(ONE_WAITING, Ordering::SeqCst);
        drop(self.guard.take());
        let mut notified = false;
        loop {
            let seq = h.seq.load(Ordering::SeqCst);
            if take_signal(h) {
                notified = true;
                break;
            }
            if !futex::wait(&h.seq, seq, deadline) {
                break;
            }
        }
        if !notified {
            notified = take_signal_or_leave(h);
        }
        let (guard, died) = self.cond.lock.acquire_recovering();
        self.guard = Some(guard);
        if died {
            return Err(Error::OwnerDied);
        }
        Ok(notified)
    }

    /// Wakes up to `n` of the threads waiting now (in any process), and returns once they have
    /// taken their notifications (or after 1 s, if one died waiting: a later waiter may then
    /// wake without a notify of its own). Has no effect on later waits.
    pub fn notify(&mut self, n: u32) {
        let h = self.cond.h();
        let mut counts = h.counts.load(Ordering::SeqCst);
        let (k, leftover) = loop {
            let k = n.min(waiting(counts));
            if k == 0 {
                return;
            }
            let moved = counts - u64::from(k) * ONE_WAITING + u64::from(k);
            match h
                .counts
                .compare_exchange(counts, moved, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break (k, signals(counts)),
                Err(now) => counts = now,
            }
        };
        h.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&h.seq, k.min(i32::MAX as u32) as i32);
        // Hold the lock until the signalled waiters have taken their signals, so that nobody
        // who starts waiting after this notify can take one of them.
        let drained = Deadline::after(Some(DRAIN_LIMIT));
        h.draining.store(1, Ordering::SeqCst);
        loop {
            let taken = h.taken.load(Ordering::SeqCst);
            if signals(h.counts.load(Ordering::SeqCst)) <= leftover {
                break;
            }
            if !futex::wait(&h.taken, taken, drained) {
                break;
            }
        }
        h.draining.store(0, Ordering::SeqCst);
    }

    /// Wakes one waiter (Python's `notify()` without argument).
    pub fn notify_one(&mut self) {
        self.notify(1)
    }

    /// Wakes every waiting thread.
    pub fn notify_all(&mut self) {
        self.notify(u32::MAX)
    }
}

/// Takes one signal if there is one.
fn take_signal(h: &CondHeader) -> bool {
    let took = h
        .counts
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
            (signals(c) > 0).then(|| c - 1)
        })
        .is_ok();
    if took {
        signal_taken(h);
    }
    took
}

/// For a waiter whose time ran out: takes a signal that arrived meanwhile (true), or else
/// removes the waiter from `waiting` (false), in one step, so that no notify counts it after.
fn take_signal_or_leave(h: &CondHeader) -> bool {
    let before = h
        .counts
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
            if signals(c) > 0 {
                Some(c - 1)
            } else {
                // A count of zero can only come from a corrupt header: leave it.
                Some(c.saturating_sub(ONE_WAITING))
            }
        })
        .unwrap_or(0);
    let took = signals(before) > 0;
    if took {
        signal_taken(h);
    }
    took
}

/// Tells a notifier waiting for its signals to be taken that one was.
fn signal_taken(h: &CondHeader) {
    h.taken.fetch_add(1, Ordering::SeqCst);
    if h.draining.load(Ordering::SeqCst) != 0 {
        futex::wake_all(&h.taken);
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConditionGuard({:?})", self.cond)
    }
}
