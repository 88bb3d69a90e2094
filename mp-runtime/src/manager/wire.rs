//! One connection between a manager client and its server: frames out, frames in through a
//! buffer, and a short spin before sleeping.
//!
//! A call is a request and its reply, in order; the caller is blocked in between. Sleeping in
//! the kernel and being woken costs most of a call, so a waiting side first spins briefly on the
//! socket ([`SpinWait`], the same adaptive spin as [`Connection`](crate::Connection)'s).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::Serialize;

use crate::codec;
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
        }
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
        let sent = frame::send_padded(self.fd.as_fd(), &mut self.out, fds);
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::with_capacity(256);
        }
        sent
    }

    /// Receives the next frame, waiting until `deadline` ([`Error::Timeout`] after it; nothing
    /// is consumed then, but the caller must treat the connection as out of step).
    pub(crate) fn recv(&mut self, deadline: Deadline) -> Result<RawFrame> {
        if let Some(f) = self.reader.next_frame()? {
            return Ok(f);
        }
        let mut released = false;
        loop {
            let ready = if self.spin.spin_until_readable(self.fd.as_fd(), deadline) {
                true
            } else {
                if !released {
                    // About to sleep, maybe for long: a large frame's buffer is not kept.
                    self.reader.release_if_idle();
                    released = true;
                }
                readable(self.fd.as_fd(), deadline).map_err(|e| Error::io("poll", e))?
            };
            if !ready {
                if deadline.passed() {
                    return Err(Error::Timeout);
                }
                continue;
            }
            if self.reader.fill(self.fd.as_fd())? == Some(0) {
                return Err(Error::Closed);
            }
            if let Some(f) = self.reader.next_frame()? {
                return Ok(f);
            }
        }
    }
}

impl AsRawFd for Wire {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
