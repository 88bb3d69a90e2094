//! [`ProcessPoolExecutor`]: Python's `concurrent.futures.ProcessPoolExecutor`, on the pool's
//! scheduler.
//!
//! Workers start on demand, up to `max_workers`, and idle ones are reused. Unlike Python's, a
//! worker that dies does not break the executor: only the future it was running fails, with
//! [`Error::WorkerDied`], and later submissions run normally.

mod future;
mod wait;

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::future::Future;
pub use self::wait::{AsCompleted, ReturnWhen, as_completed, wait};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pool::scheduler::{self, Core};
use crate::pool::{Callbacks, Cell, OneSink, PoolBuilder, submit_one};
use crate::worker::{OneArg, Worker};

/// A pool of worker processes that runs submitted calls and returns [`Future`]s (Python's
/// `concurrent.futures.ProcessPoolExecutor`).
///
/// ```
/// #[mp::worker]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let ex = mp::ProcessPoolExecutor::new(2)?;
///     let f = ex.submit(square, (12,))?;
///     assert_eq!(f.result()?, 144);
///     let squares: mp::Result<Vec<u64>> = ex.map(square, 0..5u64).collect();
///     assert_eq!(squares?, vec![0, 1, 4, 9, 16]);
///     ex.shutdown(true, false);
///     Ok(())
/// }
/// ```
///
/// Dropping the executor is `shutdown(wait = true)`: queued work still runs, like leaving
/// Python's `with` block.
pub struct ProcessPoolExecutor {
    core: Arc<Core>,
    thread: Mutex<Option<JoinHandle<()>>>,
    max_workers: usize,
}

/// Builds a [`ProcessPoolExecutor`].
#[derive(Debug, Default)]
pub struct ExecutorBuilder {
    inner: PoolBuilder,
    max_workers: Option<usize>,
}

impl ExecutorBuilder {
    /// The most worker processes (default [`cpu_count()`](crate::cpu_count)); zero is
    /// [`Error::InvalidArgument`].
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Runs `worker(args)` in each worker process before its first task. If it fails, the
    /// executor is broken: pending and later futures fail with [`Error::PoolBroken`].
    pub fn initializer<W: Worker>(mut self, worker: W, args: W::Args) -> Self {
        self.inner = self.inner.initializer(worker, args);
        self
    }

    /// Replaces each worker process after this many tasks (zero is
    /// [`Error::InvalidArgument`]).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.inner = self.inner.max_tasks_per_child(n);
        self
    }

    /// Starts the workers with `ctx`'s start method. Every method works with
    /// `max_tasks_per_child`, `Fork` included.
    pub fn context(mut self, ctx: Context) -> Self {
        self.inner = self.inner.context(ctx);
        self
    }

    /// Where the workers run (see [`PoolBuilder::backend`]): on an MPI cluster, the executor
    /// has up to [`processes_per_node`](ExecutorBuilder::processes_per_node) workers on each
    /// node agent, and `max_workers` is not given.
    pub fn backend(mut self, backend: impl Into<crate::pool::Backend>) -> Self {
        self.inner = self.inner.backend(backend);
        self
    }

    /// Worker processes on each node of a cluster backend (see
    /// [`PoolBuilder::processes_per_node`]).
    pub fn processes_per_node(mut self, n: usize) -> Self {
        self.inner = self.inner.processes_per_node(n);
        self
    }

    /// A time limit for every call (see [`PoolBuilder::time_limit`]); a call past it fails
    /// with [`Error::TimeLimitExceeded`](crate::Error::TimeLimitExceeded) and its worker is
    /// killed and replaced. Default: none. Zero is [`Error::InvalidArgument`].
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.inner = self.inner.time_limit(limit);
        self
    }

    /// SIGTERM, then SIGKILL after `grace`, for a call past its time limit (see
    /// [`PoolBuilder::time_limit_grace`]).
    pub fn time_limit_grace(mut self, grace: Duration) -> Self {
        self.inner = self.inner.time_limit_grace(grace);
        self
    }

    /// Restart intensity (see [`PoolBuilder::restart_intensity`]): past `max_restarts`
    /// unexpected worker deaths within `period`, the executor stops replacing workers and its
    /// pending and later futures fail with [`Error::PoolBroken`](crate::Error::PoolBroken).
    pub fn restart_intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.inner = self.inner.restart_intensity(max_restarts, period);
        self
    }

    /// Replaces a worker after a call if its resident memory is above `bytes` (see
    /// [`PoolBuilder::max_memory_per_child`]).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.inner = self.inner.max_memory_per_child(bytes);
        self
    }

    /// A hard memory limit per worker (see [`PoolBuilder::memory_limit_per_child`]): a call
    /// whose allocation goes past it fails with
    /// [`Error::MemoryLimitExceeded`](crate::Error::MemoryLimitExceeded).
    pub fn memory_limit_per_child(mut self, bytes: u64) -> Self {
        self.inner = self.inner.memory_limit_per_child(bytes);
        self
    }

    /// Test support: worker starts fail as `faults` says.
    pub(crate) fn start_faults(mut self, faults: &crate::pool::StartFaults) -> Self {
        self.inner = self.inner.start_faults(faults);
        self
    }

    /// Makes the executor. No process starts until work is submitted.
    pub fn build(self) -> Result<ProcessPoolExecutor> {
        let (core, launcher, _method, mut cfg) = self
            .inner
            .into_parts(self.max_workers, "ProcessPoolWorker")?;
        cfg.lazy = true;
        let n = cfg.processes;
        let thread = scheduler::spawn(core.clone(), launcher, Vec::new(), cfg)?;
        Ok(ProcessPoolExecutor {
            core,
            thread: Mutex::new(Some(thread)),
            max_workers: n,
        })
    }
}

impl ProcessPoolExecutor {
    /// An executor of at most `max_workers` processes (zero is [`Error::InvalidArgument`]).
    pub fn new(max_workers: usize) -> Result<Self> {
        Self::builder().max_workers(max_workers).build()
    }

    /// A builder for the initializer, `max_tasks_per_child` and context.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// The most worker processes.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// The pids of the worker processes running now.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.core.pids()
    }

    /// Schedules `worker(args)`. [`Error::InvalidState`] after [`shutdown`](Self::shutdown)
    /// (Python's `RuntimeError`).
    pub fn submit<W>(&self, worker: W, args: W::Args) -> Result<Future<W::Output>>
    where
        W: Worker,
        W::Output: Send,
    {
        self.submit_with(worker, args, Callbacks::new())
    }

    /// [`submit`](Self::submit) with callbacks run when the future finishes (Python's
    /// `add_done_callback`, split into success and error).
    pub fn submit_with<W>(
        &self,
        worker: W,
        args: W::Args,
        callbacks: Callbacks<W::Output>,
    ) -> Result<Future<W::Output>>
    where
        W: Worker,
        W::Output: Send,
    {
        submit_future(&self.core, worker.name(), &args, callbacks, None)
    }

    /// [`submit`](Self::submit) with a time limit of its own (see
    /// [`ExecutorBuilder::time_limit`]): past it, the worker running the call is killed and
    /// replaced, and the future fails with
    /// [`Error::TimeLimitExceeded`](crate::Error::TimeLimitExceeded). Zero is
    /// [`Error::InvalidArgument`].
    pub fn submit_with_time_limit<W>(
        &self,
        worker: W,
        args: W::Args,
        limit: Duration,
    ) -> Result<Future<W::Output>>
    where
        W: Worker,
        W::Output: Send,
    {
        check_limit(limit)?;
        submit_future(
            &self.core,
            worker.name(),
            &args,
            Callbacks::new(),
            Some(limit),
        )
    }

    /// Calls a one-argument worker on every item; the iterator yields results in input order
    /// (Python's `Executor.map`). Nothing is submitted until the first `next()`; then every
    /// item is submitted, or only `buffersize` ahead of the consumer if set. A failing call
    /// yields its error and iteration goes on.
    pub fn map<W, T, I>(&self, worker: W, items: I) -> ExecutorMap<W::Output, I::IntoIter>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        ExecutorMap {
            core: self.core.clone(),
            worker: worker.name(),
            input: items.into_iter(),
            pending: VecDeque::new(),
            created: Instant::now(),
            timeout: None,
            limit: None,
            buffersize: None,
            started: false,
            ended: false,
            yielded: 0,
            _r: PhantomData,
        }
    }

    /// Stops accepting work (Python's `shutdown`). With `cancel_futures`, queued futures that no
    /// worker started are cancelled. With `wait`, returns once every remaining task finished and
    /// the workers exited; otherwise at once (the workers still exit when done).
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.core.close();
        if cancel_futures {
            self.core.cancel_all();
        }
        if wait && !self.core.on_scheduler_thread() {
            self.core.wait_finished();
            let h = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = h {
                let _ = h.join();
            }
        }
    }

    /// Kills the workers now (Python 3.14's `kill_workers`): running and queued futures fail
    /// with [`Error::PoolBroken`]; later `submit` is [`Error::InvalidState`].
    pub fn kill_workers(&self) {
        self.core.terminate();
        self.core.wait_finished();
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ProcessPoolExecutor max_workers={}>", self.max_workers)
    }
}

fn submit_future<A: Serialize, R: DeserializeOwned + Send + 'static>(
    core: &Arc<Core>,
    name: &'static str,
    args: &A,
    callbacks: Callbacks<R>,
    limit: Option<Duration>,
) -> Result<Future<R>> {
    core.ensure_open()?;
    let cell = Cell::new(Some(callbacks));
    let started = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(OneSink { cell: cell.clone() });
    let id = submit_one(core, name, args, sink, Some(started.clone()), limit)?;
    Ok(Future {
        cell,
        core: core.clone(),
        id,
        started,
        cancelled: AtomicBool::new(false),
    })
}

/// Checks a per-call time limit.
fn check_limit(limit: Duration) -> Result<()> {
    if limit.is_zero() {
        return Err(Error::InvalidArgument {
            message: "a time limit must be more than zero".into(),
        });
    }
    Ok(())
}

/// The iterator of [`ProcessPoolExecutor::map`].
pub struct ExecutorMap<R, I> {
    core: Arc<Core>,
    worker: &'static str,
    input: I,
    pending: VecDeque<Future<R>>,
    created: Instant,
    timeout: Option<Duration>,
    limit: Option<Duration>,
    buffersize: Option<NonZeroUsize>,
    started: bool,
    ended: bool,
    /// Results yielded so far: the input index of the next one.
    yielded: usize,
    _r: PhantomData<fn() -> R>,
}

impl<R, I> ExecutorMap<R, I> {
    /// Gives up `timeout` after the call to `map`: the next result not ready by then is
    /// [`Error::Timeout`], the calls not started are cancelled, and the iterator ends.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Gives each call a time limit of its own (see [`ExecutorBuilder::time_limit`]): a call
    /// past it yields [`Error::TimeLimitExceeded`](crate::Error::TimeLimitExceeded) (naming
    /// its input index) and its worker is replaced; the others go on. Unlike
    /// [`timeout`](ExecutorMap::timeout), which gives up waiting, it stops the call. A zero
    /// limit makes the first `next()` return [`Error::InvalidArgument`].
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Keeps at most `n` calls submitted ahead of the consumer (Python 3.14's `buffersize`).
    pub fn buffersize(mut self, n: NonZeroUsize) -> Self {
        self.buffersize = Some(n);
        self
    }
}

impl<R, I> ExecutorMap<R, I>
where
    R: DeserializeOwned + Send + 'static,
    I: Iterator,
    I::Item: Serialize,
{
    fn fill(&mut self) -> Result<()> {
        let limit = self.buffersize.map_or(usize::MAX, NonZeroUsize::get);
        while self.pending.len() < limit {
            let Some(item) = self.input.next() else {
                break;
            };
            if let Some(l) = self.limit {
                check_limit(l)?;
            }
            let f = submit_future(&self.core, self.worker, &item, Callbacks::new(), self.limit)?;
            self.pending.push_back(f);
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.ended = true;
        for f in self.pending.drain(..) {
            f.cancel();
        }
    }
}

impl<R, I> Iterator for ExecutorMap<R, I>
where
    R: DeserializeOwned + Send + 'static,
    I: Iterator,
    I::Item: Serialize,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.ended {
            return None;
        }
        if !self.started || self.buffersize.is_some() {
            self.started = true;
            if let Err(e) = self.fill() {
                self.stop();
                return Some(Err(e));
            }
        }
        let f = self.pending.pop_front()?;
        let left = self
            .timeout
            .map(|t| (self.created + t).saturating_duration_since(Instant::now()));
        if !f.wait(left) {
            f.cancel();
            self.stop();
            return Some(Err(Error::Timeout));
        }
        let at = self.yielded;
        self.yielded += 1;
        Some(f.result().map_err(|e| e.at_index(at)))
    }
}

impl<R, I> Drop for ExecutorMap<R, I> {
    fn drop(&mut self) {
        for f in self.pending.drain(..) {
            f.cancel();
        }
    }
}

impl<R, I> fmt::Debug for ExecutorMap<R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ExecutorMap pending={}>", self.pending.len())
    }
}
