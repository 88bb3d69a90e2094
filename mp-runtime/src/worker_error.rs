//! [`WorkerError`]: the `Err` a worker returned, as it reaches the parent.
//!
//! A worker declared `-> Result<T, E>` that returns `Err(e)` fails its process or task. The
//! parent always gets `e`'s `Display` text (the `message` of [`Error::TaskFailed`](crate::Error::TaskFailed) and
//! [`Error::ProcessFailed`](crate::Error::ProcessFailed)). When `E` implements `serde::Serialize`, the child also sends `e`
//! itself, encoded, and the parent decodes it on demand with [`Error::downcast`](crate::Error::downcast). Which of the
//! two a worker does is chosen at compile time by `#[mp::worker]` (see
//! `__private::error_codec`), so an error type that is only `Display` needs nothing more.

use std::fmt;

/// The `Err` value a worker returned: its type's name and, when the type implements
/// `serde::Serialize`, its encoding. Found in [`Error::TaskFailed`](crate::Error::TaskFailed) and
/// [`Error::ProcessFailed`](crate::Error::ProcessFailed); get the value back with [`Error::downcast`](crate::Error::downcast) (or
/// [`WorkerError::decode`]).
///
/// ```no_run
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// enum HashError { Missing(String), TooBig(u64) }
///
/// impl std::fmt::Display for HashError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{self:?}")
///     }
/// }
///
/// #[mp::worker]
/// fn hash(path: String) -> Result<u64, HashError> {
///     Err(HashError::Missing(path))
/// }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let pool = mp::Pool::new(2)?;
///     for r in pool.imap_unordered(hash, vec!["a".to_string(), "b".to_string()])? {
///         if let Err(e) = r {
///             // Which input failed, and the typed error it failed with.
///             let item = e.item_index();
///             match e.downcast::<HashError>()? {
///                 HashError::Missing(p) => println!("item {item:?}: {p} is missing"),
///                 HashError::TooBig(n) => println!("item {item:?}: {n} bytes is too big"),
///             }
///         }
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerError(Box<Inner>);

#[derive(Clone, PartialEq, Eq)]
struct Inner {
    type_name: String,
    value: Option<Vec<u8>>,
}

impl WorkerError {
    pub(crate) fn new(type_name: String, value: Option<Vec<u8>>) -> Self {
        WorkerError(Box::new(Inner { type_name, value }))
    }

    /// The name of the error's type, as `std::any::type_name` gives it in the worker.
    pub fn type_name(&self) -> &str {
        &self.0.type_name
    }

    /// Whether the value itself came along (its type implements `serde::Serialize`), so that
    /// [`decode`](WorkerError::decode) can give it back.
    pub fn has_value(&self) -> bool {
        self.0.value.is_some()
    }

    /// The encoded value, if it came along.
    pub(crate) fn value_bytes(&self) -> Option<&[u8]> {
        self.0.value.as_deref()
    }
}

impl fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerError")
            .field("type_name", &self.0.type_name)
            .field("value_len", &self.0.value.as_ref().map(Vec::len))
            .finish()
    }
}
