//! `Listener` and `Client`: authenticated connections between unrelated processes, over Unix
//! sockets (a path, or a Linux abstract name) or TCP (Python's `multiprocessing.connection`).
//!
//! Both sides prove that they know the authkey with an HMAC-SHA256 challenge in each direction
//! before any message is exchanged. A wrong key is [`Error::Authentication`] on both sides, and
//! a listener keeps accepting after a failed handshake. A peer that connects and then says
//! nothing is given [`HANDSHAKE_TIMEOUT`] (or what is left of an `accept_timeout`), so it cannot
//! block a listener forever.

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::sys::poll::{Deadline, wait_readable};
use crate::transport::auth::{client_handshake, serve_handshake};

/// How long `accept` and `connect` wait for the peer's side of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a handshake on `fd` with receive and send timeouts of `limit`; a peer that stays silent
/// that long is [`Error::Timeout`].
fn handshake_within(
    fd: BorrowedFd<'_>,
    limit: Duration,
    handshake: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    use nix::sys::time::TimeVal;
    let set = |d: Duration| -> Result<()> {
        let tv = TimeVal::new(
            d.as_secs().min(i64::MAX as u64) as i64,
            i64::from(d.subsec_micros()),
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv)
            .and_then(|()| setsockopt(&fd, sockopt::SendTimeout, &tv))
            .map_err(|e| Error::sys("set handshake timeout", e))
    };
    // A zero timeval means "no timeout" to the kernel: round up to 1 ms.
    set(limit.max(Duration::from_millis(1)))?;
    let result = handshake().map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
            Error::Timeout
        }
        e => e,
    });
    set(Duration::ZERO)?;
    result
}

/// Where a [`Listener`] listens and a [`Client`] connects.
///
/// Parsed from a string: `"/path/to/socket"` or `"unix:/path"` is a Unix socket in the
/// filesystem, `"@name"` (or `"\0name"`) a Linux abstract socket, anything else `"host:port"` a
/// TCP address.
///
/// ```
/// use mp::Address;
/// assert!(matches!("127.0.0.1:0".parse::<Address>()?, Address::Tcp(_)));
/// assert!(matches!("/tmp/mp.sock".parse::<Address>()?, Address::Unix(_)));
/// assert!(matches!("@mp-demo".parse::<Address>()?, Address::Abstract(_)));
/// assert!("no port".parse::<Address>().is_err());
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket at a filesystem path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket (no file; gone when the listener closes).
    Abstract(Vec<u8>),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix('\0')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Address::Unix(path.into()));
        }
        if s.starts_with('/') || s.starts_with("./") {
            return Ok(Address::Unix(s.into()));
        }
        let mut addrs = s.to_socket_addrs().map_err(|e| Error::InvalidArgument {
            message: format!(
                "`{s}` is not an address: use \"host:port\", \"/path\", or \"@abstract-name\" ({e})"
            ),
        })?;
        addrs
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| Error::InvalidArgument {
                message: format!("`{s}` resolves to no address"),
            })
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Unix(p)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Anything that names an [`Address`]: an `Address`, a string, a `SocketAddr`, a `PathBuf`.
pub trait IntoAddress {
    /// The address.
    fn into_address(self) -> Result<Address>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address> {
        self.parse()
    }
}

impl IntoAddress for SocketAddr {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Tcp(self))
    }
}

impl IntoAddress for PathBuf {
    fn into_address(self) -> Result<Address> {
        Ok(Address::Unix(self))
    }
}

enum Socket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Accepts authenticated connections (Python's `multiprocessing.connection.Listener`).
///
/// ```
/// let listener = mp::Listener::bind("127.0.0.1:0", b"secret")?;
/// let address = listener.address().clone();
/// let t = std::thread::spawn(move || {
///     let c = mp::Client::connect::<String>(address, b"secret")?;
///     c.send(&"hello".to_string())
/// });
/// let conn = listener.accept::<String>()?;
/// assert_eq!(conn.recv()?, "hello");
/// t.join().unwrap()?;
///
/// // A client with the wrong key is refused on both sides; the listener keeps working.
/// let address = listener.address().clone();
/// let t = std::thread::spawn(move || mp::Client::connect::<String>(address, b"guess").map(|_| ()));
/// assert!(matches!(listener.accept::<String>(), Err(mp::Error::Authentication { .. })));
/// assert!(matches!(t.join().unwrap(), Err(mp::Error::Authentication { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Vec<u8>,
    unlink: Option<PathBuf>,
}

impl Listener {
    /// Listens on `address` (`"host:port"`, port 0 picks a free one; `"/path"`; `"@name"`),
    /// accepting clients that know `authkey`. An empty key is allowed; the handshake still runs.
    /// An address already in use is [`Error::Io`] (`AddrInUse`).
    pub fn bind(address: impl IntoAddress, authkey: impl AsRef<[u8]>) -> Result<Listener> {
        let address = address.into_address()?;
        let (socket, address, unlink) = match address {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(|e| Error::io("bind", e))?;
                let bound = l.local_addr().map_err(|e| Error::io("local_addr", e))?;
                (Socket::Tcp(l), Address::Tcp(bound), None)
            }
            Address::Unix(p) => {
                let l = UnixListener::bind(&p).map_err(|e| Error::io("bind", e))?;
                (Socket::Unix(l), Address::Unix(p.clone()), Some(p))
            }
            Address::Abstract(n) => {
                let a = UnixSocketAddr::from_abstract_name(&n).map_err(|e| Error::io("bind", e))?;
                let l = UnixListener::bind_addr(&a).map_err(|e| Error::io("bind", e))?;
                (Socket::Unix(l), Address::Abstract(n), None)
            }
        };
        // Non-blocking, so that a client taken by another thread between our poll and our
        // accept sends this accept back to poll (and its deadline) instead of blocking it.
        let listener = Listener {
            socket,
            address,
            authkey: authkey.as_ref().to_vec(),
            unlink,
        };
        match &listener.socket {
            Socket::Unix(l) => l.set_nonblocking(true),
            Socket::Tcp(l) => l.set_nonblocking(true),
        }
        .map_err(|e| Error::io("make the listening socket non-blocking", e))?;
        Ok(listener)
    }

    /// The address clients connect to (with the actual port when bound to port 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a client, authenticates it and returns the connection. A failed handshake is
    /// [`Error::Authentication`] for this call only; call `accept` again for the next client.
    pub fn accept<T>(&self) -> Result<Connection<T>> {
        self.accept_until(Deadline::NEVER)
    }

    /// Like [`accept`](Listener::accept), giving up with [`Error::Timeout`] when no client has
    /// connected and authenticated within `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let l = mp::Listener::bind("127.0.0.1:0", b"key")?;
    /// assert!(matches!(
    ///     l.accept_timeout::<u8>(Duration::from_millis(10)),
    ///     Err(mp::Error::Timeout)
    /// ));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<Connection<T>> {
        self.accept_until(Deadline::after(Some(timeout)))
    }

    fn accept_until<T>(&self, deadline: Deadline) -> Result<Connection<T>> {
        let (fd, tcp): (OwnedFd, bool) = loop {
            let ready =
                wait_readable(&[self.as_fd()], deadline).map_err(|e| Error::io("poll", e))?;
            if !ready[0] {
                return Err(Error::Timeout);
            }
            let r = match &self.socket {
                Socket::Unix(l) => l.accept().map(|(s, _)| (OwnedFd::from(s), false)),
                Socket::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    (OwnedFd::from(s), true)
                }),
            };
            match r {
                // The accepted socket blocks: on Linux it does not inherit O_NONBLOCK.
                Ok(v) => break v,
                // Another thread took the client, or it left before we got to it.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io("accept", e)),
            }
        };
        let limit = deadline.remaining().unwrap_or(HANDSHAKE_TIMEOUT);
        handshake_within(fd.as_fd(), limit, || {
            serve_handshake(fd.as_fd(), &self.authkey)
        })?;
        Ok(Connection::from_socket(fd, tcp))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = &self.unlink {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.socket {
            Socket::Unix(l) => l.as_fd(),
            Socket::Tcp(l) => l.as_fd(),
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Listener {}>", self.address)
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
pub struct Client;

impl Client {
    /// Connects to `address` and authenticates with `authkey`; [`Error::Authentication`] if
    /// the listener uses another key, [`Error::Timeout`] if the peer does not complete the
    /// handshake within [`HANDSHAKE_TIMEOUT`].
    pub fn connect<T>(
        address: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
    ) -> Result<Connection<T>> {
        let (fd, tcp) = match address.into_address()? {
            Address::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(|e| Error::io("connect", e))?;
                let _ = s.set_nodelay(true);
                (OwnedFd::from(s), true)
            }
            Address::Unix(p) => (
                OwnedFd::from(UnixStream::connect(p).map_err(|e| Error::io("connect", e))?),
                false,
            ),
            Address::Abstract(n) => {
                let a =
                    UnixSocketAddr::from_abstract_name(&n).map_err(|e| Error::io("connect", e))?;
                (
                    OwnedFd::from(
                        UnixStream::connect_addr(&a).map_err(|e| Error::io("connect", e))?,
                    ),
                    false,
                )
            }
        };
        handshake_within(fd.as_fd(), HANDSHAKE_TIMEOUT, || {
            client_handshake(fd.as_fd(), authkey.as_ref())
        })?;
        Ok(Connection::from_socket(fd, tcp))
    }
}
