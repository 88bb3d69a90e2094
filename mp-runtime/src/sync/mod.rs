//! Process-shared synchronization built on futexes in shared memory. The protocols are written
//! down in `sync/README.md`.

pub(crate) mod futex;
pub(crate) mod robust;
