//! Procedural macros of [`multiproc`](https://docs.rs/multiproc) (imported as `mp`). Use them
//! through that crate: `#[mp::main]`, `#[mp::worker]`, `#[mp::managed]` and
//! `#[derive(mp::Pod, mp::Zeroable)]`. Each one only generates calls into `mp-runtime` (or trait
//! impls); the logic lives there.

use proc_macro::TokenStream;

mod ast;
mod attr;
mod expand;
mod fallback;
mod pod;
mod valid;

/// Marks a function as a worker that can run in another process, or an `impl mp::Run for T`
/// as a process body. See the `mp` crate's documentation.
#[proc_macro_attribute]
pub fn worker(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::worker(args.into(), item.into()).into()
}

/// Wraps `main` so that children re-enter their worker and `main`'s end joins the children.
/// See the `mp` crate's documentation.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::main(args.into(), item.into()).into()
}

/// Derives `mp::Pod` (bytemuck's `Pod`) for a `#[repr(C)]` or `#[repr(transparent)]` struct
/// whose fields are all `Pod` and which has no padding; it must also be `Copy` and derive
/// `mp::Zeroable`. Only `mp` needs to be a dependency. If `mp` is renamed or re-exported, say
/// where: `#[mp(crate = "path::to::mp")]`.
#[proc_macro_derive(Pod, attributes(mp))]
pub fn derive_pod(input: TokenStream) -> TokenStream {
    pod::derive(pod::Trait::Pod, input.into()).into()
}

/// Derives `mp::Zeroable` (bytemuck's `Zeroable`) for a struct whose fields are all
/// `Zeroable`. Only `mp` needs to be a dependency (see [`macro@Pod`] for a renamed crate).
#[proc_macro_derive(Zeroable, attributes(mp))]
pub fn derive_zeroable(input: TokenStream) -> TokenStream {
    pod::derive(pod::Trait::Zeroable, input.into()).into()
}

/// Makes a type live in a manager's server and usable from any process through a generated,
/// typed proxy (Python's `BaseManager.register('Counter', Counter)`).
///
/// Put it on an inherent `impl` block. Its `pub` functions are exposed (private ones are not,
/// as Python's `_name` methods): a `pub fn` without `self` returning `Self` is a
/// **constructor**; a `pub fn` taking `&self` runs under a shared lock in the server, one
/// taking `&mut self` under an exclusive lock. `Counter` gets a proxy `CounterProxy` with:
///
/// - one associated function per constructor, taking the [`Manager`] first:
///   `CounterProxy::new(&manager, 5)?` builds a `Counter` in the server;
/// - one method per exposed method, taking `&self` (the server does the locking) and
///   returning `mp::Result<R>`: transport errors (the manager died, a remote panic, a poisoned
///   object) are the outer `Err`; a method that returns `Result<T, E>` gives
///   `mp::Result<Result<T, E>>`, its own error kept typed;
/// - a `_timeout` variant of each method, taking a trailing `Duration`;
/// - `Clone` (clones share one reference), `Debug`, and `Serialize`/`Deserialize`: a proxy
///   passed to a worker, through a queue or into another managed object reaches the same
///   object.
///
/// A method marked `#[mp(proxy)]` returns another managed value, which stays in the server:
/// the caller receives its proxy (Python's `method_to_typeid`). The user's doc comments are
/// copied to the proxy; the user's block is emitted unchanged. One block per type carries the
/// attribute (the type's other `impl` blocks stay local), and a server builds the type by its
/// name (module path and type name), so client and server are the same program, or programs
/// built from the same source (a fingerprint of the signatures guards against the rest:
/// `Error::Incompatible`).
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// pub struct DivByZero;
///
/// pub struct Counter {
///     n: u64,
/// }
///
/// #[mp::managed]
/// impl Counter {
///     /// A counter at `start`.
///     pub fn new(start: u64) -> Self {
///         Counter { n: start }
///     }
///
///     /// The count.
///     pub fn get(&self) -> u64 {
///         self.n
///     }
///
///     /// Adds `k`; the new count.
///     pub fn add(&mut self, k: u64) -> u64 {
///         self.n += k;
///         self.n
///     }
///
///     /// Divides the count by `d`.
///     pub fn div(&mut self, d: u64) -> Result<u64, DivByZero> {
///         self.n = self.n.checked_div(d).ok_or(DivByZero)?;
///         Ok(self.n)
///     }
///
///     /// Moves half of the count to a new counter, which stays in the server.
///     #[mp(proxy)]
///     pub fn split(&mut self) -> Counter {
///         let half = self.n / 2;
///         self.n -= half;
///         Counter { n: half }
///     }
///
///     fn helper(&self) {} // not exposed
/// }
///
/// # fn main() -> mp::Result<()> {
/// let manager = mp::Manager::start()?;
/// let c = CounterProxy::new(&manager, 10)?;
/// assert_eq!(c.add(2)?, 12);
/// assert_eq!(c.div(0)?, Err(DivByZero)); // the method's own error
/// assert_eq!(c.div(2)?, Ok(6));
/// let half: CounterProxy = c.split()?;
/// assert_eq!((c.get()?, half.get()?), (3, 3));
/// assert!(c.get_timeout(std::time::Duration::from_secs(10)).is_ok());
/// manager.shutdown()?;
/// assert!(c.get().is_err()); // the manager is gone: an error at once, not a hang
/// # Ok(())
/// # }
/// ```
///
/// Arguments and results must be `serde` types (checked at compile time, with the message of
/// [`Sendable`]); the macro refuses, pointing at the offending tokens: `async`, `unsafe` or
/// generic methods, a generic impl, `self` by value, references, `impl Trait` or lifetimes
/// in arguments or results, a `pub` function without `self` that does not return `Self`,
/// `#[mp(proxy)]` on a type that is not managed, and trait impls.
///
/// Arguments of the attribute: `crate = "path::to::mp"` when `mp` is re-exported under
/// another path, and `proxy_name = "Name"` for another proxy name than `TypeProxy`. The proxy
/// struct is always `pub` (the macro cannot see the type's visibility, and a proxy must be
/// at least as visible as its type); its methods have the visibility of the functions they
/// mirror.
///
/// # Equivalent code without the macro
///
/// The table of methods (indices in declaration order), the fingerprint of the signatures
/// that client and server compare, and the proxy's thin calls; everything else is in
/// `mp-runtime`.
///
/// ```
/// use mp::manager::{Call, HasProxy, Managed, ObjRef, Out, Proxy, RemoteError, Shared};
/// use std::time::Duration;
///
/// pub struct Counter {
///     n: u64,
/// }
///
/// impl Counter {
///     pub fn new(start: u64) -> Self {
///         Counter { n: start }
///     }
///     pub fn get(&self) -> u64 {
///         self.n
///     }
///     pub fn add(&mut self, k: u64) -> u64 {
///         self.n += k;
///         self.n
///     }
/// }
///
/// impl Managed for Counter {
///     const TYPE_NAME: &'static str = concat!(module_path!(), "::", "Counter");
///     const FINGERPRINT: u64 = mp::manager::fingerprint(&[
///         "ctor Counter::new(u64) -> Self",
///         "method Counter::get(&self) -> u64",
///         "method Counter::add(&mut self, u64) -> u64",
///     ]);
///     const METHODS: &'static [&'static str] = &["Counter::get", "Counter::add"];
///
///     fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
///         match method {
///             0 => call.read(this, "Counter::get", |c: &Counter, (): ()| c.get()),
///             1 => call.write(this, "Counter::add", |c: &mut Counter, (k,): (u64,)| c.add(k)),
///             other => Err(call.no_such_method::<Self>(other)),
///         }
///     }
///
///     fn construct(ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
///         match ctor {
///             0 => call.construct("Counter::new", |(start,): (u64,)| Counter::new(start)),
///             other => Err(call.no_such_method::<Self>(other)),
///         }
///     }
/// }
///
/// // The server builds a `Counter` by its name.
/// mp::__private::inventory::submit! { mp::manager::TypeEntry::of::<Counter>() }
///
/// /// A proxy of a `Counter` in a manager's server.
/// #[derive(Clone, Debug)]
/// pub struct CounterProxy(ObjRef);
///
/// impl HasProxy for Counter {
///     type Proxy = CounterProxy;
/// }
///
/// impl Proxy for CounterProxy {
///     fn label() -> String {
///         mp::manager::label_of::<Counter>()
///     }
///     fn from_ref(r: ObjRef) -> Self {
///         CounterProxy(r)
///     }
///     fn obj_ref(&self) -> &ObjRef {
///         &self.0
///     }
/// }
///
/// impl serde::Serialize for CounterProxy {
///     fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
///         mp::manager::serialize_proxy(self, s)
///     }
/// }
///
/// impl<'de> serde::Deserialize<'de> for CounterProxy {
///     fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
///         mp::manager::deserialize_proxy(d)
///     }
/// }
///
/// impl CounterProxy {
///     pub fn new(manager: &mp::Manager, start: u64) -> mp::Result<Self> {
///         manager.create_managed::<Counter, Self, _>(0, &(start,))
///     }
///     pub fn get(&self) -> mp::Result<u64> {
///         mp::manager::call_method(&self.0, 0, &(), None)
///     }
///     pub fn get_timeout(&self, timeout: Duration) -> mp::Result<u64> {
///         mp::manager::call_method(&self.0, 0, &(), Some(timeout))
///     }
///     pub fn add(&self, k: u64) -> mp::Result<u64> {
///         mp::manager::call_method(&self.0, 1, &(k,), None)
///     }
///     pub fn add_timeout(&self, k: u64, timeout: Duration) -> mp::Result<u64> {
///         mp::manager::call_method(&self.0, 1, &(k,), Some(timeout))
///     }
/// }
///
/// # fn main() -> mp::Result<()> {
/// let manager = mp::Manager::start()?;
/// let c = CounterProxy::new(&manager, 1)?;
/// assert_eq!(c.add(2)?, 3);
/// # Ok(())
/// # }
/// ```
///
/// (The macro also checks, spanned at each type, that arguments and results implement
/// [`Sendable`] and that `#[mp(proxy)]` results are managed types.)
///
/// [`Manager`]: https://docs.rs/multiproc/latest/mp/struct.Manager.html
/// [`Sendable`]: https://docs.rs/multiproc/latest/mp/trait.Sendable.html
#[proc_macro_attribute]
pub fn managed(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::managed(args.into(), item.into()).into()
}
