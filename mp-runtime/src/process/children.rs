//! The children of this process that have not been joined: Python's `active_children()`, and the
//! exit handler that joins non-daemon children and terminates daemon ones.
//!
//! The list holds only children that may still be running, so that a program starting many
//! processes keeps a flat number of descriptors: a child leaves it when it is joined, when
//! `join_timeout` sees it exit, when its `Process` is dropped after it exited, and, for a child
//! dropped while running, at the next start after it exited (Python's `_cleanup`).
//!
//! The exit handler runs at the end of `#[mp::main]`, and also from `atexit` (installed at the
//! first start), so that a program without `#[mp::main]` still waits for its children instead
//! of having them killed when `main` returns.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Once};
use std::time::Duration;

use super::child::ChildHandle;
use crate::global::Global;
use crate::sys::poll::{Deadline, wait_readable};

static CHILDREN: Global<Vec<Arc<ChildHandle>>> = Global::new(Vec::new);

/// Adds a started child, first forgetting the ones known to have exited.
pub(crate) fn register(child: Arc<ChildHandle>) {
    install_exit_hook();
    let mut list = CHILDREN.lock();
    forget_exited(&mut list);
    list.push(child);
}

/// Removes the children whose exit is visible now: one `poll` over every sentinel, then a reap
/// of those that are ready.
fn forget_exited(list: &mut Vec<Arc<ChildHandle>>) {
    if list.is_empty() {
        return;
    }
    let fds: Vec<BorrowedFd<'_>> = list.iter().map(|c| c.sentinel()).collect();
    let Ok(ready) = wait_readable(&fds, Deadline::after(Some(Duration::ZERO))) else {
        return;
    };
    drop(fds);
    let mut i = 0;
    list.retain(|c| {
        let exited = ready[i] && c.exitcode_now().is_some();
        i += 1;
        !exited
    });
}

fn install_exit_hook() {
    static ONCE: Once = Once::new();
    extern "C" fn at_exit() {
        // Unwinding out of an `extern "C"` function aborts; a panic here only skips the joins.
        let _ = std::panic::catch_unwind(shutdown);
    }
    ONCE.call_once(|| {
        // SAFETY: `at_exit` is a plain function that lives as long as the program; atexit only
        // records its address.
        unsafe { libc::atexit(at_exit) };
    });
}

pub(crate) fn unregister(child: &Arc<ChildHandle>) {
    CHILDREN.lock().retain(|c| !Arc::ptr_eq(c, child));
}

/// Removes finished children (reaping them) and returns the live ones.
pub(crate) fn live() -> Vec<Arc<ChildHandle>> {
    let snapshot: Vec<Arc<ChildHandle>> = CHILDREN.lock().clone();
    let mut alive = Vec::new();
    for c in snapshot {
        if c.exitcode_now().is_none() {
            alive.push(c);
        }
    }
    CHILDREN
        .lock()
        .retain(|c| alive.iter().any(|a| Arc::ptr_eq(a, c)) || c.exitcode_now().is_none());
    alive
}

/// In a fork child: the parent's children are not ours.
pub(crate) fn reset_after_fork() {
    CHILDREN.reset();
}

/// At the end of `#[mp::main]` and of every child: terminate daemon children, then join the rest.
pub(crate) fn shutdown() {
    let all: Vec<Arc<ChildHandle>> = std::mem::take(&mut *CHILDREN.lock());
    for c in all.iter().filter(|c| c.daemon()) {
        let _ = c.signal(libc::SIGTERM);
    }
    for c in &all {
        if c.daemon() {
            // A daemon that ignores SIGTERM gets SIGKILL after a grace period.
            if c.wait_exit(Some(Duration::from_secs(5)))
                .ok()
                .flatten()
                .is_none()
            {
                let _ = c.signal(libc::SIGKILL);
                let _ = c.wait_exit(None);
            }
        } else {
            let _ = c.wait_exit(None);
        }
    }
}
