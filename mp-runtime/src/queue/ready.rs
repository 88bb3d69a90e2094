//! Readiness of a queue for `connection::wait`, which polls descriptors: an eventfd kept
//! readable exactly while the queue has items (or is shut down), once someone waits on it.
//!
//! It costs nothing until someone waits: a waiter registers in `pollers` and then the eventfd is
//! brought in line with the queue. While `pollers` is non-zero, a producer that published an
//! item, and a consumer that drained the queue, take the readiness lock and set the eventfd
//! from what the queue holds *then*, so that a producer and a consumer racing each other leave
//! it right: whichever takes the lock last sees the other's store. A registering waiter and a
//! producer form the usual pair of a store followed by a load on each side (the item, then
//! `pollers`; `pollers`, then the item), with the barriers of `super::barrier` in between, so
//! at least one of them sets the eventfd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::sync::robust;
use crate::sys::poll::Deadline;

/// One process's eventfd for a queue.
#[derive(Debug)]
pub(crate) struct Ready(OwnedFd);

/// The shared words of [`Ready`] (see `header::Readiness`).
pub(crate) struct Words<'a> {
    pub(crate) lock: &'a robust::Word,
    pub(crate) signaled: &'a AtomicU32,
    pub(crate) pollers: &'a AtomicU32,
}

impl Ready {
    /// A new eventfd, not readable.
    pub(crate) fn create() -> Result<Ready> {
        let event = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(|e| Error::sys("create queue eventfd", e))?;
        Ok(Ready(event.into()))
    }

    /// The eventfd received with a queue from another process.
    pub(crate) fn from_fd(fd: OwnedFd) -> Ready {
        Ready(fd)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Registers a waiter, brings the eventfd in line with `ready()` and returns it.
    pub(crate) fn begin_wait(&self, w: &Words<'_>, ready: impl Fn() -> bool) -> BorrowedFd<'_> {
        w.pollers.fetch_add(1, Ordering::SeqCst);
        super::barrier::heavy();
        self.update(w, ready);
        self.fd()
    }

    /// Unregisters a waiter of [`Ready::begin_wait`].
    pub(crate) fn end_wait(&self, w: &Words<'_>) {
        w.pollers.fetch_sub(1, Ordering::SeqCst);
    }

    /// After a store that may have changed `ready()` and a [`super::barrier::light`]: if someone waits,
    /// sets the eventfd from `ready()`. (With nobody waiting it may go stale: the next
    /// [`Ready::begin_wait`] brings it in line.)
    #[inline]
    pub(crate) fn changed(&self, w: &Words<'_>, ready: impl Fn() -> bool) {
        if w.pollers.load(Ordering::SeqCst) > 0 {
            self.update(w, ready);
        }
    }

    #[cold]
    fn update(&self, w: &Words<'_>, ready: impl Fn() -> bool) {
        let Some(acquired) = robust::lock(w.lock, Deadline::NEVER) else {
            return;
        };
        if acquired == robust::Acquired::OwnerDied {
            // The dead holder may have changed the eventfd without its flag or the reverse.
            self.clear();
            w.signaled.store(0, Ordering::Relaxed);
        }
        let want = ready();
        let is = w.signaled.load(Ordering::Relaxed) != 0;
        if want && !is {
            let _ = nix::unistd::write(&self.0, &1u64.to_ne_bytes());
            w.signaled.store(1, Ordering::Relaxed);
        } else if !want && is {
            self.clear();
            w.signaled.store(0, Ordering::Relaxed);
        }
        robust::unlock(w.lock);
    }

    /// Makes the eventfd unreadable.
    fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.0, &mut buf);
    }
}
