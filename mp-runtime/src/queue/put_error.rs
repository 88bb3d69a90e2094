//! The error of [`Queue::try_put`](super::Queue::try_put) and
//! [`Queue::put_timeout`](super::Queue::put_timeout), which gives the item back.

use std::fmt;

use crate::error::Error;

/// Why [`try_put`](super::Queue::try_put) or [`put_timeout`](super::Queue::put_timeout) did not
/// put an item. The item comes back, so a retry loop needs no `Clone` (as with
/// `std::sync::mpsc::TrySendError`). Converts into [`mp::Error`](Error) (the item is dropped),
/// so `?` works in functions returning `mp::Result`.
///
/// ```
/// let q = mp::Queue::bounded(1)?;
/// q.put(String::from("first"))?;
/// let mut item = String::from("second");
/// loop {
///     match q.try_put(item) {
///         Ok(()) => break,
///         Err(mp::TryPutError::Full(back)) => {
///             item = back; // make room and try again with the same item
///             q.get()?;
///         }
///         Err(e) => return Err(e.into()),
///     }
/// }
/// assert_eq!(q.get()?, "second");
/// # Ok::<(), mp::Error>(())
/// ```
pub enum TryPutError<T> {
    /// The queue stayed full: at once for `try_put`, until the timeout for `put_timeout`.
    /// Converts to [`Error::Full`].
    Full(T),
    /// Any other reason, which the [`Error`] gives: the queue was shut down
    /// ([`Error::ShutDown`]), closed in this process ([`Error::Closed`]), the item cannot be
    /// encoded ([`Error::Codec`]), …
    Failed(T, Error),
}

impl<T> TryPutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(item) | TryPutError::Failed(item, _) => item,
        }
    }

    /// Whether the queue was full (the item may fit later).
    pub fn is_full(&self) -> bool {
        matches!(self, TryPutError::Full(_))
    }

    /// The item and the error it converts to.
    pub fn into_parts(self) -> (T, Error) {
        match self {
            TryPutError::Full(item) => (item, Error::Full),
            TryPutError::Failed(item, e) => (item, e),
        }
    }
}

impl<T> From<TryPutError<T>> for Error {
    fn from(e: TryPutError<T>) -> Error {
        e.into_parts().1
    }
}

impl<T> fmt::Debug for TryPutError<T> {
    /// Does not show the item (so `T` needs no `Debug`), like `std`'s channel errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("Full(..)"),
            TryPutError::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => fmt::Display::fmt(&Error::Full, f),
            TryPutError::Failed(_, e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<T> std::error::Error for TryPutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryPutError::Full(_) => None,
            TryPutError::Failed(_, e) => std::error::Error::source(e),
        }
    }
}
