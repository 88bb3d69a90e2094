//! `as_completed` and `wait` over executor futures (Python's `concurrent.futures` functions).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::future::Future;
use crate::error::{Error, Result};
use crate::pool::Watcher;

/// When [`wait`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future is done.
    FirstCompleted,
    /// As soon as any future fails (not counting cancelled ones), or when all are done.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// Waits for `futures` as `return_when` says, at most `timeout`, and splits them into
/// `(done, not_done)`, each in the original order (Python's `concurrent.futures.wait`).
///
/// ```
/// # #[mp::worker] fn square(x: u64) -> u64 { x * x }
/// # #[mp::main] fn main() -> mp::Result<()> {
/// use mp::futures::{ReturnWhen, wait};
/// let ex = mp::ProcessPoolExecutor::new(2)?;
/// let fs = (0..4).map(|i| ex.submit(square, (i,))).collect::<mp::Result<Vec<_>>>()?;
/// let (done, not_done) = wait(fs, None, ReturnWhen::AllCompleted);
/// assert_eq!((done.len(), not_done.len()), (4, 0));
/// # Ok(()) }
/// ```
pub fn wait<R>(
    futures: Vec<Future<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<Future<R>>, Vec<Future<R>>) {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let watcher = Arc::new(Watcher::default());
    for f in &futures {
        f.watch(&watcher);
    }
    loop {
        let seen = watcher.count();
        let outcomes: Vec<Option<bool>> = futures.iter().map(|f| f.outcome()).collect();
        let done = outcomes.iter().filter(|o| o.is_some()).count();
        let failed = futures
            .iter()
            .zip(&outcomes)
            .any(|(f, o)| *o == Some(false) && !f.cancelled());
        let enough = match return_when {
            ReturnWhen::FirstCompleted => done > 0,
            ReturnWhen::FirstException => failed || done == futures.len(),
            ReturnWhen::AllCompleted => done == futures.len(),
        };
        if enough || deadline.is_some_and(|d| Instant::now() >= d) {
            for f in &futures {
                f.unwatch(&watcher);
            }
            return futures.into_iter().partition(|f| f.done());
        }
        watcher.wait_change(seen, deadline);
    }
}

/// Yields the futures as they finish (Python's `as_completed`); those already done first.
///
/// With a timeout, once it passes the iterator yields one [`Error::Timeout`] and ends; the
/// unfinished futures are dropped (their tasks still run).
///
/// ```
/// # #[mp::worker] fn square(x: u64) -> u64 { x * x }
/// # #[mp::main] fn main() -> mp::Result<()> {
/// let ex = mp::ProcessPoolExecutor::new(2)?;
/// let fs = (0..4).map(|i| ex.submit(square, (i,))).collect::<mp::Result<Vec<_>>>()?;
/// let mut total = 0;
/// for f in mp::futures::as_completed(fs, None) {
///     total += f?.result()?;
/// }
/// assert_eq!(total, 14);
/// # Ok(()) }
/// ```
pub fn as_completed<R>(futures: Vec<Future<R>>, timeout: Option<Duration>) -> AsCompleted<R> {
    let watcher = Arc::new(Watcher::default());
    for f in &futures {
        f.watch(&watcher);
    }
    AsCompleted {
        pending: futures,
        watcher,
        deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
        timed_out: false,
    }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<R> {
    pending: Vec<Future<R>>,
    watcher: Arc<Watcher>,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<R> Iterator for AsCompleted<R> {
    type Item = Result<Future<R>>;

    fn next(&mut self) -> Option<Result<Future<R>>> {
        if self.timed_out {
            return None;
        }
        loop {
            let seen = self.watcher.count();
            if let Some(i) = self.pending.iter().position(|f| f.done()) {
                return Some(Ok(self.pending.remove(i)));
            }
            if self.pending.is_empty() {
                return None;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.timed_out = true;
                for f in self.pending.drain(..) {
                    f.unwatch(&self.watcher);
                }
                return Some(Err(Error::Timeout));
            }
            self.watcher.wait_change(seen, self.deadline);
        }
    }
}

impl<R> Drop for AsCompleted<R> {
    fn drop(&mut self) {
        // The futures may outlive the iterator: they no longer need to notify it.
        for f in &self.pending {
            f.unwatch(&self.watcher);
        }
    }
}

impl<R> std::fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<AsCompleted pending={}>", self.pending.len())
    }
}
