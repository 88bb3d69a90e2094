//! [`Future`]: the handle on one task submitted to a [`ProcessPoolExecutor`].
//!
//! [`ProcessPoolExecutor`]: crate::ProcessPoolExecutor

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::Result;
use crate::pool::scheduler::Core;
use crate::pool::{Cell, Watcher};

/// The result of [`ProcessPoolExecutor::submit`](crate::ProcessPoolExecutor::submit) (Python's
/// `concurrent.futures.Future`). It is also a [`std::future::Future`].
///
/// ```
/// #[mp::worker]
/// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let ex = mp::ProcessPoolExecutor::new(2)?;
///     let f = ex.submit(pow, (2, 8))?;
///     assert_eq!(f.result()?, 256);
///     assert!(f.done());
///     Ok(())
/// }
/// ```
pub struct Future<R> {
    pub(crate) cell: Arc<Cell<R>>,
    pub(crate) core: Arc<Core>,
    pub(crate) id: u64,
    pub(crate) started: Arc<AtomicBool>,
    pub(crate) cancelled: AtomicBool,
}

impl<R> Future<R> {
    /// Waits for the task and returns its result. The task's error if it failed (as for
    /// [`AsyncResult::get`](crate::AsyncResult::get)), or [`Error::Cancelled`]. The value is
    /// returned once; a later call is [`Error::InvalidState`].
    ///
    /// [`Error::Cancelled`]: crate::Error::Cancelled
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    pub fn result(&self) -> Result<R> {
        self.cell.wait(None);
        self.cell.take()
    }

    /// Waits at most `timeout`; [`Error::Timeout`](crate::Error::Timeout) if the task has not
    /// finished (ask again later).
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        self.cell.wait(Some(timeout));
        self.cell.take()
    }

    /// Whether the task finished (successfully or not) or was cancelled.
    pub fn done(&self) -> bool {
        self.cell.is_done()
    }

    /// Whether a worker has the task and it has not finished.
    pub fn running(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.cell.is_done()
    }

    /// Cancels the task if no worker has started it: true if it is (now) cancelled, false if it
    /// runs or finished.
    pub fn cancel(&self) -> bool {
        if self.cancelled.load(Ordering::Acquire) {
            return true;
        }
        if self.cell.is_done() {
            return false;
        }
        let ok = self.core.cancel(self.id);
        if ok {
            self.cancelled.store(true, Ordering::Release);
        }
        ok
    }

    /// Stops the task even if a worker is running it (pebble's `future.cancel()` on a running
    /// task, Celery's `revoke(terminate=True)`); [`cancel`](Future::cancel) keeps Python's
    /// meaning (only a task not started). A queued task is cancelled; the worker process
    /// running it is killed and replaced; a task of another call that the killed worker had
    /// just started is run again elsewhere. Waits for the outcome: true if the task ended as
    /// [`Error::Cancelled`](crate::Error::Cancelled), false if it finished first (its result
    /// stands).
    ///
    /// ```
    /// # use std::time::Duration;
    /// #[mp::worker]
    /// fn stuck() -> u32 { std::thread::sleep(Duration::from_secs(3600)); 0 }
    ///
    /// # #[mp::main] fn main() -> mp::Result<()> {
    /// let ex = mp::ProcessPoolExecutor::new(1)?;
    /// let f = ex.submit(stuck, ())?;
    /// assert!(f.terminate());
    /// assert!(f.cancelled());
    /// # Ok(()) }
    /// ```
    pub fn terminate(&self) -> bool {
        let stopped = self.cell.terminate(&self.core, &[self.id]);
        if stopped {
            self.cancelled.store(true, Ordering::Release);
        }
        stopped
    }

    /// Whether [`cancel`](Future::cancel) (or `shutdown` with `cancel_futures`) cancelled it.
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire) || self.cell.is_cancelled()
    }

    /// Waits at most `timeout` (forever if `None`); true if done.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.cell.wait(timeout)
    }

    /// `Some(true)` if done successfully, `Some(false)` if failed or cancelled.
    pub(crate) fn outcome(&self) -> Option<bool> {
        self.cell.outcome()
    }

    pub(crate) fn watch(&self, w: &Arc<Watcher>) {
        self.cell.watch(w);
    }

    pub(crate) fn unwatch(&self, w: &Arc<Watcher>) {
        self.cell.unwatch(w);
    }
}

impl<R> std::future::Future for Future<R> {
    type Output = Result<R>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        self.cell.poll_take(cx)
    }
}

impl<R> fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.cell.outcome() {
            None if self.running() => "running",
            None => "pending",
            Some(true) => "finished",
            Some(false) if self.cancelled() => "cancelled",
            Some(false) => "failed",
        };
        write!(f, "<Future state={state}>")
    }
}
