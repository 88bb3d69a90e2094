//! What objects, values and proxies inside a manager's server ask of it, without knowing the
//! server: the server installs itself here when it starts (a process holds at most one).
//!
//! A value the server keeps holds the tickets of the proxies inside it; a proxy decoded inside
//! the server calls its object directly and, when sent on, asks for a ticket. Those need the
//! server's table, which sits above every object type; this interface lets them reach it.

use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};

use super::managed::Out;
use super::protocol::{ObjId, RemoteError, Ticket};

/// The services of a running server.
pub(crate) trait Host: Send + Sync {
    /// The server's identity, which its proxies carry.
    fn manager(&self) -> u64;
    /// Where the server listens.
    fn address(&self) -> String;
    /// A value takes over `ticket` (or another copy holds it again): returns its object.
    fn hold(&self, ticket: Ticket) -> Result<ObjId, RemoteError>;
    /// A copy of a value holding `ticket` is gone.
    fn unhold(&self, ticket: Ticket);
    /// A transfer ticket for `obj` (a proxy the server itself sends).
    fn retain(&self, obj: ObjId) -> Result<Ticket, RemoteError>;
    /// Calls method `method` of `obj` from inside the server; a result that is a new object is
    /// already a proxy's wire form.
    fn call(
        &self,
        obj: ObjId,
        method: u16,
        args: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Out, RemoteError>;
    /// Whether the server is shutting down (blocking methods then give up).
    fn stopping(&self) -> bool;
}

static HOST: OnceLock<Arc<dyn Host>> = OnceLock::new();

/// Makes `host` the server of this process.
pub(crate) fn install(host: Arc<dyn Host>) {
    let _ = HOST.set(host);
}

/// The server of this process, if this process is a manager server.
pub(crate) fn current() -> Option<&'static Arc<dyn Host>> {
    HOST.get()
}

/// Whether this process's server is shutting down.
pub(crate) fn stopping() -> bool {
    current().is_some_and(|h| h.stopping())
}
