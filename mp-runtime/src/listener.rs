//! `Listener` and `Client`: authenticated connections between unrelated processes, over Unix
//! sockets (a path, or a Linux abstract name) or TCP (Python's `multiprocessing.connection`).
//!
//! Both sides prove that they know the authkey with an HMAC-SHA256 challenge in each direction
//! before any message is exchanged. A wrong key is [`Error::Authentication`] on both sides, and
//! a listener keeps accepting after a failed handshake.
//!
//! A listener runs the handshakes of all the peers that connected at once, advancing each as its
//! bytes arrive, so a peer that is slow or silent delays nobody else: `accept` returns the first
//! peer to complete. Each peer has [`HANDSHAKE_TIMEOUT`] in all to complete (a peer that sends
//! one byte now and then is cut off when it passes), and at most [`MAX_PENDING_HANDSHAKES`] (64)
//! are in progress at once: past that the oldest is dropped, so that a flood of connections that
//! never authenticate cannot lock out a client that does (each new one only evicts the stalest).

use std::collections::VecDeque;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::sys::fd::set_nonblocking;
use crate::sys::poll::Deadline;
use crate::transport::auth::{HANDSHAKE_TIMEOUT, Handshake, Wait, advance, client_handshake_until};

/// The most handshakes a [`Listener`] keeps in progress at once; a connection past that drops
/// the oldest one still in progress.
pub(crate) const MAX_PENDING_HANDSHAKES: usize = 64;

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

impl IntoAddress for &String {
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
///
/// Handshakes run concurrently: `accept` returns the first peer to authenticate, whatever the
/// peers that connected before it do. A peer has [`HANDSHAKE_TIMEOUT`] in all (see
/// [`set_handshake_timeout`](Listener::set_handshake_timeout)); one that has not authenticated
/// by then is disconnected, and one that hangs up halfway is forgotten, without an error to any
/// caller. At most 64 handshakes are in progress at once; a new connection past that
/// disconnects the oldest one. A peer whose handshake fails (wrong key, not an `mp` peer) is
/// [`Error::Authentication`] for one `accept` call. Several threads may call `accept` on one listener; each connection goes to one of them.
pub struct Listener {
    socket: Socket,
    address: Address,
    authkey: Vec<u8>,
    unlink: Option<PathBuf>,
    handshake_timeout: Duration,
    accepting: Mutex<Accepting>,
    /// Signalled when the thread advancing the handshakes stops doing so.
    turn: Condvar,
}

/// The handshakes of a listener, advanced by one `accept` call at a time.
#[derive(Default)]
struct Accepting {
    /// An `accept` call is advancing the handshakes (it holds `pending` meanwhile).
    driving: bool,
    /// Connections whose handshake is in progress, oldest first.
    pending: VecDeque<Pending>,
    /// Handshakes that ended, for the next `accept` calls: the connection, or why it failed.
    ended: VecDeque<Result<OwnedFd>>,
}

/// A connection whose handshake is in progress (its socket is non-blocking meanwhile).
struct Pending {
    fd: OwnedFd,
    hs: Handshake,
    wait: Wait,
    /// When the peer is cut off if it has not completed its side.
    deadline: Instant,
    /// Who connected, for the event of a failed handshake (a peer that gave up has no address
    /// left to ask the socket for by then).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    peer: Peer,
}

/// The address a connection came from, as `accept` gave it.
enum Peer {
    Unix(std::os::unix::net::SocketAddr),
    Tcp(std::net::SocketAddr),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix(a) => match (a.as_pathname(), a.as_abstract_name()) {
                (Some(p), _) => write!(f, "{}", p.display()),
                (None, Some(n)) => write!(f, "@{}", String::from_utf8_lossy(n)),
                (None, None) => f.write_str("unnamed"),
            },
        }
    }
}

/// Gives up the role of advancing handshakes when dropped (on a panic too), handing back the
/// handshakes in progress and waking the callers waiting for the role.
struct Turn<'a> {
    listener: &'a Listener,
    pending: VecDeque<Pending>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut st = self.listener.lock();
        st.driving = false;
        st.pending = std::mem::take(&mut self.pending);
        drop(st);
        self.listener.turn.notify_all();
    }
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
            handshake_timeout: HANDSHAKE_TIMEOUT,
            accepting: Mutex::new(Accepting::default()),
            turn: Condvar::new(),
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

    /// How long, in all, a peer that connects has to complete its side of the handshake
    /// (default [`HANDSHAKE_TIMEOUT`]); applies to connections accepted from now on.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    fn lock(&self) -> MutexGuard<'_, Accepting> {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn accept_until<T>(&self, deadline: Deadline) -> Result<Connection<T>> {
        let tcp = matches!(self.socket, Socket::Tcp(_));
        let mut st = self.lock();
        loop {
            if let Some(ended) = st.ended.pop_front() {
                return ended.map(|fd| Connection::from_socket(fd, tcp));
            }
            if !st.driving {
                // This call advances the handshakes until one ends or its deadline passes.
                st.driving = true;
                let mut turn = Turn {
                    listener: self,
                    pending: std::mem::take(&mut st.pending),
                };
                drop(st);
                let ended = self.drive(&mut turn.pending, deadline);
                drop(turn);
                st = self.lock();
                st.ended.extend(ended);
                if st.ended.is_empty() && deadline.passed() {
                    return Err(Error::Timeout);
                }
                continue;
            }
            // Another call is advancing them: wait for it to hand over, or for our deadline.
            st = match deadline.remaining() {
                None => self.turn.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(left) if left.is_zero() => return Err(Error::Timeout),
                Some(left) => {
                    self.turn
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Accepts connections and advances their handshakes until at least one ends (returned,
    /// oldest first) or `deadline` passes (nothing returned). Peers past their own deadline are
    /// disconnected on the way.
    fn drive(&self, pending: &mut VecDeque<Pending>, deadline: Deadline) -> Vec<Result<OwnedFd>> {
        let mut ended = Vec::new();
        loop {
            let now = Instant::now();
            pending.retain(|p| {
                let in_time = p.deadline > now;
                if !in_time {
                    crate::log::event!(
                        warn,
                        peer = %p.peer,
                        "a peer did not complete the handshake in time; disconnected"
                    );
                }
                in_time
            });
            let mut left = deadline.remaining();
            for p in pending.iter() {
                let rest = p.deadline.saturating_duration_since(now);
                left = Some(left.map_or(rest, |l| l.min(rest)));
            }
            let mut fds = Vec::with_capacity(1 + pending.len());
            fds.push(PollFd::new(self.as_fd(), PollFlags::POLLIN));
            for p in pending.iter() {
                let events = match p.wait {
                    Wait::Write => PollFlags::POLLOUT,
                    _ => PollFlags::POLLIN,
                };
                fds.push(PollFd::new(p.fd.as_fd(), events));
            }
            match poll(&mut fds, poll_timeout(left)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    ended.push(Err(Error::io("poll", e)));
                    return ended;
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            for i in (0..pending.len()).rev() {
                if !ready[1 + i] {
                    continue;
                }
                let mut p = pending.remove(i).expect("index in range");
                let step = advance(p.fd.as_fd(), &mut p.hs);
                settle(p, step, pending, i, &mut ended);
            }
            // Found newest first.
            ended.reverse();
            if ready[0] {
                self.accept_waiting(pending, &mut ended);
            }
            if !ended.is_empty() || deadline.passed() {
                return ended;
            }
        }
    }

    /// Accepts the connections waiting in the backlog (at most a bound's worth per call) and
    /// sends each its challenge.
    fn accept_waiting(&self, pending: &mut VecDeque<Pending>, ended: &mut Vec<Result<OwnedFd>>) {
        for _ in 0..MAX_PENDING_HANDSHAKES {
            let accepted = match &self.socket {
                Socket::Unix(l) => l.accept().map(|(s, a)| (OwnedFd::from(s), Peer::Unix(a))),
                Socket::Tcp(l) => l.accept().map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (OwnedFd::from(s), Peer::Tcp(a))
                }),
            };
            let (fd, peer) = match accepted {
                Ok(fd) => fd,
                // Another thread took the client, or it left before we got to it.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    ended.push(Err(Error::io("accept", e)));
                    return;
                }
            };
            let started = set_nonblocking(fd.as_fd(), true)
                .map_err(|e| Error::io("make an accepted socket non-blocking", e))
                .and_then(|()| Handshake::server(&self.authkey));
            let mut hs = match started {
                Ok(hs) => hs,
                Err(e) => {
                    ended.push(Err(e));
                    continue;
                }
            };
            // Sends the challenge now: the peer waits for it. A quick peer may answer while
            // this step still reads, and the handshake may even end in it.
            let step = advance(fd.as_fd(), &mut hs);
            if matches!(step, Ok(Wait::Read | Wait::Write))
                && pending.len() >= MAX_PENDING_HANDSHAKES
            {
                pending.pop_front();
            }
            let p = Pending {
                fd,
                hs,
                wait: Wait::Read,
                deadline: Instant::now() + self.handshake_timeout,
                peer,
            };
            settle(p, step, pending, pending.len(), ended);
        }
    }
}

/// What becomes of a connection after a step of its handshake: a finished one is ready (to
/// `ended`), one still going goes back to `pending` at `at` (oldest first), a failed one ends
/// with its error, and one whose peer hung up halfway is dropped (no one's business).
fn settle(
    mut p: Pending,
    step: Result<Wait>,
    pending: &mut VecDeque<Pending>,
    at: usize,
    ended: &mut Vec<Result<OwnedFd>>,
) {
    match step {
        Ok(Wait::Finished) => ended.push(ready_connection(p.fd)),
        Ok(wait) => {
            p.wait = wait;
            pending.insert(at.min(pending.len()), p);
        }
        Err(Error::Closed) => {}
        Err(e) => {
            crate::log::event!(
                warn,
                peer = %p.peer,
                error = %e,
                "handshake with a connecting peer failed"
            );
            ended.push(Err(e));
        }
    }
}

/// An authenticated socket, made blocking again as a [`Connection`] expects.
fn ready_connection(fd: OwnedFd) -> Result<OwnedFd> {
    set_nonblocking(fd.as_fd(), false)
        .map_err(|e| Error::io("make an accepted socket blocking", e))?;
    Ok(fd)
}

/// A poll(2) timeout for `left` (`None`: forever), rounded up to whole milliseconds so that a
/// wait never ends before its deadline.
fn poll_timeout(left: Option<Duration>) -> PollTimeout {
    match left {
        None => PollTimeout::NONE,
        Some(left) => {
            let ms = left.as_nanos().div_ceil(1_000_000);
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
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
    /// the listener uses another key, [`Error::Timeout`] if connecting and the handshake do not
    /// complete within [`HANDSHAKE_TIMEOUT`] in all (a listener that answers one byte now and
    /// then is cut off when it passes).
    pub fn connect<T>(
        address: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
    ) -> Result<Connection<T>> {
        Client::connect_within(address, authkey, HANDSHAKE_TIMEOUT)
    }

    /// [`connect`](Client::connect) within `limit` in all.
    pub(crate) fn connect_within<T>(
        address: impl IntoAddress,
        authkey: impl AsRef<[u8]>,
        limit: Duration,
    ) -> Result<Connection<T>> {
        let deadline = Deadline::after(Some(limit));
        let address = address.into_address()?;
        let (fd, tcp) = match &address {
            Address::Tcp(a) => {
                // A TCP connect to an address that does not answer would otherwise wait for the
                // kernel's own limit (minutes).
                let left = deadline.remaining().unwrap_or(limit);
                if left.is_zero() {
                    return Err(Error::Timeout);
                }
                let s = TcpStream::connect_timeout(a, left).map_err(|e| match e.kind() {
                    std::io::ErrorKind::TimedOut => Error::Timeout,
                    _ => Error::io("connect", e),
                })?;
                let _ = s.set_nodelay(true);
                (OwnedFd::from(s), true)
            }
            Address::Unix(p) => (
                OwnedFd::from(UnixStream::connect(p).map_err(|e| Error::io("connect", e))?),
                false,
            ),
            Address::Abstract(n) => {
                let a =
                    UnixSocketAddr::from_abstract_name(n).map_err(|e| Error::io("connect", e))?;
                (
                    OwnedFd::from(
                        UnixStream::connect_addr(&a).map_err(|e| Error::io("connect", e))?,
                    ),
                    false,
                )
            }
        };
        client_handshake_until(fd.as_fd(), authkey.as_ref(), deadline).inspect_err(|_e| {
            crate::log::event!(
                warn,
                peer = %address,
                error = %_e,
                "handshake with the listener failed"
            );
        })?;
        Ok(Connection::from_socket(fd, tcp))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    use super::*;

    fn pending_for_test() -> Pending {
        let (ours, _theirs) = crate::transport::socket::stream_pair().unwrap();
        Pending {
            fd: ours,
            hs: Handshake::server(b"k").unwrap(),
            wait: Wait::Read,
            deadline: Instant::now() + Duration::from_secs(60),
            peer: Peer::Tcp("127.0.0.1:9".parse().unwrap()),
        }
    }

    /// A quick client can complete the whole handshake while the listener's first step (which
    /// sends the challenge) still reads: that connection is ready, not left waiting for bytes
    /// that will never come (it was, and `accept` then hung while the client thought itself
    /// connected).
    #[test]
    fn a_handshake_finished_in_any_step_is_ready() {
        let mut pending = VecDeque::new();
        let mut ended = Vec::new();
        settle(
            pending_for_test(),
            Ok(Wait::Finished),
            &mut pending,
            0,
            &mut ended,
        );
        assert!(pending.is_empty());
        assert!(matches!(ended.as_slice(), [Ok(_)]));
    }

    #[test]
    fn a_handshake_still_going_keeps_its_place_and_one_whose_peer_left_is_dropped() {
        let mut pending = VecDeque::new();
        let mut ended = Vec::new();
        settle(
            pending_for_test(),
            Ok(Wait::Read),
            &mut pending,
            0,
            &mut ended,
        );
        settle(
            pending_for_test(),
            Ok(Wait::Write),
            &mut pending,
            0,
            &mut ended,
        );
        assert_eq!(
            pending.iter().map(|p| p.wait).collect::<Vec<_>>(),
            [Wait::Write, Wait::Read]
        );
        settle(
            pending_for_test(),
            Err(Error::Closed),
            &mut pending,
            1,
            &mut ended,
        );
        assert_eq!(pending.len(), 2);
        assert!(ended.is_empty());
        settle(
            pending_for_test(),
            Err(Error::Timeout),
            &mut pending,
            0,
            &mut ended,
        );
        assert!(matches!(ended.as_slice(), [Err(Error::Timeout)]));
    }

    /// A listener that answers one byte every 50 ms: the client gives up when its deadline for
    /// the whole handshake passes, not when the listener stops (after seconds).
    #[test]
    fn connect_has_a_deadline_for_the_whole_handshake() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let dripper = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
            challenge.extend_from_slice(&[7; 32]);
            let mut bytes = crate::transport::frame::header(challenge.len(), 0).to_vec();
            bytes.extend_from_slice(&challenge);
            for byte in bytes {
                // Paced by the read timeout; ends early once the client hangs up.
                let mut sink = [0u8; 64];
                if matches!(s.read(&mut sink), Ok(0)) || s.write_all(&[byte]).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let r = Client::connect_within::<u8>(addr, b"k", Duration::from_millis(300));
        let took = started.elapsed();
        assert!(matches!(r, Err(Error::Timeout)), "{:?}", r.map(|_| ()));
        assert!(took < Duration::from_secs(2), "took {took:?}");
        dripper.join().unwrap();
    }
}
