//! `Condition`: a condition variable shared between processes, over a [`Lock`].
//!
//! Protocol (all counters in shared memory; `waiting` and `signals` change under the lock, except
//! that a woken waiter takes its signal without it):
//! - `wait`: `waiting += 1`, release the lock, then until a signal is taken or the deadline
//!   passes: read `seq`, try to take a signal (`signals -= 1`), else sleep on `seq`. A waiter
//!   that timed out takes the lock again and then either takes a signal that arrived meanwhile
//!   (it was notified after all) or removes itself (`waiting -= 1`).
//! - `notify(n)`: `k = min(n, waiting)`; `waiting -= k`, `signals += k`, `seq += 1`, wake `k`
//!   sleepers. With nobody waiting nothing is stored, so a later `wait` still waits.
//!
//! `waiting + signals` is the number of registered waiters, so exactly `k` waiters return
//! notified. Wake-ups that find no signal (another waiter took it, or the kernel woke us
//! spuriously) go back to sleep: the caller never sees them.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::futex;
use super::lock::{Lock, LockGuard};
use super::object::{Header, Object};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;

#[repr(C)]
pub(crate) struct CondHeader {
    waiting: AtomicU32,
    signals: AtomicU32,
    seq: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl Header for CondHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-cond1");
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
            self.h().waiting.load(Ordering::Relaxed)
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
        h.waiting.fetch_add(1, Ordering::SeqCst);
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
        let (guard, died) = self.cond.lock.acquire_recovering();
        self.guard = Some(guard);
        if !notified {
            if take_signal(h) {
                notified = true;
            } else {
                h.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if died {
            return Err(Error::OwnerDied);
        }
        Ok(notified)
    }

    /// Wakes up to `n` of the waiting threads (in any process). Has no effect on later waits.
    pub fn notify(&mut self, n: u32) {
        let h = self.cond.h();
        let k = n.min(h.waiting.load(Ordering::SeqCst));
        if k == 0 {
            return;
        }
        h.waiting.fetch_sub(k, Ordering::SeqCst);
        h.signals.fetch_add(k, Ordering::SeqCst);
        h.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(&h.seq, k.min(i32::MAX as u32) as i32);
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

fn take_signal(h: &CondHeader) -> bool {
    let mut v = h.signals.load(Ordering::SeqCst);
    while v > 0 {
        match h
            .signals
            .compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return true,
            Err(now) => v = now,
        }
    }
    false
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConditionGuard({:?})", self.cond)
    }
}
