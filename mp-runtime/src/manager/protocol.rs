//! What travels between a manager's clients and its server: one request frame, at most one reply
//! frame, in order, on each connection.
//!
//! Every frame is an `mp` frame (`transport::frame`) whose payload is a postcard-encoded
//! [`Request`] or [`Reply`]; descriptors inside arguments or results ride with the frame (Unix
//! sockets only). Only closed enums are decoded: a method is an index into a table generated at
//! compile time, a type is a registered name checked against a fingerprint, and nothing in a
//! frame names code to run.

use serde::{Deserialize, Serialize};

/// Identifies an object in a server. Random, never reused: a stale id is
/// [`RemoteError::NoSuchObject`], never another object.
pub(crate) type ObjId = u64;

/// Identifies a proxy in flight between two processes (see `README.md`, "Passing proxies").
pub(crate) type Ticket = u64;

/// The version of this protocol; a server refuses clients of another.
pub(crate) const PROTOCOL: u16 = 1;

/// The first frame on a new connection, after the authentication handshake.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) protocol: u16,
    pub(crate) pid: u32,
    /// `None` opens a new session (a process's first connection to this manager); `Some(id)`
    /// joins the session of another connection of the same process.
    pub(crate) session: Option<u64>,
    /// The client thread this connection calls for (unique within its process, kept when the
    /// thread opens a new connection after a timeout; 0 for the session's anchor): what owns
    /// a re-entrant lock.
    pub(crate) thread: u64,
    /// For a new session of a process forked from one with session `borrow`: the proxies it
    /// inherited in memory use that session's references. (A session id is known only to its
    /// process and the processes forked from it.)
    pub(crate) borrow: Option<u64>,
}

impl Hello {
    /// Reads a `Hello`; one without its last fields (`thread` and `borrow`, which came later)
    /// calls for thread 0 and borrows nothing, so that older clients of the same protocol still
    /// open sessions.
    pub(crate) fn decode(bytes: &[u8]) -> crate::Result<Hello> {
        crate::codec::decode::<Hello>(bytes, Vec::new()).or_else(|e| {
            crate::codec::decode::<(u16, u32, Option<u64>)>(bytes, Vec::new())
                .map(|(protocol, pid, session)| Hello {
                    protocol,
                    pid,
                    session,
                    thread: 0,
                    borrow: None,
                })
                .map_err(|_| e)
        })
    }
}

/// The server's answer to [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Welcome {
    Accepted {
        /// The session this connection belongs to.
        session: u64,
        /// Identifies the server (random per start), so a proxy names the manager it belongs to.
        manager: u64,
    },
    Refused(RemoteError),
}

/// A client's request. Variants with an `id` get exactly one [`Reply`] with that id; the others
/// get none.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Runs method `method` of object `obj` on the encoded argument tuple `args`.
    Call {
        id: u64,
        obj: ObjId,
        method: u16,
        #[serde(borrow, with = "serde_bytes")]
        args: &'a [u8],
    },
    /// Builds an object of registered type `type_name` with constructor `ctor`.
    Create {
        id: u64,
        #[serde(borrow)]
        type_name: &'a str,
        fingerprint: u64,
        /// What the client calls the object's type (e.g. a built-in's element types); kept for
        /// [`Request::Lookup`] to check.
        #[serde(borrow)]
        label: &'a str,
        ctor: u16,
        #[serde(borrow, with = "serde_bytes")]
        args: &'a [u8],
    },
    /// A reference to `obj` for a proxy about to be sent to another process: answers a ticket.
    Retain { id: u64, obj: ObjId },
    /// Claims a ticket: this session gets a reference to the ticket's object.
    Attach { id: u64, ticket: Ticket },
    /// The object published under `name`, if its label is `label`.
    Lookup {
        id: u64,
        #[serde(borrow)]
        name: &'a str,
        #[serde(borrow)]
        label: &'a str,
    },
    /// Publishes `obj` under `name` (the server keeps a reference until shutdown). A name in
    /// use is refused unless `replace` is set and this session published it.
    Expose {
        id: u64,
        #[serde(borrow)]
        name: &'a str,
        obj: ObjId,
        replace: bool,
    },
    /// This session drops `count` references to `obj`. No reply.
    Release { obj: ObjId, count: u32 },
    /// How many objects the server holds.
    Stats { id: u64 },
    /// Stops the server, if `token` is the one the server was started with (which only the
    /// handle that started it knows).
    Shutdown { id: u64, token: u64 },
}

/// The server's answer to one request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply<'a> {
    /// The encoded result.
    Ok {
        id: u64,
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    Err {
        id: u64,
        error: RemoteError,
    },
    /// Sent unasked to every connection when the server shuts down.
    ShuttingDown,
}

/// What went wrong on the server's side of a call. Transport failures are the client's own
/// `mp::Error`s; a managed method's own error type travels inside `Reply::Ok`.
#[doc(hidden)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteError {
    /// The method panicked; the object is still there (and poisoned if the method held it
    /// exclusively).
    Panic {
        method: String,
        message: String,
        location: String,
    },
    /// An earlier call panicked while it held the object exclusively.
    Poisoned,
    /// The object does not exist (any more).
    NoSuchObject,
    /// The type has no method with this index (client and server built from different code).
    NoSuchMethod { type_name: String, method: u16 },
    /// The type is not registered in the server, or its fingerprint differs.
    Incompatible { type_name: String, message: String },
    /// Arguments or result could not be decoded or encoded.
    Codec(String),
    /// The ticket was claimed already, or expired.
    NoSuchTicket,
    /// No object is published under this name.
    NoSuchName(String),
    /// The server refuses more connections.
    Busy,
    /// The request would pass a bound the server keeps (objects or descriptors per session,
    /// descriptors in reserve); the message says which.
    Limit(String),
    /// The server is shutting down.
    ShuttingDown,
    /// The call is not valid in the object's state (releasing an unlocked lock, a full queue
    /// for a non-blocking put, …); the message says what.
    State(String),
    /// A blocking call's timeout passed on the server.
    Timeout,
    /// A registered function run in the server (`modify`) returned `Err`; its text.
    Failed(String),
    /// The request was malformed.
    Protocol(String),
}
