//! The frame format shared by every connection of `mp`.
//!
//! ```text
//! +----------------+--------------+--------------+-------------------+
//! | length: u64 LE | nfds: u32 LE | magic: u32   | payload (length)  |
//! +----------------+--------------+--------------+-------------------+
//! ```
//! The descriptors (if any) ride as SCM_RIGHTS on the first byte of the header. The receiver
//! checks the magic, the length against its maximum *before* allocating, and that exactly `nfds`
//! descriptors arrived. A peer that closes mid-frame yields [`Error::Closed`]; anything
//! malformed yields [`Error::Protocol`] or [`Error::MessageTooLarge`] for that connection only.
//!
//! [`Connection`](crate::Connection)s, and the manager's connections (whose peer may be a
//! `Connection`), pad a frame shorter than [`PADDED_MIN`] bytes with zeros up to that length
//! (the header still gives the payload's own length). Since no frame between them is shorter, a
//! receiver reads `PADDED_MIN` bytes first without ever reading into the next frame: a small
//! message arrives whole in one `recvmsg`, and nothing is buffered in the process, so readiness
//! of the socket stays the readiness of the connection.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::error::{Error, Result};
use crate::sys::poll::{Deadline, readable};

/// The shortest wait for more bytes of a frame that has begun to arrive.
const MIN_STALL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a receive may wait: for a frame to begin (`start`), and then, once it has, for each
/// further piece of it (`stall`), so a peer that stops mid-frame cannot hold a timed receive
/// forever while a long frame that keeps arriving is not cut off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecvLimit {
    start: Deadline,
    stall: Option<std::time::Duration>,
}

impl RecvLimit {
    /// Wait as long as it takes.
    pub(crate) const NEVER: RecvLimit = RecvLimit {
        start: Deadline::NEVER,
        stall: None,
    };

    /// A frame must begin within `timeout`; then each piece within `timeout` (at least 1 s).
    pub(crate) fn within(timeout: std::time::Duration) -> RecvLimit {
        RecvLimit {
            start: Deadline::after(Some(timeout)),
            stall: Some(timeout.max(MIN_STALL)),
        }
    }

    /// Waits until `sock` has bytes; `begun` says whether part of the frame was read already.
    fn wait(&self, sock: BorrowedFd<'_>, begun: bool) -> Result<()> {
        let Some(stall) = self.stall else {
            return Ok(());
        };
        let deadline = if begun {
            Deadline::after(Some(stall))
        } else {
            self.start
        };
        match readable(sock, deadline) {
            Ok(true) => Ok(()),
            Ok(false) if begun => Err(Error::protocol(format!(
                "the peer stopped sending in the middle of a message for {stall:?}: the \
                 connection is out of step; close it"
            ))),
            Ok(false) => Err(Error::Timeout),
            Err(e) => Err(Error::io("poll", e)),
        }
    }
}

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 16;
/// The most descriptors one frame may carry (the kernel's SCM_MAX_FD).
pub(crate) const MAX_FDS: usize = 253;
/// Identifies an `mp` frame, version 1.
const MAGIC: u32 = 0x4D50_0001;
/// Default upper bound on a frame's payload: 1 GiB.
pub(crate) const DEFAULT_MAX_LEN: u64 = 1 << 30;

/// A received frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Builds the header for a payload of `len` bytes carrying `nfds` descriptors.
pub(crate) fn header(len: usize, nfds: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&(len as u64).to_le_bytes());
    h[8..12].copy_from_slice(&(nfds as u32).to_le_bytes());
    h[12..].copy_from_slice(&MAGIC.to_le_bytes());
    h
}

/// Sends one frame: header and payload in as few sendmsg calls as the kernel allows, the
/// descriptors with the first one. Blocks until everything is written.
pub(crate) fn send_frame(sock: BorrowedFd<'_>, payload: &[u8], fds: &[RawFd]) -> Result<()> {
    if fds.len() > MAX_FDS {
        return Err(Error::InvalidArgument {
            message: format!("a message can carry at most {MAX_FDS} handles"),
        });
    }
    let head = header(payload.len(), fds.len());
    send_parts(sock, &[&head, payload], fds)
}

/// Writes `parts` in order, with `fds` attached to the first byte. Used for frames whose header
/// is built by the caller (to save a copy) and by [`send_frame`].
pub(crate) fn send_parts(sock: BorrowedFd<'_>, parts: &[&[u8]], fds: &[RawFd]) -> Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0usize;
    let mut first = true;
    while sent < total || first {
        // Skip what has been written already.
        let mut skip = sent;
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            iov.push(IoSlice::new(&p[skip..]));
            skip = 0;
        }
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage<'_>] = if first && !fds.is_empty() {
            &rights
        } else {
            &[]
        };
        // Known upstream defect, harmless here: nix's `sendmsg` (0.30.1 through 0.32.0, the
        // newest) packs control messages into `vec![0u8; capacity]`, a buffer aligned to 1, and
        // writes `cmsghdr` (aligned to 8) through `CMSG_FIRSTHDR`'s pointer. Miri reports it
        // ("accessing memory based on pointer with alignment 1, but alignment 8 is required");
        // on x86_64 glibc's allocator returns 16-byte-aligned blocks, so the behaviour is as
        // intended. A minimal case for nix, under `cargo miri test`:
        //     let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        //     let fds = [0];
        //     nix::sys::socket::sendmsg::<()>(a.as_raw_fd(), &[std::io::IoSlice::new(b"x")],
        //         &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        // The fix there: back the buffer with `Vec<libc::cmsghdr>` (or another 8-aligned type).
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => {
                sent += n;
                first = false;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("send", e)),
        }
        if total == 0 {
            break;
        }
    }
    Ok(())
}

/// Receives one frame, blocking until it is complete. `max_len` bounds the payload.
pub(crate) fn recv_frame(sock: BorrowedFd<'_>, max_len: u64) -> Result<Frame> {
    recv_frame_within(sock, max_len, RecvLimit::NEVER)
}

/// [`recv_frame`] bounded by `limit`.
pub(crate) fn recv_frame_within(
    sock: BorrowedFd<'_>,
    max_len: u64,
    limit: RecvLimit,
) -> Result<Frame> {
    let (len, fds) = recv_header_within(sock, max_len, limit)?;
    let mut payload = vec![0u8; len];
    read_exact_within(sock, &mut payload, limit)?;
    Ok(Frame { payload, fds })
}

/// The shortest a [`Connection`](crate::Connection) frame is on the wire (see the module docs).
pub(crate) const PADDED_MIN: usize = 64;
/// Payload bytes that arrive with the header of a padded frame.
const INLINE: usize = PADDED_MIN - HEADER_LEN;
/// Zeros to pad with.
const PADDING: [u8; INLINE] = [0; INLINE];

/// Sends `buf` (header space, then the payload) as one padded frame carrying `fds`: fills in the
/// header and pads `buf` to [`PADDED_MIN`] bytes.
pub(crate) fn send_padded(sock: BorrowedFd<'_>, buf: &mut Vec<u8>, fds: &[RawFd]) -> Result<()> {
    let head = header(buf.len() - HEADER_LEN, fds.len());
    buf[..HEADER_LEN].copy_from_slice(&head);
    if buf.len() < PADDED_MIN {
        buf.resize(PADDED_MIN, 0);
    }
    send_parts(sock, &[buf], fds)
}

/// Sends `payload` as one padded frame without descriptors.
pub(crate) fn send_padded_bytes(sock: BorrowedFd<'_>, payload: &[u8]) -> Result<()> {
    let head = header(payload.len(), 0);
    let pad = &PADDING[..INLINE.saturating_sub(payload.len())];
    send_parts(sock, &[&head, payload, pad], &[])
}

/// The start of a padded frame: its header's length, its descriptors, and the first payload
/// bytes (all of a short payload), which came in the same read.
pub(crate) struct PaddedHead {
    first: [u8; PADDED_MIN],
    /// The payload's length.
    pub(crate) len: usize,
    pub(crate) fds: Vec<OwnedFd>,
}

impl PaddedHead {
    /// The payload bytes received with the header.
    pub(crate) fn inline(&self) -> &[u8] {
        &self.first[HEADER_LEN..HEADER_LEN + self.len.min(INLINE)]
    }

    /// How many payload bytes are still on the socket.
    pub(crate) fn rest(&self) -> usize {
        self.len.saturating_sub(INLINE)
    }

    /// The whole payload: the inline bytes and the rest, read from `sock` within `limit`.
    pub(crate) fn read_payload(&self, sock: BorrowedFd<'_>, limit: RecvLimit) -> Result<Vec<u8>> {
        let mut payload = vec![0u8; self.len];
        let inline = self.inline();
        payload[..inline.len()].copy_from_slice(inline);
        read_exact_within(sock, &mut payload[inline.len()..], limit)?;
        Ok(payload)
    }
}

/// Receives the first [`PADDED_MIN`] bytes of a padded frame: the header (checked as soon as it
/// is in, so a bad one fails at once) and the payload's first bytes. `rest()` more bytes of
/// payload follow on the socket.
pub(crate) fn recv_padded_head(
    sock: BorrowedFd<'_>,
    max_len: u64,
    limit: RecvLimit,
) -> Result<PaddedHead> {
    let mut head = PaddedHead {
        first: [0u8; PADDED_MIN],
        len: 0,
        fds: Vec::new(),
    };
    let mut got = 0;
    let mut checked = false;
    while got < PADDED_MIN {
        limit.wait(sock, got > 0)?;
        let n = recv_with_fds(sock, &mut head.first[got..], &mut head.fds)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        got += n;
        if !checked && got >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&head.first[..HEADER_LEN]);
            let (len, nfds) = parse_header(&h, max_len)?;
            if head.fds.len() != nfds {
                return Err(Error::protocol(format!(
                    "frame announced {nfds} descriptors but {} arrived",
                    head.fds.len()
                )));
            }
            head.len = len;
            checked = true;
        }
    }
    Ok(head)
}

/// Receives a frame header and its descriptors, bounded by `limit`; the payload of the returned
/// length follows on the socket.
pub(crate) fn recv_header_within(
    sock: BorrowedFd<'_>,
    max_len: u64,
    limit: RecvLimit,
) -> Result<(usize, Vec<OwnedFd>)> {
    let mut head = [0u8; HEADER_LEN];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < HEADER_LEN {
        limit.wait(sock, got > 0)?;
        let n = recv_with_fds(sock, &mut head[got..], &mut fds)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        got += n;
    }
    let (len, nfds) = parse_header(&head, max_len)?;
    if fds.len() != nfds {
        return Err(Error::protocol(format!(
            "frame announced {nfds} descriptors but {} arrived",
            fds.len()
        )));
    }
    Ok((len, fds))
}

/// Checks a received header: the magic, and the announced length against `max_len` (before
/// anything is allocated for it). Returns the payload length and the announced descriptor
/// count.
pub(crate) fn parse_header(head: &[u8; HEADER_LEN], max_len: u64) -> Result<(usize, usize)> {
    let [
        l0,
        l1,
        l2,
        l3,
        l4,
        l5,
        l6,
        l7,
        n0,
        n1,
        n2,
        n3,
        m0,
        m1,
        m2,
        m3,
    ] = *head;
    let len = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
    let nfds = u32::from_le_bytes([n0, n1, n2, n3]) as usize;
    let magic = u32::from_le_bytes([m0, m1, m2, m3]);
    if magic != MAGIC {
        return Err(Error::protocol(format!(
            "bad frame magic {magic:#010x}: the peer is not speaking mp's protocol or the stream \
             is corrupt"
        )));
    }
    if len > max_len {
        return Err(Error::MessageTooLarge { len, max: max_len });
    }
    if nfds > MAX_FDS {
        return Err(Error::protocol(format!(
            "frame announced {nfds} descriptors, more than the {MAX_FDS} one message can carry"
        )));
    }
    let len = usize::try_from(len).map_err(|_| Error::MessageTooLarge { len, max: max_len })?;
    Ok((len, nfds))
}

/// Reads exactly `buf.len()` bytes; EOF before that is [`Error::Closed`].
pub(crate) fn read_exact(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<()> {
    read_exact_within(sock, buf, RecvLimit::NEVER)
}

/// [`read_exact`] for the rest of a frame that has begun, each wait bounded by `limit`.
pub(crate) fn read_exact_within(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    limit: RecvLimit,
) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        limit.wait(sock, true)?;
        match nix::unistd::read(sock, &mut buf[got..]) {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("recv", e)),
        }
    }
    Ok(())
}

/// One recvmsg into `buf`; received descriptors are appended to `fds` as owned values.
fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize> {
    // A blocking socket says EAGAIN only when a receive timeout (SO_RCVTIMEO) expired.
    let n = recv_some(sock, buf, |fd| fds.push(fd))?
        .ok_or_else(|| Error::sys("recv", Errno::EAGAIN))?;
    if fds.len() > MAX_FDS {
        return Err(Error::protocol("too many descriptors in one frame"));
    }
    Ok(n)
}

/// One recvmsg into `buf`, retried on EINTR: the number of bytes read (0 at the end of the
/// stream), each received descriptor handed to `take_fd` as an owned value. `None` when a
/// non-blocking socket has nothing to read.
pub(crate) fn recv_some(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    take_fd: impl FnMut(OwnedFd),
) -> Result<Option<usize>> {
    recv_some_with(sock, buf, MsgFlags::empty(), take_fd)
}

/// One `recv` of at most `max` bytes appended to `buf`, in its spare capacity (at least `max`
/// bytes of it), without zeroing that room first: the bytes read (0 at the end of the stream),
/// `None` when a non-blocking socket has nothing to read. For a frame that announced no
/// descriptors: any sent along with it anyway are closed by the kernel, not received.
pub(crate) fn recv_into_spare(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<usize>> {
    let spare = buf.spare_capacity_mut();
    let max = max.min(spare.len());
    loop {
        // SAFETY: `spare` is `max` or more bytes of `buf`'s allocation past its length, owned
        // by this call through `&mut buf`; `recv` writes at most `max` bytes there and reads
        // nothing from it.
        let n = unsafe { libc::recv(sock.as_raw_fd(), spare.as_mut_ptr().cast(), max, 0) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: `recv` initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(Some(n));
        }
        match Errno::last() {
            Errno::EINTR => {}
            Errno::EAGAIN => return Ok(None),
            e => return Err(Error::sys("recv", e)),
        }
    }
}

/// [`recv_some`] with extra recvmsg `flags` (`MSG_DONTWAIT` to never block on a blocking
/// socket).
pub(crate) fn recv_some_with(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
    mut take_fd: impl FnMut(OwnedFd),
) -> Result<Option<usize>> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut *buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | flags,
        ) {
            Ok(msg) => {
                let bytes = msg.bytes;
                let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                let cmsgs = msg
                    .cmsgs()
                    .map_err(|_| Error::protocol("control message truncated"))?;
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raws) = c {
                        for raw in raws {
                            // SAFETY: `raw` was just installed in this process by recvmsg's
                            // SCM_RIGHTS control message; nothing else owns it.
                            take_fd(unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                    }
                }
                if truncated {
                    return Err(Error::protocol("descriptors were truncated in transit"));
                }
                return Ok(Some(bytes));
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(Error::sys("recv", e)),
        }
    }
}

#[cfg(test)]
mod tests;
