//! The messages between a pool and its worker processes, and a buffered frame reader.
//!
//! Messages travel in `mp` frames (see `transport::frame`). Many frames may be written in one
//! `sendmsg` and read in one `recvmsg`: descriptors ride on the first byte of the write that
//! carries them, so they always arrive no later than the header of the frame that needs them,
//! and [`FrameReader`] hands them out first in, first out. That lets a worker take a batch of
//! small tasks, and the pool a batch of results, in one system call each.
//!
//! Payloads (all integers are LEB128 varints):
//!
//! ```text
//! Job:        1 id worker_name:bytes mode nitems { nfds len bytes }*
//!               mode 0: one `{nfds len bytes}` per item (an argument tuple each)
//!               mode 1: one `{nfds len bytes}` for the chunk (a `Vec` of argument tuples)
//! Stop:       2
//! Done:       3 id elapsed_ns:u64le count { tag ... }*   count: nitems, or 1 in mode 1
//!                                                    tag 0: nfds len value
//!                                                    tag 1: message:bytes
//!                                                    tag 2: message:bytes location:bytes
//! InitFailed: 4 message:bytes
//! ```

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::error::{Error, Result};
use crate::transport::frame::{self, HEADER_LEN, header};

pub(crate) const JOB: u8 = 1;
pub(crate) const STOP: u8 = 2;
pub(crate) const DONE: u8 = 3;
pub(crate) const INIT_FAILED: u8 = 4;

pub(crate) const MODE_ITEMS: u8 = 0;
pub(crate) const MODE_BATCH: u8 = 1;

pub(crate) const TAG_OK: u8 = 0;
pub(crate) const TAG_FAILED: u8 = 1;
pub(crate) const TAG_PANICKED: u8 = 2;

/// Largest frame a pool connection accepts (results of one chunk included).
const MAX_FRAME: u64 = 1 << 34;
/// Read size of the buffered reader.
const READ_CHUNK: usize = 64 * 1024;

/// Appends LEB128 integers and length-prefixed byte strings.
#[inline]
pub(crate) fn put_uint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Starts a frame in `buf`: reserves the header, to be filled by [`end_frame`].
pub(crate) fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    at
}

/// Writes the header of the frame begun at `at`, which carries `nfds` descriptors.
pub(crate) fn end_frame(buf: &mut [u8], at: usize, nfds: usize) {
    let len = buf.len() - at - HEADER_LEN;
    buf[at..at + HEADER_LEN].copy_from_slice(&header(len, nfds));
}

/// Reads what [`put_uint`] and [`put_bytes`] wrote.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn truncated() -> Error {
        Error::protocol("truncated pool message")
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(Self::truncated)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn uint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift > 63 {
                return Err(Error::protocol("integer too long in pool message"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    pub(crate) fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.uint()?).map_err(|_| Self::truncated())
    }

    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.usize()?;
        let end = self.pos.checked_add(len).ok_or_else(Self::truncated)?;
        let b = self.buf.get(self.pos..end).ok_or_else(Self::truncated)?;
        self.pos = end;
        Ok(b)
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// Takes `n` descriptors from the front of `fds`.
pub(crate) fn take_fds(fds: &mut VecDeque<OwnedFd>, n: usize) -> Result<Vec<OwnedFd>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if fds.len() < n {
        return Err(Error::protocol(format!(
            "pool message announced {n} descriptors but {} arrived",
            fds.len()
        )));
    }
    Ok(fds.drain(..n).collect())
}

/// A received frame: its payload and the descriptors it announced.
pub(crate) struct RawFrame {
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Reads frames from a stream socket through a buffer, so that one `recvmsg` can deliver many.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    /// The last read returned less than there was room for: the socket was drained then.
    short: bool,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        FrameReader {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            short: false,
        }
    }

    /// One `recvmsg` (blocking or not, as the socket is). Returns the bytes read: 0 at end of
    /// stream. `WouldBlock` on a non-blocking socket is `Ok(None)`.
    pub(crate) fn fill(&mut self, sock: BorrowedFd<'_>) -> Result<Option<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < READ_CHUNK / 4 {
                let grow = self.buf.len().max(READ_CHUNK);
                self.buf.resize(self.buf.len() + grow, 0);
            }
        }
        let fds = &mut self.fds;
        let Some(n) = frame::recv_some(sock, &mut self.buf[self.end..], |fd| fds.push_back(fd))?
        else {
            return Ok(None);
        };
        self.short = n < self.buf.len() - self.end;
        self.end += n;
        Ok(Some(n))
    }

    /// Whether the last read drained the socket (it returned less than there was room for), so
    /// another read now would find nothing.
    pub(crate) fn drained(&self) -> bool {
        self.short
    }

    /// The next complete frame in the buffer, if any.
    pub(crate) fn next_frame(&mut self) -> Result<Option<RawFrame>> {
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + HEADER_LEN];
        let len = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let nfds = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
        if h[12..] != header(0, 0)[12..] {
            return Err(Error::protocol("bad frame magic on a pool connection"));
        }
        if len > MAX_FRAME {
            return Err(Error::MessageTooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        let len = len as usize;
        if avail < HEADER_LEN + len {
            // Make room for more of the frame so that the next fills can complete it. The length
            // comes from the peer: the buffer grows at most twofold per call (and `fill` doubles
            // it as bytes arrive), so a corrupt header cannot make this side reserve gigabytes
            // that never come.
            let need = HEADER_LEN + len;
            if self.buf.len() - self.start < need {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
                let target = (need + READ_CHUNK).min(self.buf.len().saturating_mul(2));
                if self.buf.len() < target {
                    self.buf.resize(target, 0);
                }
            }
            return Ok(None);
        }
        let body = self.start + HEADER_LEN;
        let payload = self.buf[body..body + len].to_vec();
        self.start = body + len;
        let fds = take_fds(&mut self.fds, nfds)?;
        Ok(Some(RawFrame { payload, fds }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::socket::stream_pair;
    use std::os::fd::AsFd;

    fn write_all(fd: BorrowedFd<'_>, mut b: &[u8]) {
        while !b.is_empty() {
            let n = nix::unistd::write(fd, b).expect("write");
            b = &b[n..];
        }
    }

    /// Reads until a frame, an error or the end of the stream.
    fn read_one(r: &mut FrameReader, fd: BorrowedFd<'_>) -> Result<Option<RawFrame>> {
        loop {
            if let Some(f) = r.next_frame()? {
                return Ok(Some(f));
            }
            if r.fill(fd)? == Some(0) {
                return Ok(None);
            }
        }
    }

    #[test]
    fn a_huge_announced_length_does_not_reserve_it() {
        let (a, b) = stream_pair().unwrap();
        // 15 GiB announced (below MAX_FRAME), 3 bytes sent, then the peer goes away.
        write_all(a.as_fd(), &header(15 << 30, 0));
        write_all(a.as_fd(), b"abc");
        drop(a);
        let mut r = FrameReader::new();
        assert!(read_one(&mut r, b.as_fd()).unwrap().is_none());
        assert!(r.buf.len() <= 4 * READ_CHUNK, "reserved {}", r.buf.len());
    }

    #[test]
    fn oversized_and_corrupt_frames_are_errors() {
        let (a, b) = stream_pair().unwrap();
        write_all(a.as_fd(), &header(0, 0)[..8]);
        write_all(a.as_fd(), &[0u8; 8]);
        let mut r = FrameReader::new();
        assert!(matches!(
            read_one(&mut r, b.as_fd()),
            Err(Error::Protocol { .. })
        ));

        let mut h = header(0, 0);
        h[..8].copy_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        write_all(a.as_fd(), &h);
        let mut r = FrameReader::new();
        assert!(matches!(
            read_one(&mut r, b.as_fd()),
            Err(Error::MessageTooLarge { .. })
        ));

        // Two descriptors announced, none sent.
        let mut frame = Vec::new();
        let at = begin_frame(&mut frame);
        frame.push(DONE);
        end_frame(&mut frame, at, 2);
        write_all(a.as_fd(), &frame);
        let mut r = FrameReader::new();
        assert!(matches!(
            read_one(&mut r, b.as_fd()),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn a_large_frame_arriving_in_pieces_is_read_whole() {
        let (a, b) = stream_pair().unwrap();
        let body: Vec<u8> = (0..3 * READ_CHUNK + 17).map(|i| i as u8).collect();
        let mut frame = Vec::new();
        let at = begin_frame(&mut frame);
        frame.extend_from_slice(&body);
        end_frame(&mut frame, at, 0);
        let writer = std::thread::spawn(move || {
            for piece in frame.chunks(5000) {
                write_all(a.as_fd(), piece);
            }
        });
        let mut r = FrameReader::new();
        let f = read_one(&mut r, b.as_fd()).unwrap().expect("a frame");
        writer.join().unwrap();
        assert_eq!(f.payload, body);
    }

    #[test]
    fn cursor_rejects_truncated_and_overlong_input() {
        assert!(Cursor::new(&[0x80]).uint().is_err());
        assert!(Cursor::new(&[0xff; 11]).uint().is_err());
        let mut buf = Vec::new();
        put_uint(&mut buf, 1 << 40);
        assert!(Cursor::new(&buf).bytes().is_err());
        let mut buf = Vec::new();
        put_bytes(&mut buf, b"hi");
        assert_eq!(Cursor::new(&buf).bytes().unwrap(), b"hi");
    }
}
