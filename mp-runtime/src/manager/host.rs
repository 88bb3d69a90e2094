//! What objects, values and proxies inside a manager's server ask of it, without knowing the
//! server: the server installs itself here when it starts (a process holds at most one).
//!
//! A value the server keeps holds the tickets of the proxies inside it; a proxy decoded inside
//! the server calls its object directly and, when sent on, asks for a ticket. Those need the
//! server's table, which sits above every object type; this interface lets them reach it.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

use super::managed::{Call, Out};
use super::protocol::{ObjId, RemoteError, Ticket};

/// The services of a running server.
pub(crate) trait Host: Send + Sync {
    /// The server's identity, which its proxies carry.
    fn manager(&self) -> u64;
    /// Where the server listens.
    fn address(&self) -> String;
    /// A value kept by object `holder` (0: not known) takes over `ticket`: returns its object.
    fn hold(&self, ticket: Ticket, holder: ObjId) -> Result<ObjId, RemoteError>;
    /// Another copy of a value holds `ticket` again.
    fn hold_again(&self, ticket: Ticket);
    /// A copy of a value holding `ticket` is on its way to a client, which will claim the
    /// ticket (as a transfer, alive until claimed or expired).
    fn lend(&self, ticket: Ticket) -> Result<(), RemoteError>;
    /// A copy of a value holding `ticket`, kept by `holder`, is gone.
    fn unhold(&self, ticket: Ticket, holder: ObjId);
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
    /// Asks that `obj` be told when `session` ends; false if it has ended already.
    fn watch_session(&self, obj: ObjId, session: u64) -> bool;
    /// Whether `session` is open.
    fn session_alive(&self, session: u64) -> bool;
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

/// The session of a call in progress, for an object that keeps something on the caller's
/// behalf (a lock's holder) or waits for it (a blocked `get`): it can ask the server to tell it
/// when that session ends, and check whether it still lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionWatch {
    obj: ObjId,
    session: u64,
    /// The server's end of the caller's connection, open for the whole call.
    connection: Option<RawFd>,
}

impl SessionWatch {
    /// Asks for [`Managed::session_ended`] when the caller's session ends. False if it has
    /// ended already: then the object must not keep anything for it. Calls made by the server
    /// itself (session 0) never end.
    pub(crate) fn watch(&self) -> bool {
        self.session == 0 || current().is_some_and(|h| h.watch_session(self.obj, self.session))
    }

    /// Whether the caller still lives (its process may have died during the call): its
    /// session has not ended, and its connection was not closed by its end. (The connection
    /// says so first: a killed process's sockets close at once, while ending its session waits
    /// for the thread that reads its anchor to run.)
    pub(crate) fn alive(&self) -> bool {
        if self.session == 0 {
            return true;
        }
        if let Some(fd) = self.connection {
            // SAFETY: `fd` is the server's end of the caller's connection, owned by the
            // connection's thread, which is serving this very call and closes it only after
            // the call returns; a `SessionWatch` does not outlive its call.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            if crate::sys::poll::peer_closed(fd) {
                return false;
            }
        }
        current().is_some_and(|h| h.session_alive(self.session))
    }
}

impl SessionWatch {
    /// The session of `call`.
    pub(crate) fn of(call: &Call<'_>) -> SessionWatch {
        SessionWatch {
            obj: call.obj(),
            session: call.caller().session,
            connection: call.connection(),
        }
    }
}
