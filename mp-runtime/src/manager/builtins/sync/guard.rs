//! The guard form of a manager lock's `acquire`: the lock is released when the guard goes out
//! of scope, so an early return (`?`) between acquire and release cannot leave it held.

use std::time::Duration;

use crate::error::Result;
use crate::manager::ObjRef;

/// The method indices every lock-like built-in shares (lock, re-entrant lock, condition).
pub(super) const ACQUIRE: u16 = 0;
pub(super) const RELEASE: u16 = 1;

/// A manager lock held by this thread, released when dropped: what
/// [`LockProxy::acquire_guard`](super::LockProxy::acquire_guard) and its siblings on
/// [`RLockProxy`](super::RLockProxy) and [`ConditionProxy`](super::ConditionProxy) return
/// (the native [`mp::Lock`](crate::Lock)'s `acquire` returns a guard the same way).
///
/// Dropping the guard releases the lock and ignores an error (the manager may be gone);
/// [`release`](ProxyLockGuard::release) releases it and reports one.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ProxyLockGuard<'a> {
    r: &'a ObjRef,
    held: bool,
}

impl<'a> ProxyLockGuard<'a> {
    /// Takes the lock of `r` (one of the lock-like built-ins), waiting at most `wait`.
    pub(super) fn acquire(r: &'a ObjRef, wait: Option<Duration>) -> Result<Option<Self>> {
        let taken: bool = r.call_bounded(ACQUIRE, &(wait,), wait)?;
        // `then`, not `then_some`: a guard built and dropped would release the lock.
        Ok(taken.then(|| ProxyLockGuard { r, held: true }))
    }

    /// Releases the lock now, with the error if the release failed.
    pub fn release(mut self) -> Result<()> {
        self.held = false;
        self.r.call(RELEASE, &())
    }
}

impl Drop for ProxyLockGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            let _ = self.r.call::<_, ()>(RELEASE, &());
        }
    }
}

impl std::fmt::Debug for ProxyLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyLockGuard({:?})", self.r)
    }
}
