//! The `Fork` start method: fork(2) of the calling process, from the launcher thread.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::ForkResult;

use super::child::Waiter;
use super::launcher;
use super::worker_child;
use crate::error::{Error, Result};
use crate::sys::pidfd::PidFd;

static WARNED: AtomicBool = AtomicBool::new(false);

/// Forks a child that runs the bootstrap protocol on `child_end`. `parent_end` is the parent's
/// side of the same socket, closed in the child.
pub(crate) fn start(child_end: OwnedFd, parent_end: RawFd) -> Result<(i32, Waiter)> {
    let parent_pid = std::process::id() as i32;
    launcher::run(move || {
        warn_if_threaded();
        // Hold stdout and stderr across the fork (the pthread_atfork pattern): no other thread
        // can be inside a print at that moment, so the child does not inherit a lock held by a
        // thread that does not exist there. Both processes release their copy afterwards.
        let stdout = std::io::stdout().lock();
        let stderr = std::io::stderr().lock();
        // SAFETY: the child only calls async-signal-safe functions until it has reset the
        // runtime's global state (`after_fork_in_child`), then runs the worker like Python's
        // fork start method does. Memory allocation is safe after fork with glibc, whose malloc
        // is fork-aware. Locks held by other threads at fork time are never touched: every
        // global of `mp` is replaced by `after_fork_in_child`.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop((stdout, stderr));
                after_fork_in_child();
                worker_child::mark_forked_from_user();
                let _ = nix::unistd::close(parent_end);
                crate::sys::die_with_parent(parent_pid);
                stdin_from_devnull();
                worker_child::run_child(child_end)
            }
            Ok(ForkResult::Parent { child }) => {
                drop((stdout, stderr));
                drop(child_end);
                let pid = child.as_raw();
                let pidfd = PidFd::open(pid).map_err(|e| Error::io("pidfd_open", e))?;
                Ok((pid, Waiter::Direct(pidfd)))
            }
            Err(e) => {
                drop((stdout, stderr));
                Err(Error::io("fork", e))
            }
        }
    })?
}

/// Resets every process-global of `mp` in a freshly forked child.
pub(crate) fn after_fork_in_child() {
    launcher::reset_after_fork();
    super::children::reset_after_fork();
    super::forkserver::reset_after_fork();
}

/// Python closes a child's stdin; a forked child reads /dev/null instead of the parent's input.
fn stdin_from_devnull() {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }
}

/// Forking a process whose other threads may hold locks can deadlock the child; say so once.
fn warn_if_threaded() {
    // Runs on the launcher thread (then the caller is parked until we reply) or inline on the
    // main thread (then the launcher, if any, is idle). Neither holds a lock; count the others.
    let ours = if launcher::on_launcher_thread() {
        2
    } else {
        1 + usize::from(launcher::exists())
    };
    let others = crate::sys::thread_count().saturating_sub(ours);
    if others > 0 && !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "mp: warning: starting a process with StartMethod::Fork while this process runs {} \
             other thread(s); a lock held by one of them at fork time stays locked in the child. \
             Prefer StartMethod::ForkServer (the default) or StartMethod::Spawn.",
            others
        );
    }
}
