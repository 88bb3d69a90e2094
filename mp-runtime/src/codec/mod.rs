//! The wire codec: serde + postcard for values, and a side table for OS handles.
//!
//! A value is encoded to bytes with postcard. Handles inside it (connections, queues, locks, …)
//! do not serialize their descriptor number, which means nothing in another process; they call
//! [`serialize_fd`], which appends the descriptor to the message's fd table and writes its index.
//! The transport sends the table as SCM_RIGHTS next to the bytes. On the receiving side
//! [`decode`] installs the received descriptors as the table, and [`deserialize_fd`] takes the
//! one at the written index, checking bounds and that no index is taken twice.

mod depth;
mod fd_table;
mod remote_calls;
mod typed_error;

pub(crate) use depth::inherit_max_decode_depth;
pub use depth::{
    DEFAULT_MAX_DECODE_DEPTH, MAX_DECODE_DEPTH_CEILING, max_decode_depth, set_max_decode_depth,
};
pub(crate) use fd_table::{de_error, ser_error};
pub use fd_table::{deserialize_fd, serialize_fd};
pub(crate) use remote_calls::{Attempt, before_remote_call, without_remote_calls};

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
    fd_table::with_incoming(fds, || decode_slice(bytes))
}

/// Decodes a `Vec<T>` element by element, for a pool chunk whose whole decode failed: the
/// elements before the first one that does not decode, that element's error, and the number of
/// elements the bytes announce. An element's encoding does not say where it ends, so the ones
/// after a bad one cannot be read.
pub(crate) fn decode_seq_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> (Vec<T>, Option<Error>, usize) {
    let _ = fd_table::take_error_text();
    fd_table::with_incoming(fds, || {
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let budget = depth::Budget::new();
        let n = match <u64 as serde::Deserialize>::deserialize(&mut de) {
            Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
            Err(e) => {
                return (
                    Vec::new(),
                    Some(mismatch::<Vec<T>>(bytes, bytes.len(), e)),
                    0,
                );
            }
        };
        let mut out = Vec::new();
        for _ in 0..n {
            match T::deserialize(depth::Limited::new(&mut de, &budget)) {
                Ok(v) => out.push(v),
                Err(e) => {
                    let rest = de.finalize().map(<[u8]>::len).unwrap_or(0);
                    let err = match budget.exceeded() {
                        Some(limit) => too_deep::<T>(bytes, rest, limit),
                        None => mismatch::<T>(bytes, rest, e),
                    };
                    // The announced count comes from the peer: the items after this one
                    // number at most the bytes left (a chunk's items each take one or more),
                    // so a forged count cannot make the caller build an outcome per item of
                    // an impossible number.
                    let n = n.min(out.len() + 1 + rest);
                    return (out, Some(err), n);
                }
            }
        }
        (out, None, n)
    })
}

/// Decoded elements, and where each one's bytes start and end.
pub(crate) type WithSpans<T> = (Vec<T>, Vec<(u64, u64)>);

/// Decodes a `Vec<T>` element by element, with where each element's bytes start and end (for a
/// pool chunk under a time limit, whose items the pool may have to send again without one).
pub(crate) fn decode_seq_bounds<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<WithSpans<T>> {
    let _ = fd_table::take_error_text();
    fd_table::with_incoming(fds, || {
        let budget = depth::Budget::new();
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let n = <u64 as serde::Deserialize>::deserialize(&mut de)
            .map_err(|e| mismatch::<Vec<T>>(bytes, bytes.len(), e))?;
        let mut rest = de
            .finalize()
            .map_err(|e| mismatch::<Vec<T>>(bytes, bytes.len(), e))?;
        let mut out = Vec::new();
        let mut spans = Vec::new();
        for _ in 0..n {
            let start = (bytes.len() - rest.len()) as u64;
            let mut de = postcard::Deserializer::from_bytes(rest);
            let v = T::deserialize(depth::Limited::new(&mut de, &budget));
            let left = de.finalize().map(<[u8]>::len).unwrap_or(0);
            match v {
                Ok(v) => out.push(v),
                Err(e) => return Err(mismatch::<T>(bytes, left, e)),
            }
            rest = &rest[rest.len() - left..];
            spans.push((start, (bytes.len() - rest.len()) as u64));
        }
        if !rest.is_empty() {
            return Err(leftover::<Vec<T>>(bytes, rest.len()));
        }
        Ok((out, spans))
    })
}

/// Decodes a `T` that borrows from `bytes` and holds no handles (a protocol's envelope, whose
/// payload is decoded later). Trailing bytes are an error.
pub(crate) fn decode_borrowed<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    let _ = fd_table::take_error_text();
    decode_slice(bytes)
}

/// Decodes all of `bytes` as a `T`, nested no deeper than [`max_decode_depth`]; on failure, an
/// error that says what was expected and what arrived, as far as the encoding tells (it does
/// not name types, so the sender's type cannot be read back: only where the bytes stopped
/// fitting `T`).
pub(crate) fn decode_slice<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    decode_slice_within(bytes, depth::Budget::new())
}

/// [`decode_slice`] within the given nesting budget.
fn decode_slice_within<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    budget: depth::Budget,
) -> Result<T> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let outcome = T::deserialize(depth::Limited::new(&mut de, &budget));
    let rest = de.finalize().map(<[u8]>::len).unwrap_or(0);
    match outcome {
        Ok(value) if rest == 0 => Ok(value),
        Ok(_) => Err(leftover::<T>(bytes, rest)),
        Err(e) => Err(match budget.exceeded() {
            Some(limit) => too_deep::<T>(bytes, rest, limit),
            None => mismatch::<T>(bytes, rest, e),
        }),
    }
}

/// The bytes nest deeper than this process accepts.
#[cold]
fn too_deep<T>(bytes: &[u8], rest: usize, limit: u32) -> Error {
    let _ = fd_table::take_error_text();
    let at = bytes.len() - rest.min(bytes.len());
    Error::codec(format!(
        "cannot decode {} as the expected `{}`: the value nests deeper than the limit of {limit} \
         levels at byte {at} (raise it with `mp::set_max_decode_depth` if such deep data is \
         expected)",
        describe_bytes(bytes),
        std::any::type_name::<T>(),
    ))
}

/// A complete `T` was read and bytes are left over.
#[cold]
fn leftover<T>(bytes: &[u8], rest: usize) -> Error {
    let expected = std::any::type_name::<T>();
    Error::codec(format!(
        "cannot decode {} as the expected `{expected}`: {rest} bytes are left over after a \
         complete `{expected}` (was a larger value, or a value of another type, sent? both ends \
         must use the same type)",
        describe_bytes(bytes)
    ))
}

/// The bytes stopped fitting a `T` with `rest` of them unread.
#[cold]
fn mismatch<T>(bytes: &[u8], rest: usize, e: postcard::Error) -> Error {
    let at = bytes.len() - rest.min(bytes.len());
    if let Some(reason) = recorded_text(&e) {
        // A `Deserialize` impl of this crate refused a value it read (a proxy whose object is
        // gone, a handle out of range): the bytes fit the type, so the types are not in doubt.
        return Error::codec(format!(
            "cannot decode {} as the expected `{}`: {reason}",
            describe_bytes(bytes),
            std::any::type_name::<T>(),
        ));
    }
    Error::codec(format!(
        "cannot decode {} as the expected `{}`: {} at byte {at} (was a value of another type \
         sent? both ends must use the same type)",
        describe_bytes(bytes),
        std::any::type_name::<T>(),
        detail(e)
    ))
}

/// What arrived: the length and the first bytes, in hex.
fn describe_bytes(bytes: &[u8]) -> String {
    const SHOWN: usize = 12;
    let mut hex: Vec<String> = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        hex.push("…".into());
    }
    match bytes.len() {
        0 => "an empty message".into(),
        n => format!("a message of {n} bytes ({})", hex.join(" ")),
    }
}

/// What went wrong, in words: postcard's error, with the text of a custom serde error restored
/// where this crate recorded one.
fn detail(e: postcard::Error) -> String {
    use postcard::Error as P;
    if let Some(text) = recorded_text(&e) {
        return text;
    }
    match e {
        P::DeserializeUnexpectedEnd => "the message ended before the value did".into(),
        P::DeserializeBadVarint => "an integer is malformed".into(),
        P::DeserializeBadBool => "a byte that should be a bool (0 or 1) is not".into(),
        P::DeserializeBadChar => "a char is not a valid Unicode scalar".into(),
        P::DeserializeBadUtf8 => "a string is not UTF-8".into(),
        P::DeserializeBadOption => "a byte that should be an Option's tag (0 or 1) is not".into(),
        P::DeserializeBadEnum => "an enum's variant number is out of range".into(),
        P::SerdeSerCustom => "the type's `Serialize` implementation refused the value (a \
                              `PathBuf` or `OsString` that is not UTF-8 does: encode paths \
                              with `mp::PathBytes` or `#[serde(with = \"mp::path_bytes\")]`)"
            .into(),
        P::SerdeDeCustom => "the bytes do not fit the type (e.g. an enum variant number it \
                             does not have, or a value its Deserialize impl refuses)"
            .into(),
        other => other.to_string(),
    }
}

/// The text this crate recorded for a custom serde error, if `e` is one.
fn recorded_text(e: &postcard::Error) -> Option<String> {
    use postcard::Error as P;
    if matches!(e, P::SerdeSerCustom | P::SerdeDeCustom) {
        fd_table::take_error_text()
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
