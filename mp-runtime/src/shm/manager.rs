//! `SharedMemoryManager`: creates named segments and unlinks them all when it ends.

use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ShareableList, SharedMemory};
use crate::error::Result;

/// Creates [`SharedMemory`] segments and [`ShareableList`]s and unlinks every one of them when
/// it is shut down or dropped (Python's `SharedMemoryManager`, without a server process: the
/// segments are unlinked by the manager's owner, and by the resource tracker if that process is
/// killed).
///
/// The handles it returns do not unlink on drop; the manager does.
///
/// ```
/// use mp::shared_memory::{SharedMemory, SharedMemoryManager};
/// let name = {
///     let manager = SharedMemoryManager::new();
///     let shm = manager.shared_memory(64)?;
///     let list = manager.shareable_list([1u32, 2, 3])?;
///     assert_eq!(list.get(2)?, 3);
///     assert!(SharedMemory::open(shm.name()).is_ok());
///     shm.name().to_owned()
/// }; // the manager ends: every segment is unlinked
/// assert!(SharedMemory::open(&name).is_err());
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct SharedMemoryManager {
    names: Mutex<Vec<String>>,
}

impl SharedMemoryManager {
    /// A manager with no segments.
    pub fn new() -> SharedMemoryManager {
        SharedMemoryManager::default()
    }

    fn adopt(&self, shm: &SharedMemory) {
        shm.disown();
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shm.name().to_owned());
    }

    /// A new segment of `size` bytes, unlinked when the manager ends.
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        let shm = SharedMemory::create(size)?;
        self.adopt(&shm);
        Ok(shm)
    }

    /// A new list of `items`, unlinked when the manager ends.
    pub fn shareable_list<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ShareableList<T>> {
        let list = ShareableList::create(items)?;
        self.adopt(list.shm());
        Ok(list)
    }

    /// The names of the segments it created and has not unlinked yet.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Unlinks every segment it created. Handles stay mapped; the names are gone. Idempotent.
    pub fn shutdown(&self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|p| p.into_inner()));
        for name in names {
            let _ = nix::sys::mman::shm_unlink(format!("/{name}").as_str());
            super::tracker::unregister(&name);
        }
    }
}

impl Drop for SharedMemoryManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}
