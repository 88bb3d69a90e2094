//! One connection between a manager client and its server: frames out, frames in through a
//! buffer, and a short spin before sleeping.
//!
//! A call is a request and its reply, in order; the caller is blocked in between. Sleeping in
//! the kernel and being woken costs most of a call, so a waiting side first spins briefly
//! ([`SpinWait`], the same adaptive spin as [`Connection`](crate::Connection)'s). A local
//! client also offers the server a page of memory with its `Hello` (the descriptor rides with
//! the frame, so the messages are unchanged and an older server just closes it): once the
//! server says it mapped it, a short request or reply sent while the other side spins goes
//! through that memory instead of the socket, as between the ends of a `Pipe`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::Serialize;

use crate::codec;
use crate::connection::handoff::{Handoff, Outcome, Spun};
use crate::error::{Error, Result};
use crate::sys::poll::{Deadline, readable};
use crate::sys::spin_wait::SpinWait;
use crate::transport::frame::{self, DEFAULT_MAX_LEN, HEADER_LEN};
use crate::transport::reader::{FrameReader, RawFrame};

/// The longest message accepted over TCP (a peer elsewhere); local connections accept what any
/// `mp` connection does.
const MAX_TCP: u64 = 64 << 20;

/// The reply buffer a large reply grew is given back above this size.
const OUT_KEEP: usize = 256 << 10;

/// A framed connection.
pub(crate) struct Wire {
    fd: OwnedFd,
    /// TCP carries no descriptors.
    tcp: bool,
    reader: FrameReader,
    /// The spin before a wait sleeps.
    spin: SpinWait,
    /// Bytes of the frame being built (reused).
    out: Vec<u8>,
    /// The memory shared with the peer, once both sides use it.
    handoff: Option<Handoff>,
}

impl Wire {
    pub(crate) fn new(fd: OwnedFd, tcp: bool) -> Self {
        Wire {
            fd,
            tcp,
            // The peer may be a `Connection` (a client speaking the protocol by hand): frames
            // are padded as a `Connection`'s are.
            reader: FrameReader::padded(if tcp { MAX_TCP } else { DEFAULT_MAX_LEN }),
            spin: SpinWait::new(),
            out: Vec::with_capacity(256),
            handoff: None,
        }
    }

    /// From now on, short messages may go through `handoff` (see the module docs). Both sides
    /// attach between two messages: after the server's `Welcome` and before the first request.
    pub(crate) fn attach(&mut self, handoff: Handoff) {
        self.handoff = Some(handoff);
    }

    /// Whether this is a TCP connection (which carries no descriptors).
    pub(crate) fn is_tcp(&self) -> bool {
        self.tcp
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends `message` as one frame, with the descriptors its encoding refers to.
    pub(crate) fn send<T: Serialize + ?Sized>(&mut self, message: &T) -> Result<()> {
        self.send_with_fds(message, &[])
    }

    /// Sends `message` as one frame carrying `fds`: the descriptors of arguments encoded
    /// beforehand (whose indices count from 0), then any of `message`'s own.
    pub(crate) fn send_with_fds<T: Serialize + ?Sized>(
        &mut self,
        message: &T,
        fds: &[RawFd],
    ) -> Result<()> {
        self.out.clear();
        self.out.extend_from_slice(&[0u8; HEADER_LEN]);
        let own = codec::encode_into(message, &mut self.out)?;
        if own.is_empty() {
            self.send_built(fds)
        } else if fds.is_empty() {
            self.send_built(&own)
        } else {
            Err(Error::protocol(
                "a message cannot carry both pre-encoded and its own handles",
            ))
        }
    }

    /// Sends the frame in `self.out` (header space included).
    fn send_built(&mut self, fds: &[RawFd]) -> Result<()> {
        if self.tcp && !fds.is_empty() {
            return Err(Error::InvalidArgument {
                message: "handles (queues, connections, descriptors) cannot reach a manager over \
                          TCP; use a local (Unix socket) manager to share them"
                    .into(),
            });
        }
        if fds.len() > frame::MAX_FDS {
            return Err(Error::InvalidArgument {
                message: format!("a message can carry at most {} handles", frame::MAX_FDS),
            });
        }
        let sent = match &self.handoff {
            Some(h) if fds.is_empty() && h.try_put(&self.out[HEADER_LEN..]) => Ok(()),
            Some(h) => h.send_on_socket(|| frame::send_padded(self.fd.as_fd(), &mut self.out, fds)),
            None => frame::send_padded(self.fd.as_fd(), &mut self.out, fds),
        };
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::with_capacity(256);
        }
        sent
    }

    /// Receives the next frame, waiting until `deadline` ([`Error::Timeout`] after it; nothing
    /// is consumed then, but the caller must treat the connection as out of step).
    pub(crate) fn recv(&mut self, deadline: Deadline) -> Result<RawFrame> {
        if let Some(message) = self.handoff.as_ref().and_then(Handoff::take_message) {
            return shared_frame(message);
        }
        if let Some(f) = self.next_frame()? {
            return Ok(f);
        }
        let mut released = false;
        loop {
            let fd = self.fd.as_fd();
            let ready = match &self.handoff {
                None => self.spin.spin_until_readable(fd, deadline),
                Some(h) => match h.spin(&self.spin, fd, deadline) {
                    Spun::Announced => match h.end_spin(deadline.remaining())? {
                        Outcome::Message(message) => return shared_frame(Ok(message)),
                        // Told to read the socket: wait for it below.
                        Outcome::Socket => false,
                    },
                    Spun::OnSocket(ready) => ready,
                },
            };
            let ready = if ready {
                true
            } else {
                if !released {
                    // About to sleep, maybe for long: a large frame's buffer is not kept.
                    self.reader.release_if_idle();
                    released = true;
                }
                readable(fd, deadline).map_err(|e| Error::io("poll", e))?
            };
            if !ready {
                if deadline.passed() {
                    return Err(Error::Timeout);
                }
                continue;
            }
            if self.reader.fill(fd)? == Some(0) {
                return Err(Error::Closed);
            }
            if let Some(f) = self.next_frame()? {
                return Ok(f);
            }
        }
    }

    /// The next whole frame already read from the socket, counted for the shared memory.
    fn next_frame(&mut self) -> Result<Option<RawFrame>> {
        let frame = self.reader.next_frame()?;
        if frame.is_some()
            && let Some(h) = &self.handoff
        {
            h.socket_read();
        }
        Ok(frame)
    }
}

/// A message from the shared memory as a frame (such messages carry no descriptors).
fn shared_frame(message: Result<Vec<u8>>) -> Result<RawFrame> {
    Ok(RawFrame {
        payload: message?,
        fds: Vec::new(),
    })
}

impl AsRawFd for Wire {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::socket::stream_pair;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// Two wires over a socket pair, sharing a page when `page` is true.
    fn wires(page: bool) -> (Wire, Wire) {
        let (a, b) = stream_pair().unwrap();
        let (mut a, mut b) = (Wire::new(a, false), Wire::new(b, false));
        if page {
            let (x, y, _fd) = Handoff::pair().unwrap();
            a.attach(x);
            b.attach(y);
        }
        (a, b)
    }

    const LIMIT: Duration = Duration::from_secs(60);

    /// Message `i`: its index and a body on either side of what the page holds.
    fn message(i: u32) -> (u32, Vec<u8>) {
        (
            i,
            vec![i as u8; [3, 500, 7900, 9000, 100_000][i as usize % 5]],
        )
    }

    #[test]
    fn requests_and_replies_keep_their_order_whichever_way_they_go() {
        for page in [true, false] {
            let (mut client, mut server) = wires(page);
            let echo = std::thread::spawn(move || {
                // Echoes each message; every third reply carries a descriptor (the socket).
                let devnull = std::fs::File::open("/dev/null").unwrap();
                while let Ok(frame) = server.recv(Deadline::after(Some(LIMIT))) {
                    let (i, body): (u32, Vec<u8>) =
                        codec::decode(&frame.payload, frame.fds).unwrap();
                    let fds = if i % 3 == 0 {
                        vec![devnull.as_raw_fd()]
                    } else {
                        Vec::new()
                    };
                    server.send_with_fds(&(i, body), &fds).unwrap();
                }
            });
            for i in 0..500 {
                client.send(&message(i)).unwrap();
                let frame = client.recv(Deadline::after(Some(LIMIT))).unwrap();
                assert_eq!(frame.fds.len(), usize::from(i % 3 == 0), "message {i}");
                let back: (u32, Vec<u8>) = codec::decode(&frame.payload, Vec::new()).unwrap();
                assert!(back == message(i), "message {i} came back wrong");
            }
            // Several in a row before any reply is read (short: a socket buffer holds them all).
            for i in 0..50u32 {
                client.send(&(i, vec![1u8; 100])).unwrap();
            }
            let mut got = Vec::new();
            for _ in 0..50 {
                let frame = client.recv(Deadline::after(Some(LIMIT))).unwrap();
                let back: (u32, Vec<u8>) = codec::decode(&frame.payload, Vec::new()).unwrap();
                got.push(back.0);
            }
            assert_eq!(got, (0..50).collect::<Vec<u32>>(), "page {page}");
            drop(client);
            echo.join().unwrap();
        }
    }

    #[test]
    fn a_peer_gone_while_a_side_waits_is_closed_and_a_deadline_is_a_timeout() {
        let (mut a, b) = wires(true);
        let started = std::time::Instant::now();
        assert!(matches!(
            a.recv(Deadline::after(Some(Duration::from_millis(20)))),
            Err(Error::Timeout)
        ));
        assert!(started.elapsed() >= Duration::from_millis(20));
        drop(b);
        assert!(matches!(
            a.recv(Deadline::after(Some(LIMIT))),
            Err(Error::Closed)
        ));
    }
}
