//! The manager server: a process of this binary in the manager role (an internal worker, so it
//! starts under any start method, dies with its parent and reports like any child).
//!
//! One thread accepts connections (the `Listener` runs the HMAC handshake, with a deadline and
//! a cap on handshakes in progress); each authenticated connection gets a thread of its own
//! (`session.rs`), which reads a request, runs it and replies, in order. The bookkeeping of
//! objects and references is in `table.rs`.

mod limits;
mod session;
mod table;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::table::Table;
use super::host::{self, Host};
use super::managed::{Call, Caller, Out, TypeEntry};
use super::protocol::{ObjId, RemoteError, Ticket};
use super::proxy::ProxyWire;
use crate::codec;
use crate::connection::{Connection, FdOwned};
use crate::listener::{Address, Listener};
use crate::worker::{Input, Outcome};

/// The registered name of the server's entry (listed in the role table).
pub(crate) const SERVER_WORKER: &str = "mp::manager::server";

/// How the server is set up (sent by the process that starts it).
#[derive(Serialize, Deserialize)]
pub(crate) struct Config {
    /// Where to listen (`Address`'s text form); `None` picks a fresh abstract name.
    pub(crate) address: Option<String>,
    pub(crate) authkey: Vec<u8>,
    /// A registered worker (name, encoded arguments) to run before serving.
    pub(crate) initializer: Option<(String, Vec<u8>)>,
    /// How long a proxy in flight keeps its object alive unclaimed.
    pub(crate) ticket_ttl: Duration,
    /// The most connections served at once.
    pub(crate) max_connections: usize,
    /// What one client process may hold and open (defaults filled in by the server).
    pub(crate) session_limits: limits::SessionLimitSettings,
    /// What `Shutdown` must carry: only the handle that started the server knows it.
    pub(crate) owner_token: u64,
}

pub(crate) use limits::SessionLimitSettings;
use limits::SessionLimits;

/// What the server reports to the process that started it: its address and identity, or why
/// it cannot serve.
pub(crate) type Ready = std::result::Result<(String, u64), String>;

/// The arguments of [`SERVER_WORKER`]: the report connection, the config, and the
/// initializer's descriptors.
pub(crate) type ServerArgs = (Connection<Ready>, Config, Vec<FdOwned>);

/// The running server, in the server process.
pub(crate) struct Server {
    /// Random per start: names this server in the proxies it hands out.
    pub(crate) manager: u64,
    pub(crate) address: Address,
    table: Mutex<Table>,
    ticket_ttl: Duration,
    max_connections: usize,
    session_limits: SessionLimits,
    descriptors: limits::Descriptors,
    owner_token: u64,
    /// Connections admitted (from the moment they authenticated, before their `Hello`) and not
    /// yet ended: what `max_connections` bounds.
    admitted: std::sync::atomic::AtomicUsize,
    /// Live connections: their session, and a copy of the socket to tell them about shutdown.
    conns: Mutex<HashMap<u64, (u64, OwnedFd)>>,
    next_conn: AtomicU64,
    stopping: AtomicBool,
    stopped: (Mutex<bool>, Condvar),
}

/// The entry function of [`SERVER_WORKER`].
pub(crate) fn entry(input: Input<'_>) -> Outcome {
    let (report, config, init_fds): ServerArgs = match codec::decode(input.bytes, input.fds) {
        Ok(a) => a,
        Err(e) => {
            return Outcome::Failed {
                message: format!("manager server started with bad arguments: {e}"),
            };
        }
    };
    // Ctrl-C reaches the whole process group; the program that owns the manager decides.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    super::panic::install_hook();
    // The server holds its clients' data for long: memory they free goes back to the system.
    crate::sys::malloc::give_back_eagerly();
    match serve(&report, config, init_fds) {
        Ok(()) => Outcome::Returned {
            bytes: Vec::new(),
            fds: Vec::new(),
        },
        Err(message) => {
            let _ = report.send(&Err(message.clone()));
            Outcome::Failed { message }
        }
    }
}

fn serve(
    report: &Connection<Ready>,
    config: Config,
    init_fds: Vec<FdOwned>,
) -> std::result::Result<(), String> {
    if let Some((name, args)) = &config.initializer {
        run_initializer(name, args, init_fds.into_iter().map(|f| f.0).collect())?;
    }
    let address = match &config.address {
        Some(a) => a.parse::<Address>().map_err(|e| e.to_string())?,
        None => Address::Abstract(fresh_name().into_bytes()),
    };
    limits::raise_descriptor_limit();
    let descriptors = limits::Descriptors::measure(config.max_connections);
    let listener = Listener::bind(address, &config.authkey).map_err(|e| e.to_string())?;
    let mut id = [0u8; 8];
    crate::sys::random_bytes(&mut id).map_err(|e| e.to_string())?;
    let server = Arc::new(Server {
        manager: u64::from_le_bytes(id),
        address: listener.address().clone(),
        table: Mutex::new(Table::default()),
        ticket_ttl: config.ticket_ttl,
        max_connections: config.max_connections,
        session_limits: SessionLimits::resolve(
            config.session_limits,
            config.max_connections,
            &descriptors,
        ),
        descriptors,
        owner_token: config.owner_token,
        admitted: std::sync::atomic::AtomicUsize::new(0),
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
        stopped: (Mutex::new(false), Condvar::new()),
    });
    host::install(server.clone());
    report
        .send(&Ok((server.address.to_string(), server.manager)))
        .map_err(|e| e.to_string())?;
    let acceptor = server.clone();
    std::thread::Builder::new()
        .name("mp-manager-accept".into())
        .spawn(move || acceptor.accept_loop(listener))
        .map_err(|e| e.to_string())?;
    let reaper = server.clone();
    std::thread::Builder::new()
        .name("mp-manager-tickets".into())
        .spawn(move || reaper.expire_loop())
        .map_err(|e| e.to_string())?;
    server.wait_stopped();
    Ok(())
}

fn fresh_name() -> String {
    let mut nonce = [0u8; 8];
    let _ = crate::sys::random_bytes(&mut nonce);
    format!(
        "mp-manager-{}-{}",
        std::process::id(),
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn run_initializer(name: &str, args: &[u8], fds: Vec<OwnedFd>) -> std::result::Result<(), String> {
    let f = crate::registry::find(name).map_err(|e| e.to_string())?;
    let name = crate::registry::display_name(name);
    let input = Input {
        bytes: args,
        fds,
        batch: false,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(input))) {
        Ok(Outcome::Returned { .. }) => Ok(()),
        Ok(
            Outcome::Failed { message }
            | Outcome::Codec { message }
            | Outcome::Raised { message, .. },
        ) => Err(format!(
            "the manager's initializer `{name}` failed: {message}"
        )),
        Ok(Outcome::Panicked { .. } | Outcome::Each(_)) | Err(_) => {
            Err(format!("the manager's initializer `{name}` panicked"))
        }
    }
}

/// A connection counted in [`Server::admitted`] until it ends (or its thread fails to start).
struct Admitted(Arc<Server>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Server {
    fn accept_loop(self: Arc<Self>, listener: Listener) {
        let mut backoff = limits::Backoff::default();
        loop {
            let conn = match listener.accept::<()>() {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors: the waiting client stays in the backlog; try again
                    // a little later rather than spin on the same error.
                    if limits::out_of_descriptors(&e) {
                        backoff.wait();
                    }
                    // A failed handshake concerns that peer only.
                    continue;
                }
            };
            backoff.reset();
            let Ok((fd, tcp)) = conn.into_socket() else {
                continue;
            };
            // Counted from now, before its thread exists: silent connections cannot make the
            // server start more threads than `max_connections`.
            if !limits::admit(&self.admitted, self.max_connections) {
                session::refuse(fd, tcp, RemoteError::Busy);
                continue;
            }
            let admitted = Admitted(self.clone());
            let _ = std::thread::Builder::new()
                .name(super::panic::CONNECTION_THREAD.into())
                .spawn(move || session::serve_connection(&admitted.0, fd, tcp));
        }
    }

    fn expire_loop(self: Arc<Self>) {
        let period = (self.ticket_ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            std::thread::sleep(period);
            let dropped = self.lock().expire(Instant::now());
            drop(dropped);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `session` may create another object: within its bounds, and with descriptors to
    /// spare beyond the reserve. Returns the descriptors open now, to charge what the new
    /// object opens.
    fn may_create(&self, session: u64) -> Result<usize, RemoteError> {
        let usage = self.lock().usage(session);
        let limits = &self.session_limits;
        if usage.objects >= limits.objects {
            return Err(RemoteError::Limit(format!(
                "one process may create at most {} objects that live at once; raise it with \
                 ManagerBuilder::max_objects_per_process",
                limits.objects
            )));
        }
        if usage.fds >= limits.fds {
            return Err(RemoteError::Limit(format!(
                "the objects one process creates may hold at most {} descriptors in the \
                 server (a queue holds 4); raise it with \
                 ManagerBuilder::max_descriptors_per_process",
                limits.fds
            )));
        }
        self.descriptors.spare()
    }

    /// Registers a connection of `session`; why not if the server is stopping or full.
    fn add_conn(&self, session: u64, sock: &OwnedFd) -> std::result::Result<u64, RemoteError> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopping.load(Ordering::Acquire) {
            return Err(RemoteError::ShuttingDown);
        }
        let of_session = conns.values().filter(|(s, _)| *s == session).count();
        if of_session >= self.session_limits.connections {
            return Err(RemoteError::Limit(format!(
                "one process may have at most {} connections (threads calling the manager) at \
                 once; raise it with ManagerBuilder::max_connections_per_process",
                self.session_limits.connections
            )));
        }
        let copy = sock.try_clone().map_err(|_| RemoteError::Busy)?;
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, (session, copy));
        Ok(id)
    }

    fn remove_conn(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Ends `session`: its references go, the objects watching it are told (after the table is
    /// unlocked: they take their own locks), and its other connections are closed.
    fn end_session(&self, session: u64) {
        let (dropped, watchers) = self.lock().end_session(session);
        for object in watchers {
            object.session_ended(session);
        }
        drop(dropped);
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for (s, sock) in conns.values() {
            if *s == session {
                let _ = nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(sock),
                    nix::sys::socket::Shutdown::Both,
                );
            }
        }
    }

    /// Stops serving: tells every connection, drops every object, and lets `entry` return.
    fn stop(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut notice = Vec::new();
        let _ = session::encode_frame(&super::protocol::Reply::ShuttingDown, &mut notice);
        for (_, sock) in conns.values() {
            let _ = nix::sys::socket::send(
                std::os::fd::AsRawFd::as_raw_fd(sock),
                &notice,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            );
        }
        drop(conns);
        let dropped = self.lock().clear();
        drop(dropped);
        let (lock, cv) = &self.stopped;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    fn wait_stopped(&self) {
        let (lock, cv) = &self.stopped;
        let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !*stopped {
            stopped = cv.wait(stopped).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The reply form of a call's result: a new object becomes an entry of the table held by a
    /// transfer ticket, and the caller gets a proxy's wire form to claim it.
    fn finish(&self, out: Out) -> Result<Out, RemoteError> {
        let Some((object, label)) = out.adopt else {
            return Ok(out);
        };
        let ticket = self
            .lock()
            .insert_for_transfer(object, label.clone(), self.ticket_ttl);
        Out::of(&ProxyWire {
            manager: self.manager,
            address: self.address.to_string(),
            ticket,
            label,
        })
    }
}

impl Host for Server {
    fn manager(&self) -> u64 {
        self.manager
    }

    fn address(&self) -> String {
        self.address.to_string()
    }

    fn hold(&self, ticket: Ticket, holder: ObjId) -> Result<ObjId, RemoteError> {
        self.lock().hold(ticket, holder)
    }

    fn hold_again(&self, ticket: Ticket) {
        self.lock().hold_again(ticket)
    }

    fn lend(&self, ticket: Ticket) -> Result<(), RemoteError> {
        self.lock().lend(ticket, self.ticket_ttl)
    }

    fn unhold(&self, ticket: Ticket, holder: ObjId) {
        let dropped = self.lock().unhold(ticket, holder);
        drop(dropped);
    }

    fn retain(&self, obj: ObjId) -> Result<Ticket, RemoteError> {
        self.lock().retain(obj, self.ticket_ttl)
    }

    fn call(
        &self,
        obj: ObjId,
        method: u16,
        args: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<Out, RemoteError> {
        let object = self.lock().get(obj)?;
        let mut call = Call::new(
            args,
            fds,
            Caller {
                session: 0,
                thread: 0,
                tcp: false,
            },
            obj,
        );
        let out = object.dispatch(method, &mut call)?;
        self.finish(out)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn watch_session(&self, obj: ObjId, session: u64) -> bool {
        self.lock().watch(obj, session)
    }

    fn session_alive(&self, session: u64) -> bool {
        self.lock().has_session(session)
    }
}

/// The registered type named `name`: a built-in, or a `#[mp::managed]` type of this binary.
/// (Built-ins are listed directly rather than through `inventory`: the server may run from a
/// constructor of this crate, before this crate's own registrations.)
fn find_type(name: &str) -> Option<&'static TypeEntry> {
    super::builtins::TYPES
        .iter()
        .find(|t| t.name == name)
        .or_else(|| {
            inventory::iter::<TypeEntry>
                .into_iter()
                .find(|t| t.name == name)
        })
}
