//! The wire codec: serde + postcard for values, and a side table for OS handles.
//!
//! A value is encoded to bytes with postcard. Handles inside it (connections, queues, locks, …)
//! do not serialize their descriptor number, which means nothing in another process; they call
//! [`serialize_fd`], which appends the descriptor to the message's fd table and writes its index.
//! The transport sends the table as SCM_RIGHTS next to the bytes. On the receiving side
//! [`decode`] installs the received descriptors as the table, and [`deserialize_fd`] takes the
//! one at the written index, checking bounds and that no index is taken twice.

mod fd_table;

pub(crate) use fd_table::{de_error, ser_error};
pub use fd_table::{deserialize_fd, serialize_fd};

use std::os::fd::{OwnedFd, RawFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// An encoded message: the bytes and the descriptors it refers to (borrowed from the value that
/// was encoded: they stay valid as long as that value is borrowed).
#[derive(Debug, Default)]
pub struct Encoded {
    /// postcard bytes.
    pub bytes: Vec<u8>,
    /// Descriptors referenced by index from `bytes`.
    pub fds: Vec<RawFd>,
}

/// Encodes `value`, appending to `buf` (which may already hold a header).
/// Returns the descriptors referenced by the bytes.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<Vec<RawFd>> {
    let _ = fd_table::take_error_text();
    fd_table::with_outgoing(|| {
        let taken = std::mem::take(buf);
        match postcard::to_extend(value, taken) {
            Ok(out) => {
                *buf = out;
                Ok(())
            }
            Err(e) => Err(Error::codec(format!(
                "cannot encode `{}`: {}",
                std::any::type_name::<T>(),
                detail(e)
            ))),
        }
    })
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded> {
    let mut bytes = Vec::new();
    let fds = encode_into(value, &mut bytes)?;
    Ok(Encoded { bytes, fds })
}

/// Encodes `value` and duplicates the descriptors it refers to, so that the message can outlive
/// the value (used when encoding happens before sending, as for a process's arguments).
pub fn encode_owned<T: Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let Encoded { bytes, fds } = encode(value)?;
    Ok((bytes, duplicate(fds)?))
}

/// [`encode_owned`] appending to `buf`.
pub(crate) fn encode_owned_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<Vec<OwnedFd>> {
    duplicate(encode_into(value, buf)?)
}

/// Owned copies of the descriptors an encoding recorded (still open: their value is borrowed).
fn duplicate(fds: Vec<RawFd>) -> Result<Vec<OwnedFd>> {
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    fds.into_iter()
        .map(|raw| {
            // SAFETY: `raw` was pushed by `serialize_fd` from a live `BorrowedFd` of a handle
            // inside the value being encoded, which the caller still borrows, so it is open.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            borrowed
                .try_clone_to_owned()
                .map_err(|e| Error::io("dup", e))
        })
        .collect()
}

/// Decodes a `T` from `bytes`, with `fds` as the message's descriptor table. Descriptors the
/// value does not take are closed. Trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    let _ = fd_table::take_error_text();
    fd_table::with_incoming(fds, || match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::codec(format!(
            "{} trailing bytes after a `{}`",
            rest.len(),
            std::any::type_name::<T>()
        ))),
        Err(e) => Err(Error::codec(format!(
            "cannot decode `{}`: {}",
            std::any::type_name::<T>(),
            detail(e)
        ))),
    })
}

/// Decodes a `T` that borrows from `bytes` and holds no handles (a protocol's envelope, whose
/// payload is decoded later). Trailing bytes are an error.
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    let _ = fd_table::take_error_text();
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::codec(format!(
            "{} trailing bytes after a `{}`",
            rest.len(),
            std::any::type_name::<T>()
        ))),
        Err(e) => Err(Error::codec(format!(
            "cannot decode `{}`: {}",
            std::any::type_name::<T>(),
            detail(e)
        ))),
    }
}

/// postcard's error, with the text of a custom serde error restored.
fn detail(e: postcard::Error) -> String {
    let custom = matches!(
        e,
        postcard::Error::SerdeSerCustom | postcard::Error::SerdeDeCustom
    );
    match fd_table::take_error_text() {
        Some(text) if custom => text,
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
