//! `Pipe` and `Connection`: a message channel between two processes (Python's
//! `multiprocessing.Pipe`), and [`wait`] over several waitable objects.
//!
//! Each end is a Unix stream socket carrying `mp` frames. Ends are `Serialize`: pass one to a
//! child as a worker argument (it travels as a file descriptor) and it works there, or hand it on
//! to a grandchild.
//!
//! A receiving end that finds nothing to read first spins for a few tens of microseconds,
//! yielding the CPU between looks, before it sleeps in the kernel: a reply from a peer running
//! on another CPU then arrives without a cross-CPU wake-up (which costs more than the rest of a
//! round trip). The ends of a [`Pipe`] also share a page of memory per direction: a short
//! message without handles, sent while the receiver spins, is copied there instead of being
//! written to the socket, so such a request and its reply make no system call. The spin is
//! adaptive: after a spin that ended in a sleep anyway, the next waits of that end sleep at
//! once, so an idle end costs nothing. There is no spin when the process may use a single CPU,
//! nor when `MP_SPIN=0` is set in the environment.

pub(crate) mod handoff;

pub use crate::transport::auth::HANDSHAKE_TIMEOUT;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use self::handoff::{Handoff, Outcome, Spun};
use crate::codec;
use crate::error::{Error, Result};
use crate::sys::poll::{Deadline, readable, wait_readable};
use crate::sys::spin_wait::SpinWait;
use crate::transport::frame::{self, DEFAULT_MAX_LEN, HEADER_LEN, PaddedHead, RecvLimit};
use crate::transport::socket::stream_pair;

/// Constructors of connected [`Connection`] pairs.
///
/// ```
/// let (a, b) = mp::Pipe::<String>::duplex()?;
/// a.send(&"ping".to_string())?;
/// assert_eq!(b.recv()?, "ping");
/// drop(a);
/// assert!(matches!(b.recv(), Err(mp::Error::Closed)));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Pipe<T>(PhantomData<T>);

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// Two connected ends; both can send and receive (Python's `Pipe()`).
    pub fn duplex() -> Result<(Connection<T>, Connection<T>)> {
        let (a, b) = stream_pair()?;
        let (mut a, mut b) = (Connection::from_fd(a), Connection::from_fd(b));
        share_memory(&mut a, &mut b);
        Ok((a, b))
    }

    /// `(reader, writer)`: the first end only receives, the second only sends (Python's
    /// `Pipe(duplex=False)`). Using an end the wrong way is [`Error::InvalidState`].
    pub fn simplex() -> Result<(Connection<T>, Connection<T>)> {
        let (a, b) = stream_pair()?;
        let mut reader = Connection::from_fd(a);
        reader.writable = false;
        let mut writer = Connection::from_fd(b);
        writer.readable = false;
        share_memory(&mut reader, &mut writer);
        Ok((reader, writer))
    }
}

/// Gives the two ends of a new pipe the memory they share (see `handoff`); without it (no
/// memory or descriptor left) they use their socket alone.
fn share_memory<T>(a: &mut Connection<T>, b: &mut Connection<T>) {
    if let Some((x, y, fd)) = Handoff::pair() {
        let fd = Arc::new(fd);
        a.handoff = Some((x, fd.clone()));
        b.handoff = Some((y, fd));
    }
}

/// One end of a [`Pipe`], carrying values of type `T`.
///
/// A receive (or a [`poll`](Connection::poll) that may wait) that finds nothing to read first
/// looks for a message for up to 50 µs, yielding the CPU between looks, before it sleeps in the
/// kernel: a reply from a peer on another CPU then arrives without a cross-CPU wake-up. Between
/// the two ends of a [`Pipe`], a message of up to about 8 KiB without handles sent during that
/// look is copied through memory the ends share rather than the socket, so neither side makes
/// a system call for it; the socket carries everything else, in order with it. The spin is
/// adaptive (after a spin that ended in a sleep anyway, or one where the CPU went to another
/// process, the next waits of this end sleep at once), so an idle or oversubscribed end costs
/// next to nothing. It is off when the process can use a single CPU, and when the environment
/// variable `MP_SPIN` is `0` as the process first waits (children inherit it).
pub struct Connection<T> {
    fd: Option<OwnedFd>,
    /// TCP connections carry no descriptors.
    tcp: bool,
    readable: bool,
    writable: bool,
    max_len: u64,
    send_lock: Mutex<()>,
    recv_lock: Mutex<()>,
    /// The spin before a receive or `poll` sleeps.
    spin: SpinWait,
    /// The memory shared with the other end of a [`Pipe`], and its descriptor (to send this
    /// end to another process); `None` for listener connections (and a pipe whose memory
    /// could not be had).
    handoff: Option<(Handoff, Arc<OwnedFd>)>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Connection<T> {
    pub(crate) fn from_fd(fd: OwnedFd) -> Self {
        Connection::from_socket(fd, false)
    }

    /// A connection over a Unix (`tcp == false`) or TCP socket.
    pub(crate) fn from_socket(fd: OwnedFd, tcp: bool) -> Self {
        Connection {
            fd: Some(fd),
            tcp,
            readable: true,
            writable: true,
            max_len: DEFAULT_MAX_LEN,
            send_lock: Mutex::new(()),
            recv_lock: Mutex::new(()),
            spin: SpinWait::new(),
            handoff: None,
            _type: PhantomData,
        }
    }

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or_else(|| Error::state("the connection is closed"))
    }

    fn reader(&self) -> Result<BorrowedFd<'_>> {
        if !self.readable {
            return Err(Error::state("this end of a simplex pipe can only send"));
        }
        self.fd()
    }

    fn writer(&self) -> Result<BorrowedFd<'_>> {
        if !self.writable {
            return Err(Error::state("this end of a simplex pipe can only receive"));
        }
        self.fd()
    }

    /// Takes the socket out of the connection, with whether it is TCP (for protocols that
    /// frame their own messages on an authenticated connection).
    pub(crate) fn into_socket(mut self) -> Result<(OwnedFd, bool)> {
        let fd = self
            .fd
            .take()
            .ok_or_else(|| Error::state("the connection is closed"))?;
        Ok((fd, self.tcp))
    }

    /// Sends a message of raw bytes (Python's `send_bytes`).
    pub fn send_bytes(&self, buf: &[u8]) -> Result<()> {
        let fd = self.writer()?;
        let _g = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.try_share(buf) {
            return Ok(());
        }
        self.send_on_socket(fd, |fd| frame::send_padded_bytes(fd, buf))
    }

    /// Puts a message without descriptors in the pipe's shared memory, if the receiver spins
    /// for it there. The caller holds the send lock.
    fn try_share(&self, payload: &[u8]) -> bool {
        self.handoff
            .as_ref()
            .is_some_and(|(h, _)| h.try_put(payload))
    }

    /// Sends one message by `write_frame` on the socket, counted for the pipe's shared memory.
    /// The caller holds the send lock.
    fn send_on_socket(
        &self,
        fd: BorrowedFd<'_>,
        write_frame: impl FnOnce(BorrowedFd<'_>) -> Result<()>,
    ) -> Result<()> {
        match &self.handoff {
            Some((handoff, _)) => handoff.send_on_socket(|| write_frame(fd)),
            None => write_frame(fd),
        }
    }

    /// Receives one message as bytes (Python's `recv_bytes`). Descriptors that came with it are
    /// closed.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let fd = self.reader()?;
        let _g = self.recv_lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.next_message(fd, None)? {
            Incoming::Shared(message) => Ok(message),
            Incoming::Socket(head) => head.read_payload(fd, RecvLimit::NEVER),
        }
    }

    /// Receives one message into `buf`, returning its length. A message longer than `buf` is
    /// [`Error::BufferTooShort`], which carries the whole message: nothing is lost.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let fd = self.reader()?;
        let _g = self.recv_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = match self.next_message(fd, None)? {
            Incoming::Shared(message) if message.len() > buf.len() => {
                return Err(Error::BufferTooShort {
                    capacity: buf.len(),
                    message,
                });
            }
            Incoming::Shared(message) => {
                buf[..message.len()].copy_from_slice(&message);
                return Ok(message.len());
            }
            Incoming::Socket(head) => head,
        };
        let len = head.len;
        if len > buf.len() {
            return Err(Error::BufferTooShort {
                capacity: buf.len(),
                message: head.read_payload(fd, RecvLimit::NEVER)?,
            });
        }
        let inline = head.inline();
        buf[..inline.len()].copy_from_slice(inline);
        frame::read_exact(fd, &mut buf[inline.len()..len])?;
        Ok(len)
    }

    /// The next message: whole from the pipe's shared memory, or its start from the socket. The
    /// caller holds the receive lock. Waits up to `timeout` for it to begin (`None`: as long as
    /// it takes), spinning first.
    fn next_message(&self, fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<Incoming> {
        let deadline = Deadline::after(timeout);
        match &self.handoff {
            None => {
                self.spin.spin_until_readable(fd, deadline);
            }
            Some((handoff, _)) => {
                if let Some(message) = handoff.take_message() {
                    return self.checked(message?).map(Incoming::Shared);
                }
                if let Spun::Announced = handoff.spin(&self.spin, fd, deadline)
                    && let Outcome::Message(message) = handoff.end_spin(timeout)?
                {
                    return self.checked(message).map(Incoming::Shared);
                }
            }
        }
        let limit = timeout.map_or(RecvLimit::NEVER, RecvLimit::within);
        let head = frame::recv_padded_head(fd, self.max_len, limit)?;
        if let Some((handoff, _)) = &self.handoff {
            handoff.socket_read();
        }
        Ok(Incoming::Socket(head))
    }

    /// A message from shared memory, held to this end's maximum length like one from the
    /// socket.
    fn checked(&self, message: Vec<u8>) -> Result<Vec<u8>> {
        if message.len() as u64 > self.max_len {
            return Err(Error::MessageTooLarge {
                len: message.len() as u64,
                max: self.max_len,
            });
        }
        Ok(message)
    }

    /// Whether a message (or end of stream) is ready to be received, waiting up to `timeout`
    /// (`None` waits forever, `Some(Duration::ZERO)` does not wait). Does not consume anything.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let fd = self.reader()?;
        if self.handoff.as_ref().is_some_and(|(h, _)| h.has_message()) {
            return Ok(true);
        }
        let deadline = Deadline::after(timeout);
        if self.spin.spin_until_readable(fd, deadline) {
            return Ok(true);
        }
        readable(fd, deadline).map_err(|e| Error::io("poll", e))
    }

    /// Closes this end. The peer's receives then fail with [`Error::Closed`] once drained;
    /// further use of this end is [`Error::InvalidState`]. Idempotent.
    pub fn close(&mut self) {
        self.fd = None;
        self.handoff = None;
        // Opened now, into the slot just freed, so that `as_fd` has it for later.
        let _ = closed_marker();
    }

    /// A second handle on the same end (dup(2)): messages sent through either arrive in one
    /// stream, so it can be given to several children.
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd()?
            .try_clone_to_owned()
            .map_err(|e| Error::io("dup", e))?;
        let mut c = Connection::from_socket(fd, self.tcp);
        c.readable = self.readable;
        c.writable = self.writable;
        c.max_len = self.max_len;
        c.handoff = self.handoff.clone();
        Ok(c)
    }

    /// Whether [`close`](Connection::close) was called.
    pub fn closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The largest message this end accepts (default 1 GiB). A longer announced length is
    /// [`Error::MessageTooLarge`], checked before any allocation.
    pub fn set_max_message_len(&mut self, max: u64) {
        self.max_len = max;
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends `value`. Handles inside it (connections, queues, …) travel as descriptors.
    pub fn send(&self, value: &T) -> Result<()> {
        let fd = self.writer()?;
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let fds = codec::encode_into(value, &mut buf)?;
        if self.tcp && !fds.is_empty() {
            return Err(Error::InvalidArgument {
                message: "handles (connections, queues, descriptors) cannot be sent over a TCP \
                          connection; use a Unix socket address"
                    .into(),
            });
        }
        if fds.len() > frame::MAX_FDS {
            return Err(Error::InvalidArgument {
                message: format!("a message can carry at most {} handles", frame::MAX_FDS),
            });
        }
        let _g = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        if fds.is_empty() && self.try_share(&buf[HEADER_LEN..]) {
            return Ok(());
        }
        self.send_on_socket(fd, |fd| frame::send_padded(fd, &mut buf, &fds))
    }

    /// Receives one value, blocking until it arrives. [`Error::Closed`] once the peer is gone.
    pub fn recv(&self) -> Result<T> {
        self.recv_within(None)
    }

    /// Receives one value, waiting at most `timeout` for it to begin; [`Error::Timeout`] if
    /// nothing came. Once a message has begun, each further piece may take `timeout` (at least
    /// 1 s) to arrive, so a long message that keeps flowing completes; a peer that stops in the
    /// middle of one is [`Error::Protocol`], not a hang.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.recv_within(Some(timeout))
    }

    /// One value; `timeout` as for [`recv_timeout`](Connection::recv_timeout), `None` waits as
    /// long as it takes. A message short enough to come whole with its header is decoded from
    /// there, without a buffer of its own.
    fn recv_within(&self, timeout: Option<Duration>) -> Result<T> {
        let fd = self.reader()?;
        let (mut head, rest) = {
            let _g = self.recv_lock.lock().unwrap_or_else(|p| p.into_inner());
            let head = match self.next_message(fd, timeout)? {
                Incoming::Shared(message) => return codec::decode(&message, Vec::new()),
                Incoming::Socket(head) => head,
            };
            let rest = if head.rest() > 0 {
                let limit = timeout.map_or(RecvLimit::NEVER, RecvLimit::within);
                Some(head.read_payload(fd, limit)?)
            } else {
                None
            };
            (head, rest)
        };
        let fds = std::mem::take(&mut head.fds);
        match rest {
            None => codec::decode(head.inline(), fds),
            Some(payload) => codec::decode(&payload, fds),
        }
    }
}

/// A message as [`Connection::next_message`] found it.
enum Incoming {
    /// Whole, copied out of the pipe's shared memory.
    Shared(Vec<u8>),
    /// Its header and first bytes, read from the socket.
    Socket(PaddedHead),
}

/// What a closed connection's `as_fd` gives: `/dev/null`, which polls as readable, so that
/// [`wait`] reports a closed connection at once (receiving from it then says it is closed)
/// instead of failing. Opened once per process, by the first `close`.
fn closed_marker() -> Option<BorrowedFd<'static>> {
    static MARKER: OnceLock<Option<OwnedFd>> = OnceLock::new();
    MARKER
        .get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()
        .map(|fd| fd.as_fd())
}

impl<T> AsFd for Connection<T> {
    /// The socket. After [`close`](Connection::close), a descriptor that is always readable
    /// (`/dev/null`), so a poll loop or [`wait`] sees the closed end at once; receiving from it
    /// is then [`Error::InvalidState`]. Panics only if `/dev/null` could not be opened.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => closed_marker().expect("/dev/null could not be opened"),
        }
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fd {
            Some(fd) => write!(f, "<Connection fd={}>", fd.as_raw_fd()),
            None => write!(f, "<Connection closed>"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Flags {
    tcp: bool,
    readable: bool,
    writable: bool,
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| codec::ser_error::<S::Error>("cannot send a closed Connection"))?;
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&FdRef(fd.as_fd()))?;
        t.serialize_element(&Flags {
            tcp: self.tcp,
            readable: self.readable,
            writable: self.writable,
        })?;
        // The pipe's shared memory, and which half of it this end receives on.
        t.serialize_element(
            &self
                .handoff
                .as_ref()
                .map(|(h, fd)| (FdRef(fd.as_fd()), h.incoming())),
        )?;
        t.end()
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (fd, flags, memory): (FdOwned, Flags, Option<(FdOwned, u8)>) =
            Deserialize::deserialize(d)?;
        let mut c = Connection::from_socket(fd.0, flags.tcp);
        c.readable = flags.readable;
        c.writable = flags.writable;
        if let Some((memory, incoming)) = memory {
            let (handoff, fd) = Handoff::from_fd(memory.0, incoming)
                .map_err(|e| codec::de_error::<D::Error>(&e))?;
            c.handoff = Some((handoff, Arc::new(fd)));
        }
        Ok(c)
    }
}

/// Serializes a borrowed descriptor through the codec's fd table.
pub(crate) struct FdRef<'a>(pub(crate) BorrowedFd<'a>);

impl Serialize for FdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::serialize_fd(self.0, s)
    }
}

/// Deserializes a descriptor from the codec's fd table.
pub(crate) struct FdOwned(pub(crate) OwnedFd);

impl<'de> Deserialize<'de> for FdOwned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        codec::deserialize_fd(d).map(FdOwned)
    }
}

/// Something [`wait`] can wait on: connections, queues, process sentinels and any descriptor
/// ([`AsFd`]: ready when readable).
pub trait Waitable {
    /// Called once at the start of a [`wait`]: the descriptor that becomes readable when this
    /// object is ready.
    fn begin_wait(&self) -> BorrowedFd<'_>;
    /// Called once when that [`wait`] ends.
    fn end_wait(&self) {}
}

impl<T: AsFd + ?Sized> Waitable for T {
    fn begin_wait(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: forever), and
/// returns the indices of the ready ones, in order; empty on timeout (Python's
/// `multiprocessing.connection.wait`). A connection is ready when a message or end of stream can
/// be received; a queue when it has an item or was shut down; a process sentinel when the
/// process has exited. With several consumers, an object reported ready may be emptied by
/// another before this one gets to it: use non-blocking calls (`try_get`, `poll`) after `wait`.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = mp::Pipe::<u8>::duplex()?;
/// let (c, d) = mp::Pipe::<u8>::duplex()?;
/// assert!(mp::connection::wait(&[&b, &d], Some(Duration::ZERO))?.is_empty());
/// c.send(&1)?;
/// assert_eq!(mp::connection::wait(&[&b, &d], None)?, vec![1]);
/// # drop(a);
/// # Ok::<(), mp::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let deadline = Deadline::after(timeout);
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.begin_wait()).collect();
    let ready = wait_readable(&fds, deadline);
    for o in objects {
        o.end_wait();
    }
    let ready = ready.map_err(|e| Error::io("poll", e))?;
    Ok(ready
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.then_some(i))
        .collect())
}
