//! `RLock`: a re-entrant, owner-checked process-shared lock.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lock::{held_by_me, note_acquired, note_released};
use super::object::{Header, Object};
use super::robust;
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;

#[repr(C)]
pub(crate) struct RLockHeader {
    word: robust::Word,
    /// Acquisitions by the owner not yet released; only the owner writes it.
    count: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl Header for RLockHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-rlck2");
    const KIND: &'static std::ffi::CStr = c"mp-rlock";
}

/// A lock that its owner may acquire again (Python's `multiprocessing.RLock`): it is released
/// when every acquisition has been released. Only the owning thread can release it.
///
/// A dead owner is handled as for [`Lock`](crate::Lock): the next acquirer gets
/// [`Error::OwnerDied`] and the lock is free again.
///
/// ```
/// let r = mp::RLock::new()?;
/// let a = r.acquire()?;
/// let b = r.acquire()?; // the owner may re-enter
/// assert_eq!(r.count(), 2);
/// drop(b);
/// drop(a);
/// assert!(!r.locked());
/// assert!(matches!(r.release(), Err(mp::Error::InvalidState { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct RLock {
    obj: Object<RLockHeader>,
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            obj: Object::create(0, |_| {})?,
        })
    }

    fn h(&self) -> &RLockHeader {
        self.obj.header()
    }

    /// Takes the lock (again, if this thread owns it). [`Error::OwnerDied`] if its previous
    /// owner died holding it; the lock is then free.
    pub fn acquire(&self) -> Result<RLockGuard<'_>> {
        self.acquire_until(Deadline::NEVER)?.ok_or(Error::Timeout)
    }

    /// Like [`acquire`](RLock::acquire), giving up after `timeout` (`Ok(None)`).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Option<RLockGuard<'_>>> {
        self.acquire_until(Deadline::after(Some(timeout)))
    }

    /// Takes the lock if it is free or already ours; `Ok(None)` otherwise.
    pub fn try_acquire(&self) -> Result<Option<RLockGuard<'_>>> {
        self.acquire_until(Deadline::after(Some(Duration::ZERO)))
    }

    fn acquire_until(&self, deadline: Deadline) -> Result<Option<RLockGuard<'_>>> {
        let h = self.h();
        if held_by_me(&h.word) {
            h.count.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(RLockGuard {
                lock: self,
                _not_send: std::marker::PhantomData,
            }));
        }
        match robust::lock(&h.word, deadline) {
            None => return Ok(None),
            Some(robust::Acquired::Clean) => {}
            Some(robust::Acquired::OwnerDied) => {
                h.count.store(0, Ordering::Relaxed);
                robust::unlock(&h.word);
                return Err(Error::OwnerDied);
            }
        }
        h.count.store(1, Ordering::Relaxed);
        note_acquired();
        Ok(Some(RLockGuard {
            lock: self,
            _not_send: std::marker::PhantomData,
        }))
    }

    /// Releases one acquisition held without a guard (see [`RLockGuard::leak`]). Releasing a
    /// lock this thread does not own — unlocked, or owned by another thread or process — is
    /// [`Error::InvalidState`].
    pub fn release(&self) -> Result<()> {
        let h = self.h();
        if !held_by_me(&h.word) {
            return Err(match robust::owner_tid(&h.word) {
                0 => Error::state("release of an unlocked RLock"),
                tid => Error::state(format!(
                    "cannot release an RLock owned by thread {tid}: only its owner can"
                )),
            });
        }
        self.release_one();
        Ok(())
    }

    fn release_one(&self) {
        let h = self.h();
        if h.count.fetch_sub(1, Ordering::Relaxed) <= 1 {
            h.count.store(0, Ordering::Relaxed);
            note_released();
            robust::unlock(&h.word);
        }
    }

    /// Whether any thread holds the lock.
    pub fn locked(&self) -> bool {
        robust::is_locked(&self.h().word)
    }

    /// How many times the owner has acquired it without releasing (0 when free).
    pub fn count(&self) -> u32 {
        if self.locked() {
            self.h().count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether the calling thread owns the lock.
    pub fn is_owned(&self) -> bool {
        held_by_me(&self.h().word)
    }
}

impl fmt::Debug for RLock {
    /// `<RLock(None, 0)>`, or the owner's thread id and count: `<RLock(12345, 3)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match robust::owner_tid(&self.h().word) {
            0 => write!(f, "<RLock(None, 0)>"),
            tid => write!(f, "<RLock({tid}, {})>", self.count()),
        }
    }
}

/// One acquisition of an [`RLock`]; dropping it releases that acquisition.
#[must_use = "the acquisition is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    /// Not `Send`: only the owning thread may release an acquisition.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Keeps this acquisition without a guard; release it later with [`RLock::release`] from
    /// the same thread.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release_one();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RLockGuard({:?})", self.lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owner_whose_id_another_process_has_is_recovered() {
        let r = RLock::new().unwrap();
        let namesake = robust::Namesake::start();
        r.h().word.store(namesake.word(false), Ordering::Relaxed);
        r.h().count.store(3, Ordering::Relaxed);
        let got = r.acquire_timeout(Duration::from_secs(60));
        assert!(matches!(got, Err(Error::OwnerDied)), "{got:?}");
        let g = r.try_acquire().unwrap().expect("free after the recovery");
        assert_eq!(r.count(), 1);
        drop(g);
    }
}
