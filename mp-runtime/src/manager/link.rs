//! A process's side of one manager: its session, its connections, and the calls made on them.
//!
//! A process talks to a manager in one *session*, which owns every reference the process holds:
//! when the session's first connection (the *anchor*, kept by this `Link`) closes, because the
//! process exited, was killed, or dropped its last proxy, the server drops them all. The anchor
//! carries no calls, so the server notices a dead client at once even while one of its calls is
//! blocked (a `q.get()` holds its connection's server thread). Calls go over one connection per
//! thread (opened on the thread's first call and joined to the session), so a call that blocks in
//! one thread never holds up another. A connection belongs to the process that opened it: after
//! `fork` the child opens its own.
//!
//! Once the manager is known to be gone (a connection was refused, or closed under a call), the
//! link is dead: every later call fails at once with [`Error::ManagerGone`] (or
//! [`Error::ManagerShutdown`] after a shutdown), with no reconnection attempts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::{Hello, ObjId, PROTOCOL, Reply, Request, Ticket, Welcome};
use super::wire::Wire;
use crate::codec;
use crate::connection::handoff::Handoff;
use crate::error::{Error, Result};
use crate::global::Global;
use crate::listener::{Address, Client};
use crate::sys::poll::Deadline;
use crate::transport::reader::RawFrame;

const ALIVE: u8 = 0;
const GONE: u8 = 1;
const SHUT_DOWN: u8 = 2;

/// This process's connection state with one manager.
pub(crate) struct Link {
    /// Unique per `Link` in this process (keys the per-thread connections).
    id: u64,
    /// The server's identity.
    manager: u64,
    address: Address,
    authkey: Vec<u8>,
    session: u64,
    pid: u32,
    /// The session's first connection: the session lives as long as it is open.
    anchor: Mutex<Wire>,
    state: AtomicU8,
    /// Whether the manager is reached over TCP (which carries no descriptors).
    tcp: bool,
    /// When [`Link::check_alive`] last looked at the anchor, in ms since `epoch`.
    last_check: AtomicU64,
    epoch: std::time::Instant,
    /// References dropped while no connection could be used; sent before the next request.
    pending_release: Mutex<Vec<ObjId>>,
    next_request: AtomicU64,
    /// A copy of the anchor's descriptor, for waits that should end when the manager dies
    /// (readable once the server closes its end or says it shuts down).
    anchor_copy: OnceLock<Option<OwnedFd>>,
    /// In a process forked from the one that made this link: that process's own link, which
    /// borrows this link's session (kept, so that it lasts as long as the inherited proxies).
    forked: Mutex<Option<Arc<Link>>>,
}

thread_local! {
    /// This thread's connection to each manager it calls, by `Link::id`.
    static WIRES: RefCell<HashMap<u64, Wire>> = RefCell::new(HashMap::new());
    /// This thread's identity for managers (see [`Hello::thread`]).
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// Identities of this process's threads, from 1 (0 is the anchor's).
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

/// The calling thread's identity for managers: the same on every connection it opens, so that
/// what it owns in a server (a re-entrant lock) stays its own after a reconnection.
fn thread_identity() -> u64 {
    THREAD.try_with(|t| *t).unwrap_or(0)
}

/// Links of this process, by manager identity: a proxy arriving from another process finds the
/// session its process already has.
static LINKS: Global<HashMap<u64, Weak<Link>>> = Global::new(HashMap::new);
/// Keys given to `Manager::connect`, by address: a proxy of a manager this process has no link
/// to yet connects with its key (else with this process's authkey).
static KEYS: Global<HashMap<String, Vec<u8>>> = Global::new(HashMap::new);
static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

impl Link {
    /// Opens a new session with the manager at `address`. A connection that cannot be made is
    /// the transport's error, as it came.
    pub(crate) fn connect(address: &Address, authkey: &[u8]) -> Result<Arc<Link>> {
        Link::connect_borrowing(address, authkey, None)
    }

    /// [`connect`](Link::connect), in a process forked from one that has session `borrow`
    /// with this manager: the proxies it inherited in memory keep working through the new
    /// session (their references stay the parent's).
    fn connect_borrowing(
        address: &Address,
        authkey: &[u8],
        borrow: Option<u64>,
    ) -> Result<Arc<Link>> {
        let (wire, session, manager) = open(address, authkey, None, 0, borrow)?;
        let tcp = wire.is_tcp();
        let link = Arc::new(Link {
            id: NEXT_LINK.fetch_add(1, Ordering::Relaxed),
            manager,
            address: address.clone(),
            authkey: authkey.to_vec(),
            session,
            pid: std::process::id(),
            anchor: Mutex::new(wire),
            state: AtomicU8::new(ALIVE),
            tcp,
            last_check: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            pending_release: Mutex::new(Vec::new()),
            next_request: AtomicU64::new(1),
            forked: Mutex::new(None),
            anchor_copy: OnceLock::new(),
        });
        LINKS.lock().insert(manager, Arc::downgrade(&link));
        Ok(link)
    }

    /// Remembers the key for `address`, for proxies of that manager that arrive later.
    pub(crate) fn remember_key(address: &Address, authkey: &[u8]) {
        KEYS.lock().insert(address.to_string(), authkey.to_vec());
    }

    /// This process's link to manager `manager` at `address`: the existing one, or a new
    /// session with the key given to `Manager::connect` for that address, or this process's
    /// authkey.
    pub(crate) fn find_or_connect(manager: u64, address: &Address) -> Result<Arc<Link>> {
        Link::find_or_connect_borrowing(manager, address, None)
    }

    /// [`find_or_connect`](Link::find_or_connect); a new session borrows the references of
    /// session `borrow` (of the process this one was forked from).
    fn find_or_connect_borrowing(
        manager: u64,
        address: &Address,
        borrow: Option<u64>,
    ) -> Result<Arc<Link>> {
        if let Some(link) = LINKS.lock().get(&manager).and_then(Weak::upgrade)
            && link.pid == std::process::id()
        {
            return Ok(link);
        }
        let key = KEYS
            .lock()
            .get(&address.to_string())
            .cloned()
            .unwrap_or_else(crate::identity::authkey);
        // A proxy names a manager that was there: one that cannot be reached now is gone.
        let link = Link::connect_borrowing(address, &key, borrow)
            .map_err(|e| gone_on_connect(e, address))?;
        if link.manager != manager {
            return Err(Error::ManagerGone {
                address: address.to_string(),
            });
        }
        Ok(link)
    }

    /// The link this process should use in place of `self`: `self`, or, in a child forked from
    /// the process that made `self`, the child's own.
    pub(crate) fn current(self: &Arc<Link>) -> Result<Arc<Link>> {
        let pid = std::process::id();
        if self.pid == pid {
            return Ok(self.clone());
        }
        let mut forked = self.forked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = forked.as_ref()
            && link.pid == pid
            && link.dead_error().is_none()
        {
            return Ok(link.clone());
        }
        let link =
            Link::find_or_connect_borrowing(self.manager, &self.address, Some(self.session))?;
        *forked = Some(link.clone());
        Ok(link)
    }

    /// Whether this link was made by the calling process (not inherited through `fork`).
    pub(crate) fn pid_is_current(&self) -> bool {
        self.pid == std::process::id()
    }

    pub(crate) fn manager(&self) -> u64 {
        self.manager
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// Whether the manager is reached over TCP.
    pub(crate) fn is_tcp(&self) -> bool {
        self.tcp
    }

    /// Fails if the manager is known to be gone or shut down. At most once a millisecond it
    /// also looks at the session's anchor (which carries no calls): the server's end of it
    /// closes when the server dies, and says so when it shuts down. For work that does not go
    /// through the server (a native queue), so that it too stops once the manager is gone.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if let Some(e) = self.dead_error() {
            return Err(e);
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        if self.last_check.swap(now, Ordering::Relaxed) == now {
            return Ok(());
        }
        let Ok(mut anchor) = self.anchor.try_lock() else {
            // Someone is using it: that use will notice.
            return Ok(());
        };
        match anchor.recv(Deadline::after(Some(Duration::ZERO))) {
            Err(Error::Timeout) => Ok(()),
            Ok(frame) => {
                drop(anchor);
                match codec::decode_borrowed::<Reply<'_>>(&frame.payload) {
                    Ok(Reply::ShuttingDown) => Err(self.mark(SHUT_DOWN)),
                    _ => Ok(()),
                }
            }
            Err(_) => Err(self.mark(GONE)),
        }
    }

    /// A descriptor that becomes readable when the manager dies or announces its shutdown (a
    /// copy of the anchor's), to wait on beside a native object; then [`Link::check_alive`]
    /// says which. `None` if it could not be copied.
    pub(crate) fn death_fd(&self) -> Option<BorrowedFd<'_>> {
        self.anchor_copy
            .get_or_init(|| {
                let anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
                anchor.fd().try_clone_to_owned().ok()
            })
            .as_ref()
            .map(|fd| fd.as_fd())
    }

    /// The error every call gets once the manager is known to be gone, if it is.
    fn dead_error(&self) -> Option<Error> {
        match self.state.load(Ordering::Acquire) {
            GONE => Some(Error::ManagerGone {
                address: self.address.to_string(),
            }),
            SHUT_DOWN => Some(Error::ManagerShutdown),
            _ => None,
        }
    }

    fn mark(&self, state: u8) -> Error {
        let _ = self
            .state
            .compare_exchange(ALIVE, state, Ordering::AcqRel, Ordering::Acquire);
        self.dead_error().unwrap_or(Error::ManagerShutdown)
    }

    /// Sends `request` (built with a fresh id) on this thread's connection, with the
    /// descriptors its arguments refer to, and returns the reply's payload, decoded as `R`.
    pub(crate) fn request<'r, R: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
        fds: &[RawFd],
        build: impl FnOnce(u64) -> Request<'r>,
    ) -> Result<R> {
        if let Some(e) = self.dead_error() {
            return Err(e);
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request = build(id);
        let deadline = Deadline::after(timeout);
        let frame = self.with_wire(|wire| {
            wire.send_with_fds(&request, fds)?;
            loop {
                let frame = wire.recv(deadline)?;
                match codec::decode_borrowed::<Reply<'_>>(&frame.payload) {
                    // A late reply to a call this connection gave up on: not ours.
                    Ok(Reply::Ok { id: got, .. }) | Ok(Reply::Err { id: got, .. }) if got != id => {
                    }
                    _ => return Ok(frame),
                }
            }
        })?;
        self.decode_reply(frame)
    }

    fn decode_reply<R: DeserializeOwned>(&self, frame: RawFrame) -> Result<R> {
        match codec::decode_borrowed::<Reply<'_>>(&frame.payload) {
            Ok(Reply::Ok { value, .. }) => codec::decode(value, frame.fds),
            Ok(Reply::Err { error, .. }) => Err(super::remote_error(error)),
            Ok(Reply::ShuttingDown) => Err(self.mark(SHUT_DOWN)),
            Err(e) => Err(Error::protocol(format!(
                "the manager sent a malformed reply: {e}"
            ))),
        }
    }

    /// Sends a one-way message (no reply) on this thread's connection.
    fn send_one_way(&self, request: &Request<'_>) -> Result<()> {
        self.with_wire(|wire| wire.send(request))
    }

    /// Runs `f` on this thread's connection (opening it if needed), after sending the releases
    /// that waited. A connection that fails or times out is dropped: the next call opens a new
    /// one, so a late reply can never be taken for another call's.
    fn with_wire<T>(&self, f: impl FnOnce(&mut Wire) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        let result = WIRES.try_with(|wires| {
            let Ok(mut wires) = wires.try_borrow_mut() else {
                // Re-entered (a proxy dropped while decoding a reply on this thread).
                return self.with_anchor(f.take().expect("not used yet"));
            };
            let wire = match wires.entry(self.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let (wire, _, _) = open(
                        &self.address,
                        &self.authkey,
                        Some(self.session),
                        thread_identity(),
                        None,
                    )
                    .map_err(|e| self.lost_on_open(e))?;
                    v.insert(wire)
                }
            };
            self.flush_releases(wire)?;
            match (f.take().expect("not used yet"))(wire) {
                Ok(v) => Ok(v),
                Err(e) => {
                    if out_of_step(&e) {
                        wires.remove(&self.id);
                    }
                    Err(self.lost(e))
                }
            }
        });
        match (result, f) {
            (Ok(r), _) => r,
            // The thread is exiting and its connections are gone: use the anchor.
            (Err(_), Some(f)) => self.with_anchor(f),
            (Err(_), None) => Err(Error::state("this thread's manager connection is gone")),
        }
    }

    fn with_anchor<T>(&self, f: impl FnOnce(&mut Wire) -> Result<T>) -> Result<T> {
        let mut anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        self.flush_releases(&mut anchor)?;
        f(&mut anchor).map_err(|e| self.lost(e))
    }

    /// Maps a transport failure: a closed or refused connection means the manager is gone.
    fn lost(&self, e: Error) -> Error {
        match e {
            Error::Closed => self.mark(GONE),
            Error::Io { ref source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ECONNREFUSED) | Some(libc::ENOENT) | Some(libc::ECONNRESET)
                ) =>
            {
                self.mark(GONE)
            }
            other => other,
        }
    }

    /// Maps a failure to open another connection of this session. The key and the session
    /// worked for the first connection, so a handshake cut short or refused means the server
    /// is gone (or is another process now listening there).
    fn lost_on_open(&self, e: Error) -> Error {
        match e {
            Error::Authentication { .. } | Error::NoSuchObject | Error::Protocol { .. } => {
                self.mark(GONE)
            }
            other => self.lost(other),
        }
    }

    fn flush_releases(&self, wire: &mut Wire) -> Result<()> {
        let pending = std::mem::take(
            &mut *self
                .pending_release
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for obj in pending {
            wire.send(&Request::Release { obj, count: 1 })?;
        }
        Ok(())
    }

    /// Drops one reference of this session to `obj`: a one-way message, or, if it cannot be
    /// sent now, with the next request.
    pub(crate) fn release(&self, obj: ObjId) {
        if self.dead_error().is_some() || self.pid != std::process::id() {
            // A dead manager needs no release; a fork child's inherited proxy is the parent's.
            return;
        }
        if self
            .send_one_way(&Request::Release { obj, count: 1 })
            .is_err()
        {
            self.pending_release
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(obj);
        }
    }

    /// Calls `method` of `obj` with `args`.
    pub(crate) fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        obj: ObjId,
        method: u16,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<R> {
        // Encode first: a proxy inside the arguments makes a request of its own.
        let args = codec::encode(args)?;
        self.request(timeout, &args.fds, |id| Request::Call {
            id,
            obj,
            method,
            args: &args.bytes,
        })
    }

    /// Builds an object of type `type_name` with constructor `ctor`.
    pub(crate) fn create<A: Serialize + ?Sized>(
        &self,
        type_name: &str,
        fingerprint: u64,
        label: &str,
        ctor: u16,
        args: &A,
    ) -> Result<ObjId> {
        let args = codec::encode(args)?;
        self.request(None, &args.fds, |id| Request::Create {
            id,
            type_name,
            fingerprint,
            label,
            ctor,
            args: &args.bytes,
        })
    }

    /// A ticket for a proxy of `obj` about to leave this process.
    pub(crate) fn retain(&self, obj: ObjId) -> Result<Ticket> {
        self.request(None, &[], |id| Request::Retain { id, obj })
    }

    /// Claims `ticket`: this session gets a reference to its object, whose id and label come
    /// back.
    pub(crate) fn attach(&self, ticket: Ticket) -> Result<(ObjId, String)> {
        self.request(None, &[], |id| Request::Attach { id, ticket })
    }

    /// The object published as `name`, checked to have `label`.
    pub(crate) fn lookup(&self, name: &str, label: &str) -> Result<ObjId> {
        self.request(None, &[], |id| Request::Lookup { id, name, label })
    }

    /// Publishes `obj` as `name`.
    pub(crate) fn expose(&self, name: &str, obj: ObjId, replace: bool) -> Result<()> {
        self.request(None, &[], |id| Request::Expose {
            id,
            name,
            obj,
            replace,
        })
    }

    /// How many objects the server holds.
    pub(crate) fn number_of_objects(&self) -> Result<usize> {
        self.request(None, &[], |id| Request::Stats { id })
    }

    /// Asks the server to stop, with the token it was started with; its reply comes before it
    /// exits.
    pub(crate) fn shutdown(&self, token: u64) -> Result<()> {
        let r = self.request::<()>(None, &[], |id| Request::Shutdown { id, token });
        self.state.store(SHUT_DOWN, Ordering::Release);
        match r {
            Ok(()) | Err(Error::ManagerShutdown) | Err(Error::ManagerGone { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut links = LINKS.lock();
        if links
            .get(&self.manager)
            .is_some_and(|w| w.strong_count() == 0)
        {
            links.remove(&self.manager);
        }
        // This thread's connection goes now; other threads' go when they exit (the server
        // closes them when the anchor closes, ending the session).
        let _ = WIRES.try_with(|w| w.try_borrow_mut().map(|mut w| w.remove(&self.id)));
    }
}

/// Whether a failed exchange left the connection unusable (a reply may still come, or the
/// stream is broken), rather than failing before anything was sent.
fn out_of_step(e: &Error) -> bool {
    !matches!(e, Error::InvalidArgument { .. } | Error::Codec { .. })
}

/// A connection that could not be made, for a proxy of a manager that was there, means the
/// manager is gone.
fn gone_on_connect(e: Error, address: &Address) -> Error {
    match e {
        Error::Io { ref source, .. }
            if matches!(
                source.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOENT)
            ) =>
        {
            Error::ManagerGone {
                address: address.to_string(),
            }
        }
        other => other,
    }
}

/// Connects, authenticates and joins `session` (or opens a new one, borrowing the references of
/// session `borrow`), for client thread `thread`.
fn open(
    address: &Address,
    authkey: &[u8],
    session: Option<u64>,
    thread: u64,
    borrow: Option<u64>,
) -> Result<(Wire, u64, u64)> {
    let conn = Client::connect::<()>(address.clone(), authkey)?;
    let (fd, tcp) = conn.into_socket()?;
    let mut wire = Wire::new(fd, tcp);
    let hello = Hello {
        protocol: PROTOCOL,
        pid: std::process::id(),
        session,
        thread,
        borrow,
    };
    // A local connection offers a page of shared memory with its `Hello` (see `wire`).
    let offered = if tcp { None } else { Handoff::pair() };
    match &offered {
        Some((_, _, memory)) => wire.send_with_fds(&hello, &[memory.as_raw_fd()])?,
        None => wire.send(&hello)?,
    }
    let frame = wire.recv(Deadline::after(Some(
        crate::transport::auth::HANDSHAKE_TIMEOUT,
    )))?;
    match codec::decode::<Welcome>(&frame.payload, Vec::new())? {
        Welcome::Accepted { session, manager } => {
            if let Some((ours, _, _)) = offered
                && ours.peer_attached()
            {
                wire.attach(ours);
            }
            Ok((wire, session, manager))
        }
        Welcome::Refused(e) => Err(super::remote_error(e)),
    }
}
