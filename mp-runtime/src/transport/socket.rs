//! Creating Unix stream sockets.

use std::os::fd::OwnedFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::error::{Error, Result};

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn stream_pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::io("socketpair", e))
}

/// The send buffer asked for on a pool worker's connection: a 1 MiB job or answer fits whole,
/// so it crosses in one write and one read instead of five rounds of the default 208 KiB.
/// Only bytes in flight use memory; the kernel caps the size at `net.core.wmem_max`.
const BULK_SEND_BUFFER: usize = 4 << 20;

/// [`stream_pair`] with send buffers for large messages on both ends.
pub(crate) fn bulk_stream_pair() -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = stream_pair()?;
    for fd in [&a, &b] {
        grow_send_buffer(fd, BULK_SEND_BUFFER);
    }
    Ok((a, b))
}

/// Asks for a send buffer of `bytes` (best effort: the kernel caps it at `net.core.wmem_max`,
/// and a smaller buffer is slower, not wrong).
pub(crate) fn grow_send_buffer(fd: &OwnedFd, bytes: usize) {
    let _ = nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::SndBuf, &bytes);
}
