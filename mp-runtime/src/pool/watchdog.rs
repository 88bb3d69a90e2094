//! The worker side of time limits: a thread in each pool worker process that watches the item
//! running now and, when it passes its job's limit, tells the pool (an `Expired` frame), which
//! then kills the worker and replaces it.
//!
//! The clock of an item starts when the worker starts it (after its job waited in the queue and
//! in the socket), so time spent queued does not count. Per item the worker only stores the
//! item's position and start time under an uncontended lock; the thread sleeps until the
//! deadline of what it last saw and looks again, so an item that ends in time costs it nothing.
//! Jobs without a limit do not touch it, and a worker that never gets one never starts it.
//!
//! Why here and not in the pool: only the worker knows when an item starts (jobs are sent ahead
//! of time), and it needs no shared memory with the pool to tell. A worker stopped from outside
//! (SIGSTOP, a debugger) is not timed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::wire;
use crate::transport::frame::send_parts;

/// What runs now under a limit.
#[derive(Default)]
struct Watched {
    job: u64,
    limit: Duration,
    /// The item running and when it started (`None`: nothing timed runs).
    item: Option<(usize, Instant)>,
    /// Where the running item's arguments start and end in its job's bytes (batch jobs).
    span: (u64, u64),
}

/// The watchdog of this worker process.
pub(crate) struct Watchdog {
    state: Mutex<Watched>,
    cv: Condvar,
    /// The pool's socket (a copy), shared with the worker loop, which holds `writing` while it
    /// sends; given back when the loop ends, so that the pool sees the end of the stream.
    sock: Mutex<Option<OwnedFd>>,
    writing: Mutex<()>,
}

static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();

thread_local! {
    /// The deadline of the item this thread runs (for [`task_deadline`]).
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    /// Whether the job this thread runs is timed.
    static ACTIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The watchdog, if the job this thread runs now is timed (the items of a batch report to it).
#[inline]
pub(crate) fn active() -> Option<&'static Arc<Watchdog>> {
    if ACTIVE.get() { WATCHDOG.get() } else { None }
}

/// The watchdog, started on first use with a duplicate of the pool's socket.
pub(crate) fn get(sock: BorrowedFd<'_>) -> Option<&'static Arc<Watchdog>> {
    if let Some(w) = WATCHDOG.get() {
        let mut own = w.sock.lock().unwrap_or_else(|p| p.into_inner());
        if own.is_none() {
            // A loop that ended gave its copy back; this one serves another socket.
            *own = sock.try_clone_to_owned().ok();
        }
        return Some(w);
    }
    let dup = sock.try_clone_to_owned().ok()?;
    let w = Arc::new(Watchdog {
        state: Mutex::new(Watched::default()),
        cv: Condvar::new(),
        sock: Mutex::new(Some(dup)),
        writing: Mutex::new(()),
    });
    let run = w.clone();
    std::thread::Builder::new()
        .name("mp-watchdog".into())
        .spawn(move || run.watch())
        .ok()?;
    let _ = WATCHDOG.set(w);
    WATCHDOG.get()
}

/// The worker loop ended: the watchdog stops timing and gives back its copy of the socket.
pub(crate) fn release() {
    if let Some(w) = WATCHDOG.get() {
        w.lock().item = None;
        *w.sock.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The watchdog if one was started (the worker loop takes its write lock to send).
pub(crate) fn running() -> Option<&'static Arc<Watchdog>> {
    WATCHDOG.get()
}

impl Watchdog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serializes writes to the pool's socket between the worker loop and this thread.
    pub(crate) fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Job `job` starts, under `limit`.
    pub(crate) fn begin_job(&self, job: u64, limit: Duration) {
        let mut st = self.lock();
        st.job = job;
        st.limit = limit;
        st.item = None;
        ACTIVE.set(true);
    }

    /// Item `pos` of the job starts now; its arguments are bytes `span` of the job's chunk.
    #[inline]
    pub(crate) fn item(&self, pos: usize, span: (u64, u64)) {
        let now = Instant::now();
        let mut st = self.lock();
        let was_idle = st.item.is_none();
        st.item = Some((pos, now));
        st.span = span;
        let deadline = now + st.limit;
        drop(st);
        DEADLINE.set(Some(deadline));
        if was_idle {
            self.cv.notify_one();
        }
    }

    /// The job ended: nothing is timed until the next.
    pub(crate) fn end_job(&self) {
        self.lock().item = None;
        DEADLINE.set(None);
        ACTIVE.set(false);
    }

    fn watch(&self) {
        let mut st = self.lock();
        loop {
            let Some((pos, started)) = st.item else {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let deadline = started + st.limit;
            let now = Instant::now();
            if now < deadline {
                st = self
                    .cv
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            let (job, span, elapsed) = (st.job, st.span, now - started);
            st.item = None;
            drop(st);
            self.report(job, pos, elapsed, span);
            // The pool kills this process now; nothing more to watch.
            return;
        }
    }

    /// Sends `Expired id position elapsed_ns start end`.
    fn report(&self, job: u64, pos: usize, elapsed: Duration, span: (u64, u64)) {
        let mut buf = Vec::with_capacity(64);
        let at = wire::begin_frame(&mut buf);
        buf.push(wire::EXPIRED);
        wire::put_uint(&mut buf, job);
        wire::put_uint(&mut buf, pos as u64);
        wire::put_uint(&mut buf, elapsed.as_nanos().min(u64::MAX as u128) as u64);
        wire::put_uint(&mut buf, span.0);
        wire::put_uint(&mut buf, span.1);
        wire::end_frame(&mut buf, at, 0);
        let _g = self.write_lock();
        if let Some(sock) = self.sock.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = send_parts(sock.as_fd(), &[&buf], &[]);
        }
    }
}

/// When the item this worker runs must be done by: its start plus the time limit of its call
/// or pool. `None` outside a pool worker, or for a task without a limit. A worker that wants
/// to stop cleanly before it is killed (Celery's `soft_time_limit`) checks it as it goes.
///
/// ```
/// #[mp::worker]
/// fn patient(steps: u32) -> u32 {
///     let mut done = 0;
///     for _ in 0..steps {
///         if mp::task_deadline().is_some_and(|d| std::time::Instant::now() + std::time::Duration::from_millis(50) > d) {
///             break; // leave before the pool kills this worker
///         }
///         done += 1;
///     }
///     done
/// }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     assert_eq!(mp::task_deadline(), None);
///     let pool = mp::Pool::builder().processes(1).time_limit(std::time::Duration::from_secs(30)).build()?;
///     assert_eq!(pool.apply(patient, (10,))?, 10);
///     Ok(())
/// }
/// ```
pub fn task_deadline() -> Option<Instant> {
    DEADLINE.get()
}
