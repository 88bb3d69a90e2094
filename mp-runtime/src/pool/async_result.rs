//! [`AsyncResult`]: the handle on a result that a pool computes in the background.

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::scheduler::Core;

use serde::de::DeserializeOwned;

use super::chunking::{decode_chunk, decode_results};
use super::scheduler::{ChunkResult, Sink};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;
use crate::sys::spin_wait::SpinWait;

/// Functions to call when a result is ready: `on_success` with the value, `on_error` with the
/// error; exactly one of them runs (Python's `callback` and `error_callback`).
///
/// They run on the pool's scheduler thread, before [`AsyncResult::get`] returns: keep them short
/// and do not block in them (waiting for another result of the same pool would wait for the
/// thread that is running the callback). Submitting, closing, terminating or dropping the pool
/// from a callback is fine: those do not wait there; a submission that would have to wait for
/// room under [`max_tasks_in_flight`](crate::PoolBuilder::max_tasks_in_flight) fails with
/// [`Error::InvalidState`] instead. A callback that panics is reported on stderr; the result is
/// still delivered.
pub struct Callbacks<T> {
    success: Option<OnSuccess<T>>,
    error: Option<OnError>,
}

type OnSuccess<T> = Box<dyn FnOnce(&T) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Callbacks {
            success: None,
            error: None,
        }
    }
}

impl<T> Callbacks<T> {
    /// No callbacks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called with the value when the task succeeds.
    pub fn on_success(mut self, f: impl FnOnce(&T) + Send + 'static) -> Self {
        self.success = Some(Box::new(f));
        self
    }

    /// Called with the error when the task fails.
    pub fn on_error(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.error = Some(Box::new(f));
        self
    }
}

impl<T> fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Callbacks {{ success: {}, error: {} }}",
            self.success.is_some(),
            self.error.is_some()
        )
    }
}

/// Wakes a thread that waits for any of several results.
#[derive(Default)]
pub(crate) struct Watcher {
    count: Mutex<u64>,
    cv: Condvar,
}

impl Watcher {
    pub(crate) fn notify(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }

    /// The notification count now.
    pub(crate) fn count(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the count differs from `seen` or `deadline` passes.
    pub(crate) fn wait_change(&self, seen: u64, deadline: Option<Instant>) {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *c == seen {
            match deadline {
                None => c = self.cv.wait(c).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return;
                    }
                    c = self
                        .cv
                        .wait_timeout(c, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

struct CellState<T> {
    value: Option<Result<T>>,
    done: bool,
    success: bool,
    waker: Option<Waker>,
    callbacks: Option<Callbacks<T>>,
    watchers: Vec<Arc<Watcher>>,
    /// Threads asleep on `cv`: a cell nobody sleeps on is filled without a wake-up call (a
    /// system call each, on the pool's thread, which fills every cell).
    sleepers: usize,
}

/// Where a result lands: filled once, waited on by any number of threads.
pub(crate) struct Cell<T> {
    m: Mutex<CellState<T>>,
    cv: Condvar,
    /// Set with `done`, readable without the lock.
    ready: AtomicBool,
}

/// How this process's result waiters look for a result before they sleep: a short task's
/// result usually arrives within a round trip, and a thread that did not sleep needs no
/// wake-up. The pool's rule (`sys::spin_wait`): not while the machine is crowded, and less
/// after misses in a row, so that waits on long tasks stop spinning in vain.
static SPIN: SpinWait = SpinWait::pool();

impl<T> Cell<T> {
    pub(crate) fn new(callbacks: Option<Callbacks<T>>) -> Arc<Self> {
        Arc::new(Cell {
            m: Mutex::new(CellState {
                value: None,
                done: false,
                success: false,
                waker: None,
                callbacks,
                watchers: Vec::new(),
                sleepers: 0,
            }),
            cv: Condvar::new(),
            ready: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CellState<T>> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills the cell (the first call wins), runs the callbacks, wakes every waiter.
    pub(crate) fn set(&self, v: Result<T>) {
        let mut st = self.lock();
        if st.done {
            return;
        }
        if let Some(cb) = st.callbacks.take() {
            drop(st);
            let outcome = catch_unwind(AssertUnwindSafe(|| match &v {
                Ok(x) => {
                    if let Some(f) = cb.success {
                        f(x)
                    }
                }
                Err(e) => {
                    if let Some(f) = cb.error {
                        f(e)
                    }
                }
            }));
            if outcome.is_err() {
                crate::sys::stderr_line("mp: a pool result callback panicked; the result is kept");
            }
            st = self.lock();
        }
        st.success = v.is_ok();
        st.value = Some(v);
        st.done = true;
        self.ready.store(true, Ordering::Release);
        let waker = st.waker.take();
        let watchers = std::mem::take(&mut st.watchers);
        let sleepers = st.sleepers > 0;
        drop(st);
        if sleepers {
            self.cv.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        for w in watchers {
            w.notify();
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.lock().done
    }

    /// Whether the cell holds [`Error::Cancelled`].
    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self.lock().value, Some(Err(Error::Cancelled)))
    }

    /// `Some(success)` once done.
    pub(crate) fn outcome(&self) -> Option<bool> {
        let st = self.lock();
        st.done.then_some(st.success)
    }

    /// Registers `w` to be notified at completion; false (not registered) if already done.
    pub(crate) fn watch(&self, w: &Arc<Watcher>) -> bool {
        let mut st = self.lock();
        if st.done {
            return false;
        }
        st.watchers.push(w.clone());
        true
    }

    /// Stops notifying `w` (a waiter that gave up), so that repeated timed waits on a task that
    /// does not finish do not pile up watchers in its cell.
    pub(crate) fn unwatch(&self, w: &Arc<Watcher>) {
        self.lock().watchers.retain(|x| !Arc::ptr_eq(x, w));
    }

    /// Waits until done or `timeout` passes; true if done.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if self.ready.load(Ordering::Acquire)
            || SPIN.spin_until(Deadline::after(timeout), || {
                self.ready.load(Ordering::Acquire)
            })
        {
            return true;
        }
        let mut st = self.lock();
        while !st.done {
            st.sleepers += 1;
            st = match deadline {
                None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        st.sleepers -= 1;
                        return false;
                    }
                    self.cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            st.sleepers -= 1;
        }
        // The spin missed: if the result came soon after all, the next waits spin again.
        SPIN.woke();
        true
    }

    /// Stops the tasks `ids` whose outcomes fill this cell, unless it is done already, and
    /// waits for it: true if it ended as [`Error::Cancelled`].
    pub(crate) fn terminate(&self, core: &Core, ids: &[u64]) -> bool {
        if !self.is_done() {
            for id in ids {
                core.terminate_task(*id);
            }
            self.wait(None);
        }
        self.is_cancelled()
    }

    /// Takes the value once done.
    pub(crate) fn take(&self) -> Result<T> {
        let mut st = self.lock();
        if !st.done {
            return Err(Error::Timeout);
        }
        st.value.take().unwrap_or_else(|| {
            Err(Error::state(
                "this result was already returned by an earlier get",
            ))
        })
    }

    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut st = self.lock();
        if st.done {
            drop(st);
            return Poll::Ready(self.take());
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) and friends (Python's
/// `AsyncResult`). It is also a [`std::future::Future`], so it can be awaited from any async
/// runtime; the pool's thread wakes the task.
///
/// ```
/// #[mp::worker]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let pool = mp::Pool::new(2)?;
///     let r = pool.apply_async(square, (7,))?;
///     r.wait();
///     assert!(r.ready());
///     assert!(r.successful()?);
///     assert_eq!(r.get()?, 49);
///     Ok(())
/// }
/// ```
pub struct AsyncResult<T> {
    pub(crate) cell: Arc<Cell<T>>,
    /// The pool and the tasks whose outcomes make this result, for [`terminate`](Self::terminate).
    tasks: (Arc<Core>, Vec<u64>),
}

impl<T> AsyncResult<T> {
    pub(crate) fn of_tasks(cell: Arc<Cell<T>>, core: &Arc<Core>, ids: Vec<u64>) -> Self {
        AsyncResult {
            cell,
            tasks: (core.clone(), ids),
        }
    }

    /// Stops the call even if a worker is running it (pebble's `future.cancel()` on a running
    /// task, Celery's `revoke(terminate=True)`): a queued task is cancelled, and the worker
    /// process running one is killed and replaced. Only this call's tasks are affected: a task
    /// of another call that the killed worker had just started is run again elsewhere. Waits
    /// for the outcome and returns true if the call ended as [`Error::Cancelled`] (what
    /// [`get`](AsyncResult::get) then returns), false if it had finished first, with its
    /// result. For a `map_async`, the tasks that finished keep their results, and the call
    /// fails with [`Error::Cancelled`] (or an earlier item's error).
    ///
    /// ```
    /// # use std::time::Duration;
    /// #[mp::worker]
    /// fn stuck() -> u32 { std::thread::sleep(Duration::from_secs(3600)); 0 }
    ///
    /// # #[mp::main] fn main() -> mp::Result<()> {
    /// let pool = mp::Pool::new(1)?;
    /// let r = pool.apply_async(stuck, ())?;
    /// assert!(r.terminate());
    /// assert!(matches!(r.get(), Err(mp::Error::Cancelled)));
    /// # Ok(()) }
    /// ```
    pub fn terminate(&self) -> bool {
        let (core, ids) = &self.tasks;
        self.cell.terminate(core, ids)
    }

    /// Waits for the result and returns it (Python's `get()`). The task's error if it failed:
    /// [`Error::WorkerPanicked`], [`Error::TaskFailed`] (the worker returned `Err`),
    /// [`Error::WorkerDied`], [`Error::Codec`] (the result did not decode), or
    /// [`Error::PoolBroken`] (the pool was terminated first).
    pub fn get(self) -> Result<T> {
        self.cell.wait(None);
        self.cell.take()
    }

    /// Waits at most `timeout`: [`Error::Timeout`] if the result is not ready (it can be asked
    /// for again), else what [`get`](AsyncResult::get) returns.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.cell.wait(Some(timeout));
        self.cell.take()
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.cell.wait(None);
    }

    /// Waits at most `timeout`; true if the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.cell.wait(Some(timeout))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.cell.is_done()
    }

    /// Whether the task succeeded; [`Error::InvalidState`] if it is not ready yet (Python
    /// raises `ValueError`).
    pub fn successful(&self) -> Result<bool> {
        self.cell.outcome().ok_or_else(|| {
            Error::state("the result is not ready yet; wait() for it before asking successful()")
        })
    }
}

impl<T> std::future::Future for AsyncResult<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.cell.poll_take(cx)
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cell.outcome() {
            None => write!(f, "<AsyncResult pending>"),
            Some(true) => write!(f, "<AsyncResult ready ok>"),
            Some(false) => write!(f, "<AsyncResult ready failed>"),
        }
    }
}

/// Delivers a single item's result into a cell.
pub(crate) struct OneSink<R> {
    pub(crate) cell: Arc<Cell<R>>,
}

impl<R: DeserializeOwned + Send> Sink for OneSink<R> {
    fn complete(&self, _chunk: usize, results: ChunkResult<'_>) {
        let v = decode_results(results, 1, None)
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Error::protocol("a task returned no result")));
        self.cell.set(v);
    }
}

struct MapParts<R> {
    values: Vec<Option<R>>,
    remaining: usize,
    failed: bool,
    /// A submitter waits in [`MapSink::wait_for_room`].
    waiting: bool,
}

/// Assembles the chunks of a `map` into one vector; the first error fails the whole map at once
/// (the other chunks still run, as in Python).
pub(crate) struct MapSink<R> {
    cell: Arc<Cell<Vec<R>>>,
    len: usize,
    chunksize: usize,
    parts: Mutex<MapParts<R>>,
    /// Signalled as chunks complete, for a submitter held back by [`MapSink::wait_for_room`].
    room: Condvar,
    _r: PhantomData<fn() -> R>,
}

impl<R> MapSink<R> {
    pub(crate) fn new(cell: Arc<Cell<Vec<R>>>, len: usize, chunksize: usize) -> Self {
        MapSink {
            cell,
            len,
            chunksize,
            parts: Mutex::new(MapParts {
                values: (0..len).map(|_| None).collect(),
                remaining: len.div_ceil(chunksize.max(1)),
                failed: false,
                waiting: false,
            }),
            room: Condvar::new(),
            _r: PhantomData,
        }
    }

    /// Waits until fewer than `window` of the first `submitted` chunks are unfinished, or the
    /// map has failed (false then: submitting more is of no use).
    pub(crate) fn wait_for_room(&self, submitted: usize, window: usize) -> bool {
        let total = self.len.div_ceil(self.chunksize.max(1));
        let mut p = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if p.failed {
                return false;
            }
            let finished = total - p.remaining;
            if submitted.saturating_sub(finished) < window {
                return true;
            }
            p.waiting = true;
            p = self.room.wait(p).unwrap_or_else(|p| p.into_inner());
            p.waiting = false;
        }
    }
}

impl<R: DeserializeOwned + Send> Sink for MapSink<R> {
    fn complete(&self, chunk: usize, results: ChunkResult<'_>) {
        let mut error = None;
        let base = chunk * self.chunksize;
        let n = self.chunksize.min(self.len.saturating_sub(base));
        let decoded = decode_chunk::<R>(results, n, Some(base));
        let finished = {
            let mut p = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            for (i, r) in decoded.enumerate() {
                if p.failed || error.is_some() {
                    break;
                }
                match r {
                    Ok(v) => {
                        if let Some(slot) = p.values.get_mut(base + i) {
                            *slot = Some(v);
                        }
                    }
                    Err(e) => error = Some(e),
                }
            }
            p.remaining = p.remaining.saturating_sub(1);
            if p.waiting {
                self.room.notify_all();
            }
            if error.is_some() {
                p.failed = true;
                None
            } else if p.remaining == 0 && !p.failed {
                Some(std::mem::take(&mut p.values))
            } else {
                None
            }
        };
        if let Some(e) = error {
            self.cell.set(Err(e));
        } else if let Some(values) = finished {
            let out: Option<Vec<R>> = values.into_iter().collect();
            self.cell
                .set(out.ok_or_else(|| Error::protocol("a map result is missing")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_that_gave_up_are_not_kept() {
        let cell: Arc<Cell<u8>> = Cell::new(None);
        let stay = Arc::new(Watcher::default());
        assert!(cell.watch(&stay));
        for _ in 0..100 {
            let w = Arc::new(Watcher::default());
            assert!(cell.watch(&w));
            cell.unwatch(&w);
        }
        assert_eq!(cell.lock().watchers.len(), 1);
        cell.set(Ok(7));
        assert_eq!(stay.count(), 1, "the remaining watcher is notified");
        assert!(!cell.watch(&stay), "a done cell takes no watchers");
        assert_eq!(cell.take().unwrap(), 7);
    }
}
