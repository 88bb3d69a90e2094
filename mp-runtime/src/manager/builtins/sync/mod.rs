//! Synchronization objects that live in the server (Python's manager `Lock`, `RLock`,
//! `Semaphore`, `BoundedSemaphore`, `Condition`, `Event` and `Barrier`).
//!
//! A blocked call blocks its connection's thread in the server, on a `Condvar`, with the
//! caller's timeout: the client waits for the reply only. Every wait also gives up when the
//! server shuts down (the caller gets `Error::ManagerShutdown`), and a caller whose process died
//! while it waited takes nothing. Unlike Python's, what a dead process held is let go: a
//! `Lock`, `RLock` or `Condition` held by a process that exits or is killed is released (the
//! server watches the holder's session).

mod barrier;
mod condition;
mod event;
mod guard;
mod lock;
mod semaphore;

pub use self::barrier::BarrierProxy;
pub use self::condition::ConditionProxy;
pub use self::event::EventProxy;
pub use self::guard::ProxyLockGuard;
pub use self::lock::{LockProxy, RLockProxy};
pub use self::semaphore::{BoundedSemaphoreProxy, SemaphoreProxy};

pub(crate) use self::barrier::BarrierObj;
pub(crate) use self::condition::ConditionObj;
pub(crate) use self::event::EventObj;
pub(crate) use self::lock::{LockObj, Owned, RLockObj};
pub(crate) use self::semaphore::SemaphoreObj;
