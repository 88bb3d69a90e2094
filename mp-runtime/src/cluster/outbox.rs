//! Bytes waiting for a non-blocking stream socket. The MPI threads of rank 0 and of the node
//! agents never block on a socket (one slow worker must not stall the others), so what a socket
//! does not take at once waits here for the next round. A message received from MPI is kept
//! whole and written from where its bytes start, not copied again.

use std::collections::VecDeque;
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

/// Buffers to write in order, each with how far into it the socket has taken.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pieces: VecDeque<(Vec<u8>, usize)>,
}

impl Outbox {
    /// Adds `bytes[from..]` after what is waiting, without copying them.
    pub(super) fn push(&mut self, bytes: Vec<u8>, from: usize) {
        if from < bytes.len() {
            self.pieces.push_back((bytes, from));
        }
    }

    /// Nothing is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Writes what the socket takes without blocking.
    pub(super) fn flush(&mut self, sock: BorrowedFd<'_>) -> Flushed {
        let mut done = Flushed::Idle;
        while let Some((bytes, pos)) = self.pieces.front_mut() {
            match send(
                sock.as_raw_fd(),
                &bytes[*pos..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => {
                    *pos += n;
                    done = Flushed::Wrote;
                    if *pos >= bytes.len() {
                        self.pieces.pop_front();
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.pieces.clear();
                    return Flushed::Gone;
                }
            }
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
        out.push(b"xxhello".to_vec(), 2);
        out.push(b"!".to_vec(), 1);
        out.push(b", you".to_vec(), 0);
        assert_eq!(out.flush(a.as_fd()), Flushed::Wrote);
        assert!(out.is_empty());
        let mut got = [0u8; 10];
        assert_eq!(nix::unistd::read(&b, &mut got).unwrap(), 10);
        assert_eq!(&got, b"hello, you");
        drop(b);
        out.push(b"lost".to_vec(), 0);
        assert_eq!(out.flush(a.as_fd()), Flushed::Gone);
        assert!(out.is_empty());
    }

    #[test]
    fn a_full_socket_keeps_the_rest_in_order() {
        let (a, b) = stream_pair().unwrap();
        crate::sys::fd::set_nonblocking(a.as_fd(), true).unwrap();
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 253) as u8).collect();
        let mut out = Outbox::default();
        out.push(big.clone(), 0);
        out.push(b"tail".to_vec(), 0);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !out.is_empty() {
            assert_ne!(out.flush(a.as_fd()), Flushed::Gone);
            let n = nix::unistd::read(&b, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        drop(a);
        loop {
            let n = nix::unistd::read(&b, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.len(), big.len() + 4);
        assert!(got[..big.len()] == big[..] && &got[big.len()..] == b"tail");
    }
}
