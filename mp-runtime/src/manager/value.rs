//! Values the server keeps without knowing their type.
//!
//! The built-in objects (dict, list, queue, …) are generic in the proxy and type-erased in the
//! server: a client encodes each key or value on its own, and the server stores the bytes, the
//! descriptors they refer to, and the proxies inside them. Three views of one wire form:
//!
//! - [`Encoded`]: a client's value on its way to the server (bytes, owned descriptors, and the
//!   tickets of the proxies it contains, each a reference held for the trip), or through a
//!   managed queue, which carries it as it is;
//! - [`Stored`]: the server's copy, which turns those tickets into references it keeps for as
//!   long as it keeps the value (see `README.md`, "Proxies inside managed values");
//! - [`Received`]: a client's copy of a stored value, decoded into the caller's type.
//!
//! On the wire each is `(bytes, descriptor indices in the message's table, tickets)`.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::host;
use super::protocol::{ObjId, Ticket};
use crate::codec;
use crate::connection::{FdOwned, FdRef};
use crate::error::{Error, Result};

thread_local! {
    /// Tickets of the proxies serialized by the innermost [`Encoded::of`] on this thread.
    static COLLECTOR: RefCell<Option<Vec<Ticket>>> = const { RefCell::new(None) };
    /// Set while [`Encoded::key`] encodes on this thread: a proxy then refuses to serialize
    /// before it asks the server for a ticket (which nobody would claim).
    static ENCODING_KEY: Cell<bool> = const { Cell::new(false) };
}

/// Whether a key is being encoded on this thread (a proxy inside it is refused).
pub(crate) fn encoding_key() -> bool {
    ENCODING_KEY.with(Cell::get)
}

/// Records a proxy's ticket in the value being encoded, if any (called by a proxy's
/// `Serialize`).
pub(crate) fn note_ticket(ticket: Ticket) {
    COLLECTOR.with(|c| {
        if let Some(list) = c.borrow_mut().as_mut() {
            list.push(ticket);
        }
    });
}

/// A value encoded by a client for the server.
#[derive(Debug)]
pub(crate) struct Encoded {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    tickets: Vec<Ticket>,
}

impl Encoded {
    /// Encodes `value`, keeping its descriptors (duplicated) and its proxies' tickets.
    pub(crate) fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let saved = COLLECTOR.with(|c| c.borrow_mut().replace(Vec::new()));
        let result = codec::encode_owned(value);
        let tickets = COLLECTOR.with(|c| std::mem::replace(&mut *c.borrow_mut(), saved));
        let (bytes, fds) = result?;
        Ok(Encoded {
            bytes,
            fds,
            tickets: tickets.unwrap_or_default(),
        })
    }

    /// Encodes `value` as a key: keys are compared by their bytes, so they may not carry
    /// handles or proxies.
    pub(crate) fn key<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
        let saved = ENCODING_KEY.with(|k| k.replace(true));
        let e = Encoded::of(value);
        ENCODING_KEY.with(|k| k.set(saved));
        let refused = || Error::InvalidArgument {
            message: format!(
                "a `{}` cannot be a key of a managed dict or set, or compared with managed \
                 items: keys are compared by their encoding and may not hold handles or proxies",
                std::any::type_name::<T>()
            ),
        };
        let e = match e {
            Ok(e) => e,
            Err(Error::Codec { message, .. }) if message.contains(PROXY_IN_KEY) => {
                return Err(refused());
            }
            Err(other) => return Err(other),
        };
        if !e.fds.is_empty() || !e.tickets.is_empty() {
            return Err(refused());
        }
        Ok(e.bytes)
    }
}

impl<'de> Deserialize<'de> for Encoded {
    /// Keeps the tickets as they are (nobody claims them here): an item passing through a
    /// queue, whose reader claims its proxies.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        Ok(Encoded {
            bytes: w.bytes,
            fds: w.fds.into_iter().map(|f| f.0).collect(),
            tickets: w.tickets,
        })
    }
}

impl Encoded {
    /// Decodes the value; proxies inside it attach to their managers as they are decoded.
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Result<T> {
        codec::decode(&self.bytes, self.fds)
    }
}

/// What a proxy says when it refuses to be part of a key.
pub(crate) const PROXY_IN_KEY: &str = "a proxy cannot be part of a key";

/// The wire form shared by the three views.
#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(with = "serde_bytes")]
    bytes: &'a [u8],
    fds: Vec<FdRef<'a>>,
    tickets: &'a [Ticket],
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    fds: Vec<FdOwned>,
    tickets: Vec<Ticket>,
}

impl Serialize for Encoded {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireOut {
            bytes: &self.bytes,
            fds: self.fds.iter().map(|f| FdRef(f.as_fd())).collect(),
            tickets: &self.tickets,
        }
        .serialize(s)
    }
}

/// The server's copy of a client's value. The references behind its tickets are held by
/// `holds` and given back when the value is dropped.
#[derive(Debug)]
pub(crate) struct Stored {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    holds: Vec<TicketHold>,
}

impl Stored {
    /// A stored value made by the server itself (no descriptors, no proxies).
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Self {
        Stored {
            bytes,
            fds: Vec::new(),
            holds: Vec::new(),
        }
    }

    /// The encoded bytes (for values compared or combined in the server).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the value carries descriptors or proxies (which functions run in the server
    /// cannot be handed).
    pub(crate) fn is_plain(&self) -> bool {
        self.fds.is_empty() && self.holds.is_empty()
    }

    /// Another copy: descriptors duplicated, references held again.
    pub(crate) fn try_clone(&self) -> Result<Self> {
        Ok(Stored {
            bytes: self.bytes.clone(),
            fds: self
                .fds
                .iter()
                .map(|f| f.try_clone().map_err(|e| Error::io("dup", e)))
                .collect::<Result<_>>()?,
            holds: self.holds.iter().map(|h| h.again()).collect(),
        })
    }
}

impl Serialize for Stored {
    /// Runs in the server, for a reply: the copy goes to a client, which claims each ticket as
    /// it decodes the value, so each becomes a transfer in flight. The holds stay with this
    /// copy; a value taken out of its container (`remove`, `pop`) is dropped after it is
    /// encoded, and its proxies still reach the reader.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if let Some(host) = host::current() {
            for h in &self.holds {
                host.lend(h.ticket()).map_err(|e| {
                    codec::ser_error::<S::Error>(&format!(
                        "cannot send a proxy inside a value: {}",
                        super::remote_error(e)
                    ))
                })?;
            }
        }
        let tickets: Vec<Ticket> = self.holds.iter().map(|h| h.ticket()).collect();
        WireOut {
            bytes: &self.bytes,
            fds: self.fds.iter().map(|f| FdRef(f.as_fd())).collect(),
            tickets: &tickets,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stored {
    /// Runs in the server, on a request's arguments: each ticket becomes a reference this value
    /// holds.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        let holds = w
            .tickets
            .into_iter()
            .map(TicketHold::claim)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| codec::de_error(&e.to_string()))?;
        Ok(Stored {
            bytes: w.bytes,
            fds: w.fds.into_iter().map(|f| f.0).collect(),
            holds,
        })
    }
}

/// A client's copy of a value the server sent.
#[derive(Debug)]
pub(crate) struct Received {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Received {
    /// Decodes the value; proxies inside it attach to their managers as they are decoded.
    pub(crate) fn decode<T: DeserializeOwned>(self) -> Result<T> {
        codec::decode(&self.bytes, self.fds)
    }
}

impl<'de> Deserialize<'de> for Received {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        Ok(Received {
            bytes: w.bytes,
            fds: w.fds.into_iter().map(|f| f.0).collect(),
        })
    }
}

/// A reference that a value kept in the server holds through a ticket (see `server/table.rs`).
#[derive(Debug)]
pub(crate) struct TicketHold {
    ticket: Ticket,
    obj: ObjId,
    /// The object known to keep the value (0: unknown, which counts as a root).
    holder: ObjId,
}

impl TicketHold {
    /// Takes over `ticket` for a value the server keeps.
    pub(crate) fn claim(ticket: Ticket) -> Result<TicketHold> {
        let host = host::current().ok_or_else(|| {
            Error::protocol("a stored manager value can only be decoded in its server")
        })?;
        let holder = super::holder::current();
        let obj = host.hold(ticket, holder).map_err(super::remote_error)?;
        Ok(TicketHold {
            ticket,
            obj,
            holder,
        })
    }

    /// Another hold on the same ticket (a copy of the value, whose keeper is not known: it
    /// counts as a root).
    pub(crate) fn again(&self) -> TicketHold {
        if let Some(host) = host::current() {
            host.hold_again(self.ticket);
        }
        TicketHold {
            ticket: self.ticket,
            obj: self.obj,
            holder: 0,
        }
    }

    pub(crate) fn ticket(&self) -> Ticket {
        self.ticket
    }

    pub(crate) fn obj(&self) -> ObjId {
        self.obj
    }
}

impl Drop for TicketHold {
    fn drop(&mut self) {
        if let Some(host) = host::current() {
            host.unhold(self.ticket, self.holder);
        }
    }
}
