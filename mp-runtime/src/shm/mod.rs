//! Shared state: [`Value`] and [`Array`] of plain-old-data (with or without a lock) in
//! anonymous shared memory, and named segments ([`SharedMemory`], [`ShareableList`],
//! [`SharedMemoryManager`]) with a resource tracker that unlinks what a killed creator leaked.
//! What each type guarantees under concurrent use is written down in `shm/README.md`.
//!
//! One convention for element access across the module: `get(i)` and `set(i, v)` of
//! [`Array`], [`RawArray`] and [`ShareableList`] return `Result`, and an index out of range is
//! [`Error::InvalidArgument`](crate::Error::InvalidArgument) for both, never a panic and never
//! `None` (an `Array` access can also fail on its lock, a `ShareableList` one on decoding, so
//! `Option` could not say everything; the lockless `RawArray` follows them so that code moves
//! between the three unchanged). [`Value`] and the guards of `lock()` follow the lock's errors;
//! [`RawValue`] has no index and no lock, so its `get`/`set` cannot fail. Slices of a guard
//! (`&a.lock()?[..]`) are std's slices: `get` gives `Option`, indexing panics.

mod array;
mod atomic_copy;
mod elements;
mod layout;
mod list;
mod manager;
mod shared_memory;
pub(crate) mod tracker;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use list::ShareableList;
pub use manager::SharedMemoryManager;
pub use shared_memory::SharedMemory;
pub use value::{RawValue, Value, ValueGuard};
