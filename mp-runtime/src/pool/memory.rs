//! Memory limits of pool workers: a soft one checked after each task (the worker retires when
//! its resident memory is above it, as Celery's `worker_max_memory_per_child`), and a hard one
//! that the kernel enforces (`RLIMIT_DATA`).
//!
//! Why `RLIMIT_DATA`: it bounds the heap and private writable mappings, which is what a task
//! allocates, and not shared mappings, so the 256 MiB virtual ring of every `mp::Queue` and a
//! worker's `SharedMemory` do not count against it (`RLIMIT_AS` would count them, and refuse a
//! queue to a worker limited to less). It needs no privilege and works in any container, unlike
//! a cgroup v2 child group, which needs a delegated, writable cgroup tree; the cost is that an
//! allocation past the limit aborts the worker (Rust aborts on a failed allocation) instead of
//! being a `Result`, which the pool turns into [`Error::MemoryLimitExceeded`] for that item.
//! Stack growth and file-backed mappings are not bounded by it.

use crate::error::{Error, Result};
use crate::start_method::StartMethod;

/// The smallest limit a worker can work under: what a freshly started worker process already
/// uses (its runtime, thread stacks and the program's data), with room for the task loop.
const IDLE_WORKER: u64 = 32 << 20;

/// A pool's memory limits per worker, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MemoryLimits {
    /// Retire the worker after a task if its RSS is above this.
    pub(crate) soft: Option<u64>,
    /// `RLIMIT_DATA` of the worker.
    pub(crate) hard: Option<u64>,
}

impl MemoryLimits {
    /// [`Error::InvalidArgument`] for a limit below what an idle worker uses: a forked worker
    /// starts with this process's memory, others with a fresh program's.
    pub(crate) fn validate(&self, method: StartMethod) -> Result<()> {
        let own = |key: &str| match method {
            StartMethod::Fork => status_bytes(key).unwrap_or(0),
            _ => 0,
        };
        let check = |limit: Option<u64>, name: &str, used: u64| -> Result<()> {
            let Some(limit) = limit else { return Ok(()) };
            let need = IDLE_WORKER.max(used.saturating_add(IDLE_WORKER / 2));
            if limit < need {
                return Err(Error::InvalidArgument {
                    message: format!(
                        "{name} of {limit} bytes is below what an idle worker process needs \
                         (about {need} bytes{}); raise it",
                        if used > 0 {
                            ", as a forked worker starts with this process's memory"
                        } else {
                            ""
                        }
                    ),
                });
            }
            Ok(())
        };
        check(self.soft, "max_memory_per_child", own("VmRSS"))?;
        check(self.hard, "memory_limit_per_child", own("VmData"))
    }

    /// The wire form for the worker: 0 for none.
    pub(crate) fn to_wire(self) -> (u64, u64) {
        (self.soft.unwrap_or(0), self.hard.unwrap_or(0))
    }

    /// The limits of a [`to_wire`](MemoryLimits::to_wire) form.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn from_wire((soft, hard): (u64, u64)) -> MemoryLimits {
        MemoryLimits {
            soft: (soft > 0).then_some(soft),
            hard: (hard > 0).then_some(hard),
        }
    }
}

/// The line `key` of `/proc/self/status` (`VmRSS`, `VmData`: kB), in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's resident memory in bytes (0 if it cannot be read).
pub(crate) fn resident_bytes() -> u64 {
    status_bytes("VmRSS").unwrap_or(0)
}

/// Whether this process's resident memory is above `max` bytes, counting only memory in use:
/// freed memory the allocator keeps for reuse (`sys::malloc`) is given back before the verdict.
pub(crate) fn above(max: u64) -> bool {
    if resident_bytes() <= max {
        return false;
    }
    crate::sys::malloc::give_back_freed_memory();
    resident_bytes() > max
}

/// Sets this process's `RLIMIT_DATA` to `bytes` (soft and hard: a task cannot raise it).
pub(crate) fn limit_data(bytes: u64) -> nix::Result<()> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_DATA, bytes, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_an_idle_worker_is_refused_at_build() {
        let tiny = MemoryLimits {
            soft: None,
            hard: Some(1 << 20),
        };
        let e = tiny.validate(StartMethod::Spawn).unwrap_err();
        assert!(e.to_string().contains("memory_limit_per_child"), "{e}");
        let forked = MemoryLimits {
            soft: Some(resident_bytes()),
            hard: None,
        };
        let e = forked.validate(StartMethod::Fork).unwrap_err();
        assert!(e.to_string().contains("forked worker"), "{e}");
        let fine = MemoryLimits {
            soft: Some(8 << 30),
            hard: Some(8 << 30),
        };
        fine.validate(StartMethod::Fork).unwrap();
    }

    #[test]
    fn resident_memory_is_read() {
        assert!(resident_bytes() > 0);
    }
}
