//! The worker side of time limits: a thread in each pool worker process that watches the item
//! running now and, when it passes its job's limit, tells the pool (an `Expired` frame), which
//! then kills the worker and replaces it.
//!
//! The clock of an item starts when the worker starts it (after its job waited in the queue and
//! in the socket), so time spent queued does not count.
//!
//! **Cheap per item.** Starting an item only bumps a counter and stores its position (relaxed
//! atomic stores, no clock read, no lock, no system call): a timed `map` of microsecond items
//! runs nearly as fast as an untimed one. The thread samples the counter every [`TICK`] while a
//! timed job runs, and notes when it first saw each value: an item whose counter value it has
//! seen for the limit has run at least that long (it started before it was first seen), and is
//! reported at most one tick late. A job start wakes the thread only if it went idle (no timed
//! job for [`IDLE_AFTER`]), so back-to-back jobs cost it nothing either.
//!
//! Why here and not in the pool: only the worker knows when an item starts (jobs are sent ahead
//! of time), and it needs no shared memory with the pool to tell. A worker stopped from outside
//! (SIGSTOP, a debugger) is not timed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::wire;
use crate::transport::frame::send_parts;

/// How often the thread looks while a timed job runs: the most an item is reported past its
/// limit, besides scheduling delays.
const TICK: Duration = Duration::from_millis(1);

/// A thread that saw no timed job for this long sleeps until the next one starts.
const IDLE_AFTER: Duration = Duration::from_millis(50);

/// The watchdog of this worker process.
pub(crate) struct Watchdog {
    /// Bumped when an item (or a job) starts.
    item_seq: AtomicU64,
    /// The timed job running (0: none) and its limit.
    job: AtomicU64,
    limit_ns: AtomicU64,
    /// The running item's position and where its arguments are in its job's bytes.
    pos: AtomicU64,
    span_start: AtomicU64,
    span_end: AtomicU64,
    /// The item counter value the thread last saw change, and when (nanoseconds since
    /// [`epoch`]); read by [`task_deadline`].
    seen_seq: AtomicU64,
    seen_at: AtomicU64,
    /// The thread sleeps until a job starts.
    idle: AtomicBool,
    wake: (Mutex<()>, Condvar),
    /// The pool's socket (a copy), shared with the worker loop, which holds `writing` while it
    /// sends; given back when the loop ends, so that the pool sees the end of the stream.
    sock: Mutex<Option<OwnedFd>>,
    writing: Mutex<()>,
}

static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();

thread_local! {
    /// Whether the job this thread runs is timed.
    static ACTIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The deadline [`task_deadline`] gave for an item counter value.
    static DEADLINE: std::cell::Cell<Option<(u64, Instant)>> = const { std::cell::Cell::new(None) };
}

/// The instant the watchdog's times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch())
        .as_nanos()
        .min(u64::MAX as u128) as u64
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
    epoch();
    let w = Arc::new(Watchdog {
        item_seq: AtomicU64::new(0),
        job: AtomicU64::new(0),
        limit_ns: AtomicU64::new(0),
        pos: AtomicU64::new(0),
        span_start: AtomicU64::new(0),
        span_end: AtomicU64::new(0),
        seen_seq: AtomicU64::new(u64::MAX),
        seen_at: AtomicU64::new(0),
        idle: AtomicBool::new(true),
        wake: (Mutex::new(()), Condvar::new()),
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
        w.job.store(0, Ordering::SeqCst);
        *w.sock.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The watchdog if one was started (the worker loop takes its write lock to send).
pub(crate) fn running() -> Option<&'static Arc<Watchdog>> {
    WATCHDOG.get()
}

impl Watchdog {
    /// Serializes writes to the pool's socket between the worker loop and this thread.
    pub(crate) fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Job `job` starts, under `limit`.
    pub(crate) fn begin_job(&self, job: u64, limit: Duration) {
        self.limit_ns.store(
            limit.as_nanos().clamp(1, u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        self.pos.store(0, Ordering::Relaxed);
        self.item_seq.fetch_add(1, Ordering::Relaxed);
        self.job.store(job, Ordering::SeqCst);
        ACTIVE.set(true);
        if self.idle.load(Ordering::SeqCst) {
            let _g = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            self.idle.store(false, Ordering::SeqCst);
            self.wake.1.notify_one();
        }
    }

    /// Item `pos` of the job starts now; its arguments are bytes `span` of the job's chunk.
    #[inline]
    pub(crate) fn item(&self, pos: usize, span: (u64, u64)) {
        self.pos.store(pos as u64, Ordering::Relaxed);
        self.span_start.store(span.0, Ordering::Relaxed);
        self.span_end.store(span.1, Ordering::Relaxed);
        // Only this thread writes the count: a plain store, not a locked add. Release: the
        // thread that sees the new count sees this item's position.
        let seq = self.item_seq.load(Ordering::Relaxed);
        self.item_seq.store(seq.wrapping_add(1), Ordering::Release);
    }

    /// The job ended: nothing is timed until the next.
    pub(crate) fn end_job(&self) {
        self.job.store(0, Ordering::SeqCst);
        ACTIVE.set(false);
    }

    fn watch(&self) {
        let mut seen = u64::MAX;
        let mut since = Instant::now();
        let mut quiet_since = Instant::now();
        loop {
            if self.job.load(Ordering::SeqCst) == 0 {
                if quiet_since.elapsed() >= IDLE_AFTER {
                    self.sleep_until_a_job();
                    quiet_since = Instant::now();
                    seen = u64::MAX;
                    continue;
                }
            } else {
                quiet_since = Instant::now();
            }
            std::thread::sleep(TICK);
            let seq = self.item_seq.load(Ordering::Acquire);
            let now = Instant::now();
            if seq != seen {
                seen = seq;
                since = now;
                self.seen_at
                    .store(nanos_since_epoch(now), Ordering::Relaxed);
                self.seen_seq.store(seq, Ordering::Release);
                continue;
            }
            let job = self.job.load(Ordering::SeqCst);
            let limit = Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed));
            if job != 0 && now.duration_since(since) >= limit && self.report(job, seq, since) {
                // The pool kills this process now; nothing more to watch.
                return;
            }
        }
    }

    /// Sleeps until a timed job starts.
    fn sleep_until_a_job(&self) {
        let mut g = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        self.idle.store(true, Ordering::SeqCst);
        while self.job.load(Ordering::SeqCst) == 0 && self.idle.load(Ordering::SeqCst) {
            g = self.wake.1.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        self.idle.store(false, Ordering::SeqCst);
    }

    /// Sends `Expired id position elapsed_ns start end` for the item counted `seq` of job
    /// `job`, first seen at `since`, if it still runs: under the write lock, so that the worker
    /// cannot have answered the job in between. False if it ended first.
    fn report(&self, job: u64, seq: u64, since: Instant) -> bool {
        let _g = self.write_lock();
        if self.job.load(Ordering::SeqCst) != job || self.item_seq.load(Ordering::Acquire) != seq {
            return false;
        }
        let pos = self.pos.load(Ordering::Relaxed);
        let span = (
            self.span_start.load(Ordering::Relaxed),
            self.span_end.load(Ordering::Relaxed),
        );
        let elapsed = since.elapsed();
        let mut buf = Vec::with_capacity(64);
        let at = wire::begin_frame(&mut buf);
        buf.push(wire::EXPIRED);
        wire::put_uint(&mut buf, job);
        wire::put_uint(&mut buf, pos);
        wire::put_uint(&mut buf, elapsed.as_nanos().min(u64::MAX as u128) as u64);
        wire::put_uint(&mut buf, span.0);
        wire::put_uint(&mut buf, span.1);
        wire::end_frame(&mut buf, at, 0);
        if let Some(sock) = self.sock.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = send_parts(sock.as_fd(), &[&buf], &[]);
        }
        true
    }

    /// The deadline of the item running on this thread: when the watchdog first saw it plus
    /// the limit, or, if it has not seen it yet, now plus the limit (it will see it later, so
    /// the worker is never killed before the deadline it was told).
    fn deadline(&self) -> Instant {
        let seq = self.item_seq.load(Ordering::Acquire);
        if let Some((s, d)) = DEADLINE.get()
            && s == seq
        {
            return d;
        }
        let limit = Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed));
        let start = if self.seen_seq.load(Ordering::Acquire) == seq {
            epoch() + Duration::from_nanos(self.seen_at.load(Ordering::Relaxed))
        } else {
            Instant::now()
        };
        let d = start + limit;
        DEADLINE.set(Some((seq, d)));
        d
    }
}

/// When the item this worker runs must be done by: its start plus the time limit of its call
/// or pool (measured as the pool measures it, so never later than the kill). `None` outside a
/// pool worker, or for a task without a limit. A worker that wants to stop cleanly before it is
/// killed (Celery's `soft_time_limit`) checks it as it goes.
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
    active().map(|w| w.deadline())
}
