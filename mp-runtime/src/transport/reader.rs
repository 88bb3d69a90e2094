//! A buffered frame reader: one `recvmsg` can deliver many frames, and their descriptors.
//!
//! Descriptors ride on the first byte of the write that carries them, so they always arrive no
//! later than the header of the frame that needs them; the reader hands them out first in,
//! first out. A frame's announced length is checked against the reader's maximum, and the
//! buffer grows with the bytes that arrive (at most twofold per call), never to an announced
//! length up front: a corrupt header cannot make it reserve gigabytes that never come.
//!
//! A large frame (a payload of [`DIRECT_MIN`] bytes or more) that has not fully arrived is read
//! straight into its own payload vector, which is handed out as is: its bytes cross memory once
//! on the way in, not twice (socket to buffer, buffer to payload). That vector too grows only
//! with bytes that have arrived: those the socket holds (`FIONREAD`), or twofold.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::frame::{self, HEADER_LEN, header};
use crate::error::{Error, Result};

/// Read size of the buffered reader.
const READ_CHUNK: usize = 64 * 1024;

/// The largest buffer [`FrameReader::release_if_idle`] keeps.
const IDLE_KEEP: usize = 4 * READ_CHUNK;

/// The shortest payload read straight into its own vector when it has not all arrived.
const DIRECT_MIN: usize = READ_CHUNK;

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
#[derive(Debug)]
pub(crate) struct RawFrame {
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Reads frames from a stream socket through a buffer, so that one `recvmsg` can deliver many.
pub(crate) struct FrameReader {
    /// The longest payload accepted.
    max_len: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    /// The last read returned less than there was room for: the socket was drained then.
    short: bool,
    /// Frames shorter than [`frame::PADDED_MIN`] are padded to it (a `Connection`'s peer).
    padded: bool,
    /// A large frame being read straight into its payload.
    direct: Option<Direct>,
    /// Whole frames handed over by [`FrameReader::push_frame`], for a stream carried in memory.
    handed: VecDeque<RawFrame>,
}

/// A large frame whose header has been read and whose payload is arriving.
struct Direct {
    payload: Vec<u8>,
    /// The payload's announced length.
    len: usize,
    /// Descriptors the frame announced.
    nfds: usize,
}

impl FrameReader {
    /// A reader of frames whose payload is at most `max_len` bytes.
    pub(crate) fn new(max_len: u64) -> Self {
        FrameReader {
            max_len,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            short: false,
            padded: false,
            direct: None,
            handed: VecDeque::new(),
        }
    }

    /// A reader of padded frames (those a [`Connection`](crate::Connection) sends and reads),
    /// whose payload is at most `max_len` bytes.
    pub(crate) fn padded(max_len: u64) -> Self {
        FrameReader {
            padded: true,
            ..FrameReader::new(max_len)
        }
    }

    /// One `recvmsg` (blocking or not, as the socket is). Returns the bytes read: 0 at end of
    /// stream. `WouldBlock` on a non-blocking socket is `Ok(None)`.
    pub(crate) fn fill(&mut self, sock: BorrowedFd<'_>) -> Result<Option<usize>> {
        if let Some(d) = self.direct.as_mut().filter(|d| d.payload.len() < d.len) {
            return fill_direct(d, sock, &mut self.fds, &mut self.short);
        }
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

    /// Gives back a buffer that a large frame grew, when nothing is buffered: for a connection
    /// about to wait a long time (a manager's), so that one large message does not pin its size
    /// in memory for the connection's life.
    pub(crate) fn release_if_idle(&mut self) {
        if self.start == self.end && self.direct.is_none() && self.buf.len() > IDLE_KEEP {
            self.buf = vec![0; READ_CHUNK];
            self.start = 0;
            self.end = 0;
        }
    }

    /// The bytes the buffer holds now (for tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Whether the last read drained the socket (it returned less than there was room for), so
    /// another read now would find nothing.
    pub(crate) fn drained(&self) -> bool {
        self.short
    }

    /// Hands over a whole frame that arrived in memory rather than on a socket (a remote
    /// worker's answers, `cluster::relay`), to be read in turn by [`FrameReader::next_frame`].
    /// A reader gets its frames one way or the other, never both.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn push_frame(&mut self, frame: RawFrame) {
        debug_assert!(self.start == self.end && self.direct.is_none());
        self.handed.push_back(frame);
    }

    /// The next complete frame in the buffer, if any.
    pub(crate) fn next_frame(&mut self) -> Result<Option<RawFrame>> {
        if let Some(frame) = self.handed.pop_front() {
            return Ok(Some(frame));
        }
        if let Some(d) = &self.direct {
            if d.payload.len() < d.len {
                return Ok(None);
            }
            let d = self.direct.take().expect("checked");
            let fds = take_fds(&mut self.fds, d.nfds)?;
            return Ok(Some(RawFrame {
                payload: d.payload,
                fds,
            }));
        }
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + HEADER_LEN];
        let len = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let nfds = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
        if h[12..] != header(0, 0)[12..] {
            return Err(Error::protocol(
                "bad frame magic: the peer is not speaking mp's protocol or the stream is corrupt",
            ));
        }
        if len > self.max_len {
            return Err(Error::MessageTooLarge {
                len,
                max: self.max_len,
            });
        }
        let len = len as usize;
        let wire = if self.padded {
            (HEADER_LEN + len).max(frame::PADDED_MIN)
        } else {
            HEADER_LEN + len
        };
        if avail < wire && len >= DIRECT_MIN && wire == HEADER_LEN + len {
            // The rest goes straight into the payload (`fill_direct`).
            let mut payload = Vec::new();
            payload.extend_from_slice(&self.buf[self.start + HEADER_LEN..self.end]);
            self.start = self.end;
            self.direct = Some(Direct { payload, len, nfds });
            return Ok(None);
        }
        if avail < wire {
            // Make room for more of the frame so that the next fills can complete it. The length
            // comes from the peer: the buffer grows at most twofold per call (and `fill` doubles
            // it as bytes arrive), so a corrupt header cannot make this side reserve gigabytes
            // that never come.
            let need = wire;
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
        self.start += wire;
        let fds = take_fds(&mut self.fds, nfds)?;
        Ok(Some(RawFrame { payload, fds }))
    }
}

/// One `recvmsg` of the rest of a large frame into its payload: never past the frame's end, so
/// the next frame's bytes go to the buffer.
fn fill_direct(
    d: &mut Direct,
    sock: BorrowedFd<'_>,
    fds: &mut VecDeque<OwnedFd>,
    short: &mut bool,
) -> Result<Option<usize>> {
    let have = d.payload.len();
    let rest = d.len - have;
    if d.payload.capacity() == have {
        // Room for what the socket holds (usually the rest of the frame, read at once), or
        // twice what came so far: never for bytes that have not arrived.
        let arrived = crate::sys::fd::queued_bytes(sock);
        d.payload
            .reserve_exact(rest.min(arrived.max(have).max(READ_CHUNK)));
    }
    let want = rest.min(d.payload.capacity() - have);
    if d.nfds == 0 {
        // No descriptors to receive: a plain read into the vector's spare room, which is not
        // zeroed first (the kernel writes what it reads; nothing else is looked at).
        let got = frame::recv_into_spare(sock, &mut d.payload, want);
        *short = !matches!(got, Ok(Some(n)) if n >= want);
        return got;
    }
    // Zeroed before the kernel writes it: safe code hands recvmsg initialized memory.
    d.payload.resize(have + want, 0);
    let got = frame::recv_some(sock, &mut d.payload[have..], |fd| fds.push_back(fd));
    let n = match &got {
        Ok(Some(n)) => *n,
        _ => 0,
    };
    d.payload.truncate(have + n);
    *short = n < want;
    got
}

#[cfg(test)]
mod tests {
    /// The pool's bound, as in the tests these came from.
    const MAX: u64 = 1 << 34;
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
        // 15 GiB announced (below MAX), 3 bytes sent, then the peer goes away.
        write_all(a.as_fd(), &header(15 << 30, 0));
        write_all(a.as_fd(), b"abc");
        drop(a);
        let mut r = FrameReader::new(MAX);
        assert!(read_one(&mut r, b.as_fd()).unwrap().is_none());
        assert!(r.buf.len() <= 4 * READ_CHUNK, "reserved {}", r.buf.len());
        let direct = r.direct.as_ref().map_or(0, |d| d.payload.capacity());
        assert!(
            direct <= 4 * READ_CHUNK,
            "reserved {direct} for the payload"
        );
    }

    #[test]
    fn an_idle_reader_gives_back_what_a_backlog_grew() {
        let (a, b) = stream_pair().unwrap();
        // Small frames that pile up unread grow the buffer.
        let mut stream = Vec::new();
        for i in 0..400u32 {
            stream.extend_from_slice(&header(1000, 0));
            stream.extend(std::iter::repeat_n(i as u8, 1000));
        }
        let writer = std::thread::spawn(move || write_all(a.as_fd(), &stream));
        let mut r = FrameReader::new(MAX);
        let mut got = 0;
        while got < 400 * (HEADER_LEN + 1000) {
            got += r.fill(b.as_fd()).unwrap().expect("blocking");
        }
        writer.join().unwrap();
        assert!(r.capacity() > IDLE_KEEP, "grew to {}", r.capacity());
        for i in 0..400u32 {
            let f = r.next_frame().unwrap().expect("buffered");
            assert_eq!(f.payload, vec![i as u8; 1000]);
        }
        r.release_if_idle();
        assert_eq!(r.capacity(), READ_CHUNK);
    }

    #[test]
    fn a_large_frame_is_read_into_its_payload_not_the_buffer() {
        let (a, b) = stream_pair().unwrap();
        let body: Vec<u8> = (0..40 * READ_CHUNK).map(|i| (i % 251) as u8).collect();
        let mut stream = header(body.len(), 0).to_vec();
        stream.extend_from_slice(&body);
        // The next frame follows at once: it must not be swallowed into the large payload.
        stream.extend_from_slice(&header(3, 0));
        stream.extend_from_slice(b"end");
        let writer = std::thread::spawn(move || write_all(a.as_fd(), &stream));
        let mut r = FrameReader::new(MAX);
        let f = read_one(&mut r, b.as_fd()).unwrap().expect("a frame");
        assert!(f.payload == body, "the large payload came back changed");
        assert!(r.capacity() <= IDLE_KEEP, "buffer grew to {}", r.capacity());
        assert_eq!(
            read_one(&mut r, b.as_fd()).unwrap().unwrap().payload,
            b"end"
        );
        writer.join().unwrap();
    }

    #[test]
    fn oversized_and_corrupt_frames_are_errors() {
        let (a, b) = stream_pair().unwrap();
        write_all(a.as_fd(), &header(0, 0)[..8]);
        write_all(a.as_fd(), &[0u8; 8]);
        let mut r = FrameReader::new(MAX);
        assert!(matches!(
            read_one(&mut r, b.as_fd()),
            Err(Error::Protocol { .. })
        ));

        let mut h = header(0, 0);
        h[..8].copy_from_slice(&(MAX + 1).to_le_bytes());
        write_all(a.as_fd(), &h);
        let mut r = FrameReader::new(MAX);
        assert!(matches!(
            read_one(&mut r, b.as_fd()),
            Err(Error::MessageTooLarge { .. })
        ));

        // Two descriptors announced, none sent.
        let mut frame = header(1, 2).to_vec();
        frame.push(3);
        write_all(a.as_fd(), &frame);
        let mut r = FrameReader::new(MAX);
        assert!(matches!(
            read_one(&mut r, b.as_fd()),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn a_large_frame_arriving_in_pieces_is_read_whole() {
        let (a, b) = stream_pair().unwrap();
        let body: Vec<u8> = (0..3 * READ_CHUNK + 17).map(|i| i as u8).collect();
        let mut frame = header(body.len(), 0).to_vec();
        frame.extend_from_slice(&body);
        let writer = std::thread::spawn(move || {
            for piece in frame.chunks(5000) {
                write_all(a.as_fd(), piece);
            }
        });
        let mut r = FrameReader::new(MAX);
        let f = read_one(&mut r, b.as_fd()).unwrap().expect("a frame");
        writer.join().unwrap();
        assert_eq!(f.payload, body);
    }

    #[test]
    fn a_padded_reader_skips_the_padding() {
        let (a, b) = stream_pair().unwrap();
        for payload in [&b"hi"[..], &[7u8; 100][..]] {
            let mut buf = vec![0u8; HEADER_LEN];
            buf.extend_from_slice(payload);
            frame::send_padded(a.as_fd(), &mut buf, &[]).unwrap();
        }
        drop(a);
        let mut r = FrameReader::padded(MAX);
        assert_eq!(read_one(&mut r, b.as_fd()).unwrap().unwrap().payload, b"hi");
        assert_eq!(
            read_one(&mut r, b.as_fd()).unwrap().unwrap().payload,
            [7u8; 100]
        );
        assert!(read_one(&mut r, b.as_fd()).unwrap().is_none());
    }
}
