//! Test support (through `mp::__private::fuzz`): the decoders of everything that arrives from
//! another process, each taking bytes as a peer could send them, for the fuzz tests.
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::error::{Error, Result};
use crate::sys::poll::Deadline;
use crate::transport::{auth, frame, socket::stream_pair};

/// The bytes of a frame header for a payload of `len` bytes with `nfds` descriptors.
pub fn frame_header(len: usize, nfds: usize) -> [u8; 16] {
    frame::header(len, nfds)
}

/// Sends `bytes` with `fds` on the first byte through a fresh socket pair, closes the
/// sending end, and hands the receiving end to `read`.
fn through_socket<R>(
    bytes: &[u8],
    fds: &[OwnedFd],
    read: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> R,
) -> Result<R> {
    let (tx, rx) = stream_pair()?;
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    if !bytes.is_empty() {
        frame::send_parts(tx.as_fd(), &[bytes], &raw)?;
    }
    drop(tx);
    Ok(read(rx.as_fd()))
}

/// Receives frames of at most `max_len` bytes, as a `Connection` does, from a stream of
/// `bytes` carrying `fds`, until an error (the end of the stream is
/// [`Error::Closed`]). Returns the payload lengths received and that error.
pub fn recv_frames(bytes: &[u8], fds: &[OwnedFd], max_len: u64) -> (Vec<usize>, Error) {
    let read = |sock: std::os::fd::BorrowedFd<'_>| {
        let mut lens = Vec::new();
        loop {
            match frame::recv_frame(sock, max_len) {
                Ok(f) => lens.push(f.payload.len()),
                Err(e) => return (lens, e),
            }
        }
    };
    through_socket(bytes, fds, read).unwrap_or_else(|e| (Vec::new(), e))
}

/// Reads frames as a pool and its workers do (several per read), from a stream of
/// `bytes` carrying `fds`. Returns the payload lengths received, and the error that
/// ended the stream early, if any.
pub fn read_pool_frames(bytes: &[u8], fds: &[OwnedFd]) -> (Vec<usize>, Option<Error>) {
    let read = |sock: std::os::fd::BorrowedFd<'_>| {
        let mut reader = crate::transport::reader::FrameReader::new(crate::pool::wire::MAX_FRAME);
        let mut lens = Vec::new();
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    lens.push(f.payload.len());
                    continue;
                }
                Ok(None) => {}
                Err(e) => return (lens, Some(e)),
            }
            match reader.fill(sock) {
                Ok(Some(0)) | Ok(None) | Err(Error::Closed) => return (lens, None),
                Ok(Some(_)) => {}
                Err(e) => return (lens, Some(e)),
            }
        }
    };
    through_socket(bytes, fds, read).unwrap_or_else(|e| (Vec::new(), Some(e)))
}

/// Feeds `chunks` from the peer, in order, to one side of the handshake (`server`: the
/// accepting side) with `key`, passing on what it sends to `sent`. Ok(true) once
/// authenticated, Ok(false) if it still waits for more.
pub fn handshake_feed(
    server: bool,
    key: &[u8],
    chunks: &[Vec<u8>],
    mut sent: impl FnMut(&[u8]),
) -> Result<bool> {
    let mut hs = if server {
        auth::Handshake::server(key)?
    } else {
        auth::Handshake::client(key)
    };
    for chunk in chunks {
        let out = hs.outgoing().to_vec();
        hs.sent(out.len());
        sent(&out);
        let used = hs.feed(chunk)?;
        if used < chunk.len() && !hs.authenticated() {
            return Err(Error::protocol(
                "the handshake left bytes it was given unused",
            ));
        }
    }
    Ok(hs.authenticated())
}

/// Runs one side of the handshake on a socket whose peer sent `bytes` (with `fds`) and
/// then closed, within `limit`.
pub fn handshake_on_socket(
    server: bool,
    key: &[u8],
    bytes: &[u8],
    fds: &[OwnedFd],
    limit: std::time::Duration,
) -> Result<()> {
    let (ours, theirs) = stream_pair()?;
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    if !bytes.is_empty() {
        frame::send_parts(theirs.as_fd(), &[bytes], &raw)?;
    }
    // The peer's end stays open for what this side sends, but says nothing more.
    nix::sys::socket::shutdown(theirs.as_raw_fd(), nix::sys::socket::Shutdown::Write)
        .map_err(|e| Error::io("shutdown", e))?;
    let deadline = Deadline::after(Some(limit));
    if server {
        auth::serve_handshake_until(ours.as_fd(), key, deadline)
    } else {
        auth::client_handshake_until(ours.as_fd(), key, deadline)
    }
}

/// Runs a pool worker's loop on a stream of `bytes` carrying `fds`, as if a pool had
/// sent them, and returns how it ended and how many bytes it answered.
pub fn worker_loop(bytes: &[u8], fds: &[OwnedFd]) -> (Result<()>, usize) {
    let (pool, worker) = match stream_pair() {
        Ok(p) => p,
        Err(e) => return (Err(e), 0),
    };
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    if !bytes.is_empty()
        && let Err(e) = frame::send_parts(pool.as_fd(), &[bytes], &raw)
    {
        return (Err(e), 0);
    }
    let _ = nix::sys::socket::shutdown(pool.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    // The answers are read as they come, so that the worker never blocks on them.
    let reader = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match frame::recv_some(pool.as_fd(), &mut buf, drop) {
                Ok(Some(0)) | Ok(None) | Err(_) => return total,
                Ok(Some(n)) => total += n,
            }
        }
    });
    let ended = crate::pool::worker_loop::serve(worker.as_fd(), 0);
    drop(worker);
    (ended, reader.join().unwrap_or(0))
}

/// Decodes a `T` from `bytes` with `fds` as the message's descriptor table, as every
/// receive does.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    crate::codec::decode(bytes, fds)
}

/// Encodes `value` as every send does: the bytes, and copies of the descriptors.
pub fn encode<T: serde::Serialize>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    crate::codec::encode_owned(value)
}

/// Runs the two sides of the handshake against each other in memory, `chunk` bytes at a time
/// (at least 1), with byte number `at` of the whole exchange XORed with `xor` (0: none). Returns
/// each side's end: Ok(true) once authenticated, Ok(false) if it was still waiting.
pub fn handshake_pair(
    server_key: &[u8],
    client_key: &[u8],
    at: usize,
    xor: u8,
    chunk: usize,
) -> (Result<bool>, Result<bool>) {
    let mut server = match auth::Handshake::server(server_key) {
        Ok(s) => s,
        Err(e) => return (Err(e), Ok(false)),
    };
    let mut client = auth::Handshake::client(client_key);
    let (mut s_err, mut c_err) = (None, None);
    let mut pos = 0usize;
    loop {
        let mut moved = false;
        for to_client in [true, false] {
            let (from, to, to_err) = if to_client {
                (&mut server, &mut client, &mut c_err)
            } else {
                (&mut client, &mut server, &mut s_err)
            };
            let n = from.outgoing().len().min(chunk.max(1));
            if n == 0 || to_err.is_some() {
                continue;
            }
            let mut bytes = from.outgoing()[..n].to_vec();
            from.sent(n);
            if (pos..pos + n).contains(&at) {
                bytes[at - pos] ^= xor;
            }
            pos += n;
            moved = true;
            if let Err(e) = to.feed(&bytes) {
                *to_err = Some(e);
            }
        }
        if !moved {
            break;
        }
    }
    let end = |hs: &auth::Handshake, err: Option<Error>| match err {
        Some(e) => Err(e),
        None => Ok(hs.authenticated()),
    };
    (end(&server, s_err), end(&client, c_err))
}
