//! A reference to an object in a manager, the part every proxy shares.
//!
//! An [`ObjRef`] is one reference of this process's session to one object. Cloning it is local
//! (no message); dropping the last clone tells the server, one way, that the session lets go.
//! Sending a proxy to another process (as a worker argument, through a queue, inside another
//! managed value) serializes a *ticket*: the server keeps the object alive for the trip, and the
//! receiving process claims the ticket for its own session as it decodes the proxy. The
//! authkey never travels; a receiver that has no link to that manager yet connects with the key
//! given to `Manager::connect` for that address, or its own authkey (inherited from the parent,
//! as in Python).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::host;
use super::link::Link;
use super::protocol::{ObjId, Ticket};
use super::value::TicketHold;
use crate::codec;
use crate::error::{Error, Result};
use crate::listener::Address;

/// How long after a blocking call's own deadline the client stops waiting for the server.
const CLIENT_GRACE: Duration = Duration::from_secs(1);

/// A proxy of a managed object: the typed wrapper `#[mp::managed]` and the built-ins generate
/// around an [`ObjRef`].
pub trait Proxy: Sized {
    /// What the server calls the object's type, checked when a proxy is looked up by name or
    /// received from another process.
    fn label() -> String;
    /// Wraps a reference.
    fn from_ref(r: ObjRef) -> Self;
    /// The reference inside.
    fn obj_ref(&self) -> &ObjRef;
}

/// How a proxy travels.
#[derive(Serialize, Deserialize)]
pub(crate) struct ProxyWire {
    /// The server's identity.
    pub(crate) manager: u64,
    /// Where the sender reached it.
    pub(crate) address: String,
    pub(crate) ticket: Ticket,
    pub(crate) label: String,
}

/// One reference to an object in a manager (see the module docs).
#[derive(Clone)]
pub struct ObjRef(Arc<Held>);

enum Held {
    /// Held by a client process's session.
    Client {
        link: Arc<Link>,
        obj: ObjId,
        label: String,
    },
    /// A proxy inside the server itself (an argument or field of a managed value): a hold on
    /// a ticket, and calls made directly.
    InServer { hold: TicketHold, label: String },
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Client { link, obj, .. } = self {
            link.release(*obj);
        }
    }
}

impl ObjRef {
    pub(crate) fn client(link: Arc<Link>, obj: ObjId, label: String) -> ObjRef {
        ObjRef(Arc::new(Held::Client { link, obj, label }))
    }

    /// The object's id in its server.
    pub(crate) fn id(&self) -> ObjId {
        match &*self.0 {
            Held::Client { obj, .. } => *obj,
            Held::InServer { hold, .. } => hold.obj(),
        }
    }

    fn label(&self) -> &str {
        match &*self.0 {
            Held::Client { label, .. } | Held::InServer { label, .. } => label,
        }
    }

    /// This process's link to the object's manager; `None` for a proxy held by the server
    /// itself.
    pub(crate) fn link(&self) -> Option<Result<Arc<Link>>> {
        match &*self.0 {
            Held::Client { link, .. } => Some(link.current()),
            Held::InServer { .. } => None,
        }
    }

    /// Calls method `method` with the argument tuple `args`, waiting as long as it takes.
    #[doc(hidden)]
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: u16,
        args: &A,
    ) -> Result<R> {
        self.call_within(method, args, None)
    }

    /// Calls method `method`, waiting at most `timeout` for the reply ([`Error::Timeout`]
    /// after it; the call may still complete in the server).
    #[doc(hidden)]
    pub fn call_timeout<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: u16,
        args: &A,
        timeout: Duration,
    ) -> Result<R> {
        self.call_within(method, args, Some(timeout))
    }

    /// Calls a built-in's blocking method whose arguments carry `wait`, the server's own
    /// deadline: the client gives up too, a little after it, so that a server that stopped
    /// answering (stopped with `SIGSTOP`, or stuck) cannot keep a bounded call waiting.
    pub(crate) fn call_bounded<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: u16,
        args: &A,
        wait: Option<Duration>,
    ) -> Result<R> {
        self.call_within(method, args, wait.map(|w| w.saturating_add(CLIENT_GRACE)))
    }

    pub(crate) fn call_within<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: u16,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<R> {
        match &*self.0 {
            Held::Client { link, obj, .. } => link.current()?.call(*obj, method, args, timeout),
            Held::InServer { hold, .. } => {
                let host =
                    host::current().ok_or_else(|| Error::state("not in a manager server"))?;
                let (bytes, fds) = codec::encode_owned(args)?;
                let out = host
                    .call(hold.obj(), method, &bytes, fds)
                    .map_err(super::remote_error)?;
                codec::decode(&out.bytes, out.fds)
            }
        }
    }

    /// Decodes a received proxy, checking that it is a `P`.
    pub(crate) fn receive<P: Proxy>(wire: ProxyWire) -> Result<P> {
        let expected = P::label();
        if wire.label != expected {
            decline(&wire);
            return Err(Error::Incompatible {
                type_name: expected,
                message: format!("the proxy received is a `{}`", wire.label),
            });
        }
        if let Some(host) = host::current()
            && host.manager() == wire.manager
        {
            let hold = TicketHold::claim(wire.ticket)?;
            return Ok(P::from_ref(ObjRef(Arc::new(Held::InServer {
                hold,
                label: wire.label,
            }))));
        }
        let address: Address = wire.address.parse()?;
        let link = Link::find_or_connect(wire.manager, &address)?;
        let (obj, label) = link.attach(wire.ticket)?;
        Ok(P::from_ref(ObjRef::client(link, obj, label)))
    }

    /// The wire form of this reference, with a fresh ticket.
    fn wire(&self) -> Result<ProxyWire> {
        if super::value::encoding_key() {
            return Err(Error::state(super::value::PROXY_IN_KEY));
        }
        match &*self.0 {
            Held::Client { link, obj, label } => {
                let link = link.current()?;
                let ticket = link.retain(*obj)?;
                super::value::note_ticket(ticket);
                Ok(ProxyWire {
                    manager: link.manager(),
                    address: link.address().to_string(),
                    ticket,
                    label: label.clone(),
                })
            }
            Held::InServer { hold, label } => {
                let host =
                    host::current().ok_or_else(|| Error::state("not in a manager server"))?;
                Ok(ProxyWire {
                    manager: host.manager(),
                    address: host.address(),
                    ticket: host.retain(hold.obj()).map_err(super::remote_error)?,
                    label: label.clone(),
                })
            }
        }
    }
}

/// A received proxy refused (read as another type): its ticket is claimed and let go at once,
/// so that the transfer does not keep its object alive until it expires.
fn decline(wire: &ProxyWire) {
    if let Some(host) = host::current()
        && host.manager() == wire.manager
    {
        drop(TicketHold::claim(wire.ticket));
        return;
    }
    let Ok(address) = wire.address.parse::<Address>() else {
        return;
    };
    if let Ok(link) = Link::find_or_connect(wire.manager, &address)
        && let Ok((obj, label)) = link.attach(wire.ticket)
    {
        drop(ObjRef::client(link, obj, label));
    }
}

/// Shows the object's id, as Python's proxies do: it tells two proxies apart in a log, and
/// grants nothing (a session reaches only the objects it holds, whatever ids it learns).
impl fmt::Debug for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} object {:016x}>", self.label(), self.id())
    }
}

impl Serialize for ObjRef {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.wire()
            .map_err(|e| codec::ser_error::<S::Error>(&format!("cannot send a proxy: {e}")))?
            .serialize(s)
    }
}

/// Serializes any proxy (for the `Serialize` impls of proxies).
#[doc(hidden)]
pub fn serialize_proxy<P: Proxy, S: Serializer>(
    p: &P,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    p.obj_ref().serialize(s)
}

/// Deserializes any proxy (for the `Deserialize` impls of proxies).
#[doc(hidden)]
pub fn deserialize_proxy<'de, P: Proxy, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<P, D::Error> {
    let wire = ProxyWire::deserialize(d)?;
    codec::before_remote_call()?;
    ObjRef::receive::<P>(wire).map_err(|e| codec::de_error(&format!("cannot receive a proxy: {e}")))
}
