//! The scheduler: one thread per pool that hands queued tasks to workers and routes their
//! results, and the state it shares with the threads that submit tasks.
//!
//! Each worker has its own duplex socket, and a local worker also its lanes, two rings in
//! shared memory that carry jobs and answers without a system call while both sides are awake
//! (`lane`): the socket then carries what memory cannot (descriptors, long messages) and the
//! wake-ups of a side that sleeps. A remote worker's stream travels in memory to and from the
//! thread that relays it to its machine (`Link::pipe`), its descriptor only saying when answers
//! wait. The owner of every task is known: when a worker's
//! sentinel fires, the scheduler reads what the worker still managed to send, fails the one job
//! it was running with [`Error::WorkerDied`], puts the jobs it had not started back at the front
//! of the queue, and starts a replacement. There is no shared queue whose lock a dying worker
//! could hold. Writes to workers are non-blocking and buffered, so a worker that does not read
//! never blocks the scheduler from reading the others.
//!
//! A worker may hold several jobs at once (sent ahead, so that it never waits for a round trip
//! between short jobs): up to 64 when jobs take microseconds, 2 when they take 100 µs or more,
//! so that long jobs still spread evenly over the workers (a backend whose workers are further
//! than a socket away asks for more, `Launcher::work_ahead`).
//!
//! A worker that cannot be started (process or descriptor limit) is tried again after a backoff
//! (10 ms doubling to 1 s), timed by the scheduler's own poll, until the pool is whole again (or,
//! for an executor, has the workers its queue needs). While no worker at all is running, a failed
//! start fails the queued tasks with [`Error::PoolBroken`] carrying the start error instead of
//! leaving them waiting; tasks submitted later wait for the next attempt.
//!
//! While the scheduler sleeps it publishes its idle workers; a thread submitting a task then
//! writes it to one of them itself (under the shared lock) instead of waking the scheduler to do
//! it, and the scheduler records the task as held by that worker when the answer wakes it. That
//! saves one thread wake-up per round trip of a lone task.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::backend::{Launcher, Link, Pipe};
use super::intensity::{Deaths, Intensity};
use super::lane::{Lanes, Record};
use super::wire::{self, Cursor};
use crate::error::{Error, Result, WorkerError};
use crate::sys::poll::Deadline;
use crate::sys::spin_wait::SpinWait;
use crate::transport::frame::MAX_FDS;
use crate::transport::frame::{HEADER_LEN, header};
use crate::transport::reader::{FrameReader, RawFrame, take_fds};

/// One item's result as it arrived: the encoded value and its descriptors, or the error.
pub(crate) type ItemResult<'a> = Result<(&'a [u8], Vec<OwnedFd>)>;

/// What a task produced.
pub(crate) enum ChunkResult<'a> {
    /// One result per item, in order.
    Items(Vec<ItemResult<'a>>),
    /// A batch chunk's results as one encoded `Vec`, or the error that failed the chunk.
    Batch(ItemResult<'a>),
    /// The results of a chunk one of whose items ran out of time: those of the other items
    /// (sent again without it), and that item's position and error.
    Hole {
        /// The other items' results.
        rest: Box<ChunkResult<'a>>,
        /// Where the item that ran out of time stands in its chunk.
        at: usize,
        /// Its error.
        error: Error,
    },
}

impl ChunkResult<'_> {
    /// How many results it holds, one per item (`None` for a batch's single result or a hole).
    pub(crate) fn items(&self) -> Option<usize> {
        match self {
            ChunkResult::Items(v) => Some(v.len()),
            ChunkResult::Batch(_) | ChunkResult::Hole { .. } => None,
        }
    }
}

/// Where nothing goes: the results of a task already completed as terminated.
struct Nowhere;

impl Sink for Nowhere {
    fn complete(&self, _chunk: usize, _results: ChunkResult<'_>) {}
}

/// Where the results of a task go (an `AsyncResult`, a `map`, an `imap` iterator, …).
pub(crate) trait Sink: Send + Sync {
    /// The results of chunk `chunk`. Called exactly once per task, on the scheduler thread or on
    /// the thread that cancels or fails the task.
    fn complete(&self, chunk: usize, results: ChunkResult<'_>);

    /// Whether this sink keeps results for another thread to decode: a worker's answer then
    /// goes to [`complete_answer`](Sink::complete_answer), whole, instead of to
    /// [`complete`](Sink::complete), so that no result is copied out of it.
    fn keeps_answers(&self) -> bool {
        false
    }

    /// The results of chunk `chunk` as a worker answered them, with the answer's bytes (for a
    /// sink that [keeps answers](Sink::keeps_answers)).
    fn complete_answer(&self, chunk: usize, mut answer: Answer) {
        self.complete(chunk, answer.view());
    }
}

/// Where one item's result lies in its [`Answer`], or the error.
pub(crate) type SpannedResult = Result<(std::ops::Range<usize>, Vec<OwnedFd>)>;

/// A worker's answer to one task, owned: its bytes and where each result lies in them.
pub(crate) struct Answer {
    payload: Vec<u8>,
    results: SpannedResults,
}

enum SpannedResults {
    Items(Vec<SpannedResult>),
    Batch(SpannedResult),
}

impl Answer {
    /// Where `results`, read from `payload`, lie in it (`None` if one lies outside, or for a
    /// hole, which no answer holds).
    fn spans(payload: &[u8], results: ChunkResult<'_>) -> Option<SpannedResults> {
        let base = payload.as_ptr() as usize;
        let span = |r: ItemResult<'_>| -> Option<SpannedResult> {
            Some(match r {
                Ok((bytes, fds)) => {
                    let from = (bytes.as_ptr() as usize).checked_sub(base)?;
                    let to = from
                        .checked_add(bytes.len())
                        .filter(|&to| to <= payload.len())?;
                    Ok((from..to, fds))
                }
                Err(e) => Err(e),
            })
        };
        Some(match results {
            ChunkResult::Items(v) => {
                SpannedResults::Items(v.into_iter().map(span).collect::<Option<_>>()?)
            }
            ChunkResult::Batch(r) => SpannedResults::Batch(span(r)?),
            ChunkResult::Hole { .. } => return None,
        })
    }

    /// How many results it holds, one per item (`None` for a batch's single result).
    pub(crate) fn items(&self) -> Option<usize> {
        match &self.results {
            SpannedResults::Items(v) => Some(v.len()),
            SpannedResults::Batch(_) => None,
        }
    }

    /// The results, borrowing their bytes; the descriptors and errors move out (a second view
    /// sees none).
    pub(crate) fn view(&mut self) -> ChunkResult<'_> {
        let payload = &self.payload;
        let look = |r: &mut SpannedResult| -> ItemResult<'_> {
            match r {
                Ok((span, fds)) => Ok((&payload[span.clone()], std::mem::take(fds))),
                Err(e) => Err(std::mem::replace(e, Error::Timeout)),
            }
        };
        match &mut self.results {
            SpannedResults::Items(v) => ChunkResult::Items(v.iter_mut().map(look).collect()),
            SpannedResults::Batch(r) => ChunkResult::Batch(look(r)),
        }
    }
}

/// Encoded arguments of a task. Per item `nfds len bytes`, or for a batch chunk the encoded
/// `Vec` of argument tuples (its descriptors in `fds`).
pub(crate) struct Chunk {
    /// Shared, so that a send to a remote worker goes out from here while the task keeps them
    /// (to send again if the worker dies first).
    pub(crate) items: Arc<Vec<u8>>,
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) nitems: usize,
    pub(crate) batch: bool,
}

/// A unit of work: one or more items (a chunk) for one registered worker.
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) worker: &'static str,
    pub(crate) index: usize,
    pub(crate) chunk: Chunk,
    pub(crate) sink: Arc<dyn Sink>,
    /// Set when the task is handed to a worker (the executor's `running()`).
    pub(crate) started: Option<Arc<AtomicBool>>,
    /// The time limit of each item in nanoseconds (0: the pool's, if any). Kept in 8 bytes:
    /// tasks move by value through the scheduler.
    limit_ns: u64,
    /// A worker holds this task, which was terminated: its outcome (`Cancelled`) is delivered,
    /// and the worker is killed when it starts it (see [`Core::terminate_task`]).
    terminated: bool,
}

impl Task {
    pub(crate) fn new(
        worker: &'static str,
        index: usize,
        chunk: Chunk,
        sink: Arc<dyn Sink>,
    ) -> Self {
        Task {
            id: 0,
            worker,
            index,
            chunk,
            sink,
            started: None,
            limit_ns: 0,
            terminated: false,
        }
    }

    /// The placeholder left in a worker's queue for a terminated task: same id (the worker
    /// answers it in order, if it gets to it), nothing to deliver to.
    fn tombstone(&self) -> Task {
        let chunk = Chunk {
            items: Arc::default(),
            fds: Vec::new(),
            nitems: self.chunk.nitems,
            batch: self.chunk.batch,
        };
        let mut t = Task::new(self.worker, self.index, chunk, Arc::new(Nowhere));
        t.id = self.id;
        t.terminated = true;
        t
    }

    /// The same task with a time limit of its own for each item.
    pub(crate) fn with_limit(mut self, limit: Option<Duration>) -> Self {
        self.limit_ns = limit.map_or(0, |l| l.as_nanos().clamp(1, u64::MAX as u128) as u64);
        self
    }

    /// The time limit of each item, if any.
    pub(crate) fn limit(&self) -> Option<Duration> {
        (self.limit_ns > 0).then(|| Duration::from_nanos(self.limit_ns))
    }

    /// Completes every item of the task with the error `make` builds.
    pub(crate) fn fail(self, make: impl Fn() -> Error) {
        let results = (0..self.chunk.nitems).map(|_| Err(make())).collect();
        self.sink.complete(self.index, ChunkResult::Items(results));
    }

    /// Completes every item of the task with the error `make` builds, naming each item (for
    /// the errors that can: a worker's death fails every item it held).
    fn fail_each(self, make: impl Fn() -> Error) {
        let results = (0..self.chunk.nitems)
            .map(|i| Err(make().at_position(i)))
            .collect();
        self.sink.complete(self.index, ChunkResult::Items(results));
    }
}

/// The time limits of a pool: the default limit of each item, and the grace between SIGTERM
/// and SIGKILL when one is passed (`None`: SIGKILL at once).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    pub(crate) time_limit: Option<Duration>,
    pub(crate) grace: Option<Duration>,
}

/// What the scheduler needs to know besides its workers.
pub(crate) struct Config {
    /// The most workers at a time.
    pub(crate) processes: usize,
    /// Jobs per worker before it is replaced.
    pub(crate) max_tasks_per_child: Option<usize>,
    /// Start workers only when work arrives (the executor) instead of keeping `processes` up.
    pub(crate) lazy: bool,
    /// How many unexpected deaths within what period break the pool.
    pub(crate) intensity: Intensity,
    /// The workers' hard memory limit, if any: a worker that aborts under it failed an
    /// allocation.
    pub(crate) memory_limit: Option<u64>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    next_id: u64,
    in_flight: usize,
    max_in_flight: usize,
    closed: bool,
    feeders: usize,
    terminate: bool,
    broken: Option<String>,
    sleeping: bool,
    notified: bool,
    pids: Vec<i32>,
    finished: bool,
    /// Workers with nothing to do, published by the scheduler as it goes to sleep: a submitter
    /// may write a task straight to one of them, which saves waking the scheduler to do it.
    idle: Vec<Idle>,
    /// Tasks written that way, for the scheduler to record as held by those workers when it
    /// wakes (with the part of the frame the socket did not take, if any).
    handed: Vec<Handed>,
    /// Tasks to stop although a worker has them ([`Core::terminate_task`]).
    to_terminate: Vec<u64>,
}

/// A worker with nothing to do, as published for submitters: its slot's key, and where to
/// write a job (its lanes, or a second descriptor on its socket, or its pipe).
struct Idle {
    key: u64,
    door: Door,
    lanes: Option<Arc<Lanes>>,
}

/// Where a submitter writes a job for an idle worker itself.
#[derive(Clone)]
enum Door {
    /// A second descriptor on the worker's socket.
    Socket(Arc<OwnedFd>),
    /// The worker's pipe ([`Link::pipe`]).
    Pipe(Arc<dyn Pipe>),
}

/// A task a submitter wrote to an idle worker itself.
struct Handed {
    key: u64,
    task: Task,
    rest: Option<(Vec<u8>, usize)>,
}

/// The state shared between the scheduler thread and the threads using the pool.
pub(crate) struct Core {
    state: Mutex<State>,
    space: Condvar,
    /// Submitters asleep on `space` (changed under the lock): places freed while nobody waits
    /// for one cost no wake-up call.
    space_sleepers: std::sync::atomic::AtomicUsize,
    finished: Condvar,
    wake: EventFd,
    /// The scheduler thread, which must never wait for itself (a callback may drop the pool).
    scheduler: std::sync::OnceLock<std::thread::ThreadId>,
    /// The workers run on other machines: tasks carrying OS handles are refused at submit.
    portable_only: bool,
    limits: Limits,
}

impl Core {
    pub(crate) fn new(
        max_in_flight: Option<usize>,
        portable_only: bool,
        limits: Limits,
    ) -> Result<Arc<Core>> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::io("eventfd", e))?;
        Ok(Arc::new(Core {
            state: Mutex::new(State {
                max_in_flight: max_in_flight.unwrap_or(usize::MAX),
                ..State::default()
            }),
            space: Condvar::new(),
            space_sleepers: std::sync::atomic::AtomicUsize::new(0),
            finished: Condvar::new(),
            wake,
            scheduler: std::sync::OnceLock::new(),
            portable_only,
            limits,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_locked(&self, st: &mut State) -> bool {
        if st.sleeping && !st.notified {
            st.notified = true;
            true
        } else {
            false
        }
    }

    /// Wakes submitters waiting for a place in flight, if any.
    fn notify_space(&self) {
        if self.space_sleepers.load(Ordering::SeqCst) > 0 {
            self.space.notify_all();
        }
    }

    fn wake_now(&self) {
        let _ = self.wake.write(1);
    }

    fn check_open(st: &State, feeder: bool) -> Result<()> {
        if st.terminate || st.finished {
            return Err(Error::state(
                "the pool was terminated; create a new pool to run more tasks",
            ));
        }
        if st.closed && !feeder {
            return Err(Error::state(
                "the pool is closed; no new tasks can be submitted (create a new pool)",
            ));
        }
        Ok(())
    }

    /// Queues a task. `feeder` submissions come from an iterator created before `close()`.
    /// Blocks while the pool's bound on tasks in flight is reached ([`Error::InvalidState`]
    /// instead on the scheduler thread, which would wait for itself). Returns the task's id.
    pub(crate) fn submit(&self, mut task: Task, feeder: bool) -> Result<u64> {
        let mut st = self.lock();
        loop {
            Self::check_open(&st, feeder)?;
            if st.in_flight < st.max_in_flight {
                break;
            }
            if self.on_scheduler_thread() {
                // Only this thread frees places: waiting here would never end.
                return Err(Error::state(
                    "the pool's max_tasks_in_flight is reached and this callback runs on the \
                     pool's own thread, which frees places only after it returns; submit from \
                     another thread or raise max_tasks_in_flight",
                ));
            }
            self.space_sleepers.fetch_add(1, Ordering::SeqCst);
            st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
            self.space_sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if let Some(reason) = &st.broken {
            let message = reason.clone();
            drop(st);
            task.fail(|| Error::PoolBroken {
                message: message.clone(),
            });
            return Ok(0);
        }
        if task.limit_ns == 0 {
            task = task.with_limit(self.limits.time_limit);
        }
        st.next_id += 1;
        task.id = st.next_id;
        let id = task.id;
        st.in_flight += 1;
        let task = match Self::hand_to_idle(&mut st, task) {
            Ok(partial) => {
                // A frame the socket took only in part needs the scheduler to write the rest.
                let wake = partial && self.wake_locked(&mut st);
                drop(st);
                if wake {
                    self.wake_now();
                }
                return Ok(id);
            }
            Err(task) => task,
        };
        st.queue.push_back(task);
        let wake = self.wake_locked(&mut st);
        drop(st);
        if wake {
            self.wake_now();
        }
        Ok(id)
    }

    /// Writes `task` straight to an idle worker while the scheduler sleeps (it records the task
    /// when the worker's answer wakes it); true if the socket took only part of the frame. Gives
    /// the task back if that is not possible.
    // The task comes back by value on the common path (no idle worker): boxing it would cost
    // an allocation per submission.
    #[allow(clippy::result_large_err)]
    fn hand_to_idle(st: &mut State, task: Task) -> std::result::Result<bool, Task> {
        if !st.sleeping || !st.queue.is_empty() || !task.chunk.fds.is_empty() {
            return Err(task);
        }
        let long = task.chunk.items.len() >= super::lane::MAX_RECORD;
        if long && st.idle.last().is_some_and(|i| i.lanes.is_some()) {
            // Longer than a lane's message: the scheduler writes it on the socket, behind a
            // marker, from the task's own bytes.
            return Err(task);
        }
        let Some(Idle { key, door, lanes }) = st.idle.pop() else {
            return Err(task);
        };
        let mut buf = Vec::new();
        job_frame_head(&task, &mut buf);
        if let Some(lanes) = lanes {
            buf.extend_from_slice(&task.chunk.items);
            // A lane that refuses (or that the worker broke) leaves the task to the scheduler.
            if !matches!(lanes.send(&buf[HEADER_LEN..]), Ok(true)) {
                return Err(task);
            }
            if lanes.peer_sleeping()
                && let Door::Socket(fd) = &door
            {
                // Not sent (socket full): the worker has unread bytes there and wakes anyway.
                let _ =
                    send_nonblocking(fd.as_fd(), Parts(&wire::short_frame(wire::WAKE), &[]), &[]);
            }
            if let Some(flag) = &task.started {
                flag.store(true, Ordering::Release);
            }
            st.handed.push(Handed {
                key,
                task,
                rest: None,
            });
            return Ok(false);
        }
        // The head and the task's items in one write, without copying the items.
        let frame = Parts(&buf, &task.chunk.items);
        let sent = match &door {
            Door::Pipe(pipe) => {
                send_job_to_pipe(pipe.as_ref(), &buf, &task.chunk.items);
                frame.len()
            }
            Door::Socket(fd) => loop {
                match send_nonblocking(fd.as_fd(), frame, &[]) {
                    Ok(n) if n > 0 => break n,
                    Err(Errno::EINTR) => continue,
                    // Nothing written (full, or the worker is gone): the scheduler takes it.
                    _ => return Err(task),
                }
            },
        };
        let partial = sent < frame.len();
        let rest = partial.then(|| (frame.to_vec(), sent));
        if let Some(flag) = &task.started {
            flag.store(true, Ordering::Release);
        }
        st.handed.push(Handed { key, task, rest });
        Ok(partial)
    }

    /// Fails with [`Error::NotPortable`] if the workers are on other machines and `chunk`, of
    /// items of type `type_name`, carries OS handles. Checked before a chunk is submitted.
    pub(crate) fn ensure_portable(&self, chunk: &Chunk, type_name: &str) -> Result<()> {
        if self.portable_only && !chunk.fds.is_empty() {
            return Err(Error::NotPortable {
                type_name: type_name.trim_start_matches('&').to_owned(),
            });
        }
        Ok(())
    }

    /// Fails `err` unless new tasks may be submitted.
    pub(crate) fn ensure_open(&self) -> Result<()> {
        Self::check_open(&self.lock(), false)
    }

    /// Removes a task that no worker has started; true if it was still queued.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let mut st = self.lock();
        let Some(pos) = st.queue.iter().position(|t| t.id == id) else {
            return false;
        };
        let task = st.queue.remove(pos).expect("position is in range");
        st.in_flight -= 1;
        drop(st);
        self.notify_space();
        task.fail(|| Error::Cancelled);
        true
    }

    /// Stops task `id` whether or not a worker has started it: a queued task is cancelled at
    /// once; the worker of a running one is killed (and replaced), and a task sent ahead to a
    /// worker is cancelled and that worker killed when it gets to it. The task completes with
    /// [`Error::Cancelled`] unless its result came first; the caller waits for the outcome.
    pub(crate) fn terminate_task(&self, id: u64) {
        if self.cancel(id) {
            return;
        }
        let mut st = self.lock();
        if st.finished {
            return;
        }
        st.to_terminate.push(id);
        drop(st);
        self.wake_now();
    }

    /// Cancels every queued task; returns how many.
    pub(crate) fn cancel_all(&self) -> usize {
        let mut st = self.lock();
        let tasks: Vec<Task> = st.queue.drain(..).collect();
        st.in_flight -= tasks.len();
        drop(st);
        self.notify_space();
        let n = tasks.len();
        for t in tasks {
            t.fail(|| Error::Cancelled);
        }
        n
    }

    /// An iterator that submits lazily starts (`add`) or ends: the pool does not finish closing
    /// while one is alive.
    pub(crate) fn feeder(&self, add: bool) {
        let mut st = self.lock();
        if add {
            st.feeders += 1;
        } else {
            st.feeders -= 1;
        }
        let wake = !add && st.closed && self.wake_locked(&mut st);
        drop(st);
        if wake {
            self.wake_now();
        }
    }

    /// No new tasks; the scheduler exits once everything queued is done.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        drop(st);
        self.wake_now();
    }

    /// Stops at once: kill the workers, fail every unfinished task.
    pub(crate) fn terminate(&self) {
        let mut st = self.lock();
        st.terminate = true;
        st.closed = true;
        drop(st);
        self.notify_space();
        self.wake_now();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the workers run on other machines.
    pub(crate) fn is_remote(&self) -> bool {
        self.portable_only
    }

    pub(crate) fn pids(&self) -> Vec<i32> {
        self.lock().pids.clone()
    }

    /// Whether the caller is the scheduler thread (running a result callback).
    pub(crate) fn on_scheduler_thread(&self) -> bool {
        self.scheduler.get() == Some(&std::thread::current().id())
    }

    /// Waits for the scheduler thread to finish its work; at once on the scheduler thread itself,
    /// which finishes after the callback that called this returns.
    pub(crate) fn wait_finished(&self) {
        if self.on_scheduler_thread() {
            return;
        }
        let mut st = self.lock();
        while !st.finished {
            st = self.finished.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Writes `frame` on `fd` without blocking or raising SIGPIPE, with `fds` on its first byte;
/// the bytes taken.
fn send_nonblocking(
    fd: std::os::fd::BorrowedFd<'_>,
    frame: Parts<'_>,
    fds: &[OwnedFd],
) -> nix::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let both = [
        std::io::IoSlice::new(frame.0),
        std::io::IoSlice::new(frame.1),
    ];
    let iov = if frame.1.is_empty() {
        &both[..1]
    } else {
        &both[..]
    };
    sendmsg::<()>(
        fd.as_raw_fd(),
        iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
}

/// Pending bytes to one worker, with the descriptors that ride on their first byte.
struct Out {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    pos: usize,
}

struct Slot {
    /// Identifies the slot in `State::idle` and `State::handed`.
    key: u64,
    /// Where submitters write to the worker while it is idle.
    fast: Option<Door>,
    link: Box<dyn Link>,
    /// The worker's stream, if it travels in memory (`Link::pipe`), not on `link.channel()`.
    pipe: Option<Arc<dyn Pipe>>,
    reader: FrameReader,
    /// The worker's lanes (a local worker's), which carry jobs and answers (`pool::lane`).
    lanes: Option<Arc<Lanes>>,
    /// Frames to the worker waiting for room in its job lane, in order, with their descriptors.
    backlog: VecDeque<(Vec<u8>, Vec<OwnedFd>)>,
    /// Answers that came on the socket, waiting for their markers in the answer lane.
    marked: VecDeque<RawFrame>,
    /// A marker was taken from the answer lane and its frame has not arrived yet: the lane is
    /// not read further until it does.
    awaiting_marked: bool,
    held: VecDeque<Task>,
    sent: usize,
    out: VecDeque<Out>,
    stopping: bool,
    /// The worker's initializer failed (its message).
    init_failed: Option<String>,
    /// The worker sent something that is not a valid answer (what was wrong): it was killed,
    /// and the job it held fails with this rather than as a death of its own.
    fault: Option<String>,
    /// The worker's item ran past its time limit: it is being killed, and the job it held
    /// fails for that item alone.
    expired: Option<Expired>,
    /// When to SIGKILL a worker that was sent SIGTERM for a time limit (its grace).
    kill_at: Option<Instant>,
    /// The worker was killed because it reached a terminated task: the tasks it holds go to
    /// other workers (the one it may have just started included).
    killed_for_terminate: bool,
    /// The worker said it exits above its memory limit: the tasks it holds go to other workers.
    retiring: bool,
    /// Its stream ended (the worker exits): only its exit is awaited.
    ended: bool,
    /// When it last answered (or was started): a worker that holds jobs and has not answered
    /// for longer than the work-ahead time is running a long one, and gets no more packed on.
    answered: Instant,
    /// When it last went from holding nothing to holding a job: a worker gets more packed on
    /// only once it has answered since, so that two jobs of unknown length given to idle
    /// workers go to two of them.
    busy_since: Instant,
}

/// What a worker's watchdog reported: item `position` of job `id` ran `elapsed`; a batch
/// item's arguments are bytes `span` of its chunk.
struct Expired {
    id: u64,
    position: usize,
    elapsed: Duration,
    span: (usize, usize),
}

impl Slot {
    /// A slot for a started worker; `share` gives it lanes (a local worker), announced in its
    /// first frame.
    fn new(link: Box<dyn Link>, share: bool) -> Self {
        static KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let pipe = link.pipe();
        let mut slot = Slot {
            key: KEYS.fetch_add(1, Ordering::Relaxed),
            fast: match &pipe {
                Some(pipe) => Some(Door::Pipe(pipe.clone())),
                None => link
                    .channel()
                    .try_clone_to_owned()
                    .ok()
                    .map(|fd| Door::Socket(Arc::new(fd))),
            },
            pipe,
            link,
            reader: FrameReader::new(wire::MAX_FRAME),
            lanes: None,
            backlog: VecDeque::new(),
            marked: VecDeque::new(),
            awaiting_marked: false,
            held: VecDeque::new(),
            sent: 0,
            out: VecDeque::new(),
            stopping: false,
            init_failed: None,
            fault: None,
            expired: None,
            kill_at: None,
            killed_for_terminate: false,
            retiring: false,
            ended: false,
            answered: Instant::now(),
            busy_since: Instant::now(),
        };
        if share {
            // Without lanes (no memory for them) the worker is served on its socket alone.
            if let Ok((lanes, fd)) = Lanes::create() {
                slot.push_frame(Parts(&wire::lanes_frame(), &[]), vec![fd]);
                slot.lanes = Some(Arc::new(lanes));
                // Sent now (a new socket takes it whole), which closes the memfd here: a pool
                // that is built holds no descriptor for its workers' lanes. A worker already
                // gone is reported by its sentinel.
                let _ = slot.flush();
            }
        }
        slot
    }

    /// Nothing is waiting to be written to the worker.
    fn nothing_to_write(&self) -> bool {
        self.out.is_empty() && self.backlog.is_empty()
    }

    /// Sends a frame (header included): into the job lane when it can, else on the socket
    /// (behind a marker in lane mode), or into the backlog while the lane is full.
    fn send_frame(&mut self, frame: &[u8], fds: Vec<OwnedFd>) {
        self.send_frame_parts(Parts(frame, &[]), fds);
    }

    /// [`Slot::send_frame`] of a frame in two parts, written from where they are.
    fn send_frame_parts(&mut self, frame: Parts<'_>, fds: Vec<OwnedFd>) {
        if self.lanes.is_none() {
            self.push_frame(frame, fds);
            return;
        }
        if !self.backlog.is_empty() {
            self.backlog.push_back((frame.to_vec(), fds));
            return;
        }
        match self.try_lane(frame, fds) {
            Ok(None) => {}
            Ok(Some(fds)) => self.backlog.push_back((frame.to_vec(), fds)),
            Err(e) => self.distrust(e),
        }
    }

    /// Writes one frame into the job lane (or its marker, the frame going on the socket).
    /// Gives the descriptors back if the lane has no room.
    fn try_lane(&mut self, frame: Parts<'_>, fds: Vec<OwnedFd>) -> Result<Option<Vec<OwnedFd>>> {
        let lanes = self.lanes.clone().expect("lane mode");
        // A frame in two parts is long: longer than a lane's message.
        if fds.is_empty() && frame.1.is_empty() && lanes.send(&frame.0[HEADER_LEN..])? {
            if lanes.peer_sleeping() {
                self.push_frame(Parts(&wire::short_frame(wire::WAKE), &[]), Vec::new());
            }
            return Ok(None);
        }
        if !lanes.send_marker()? {
            return Ok(Some(fds));
        }
        // The frame itself wakes a sleeping worker.
        lanes.peer_sleeping();
        self.push_frame(frame, fds);
        Ok(None)
    }

    /// Moves what the job lane now has room for out of the backlog.
    fn flush_backlog(&mut self) {
        while let Some((frame, fds)) = self.backlog.pop_front() {
            match self.try_lane(Parts(&frame, &[]), fds) {
                Ok(None) => {}
                Ok(Some(fds)) => {
                    self.backlog.push_front((frame, fds));
                    return;
                }
                Err(e) => {
                    self.distrust(e);
                    return;
                }
            }
        }
    }

    /// The worker sent something that is not a valid answer, or broke its lanes (a position
    /// out of range): whatever it sends next cannot be trusted. It is given no more jobs and
    /// killed, and `bury` fails the job it held with `e` as a malformed answer and replaces it.
    fn distrust(&mut self, e: Error) {
        self.backlog.clear();
        if self.fault.is_none() {
            self.fault = Some(match e {
                Error::Protocol { message } => message,
                other => other.to_string(),
            });
        }
        self.stopping = true;
        self.link.kill();
    }

    /// How many more jobs this worker can be sent now: up to `depth` held, and `max_tasks` in
    /// its life (none once it is stopping).
    fn room(&self, depth: usize, max_tasks: usize) -> usize {
        if self.stopping {
            return 0;
        }
        depth
            .saturating_sub(self.held.len())
            .min(max_tasks.saturating_sub(self.sent))
    }

    /// Records `task` as sent to this worker.
    fn hold(&mut self, task: Task) {
        if self.held.is_empty() {
            self.busy_since = Instant::now();
        }
        self.held.push_back(task);
    }

    /// Kills the worker if the next task it runs was terminated.
    fn kill_if_terminated_next(&mut self) {
        if !self.stopping && self.held.front().is_some_and(|t| t.terminated) {
            self.stopping = true;
            self.killed_for_terminate = true;
            self.link.kill();
        }
    }

    /// Queues a frame for the socket, or writes it at once if it is long and nothing waits
    /// before it.
    fn push_frame(&mut self, frame: Parts<'_>, mut fds: Vec<OwnedFd>) {
        if let Some(pipe) = &self.pipe
            && fds.is_empty()
            && self.out.is_empty()
        {
            // A pipe takes everything at once.
            pipe.send(&[frame.0, frame.1]);
            return;
        }
        let mut frame = frame;
        if self.out.is_empty() && frame.len() >= WRITE_THROUGH {
            // What the socket takes now is not copied into the queue first. A failure is
            // left to `flush`, which reports it.
            if let Ok(n) = self.send_some(frame, &fds) {
                frame = frame.after(n);
                if n > 0 {
                    fds = Vec::new();
                }
                if frame.len() == 0 {
                    return;
                }
            }
        }
        if let Some(last) = self.out.back_mut()
            && last.pos == 0
            && last.fds.len() + fds.len() <= MAX_FDS
            && last.bytes.len() < (1 << 20)
        {
            last.bytes.extend_from_slice(frame.0);
            last.bytes.extend_from_slice(frame.1);
            last.fds.extend(fds);
            return;
        }
        self.out.push_back(Out {
            bytes: frame.to_vec(),
            fds,
            pos: 0,
        });
    }

    fn send_job(&mut self, task: &Task, scratch: &mut Vec<u8>) -> Result<()> {
        let fds = task
            .chunk
            .fds
            .iter()
            .map(|f| f.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("dup", e))?;
        job_frame_head(task, scratch);
        let items = &task.chunk.items;
        if let Some(pipe) = &self.pipe
            && fds.is_empty()
            && self.out.is_empty()
        {
            send_job_to_pipe(pipe.as_ref(), scratch, items);
        } else if items.len() >= WRITE_THROUGH {
            // The items go out from where the task holds them, not through a copy.
            self.send_frame_parts(Parts(scratch, items), fds);
        } else {
            scratch.extend_from_slice(items);
            self.send_frame(scratch, fds);
        }
        Ok(())
    }

    fn send_stop(&mut self) {
        self.send_frame(&wire::short_frame(wire::STOP), Vec::new());
        self.stopping = true;
    }

    /// Writes what the socket takes without blocking. Errors mean the worker is gone.
    fn flush(&mut self) -> Result<()> {
        while let Some(o) = self.out.front() {
            let fds: &[OwnedFd] = if o.pos == 0 { &o.fds } else { &[] };
            match self.send_some(Parts(&o.bytes[o.pos..], &[]), fds) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let o = self.out.front_mut().expect("present");
                    o.pos += n;
                    if o.pos >= o.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(e) => {
                    self.out.clear();
                    return Err(Error::sys("send", e));
                }
            }
        }
        Ok(())
    }

    /// One non-blocking `sendmsg` of `frame`, with `fds` on its first byte: how many bytes the
    /// socket took (0 when it is full).
    fn send_some(&self, frame: Parts<'_>, fds: &[OwnedFd]) -> std::result::Result<usize, Errno> {
        if let Some(pipe) = &self.pipe {
            // Handles cannot travel to another machine: refused before they get here.
            if !fds.is_empty() {
                return Err(Errno::EINVAL);
            }
            pipe.send(&[frame.0, frame.1]);
            return Ok(frame.len());
        }
        loop {
            match send_nonblocking(self.link.channel(), frame, fds) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes a job frame (`head`, then the task's `items`) into a worker's pipe: long items go
/// from where the task holds them, short ones are copied in after the head.
fn send_job_to_pipe(pipe: &dyn Pipe, head: &[u8], items: &Arc<Vec<u8>>) {
    if items.len() >= WRITE_THROUGH {
        pipe.send_shared(head, items);
    } else {
        pipe.send(&[head, items]);
    }
}

/// A frame in two parts, the second possibly empty: a long job's head and its items, written
/// from where each is.
#[derive(Clone, Copy)]
struct Parts<'a>(&'a [u8], &'a [u8]);

impl<'a> Parts<'a> {
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }

    /// What is left after the first `n` bytes.
    fn after(self, n: usize) -> Parts<'a> {
        match n.checked_sub(self.0.len()) {
            None => Parts(&self.0[n..], self.1),
            Some(m) => Parts(&self.1[m..], &[]),
        }
    }

    fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(self.0);
        v.extend_from_slice(self.1);
        v
    }
}

/// Writes the `Job` frame of `task` into `buf` (cleared first) up to its items, which follow
/// it on the wire (its header counts them).
fn job_frame_head(task: &Task, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    buf.push(wire::JOB);
    wire::put_uint(buf, task.id);
    wire::put_bytes(buf, task.worker.as_bytes());
    let limit_ns = task.limit_ns;
    if task.chunk.batch {
        buf.push(wire::MODE_BATCH);
        wire::put_uint(buf, limit_ns);
        wire::put_uint(buf, task.chunk.nitems as u64);
        wire::put_uint(buf, task.chunk.fds.len() as u64);
        wire::put_uint(buf, task.chunk.items.len() as u64);
    } else {
        buf.push(wire::MODE_ITEMS);
        wire::put_uint(buf, limit_ns);
        wire::put_uint(buf, task.chunk.nitems as u64);
    }
    let len = buf.len() - HEADER_LEN + task.chunk.items.len();
    buf[..HEADER_LEN].copy_from_slice(&header(len, task.chunk.fds.len()));
}

/// A job's results as parsed from a `Done` frame.
struct Done {
    task: Task,
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Parses the items of a `Done` frame (cursor after the header fields) into results.
fn item_results<'a>(
    cur: &mut Cursor<'a>,
    fds: &mut VecDeque<OwnedFd>,
    n: usize,
) -> Result<Vec<ItemResult<'a>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match cur.u8()? {
            wire::TAG_OK => {
                let nfds = cur.usize()?;
                let bytes = cur.bytes()?;
                Ok((bytes, take_fds(fds, nfds)?))
            }
            wire::TAG_FAILED => Err(Error::task_failed(cur.string()?).at_position(0)),
            wire::TAG_CODEC => Err(Error::Codec {
                message: cur.string()?,
                index: Some(0),
            }),
            wire::TAG_RAISED => {
                let message = cur.string()?;
                let type_name = cur.string()?;
                let value = match cur.u8()? {
                    0 => None,
                    _ => Some(cur.bytes()?.to_vec()),
                };
                let position = cur.usize()?;
                Err(Error::raised(
                    message,
                    WorkerError::new(type_name, value),
                    position,
                ))
            }
            wire::TAG_PANICKED => {
                let message = cur.string()?;
                let location = cur.string()?;
                Err(Error::WorkerPanicked {
                    message,
                    location,
                    index: Some(0),
                })
            }
            t => return Err(Error::protocol(format!("unknown result tag {t}"))),
        });
    }
    Ok(out)
}

fn deliver(done: Done) {
    let Done { task, payload, fds } = done;
    let mut fds: VecDeque<OwnedFd> = fds.into();
    let mut cur = Cursor::new(&payload);
    let parsed = (|| {
        cur.u8()?;
        cur.uint()?;
        for _ in 0..8 {
            cur.u8()?;
        }
        let n = cur.usize()?;
        let expected = if task.chunk.batch {
            1
        } else {
            task.chunk.nitems
        };
        if n != expected {
            return Err(Error::protocol(
                "a worker answered with the wrong number of results",
            ));
        }
        if task.chunk.batch && cur.peek() == Some(wire::TAG_EACH) {
            // Some items of the batch failed: the worker answered item by item.
            cur.u8()?;
            let each = cur.usize()?;
            if each != task.chunk.nitems {
                return Err(Error::protocol(
                    "a worker answered a chunk with the wrong number of results",
                ));
            }
            return Ok(ChunkResult::Items(item_results(&mut cur, &mut fds, each)?));
        }
        let mut results = item_results(&mut cur, &mut fds, n)?;
        Ok(if task.chunk.batch {
            ChunkResult::Batch(results.pop().expect("one result"))
        } else {
            ChunkResult::Items(results)
        })
    })();
    let spans = match parsed {
        Ok(results) if task.sink.keeps_answers() => Answer::spans(&payload, results),
        Ok(results) => return task.sink.complete(task.index, results),
        Err(e) => return task.fail(|| e.replicate()),
    };
    match spans {
        Some(results) => task
            .sink
            .complete_answer(task.index, Answer { payload, results }),
        None => task.fail(|| Error::protocol("a worker's answer could not be read")),
    }
}

/// The scheduler thread's own state.
struct Scheduler {
    core: Arc<Core>,
    launcher: Box<dyn Launcher>,
    cfg: Config,
    slots: Vec<Slot>,
    /// Moving average of a job's run time in the worker, in nanoseconds (0: unknown).
    job_ns: u64,
    scratch: Vec<u8>,
    /// The last attempt to start a worker failed: why, and when to try again.
    start_failure: Option<StartFailure>,
    /// Workers that died and whose replacements have not started yet (for the events that say
    /// a worker was replaced).
    replacing: usize,
    /// Recent unexpected deaths, against the restart intensity.
    deaths: Deaths,
    /// Answers usually come within a round trip: the scheduler looks for them briefly before
    /// it sleeps in `poll`.
    spin: SpinWait,
}

/// What [`Scheduler::wait`] found for one worker.
struct Ready {
    /// Its socket has something to read (or hung up).
    readable: bool,
    /// Its answer lane holds a record.
    lane: bool,
    /// Its socket takes more bytes.
    writable: bool,
    /// It exited.
    exited: bool,
}

/// A failed attempt to start a worker: the backoff before the next.
struct StartFailure {
    backoff: Duration,
    retry_at: Instant,
}

/// A frame this long is written to the socket at once when nothing waits before it, instead of
/// being copied into the slot's queue first (shorter ones are queued, and go out together).
const WRITE_THROUGH: usize = 64 * 1024;

/// The wait before a second attempt to start a worker; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(10);
/// The longest wait between two attempts to start a worker.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Starts the scheduler thread over the workers already started.
pub(crate) fn spawn(
    core: Arc<Core>,
    launcher: Box<dyn Launcher>,
    links: Vec<Box<dyn Link>>,
    cfg: Config,
) -> Result<std::thread::JoinHandle<()>> {
    {
        let mut st = core.lock();
        st.pids = links.iter().map(|l| l.pid()).collect();
    }
    let share = launcher.shares_memory();
    let mut s = Scheduler {
        core,
        launcher,
        slots: links.into_iter().map(|l| Slot::new(l, share)).collect(),
        job_ns: 0,
        scratch: Vec::new(),
        start_failure: None,
        replacing: 0,
        deaths: Deaths::new(cfg.intensity),
        cfg,
        spin: SpinWait::pool(),
    };
    std::thread::Builder::new()
        .name("mp-pool".into())
        .spawn(move || s.run())
        .map_err(|e| Error::io("spawn the pool's scheduler thread", e))
}

impl Scheduler {
    fn depth(&self) -> usize {
        let (ahead_ns, most) = self.launcher.work_ahead();
        match self.job_ns {
            0 => 2,
            ns => ((ahead_ns / ns) as usize).clamp(2, most.max(2)),
        }
    }

    fn run(&mut self) {
        let _ = self.core.scheduler.set(std::thread::current().id());
        let looped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| while self.step() {}));
        if looped.is_err() {
            // A bug, not a user error: stop the workers and fail what is left rather than leave
            // waiters hanging.
            crate::sys::stderr_line("mp: the pool's scheduler failed; its workers are stopped");
            self.kill_all();
        }
        let core = self.core.clone();
        let mut st = core.lock();
        st.finished = true;
        st.pids.clear();
        let mut leftovers: Vec<Task> = st.queue.drain(..).collect();
        leftovers.extend(std::mem::take(&mut st.handed).into_iter().map(|h| h.task));
        st.idle.clear();
        drop(st);
        for t in leftovers {
            t.fail(terminated);
        }
        core.finished.notify_all();
        core.notify_space();
    }

    /// One round: dispatch, wait, handle what happened. False once the pool is done.
    fn step(&mut self) -> bool {
        let mut to_fail: Vec<(Task, String)> = Vec::new();
        let core = self.core.clone();
        let mut st = core.lock();
        if st.terminate {
            drop(st);
            self.kill_all();
            return false;
        }
        if let Some(reason) = &st.broken {
            let reason = reason.clone();
            let n = st.queue.len();
            st.in_flight -= n;
            to_fail.extend(st.queue.drain(..).map(|t| (t, reason.clone())));
        }
        let mut unsent = Vec::new();
        self.start_workers(&mut st, &mut to_fail);
        let tasks = self.take_tasks(&mut st);
        if !tasks.is_empty() {
            drop(st);
            let left = self.dispatch(tasks, &mut unsent);
            st = core.lock();
            st.in_flight -= unsent.len();
            for t in left.into_iter().rev() {
                st.queue.push_front(t);
            }
        }
        self.retire_spent();
        // Tasks submitted while the lock was released did not wake this thread: look again at
        // once if a worker can take them.
        let more = !st.queue.is_empty() && self.room() > 0;
        let idle = st.queue.is_empty() && self.slots.iter().all(|s| s.held.is_empty());
        if st.closed && st.feeders == 0 && idle {
            for s in &mut self.slots {
                if !s.stopping {
                    s.send_stop();
                }
            }
            if self.slots.is_empty() && unsent.is_empty() {
                drop(st);
                return false;
            }
        }
        // Workers still missing after a failed start: wake up for the next attempt.
        let retry_in = match &self.start_failure {
            Some(f) if self.slots.len() < self.target(&st) => {
                Some(f.retry_at.saturating_duration_since(Instant::now()))
            }
            _ => None,
        };
        // A worker given a grace after SIGTERM: wake up to SIGKILL it.
        let now = Instant::now();
        let retry_in = self
            .slots
            .iter()
            .filter_map(|s| s.kill_at)
            .map(|t| t.saturating_duration_since(now))
            .chain(retry_in)
            .chain(more.then_some(Duration::ZERO))
            .min();
        st.sleeping = true;
        let max_tasks = self.max_tasks();
        // Last in the list is handed a task first: the first idle worker, the one `dispatch`
        // would choose, so that a caller waiting for each result keeps using one worker (a
        // remote one that sat idle answers later: its agent looks for messages less often).
        st.idle = self
            .slots
            .iter()
            .rev()
            .filter(|s| {
                s.held.is_empty() && s.nothing_to_write() && !s.stopping && s.sent < max_tasks
            })
            .filter_map(|s| {
                s.fast.clone().map(|door| Idle {
                    key: s.key,
                    door,
                    lanes: s.lanes.clone(),
                })
            })
            .collect();
        drop(st);
        for (t, reason) in unsent {
            t.fail(|| Error::task_failed(reason.clone()));
        }
        if !to_fail.is_empty() {
            self.core.notify_space();
            for (t, reason) in to_fail {
                t.fail(|| Error::PoolBroken {
                    message: reason.clone(),
                });
            }
        }
        for s in &mut self.slots {
            s.flush_backlog();
            let _ = s.flush();
        }
        let ready = self.wait(retry_in);
        {
            let mut st = self.core.lock();
            st.sleeping = false;
            st.notified = false;
            st.idle.clear();
            let handed = std::mem::take(&mut st.handed);
            for h in handed {
                match self.slots.iter_mut().find(|s| s.key == h.key) {
                    Some(slot) => {
                        if let Some((bytes, pos)) = h.rest {
                            slot.out.push_front(Out {
                                bytes,
                                fds: Vec::new(),
                                pos,
                            });
                        }
                        slot.sent += 1;
                        slot.hold(h.task);
                    }
                    None => st.queue.push_front(h.task),
                }
            }
            let requests = std::mem::take(&mut st.to_terminate);
            let mut cancelled = Vec::new();
            for id in requests {
                if let Some(pos) = st.queue.iter().position(|t| t.id == id) {
                    // Given back to the queue by a worker that died meanwhile.
                    cancelled.extend(st.queue.remove(pos));
                    st.in_flight -= 1;
                    continue;
                }
                for slot in &mut self.slots {
                    if let Some(t) = slot.held.iter_mut().find(|t| t.id == id && !t.terminated) {
                        let stone = t.tombstone();
                        cancelled.push(std::mem::replace(t, stone));
                        slot.kill_if_terminated_next();
                        break;
                    }
                }
            }
            if !cancelled.is_empty() {
                drop(st);
                self.core.notify_space();
                for t in cancelled {
                    t.fail(|| Error::Cancelled);
                }
            }
        }
        if ready.0 {
            let _ = self.core.wake.read();
        }
        let mut done = Vec::new();
        let mut dead = Vec::new();
        for (i, r) in ready.1.into_iter().enumerate() {
            let slot = &mut self.slots[i];
            if r.writable {
                let _ = slot.flush();
            }
            let socket = r.readable || r.exited;
            if (socket || r.lane)
                && slot.fault.is_none()
                && slot.expired.is_none()
                && let Err(e) = read_results(slot, socket, &mut done, &mut self.job_ns)
            {
                slot.distrust(e);
            }
            if slot.expired.is_some() && !slot.stopping {
                // A time limit: stop the worker (SIGTERM first when there is a grace).
                slot.stopping = true;
                match self.core.limits.grace {
                    Some(grace) => {
                        slot.link.terminate();
                        slot.kill_at = Some(Instant::now() + grace);
                    }
                    None => slot.link.kill(),
                }
            }
            if slot.kill_at.is_some_and(|t| Instant::now() >= t) {
                slot.kill_at = None;
                slot.link.kill();
            }
            slot.kill_if_terminated_next();
            if r.exited {
                dead.push(i);
            }
        }
        self.finish(done);
        for i in dead.into_iter().rev() {
            self.bury(i);
        }
        true
    }

    /// How many workers the pool should have now: `processes` for a pool (none once it is
    /// terminated, broken or drained), for an executor as many as its queue needs, up to that.
    fn target(&self, st: &State) -> usize {
        if st.terminate || st.broken.is_some() {
            return 0;
        }
        if self.cfg.lazy {
            let idle = self
                .slots
                .iter()
                .filter(|s| s.held.is_empty() && !s.stopping)
                .count();
            let want = self.slots.len() + st.queue.len().saturating_sub(idle);
            return want.min(self.cfg.processes);
        }
        let drained = st.closed && st.feeders == 0 && st.queue.is_empty() && self.all_idle();
        if drained { 0 } else { self.cfg.processes }
    }

    /// Starts the workers the pool is missing, unless an earlier attempt failed less than its
    /// backoff ago. When an attempt fails while no worker is left, the queued tasks go to
    /// `failed` with the start error: nothing could run them.
    fn start_workers(&mut self, st: &mut State, failed: &mut Vec<(Task, String)>) {
        let target = self.target(st);
        while self.slots.len() < target {
            if self
                .start_failure
                .as_ref()
                .is_some_and(|f| Instant::now() < f.retry_at)
            {
                return;
            }
            match self.launcher.launch() {
                Ok(link) => {
                    if self.replacing > 0 {
                        self.replacing -= 1;
                        crate::log::event!(
                            info,
                            pid = link.pid(),
                            "pool worker started in place of one that died"
                        );
                    } else {
                        crate::log::event!(debug, pid = link.pid(), "pool worker started");
                    }
                    st.pids.push(link.pid());
                    let share = self.launcher.shares_memory();
                    self.slots.push(Slot::new(link, share));
                    self.start_failure = None;
                }
                Err(e) => {
                    let backoff = self
                        .start_failure
                        .as_ref()
                        .map_or(FIRST_RETRY, |f| (f.backoff * 2).min(MAX_RETRY));
                    crate::log::event!(
                        warn,
                        error = %e,
                        retry_in = ?backoff,
                        "could not start a pool worker; trying again later"
                    );
                    let message = format!(
                        "no worker process could be started ({e}); the pool keeps trying and \
                         runs tasks submitted once one starts"
                    );
                    if self.slots.is_empty() {
                        st.in_flight -= st.queue.len();
                        failed.extend(st.queue.drain(..).map(|t| (t, message.clone())));
                    }
                    self.start_failure = Some(StartFailure {
                        backoff,
                        retry_at: Instant::now() + backoff,
                    });
                    return;
                }
            }
        }
    }

    /// How many short jobs a worker is given before the next goes to another: as many as it
    /// runs within the work-ahead time (0 while job times are unknown, or when one job takes
    /// longer than that).
    fn pack(&self) -> usize {
        match self.job_ns {
            0 => 0,
            ns => (self.launcher.work_ahead().0 / ns) as usize,
        }
    }

    /// Hands queued tasks to workers with room. Short jobs are packed onto the worker that
    /// already has the most, up to what it runs within the work-ahead time ([`Scheduler::pack`];
    /// not onto one that has not answered for longer than that, which runs a long job), and
    /// only then spread, the least loaded first: a worker kept busy on its own CPU runs
    /// without a context switch, where jobs spread over every worker wake them all, and on a
    /// machine with fewer CPUs than the pool's threads (the caller and this thread included)
    /// every wake-up is a switch. Longer jobs are spread at once, so they run in parallel.
    /// Tasks that could not be sent are pushed to `failed` with the reason, to be failed once the
    /// lock is released (their sinks may run callbacks that submit).
    ///
    /// It runs without the shared lock, on the tasks [`Scheduler::take_tasks`] took, so that
    /// submitters are not held up while jobs are written; tasks no worker can take after all
    /// (one stopped meanwhile) are given back, to go to the front of the queue.
    fn dispatch(
        &mut self,
        mut tasks: VecDeque<Task>,
        failed: &mut Vec<(Task, String)>,
    ) -> VecDeque<Task> {
        if tasks.is_empty() {
            return tasks;
        }
        let depth = self.depth();
        let pack = self.pack().min(depth);
        let max_tasks = self.max_tasks();
        let now = Instant::now();
        let ahead = Duration::from_nanos(self.launcher.work_ahead().0);
        let flowing = |s: &Slot| {
            s.held.is_empty()
                || s.answered >= s.busy_since && now.duration_since(s.answered) <= ahead
        };
        while !tasks.is_empty() {
            let open = || {
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.room(depth, max_tasks) > 0)
            };
            let packed = open()
                .filter(|(_, s)| s.held.len() < pack && flowing(s))
                .max_by_key(|(i, s)| (s.held.len(), std::cmp::Reverse(*i)));
            let Some(best) = packed
                .or_else(|| open().min_by_key(|(_, s)| s.held.len()))
                .map(|(i, _)| i)
            else {
                break;
            };
            let task = tasks.pop_front().expect("tasks are left");
            let slot = &mut self.slots[best];
            match slot.send_job(&task, &mut self.scratch) {
                Ok(()) => {
                    if let Some(flag) = &task.started {
                        flag.store(true, Ordering::Release);
                    }
                    slot.sent += 1;
                    slot.hold(task);
                }
                Err(e) => {
                    // Cannot duplicate the task's descriptors: fail it alone (its place in
                    // flight is freed by the caller).
                    failed.push((task, format!("its handles could not be sent: {e}")));
                }
            }
        }
        tasks
    }

    /// Workers that reached their task limit and hold nothing retire.
    fn retire_spent(&mut self) {
        let max_tasks = self.max_tasks();
        for s in &mut self.slots {
            if !s.stopping && s.sent >= max_tasks && s.held.is_empty() {
                s.send_stop();
            }
        }
    }

    /// How many more tasks the workers can take now.
    fn room(&self) -> usize {
        let (depth, max_tasks) = (self.depth(), self.max_tasks());
        self.slots.iter().map(|s| s.room(depth, max_tasks)).sum()
    }

    /// Jobs per worker before it is replaced (unbounded without `max_tasks_per_child`).
    fn max_tasks(&self) -> usize {
        self.cfg.max_tasks_per_child.unwrap_or(usize::MAX)
    }

    /// Takes from the queue as many tasks as the workers have room for now.
    fn take_tasks(&self, st: &mut State) -> VecDeque<Task> {
        if st.queue.is_empty() {
            return VecDeque::new();
        }
        let n = self.room().min(st.queue.len());
        st.queue.drain(..n).collect()
    }

    /// Polls the wake-up descriptor, every worker and their answer lanes, at most `timeout`
    /// (`None`: until one is ready). Returns (woken, what is ready per worker).
    fn wait(&self, timeout: Option<Duration>) -> (bool, Vec<Ready>) {
        let until = Deadline::after(timeout);
        let mut timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = Vec::with_capacity(1 + 2 * self.slots.len());
        fds.push(PollFd::new(self.core.wake.as_fd(), PollFlags::POLLIN));
        // Where each slot's two descriptors are in `fds` (its channel: none once nothing more
        // is read from it, a worker being killed: the socket of a dying worker stays readable
        // or hung up until its exit is reported, and polling it would only spin).
        let mut at = Vec::with_capacity(self.slots.len());
        let mut lanes = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            let channel = if s.fault.is_some() || s.expired.is_some() || s.ended {
                None
            } else {
                let mut flags = PollFlags::POLLIN;
                if !s.out.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(s.link.channel(), flags));
                // A lane waiting for the frame its marker stands for is read again once that
                // frame comes on the socket.
                if !s.awaiting_marked {
                    lanes.extend(s.lanes.as_deref());
                }
                Some(fds.len() - 1)
            };
            fds.push(PollFd::new(s.link.sentinel(), PollFlags::POLLIN));
            at.push((channel, fds.len() - 1));
        }
        let answers = || lanes.iter().any(|l| l.has_data());
        // A zero timeout (work is waiting) is a look: the spin returns at once.
        let ready_now = self.spin.spin_until(until, || {
            answers() || matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        });
        // Found ready while spinning: the last look's results are in `fds`.
        if !ready_now {
            // Say that this side sleeps, so that workers wake it on their sockets; an answer
            // that came meanwhile makes this a look instead.
            let mut arrived = false;
            for l in &lanes {
                arrived |= l.going_to_sleep();
            }
            if arrived {
                timeout = PollTimeout::ZERO;
            }
            loop {
                match poll(&mut fds, timeout) {
                    Ok(_) => break,
                    Err(Errno::EINTR) => continue,
                    Err(_) => {
                        // Should not happen; avoid a busy loop all the same.
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        break;
                    }
                }
            }
            for l in &lanes {
                l.awake();
            }
            self.spin.woke();
        }
        let any = |f: &PollFd<'_>, mask: PollFlags| f.revents().is_some_and(|r| r.intersects(mask));
        let rd = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        let woken = any(&fds[0], PollFlags::POLLIN);
        let per = at
            .into_iter()
            .zip(&self.slots)
            .map(|((channel, sentinel), s)| {
                let c = channel.map(|c| &fds[c]);
                Ready {
                    readable: c.is_some_and(|c| any(c, rd)),
                    lane: channel.is_some()
                        && !s.awaiting_marked
                        && s.lanes.as_ref().is_some_and(|l| l.has_data()),
                    writable: c.is_some_and(|c| any(c, PollFlags::POLLOUT)),
                    exited: any(&fds[sentinel], rd | PollFlags::POLLNVAL),
                }
            })
            .collect();
        (woken, per)
    }

    /// Completes the tasks whose results arrived and frees their places in flight.
    fn finish(&mut self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        // The places are freed before the results are delivered: a callback that submits
        // the next task (on this thread) must find room, not wait for itself.
        let mut st = self.core.lock();
        st.in_flight -= done.len();
        drop(st);
        self.core.notify_space();
        for d in done {
            deliver(d);
        }
    }

    /// Handles the exit of worker `i`: fails the job it was running, requeues the ones it had not
    /// started and reaps it (the next round starts a replacement if the pool still needs one).
    fn bury(&mut self, i: usize) {
        let mut slot = self.slots.swap_remove(i);
        let code = slot.link.reap();
        let pid = slot.link.pid();
        let mut failed = None;
        let mut failed_alone: Option<(Task, Error)> = None;
        let init_failed = slot.init_failed.take();
        // Terminated tasks were completed already: only their places in flight are left.
        let held = slot.held.len();
        slot.held.retain(|t| !t.terminated);
        let stones = held - slot.held.len();
        // A worker killed for a terminated task, or retiring above its memory limit, gives
        // every task it holds to the others (one it had just started runs again).
        let gives_back = slot.killed_for_terminate || slot.retiring;
        if !gives_back && let Some(first) = slot.held.pop_front() {
            failed = Some(first);
        }
        // A worker that was not asked to stop, or held a job, or was killed for a bad answer,
        // died; one whose initializer failed breaks the pool instead of being replaced.
        let died = !gives_back && (slot.fault.is_some() || failed.is_some() || !slot.stopping);
        // Deaths the pool caused (a time limit) do not count against the restart intensity.
        let unexpected = died && slot.expired.is_none() && init_failed.is_none();
        if init_failed.is_some() {
            crate::log::event!(
                warn,
                pid,
                exitcode = code,
                "pool worker's initializer failed"
            );
        } else if died {
            self.replacing += 1;
            crate::log::event!(
                warn,
                pid,
                exitcode = code,
                running_a_task = failed.is_some(),
                malformed_answer = slot.fault.is_some(),
                "pool worker died"
            );
        } else {
            crate::log::event!(debug, pid, exitcode = code, "pool worker retired");
        }
        let mut st = self.core.lock();
        st.pids.retain(|p| *p != pid);
        st.in_flight -= stones;
        for t in slot.held.drain(..).rev() {
            st.queue.push_front(t);
        }
        if unexpected
            && let Some(why) = self.deaths.record(Instant::now())
            && st.broken.is_none()
        {
            crate::log::event!(warn, pid, "pool stops replacing workers: {why}");
            st.broken = Some(why);
        }
        let expired = slot.expired.take();
        if let Some(x) = &expired
            && let Some(task) = failed.take()
        {
            let limit = task.limit().unwrap_or_default();
            let error = Error::TimeLimitExceeded {
                limit,
                elapsed: x.elapsed,
                pid,
                index: Some(0),
            };
            match without_item(task, x, pid) {
                Ok(rest) => st.queue.push_front(rest),
                Err(task) => failed_alone = Some((task, error)),
            }
        }
        if failed.is_some() || failed_alone.is_some() {
            st.in_flight -= 1;
        }
        if let Some(reason) = init_failed
            && st.broken.is_none()
        {
            st.broken = Some(reason);
        }
        drop(st);
        self.core.notify_space();
        if let Some((task, error)) = failed_alone {
            task.fail(|| error.replicate());
        }
        if let Some(task) = failed {
            match slot.fault.take() {
                Some(fault) => task.fail(|| {
                    Error::protocol(format!(
                        "pool worker {pid} sent a malformed answer and was replaced: {fault}"
                    ))
                }),
                None => {
                    let signal = if code < 0 { -code } else { 0 };
                    match self.cfg.memory_limit {
                        // Rust aborts on a failed allocation.
                        Some(limit) if signal == libc::SIGABRT => {
                            task.fail_each(|| Error::MemoryLimitExceeded {
                                limit,
                                pid,
                                index: None,
                            })
                        }
                        _ => task.fail_each(|| Error::WorkerDied {
                            pid,
                            signal,
                            exitcode: code,
                            index: None,
                        }),
                    }
                }
            }
        }
    }

    fn all_idle(&self) -> bool {
        self.slots.iter().all(|s| s.held.is_empty())
    }

    fn kill_all(&mut self) {
        for s in &self.slots {
            s.link.kill();
        }
        let mut tasks = Vec::new();
        for mut s in self.slots.drain(..) {
            s.link.reap();
            tasks.extend(s.held.drain(..));
        }
        let mut st = self.core.lock();
        st.in_flight -= tasks.len();
        drop(st);
        for t in tasks {
            t.fail(terminated);
        }
    }
}

/// The task of an item that ran out of time, without that item: to be run again by another
/// worker, its results delivered with that item's error in its place (see [`Reinsert`]). The
/// task itself back if it has no other items, or if they cannot be separated from it (a batch
/// whose item's bytes are unknown), to fail whole.
#[allow(clippy::result_large_err)] // both sides are the task itself, moved
fn without_item(task: Task, x: &Expired, pid: i32) -> std::result::Result<Task, Task> {
    let n = task.chunk.nitems;
    if n <= 1 || x.position >= n || task.id != x.id {
        return Err(task);
    }
    let Some(chunk) = chunk_without(&task.chunk, x.position, x.span) else {
        return Err(task);
    };
    let limit = task.limit();
    let Task {
        worker,
        index,
        sink,
        started,
        chunk: old,
        ..
    } = task;
    let error = Error::TimeLimitExceeded {
        limit: limit.unwrap_or_default(),
        elapsed: x.elapsed,
        pid,
        index: Some(0),
    };
    let chunk = Chunk {
        fds: if old.batch { old.fds } else { chunk.fds },
        ..chunk
    };
    let reinsert = Arc::new(Reinsert {
        sink,
        at: x.position,
        error: Mutex::new(Some(error)),
    });
    let mut rest = Task::new(worker, index, chunk, reinsert).with_limit(limit);
    rest.started = started;
    Ok(rest)
}

/// The arguments of `chunk` without item `at` (whose bytes in a batch are `span`); `None` if
/// they cannot be told apart. A batch keeps its descriptors (filled in by the caller: an
/// item's indices refer to the whole table); per-item chunks lose the dropped item's.
fn chunk_without(chunk: &Chunk, at: usize, span: (usize, usize)) -> Option<Chunk> {
    let mut items = Vec::with_capacity(chunk.items.len());
    if chunk.batch {
        let mut cur = Cursor::new(&chunk.items);
        cur.uint().ok()?;
        let prefix = cur.position();
        let (start, end) = span;
        if start < prefix || end < start || end > chunk.items.len() {
            return None;
        }
        wire::put_uint(&mut items, (chunk.nitems - 1) as u64);
        items.extend_from_slice(&chunk.items[prefix..start]);
        items.extend_from_slice(&chunk.items[end..]);
        return Some(Chunk {
            items: Arc::new(items),
            fds: Vec::new(),
            nitems: chunk.nitems - 1,
            batch: true,
        });
    }
    let mut cur = Cursor::new(&chunk.items);
    let mut fds = Vec::new();
    let mut next_fd = 0;
    for i in 0..chunk.nitems {
        let from = cur.position();
        let nfds = cur.usize().ok()?;
        cur.bytes().ok()?;
        let to = cur.position();
        if i != at {
            items.extend_from_slice(&chunk.items[from..to]);
            for f in chunk.fds.get(next_fd..next_fd + nfds)? {
                fds.push(f.try_clone().ok()?);
            }
        }
        next_fd += nfds;
    }
    Some(Chunk {
        items: Arc::new(items),
        fds,
        nitems: chunk.nitems - 1,
        batch: false,
    })
}

/// Delivers the results of a chunk sent again without its item that ran out of time, with
/// that item's error back in its place.
struct Reinsert {
    sink: Arc<dyn Sink>,
    at: usize,
    error: Mutex<Option<Error>>,
}

impl Sink for Reinsert {
    fn complete(&self, chunk: usize, results: ChunkResult<'_>) {
        let error = self
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(Error::Timeout);
        let results = match results {
            ChunkResult::Items(mut v) => {
                v.insert(self.at.min(v.len()), Err(error));
                ChunkResult::Items(v)
            }
            other => ChunkResult::Hole {
                rest: Box::new(other),
                at: self.at,
                error,
            },
        };
        self.sink.complete(chunk, results);
    }
}

fn terminated() -> Error {
    Error::PoolBroken {
        message: "the pool was terminated before this task finished".into(),
    }
}

/// Reads what worker `slot` sent: from its socket if `socket` (poll said it is readable, or the
/// worker exited), and from its answer lane. In lane mode the socket carries only the frames
/// the lane marks (answers with descriptors, long ones), wake-ups, and the two messages sent
/// from outside the job loop (`InitFailed`, and the watchdog's `Expired`), which are handled
/// after the lane: an answer written there before the watchdog spoke is then already counted.
fn read_results(
    slot: &mut Slot,
    socket: bool,
    done: &mut Vec<Done>,
    job_ns: &mut u64,
) -> Result<()> {
    while socket && !slot.ended {
        let filled = match &slot.pipe {
            Some(pipe) => pipe.recv(&mut slot.reader),
            None => slot.reader.fill(slot.link.channel()),
        };
        match filled {
            Ok(Some(0)) | Err(Error::Closed) => {
                slot.ended = true;
                break;
            }
            Ok(None) => break,
            // Saves a read that would only say "nothing more"; poll reports what comes later.
            Ok(Some(_)) if slot.reader.drained() => break,
            Ok(Some(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut later = Vec::new();
    while let Some(frame) = slot.reader.next_frame()? {
        match (slot.lanes.is_some(), frame.payload.first()) {
            (true, Some(&wire::WAKE)) => {}
            (true, Some(&wire::EXPIRED | &wire::INIT_FAILED)) | (false, _) => later.push(frame),
            (true, _) => slot.marked.push_back(frame),
        }
    }
    if let Some(lanes) = slot.lanes.clone() {
        let mut record = Vec::new();
        loop {
            if slot.awaiting_marked {
                let Some(frame) = slot.marked.pop_front() else {
                    break;
                };
                slot.awaiting_marked = false;
                if !handle_frame(slot, frame, done, job_ns)? {
                    return Ok(());
                }
                continue;
            }
            match lanes.recv(&mut record)? {
                None => break,
                Some(Record::Marker) => slot.awaiting_marked = true,
                Some(Record::Message) => {
                    let frame = RawFrame {
                        payload: std::mem::take(&mut record),
                        fds: Vec::new(),
                    };
                    if !handle_frame(slot, frame, done, job_ns)? {
                        return Ok(());
                    }
                }
            }
        }
    }
    for frame in later {
        if !handle_frame(slot, frame, done, job_ns)? {
            break;
        }
    }
    Ok(())
}

/// Handles one message from worker `slot`; false if nothing it sends after it counts (it ran
/// past a time limit and is being killed).
fn handle_frame(
    slot: &mut Slot,
    frame: RawFrame,
    done: &mut Vec<Done>,
    job_ns: &mut u64,
) -> Result<bool> {
    match frame.payload.first() {
        Some(&wire::DONE) => {
            let mut cur = Cursor::new(&frame.payload[1..]);
            let id = cur.uint()?;
            let Some(task) = slot.held.pop_front() else {
                return Err(Error::protocol("a worker answered a job it was not given"));
            };
            if task.id != id {
                slot.held.push_front(task);
                return Err(Error::protocol("a worker answered jobs out of order"));
            }
            let mut ns = [0u8; 8];
            for b in &mut ns {
                *b = cur.u8()?;
            }
            let ns = u64::from_le_bytes(ns).max(1);
            *job_ns = if *job_ns == 0 {
                ns
            } else {
                (*job_ns * 7 + ns) / 8
            };
            slot.answered = Instant::now();
            done.push(Done {
                task,
                payload: frame.payload,
                fds: frame.fds,
            });
        }
        Some(&wire::RETIRE) => {
            slot.retiring = true;
            slot.stopping = true;
        }
        Some(&wire::INIT_FAILED) => {
            slot.init_failed = Some(Cursor::new(&frame.payload[1..]).string()?);
        }
        Some(&wire::EXPIRED) => {
            let mut cur = Cursor::new(&frame.payload[1..]);
            let id = cur.uint()?;
            let position = cur.usize()?;
            let elapsed = Duration::from_nanos(cur.uint()?);
            let span = (cur.usize()?, cur.usize()?);
            if slot.held.front().is_none_or(|t| t.id != id) {
                return Err(Error::protocol("a worker timed a job it was not running"));
            }
            // The worker is killed now; nothing it sends after this counts.
            slot.expired = Some(Expired {
                id,
                position,
                elapsed,
                span,
            });
            return Ok(false);
        }
        _ => return Err(Error::protocol("unknown message from a pool worker")),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    //! The scheduler against scripted workers: the test plays the worker's side of the socket,
    //! so it can send what a real worker never would.

    use std::os::fd::AsFd;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::transport::socket::stream_pair;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn an_answer_lends_its_results_where_they_lie_and_refuses_others() {
        let payload = b"..abc..de".to_vec();
        let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let results = ChunkResult::Items(vec![
            Ok((&payload[2..5], Vec::new())),
            Err(Error::Timeout),
            Ok((&payload[7..9], vec![fd])),
        ]);
        let results = Answer::spans(&payload, results).expect("all inside");
        let mut answer = Answer { payload, results };
        assert_eq!(answer.items(), Some(3));
        let ChunkResult::Items(v) = answer.view() else {
            panic!("items")
        };
        assert_eq!(v[0].as_ref().unwrap().0, b"abc");
        assert!(matches!(v[1], Err(Error::Timeout)));
        let (bytes, fds) = v[2].as_ref().unwrap();
        assert_eq!((*bytes, fds.len()), (&b"de"[..], 1));
        drop(v);
        // The descriptors moved out with the first view.
        let ChunkResult::Items(v) = answer.view() else {
            panic!("items")
        };
        assert!(v[2].as_ref().unwrap().1.is_empty());

        let batch = b"xbatch".to_vec();
        let results = Answer::spans(&batch, ChunkResult::Batch(Ok((&batch[1..], Vec::new()))));
        let mut answer = Answer {
            results: results.expect("inside"),
            payload: batch,
        };
        assert_eq!(answer.items(), None);
        assert!(matches!(answer.view(), ChunkResult::Batch(Ok((b, _))) if b == b"batch"));

        // Bytes that do not lie in the payload are not taken for its own.
        let payload = b"short".to_vec();
        let elsewhere = b"other bytes".to_vec();
        let stray = ChunkResult::Items(vec![Ok((&elsewhere[..], Vec::new()))]);
        assert!(Answer::spans(&payload, stray).is_none());
        let hole = ChunkResult::Hole {
            rest: Box::new(ChunkResult::Items(Vec::new())),
            at: 0,
            error: Error::Timeout,
        };
        assert!(Answer::spans(&payload, hole).is_none());
    }

    /// A worker whose far end of the socket the test holds; "exits" when killed.
    struct FakeLink {
        pid: i32,
        channel: OwnedFd,
        exited: EventFd,
    }

    impl Link for FakeLink {
        fn pid(&self) -> i32 {
            self.pid
        }
        fn channel(&self) -> std::os::fd::BorrowedFd<'_> {
            self.channel.as_fd()
        }
        fn sentinel(&self) -> std::os::fd::BorrowedFd<'_> {
            self.exited.as_fd()
        }
        fn kill(&self) {
            let _ = self.exited.write(1);
        }
        fn reap(&mut self) -> i32 {
            -9
        }
    }

    /// Hands the test the worker's end of each worker it starts.
    struct FakeLauncher {
        next_pid: i32,
        workers: mpsc::Sender<OwnedFd>,
    }

    impl Launcher for FakeLauncher {
        /// The scripted workers speak on the socket only.
        fn shares_memory(&self) -> bool {
            false
        }

        fn launch(&mut self) -> Result<Box<dyn Link>> {
            let (ours, theirs) = stream_pair()?;
            crate::sys::fd::set_nonblocking(ours.as_fd(), true)
                .map_err(|e| Error::io("fcntl", e))?;
            self.next_pid += 1;
            let _ = self.workers.send(theirs);
            Ok(Box::new(FakeLink {
                pid: self.next_pid,
                channel: ours,
                exited: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)
                    .map_err(|e| Error::io("eventfd", e))?,
            }))
        }
    }

    /// Sends each task's outcome (per item: the bytes or the error) to the test.
    struct ToTest(Mutex<mpsc::Sender<Vec<Result<Vec<u8>>>>>);

    impl Sink for ToTest {
        fn complete(&self, _chunk: usize, results: ChunkResult<'_>) {
            let items = match results {
                ChunkResult::Items(v) => v,
                ChunkResult::Batch(r) => vec![r],
                ChunkResult::Hole { error, .. } => vec![Err(error)],
            };
            let out = items
                .into_iter()
                .map(|r| r.map(|(b, _)| b.to_vec()))
                .collect();
            let _ = self.0.lock().unwrap().send(out);
        }
    }

    fn task(sink: &Arc<ToTest>) -> Task {
        let mut items = Vec::new();
        wire::put_uint(&mut items, 0);
        wire::put_bytes(&mut items, b"x");
        let chunk = Chunk {
            items: items.into(),
            fds: Vec::new(),
            nitems: 1,
            batch: false,
        };
        Task::new("test", 0, chunk, sink.clone())
    }

    /// Reads the next job frame on the worker's side; returns the job's id.
    fn next_job(sock: &OwnedFd) -> u64 {
        let mut r = FrameReader::new(wire::MAX_FRAME);
        loop {
            if let Some(f) = r.next_frame().unwrap() {
                assert_eq!(f.payload[0], wire::JOB);
                return Cursor::new(&f.payload[1..]).uint().unwrap();
            }
            assert_ne!(r.fill(sock.as_fd()).unwrap(), Some(0), "no job came");
        }
    }

    fn send(sock: &OwnedFd, bytes: &[u8]) {
        crate::transport::frame::send_parts(sock.as_fd(), &[bytes], &[]).unwrap();
    }

    fn done_frame(id: u64, rest: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let at = wire::begin_frame(&mut buf);
        buf.push(wire::DONE);
        wire::put_uint(&mut buf, id);
        buf.extend_from_slice(&1000u64.to_le_bytes());
        buf.extend_from_slice(rest);
        wire::end_frame(&mut buf, at, 0);
        buf
    }

    /// Answers job `id` with one item, `value`, and checks that its task completes with it.
    fn answer_ok(w: &OwnedFd, rx: &mpsc::Receiver<Vec<Result<Vec<u8>>>>, id: u64, value: &[u8]) {
        let mut ok = vec![1];
        ok.push(wire::TAG_OK);
        wire::put_uint(&mut ok, 0);
        wire::put_bytes(&mut ok, value);
        send(w, &done_frame(id, &ok));
        let got = rx.recv_timeout(LONG).unwrap();
        assert!(matches!(&got[..], [Ok(b)] if b == value), "{got:?}");
    }

    fn expect_protocol_error(rx: &mpsc::Receiver<Vec<Result<Vec<u8>>>>, text: &str) {
        let got = rx.recv_timeout(LONG).expect("the task completes");
        match &got[..] {
            [Err(Error::Protocol { message })] => assert!(message.contains(text), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The pool lists `pids` (a replacement is listed just after it starts).
    fn pids_become(core: &Core, pids: &[i32]) {
        let deadline = std::time::Instant::now() + LONG;
        while core.pids() != pids {
            assert!(std::time::Instant::now() < deadline, "{:?}", core.pids());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A scheduler with one scripted worker: the pool's core, its thread, and the worker's end
    /// of each worker it starts (the first, then each replacement).
    fn one_scripted_worker() -> (
        Arc<Core>,
        std::thread::JoinHandle<()>,
        mpsc::Receiver<OwnedFd>,
    ) {
        let (wtx, wrx) = mpsc::channel();
        let mut launcher = FakeLauncher {
            next_pid: 100,
            workers: wtx,
        };
        let first = launcher.launch().unwrap();
        let core = Core::new(None, false, Limits::default()).unwrap();
        let cfg = Config {
            processes: 1,
            max_tasks_per_child: None,
            lazy: false,
            intensity: Intensity::default_for(1),
            memory_limit: None,
        };
        let thread = spawn(core.clone(), Box::new(launcher), vec![first], cfg).unwrap();
        (core, thread, wrx)
    }

    /// Reads the next frame on the worker's side, failing (not hanging) if none comes whole.
    fn next_frame(r: &mut FrameReader, sock: &OwnedFd) -> RawFrame {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            if let Some(f) = r.next_frame().unwrap() {
                return f;
            }
            assert!(std::time::Instant::now() < deadline, "no whole frame came");
            if crate::sys::poll::readable(sock.as_fd(), Deadline::after(Some(LONG / 30))).unwrap() {
                assert_ne!(r.fill(sock.as_fd()).unwrap(), Some(0), "no frame came");
            }
        }
    }

    #[test]
    fn long_jobs_arrive_whole_whichever_path_writes_them() {
        let (core, thread, wrx) = one_scripted_worker();
        let (tx, rx) = mpsc::channel();
        let sink = Arc::new(ToTest(Mutex::new(tx)));
        let w = wrx.recv_timeout(LONG).unwrap();
        let mut reader = FrameReader::new(wire::MAX_FRAME);
        // A job with a descriptor is always written by the scheduler (a submitter hands only
        // plain jobs to an idle worker).
        let long = |n: usize, with_fd: bool| {
            let items: Vec<u8> = (0..(1 << 20) + n).map(|i| (i * 13 + n) as u8).collect();
            let fds = match with_fd {
                true => vec![std::io::stdin().as_fd().try_clone_to_owned().unwrap()],
                false => Vec::new(),
            };
            let chunk = Chunk {
                items: items.clone().into(),
                fds,
                nitems: 1,
                batch: false,
            };
            (Task::new("test", 0, chunk, sink.clone()), items)
        };
        // One at a time (written by the submitter while the scheduler sleeps, or by the
        // scheduler), then three at once; each is more than the socket takes at once.
        for (batch, with_fd) in [(1, false), (1, true), (3, false), (3, true), (1, false)] {
            let mut sent = Vec::new();
            for n in 0..batch {
                let (t, items) = long(n, with_fd);
                core.submit(t, false).unwrap();
                sent.push(items);
            }
            for items in sent {
                let f = next_frame(&mut reader, &w);
                assert_eq!(f.payload[0], wire::JOB);
                assert!(f.payload.ends_with(&items), "a long job arrived changed");
                assert_eq!(f.fds.len(), usize::from(with_fd));
                let id = Cursor::new(&f.payload[1..]).uint().unwrap();
                answer_ok(&w, &rx, id, b"ok");
            }
        }
        core.terminate();
        core.wait_finished();
        thread.join().unwrap();
    }

    #[test]
    fn bad_answers_fail_their_task_and_the_worker_is_replaced() {
        let (core, thread, wrx) = one_scripted_worker();
        let (tx, rx) = mpsc::channel();
        let sink = Arc::new(ToTest(Mutex::new(tx)));

        // Garbage instead of a frame header: the task fails, the worker is replaced.
        let w = wrx.recv_timeout(LONG).unwrap();
        core.submit(task(&sink), false).unwrap();
        next_job(&w);
        send(&w, &[0xAB; 16]);
        expect_protocol_error(&rx, "bad frame magic");
        let w = wrx.recv_timeout(LONG).expect("a replacement worker");
        pids_become(&core, &[102]);

        // An answer to a job it was not given.
        core.submit(task(&sink), false).unwrap();
        let id = next_job(&w);
        send(&w, &done_frame(id + 7, &[]));
        expect_protocol_error(&rx, "out of order");
        let w = wrx.recv_timeout(LONG).expect("a replacement worker");

        // A well-framed answer whose body is cut short: that task fails, the worker stays.
        core.submit(task(&sink), false).unwrap();
        let id = next_job(&w);
        send(&w, &done_frame(id, &[]));
        expect_protocol_error(&rx, "truncated");
        pids_become(&core, &[103]);

        // A good answer still works on the same worker.
        core.submit(task(&sink), false).unwrap();
        let id = next_job(&w);
        answer_ok(&w, &rx, id, b"42");

        // Terminating with a task in flight fails it and ends the thread.
        core.submit(task(&sink), false).unwrap();
        next_job(&w);
        core.terminate();
        core.wait_finished();
        thread.join().unwrap();
        let got = rx.recv_timeout(LONG).unwrap();
        assert!(
            matches!(&got[..], [Err(Error::PoolBroken { .. })]),
            "{got:?}"
        );
    }
}
