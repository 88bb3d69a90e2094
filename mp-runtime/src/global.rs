//! Process-global state that a forked child can start afresh.
//!
//! After `fork` only the forking thread exists in the child. A `Mutex` another thread held at
//! that moment stays locked forever in the child. [`Global`] therefore keeps its state behind an
//! atomic pointer: [`Global::reset`] (called in a fork child before anything else) swaps in a
//! fresh value and deliberately leaks the old one, locked or not.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A lazily created, fork-resettable `Mutex<T>`.
pub(crate) struct Global<T> {
    ptr: AtomicPtr<Mutex<T>>,
    init: fn() -> T,
}

impl<T> Global<T> {
    /// A global whose value is made by `init` on first use.
    pub(crate) const fn new(init: fn() -> T) -> Self {
        Global {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            init,
        }
    }

    fn get(&self) -> &'static Mutex<T> {
        let mut p = self.ptr.load(Ordering::Acquire);
        if p.is_null() {
            let fresh = Box::into_raw(Box::new(Mutex::new((self.init)())));
            match self.ptr.compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => p = fresh,
                Err(existing) => {
                    // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    p = existing;
                }
            }
        }
        // SAFETY: `p` is non-null and came from Box::into_raw; boxes stored here are never freed
        // (reset leaks the old one), so the reference is valid for 'static.
        unsafe { &*p }
    }

    /// Locks the value, recovering from poisoning (the state stays consistent on panic because
    /// every critical section is a few assignments).
    pub(crate) fn lock(&self) -> MutexGuard<'static, T> {
        self.get().lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts afresh, leaking the previous value. Only for a fork child, where other threads
    /// (and whatever they locked) no longer exist.
    pub(crate) fn reset(&self) {
        self.ptr.store(std::ptr::null_mut(), Ordering::Release);
    }
}
