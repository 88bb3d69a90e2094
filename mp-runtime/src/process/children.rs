//! The children of this process that have not been joined: Python's `active_children()`, and the
//! exit handler that joins non-daemon children and terminates daemon ones.

use std::sync::Arc;
use std::time::Duration;

use super::child::ChildHandle;
use crate::global::Global;

static CHILDREN: Global<Vec<Arc<ChildHandle>>> = Global::new(Vec::new);

pub(crate) fn register(child: Arc<ChildHandle>) {
    CHILDREN.lock().push(child);
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
