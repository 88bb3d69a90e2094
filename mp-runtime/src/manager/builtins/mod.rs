//! The objects every manager can hold (Python's `SyncManager` types): containers, a namespace,
//! queues, synchronization primitives, values and arrays.
//!
//! Each is generic in its proxy (`DictProxy<K, V>`) and type-erased in the server, which keeps
//! encoded keys and values (`value.rs`); so one server binary holds dicts of any types without a
//! registration per type. Each file holds the server object (a hand-written [`Managed`] impl),
//! its proxy, and the `Manager` method that makes one.

mod dict;

pub use self::dict::DictProxy;

use std::time::Duration;

use super::managed::TypeEntry;
use super::protocol::RemoteError;
use super::value::Stored;
use crate::worker::{Input, Outcome};

/// Every built-in type, for the server (see `managed::find_type`).
pub(crate) static TYPES: &[TypeEntry] = &[TypeEntry::of::<dict::DictObj>()];

/// The fingerprint of every built-in: the version of their method tables.
pub(crate) const BUILTIN_FINGERPRINT: u64 = super::managed::fingerprint(&["mp builtins", "1"]);

/// Runs the registered worker `name` in the server on `value` followed by `extra` (the encoded
/// rest of its argument tuple), for `modify`: the new value, or why not.
pub(crate) fn apply(name: &str, value: &Stored, extra: &[u8]) -> Result<Stored, RemoteError> {
    if !value.is_plain() {
        return Err(RemoteError::State(
            "modify cannot run on a value that holds handles or proxies; change it through them"
                .into(),
        ));
    }
    let entry = crate::registry::find(name).map_err(|e| RemoteError::State(e.to_string()))?;
    // A tuple's encoding is its fields' encodings one after the other.
    let mut args = value.bytes().to_vec();
    args.extend_from_slice(extra);
    let input = Input {
        bytes: &args,
        fds: Vec::new(),
        batch: false,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| entry(input))) {
        Ok(Outcome::Returned { bytes, fds }) if fds.is_empty() => Ok(Stored::from_bytes(bytes)),
        Ok(Outcome::Returned { .. }) => Err(RemoteError::State(format!(
            "`{name}` returned handles, which a managed value cannot keep this way"
        ))),
        Ok(Outcome::Failed { message }) => Err(RemoteError::Failed(message)),
        Err(_) => {
            let (message, location) = super::panic::take();
            Err(RemoteError::Panic {
                method: name.to_owned(),
                message,
                location,
            })
        }
    }
}

/// A timeout as it travels to the server: `None` waits forever.
pub(crate) type Wait = Option<Duration>;

/// The deadline of a blocking call that arrived with `wait`.
pub(crate) fn deadline(wait: Wait) -> Option<std::time::Instant> {
    wait.and_then(|w| std::time::Instant::now().checked_add(w))
}

/// Waits on `cv` until `done` holds or the deadline passes; false on timeout. Wakes up at
/// least every second to notice a shutdown.
pub(crate) fn wait_until<'a, T>(
    cv: &std::sync::Condvar,
    mut guard: std::sync::MutexGuard<'a, T>,
    deadline: Option<std::time::Instant>,
    mut done: impl FnMut(&mut T) -> bool,
) -> (std::sync::MutexGuard<'a, T>, Result<(), RemoteError>) {
    loop {
        if done(&mut guard) {
            return (guard, Ok(()));
        }
        if super::host::stopping() {
            return (guard, Err(RemoteError::ShuttingDown));
        }
        let slice = Duration::from_secs(1);
        let wait = match deadline {
            None => slice,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return (guard, Err(RemoteError::Timeout));
                }
                left.min(slice)
            }
        };
        guard = cv
            .wait_timeout(guard, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Implements [`Managed`]'s constants for a built-in.
macro_rules! builtin {
    ($ty:ty, $name:literal, [$($method:literal),* $(,)?]) => {
        const TYPE_NAME: &'static str = $name;
        const FINGERPRINT: u64 = $crate::manager::builtins::BUILTIN_FINGERPRINT;
        const METHODS: &'static [&'static str] = &[$($method),*];
    };
}
pub(crate) use builtin;

/// The label of a built-in proxy with element types.
pub(crate) fn label(kind: &str, params: &[&str]) -> String {
    format!("mp::{kind}<{}>", params.join(", "))
}
