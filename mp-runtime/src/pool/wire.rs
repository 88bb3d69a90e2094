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
//! Job:        1 id worker_name:bytes mode limit_ns nitems { nfds len bytes }*
//!               limit_ns: the time limit of each item, 0 for none
//!               mode 0: one `{nfds len bytes}` per item (an argument tuple each)
//!               mode 1: one `{nfds len bytes}` for the chunk (a `Vec` of argument tuples)
//! Stop:       2
//! Done:       3 id elapsed_ns:u64le count { tag ... }*   count: nitems, or 1 in mode 1
//!                                                    tag 0: nfds len value
//!                                                    tag 1: message:bytes
//!                                                    tag 2: message:bytes location:bytes
//!                                                    tag 3: message:bytes type:bytes
//!                                                           has_value [value:bytes] position
//!                                                    tag 4: message:bytes (a codec error)
//!                                                    tag 5: n { tag ... }* (a batch answered
//!                                                           item by item: some failed)
//! InitFailed: 4 message:bytes
//! Expired:    5 id position elapsed_ns start end   (item `position` of job `id` ran past its
//!               limit; a batch item's arguments are bytes start..end of the chunk)
//! Retire:     6   (after a `Done`: the worker is above its memory limit and exits; the jobs
//!               it was sent ahead go to other workers)
//! Wake:       7   (on the socket only: a record waits in the lane of a side that said it sleeps)
//! Lanes:      8   (the pool's first frame to a local worker, with one descriptor: the memfd of
//!               its lanes; from then on jobs and answers travel in them, see `pool::lane`)
//! Bulk:       9   (a node agent's first frame to a cluster worker, with one descriptor: the
//!               memfd of their bulk areas, see `pool::bulk`)
//! JobBulk:   10 pos len job…   (a `Job` whose items are the `len` bytes at `pos` of the bulk
//!               job area; `job…` is the `Job` payload up to its items, kind byte included)
//! DoneBulk:  11 pos len   (the `len` bytes at `pos` of the bulk answer area are a `Done` payload)
//! ```

use crate::error::{Error, Result};
use crate::transport::frame::{HEADER_LEN, header};

pub(crate) const JOB: u8 = 1;
pub(crate) const STOP: u8 = 2;
pub(crate) const DONE: u8 = 3;
pub(crate) const INIT_FAILED: u8 = 4;
/// A timed item ran past its limit (sent by the worker's watchdog).
pub(crate) const EXPIRED: u8 = 5;
/// The worker exits on its own (above `max_memory_per_child`) after the job it answered.
pub(crate) const RETIRE: u8 = 6;
/// A record waits in the lane of a side that said it sleeps (socket only).
pub(crate) const WAKE: u8 = 7;
/// The memfd of a local worker's lanes (the pool's first frame to it).
pub(crate) const LANES: u8 = 8;
/// The memfd of a cluster worker's bulk areas (its node agent's first frame to it).
pub(crate) const BULK: u8 = 9;
/// A job whose items lie in the bulk job area.
pub(crate) const JOB_BULK: u8 = 10;
/// An answer that lies in the bulk answer area.
pub(crate) const DONE_BULK: u8 = 11;

/// A frame of one kind byte (`Stop`, `Retire`, `Wake`), header included.
pub(crate) fn short_frame(kind: u8) -> Vec<u8> {
    frame_of(kind, 0)
}

/// The `Lanes` frame, header included; its one descriptor is sent with it.
pub(crate) fn lanes_frame() -> Vec<u8> {
    frame_of(LANES, 1)
}

/// The `Bulk` frame, header included; its one descriptor is sent with it.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn bulk_frame() -> Vec<u8> {
    frame_of(BULK, 1)
}

/// A frame of `kind` (`JobBulk`, `DoneBulk`) that points at `len` bytes at `pos` of a bulk
/// area, followed by `rest`, header included.
pub(crate) fn bulk_span_frame(kind: u8, pos: u64, len: usize, rest: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 21 + rest.len());
    let at = begin_frame(&mut buf);
    buf.push(kind);
    put_uint(&mut buf, pos);
    put_uint(&mut buf, len as u64);
    buf.extend_from_slice(rest);
    end_frame(&mut buf, at, 0);
    buf
}

fn frame_of(kind: u8, nfds: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 1);
    let at = begin_frame(&mut buf);
    buf.push(kind);
    end_frame(&mut buf, at, nfds);
    buf
}

pub(crate) const MODE_ITEMS: u8 = 0;
pub(crate) const MODE_BATCH: u8 = 1;

pub(crate) const TAG_OK: u8 = 0;
pub(crate) const TAG_FAILED: u8 = 1;
pub(crate) const TAG_PANICKED: u8 = 2;
/// The worker returned `Err` (tag 1 is for a task that could not run).
pub(crate) const TAG_RAISED: u8 = 3;
/// An argument did not decode or the result did not encode.
pub(crate) const TAG_CODEC: u8 = 4;
/// A batch job answered item by item (some items failed): a count, then one result each.
pub(crate) const TAG_EACH: u8 = 5;

/// Largest frame a pool connection accepts (results of one chunk included).
pub(crate) const MAX_FRAME: u64 = 1 << 34;

/// Appends LEB128 integers and length-prefixed byte strings.
#[inline]
pub(crate) fn put_uint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes `v` as a varint that fills `slot` exactly, padded with continuation bits: read back as
/// `v` by [`Cursor::uint`], for a length written in front of bytes already in place. `v` must
/// fit in `7 * slot.len()` bits.
pub(crate) fn put_uint_padded(slot: &mut [u8], v: u64) {
    let n = slot.len();
    debug_assert!(n > 0 && n <= 9 && v >> (7 * n) == 0);
    for (i, b) in slot.iter_mut().enumerate() {
        let more = if i + 1 < n { 0x80 } else { 0 };
        *b = ((v >> (7 * i)) as u8 & 0x7f) | more;
    }
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

    /// The next byte, without reading it.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// How many bytes were read so far.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn padded_varints_read_back_as_their_value() {
        for (width, v) in [
            (1, 0),
            (2, 0),
            (2, 300),
            (2, (1 << 14) - 1),
            (5, 1 << 20),
            (5, (1 << 35) - 1),
        ] {
            let mut slot = vec![0u8; width];
            put_uint_padded(&mut slot, v);
            slot.push(0x2a);
            let mut c = Cursor::new(&slot);
            assert_eq!(c.uint().unwrap(), v, "{v} in {width} bytes");
            assert_eq!(c.u8().unwrap(), 0x2a);
        }
    }
}
