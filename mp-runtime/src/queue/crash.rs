//! Crash points: the places between two stores to shared state (memory or sockets) where a
//! process killed with SIGKILL leaves the queue for others to carry on with.
//!
//! Each queue transition calls [`point`] after every store that another process can observe.
//! In normal builds it compiles to nothing. In the runtime's unit tests, [`killed_at`] runs an
//! operation in a forked child that SIGKILLs itself at its `k`-th crash point, so that a test
//! can stop a transition after each store in turn and check what the survivors find.

#[cfg(test)]
use std::sync::atomic::{AtomicU32, Ordering};

/// Crash points left before the forked child of [`killed_at`] kills itself (0: never).
#[cfg(test)]
static COUNTDOWN: AtomicU32 = AtomicU32::new(0);

/// A point where the calling process may die in a test.
#[inline(always)]
pub(crate) fn point() {
    #[cfg(test)]
    {
        let left = COUNTDOWN.load(Ordering::Relaxed);
        if left == 1 {
            // SAFETY: raise has no preconditions; SIGKILL ends the process here.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        if left > 1 {
            COUNTDOWN.store(left - 1, Ordering::Relaxed);
        }
    }
}

/// How an operation run by [`killed_at`] ended.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Killed at the crash point asked for.
    Killed,
    /// Finished before reaching it.
    Finished,
}

/// Runs `op` in a forked child that is killed at its `k`-th crash point (`k` ≥ 1).
#[cfg(test)]
pub(crate) fn killed_at(k: u32, op: impl FnOnce()) -> Ended {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};
    assert!(k >= 1);
    // SAFETY: the child only runs `op` (queue operations: atomics, copies, socket calls and
    // allocation, which glibc keeps usable after fork) and then `_exit`s.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            COUNTDOWN.store(k, Ordering::Relaxed);
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).is_ok();
            // SAFETY: `_exit` is always safe; it never returns.
            unsafe { libc::_exit(if ok { 0 } else { 101 }) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _) => Ended::Killed,
            WaitStatus::Exited(_, 0) => Ended::Finished,
            other => panic!("the operation failed in the child: {other:?}"),
        },
    }
}
