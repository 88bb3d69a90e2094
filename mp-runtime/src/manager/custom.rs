//! What `#[mp::managed]` generates code against besides [`Managed`]: the link from a managed
//! type to its generated proxy, so that a method returning another managed object (Python's
//! `method_to_typeid`) can name that object's proxy, and the compile-time check behind it.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::managed::Managed;
use super::proxy::{ObjRef, Proxy};
use crate::error::Result;

/// A `#[mp::managed]` type and the proxy generated for it (`Counter` → `CounterProxy`).
///
/// A method marked `#[mp(proxy)]` returns a value of such a type; the value becomes a new
/// object in the server, and the caller receives `<T as HasProxy>::Proxy`. Implemented by
/// `#[mp::managed]`; not meant to be implemented by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a managed type",
    label = "`#[mp(proxy)]` needs a type with `#[mp::managed]` on one of its `impl` blocks",
    note = "add `#[mp::managed]` to an `impl` block of `{Self}`, or remove `#[mp(proxy)]` to return a copy of the value"
)]
pub trait HasProxy: Managed {
    /// The generated proxy.
    type Proxy: Proxy + Clone + Serialize + DeserializeOwned;
}

/// Compile-time check that a `#[mp(proxy)]` method returns a managed type. Generated code calls
/// it spanned on the user's type so that the error points there.
#[doc(hidden)]
pub fn assert_managed<T: HasProxy>() {}

/// Calls method `method` of `r` with the argument tuple `args`, waiting at most `timeout` (or
/// as long as it takes): the body of every generated proxy method and its `_timeout` variant.
/// (One function for both, so that a type error in the arguments is reported once.)
#[doc(hidden)]
pub fn call_method<A: Serialize + ?Sized, R: DeserializeOwned>(
    r: &ObjRef,
    method: u16,
    args: &A,
    timeout: Option<Duration>,
) -> Result<R> {
    match timeout {
        None => r.call(method, args),
        Some(t) => r.call_timeout(method, args, t),
    }
}
