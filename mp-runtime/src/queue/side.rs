//! The side channel of a queue: what shared memory cannot hold.
//!
//! Descriptors (the handles inside an item, or the memfd of an item over 16 MiB) travel in
//! *frames*: one datagram of a `SOCK_SEQPACKET` socket holding an 8-byte tag, with the
//! descriptors attached as SCM_RIGHTS. A producer sends the frame before it publishes the ring
//! record that names the frame's tag. Tags are unique and increase in send order: a number taken
//! by a producer that died before publishing is never given out again.
//!
//! **Where frames wait.** The send buffer of one socket holds a few hundred small frames, so a
//! queue of handles keeps its frames in *segments*, socket pairs of their own, each with a fresh
//! send buffer. The queue's own socket pair carries two streams of frames: the *spine* (sent on
//! `a`, received on `b`) holds the receiving end of every segment, oldest first, and the *park*
//! (sent on `b`, received on `a`) holds the sending end of the segment producers append to. Every
//! process holding the queue reaches both with `MSG_PEEK`, which copies a frame's descriptors
//! into the caller without taking the frame; each process caches the two ends it uses. A full
//! segment is followed by a new one, so a queue holds (spine frames) × (segment frames) items
//! with descriptors: at least 278 × 278 with the kernel's default socket limits, 10,923 × 10,923
//! where `net.core.wmem_max` allows 4 MiB buffers. The real bound is usually the kernel's limit
//! on descriptors in flight per user (the open-file limit, `ulimit -n`, unless privileged); past
//! either one, [`Side::send`] reports [`Sent::NoRoom`] at once instead of blocking.
//!
//! **Hand-over.** A consumer peeks the frame of the record it takes ([`Side::peek`]), commits the
//! record in the ring, and only then removes the frame ([`Side::consume`]). Killed before the
//! commit, it leaves the queue as it was; killed after, it leaves a frame whose tag is older than
//! every pending record's, which the next consumer drops. A producer killed between sending a
//! frame and publishing its record leaves such a frame too. Whatever the point of death, no
//! frame is lost and none is delivered twice.
//!
//! Every function here runs under the ring's lock for its side (producers for `send`, consumers
//! for `peek`/`consume`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use super::crash;
use crate::error::{Error, Result};
use crate::transport::frame::MAX_FDS;
use crate::transport::socket::grow_send_buffer;

/// Send buffer asked for the spine (the kernel caps it at `net.core.wmem_max`).
const SPINE_SNDBUF: usize = 4 << 20;
/// Send buffer asked for each segment. Unit tests use the smallest the kernel gives, so that
/// segments fill after a few frames and every path through a change of segment is exercised.
const SEGMENT_SNDBUF: usize = if cfg!(test) { 1 } else { SPINE_SNDBUF };

/// The side channel's words in the ring's shared header, written by producers only.
#[repr(C)]
#[derive(Default)]
pub(crate) struct SideWords {
    /// The tag of the next frame (tags start at 1; 0 means "no frame").
    next_tag: AtomicU64,
    /// The number of the next segment to create (segments are numbered from 1).
    next_segment: AtomicU64,
    /// The segment producers append to; 0 before the first.
    current: AtomicU64,
}

/// One process's end of a queue's side channel.
#[derive(Debug)]
pub(crate) struct Side {
    /// Sends spine frames, receives park frames.
    a: OwnedFd,
    /// Sends park frames, receives spine frames.
    b: OwnedFd,
    cache: Mutex<Cache>,
}

/// The segment ends this process uses, with their numbers.
#[derive(Debug, Default)]
struct Cache {
    /// The sending end of the segment producers append to.
    tx: Option<(u64, OwnedFd)>,
    /// The receiving end of the oldest segment consumers read.
    rx: Option<(u64, OwnedFd)>,
}

/// How [`Side::send`] ended.
pub(crate) enum Sent {
    /// The frame is in place, with this tag.
    Tag(u64),
    /// The kernel's limit on descriptors in flight, or the queue's on segments, was reached.
    NoRoom,
}

/// A frame as received: its tag and descriptors.
struct Frame {
    tag: u64,
    fds: Vec<OwnedFd>,
}

impl Side {
    /// A new side channel.
    pub(crate) fn create() -> Result<Side> {
        let (a, b) = seqpacket_pair()?;
        grow_send_buffer(&a, SPINE_SNDBUF);
        Ok(Side::from_fds(a, b))
    }

    /// The side channel of a queue received from another process.
    pub(crate) fn from_fds(a: OwnedFd, b: OwnedFd) -> Side {
        Side {
            a,
            b,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The two ends of the queue's socket pair, for sending the queue to another process.
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.a.as_fd(), self.b.as_fd()]
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a frame carrying `fds` and returns its tag (producers' lock held). Never blocks.
    pub(crate) fn send(&self, w: &SideWords, fds: &[RawFd]) -> Result<Sent> {
        if fds.len() > MAX_FDS {
            return Err(Error::InvalidArgument {
                message: format!(
                    "a queue item can carry at most {MAX_FDS} handles, counting the memory of an \
                     item over 16 MiB as one"
                ),
            });
        }
        let tag = w.next_tag.fetch_add(1, Ordering::Relaxed) + 1;
        crash::point();
        let mut cache = self.cache();
        // A fresh segment always takes the frame, so the second round ends the loop.
        for _ in 0..2 {
            let current = w.current.load(Ordering::Acquire);
            let tx = match &cache.tx {
                Some((n, fd)) if *n == current && current != 0 => Some(fd.as_fd()),
                _ => {
                    cache.tx = self.parked_tx(current)?.map(|fd| (current, fd));
                    cache.tx.as_ref().map(|(_, fd)| fd.as_fd())
                }
            };
            if let Some(tx) = tx {
                match send_tagged(tx, tag, fds) {
                    Ok(true) => {
                        crash::point();
                        return Ok(Sent::Tag(tag));
                    }
                    Ok(false) => {}
                    Err(Errno::ETOOMANYREFS) => return Ok(Sent::NoRoom),
                    Err(e) => return Err(Error::sys("send a queue item's handles", e)),
                }
            }
            match self.new_segment(w)? {
                Some(seg) => cache.tx = Some(seg),
                None => return Ok(Sent::NoRoom),
            }
        }
        Ok(Sent::NoRoom)
    }

    /// The sending end of segment `current` from the park, dropping older park frames.
    fn parked_tx(&self, current: u64) -> Result<Option<OwnedFd>> {
        if current == 0 {
            return Ok(None);
        }
        while let Some(f) = recv_tagged(self.a.as_fd(), true)? {
            if f.tag == current && f.fds.len() == 1 {
                return Ok(f.fds.into_iter().next());
            }
            recv_tagged(self.a.as_fd(), false)?;
            crash::point();
        }
        Ok(None)
    }

    /// Starts a new segment and makes it the current one; `None` if the spine is full.
    fn new_segment(&self, w: &SideWords) -> Result<Option<(u64, OwnedFd)>> {
        let n = w.next_segment.fetch_add(1, Ordering::Relaxed) + 1;
        crash::point();
        let (rx, tx) = seqpacket_pair()?;
        grow_send_buffer(&tx, SEGMENT_SNDBUF);
        match send_tagged(self.a.as_fd(), n, &[rx.as_raw_fd()]) {
            Ok(true) => {}
            Ok(false) | Err(Errno::ETOOMANYREFS) => return Ok(None),
            Err(e) => return Err(Error::sys("send a queue segment", e)),
        }
        crash::point();
        match send_tagged(self.b.as_fd(), n, &[tx.as_raw_fd()]) {
            Ok(true) => {}
            Ok(false) | Err(Errno::ETOOMANYREFS) => return Ok(None),
            Err(e) => return Err(Error::sys("park a queue segment", e)),
        }
        crash::point();
        w.current.store(n, Ordering::Release);
        crash::point();
        // Drop the frames of older segments from the park (the new one's is last).
        while let Some(f) = recv_tagged(self.a.as_fd(), true)? {
            if f.tag == n {
                break;
            }
            recv_tagged(self.a.as_fd(), false)?;
            crash::point();
        }
        Ok(Some((n, tx)))
    }

    /// Copies of the descriptors of frame `tag` (consumers' lock held), leaving the frame in
    /// place until [`Side::consume`]. Frames older than `tag` are dropped on the way. `None`
    /// if the frame is not there (which the hand-over protocol rules out: only a process
    /// writing outside it could cause that).
    pub(crate) fn peek(&self, w: &SideWords, tag: u64) -> Result<Option<Vec<OwnedFd>>> {
        let mut cache = self.cache();
        loop {
            if cache.rx.is_none() {
                match recv_tagged(self.b.as_fd(), true)? {
                    Some(f) if f.fds.len() == 1 => {
                        cache.rx = f.fds.into_iter().next().map(|fd| (f.tag, fd));
                    }
                    Some(_) => return Err(bad_frame()),
                    None => return Ok(None),
                }
            }
            let Some((segment, rx)) = &cache.rx else {
                return Ok(None);
            };
            let segment = *segment;
            // Read before looking into the segment: once producers moved on from it, nothing
            // more arrives there, so finding it empty means it is finished.
            let current = w.current.load(Ordering::Acquire);
            match recv_tagged(rx.as_fd(), true)? {
                Some(f) if f.tag < tag => {
                    recv_tagged(rx.as_fd(), false)?;
                    crash::point();
                }
                Some(f) if f.tag == tag => return Ok(Some(f.fds)),
                Some(_) => return Ok(None),
                None if segment != current => {
                    // Finished and empty: drop it from the spine (unless another consumer did).
                    if let Some(f) = recv_tagged(self.b.as_fd(), true)?
                        && f.tag == segment
                    {
                        recv_tagged(self.b.as_fd(), false)?;
                        crash::point();
                    }
                    cache.rx = None;
                }
                None => return Ok(None),
            }
        }
    }

    /// Removes frame `tag`, found by [`Side::peek`], once its record is committed.
    pub(crate) fn consume(&self, tag: u64) {
        let cache = self.cache();
        if let Some((_, rx)) = &cache.rx
            && let Ok(Some(f)) = recv_tagged(rx.as_fd(), true)
            && f.tag == tag
        {
            let _ = recv_tagged(rx.as_fd(), false);
        }
    }
}

/// A connected pair of `SOCK_SEQPACKET` sockets, close-on-exec.
fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::io("socketpair", e))
}

/// Sends one frame without blocking: false if the socket's buffer is full.
fn send_tagged(sock: BorrowedFd<'_>, tag: u64, fds: &[RawFd]) -> std::result::Result<bool, Errno> {
    let bytes = tag.to_le_bytes();
    let iov = [std::io::IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Receives (or with `peek`, copies) the next frame without blocking; `None` if there is none.
fn recv_tagged(sock: BorrowedFd<'_>, peek: bool) -> Result<Option<Frame>> {
    let mut flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    if peek {
        flags |= MsgFlags::MSG_PEEK;
    }
    let mut buf = [0u8; 16];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS + 1]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(|_| bad_frame())? {
                    if let ControlMessageOwned::ScmRights(raws) = c {
                        for raw in raws {
                            // SAFETY: recvmsg just installed `raw` in this process for this
                            // message; nothing else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(Error::io(
                        "receive a queue item's handles (this process has too many open files; \
                         close some or raise its limit with ulimit -n)",
                        Errno::EMFILE,
                    ));
                }
                // Zero bytes: a segment whose every sending end is closed, read to its end.
                if msg.bytes == 0 {
                    return Ok(None);
                }
                if msg.bytes != 8 || msg.flags.contains(MsgFlags::MSG_TRUNC) {
                    return Err(bad_frame());
                }
                let tag = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                return Ok(Some(Frame { tag, fds }));
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(Error::sys("receive a queue item's handles", e)),
        }
    }
}

fn bad_frame() -> Error {
    Error::protocol(
        "a queue's side channel holds a frame mp did not write (a process wrote outside the \
         queue's protocol)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn send(side: &Side, w: &SideWords, fd: &OwnedFd) -> u64 {
        match side.send(w, &[fd.as_raw_fd()]).unwrap() {
            Sent::Tag(t) => t,
            Sent::NoRoom => panic!("no room"),
        }
    }

    #[test]
    fn frames_cross_many_segments_in_order() {
        let (side, w) = (Side::create().unwrap(), SideWords::default());
        let fd = dev_null();
        let tags: Vec<u64> = (0..200).map(|_| send(&side, &w, &fd)).collect();
        assert!(w.current.load(Ordering::Relaxed) > 3, "segments filled up");
        for t in tags {
            assert_eq!(side.peek(&w, t).unwrap().map(|f| f.len()), Some(1));
            side.consume(t);
        }
        // Everything was taken: the next tag is not there.
        assert!(side.peek(&w, 10_000).unwrap().is_none());
    }

    #[test]
    fn a_frame_peeked_but_not_consumed_is_found_again_and_stale_ones_are_dropped() {
        let (side, w) = (Side::create().unwrap(), SideWords::default());
        let fd = dev_null();
        let tags: Vec<u64> = (0..20).map(|_| send(&side, &w, &fd)).collect();
        assert!(side.peek(&w, tags[0]).unwrap().is_some());
        assert!(side.peek(&w, tags[0]).unwrap().is_some());
        // Tags 0..10 were taken by consumers that died before removing their frames.
        assert!(side.peek(&w, tags[10]).unwrap().is_some());
        side.consume(tags[10]);
        for t in &tags[11..] {
            assert!(side.peek(&w, *t).unwrap().is_some());
            side.consume(*t);
        }
    }

    #[test]
    fn a_missing_frame_is_reported_not_waited_for() {
        let (side, w) = (Side::create().unwrap(), SideWords::default());
        assert!(side.peek(&w, 1).unwrap().is_none());
        let fd = dev_null();
        let t = send(&side, &w, &fd);
        assert!(side.peek(&w, t + 1).unwrap().is_none());
        assert!(
            side.peek(&w, t).unwrap().is_none(),
            "dropped as older than t + 1"
        );
    }
}
