//! Process-shared synchronization built on futexes in shared memory: [`Lock`], [`RLock`],
//! [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Event`] and [`Barrier`].
//!
//! Each object lives in anonymous shared memory (a memfd) and travels to other processes as a
//! descriptor, so it can be a worker argument under every start method, and nothing of it can
//! outlive the last process that uses it, however they die. Locks are robust: a holder that
//! dies does not block the others forever. The protocols are written down in `sync/README.md`.

mod barrier;
mod condition;
mod event;
pub(crate) mod futex;
mod lock;
pub(crate) mod object;
mod rlock;
pub(crate) mod robust;
mod semaphore;

pub use barrier::{Barrier, BarrierBuilder};
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
