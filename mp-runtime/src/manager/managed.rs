//! The server's side of a managed type: the table of its methods, how a call runs, and the
//! registry the server builds objects from.
//!
//! `#[mp::managed]` implements [`Managed`] for the user's type: method indices in declaration
//! order, a fingerprint of the signatures, a `dispatch` that decodes the arguments of method
//! `i`, runs it under the object's lock (shared for `&self`, exclusive for `&mut self`) and
//! encodes the result, and a `construct` for its constructors. It also submits a [`TypeEntry`],
//! so that a server finds the type by name. The built-in objects (dict, list, queue, …)
//! implement the same trait by hand.

use std::os::fd::{OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{ObjId, RemoteError};
use crate::codec;

/// A type whose values can live in a manager's server and be used through proxies.
///
/// Implemented by `#[mp::managed]`; not meant to be implemented by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a managed type",
    label = "this type needs `#[mp::managed]` on one of its `impl` blocks",
    note = "add `#[mp::managed]` to an `impl` block of `{Self}`"
)]
pub trait Managed: Send + Sync + Sized + 'static {
    /// The registered name (module path and type name).
    const TYPE_NAME: &'static str;
    /// A hash of every exposed signature: client and server must agree on it.
    const FINGERPRINT: u64;
    /// The exposed methods' names, by index.
    const METHODS: &'static [&'static str];
    /// Whether every method keeps the stored values it decodes and hands none to another
    /// object (the built-in containers): the references they hold are then known to be this
    /// object's, which lets the server free cycles of such objects.
    #[doc(hidden)]
    const KEEPS_DECODED: bool = false;

    /// Runs method `method` on `this`.
    #[doc(hidden)]
    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError>;

    /// Builds a value with constructor `ctor`.
    #[doc(hidden)]
    fn construct(ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError>;

    /// Called when a client session that this object asked about ([`Call::watch_session`])
    /// ends: its process exited or was killed. A lock held by that session lets go here.
    #[doc(hidden)]
    fn session_ended(this: &Shared<Self>, session: u64) {
        let _ = (this, session);
    }
}

/// A result on its way to the caller: encoded bytes and the descriptors they refer to, or a
/// new object that the server adds to its table and sends as a proxy.
#[doc(hidden)]
#[derive(Default)]
pub struct Out {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
    /// A new object (and its label) for the caller: the server replaces it with a proxy.
    pub(crate) adopt: Option<(Arc<dyn Object>, String)>,
}

impl Out {
    /// Encodes `value` (descriptors duplicated: the value may be gone when the reply is sent).
    pub(crate) fn of<T: Serialize + ?Sized>(value: &T) -> Result<Out, RemoteError> {
        let (bytes, fds) =
            codec::encode_owned(value).map_err(|e| RemoteError::Codec(e.to_string()))?;
        Ok(Out {
            bytes,
            fds,
            adopt: None,
        })
    }

    /// A new managed object for the caller.
    fn adopt<T: Managed>(value: T) -> Out {
        Out {
            adopt: Some((Arc::new(Shared::new(value)), label_of::<T>())),
            ..Out::default()
        }
    }
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("bytes", &self.bytes.len())
            .field("fds", &self.fds.len())
            .field("adopt", &self.adopt.as_ref().map(|(_, l)| l))
            .finish()
    }
}

/// A managed value in the server: the value behind a read-write lock, and whether a method
/// panicked while holding it exclusively.
#[doc(hidden)]
pub struct Shared<T> {
    value: RwLock<T>,
    poisoned: AtomicBool,
}

impl<T> Shared<T> {
    pub(crate) fn new(value: T) -> Self {
        Shared {
            value: RwLock::new(value),
            poisoned: AtomicBool::new(false),
        }
    }

    /// The value, shared (for hooks that run outside a call, like [`Managed::session_ended`]).
    pub(crate) fn value(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.value.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who made a call: the session (one per client process) and the client thread (which keeps
/// its identity across connections: a call that timed out makes it open a new one), for
/// objects whose methods depend on the caller (an `RLock`'s owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Caller {
    pub(crate) session: u64,
    pub(crate) thread: u64,
    /// The call came over TCP (no descriptors can go back).
    pub(crate) tcp: bool,
}

/// One call being served: its encoded arguments and what the server knows of the caller.
#[doc(hidden)]
pub struct Call<'a> {
    args: &'a [u8],
    fds: Vec<OwnedFd>,
    caller: Caller,
    /// The object called (0 for a constructor).
    obj: ObjId,
    method_name: &'static str,
    /// The server's end of the caller's connection (`None` for a call made by the server).
    connection: Option<RawFd>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(args: &'a [u8], fds: Vec<OwnedFd>, caller: Caller, obj: ObjId) -> Self {
        Call {
            args,
            fds,
            caller,
            obj,
            method_name: "",
            connection: None,
        }
    }

    /// The call came in on `fd`, the server's end of the caller's connection, which stays open
    /// (owned by the connection's thread, which serves this call) until the call returns.
    pub(crate) fn on_connection(mut self, fd: RawFd) -> Self {
        self.connection = Some(fd);
        self
    }

    /// The server's end of the caller's connection, if the call came from a client.
    pub(crate) fn connection(&self) -> Option<RawFd> {
        self.connection
    }

    pub(crate) fn caller(&self) -> Caller {
        self.caller
    }

    /// The object called (0 for a constructor).
    pub(crate) fn obj(&self) -> ObjId {
        self.obj
    }

    /// Decodes the argument tuple (a panicking `Deserialize` is the call's error).
    pub(crate) fn args<A: DeserializeOwned>(&mut self) -> Result<A, RemoteError> {
        let (args, fds) = (self.args, std::mem::take(&mut self.fds));
        self.guarded(|| codec::decode(args, fds))?.map_err(|e| {
            RemoteError::Codec(format!(
                "the arguments of `{}` could not be decoded: {e}",
                self.method_name
            ))
        })
    }

    /// Encodes a method's result; a panicking `Serialize` is the call's error, as a panic in
    /// the method is (the object is not poisoned: the method completed).
    fn encode<R: Serialize>(&self, result: &R) -> Result<Out, RemoteError> {
        self.guarded(|| Out::of(result))?
    }

    fn guarded<R>(&self, f: impl FnOnce() -> R) -> Result<R, RemoteError> {
        catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
            let (message, location) = super::panic::take();
            RemoteError::Panic {
                method: self.method_name.to_owned(),
                message,
                location,
            }
        })
    }

    /// Decodes `A` and runs `f` under the object's shared lock (a panic is the call's error).
    fn shared<T, A: DeserializeOwned, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&T, A) -> R,
    ) -> Result<R, RemoteError> {
        self.method_name = method;
        let args: A = self.args()?;
        if this.poisoned.load(Ordering::Acquire) {
            return Err(RemoteError::Poisoned);
        }
        let guard = this.value.read().unwrap_or_else(|p| p.into_inner());
        self.guarded(|| f(&guard, args))
    }

    /// Decodes `A` and runs `f` under the object's exclusive lock; a panic poisons the object.
    fn exclusive<T, A: DeserializeOwned, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&mut T, A) -> R,
    ) -> Result<R, RemoteError> {
        self.method_name = method;
        let args: A = self.args()?;
        if this.poisoned.load(Ordering::Acquire) {
            return Err(RemoteError::Poisoned);
        }
        let mut guard = this.value.write().unwrap_or_else(|p| p.into_inner());
        let result = self.guarded(|| f(&mut guard, args));
        if result.is_err() {
            this.poisoned.store(true, Ordering::Release);
        }
        result
    }

    /// Runs a `&self` method: decodes `A`, calls `f` under a shared lock, encodes its result.
    pub fn read<T, A, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&T, A) -> R,
    ) -> Result<Out, RemoteError>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let result = self.shared(this, method, f)?;
        self.encode(&result)
    }

    /// Runs a `&mut self` method under the exclusive lock; a panic poisons the object.
    pub fn write<T, A, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&mut T, A) -> R,
    ) -> Result<Out, RemoteError>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let result = self.exclusive(this, method, f)?;
        self.encode(&result)
    }

    /// [`Call::read`] for a method that can refuse: its `Err` is the call's error.
    pub(crate) fn read_try<T, A, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&T, A) -> Result<R, RemoteError>,
    ) -> Result<Out, RemoteError>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let result = self.shared(this, method, f)??;
        self.encode(&result)
    }

    /// Like [`Call::read`] or [`Call::write`] for a method that returns another managed value:
    /// the value becomes a new object in the server, and the caller receives a proxy of it.
    pub fn read_new<T, A, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&T, A) -> R,
    ) -> Result<Out, RemoteError>
    where
        A: DeserializeOwned,
        R: Managed,
    {
        Ok(Out::adopt(self.shared(this, method, f)?))
    }

    /// [`Call::read_new`] for a `&mut self` method.
    pub fn write_new<T, A, R>(
        &mut self,
        this: &Shared<T>,
        method: &'static str,
        f: impl FnOnce(&mut T, A) -> R,
    ) -> Result<Out, RemoteError>
    where
        A: DeserializeOwned,
        R: Managed,
    {
        Ok(Out::adopt(self.exclusive(this, method, f)?))
    }

    /// Runs a constructor: decodes `A` and calls `f`.
    pub fn construct<T, A>(
        &mut self,
        method: &'static str,
        f: impl FnOnce(A) -> T,
    ) -> Result<T, RemoteError>
    where
        A: DeserializeOwned,
    {
        self.method_name = method;
        let args: A = self.args()?;
        self.guarded(|| f(args))
    }

    /// The error for a method index the type does not have.
    pub fn no_such_method<T: Managed>(&self, method: u16) -> RemoteError {
        RemoteError::NoSuchMethod {
            type_name: T::TYPE_NAME.to_owned(),
            method,
        }
    }
}

/// An object in the server, whatever its type.
pub(crate) trait Object: Send + Sync + 'static {
    fn dispatch(&self, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError>;
    /// A session this object watches has ended.
    fn session_ended(&self, session: u64);
}

impl<T: Managed> Object for Shared<T> {
    fn dispatch(&self, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        if T::KEEPS_DECODED {
            super::holder::holding_for(call.obj(), || T::dispatch(self, method, call))
        } else {
            T::dispatch(self, method, call)
        }
    }
    fn session_ended(&self, session: u64) {
        T::session_ended(self, session)
    }
}

/// How a server builds objects of one registered type.
#[doc(hidden)]
pub struct TypeEntry {
    pub(crate) name: &'static str,
    pub(crate) fingerprint: u64,
    pub(crate) build: Build,
}

/// What builds an object of a registered type from a constructor index and its arguments.
pub(crate) type Build = fn(u16, &mut Call<'_>) -> Result<Arc<dyn Object>, RemoteError>;

impl TypeEntry {
    /// The entry of `T`, for `inventory::submit!`.
    pub const fn of<T: Managed>() -> Self {
        TypeEntry {
            name: T::TYPE_NAME,
            fingerprint: T::FINGERPRINT,
            build: build::<T>,
        }
    }
}

fn build<T: Managed>(ctor: u16, call: &mut Call<'_>) -> Result<Arc<dyn Object>, RemoteError> {
    let value = T::construct(ctor, call)?;
    Ok(Arc::new(Shared::new(value)))
}

inventory::collect!(TypeEntry);

/// The label of a `#[mp::managed]` type: its name and fingerprint (what proxies of it are
/// checked against when received or looked up).
pub fn label_of<T: Managed>() -> String {
    format!("{}#{:016x}", T::TYPE_NAME, T::FINGERPRINT)
}

/// FNV-1a over the given strings (with a separator), for [`Managed::FINGERPRINT`]: computed at
/// compile time from the stringified signatures.
pub const fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        let bytes = parts[i].as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            hash ^= bytes[j] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            j += 1;
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}
