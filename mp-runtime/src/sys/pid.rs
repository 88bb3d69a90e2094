//! This process's id without a system call: glibc no longer caches `getpid`, and a queue that
//! counts what each consumer process holds asks for it on every `get` and `task_done`.
//!
//! The cache is cleared in the child of every `fork` (a `pthread_atfork` handler, which runs
//! for `fork(2)` through libc, nix's `fork` included), so a forked child never sees its
//! parent's id.

use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's id.
#[inline]
pub(crate) fn current() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, as a
        // handler run in a forked child must be; registering has no other precondition.
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    #[test]
    fn a_forked_child_sees_its_own_id() {
        assert_eq!(current(), std::process::id());
        // SAFETY: the child only reads its id, compares and `_exit`s.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let ok = current() == std::process::id();
                // SAFETY: `_exit` is always safe; it never returns.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            }
        }
        assert_eq!(current(), std::process::id());
    }
}
