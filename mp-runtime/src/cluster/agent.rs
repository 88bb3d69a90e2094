//! A node agent: what a rank other than 0 runs instead of `main`. It keeps an ordinary local
//! pool of worker processes, started as rank 0 asks (with the local backend's launcher), and
//! relays each worker's byte stream to and from rank 0. It decides nothing: rank 0's scheduler
//! does (which job goes where, retries, replacements), as it does for a local pool.
//!
//! A worker's answers are forwarded frame by frame: short ones gathered into one `Data` message,
//! a long one as a `Frame` and its payload as a message of its own, sent from the buffer it was
//! read into (rank 0 receives it into the buffer its scheduler reads). A frame that carries
//! descriptors (a result holding an OS handle) cannot leave the node: it is replaced by an
//! answer that fails each of its items with a message that says so. When a worker process
//! exits (killed, crashed, or stopped), the agent reaps it and reports its exit code after the
//! last of its answers, so that rank 0 fails only the job it was running.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::time::TimeSpec;

use super::fingerprint;
use super::messages::{Hello, LaunchSpec, Msg, data_head};
use super::mpi_io::{AGENT_SPIN, Backoff, Comm, Waiting};
use super::outbox::{Flushed, Outbox};
use crate::error::{Error, Result};
use crate::pool::backend::{InitSpec, Launcher, Link, LocalLauncher};
use crate::pool::bulk::{AgentBulk, MIN_BULK};
use crate::pool::memory::MemoryLimits;
use crate::pool::wire::{self, Cursor};
use crate::registry;
use crate::transport::frame::{HEADER_LEN, header};
use crate::transport::reader::FrameReader;

/// The shortest answer payload sent as a message of its own rather than copied into a `Data`.
const OWN_MESSAGE: usize = 64 * 1024;

/// One local worker process and its stream.
struct Local {
    link: Box<dyn Link>,
    reader: FrameReader,
    /// Bytes from rank 0 not yet written to the worker.
    out: Outbox,
    /// The worker sent what it may not, or its socket failed: nothing more is read or written,
    /// only its exit is awaited.
    broken: bool,
    /// A write to the worker failed (it died with jobs unread): it is sent nothing more, but
    /// what it sent before, answers included, is still read to the end.
    gone: bool,
    /// Frames from rank 0 to the worker, counted as they pass.
    jobs: FrameCounter,
    /// `Done` frames the worker sent back.
    answered: u64,
    /// The areas shared with the worker for long jobs and answers: made for its first long job
    /// (a worker that never gets one costs no memory for them).
    bulk: Option<AgentBulk>,
    /// The areas could not be made: the worker is served on its socket alone.
    no_bulk: bool,
    /// Answers being sent from the bulk answer area, in order: where each ends, and whether its
    /// send has completed.
    in_flight: VecDeque<(u64, Arc<AtomicBool>)>,
}

/// The messages to rank 0 that carry one worker's frames, in order: short frames gathered into
/// one `Data` message, which goes before each long one (a `Frame`, then its payload alone).
struct ToRank0Messages {
    worker: u64,
    /// The `Data` message being gathered.
    data: Vec<u8>,
    /// The length of its head: it holds frames past that.
    head: usize,
    out: Vec<ToRank0>,
}

impl ToRank0Messages {
    fn new(worker: u64) -> Self {
        let data = data_head(worker, 0);
        ToRank0Messages {
            worker,
            head: data.len(),
            data,
            out: Vec::new(),
        }
    }

    /// Appends whole frames (header included) to the `Data` message.
    fn short(&mut self, frames: &[&[u8]]) {
        for f in frames {
            self.data.extend_from_slice(f);
        }
    }

    /// A long frame's payload of `len` bytes, after what was gathered.
    fn long(&mut self, len: usize, payload: ToRank0) {
        self.flush();
        let frame = Msg::Frame {
            worker: self.worker,
            len: len as u64,
        };
        self.out.push(ToRank0::Bytes(frame.encode()));
        self.out.push(payload);
    }

    fn flush(&mut self) {
        if self.data.len() > self.head {
            let next = data_head(self.worker, 0);
            self.out
                .push(ToRank0::Bytes(std::mem::replace(&mut self.data, next)));
        }
    }

    fn finish(mut self) -> Vec<ToRank0> {
        self.flush();
        self.out
    }
}

/// A message to rank 0 made of what a worker sent.
enum ToRank0 {
    Bytes(Vec<u8>),
    /// A long answer's payload, `len` bytes at `at` in the worker's bulk answer area, which it
    /// may use again past `end` once sent.
    InBulk {
        at: *const u8,
        len: usize,
        end: u64,
    },
}

/// Counts the frames in a byte stream that arrives in pieces (the jobs rank 0 sends a worker),
/// from their headers, without copying them.
#[derive(Default)]
struct FrameCounter {
    frames: u64,
    /// Bytes of the current frame's payload still to come.
    skip: u64,
    /// A header that arrived in part.
    head: Vec<u8>,
}

impl FrameCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let need = HEADER_LEN - self.head.len();
            let take = need.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() == HEADER_LEN {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.head[..8]);
                self.skip = u64::from_le_bytes(len);
                self.frames += 1;
                self.head.clear();
            }
        }
    }
}

impl Local {
    fn new(link: Box<dyn Link>) -> Local {
        Local {
            link,
            reader: FrameReader::new(wire::MAX_FRAME),
            out: Outbox::default(),
            broken: false,
            gone: false,
            jobs: FrameCounter::default(),
            answered: 0,
            bulk: None,
            no_bulk: false,
            in_flight: VecDeque::new(),
        }
    }

    /// Writes what the socket takes; true if it took something.
    fn write(&mut self) -> bool {
        if !self.takes_jobs() {
            return false;
        }
        match self.out.flush(self.link.channel()) {
            Flushed::Wrote => true,
            Flushed::Idle => false,
            Flushed::Gone => {
                // Not `broken`: the answers it wrote before it died are still to be read (and
                // its jobs are given back by rank 0 once its exit is known).
                self.gone = true;
                false
            }
        }
    }

    /// Whether jobs for the worker are still written to it.
    fn takes_jobs(&self) -> bool {
        !self.broken && !self.gone
    }

    /// Reads what the worker sent: the messages to rank 0 that carry its frames, in order.
    fn read(&mut self, rank: usize, worker: u64) -> Vec<ToRank0> {
        let mut out = ToRank0Messages::new(worker);
        self.read_frames(rank, &mut out);
        out.finish()
    }

    /// Where a `DoneBulk` says its answer lies: address, length and end, checked against the
    /// bulk answer area (`None` if it is not a valid one).
    fn answer_in_bulk(&mut self, payload: &[u8]) -> Option<(*const u8, usize, u64)> {
        let mut c = Cursor::new(payload);
        c.u8().ok()?;
        let (pos, len) = (c.uint().ok()?, c.usize().ok()?);
        let at = self.bulk.as_mut()?.answer(pos, len).ok()?;
        Some((at, len, pos + len as u64))
    }

    /// The worker's bulk areas, made and sent to it now if it has none yet and nothing waits to
    /// be written before them.
    fn bulk(&mut self) -> Option<&mut AgentBulk> {
        if self.bulk.is_none() && !self.no_bulk && self.takes_jobs() && self.out.is_empty() {
            match share_bulk(self.link.as_ref(), &mut self.out) {
                Ok(bulk) => self.bulk = bulk,
                Err(_) => self.no_bulk = true,
            }
        }
        self.bulk.as_mut()
    }

    /// Gives the worker back the room of the answers whose sends have completed, in order.
    fn free_sent(&mut self) {
        while let Some((end, done)) = self.in_flight.front() {
            if !done.load(Ordering::Acquire) {
                break;
            }
            if let Some(bulk) = &self.bulk {
                bulk.free_answers(*end);
            }
            self.in_flight.pop_front();
        }
    }

    /// [`Local::read`], into `out`.
    fn read_frames(&mut self, rank: usize, out: &mut ToRank0Messages) {
        if self.broken {
            return;
        }
        loop {
            match self.reader.fill(self.link.channel()) {
                Ok(Some(0)) | Ok(None) | Err(Error::Closed) => break,
                Ok(Some(_)) if self.reader.drained() => break,
                Ok(Some(_)) => {}
                Err(_) => {
                    self.broken = true;
                    break;
                }
            }
        }
        loop {
            match self.reader.next_frame() {
                Ok(Some(frame))
                    if frame.fds.is_empty() && frame.payload.first() == Some(&wire::DONE_BULK) =>
                {
                    let Some((at, len, end)) = self.answer_in_bulk(&frame.payload) else {
                        // Not where the worker may write: nothing it sends can be trusted.
                        self.broken = true;
                        self.link.kill();
                        return;
                    };
                    self.answered += 1;
                    out.long(len, ToRank0::InBulk { at, len, end });
                }
                Ok(Some(frame)) if frame.fds.is_empty() => {
                    if frame.payload.first() == Some(&wire::DONE) {
                        self.answered += 1;
                    }
                    if frame.payload.len() >= OWN_MESSAGE {
                        out.long(frame.payload.len(), ToRank0::Bytes(frame.payload));
                    } else {
                        out.short(&[&header(frame.payload.len(), 0), &frame.payload]);
                    }
                }
                Ok(Some(frame)) => match without_handles(&frame.payload, rank) {
                    Some(answer) => {
                        self.answered += 1;
                        out.short(&[&answer]);
                    }
                    None => {
                        self.broken = true;
                        self.link.kill();
                        return;
                    }
                },
                Ok(None) => return,
                Err(_) => {
                    // Not a frame of the pool's protocol: nothing after it can be trusted.
                    self.broken = true;
                    self.link.kill();
                    return;
                }
            }
        }
    }
}

/// A `Done` frame whose results carried descriptors, answered instead with a failure of each
/// item (`None` if the frame is not a `Done`).
fn without_handles(payload: &[u8], rank: usize) -> Option<Vec<u8>> {
    let mut c = Cursor::new(payload);
    if c.u8().ok()? != wire::DONE {
        return None;
    }
    let id = c.uint().ok()?;
    let mut elapsed = [0u8; 8];
    for b in &mut elapsed {
        *b = c.u8().ok()?;
    }
    let count = c.uint().ok()?;
    let message = format!(
        "the result carries OS handles (a connection, queue, lock, shared memory or Handle), \
         which cannot leave its node (rank {rank}); return plain data from workers of a \
         cluster pool"
    );
    let mut out = Vec::new();
    let at = wire::begin_frame(&mut out);
    out.push(wire::DONE);
    wire::put_uint(&mut out, id);
    out.extend_from_slice(&elapsed);
    wire::put_uint(&mut out, count);
    for _ in 0..count.min(1 << 20) {
        out.push(wire::TAG_FAILED);
        wire::put_bytes(&mut out, message.as_bytes());
    }
    wire::end_frame(&mut out, at, 0);
    Some(out)
}

/// Makes a worker's bulk areas and starts sending them to it, on a socket where nothing waits
/// to be written before them (what the socket does not take at once waits in `out`, the
/// descriptor having gone with the first byte). `Ok(None)` if the socket has no room now (try
/// again later), an error if the areas cannot be made or the socket failed.
fn share_bulk(link: &dyn Link, out: &mut Outbox) -> Result<Option<AgentBulk>> {
    let mut fds = [PollFd::new(link.channel(), PollFlags::POLLOUT)];
    let writable = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT));
    if !writable {
        return Ok(None);
    }
    let (bulk, memfd) = AgentBulk::create()?;
    let frame = wire::bulk_frame();
    let raw = [memfd.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&raw)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let iov = [std::io::IoSlice::new(&frame)];
    match sendmsg::<()>(link.channel().as_raw_fd(), &iov, &rights, flags, None) {
        Ok(n) => {
            out.push(frame, n);
            Ok(Some(bulk))
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(e) => Err(Error::sys("send", e)),
    }
}

/// Starts a local worker process as `spec` says.
fn launch_local(spec: &LaunchSpec, started: usize) -> Result<Box<dyn Link>> {
    let init = match &spec.init {
        None => None,
        Some((name, args)) => Some(InitSpec {
            name: registry::static_name(name).ok_or_else(|| Error::UnknownWorker {
                name: name.clone(),
                hint: " on this node agent".into(),
            })?,
            args: args.clone(),
            fds: Vec::new(),
        }),
    };
    LocalLauncher {
        method: spec.method,
        prefix: "ClusterWorker",
        init,
        started,
        faults: None,
        memory: MemoryLimits::from_wire(spec.memory),
    }
    .launch()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Serves rank 0 until it says `main` ended; returns the exit code it sent.
pub(crate) fn serve(comm: &mut Comm) -> i32 {
    let rank = comm.rank;
    let hello = Hello {
        cpus: crate::identity::cpu_count(),
        host: hostname(),
        lines: fingerprint::lines(),
    };
    comm.send(0, Msg::Hello(hello).encode());
    let mut workers: HashMap<u64, Local> = HashMap::new();
    let mut started = 0usize;
    let mut backoff = Backoff::new(AGENT_SPIN);
    let mut ready: Vec<(u64, bool, bool)> = Vec::new();
    loop {
        let mut busy = false;
        while let Some((from, bytes)) = comm.try_recv() {
            busy = true;
            let msg = match Msg::decode(&bytes) {
                Ok(m) if from == 0 => m,
                Ok(_) => continue,
                Err(e) => {
                    crate::sys::stderr_line(&format!(
                        "mp: node agent {rank}: bad message ignored: {e}"
                    ));
                    continue;
                }
            };
            match msg {
                Msg::Launch { worker, spec } => match launch_local(&spec, started) {
                    Ok(link) => {
                        started += 1;
                        let pid = link.pid();
                        workers.insert(worker, Local::new(link));
                        comm.send(0, Msg::Launched { worker, pid }.encode());
                    }
                    Err(e) => comm.send(
                        0,
                        Msg::LaunchFailed {
                            worker,
                            message: e.to_string(),
                        }
                        .encode(),
                    ),
                },
                Msg::Data {
                    worker,
                    bytes: data,
                } => {
                    if let Some(w) = workers.get_mut(&worker)
                        && w.takes_jobs()
                    {
                        w.jobs.feed(data);
                        let from = bytes.len() - data.len();
                        w.out.push(bytes, from);
                    }
                }
                Msg::Bulk {
                    worker,
                    bytes: head,
                } => {
                    // The items are the next message from rank 0, whoever they are for: into
                    // the worker's bulk job area if it has room, as bytes otherwise.
                    let mut w = workers.get_mut(&worker).filter(|w| w.takes_jobs());
                    let mut placed = None;
                    let got = comm.recv_placed(0, |len| {
                        if len < MIN_BULK || head.len() < HEADER_LEN {
                            return None;
                        }
                        let bulk = w.as_mut()?.bulk()?;
                        let (pos, at) = bulk.reserve_job(len).ok()??;
                        placed = Some(pos);
                        // SAFETY: `reserve_job` gave `len` bytes of the job area at `at`, which
                        // the worker neither reads nor writes before the job is announced, and
                        // which stay mapped while `bulk` lives (past this receive).
                        Some(unsafe { std::slice::from_raw_parts_mut(at, len) })
                    });
                    let Some(w) = w else { continue };
                    match (got, placed) {
                        (Ok(len), Some(pos)) => {
                            let job = &head[HEADER_LEN..];
                            let frame = wire::bulk_span_frame(wire::JOB_BULK, pos, len, job);
                            w.jobs.feed(&frame);
                            w.out.push(frame, 0);
                        }
                        (Err(items), _) => {
                            w.jobs.feed(head);
                            w.jobs.feed(&items);
                            let from = bytes.len() - head.len();
                            w.out.push(bytes, from);
                            w.out.push(items, 0);
                        }
                        (Ok(_), None) => unreachable!("placed when received in place"),
                    }
                }
                Msg::Kill { worker } => {
                    if let Some(w) = workers.get(&worker) {
                        w.link.kill();
                    }
                }
                Msg::Shutdown { code } => {
                    for w in workers.values() {
                        w.link.kill();
                    }
                    for (_, mut w) in workers.drain() {
                        w.link.reap();
                    }
                    comm.send(0, Msg::Bye.encode());
                    comm.flush();
                    return code;
                }
                other => crate::sys::stderr_line(&format!(
                    "mp: node agent {rank}: unexpected message ignored: {other:?}"
                )),
            }
        }
        for w in workers.values_mut() {
            busy |= w.write();
        }
        for &(worker, readable, exited) in &ready {
            let Some(w) = workers.get_mut(&worker) else {
                continue;
            };
            if readable || exited {
                for msg in w.read(rank, worker) {
                    busy = true;
                    match msg {
                        ToRank0::Bytes(bytes) => comm.send(0, bytes),
                        ToRank0::InBulk { at, len, end } => {
                            let done = Arc::new(AtomicBool::new(false));
                            let keep = w.bulk.as_ref().expect("checked").keep_mapped();
                            // SAFETY: `at..at + len` was checked to lie in the answer area that
                            // `keep` maps, and the worker writes none of it until the agent
                            // frees it, after `done` (`Local::free_sent`).
                            unsafe { comm.send_mapped(0, at, len, keep, done.clone()) };
                            w.in_flight.push_back((end, done));
                        }
                    }
                }
            }
            if exited {
                busy = true;
                let mut w = workers.remove(&worker).expect("present");
                let code = w.link.reap();
                comm.send(0, Msg::Exited { worker, code }.encode());
            }
        }
        // A send in progress bounds the wait, but is no activity to spin for (`SENDING_WAIT`).
        let sending = comm.progress();
        for w in workers.values_mut() {
            w.free_sent();
        }
        if busy {
            backoff.active();
        }
        // While a worker has jobs in hand, its answer wakes this thread: no need to spin on MPI
        // for the next job then.
        let working = workers
            .values()
            .any(|w| w.takes_jobs() && w.jobs.frames > w.answered);
        let waiting = Waiting {
            answer: false,
            spin: !working,
            sending,
        };
        ready = wait(&workers, backoff.next_wait(waiting));
    }
}

/// Polls the workers' sockets and sentinels for up to `timeout`: (worker, readable, exited).
fn wait(workers: &HashMap<u64, Local>, timeout: std::time::Duration) -> Vec<(u64, bool, bool)> {
    let mut ids = Vec::with_capacity(workers.len());
    let mut fds = Vec::with_capacity(2 * workers.len());
    for (&id, w) in workers {
        let mut flags = PollFlags::empty();
        if !w.broken {
            flags |= PollFlags::POLLIN;
        }
        if w.takes_jobs() && !w.out.is_empty() {
            flags |= PollFlags::POLLOUT;
        }
        ids.push(id);
        fds.push(PollFd::new(w.link.channel(), flags));
        fds.push(PollFd::new(w.link.sentinel(), PollFlags::POLLIN));
    }
    let ts = TimeSpec::from_duration(timeout);
    if nix::poll::ppoll(&mut fds, Some(ts), None).is_err() {
        return Vec::new();
    }
    let rd = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
    let hit = |f: &PollFd<'_>, m: PollFlags| f.revents().is_some_and(|r| r.intersects(m));
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            let c = &fds[2 * i];
            let s = &fds[2 * i + 1];
            (
                id,
                hit(c, rd) && !workers[&id].broken,
                hit(s, rd | PollFlags::POLLNVAL),
            )
        })
        .filter(|(_, r, e)| *r || *e)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

    use super::*;

    /// A worker's end of its stream, for [`Local::read`].
    struct FakeLink(OwnedFd, OwnedFd);

    impl Link for FakeLink {
        fn pid(&self) -> i32 {
            0
        }
        fn channel(&self) -> BorrowedFd<'_> {
            self.0.as_fd()
        }
        fn sentinel(&self) -> BorrowedFd<'_> {
            self.1.as_fd()
        }
        fn kill(&self) {}
        fn reap(&mut self) -> i32 {
            0
        }
    }

    #[test]
    fn long_answers_go_alone_between_the_short_ones_in_order() {
        let (ours, theirs) = crate::transport::socket::bulk_stream_pair().unwrap();
        let (sentinel, _keep) = crate::transport::socket::stream_pair().unwrap();
        crate::sys::fd::set_nonblocking(ours.as_fd(), true).unwrap();
        let payloads: Vec<Vec<u8>> = [5usize, 9, OWN_MESSAGE, 2, 200_000, OWN_MESSAGE - 1]
            .iter()
            .enumerate()
            .map(|(k, &n)| vec![k as u8; n])
            .collect();
        let sent = payloads.clone();
        let writer = std::thread::spawn(move || {
            for p in &sent {
                crate::transport::frame::send_frame(theirs.as_fd(), p, &[]).unwrap();
            }
            theirs
        });
        let mut w = Local::new(Box::new(FakeLink(ours, sentinel)));
        let mut msgs = Vec::new();
        let total: usize = payloads.iter().map(Vec::len).sum();
        while msgs.iter().map(Vec::len).sum::<usize>() < total {
            msgs.extend(w.read(1, 77).into_iter().map(|m| match m {
                ToRank0::Bytes(b) => b,
                ToRank0::InBulk { .. } => panic!("no bulk areas here"),
            }));
        }
        drop(writer.join().unwrap());
        let mut got: Vec<Vec<u8>> = Vec::new();
        let (mut i, mut long) = (0, 0);
        while i < msgs.len() {
            match Msg::decode(&msgs[i]).unwrap() {
                Msg::Data { worker: 77, bytes } => {
                    got.extend(
                        crate::cluster::relay::split_frames(bytes)
                            .unwrap()
                            .into_iter()
                            .map(|f| f.payload),
                    );
                    i += 1;
                }
                Msg::Frame { worker: 77, len } => {
                    long += 1;
                    assert_eq!(msgs[i + 1].len() as u64, len);
                    got.push(msgs[i + 1].clone());
                    i += 2;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, payloads);
        assert_eq!(long, 2, "the long answers are messages of their own");
    }

    /// A worker that answers a job and then dies with more jobs unread: the agent's next write
    /// fails, and the answer it sent before still goes to rank 0 (else its job would be
    /// reported as the one it died in, and the job it did die in run again).
    #[test]
    fn the_answers_of_a_worker_that_died_with_jobs_unread_are_still_read() {
        let (ours, theirs) = crate::transport::socket::stream_pair().unwrap();
        let (sentinel, _keep) = crate::transport::socket::stream_pair().unwrap();
        crate::sys::fd::set_nonblocking(ours.as_fd(), true).unwrap();
        let mut w = Local::new(Box::new(FakeLink(ours, sentinel)));
        let answer = [wire::DONE, 1, 2, 3];
        crate::transport::frame::send_frame(theirs.as_fd(), &answer, &[]).unwrap();
        drop(theirs);
        let mut job = header(3, 0).to_vec();
        job.extend([9, 9, 9]);
        w.jobs.feed(&job);
        w.out.push(job, 0);
        assert!(!w.write(), "the worker is gone");
        assert!(!w.takes_jobs());
        let msgs = w.read(1, 77);
        assert_eq!(w.answered, 1);
        let [ToRank0::Bytes(msg)] = msgs.as_slice() else {
            panic!("one message")
        };
        let Msg::Data { worker: 77, bytes } = Msg::decode(msg).unwrap() else {
            panic!("a Data message")
        };
        let frames = crate::cluster::relay::split_frames(bytes).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload, answer);
    }

    #[test]
    fn frames_are_counted_across_pieces() {
        let mut stream = Vec::new();
        for len in [0usize, 5, 70_000] {
            stream.extend_from_slice(&header(len, 0));
            stream.extend(std::iter::repeat_n(7u8, len));
        }
        for piece in [1, 3, 16, 17, 4096, stream.len()] {
            let mut c = FrameCounter::default();
            for part in stream.chunks(piece) {
                c.feed(part);
            }
            assert_eq!(
                (c.frames, c.skip, c.head.len()),
                (3, 0, 0),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn an_answer_with_handles_becomes_a_failure_of_each_item() {
        let mut payload = vec![wire::DONE];
        wire::put_uint(&mut payload, 42);
        payload.extend_from_slice(&7u64.to_le_bytes());
        wire::put_uint(&mut payload, 2);
        payload.extend_from_slice(&[wire::TAG_OK, 1, 0]);
        let frame = without_handles(&payload, 3).unwrap();
        let body = &frame[crate::transport::frame::HEADER_LEN..];
        let mut c = Cursor::new(body);
        assert_eq!(c.u8().unwrap(), wire::DONE);
        assert_eq!(c.uint().unwrap(), 42);
        for _ in 0..8 {
            c.u8().unwrap();
        }
        assert_eq!(c.uint().unwrap(), 2);
        for _ in 0..2 {
            assert_eq!(c.u8().unwrap(), wire::TAG_FAILED);
            assert!(
                c.string()
                    .unwrap()
                    .contains("cannot leave its node (rank 3)")
            );
        }
        assert!(without_handles(&[wire::INIT_FAILED], 3).is_none());
        assert!(without_handles(&[], 3).is_none());
    }
}
