//! The objects every manager can hold (Python's `SyncManager` types): containers, a namespace,
//! queues, synchronization primitives, values and arrays.
//!
//! Each is generic in its proxy (`DictProxy<K, V>`) and type-erased in the server, which keeps
//! encoded keys and values (`value.rs`); so one server binary holds dicts of any types without a
//! registration per type. Each file holds the server object (a hand-written [`Managed`] impl),
//! its proxy, and the `Manager` method that makes one.

mod dict;
mod list;
mod namespace;
mod queue;
mod set;
mod sync;
mod values;

pub use self::dict::DictProxy;
pub use self::list::{ListIter, ListProxy};
pub use self::namespace::NamespaceProxy;
pub use self::queue::{JoinableQueueProxy, QueueProxy};
pub use self::set::{SetOperand, SetProxy};
pub use self::sync::{
    BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, EventProxy, LockProxy, ProxyLockGuard,
    RLockProxy, SemaphoreProxy,
};
pub use self::values::{ArrayProxy, ValueProxy};

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::host::SessionWatch;
use super::managed::TypeEntry;
use super::protocol::RemoteError;
use super::proxy::ObjRef;
use super::value::{Encoded, Stored};
use crate::error::{Error, Result};
use crate::worker::{Input, Outcome};

/// Every built-in type, for the server (see `managed::find_type`).
pub(crate) static TYPES: &[TypeEntry] = &[
    TypeEntry::of::<dict::DictObj>(),
    TypeEntry::of::<list::ListObj>(),
    TypeEntry::of::<set::SetObj>(),
    TypeEntry::of::<namespace::NamespaceObj>(),
    TypeEntry::of::<values::ValueObj>(),
    TypeEntry::of::<sync::LockObj>(),
    TypeEntry::of::<sync::RLockObj>(),
    TypeEntry::of::<sync::SemaphoreObj>(),
    TypeEntry::of::<sync::ConditionObj>(),
    TypeEntry::of::<sync::EventObj>(),
    TypeEntry::of::<sync::BarrierObj>(),
    TypeEntry::of::<queue::QueueObj>(),
];

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
        Ok(
            Outcome::Failed { message }
            | Outcome::Codec { message }
            | Outcome::Raised { message, .. }
            | Outcome::Panicked { message, .. },
        ) => Err(RemoteError::Failed(message)),
        Ok(Outcome::Each(_)) => Err(RemoteError::Failed(format!(
            "`{name}` answered as a pool chunk"
        ))),
        Err(_) => {
            let (message, location) = super::panic::take();
            Err(RemoteError::Panic {
                method: crate::registry::display_name(name).to_owned(),
                message,
                location,
            })
        }
    }
}

/// An encoding as it travels: a key, a set element, a value compared by its bytes, the extra
/// argument of a `modify`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Key(#[serde(with = "serde_bytes")] pub(crate) Vec<u8>);

/// Encodes `v` as a [`Key`] (a plain value: no handles, no proxies).
pub(crate) fn key<T: Serialize + ?Sized>(v: &T) -> Result<Key> {
    Encoded::key(v).map(Key)
}

/// Decodes a [`Key`] the server sent back.
pub(crate) fn decode_key<T: DeserializeOwned>(k: Key) -> Result<T> {
    crate::codec::decode(&k.0, Vec::new())
}

/// Locks a built-in's state; a panic elsewhere cannot leave it half-changed (methods that
/// change it do not panic), so a poisoned lock is taken over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A timeout as it travels to the server: `None` waits forever.
pub(crate) type Wait = Option<Duration>;

/// The deadline of a blocking call that arrived with `wait`.
pub(crate) fn deadline(wait: Wait) -> Option<Instant> {
    wait.and_then(|w| Instant::now().checked_add(w))
}

/// Waits on `cv` until `done` holds, the deadline passes ([`RemoteError::Timeout`]), the server
/// stops ([`RemoteError::ShuttingDown`]) or the caller's session ends. `done` is where the
/// waiter takes what it waited for (an item, the lock), so a caller whose process died while it
/// waited takes nothing: it wakes the other waiters instead, in case it took their wake-up.
/// Wakes up at least every second to notice a shutdown or a dead caller.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    caller: SessionWatch,
    mut done: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, Result<(), RemoteError>) {
    let mut slept = false;
    loop {
        if slept && !caller.alive() {
            cv.notify_all();
            return (guard, Err(caller_gone()));
        }
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
                let left = d.saturating_duration_since(Instant::now());
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
        slept = true;
    }
}

/// Waits (as [`wait_until`]) until `free` holds, then takes with `take`: Ok(false) if the
/// timeout passed first. With `keep`, what is taken is kept for the caller (a lock's holder), so
/// the object first asks to be told when the caller's session ends; if it has ended already,
/// nothing is taken.
pub(crate) fn take_when<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    wait: Wait,
    caller: SessionWatch,
    keep: bool,
    mut free: impl FnMut(&T) -> bool,
    mut take: impl FnMut(&mut T),
) -> (MutexGuard<'a, T>, Result<bool, RemoteError>) {
    let mut gone = false;
    let (guard, r) = wait_until(cv, guard, deadline(wait), caller, |st| {
        if !free(st) {
            return false;
        }
        if keep && !caller.watch() {
            gone = true;
            return true;
        }
        take(st);
        true
    });
    let r = match r {
        Ok(()) if gone => {
            cv.notify_all();
            Err(caller_gone())
        }
        Ok(()) => Ok(true),
        Err(RemoteError::Timeout) => Ok(false),
        Err(e) => Err(e),
    };
    (guard, r)
}

/// The error of a call whose caller's session ended while it waited (nobody reads it).
pub(crate) fn caller_gone() -> RemoteError {
    RemoteError::State("the calling process left the manager while it waited".into())
}

/// What a built-in refuses, as the method's own error inside a successful reply (as a managed
/// method's `Err` travels): the client turns it into the matching `mp::Error`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Refused {
    /// A bounded queue stayed full ([`Error::Full`]).
    Full,
    /// A queue stayed empty ([`Error::Empty`]).
    Empty,
    /// A barrier broke while, or before, the caller waited ([`Error::BrokenBarrier`]).
    BrokenBarrier,
    /// An index out of range, an element that is not there ([`Error::InvalidArgument`]).
    Argument(String),
}

impl From<Refused> for Error {
    fn from(r: Refused) -> Error {
        match r {
            Refused::Full => Error::Full,
            Refused::Empty => Error::Empty,
            Refused::BrokenBarrier => Error::BrokenBarrier,
            Refused::Argument(message) => Error::InvalidArgument { message },
        }
    }
}

/// A method's answer: its result, or what it refused.
pub(crate) type Answer<T> = std::result::Result<T, Refused>;

/// Why a built-in's method did not complete, in the server: an error around the call, or a
/// refusal that travels as the method's own error.
pub(crate) enum Fail {
    Remote(RemoteError),
    Refused(Refused),
}

impl From<RemoteError> for Fail {
    fn from(e: RemoteError) -> Fail {
        Fail::Remote(e)
    }
}

impl From<Refused> for Fail {
    fn from(r: Refused) -> Fail {
        Fail::Refused(r)
    }
}

/// Splits a server-side outcome into what `Call::read_try` sends: refusals inside the reply.
pub(crate) fn answer<R>(
    r: std::result::Result<R, Fail>,
) -> std::result::Result<Answer<R>, RemoteError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Fail::Refused(r)) => Ok(Err(r)),
        Err(Fail::Remote(e)) => Err(e),
    }
}

/// Calls a method whose reply is an [`Answer`], turning a refusal into its `mp::Error`.
pub(crate) fn call_answer<A: Serialize + ?Sized, R: DeserializeOwned>(
    r: &ObjRef,
    method: u16,
    args: &A,
) -> Result<R> {
    let a: Answer<R> = r.call(method, args)?;
    a.map_err(Error::from)
}

/// [`call_answer`] for a blocking method whose arguments carry `wait` (see
/// `ObjRef::call_bounded`).
pub(crate) fn call_answer_bounded<A: Serialize + ?Sized, R: DeserializeOwned>(
    r: &ObjRef,
    method: u16,
    args: &A,
    wait: Wait,
) -> Result<R> {
    let a: Answer<R> = r.call_bounded(method, args, wait)?;
    a.map_err(Error::from)
}

/// The error for a value the server could not copy (a descriptor that would not duplicate).
pub(crate) fn copy_failed(e: Error) -> RemoteError {
    RemoteError::State(e.to_string())
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

/// The label of a built-in proxy, with its element types if it has any.
pub(crate) fn label(kind: &str, params: &[&str]) -> String {
    if params.is_empty() {
        format!("mp::{kind}")
    } else {
        format!("mp::{kind}<{}>", params.join(", "))
    }
}

/// Defines a built-in proxy type: the struct around an [`ObjRef`], `Clone`, `Debug`, [`Proxy`],
/// and `Serialize`/`Deserialize` as a proxy (a ticket), for any element types.
///
/// [`Proxy`]: super::proxy::Proxy
macro_rules! proxy_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        pub struct $name {
            r: $crate::manager::ObjRef,
        }

        impl Clone for $name {
            fn clone(&self) -> Self {
                $name { r: self.r.clone() }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.r)
            }
        }

        impl $crate::manager::Proxy for $name {
            fn label() -> String {
                $crate::manager::builtins::label($kind, &[])
            }
            fn from_ref(r: $crate::manager::ObjRef) -> Self {
                $name { r }
            }
            fn obj_ref(&self) -> &$crate::manager::ObjRef {
                &self.r
            }
        }

        $crate::manager::builtins::proxy_type!(@serde $name []);
    };
    ($(#[$doc:meta])* $name:ident<$t:ident>, $kind:literal) => {
        $(#[$doc])*
        pub struct $name<$t> {
            r: $crate::manager::ObjRef,
            _type: std::marker::PhantomData<fn($t) -> $t>,
        }

        impl<$t> Clone for $name<$t> {
            fn clone(&self) -> Self {
                $name { r: self.r.clone(), _type: std::marker::PhantomData }
            }
        }

        impl<$t> std::fmt::Debug for $name<$t> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.r)
            }
        }

        impl<$t> $crate::manager::Proxy for $name<$t> {
            fn label() -> String {
                $crate::manager::builtins::label($kind, &[std::any::type_name::<$t>()])
            }
            fn from_ref(r: $crate::manager::ObjRef) -> Self {
                $name { r, _type: std::marker::PhantomData }
            }
            fn obj_ref(&self) -> &$crate::manager::ObjRef {
                &self.r
            }
        }

        $crate::manager::builtins::proxy_type!(@serde $name [$t]);
    };
    (@serde $name:ident [$($t:ident)?]) => {
        impl<$($t)?> serde::Serialize for $name<$($t)?> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                $crate::manager::serialize_proxy(self, s)
            }
        }

        impl<'de, $($t)?> serde::Deserialize<'de> for $name<$($t)?> {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                $crate::manager::deserialize_proxy(d)
            }
        }
    };
}
pub(crate) use proxy_type;
