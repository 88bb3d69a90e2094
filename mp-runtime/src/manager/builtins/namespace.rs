//! A managed namespace (Python's `Manager().Namespace()`): values by attribute name.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::value::{Encoded, Received, Stored};
use super::{Refused, builtin, call_answer, copy_failed, lock, proxy_type};
use crate::error::Result;
use crate::manager::Manager;

/// The server's namespace: values by name.
#[derive(Default)]
pub(crate) struct NamespaceObj {
    values: Mutex<BTreeMap<String, Stored>>,
}

const NS_GET: u16 = 0;
const NS_SET: u16 = 1;
const NS_REMOVE: u16 = 2;
const NS_NAMES: u16 = 3;

/// Names starting with `_` are refused: Python's namespace proxy hides them (they live on the
/// proxy, not in the server), so a program relying on them is better told at once.
fn check_name(name: &str) -> std::result::Result<(), Refused> {
    if name.is_empty() || name.starts_with('_') {
        return Err(Refused::Argument(format!(
            "`{name}` cannot name a namespace attribute: names must be non-empty and may not \
             start with `_` (Python's Namespace hides such names)"
        )));
    }
    Ok(())
}

impl Managed for NamespaceObj {
    const KEEPS_DECODED: bool = true;
    builtin!(
        NamespaceObj,
        "mp::manager::Namespace",
        [
            "Namespace::get",
            "Namespace::set",
            "Namespace::remove",
            "Namespace::names",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Namespace::?");
        match method {
            NS_GET => call.read_try(this, name, |n, (attr,): (String,)| {
                if let Err(refused) = check_name(&attr) {
                    return Ok(Err(refused));
                }
                lock(&n.values)
                    .get(&attr)
                    .map(|s| s.try_clone().map_err(copy_failed))
                    .transpose()
                    .map(Ok)
            }),
            NS_SET => call.read(this, name, |n, (attr, v): (String, Stored)| {
                check_name(&attr)?;
                let old = lock(&n.values).insert(attr, v);
                drop(old);
                Ok::<_, Refused>(())
            }),
            NS_REMOVE => call.read(this, name, |n, (attr,): (String,)| {
                check_name(&attr)?;
                let old = lock(&n.values).remove(&attr);
                Ok::<_, Refused>(old.is_some())
            }),
            NS_NAMES => call.read(this, name, |n, ()| {
                lock(&n.values).keys().cloned().collect::<Vec<_>>()
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Namespace::new", |()| NamespaceObj::default())
    }
}

proxy_type!(
    /// A proxy of a managed namespace (Python's `Namespace`): values of any `serde` type by
    /// attribute name, each read as the type the caller asks for.
    ///
    /// Names starting with `_` are refused ([`Error::InvalidArgument`]): Python keeps them on
    /// the proxy, out of the shared namespace, which would silently share nothing here.
    ///
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let ns = m.namespace()?;
    /// ns.set("name", &"Bob".to_string())?;
    /// ns.set("age", &42u32)?;
    /// assert_eq!(ns.get::<String>("name")?.as_deref(), Some("Bob"));
    /// assert_eq!(ns.names()?, vec!["age", "name"]);
    /// assert!(ns.remove("age")?);
    /// assert_eq!(ns.get::<u32>("age")?, None);
    /// assert!(matches!(ns.set("_hidden", &1u8), Err(mp::Error::InvalidArgument { .. })));
    /// # Ok(())
    /// # }
    /// ```
    NamespaceProxy,
    "Namespace"
);

impl NamespaceProxy {
    /// A copy of attribute `name` as a `T` (`None` if it is not set; [`Error::Codec`] if it
    /// holds another type).
    ///
    /// [`Error::Codec`]: crate::Error::Codec
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let v: Option<Received> = call_answer(&self.r, NS_GET, &(name,))?;
        v.map(Received::decode).transpose()
    }

    /// Sets attribute `name` (Python's `ns.name = value`).
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        call_answer(&self.r, NS_SET, &(name, Encoded::of(value)?))
    }

    /// Deletes attribute `name` (Python's `del ns.name`); true if it was set.
    pub fn remove(&self, name: &str) -> Result<bool> {
        call_answer(&self.r, NS_REMOVE, &(name,))
    }

    /// The names of the attributes set, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        self.r.call(NS_NAMES, &())
    }
}

impl Manager {
    /// A new, empty managed namespace (Python's `manager.Namespace()`).
    pub fn namespace(&self) -> Result<NamespaceProxy> {
        self.create::<NamespaceProxy, _>(NamespaceObj::TYPE_NAME, NamespaceObj::FINGERPRINT, 0, &())
    }
}
