//! `Lock`: a process-shared mutual-exclusion lock whose guard releases it, robust to the death of
//! its holder.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::object::{Header, Object};
use super::robust;
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;

thread_local! {
    /// How many robust locks (Lock, RLock) this thread holds. Tells "this thread holds it" from
    /// "a dead thread with the same id held it" when a lock word names the calling thread.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

pub(crate) fn note_acquired() {
    HELD.with(|h| h.set(h.get().saturating_add(1)));
}

pub(crate) fn note_released() {
    HELD.with(|h| h.set(h.get().saturating_sub(1)));
}

/// Whether the word names this thread as a live holder (not a dead namesake).
pub(crate) fn held_by_me(word: &robust::Word) -> bool {
    robust::holder(word) == robust::me() && HELD.with(Cell::get) > 0
}

#[repr(C)]
pub(crate) struct LockHeader {
    word: robust::Word,
    /// 1 while the holder holds the lock without a guard ([`LockGuard::leak`]): only such an
    /// acquisition may be released by [`Lock::release`], from any process. A guard's holder may
    /// be using data the lock protects (a `ValueGuard`'s `&mut T`), so nobody else may end it.
    leaked: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl Header for LockHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-lock2");
    const KIND: &'static std::ffi::CStr = c"mp-lock";
}

/// A lock shared between processes (Python's `multiprocessing.Lock`).
///
/// [`acquire`](Lock::acquire) returns a guard that releases the lock when dropped. Clones and
/// copies received by other processes (pass the lock as a worker argument) are the same lock.
///
/// If a holder dies (even by `kill -9`), the lock is not locked forever: the next acquirer gets
/// [`Error::OwnerDied`] and the lock is free again, so the one after that gets it normally.
/// The data the lock protected may be half-updated; repair it after taking the lock again.
/// (A manager's lock, [`LockProxy`](crate::manager::LockProxy), is released silently when its
/// holder dies, as its doc explains: the data it guards lives elsewhere, and Python's manager
/// locks report nothing either.)
/// A holder is recognized by its thread id and a tag that a later thread given the same id
/// does not share, so a dead holder's lock is recovered even when another process has its id
/// by then.
///
/// Python's `release()` from any process is [`release`](Lock::release) of an acquisition that
/// its holder turned into a bare one with [`LockGuard::leak`]; an acquisition still held
/// through a guard is only ended by dropping the guard.
///
/// A thread that acquires a lock it already holds would wait forever; `acquire` reports it as
/// [`Error::InvalidState`] instead (use [`RLock`](crate::RLock) for re-entry).
///
/// ```
/// let lock = mp::Lock::new()?;
/// {
///     let _guard = lock.acquire()?;
///     assert!(lock.locked());
///     assert!(lock.try_acquire()?.is_none());
/// }
/// assert!(!lock.locked());
/// assert!(matches!(lock.release(), Err(mp::Error::InvalidState { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Lock {
    obj: Object<LockHeader>,
}

impl Lock {
    /// A new, unlocked lock.
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            obj: Object::create(0, |_| {})?,
        })
    }

    #[inline]
    fn word(&self) -> &robust::Word {
        &self.obj.header().word
    }

    fn leaked(&self) -> &AtomicU32 {
        &self.obj.header().leaked
    }

    /// Waits until the lock is free and takes it. [`Error::OwnerDied`] if the previous holder
    /// died holding it (the lock is then free); [`Error::InvalidState`] if this thread holds it.
    #[inline]
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        match self.acquire_until(Deadline::NEVER, true)? {
            Some(g) => Ok(g),
            None => Err(Error::Timeout),
        }
    }

    /// Like [`acquire`](Lock::acquire), giving up after `timeout`: `Ok(None)` if the lock stayed
    /// held.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<LockGuard<'_>>> {
        self.acquire_until(Deadline::after(Some(timeout)), false)
    }

    /// Takes the lock if it is free now; `Ok(None)` otherwise.
    pub fn try_acquire(&self) -> Result<Option<LockGuard<'_>>> {
        self.acquire_until(Deadline::after(Some(Duration::ZERO)), false)
    }

    #[inline]
    fn acquire_until(&self, deadline: Deadline, forever: bool) -> Result<Option<LockGuard<'_>>> {
        let word = self.word();
        if !robust::try_lock_free(word) && !self.acquire_slow(word, deadline, forever)? {
            return Ok(None);
        }
        note_acquired();
        Ok(Some(LockGuard {
            lock: self,
            _not_send: std::marker::PhantomData,
        }))
    }

    #[cold]
    fn acquire_slow(&self, word: &robust::Word, deadline: Deadline, forever: bool) -> Result<bool> {
        loop {
            let cur = robust::holder(word);
            if cur == 0 || !held_by_me(word) {
                break;
            }
            if forever {
                return Err(Error::state(
                    "this thread already holds the Lock, so acquiring it again would wait \
                     forever; release it first, or use an RLock",
                ));
            }
            if deadline.passed() {
                return Ok(false);
            }
            // Another process may release a leaked acquisition for us, or not.
            robust::sleep_while_held_by(word, cur, deadline);
        }
        match robust::lock(word, deadline) {
            None => Ok(false),
            Some(robust::Acquired::Clean) => Ok(true),
            Some(robust::Acquired::OwnerDied) => {
                self.leaked().store(0, Ordering::Relaxed);
                robust::unlock(word);
                Err(Error::OwnerDied)
            }
        }
    }

    /// Takes the lock only if it is free now, never recovering it from a dead holder (which
    /// would consume the `OwnerDied` report that the next acquirer must see). For `Debug`.
    pub(crate) fn try_acquire_free(&self) -> Option<LockGuard<'_>> {
        if !robust::try_lock_free(self.word()) {
            return None;
        }
        note_acquired();
        Some(LockGuard {
            lock: self,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Takes the lock, waiting as long as needed, also from a dead holder. Returns whether the
    /// previous holder died. For `Condition`, which must hold the lock again after a wait.
    pub(crate) fn acquire_recovering(&self) -> (LockGuard<'_>, bool) {
        let died = matches!(
            robust::lock(self.word(), Deadline::NEVER),
            Some(robust::Acquired::OwnerDied)
        );
        if died {
            self.leaked().store(0, Ordering::Relaxed);
        }
        note_acquired();
        (
            LockGuard {
                lock: self,
                _not_send: std::marker::PhantomData,
            },
            died,
        )
    }

    /// Whether some thread of some process holds the lock (Python's `locked()`). A holder that
    /// died still counts until the next acquire notices.
    pub fn locked(&self) -> bool {
        robust::is_locked(self.word())
    }

    /// Releases a lock held without a guard (see [`LockGuard::leak`]); any process may release
    /// it, as in Python. Releasing an unlocked lock, or one held through a guard (the guard
    /// releases it when dropped), is [`Error::InvalidState`].
    pub fn release(&self) -> Result<()> {
        let word = self.word();
        if !robust::is_locked(word) {
            return Err(Error::state("release of an unlocked Lock"));
        }
        // Only one releaser can take the leaked mark, so only one of them unlocks.
        if self.leaked().swap(0, Ordering::AcqRel) == 0 {
            return Err(Error::state(
                "the Lock is held through a guard, which releases it when dropped; release() \
                 only ends an acquisition made bare with LockGuard::leak",
            ));
        }
        if robust::holder(word) == robust::me() {
            note_released();
        }
        robust::unlock(word);
        Ok(())
    }

    /// Whether `self` and `other` are the same lock (possibly received through different
    /// messages).
    pub fn same_as(&self, other: &Lock) -> bool {
        self.obj.same_as(&other.obj)
    }

    /// The device and inode of the lock's memfd, which identify it in every process.
    pub(crate) fn file_id(&self) -> Result<(u64, u64)> {
        self.obj.file_id()
    }
}

impl fmt::Debug for Lock {
    /// `<Lock(owner=None)>`, or the holder's thread id: `<Lock(owner=12345)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match robust::owner_tid(self.word()) {
            0 => write!(f, "<Lock(owner=None)>"),
            tid => write!(f, "<Lock(owner={tid})>"),
        }
    }
}

/// Holds a [`Lock`]; dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    /// Not `Send`: the per-thread count of held locks must be decremented by the holder.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    /// Keeps the lock held without a guard; release it later with [`Lock::release`] (from any
    /// process). For hand-over patterns where another process releases.
    pub fn leak(self) {
        self.lock.leaked().store(1, Ordering::Release);
        std::mem::forget(self);
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &'a Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        note_released();
        robust::unlock(self.lock.word());
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockGuard({:?})", self.lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_holder_whose_id_another_process_has_is_recovered() {
        let lock = Lock::new().unwrap();
        // The holder died; a process that is not it now has its thread id.
        let namesake = robust::Namesake::start();
        lock.word().store(namesake.word(false), Ordering::Relaxed);
        assert!(lock.locked());
        let r = lock.acquire_timeout(Duration::from_secs(60));
        assert!(matches!(r, Err(Error::OwnerDied)), "{r:?}");
        // Free again, for good.
        assert!(!lock.locked());
        drop(
            lock.try_acquire()
                .unwrap()
                .expect("free after the recovery"),
        );
    }

    #[test]
    fn a_live_holder_in_another_process_keeps_the_lock() {
        let lock = Lock::new().unwrap();
        let namesake = robust::Namesake::start();
        lock.word().store(namesake.word(true), Ordering::Relaxed);
        assert!(
            lock.acquire_timeout(Duration::from_millis(300))
                .unwrap()
                .is_none()
        );
        assert!(lock.locked());
    }

    #[test]
    fn only_a_leaked_acquisition_can_be_released() {
        let lock = Lock::new().unwrap();
        let g = lock.acquire().unwrap();
        let other = lock.clone();
        let r = std::thread::spawn(move || other.release()).join().unwrap();
        assert!(matches!(r, Err(Error::InvalidState { .. })), "{r:?}");
        assert!(lock.locked());
        drop(g);
        lock.acquire().unwrap().leak();
        let other = lock.clone();
        std::thread::spawn(move || other.release())
            .join()
            .unwrap()
            .unwrap();
        assert!(!lock.locked());
    }
}
