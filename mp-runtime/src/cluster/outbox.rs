//! Bytes waiting for a non-blocking stream socket. The MPI threads of rank 0 and of the node
//! agents never block on a socket (one slow worker must not stall the others), so what a socket
//! does not take at once waits here for the next round.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

/// What one [`Outbox::flush`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flushed {
    /// The socket took some bytes (maybe not all).
    Wrote,
    /// The socket took nothing: it is full, or nothing was waiting.
    Idle,
    /// The socket failed (its peer is gone): what was waiting is dropped.
    Gone,
}

/// A queue of bytes to write, and how far into it the socket has taken.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    bytes: Vec<u8>,
    pos: usize,
}

impl Outbox {
    /// Adds `bytes` after what is waiting.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Nothing is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes what the socket takes without blocking.
    pub(super) fn flush(&mut self, sock: BorrowedFd<'_>) -> Flushed {
        let mut done = Flushed::Idle;
        while self.pos < self.bytes.len() {
            match send(
                sock.as_raw_fd(),
                &self.bytes[self.pos..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => {
                    self.pos += n;
                    done = Flushed::Wrote;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    done = Flushed::Gone;
                    break;
                }
            }
        }
        if self.pos >= self.bytes.len() || done == Flushed::Gone {
            self.bytes.clear();
            self.pos = 0;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::transport::socket::stream_pair;

    #[test]
    fn what_the_socket_takes_goes_and_a_closed_peer_is_gone() {
        let (a, b) = stream_pair().unwrap();
        let mut out = Outbox::default();
        assert_eq!(out.flush(a.as_fd()), Flushed::Idle);
        out.push(b"hello");
        assert_eq!(out.flush(a.as_fd()), Flushed::Wrote);
        assert!(out.is_empty());
        let mut got = [0u8; 5];
        assert_eq!(nix::unistd::read(&b, &mut got).unwrap(), 5);
        assert_eq!(&got, b"hello");
        drop(b);
        out.push(b"lost");
        assert_eq!(out.flush(a.as_fd()), Flushed::Gone);
        assert!(out.is_empty());
    }
}
