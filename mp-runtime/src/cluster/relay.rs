//! A remote worker's stream on rank 0, carried in memory between the pool's scheduler and the
//! MPI thread instead of through a socket pair: no kernel copy either way, and the answers
//! arrive as whole frames in the buffers MPI received them into.
//!
//! - Jobs: the scheduler appends what it writes to one growing `Data` message (its head comes
//!   first), and wakes the MPI thread when that message starts; the MPI thread takes the whole
//!   message at its next round and sends it as it is. A long job's items are not copied: they
//!   go as a `Bulk` message (the frame up to them) and a message sent from the task's buffer.
//! - Answers: the MPI thread splits each `Data` an agent sent into frames (checking every
//!   header, as a socket reader would), or takes a long answer's payload message whole, and
//!   queues the frames; the relay's descriptor is readable while frames wait, after the stream's
//!   end, or after a malformed message, which the scheduler then reads as a protocol error.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::eventfd::{EfdFlags, EventFd};

use super::messages::{Msg, data_head};
use super::wake::Waker;
use crate::error::{Error, Result};
use crate::pool::backend::Pipe;
use crate::pool::wire;
use crate::transport::frame::{HEADER_LEN, parse_header};
use crate::transport::reader::{FrameReader, RawFrame};

/// One remote worker's stream on rank 0.
pub(crate) struct Relay {
    worker: u64,
    /// Wakes the MPI thread when bytes wait for it.
    waker: Arc<Waker>,
    state: Mutex<State>,
    /// Readable while frames wait, once the stream has ended, or once it broke.
    ready: EventFd,
}

/// What the MPI thread is to send to a worker's agent, in order.
pub(super) enum Outgoing {
    /// A `Data` message.
    Data(Vec<u8>),
    /// A `Bulk` message, then `items` as a message of their own.
    Shared { bulk: Vec<u8>, items: Arc<Vec<u8>> },
}

#[derive(Default)]
struct State {
    /// What waits for the worker's agent; the last `Data` grows with what is written next.
    outgoing: Vec<Outgoing>,
    /// Answers not yet read by the scheduler.
    frames: VecDeque<RawFrame>,
    /// What was wrong with a message from the agent: nothing after it is read.
    broken: Option<String>,
    /// The worker exited and everything it sent is in `frames`.
    ended: bool,
    /// The scheduler let go of the worker: nothing more is kept for it.
    dropped: bool,
}

impl Relay {
    pub(crate) fn new(worker: u64, waker: Arc<Waker>) -> Result<Relay> {
        Ok(Relay {
            worker,
            waker,
            state: Mutex::new(State::default()),
            ready: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("eventfd", e))?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Readable while answers wait (the scheduler polls it as a worker's channel).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    fn signal(&self) {
        let _ = self.ready.write(1);
    }

    /// The MPI thread's side: the messages waiting for the agent.
    pub(super) fn take_outgoing(&self) -> Vec<Outgoing> {
        std::mem::take(&mut self.lock().outgoing)
    }

    /// The MPI thread's side: the frames of a `Data` message from the agent (`bytes`, whole
    /// frames one after the other). A message that is not that breaks the stream.
    pub(super) fn deliver_data(&self, bytes: &[u8]) {
        match split_frames(bytes) {
            Ok(frames) => self.deliver(frames),
            Err(why) => self.break_stream(why),
        }
    }

    /// The MPI thread's side: answers, in order.
    pub(super) fn deliver(&self, frames: impl IntoIterator<Item = RawFrame>) {
        let mut st = self.lock();
        if st.dropped || st.broken.is_some() || st.ended {
            return;
        }
        let was_empty = st.frames.is_empty();
        st.frames.extend(frames);
        if was_empty && !st.frames.is_empty() {
            self.signal();
        }
    }

    /// The MPI thread's side: the agent sent something that is not the pool's protocol.
    pub(super) fn break_stream(&self, why: String) {
        let mut st = self.lock();
        if st.broken.is_none() {
            st.broken = Some(why);
            self.signal();
        }
    }

    /// The MPI thread's side: the worker exited, after everything it sent.
    pub(super) fn end(&self) {
        let mut st = self.lock();
        if !st.ended {
            st.ended = true;
            self.signal();
        }
    }

    /// The scheduler let go of the worker.
    pub(super) fn drop_stream(&self) {
        let mut st = self.lock();
        st.dropped = true;
        st.outgoing.clear();
        st.frames.clear();
    }
}

impl Pipe for Relay {
    fn send(&self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return;
        }
        let mut st = self.lock();
        let first = st.outgoing.is_empty();
        let data = match st.outgoing.last_mut() {
            Some(Outgoing::Data(data)) => {
                data.reserve(len);
                data
            }
            _ => {
                st.outgoing
                    .push(Outgoing::Data(data_head(self.worker, len)));
                match st.outgoing.last_mut() {
                    Some(Outgoing::Data(data)) => data,
                    _ => unreachable!("just pushed"),
                }
            }
        };
        for p in parts {
            data.extend_from_slice(p);
        }
        drop(st);
        if first {
            self.waker.nudge();
        }
    }

    fn send_shared(&self, head: &[u8], items: &Arc<Vec<u8>>) {
        let bulk = Msg::Bulk {
            worker: self.worker,
            bytes: head,
        }
        .encode();
        let mut st = self.lock();
        let first = st.outgoing.is_empty();
        st.outgoing.push(Outgoing::Shared {
            bulk,
            items: items.clone(),
        });
        drop(st);
        if first {
            self.waker.nudge();
        }
    }

    fn recv(&self, reader: &mut FrameReader) -> Result<Option<usize>> {
        let mut st = self.lock();
        if let Some(why) = &st.broken {
            return Err(Error::protocol(format!(
                "a node agent relayed a malformed answer: {why}"
            )));
        }
        if st.frames.is_empty() {
            return Ok(if st.ended { Some(0) } else { None });
        }
        if !st.ended {
            // Everything waiting is taken now: readable again at the next delivery. (Once the
            // stream has ended the descriptor stays readable, for its end to be read.)
            let _ = self.ready.read();
        }
        let mut n = 0;
        for frame in st.frames.drain(..) {
            n += HEADER_LEN + frame.payload.len();
            reader.push_frame(frame);
        }
        Ok(Some(n))
    }
}

/// The frames of `bytes`, which must be whole frames one after the other, without descriptors.
pub(super) fn split_frames(mut bytes: &[u8]) -> std::result::Result<Vec<RawFrame>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err("a frame header was cut short".into());
        };
        let (len, nfds) = parse_header(head, wire::MAX_FRAME).map_err(|e| e.to_string())?;
        if nfds != 0 {
            return Err("an answer announced descriptors, which cannot leave its node".into());
        }
        if rest.len() < len {
            return Err(format!(
                "a frame announced {len} bytes but the message holds {}",
                rest.len()
            ));
        }
        frames.push(RawFrame {
            payload: rest[..len].to_vec(),
            fds: Vec::new(),
        });
        bytes = &rest[len..];
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::header;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = header(payload.len(), 0).to_vec();
        f.extend_from_slice(payload);
        f
    }

    fn relay() -> Relay {
        Relay::new(42, Arc::new(Waker::new().unwrap())).unwrap()
    }

    fn readable(r: &Relay) -> bool {
        let mut fds = [nix::poll::PollFd::new(r.fd(), nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 1
    }

    #[test]
    fn writes_gather_into_one_data_message_and_long_items_go_shared() {
        let r = relay();
        r.send(&[b"ab", b"c"]);
        r.send(&[b"d"]);
        let items = Arc::new(vec![5u8; 100]);
        r.send_shared(b"head", &items);
        r.send(&[b"e"]);
        let out = r.take_outgoing();
        assert_eq!(out.len(), 3);
        match &out[0] {
            Outgoing::Data(m) => assert_eq!(
                Msg::decode(m).unwrap(),
                Msg::Data {
                    worker: 42,
                    bytes: b"abcd"
                }
            ),
            Outgoing::Shared { .. } => panic!("data first"),
        }
        match &out[1] {
            Outgoing::Shared {
                bulk,
                items: shared,
            } => {
                assert_eq!(
                    Msg::decode(bulk).unwrap(),
                    Msg::Bulk {
                        worker: 42,
                        bytes: b"head"
                    }
                );
                assert!(Arc::ptr_eq(shared, &items), "the task's own buffer goes");
            }
            Outgoing::Data(_) => panic!("shared second"),
        }
        assert!(matches!(&out[2], Outgoing::Data(m) if m.ends_with(b"e")));
        assert!(r.take_outgoing().is_empty());
    }

    #[test]
    fn answers_are_read_in_order_then_the_end() {
        let r = relay();
        let mut reader = FrameReader::new(wire::MAX_FRAME);
        assert_eq!(r.recv(&mut reader).unwrap(), None);
        assert!(!readable(&r));
        let mut data = frame(b"one");
        data.extend(frame(b"two"));
        r.deliver_data(&data);
        r.deliver([RawFrame {
            payload: vec![3; 70_000],
            fds: Vec::new(),
        }]);
        assert!(readable(&r));
        assert_eq!(
            r.recv(&mut reader).unwrap(),
            Some(3 * HEADER_LEN + 6 + 70_000)
        );
        assert!(!readable(&r), "everything was taken");
        let lens: Vec<usize> = std::iter::from_fn(|| reader.next_frame().unwrap())
            .map(|f| f.payload.len())
            .collect();
        assert_eq!(lens, [3, 3, 70_000]);
        r.end();
        assert!(readable(&r));
        assert_eq!(r.recv(&mut reader).unwrap(), Some(0));
        assert!(readable(&r), "the end stays readable");
        r.deliver_data(&frame(b"late"));
        assert_eq!(r.recv(&mut reader).unwrap(), Some(0));
    }

    #[test]
    fn a_malformed_message_is_a_protocol_error_and_a_dropped_stream_keeps_nothing() {
        let r = relay();
        let mut reader = FrameReader::new(wire::MAX_FRAME);
        r.deliver_data(&frame(b"fine"));
        r.deliver_data(&[1, 2, 3]);
        assert!(readable(&r));
        let err = r.recv(&mut reader).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        assert!(r.recv(&mut reader).is_err(), "nothing after it is read");

        let r = relay();
        r.send(&[b"job"]);
        r.drop_stream();
        assert!(r.take_outgoing().is_empty());
        r.deliver_data(&frame(b"answer"));
        assert_eq!(r.recv(&mut reader).unwrap(), None);
    }

    #[test]
    fn whole_frames_are_split_and_anything_else_is_an_error() {
        let mut bytes = frame(b"one");
        bytes.extend(frame(b""));
        bytes.extend(frame(&[7; 70_000]));
        let frames = split_frames(&bytes).unwrap();
        let lens: Vec<usize> = frames.iter().map(|f| f.payload.len()).collect();
        assert_eq!(lens, [3, 0, 70_000]);
        assert_eq!(frames[0].payload, b"one");
        assert!(split_frames(&[]).unwrap().is_empty());

        let cut = split_frames(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(cut.contains("announced 70000 bytes"), "{cut}");
        assert!(split_frames(&bytes[..5]).unwrap_err().contains("cut short"));
        let mut bad_magic = frame(b"x");
        bad_magic[12] ^= 0xff;
        assert!(split_frames(&bad_magic).unwrap_err().contains("magic"));
        let mut with_fds = header(1, 1).to_vec();
        with_fds.push(0);
        assert!(split_frames(&with_fds).unwrap_err().contains("descriptors"));
        let mut huge = header(0, 0);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = split_frames(&huge).unwrap_err();
        assert!(err.contains("exceeds the maximum"), "{err}");
    }
}
