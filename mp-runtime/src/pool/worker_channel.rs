//! A pool worker's end of its connection to the pool: frames from the socket until the pool
//! sends the worker its lanes (`pool::lane`), then from the lanes, with the socket for messages
//! that carry descriptors or are long, and for sleep. A cluster worker's node agent sends it
//! bulk areas instead (`pool::bulk`), where long jobs and answers lie.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use super::bulk::WorkerBulk;
use super::lane::{Lanes, Record};
use super::wire;
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;
use crate::sys::spin_wait::SpinWait;
use crate::transport::frame::{HEADER_LEN, send_parts};
use crate::transport::reader::{FrameReader, RawFrame};

/// How often a worker looks again for room in a full answer lane. A full lane means the pool
/// stopped reading (a worker holds at most about 64 jobs, and their answers fit), so this is a
/// safety net that also notices the pool's end.
const ROOM_RETRY: Duration = Duration::from_millis(1);

/// The worker's end of the pool connection.
pub(crate) struct WorkerChannel<'a> {
    sock: BorrowedFd<'a>,
    reader: FrameReader,
    lanes: Option<Lanes>,
    /// The bulk areas its node agent shares with a cluster worker.
    bulk: Option<WorkerBulk>,
    /// Frames read from the socket in lane mode, waiting for their markers.
    marked: VecDeque<RawFrame>,
    /// The next job usually comes within a round trip of the last answer: look for it briefly
    /// before sleeping, which saves the wake-up.
    spin: SpinWait,
    record: Vec<u8>,
}

impl<'a> WorkerChannel<'a> {
    pub(crate) fn new(sock: BorrowedFd<'a>) -> Self {
        WorkerChannel {
            sock,
            reader: FrameReader::new(wire::MAX_FRAME),
            lanes: None,
            bulk: None,
            marked: VecDeque::new(),
            spin: SpinWait::pool(),
            record: Vec::with_capacity(super::lane::MAX_RECORD),
        }
    }

    /// The next frame from the pool; `None` at the end of the stream (the pool is gone).
    pub(crate) fn next(&mut self) -> Result<Option<RawFrame>> {
        loop {
            let got = match &self.lanes {
                None => {
                    let Some(frame) = self.socket_frame()? else {
                        return Ok(None);
                    };
                    if frame.payload.first() == Some(&wire::BULK) {
                        let fd = frame.fds.into_iter().next().ok_or_else(|| {
                            Error::protocol("the node agent sent bulk areas without their memory")
                        })?;
                        self.bulk = Some(WorkerBulk::attach(fd)?);
                        continue;
                    }
                    if frame.payload.first() != Some(&wire::LANES) {
                        return Ok(Some(frame));
                    }
                    let fd = frame.fds.into_iter().next().ok_or_else(|| {
                        Error::protocol("the pool sent lanes without their memory")
                    })?;
                    self.lanes = Some(Lanes::attach(fd)?);
                    continue;
                }
                Some(lanes) => lanes.recv(&mut self.record)?,
            };
            match got {
                Some(Record::Message) => {
                    return Ok(Some(RawFrame {
                        payload: self.record.clone(),
                        fds: Vec::new(),
                    }));
                }
                Some(Record::Marker) => return self.marked_frame(),
                None => {}
            }
            let lanes = self.lanes.as_ref().expect("lane mode");
            if self.spin.spin_until(Deadline::NEVER, || lanes.has_data()) {
                continue;
            }
            if lanes.going_to_sleep() {
                lanes.awake();
                continue;
            }
            let filled = self.reader.fill(self.sock);
            lanes.awake();
            self.spin.woke();
            if !self.queue_socket_frames(filled)? {
                return Ok(None);
            }
        }
    }

    /// The next frame on the socket, blocking after a short spin; `None` at its end.
    fn socket_frame(&mut self) -> Result<Option<RawFrame>> {
        loop {
            if let Some(f) = self.reader.next_frame()? {
                return Ok(Some(f));
            }
            self.spin.spin_until_readable(self.sock, Deadline::NEVER);
            match self.reader.fill(self.sock) {
                Ok(Some(0)) | Err(Error::Closed) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The frame a marker stands for: the next one on the socket that is not a `Wake`.
    fn marked_frame(&mut self) -> Result<Option<RawFrame>> {
        loop {
            // Frames read along with the `Lanes` frame, or with a wake-up, may be buffered.
            self.queue_buffered()?;
            if let Some(f) = self.marked.pop_front() {
                return Ok(Some(f));
            }
            let filled = self.reader.fill(self.sock);
            if !self.queue_socket_frames(filled)? {
                return Ok(None);
            }
        }
    }

    /// After a read from the socket in lane mode: keeps the frames for their markers, drops
    /// `Wake`s. False at the end of the stream.
    fn queue_socket_frames(&mut self, filled: Result<Option<usize>>) -> Result<bool> {
        match filled {
            Ok(Some(0)) | Err(Error::Closed) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        self.queue_buffered()?;
        Ok(true)
    }

    /// Moves the frames in the read buffer to those waiting for their markers, less `Wake`s.
    fn queue_buffered(&mut self) -> Result<()> {
        while let Some(f) = self.reader.next_frame()? {
            if f.payload != [wire::WAKE] {
                self.marked.push_back(f);
            }
        }
        Ok(())
    }

    /// Sends a frame (header included) to the pool: in the answer lane when it can, else on
    /// the socket (behind a marker in lane mode). [`Error::Closed`] if the pool is gone.
    pub(crate) fn send(&mut self, frame: &[u8], fds: &[RawFd]) -> Result<()> {
        let Some(lanes) = &self.lanes else {
            return self.send_on_socket(frame, fds);
        };
        if fds.is_empty() && lanes.send(&frame[HEADER_LEN..])? {
            if lanes.peer_sleeping() {
                self.send_on_socket(&wire::short_frame(wire::WAKE), &[])?;
            }
            return Ok(());
        }
        self.send_long(&[frame], fds)
    }

    /// Runs `f` on the items of a `JobBulk` (`len` bytes at `pos` of the bulk job area), where
    /// they lie.
    pub(crate) fn bulk_job<R>(
        &mut self,
        pos: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        self.bulk
            .as_mut()
            .ok_or_else(|| Error::protocol("a job in bulk areas this worker was not given"))?
            .with_job(pos, len, f)
    }

    /// Sends a long answer frame in `parts` (header included, no descriptors): into the bulk
    /// answer area when there is one with room, announced by a short `DoneBulk`; else as
    /// [`WorkerChannel::send_long`].
    pub(crate) fn send_answer(&mut self, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if let Some(bulk) = self.bulk.as_mut()
            && len >= super::bulk::MIN_BULK + HEADER_LEN
            && parts.first().is_some_and(|p| p.len() >= HEADER_LEN)
        {
            let mut payload = parts.to_vec();
            payload[0] = &payload[0][HEADER_LEN..];
            if let Some((pos, len)) = bulk.put_answer(&payload) {
                let frame = wire::bulk_span_frame(wire::DONE_BULK, pos, len, &[]);
                return self.send(&frame, &[]);
            }
        }
        self.send_long(parts, &[])
    }

    /// Sends a long frame in `parts` (header included), written from where they are: on the
    /// socket, behind a marker in lane mode.
    pub(crate) fn send_long(&mut self, parts: &[&[u8]], fds: &[RawFd]) -> Result<()> {
        if let Some(lanes) = &self.lanes {
            while !lanes.send_marker()? {
                if crate::sys::poll::peer_closed(self.sock) {
                    return Err(Error::Closed);
                }
                std::thread::sleep(ROOM_RETRY);
            }
            // The frame itself wakes a sleeping pool.
            lanes.peer_sleeping();
        }
        self.send_parts_on_socket(parts, fds)
    }

    fn send_on_socket(&self, frame: &[u8], fds: &[RawFd]) -> Result<()> {
        self.send_parts_on_socket(&[frame], fds)
    }

    fn send_parts_on_socket(&self, parts: &[&[u8]], fds: &[RawFd]) -> Result<()> {
        // The watchdog thread writes on the same socket.
        let _writing = super::watchdog::running().map(|w| w.write_lock());
        send_parts(self.sock, parts, fds)
    }
}
