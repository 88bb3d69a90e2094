//! Which object keeps the values decoded on this thread: the edge the server's table needs to
//! find objects that only refer to each other (see `server/table.rs`, "Cycles").
//!
//! A thread-local beside nothing else, so that the objects' dispatch (which sets it) and the
//! values (which read it) need not know each other.

use std::cell::Cell;

use super::protocol::ObjId;

thread_local! {
    /// The object whose method runs on this thread and keeps the values it decodes (a built-in
    /// container), so that the references they hold are known to be its own; 0 otherwise.
    static HOLDER: Cell<ObjId> = const { Cell::new(0) };
}

/// Runs `f` (a method of `obj` that keeps the values it decodes, and hands none of them to
/// another object) with the references those values take counted as `obj`'s.
pub(crate) fn holding_for<R>(obj: ObjId, f: impl FnOnce() -> R) -> R {
    let saved = HOLDER.with(|h| h.replace(obj));
    let result = f();
    HOLDER.with(|h| h.set(saved));
    result
}

/// The object keeping what is decoded now on this thread (0: not known).
pub(crate) fn current() -> ObjId {
    HOLDER.with(Cell::get)
}
