//! Managers (Python's `multiprocessing.Manager()`): objects that live in a server process and
//! are used from any process through typed proxies, on this machine or over TCP.
//!
//! ```
//! # fn main() -> mp::Result<()> {
//! let manager = mp::Manager::start()?;
//! let scores = manager.dict::<String, u32>()?;
//! scores.set(&"ada".to_string(), &36)?;
//! assert_eq!(scores.get(&"ada".to_string())?, Some(36));
//! assert_eq!(manager.number_of_objects()?, 1);
//! manager.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! How it differs from Python's, and why (the design is in this module's `README.md`):
//!
//! - **Typed.** Proxies are generated from the real type (`#[mp::managed]`), so they never
//!   lack a method, and every argument and result is checked at compile time. Every proxy
//!   method returns `mp::Result`; a method's own error type stays inside it.
//! - **No lost updates.** `get` returns an owned copy and nothing looks like a reference into
//!   the server, so Python's `d['k'].append(x)` (which changes a copy) cannot be written;
//!   changes happen in the server: nested proxies (`DictProxy<K, ListProxy<T>>`), a registered
//!   function applied to an entry (`modify`), or the object's own methods.
//! - **No leaks from dead clients.** References belong to the session of the process that holds
//!   them; when it exits or is killed, the server drops them.
//! - **No endless errors once the manager died.** Every call then fails at once with
//!   [`Error::ManagerGone`].
//! - **Nothing runs from the wire.** Methods are indices into tables generated at compile time
//!   and types are registered names; the authkey (HMAC-SHA256 both ways) guards connections,
//!   not code execution.
//! - **Fast.** One connection per client thread, reused by every proxy; a call is one round
//!   trip, with a short spin on both sides instead of a sleep when the other side keeps up.

mod builtins;
mod custom;
mod holder;
pub(crate) mod host;
mod link;
mod managed;
mod panic;
mod protocol;
mod proxy;
pub(crate) mod server;
mod value;
mod wire;

use std::fmt;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::builtins::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListIter, ListProxy, LockProxy, NamespaceProxy, ProxyLockGuard, QueueProxy,
    RLockProxy, SemaphoreProxy, SetOperand, SetProxy, ValueProxy,
};
pub use self::custom::HasProxy;
#[doc(hidden)]
pub use self::custom::{assert_managed, call_method};
pub use self::managed::{Call, Managed, Out, Shared, TypeEntry, fingerprint, label_of};
#[doc(hidden)]
pub use self::protocol::RemoteError;
pub use self::proxy::{ObjRef, Proxy, deserialize_proxy, serialize_proxy};

use self::link::Link;
use crate::codec;
use crate::connection::{FdRef, Pipe, wait};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::listener::{Address, IntoAddress};
use crate::process::{Process, ProcessBuilder};
use crate::worker::Worker;

/// A manager: a handle on a server process that holds shared objects (Python's
/// `multiprocessing.Manager()` / `SyncManager`).
///
/// [`Manager::start`] starts a server for this program; [`Manager::serve`] one that listens on
/// an address other machines can reach; [`Manager::connect`] reaches a running one. The handle
/// that started the server owns it: dropping it (its last clone) or calling
/// [`shutdown`](Manager::shutdown) stops the server. A handle can be sent to other processes
/// (as a worker argument, through a queue), which then create and use objects too.
#[derive(Clone)]
pub struct Manager {
    link: Arc<Link>,
    owner: Option<Arc<Owner>>,
}

/// The server process, for the handle that started it.
struct Owner {
    process: Mutex<Process<()>>,
    link: Arc<Link>,
    shutdown_timeout: Duration,
    /// The token the server stops for; nobody else knows it.
    token: u64,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let p = self.process.get_mut().unwrap_or_else(|p| p.into_inner());
        stop_server(p, self.shutdown_timeout, &self.link, self.token);
    }
}

/// Asks the server to stop, then waits `timeout` for it to exit before SIGTERM, and a last
/// second before SIGKILL (Python's ladder).
fn stop_server(p: &mut Process<()>, timeout: Duration, link: &Link, token: u64) {
    if p.exitcode().is_some() {
        return;
    }
    if link.pid_is_current() {
        let _ = link.shutdown(token);
    }
    if !p.join_timeout(timeout) {
        let _ = p.terminate();
        if !p.join_timeout(Duration::from_secs(1)) {
            let _ = p.kill();
            let _ = p.join_timeout(Duration::from_secs(60));
        }
    }
}

impl Manager {
    /// Starts a manager server for this program, on a private (abstract Unix) address, with
    /// this process's authkey and the default start method.
    pub fn start() -> Result<Manager> {
        Manager::builder().start()
    }

    /// A builder for a server with an initializer, a start method, an address of your choice,
    /// or a shutdown timeout.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Starts a manager server listening on `address` (`"host:port"` for TCP, port 0 for any
    /// free port; a path or `"@name"` for a Unix socket), reachable by every process that knows
    /// `authkey` (Python's remote managers). Publish objects with
    /// [`expose`](Manager::expose); the real address is [`address`](Manager::address).
    ///
    /// An empty `authkey` is refused on a TCP address other than loopback.
    pub fn serve(address: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        Manager::builder()
            .address(address)?
            .authkey(authkey.as_ref())
            .start()
    }

    /// Connects to a running manager (started with [`serve`](Manager::serve) by another
    /// program, or on another machine). The key is also remembered for proxies of that manager
    /// that reach this process later.
    ///
    /// Nothing listening there (or no route to it) is [`Error::Io`] naming the address, as the
    /// OS reported it ("connection refused"); a wrong key is [`Error::Authentication`].
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::serve("127.0.0.1:0", b"key")?;
    /// let address = m.address().to_string();
    /// let client = mp::Manager::connect(&address, b"key")?;
    /// assert_eq!(client.number_of_objects()?, 0);
    /// m.shutdown()?;
    /// let e = mp::Manager::connect(&address, b"key").unwrap_err();
    /// assert!(matches!(e, mp::Error::Io { .. }));
    /// assert!(e.to_string().contains(&address));
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(address: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Result<Manager> {
        let address = address.into_address()?;
        Link::remember_key(&address, authkey.as_ref());
        let link = Link::connect(&address, authkey.as_ref()).map_err(|e| match e {
            Error::Io { context, source } => Error::Io {
                context,
                source: std::io::Error::new(
                    source.kind(),
                    format!("no manager reached at {address}: {source}"),
                ),
            },
            other => other,
        })?;
        Ok(Manager { link, owner: None })
    }

    /// The address the server listens on (with the real port when started on port 0).
    pub fn address(&self) -> &Address {
        self.link.address()
    }

    /// How many objects the server holds (Python's `_number_of_objects()`): objects live while
    /// a proxy, a published name or a value in another object refers to them.
    pub fn number_of_objects(&self) -> Result<usize> {
        self.link()?.number_of_objects()
    }

    /// Publishes `proxy`'s object under `name`, for [`lookup`](Manager::lookup) by other
    /// programs. The server keeps it until it stops. A name already published (by anyone) is
    /// [`Error::InvalidState`], so that no client can take over another's name; publishing the
    /// same object again is fine.
    pub fn expose<P: Proxy>(&self, name: &str, proxy: &P) -> Result<()> {
        self.link()?.expose(name, proxy.obj_ref().id(), false)
    }

    /// Like [`expose`](Manager::expose), replacing the object published as `name` if this
    /// process published it (the old object goes when nothing else refers to it). A name
    /// another process published is [`Error::InvalidState`].
    pub fn expose_replace<P: Proxy>(&self, name: &str, proxy: &P) -> Result<()> {
        self.link()?.expose(name, proxy.obj_ref().id(), true)
    }

    /// The object published as `name`, as a `P` ([`Error::Incompatible`] if it is of another
    /// type; [`Error::InvalidArgument`] if nothing is published under that name).
    pub fn lookup<P: Proxy>(&self, name: &str) -> Result<P> {
        let link = self.link()?;
        let obj = link.lookup(name, &P::label())?;
        Ok(P::from_ref(ObjRef::client(link, obj, P::label())))
    }

    /// Stops the server (only the handle that started it can): every object is dropped, calls
    /// waiting in other processes fail with [`Error::ManagerShutdown`], and the server exits with
    /// code 0, or is terminated after the shutdown timeout. Calling it again is fine.
    pub fn shutdown(&self) -> Result<()> {
        let owner = self.owner.as_ref().ok_or_else(|| {
            Error::state(
                "only the handle that started a manager can shut it down (this one was \
                 connected or received)",
            )
        })?;
        let mut p = owner.process.lock().unwrap_or_else(|p| p.into_inner());
        stop_server(&mut p, owner.shutdown_timeout, &owner.link, owner.token);
        Ok(())
    }

    /// Waits for the server to exit (after a shutdown from anywhere), for a program whose job is
    /// to serve. Only for the handle that started it.
    pub fn join(&self) -> Result<()> {
        let owner = self
            .owner
            .as_ref()
            .ok_or_else(|| Error::state("only the handle that started a manager can join it"))?;
        let mut p = owner.process.lock().unwrap_or_else(|p| p.into_inner());
        if p.exitcode().is_none() {
            let _ = p.join();
        }
        Ok(())
    }

    /// The server's exit code once it has exited (0 after a clean shutdown, `-15` when it had
    /// to be terminated); `None` while it runs or for a handle that did not start it.
    pub fn exitcode(&self) -> Option<i32> {
        self.owner.as_ref().and_then(|o| {
            o.process
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .exitcode()
        })
    }

    /// The server's pid, for the handle that started it.
    pub fn pid(&self) -> Option<i32> {
        self.owner
            .as_ref()
            .and_then(|o| o.process.lock().unwrap_or_else(|p| p.into_inner()).pid())
    }

    fn link(&self) -> Result<Arc<Link>> {
        self.link.current()
    }

    /// Builds an object of managed type `type_name` in the server with constructor `ctor`.
    #[doc(hidden)]
    pub fn create<P: Proxy, A: Serialize + ?Sized>(
        &self,
        type_name: &str,
        fingerprint: u64,
        ctor: u16,
        args: &A,
    ) -> Result<P> {
        let link = self.link()?;
        let label = P::label();
        let obj = link.create(type_name, fingerprint, &label, ctor, args)?;
        Ok(P::from_ref(ObjRef::client(link, obj, label)))
    }

    /// Builds a managed `T` in the server with constructor `ctor` (what `#[mp::managed]`'s
    /// constructors call).
    #[doc(hidden)]
    pub fn create_managed<T: Managed, P: Proxy, A: Serialize + ?Sized>(
        &self,
        ctor: u16,
        args: &A,
    ) -> Result<P> {
        self.create::<P, A>(T::TYPE_NAME, T::FINGERPRINT, ctor, args)
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Manager at {}>", self.link.address())
    }
}

/// A manager handle travels as the server's identity and address: the receiver reaches the same
/// server, with its own session (and does not own the server).
impl Serialize for Manager {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.link.manager(), self.link.address().to_string()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Manager {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (manager, address): (u64, String) = Deserialize::deserialize(d)?;
        codec::before_remote_call()?;
        let connect = || -> Result<Manager> {
            let address: Address = address.parse()?;
            Ok(Manager {
                link: Link::find_or_connect(manager, &address)?,
                owner: None,
            })
        };
        connect().map_err(|e| codec::de_error(&format!("cannot reach the manager: {e}")))
    }
}

/// Arguments encoded for another process: bytes and the descriptors they refer to.
type EncodedArgs = (Vec<u8>, Vec<std::os::fd::OwnedFd>);

/// Builds and starts a [`Manager`] server.
#[derive(Default)]
pub struct ManagerBuilder {
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    /// The initializer's registered name and encoded arguments.
    initializer: Option<(&'static str, Result<EncodedArgs>)>,
    shutdown_timeout: Option<Duration>,
    context: Option<Context>,
    ticket_ttl: Option<Duration>,
    max_connections: Option<usize>,
    session_limits: server::SessionLimitSettings,
}

impl ManagerBuilder {
    /// Where the server listens. Default: a fresh abstract Unix socket only this machine can
    /// reach.
    pub fn address(mut self, address: impl IntoAddress) -> Result<Self> {
        self.address = Some(address.into_address()?);
        Ok(self)
    }

    /// The key clients must prove they know. Default: this process's authkey (which its
    /// children inherit).
    pub fn authkey(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.authkey = Some(key.into());
        self
    }

    /// A registered worker the server runs once before it serves (Python's `initializer`).
    /// If it fails, [`start`](ManagerBuilder::start) returns its error.
    pub fn initializer<W: Worker>(mut self, worker: W, args: W::Args) -> Self {
        self.initializer = Some((worker.name(), codec::encode_owned(&args)));
        self
    }

    /// How long [`Manager::shutdown`] waits for the server to exit before terminating it.
    /// Default: 1 s, as in Python.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// The start method of the server process. Default: the program's default.
    pub fn context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// How long a proxy sent to another process keeps its object alive while nobody has
    /// received it. Default: 60 s.
    pub fn transfer_timeout(mut self, ttl: Duration) -> Self {
        self.ticket_ttl = Some(ttl);
        self
    }

    /// The most connections (one per client thread) the server serves at once; past it a
    /// client gets [`Error::Busy`]. Default: 1024.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// The most connections one client process may have at once (one per thread that calls
    /// the manager, plus one that holds the process's session; and so the most calls it can
    /// have waiting in the server); past it a new
    /// thread's call is [`Error::LimitExceeded`]. Default: a quarter of
    /// [`max_connections`](ManagerBuilder::max_connections), so that no process can take every
    /// connection.
    pub fn max_connections_per_process(mut self, n: usize) -> Self {
        self.session_limits.connections = Some(n);
        self
    }

    /// The most objects one client process may have created that live at once; past it a
    /// create is [`Error::LimitExceeded`]. Default: 100,000.
    pub fn max_objects_per_process(mut self, n: usize) -> Self {
        self.session_limits.objects = Some(n);
        self
    }

    /// The most descriptors the objects one client process created may hold in the server
    /// (a managed queue holds 4); past it a create is [`Error::LimitExceeded`]. Default: half
    /// of what the server can give to objects (its `RLIMIT_NOFILE`, raised to the hard limit
    /// when it starts, less a reserve of two per connection that keeps new clients able to
    /// connect whatever the objects hold).
    pub fn max_descriptors_per_process(mut self, n: usize) -> Self {
        self.session_limits.fds = Some(n);
        self
    }

    /// Starts the server and connects to it.
    pub fn start(self) -> Result<Manager> {
        for (value, name) in [
            (self.max_connections, "max_connections"),
            (
                self.session_limits.connections,
                "max_connections_per_process",
            ),
            (self.session_limits.objects, "max_objects_per_process"),
        ] {
            if value == Some(0) {
                return Err(Error::InvalidArgument {
                    message: format!("ManagerBuilder::{name} must be at least 1"),
                });
            }
        }
        let mut token = [0u8; 8];
        crate::sys::random_bytes(&mut token).map_err(|e| Error::io("getrandom", e))?;
        let token = u64::from_le_bytes(token);
        let authkey = self.authkey.unwrap_or_else(crate::identity::authkey);
        if let Some(Address::Tcp(a)) = &self.address
            && authkey.is_empty()
            && !a.ip().is_loopback()
        {
            return Err(Error::InvalidArgument {
                message: format!(
                    "an empty authkey on {a} would let anyone on the network use the manager; \
                     give a key, or listen on a loopback address"
                ),
            });
        }
        let (initializer, init_fds) = match self.initializer {
            None => (None, Vec::new()),
            Some((name, payload)) => {
                let (bytes, fds) = payload?;
                (Some((name.to_owned(), bytes)), fds)
            }
        };
        let config = server::Config {
            address: self.address.as_ref().map(|a| a.to_string()),
            authkey: authkey.clone(),
            initializer,
            ticket_ttl: self.ticket_ttl.unwrap_or(Duration::from_secs(60)),
            max_connections: self.max_connections.unwrap_or(1024),
            session_limits: self.session_limits,
            owner_token: token,
        };
        let (ours, theirs) = Pipe::<server::Ready>::duplex()?;
        let init_fds: Vec<FdRef<'_>> = init_fds.iter().map(|f| FdRef(f.as_fd())).collect();
        let payload = codec::encode_owned(&(theirs, config, init_fds));
        let mut builder = ProcessBuilder::default().daemon(true);
        if let Some(ctx) = self.context {
            builder = builder.start_method(ctx.start_method());
        }
        let mut process = builder.build_internal(server::SERVER_WORKER, payload);
        process.start()?;
        let ready = {
            let sentinel = process.sentinel()?;
            let ready = wait(&[&ours, &sentinel], Some(Duration::from_secs(60)))?;
            if ready.contains(&0) {
                ours.recv_timeout(Duration::from_secs(60))
            } else if ready.is_empty() {
                Err(Error::Timeout)
            } else {
                Err(Error::Closed)
            }
        };
        let (address, _manager) = match ready {
            Ok(Ok(ready)) => ready,
            Ok(Err(message)) => {
                let _ = process.join_timeout(Duration::from_secs(60));
                return Err(Error::state(format!(
                    "the manager could not start: {message}"
                )));
            }
            Err(e) => {
                let _ = process.kill();
                let _ = process.join_timeout(Duration::from_secs(60));
                return Err(Error::state(format!(
                    "the manager process did not report that it serves: {e}"
                )));
            }
        };
        let address: Address = address.parse()?;
        Link::remember_key(&address, &authkey);
        let link = Link::connect(&address, &authkey)?;
        Ok(Manager {
            link: link.clone(),
            owner: Some(Arc::new(Owner {
                process: Mutex::new(process),
                link,
                shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(1)),
                token,
            })),
        })
    }
}

/// The `mp::Error` for what went wrong in the server.
pub(crate) fn remote_error(e: RemoteError) -> Error {
    match e {
        RemoteError::Panic {
            method,
            message,
            location,
        } => Error::RemotePanic {
            method,
            message,
            location,
        },
        RemoteError::Poisoned => Error::Poisoned,
        RemoteError::NoSuchObject | RemoteError::NoSuchTicket => Error::NoSuchObject,
        RemoteError::NoSuchMethod { type_name, method } => Error::Incompatible {
            type_name,
            message: format!(
                "the manager's program has no method #{method} for it (is the server a \
                 different build?)"
            ),
        },
        RemoteError::Incompatible { type_name, message } => {
            Error::Incompatible { type_name, message }
        }
        RemoteError::Codec(message) => Error::codec(message),
        RemoteError::NoSuchName(name) => Error::InvalidArgument {
            message: format!("the manager publishes no object as `{name}`"),
        },
        RemoteError::Busy => Error::Busy,
        RemoteError::Limit(message) => Error::LimitExceeded { message },
        RemoteError::ShuttingDown => Error::ManagerShutdown,
        RemoteError::State(message) => Error::InvalidState { message },
        RemoteError::Timeout => Error::Timeout,
        RemoteError::Failed(message) => Error::task_failed(message),
        RemoteError::Protocol(message) => Error::Protocol { message },
    }
}
