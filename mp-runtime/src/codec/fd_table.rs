//! The per-thread descriptor tables used while one message is encoded or decoded.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

thread_local! {
    /// postcard drops the text of custom serde errors; the codec keeps it here to report it.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    static OUTGOING: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Records the text of a custom serde error for [`take_error_text`].
pub(crate) fn note_error(text: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(text.to_owned()));
}

/// The text of the last custom serde error on this thread, if any.
pub(super) fn take_error_text() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

/// A serializer error that keeps its text through postcard.
pub(crate) fn ser_error<E: serde::ser::Error>(text: &str) -> E {
    note_error(text);
    E::custom(text)
}

/// A deserializer error that keeps its text through postcard.
pub(crate) fn de_error<E: serde::de::Error>(text: &str) -> E {
    note_error(text);
    E::custom(text)
}

/// Runs `f` with a fresh outgoing table and returns what it collected. Nested calls keep their
/// own tables.
pub(super) fn with_outgoing<E>(f: impl FnOnce() -> Result<(), E>) -> Result<Vec<RawFd>, E> {
    let saved = OUTGOING.with(|t| t.borrow_mut().replace(Vec::new()));
    let result = f();
    let collected = OUTGOING.with(|t| std::mem::replace(&mut *t.borrow_mut(), saved));
    result.map(|()| collected.unwrap_or_default())
}

/// Runs `f` with `fds` as the incoming table; untaken descriptors are closed afterwards.
pub(super) fn with_incoming<T>(fds: Vec<OwnedFd>, f: impl FnOnce() -> T) -> T {
    let table = fds.into_iter().map(Some).collect();
    let saved = INCOMING.with(|t| t.borrow_mut().replace(table));
    let result = f();
    INCOMING.with(|t| *t.borrow_mut() = saved);
    result
}

/// Serializes a descriptor as an index into the message's fd table. Fails outside an `mp`
/// encode (for example with serde_json), because a descriptor number means nothing elsewhere.
pub fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, serializer: S) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|t| {
        let mut table = t.borrow_mut();
        let table = table.as_mut()?;
        if table.len() >= crate::transport::frame::MAX_FDS {
            return Some(Err(()));
        }
        table.push(fd.as_raw_fd());
        Some(Ok(table.len() - 1))
    });
    match index {
        None => Err(ser_error(
            "an mp handle can only be serialized by mp itself (send it through a Connection, \
             Queue or as a worker argument)",
        )),
        Some(Err(())) => Err(ser_error(&format!(
            "a message can carry at most {} handles",
            crate::transport::frame::MAX_FDS
        ))),
        Some(Ok(i)) => (i as u32).serialize(serializer),
    }
}

/// Deserializes a descriptor written by [`serialize_fd`], taking it from the message's fd table.
/// An index out of range, or taken twice, is an error (never a panic).
pub fn deserialize_fd<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(deserializer)? as usize;
    INCOMING.with(|t| {
        let mut table = t.borrow_mut();
        let Some(table) = table.as_mut() else {
            return Err(de_error(
                "an mp handle can only be deserialized by mp itself",
            ));
        };
        let len = table.len();
        match table.get_mut(index) {
            None => Err(de_error(&format!(
                "handle index {index} out of range: the message carries {len} descriptors"
            ))),
            Some(slot) => slot
                .take()
                .ok_or_else(|| de_error(&format!("handle index {index} used twice"))),
        }
    })
}
