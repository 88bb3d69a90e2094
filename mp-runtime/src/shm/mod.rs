//! Shared state: [`Value`] and [`Array`] of plain-old-data (with or without a lock) in
//! anonymous shared memory, and named segments ([`SharedMemory`], [`ShareableList`],
//! [`SharedMemoryManager`]) with a resource tracker that unlinks what a killed creator leaked.
//! What each type guarantees under concurrent use is written down in `shm/README.md`.

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
