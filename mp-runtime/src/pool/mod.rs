//! [`Pool`]: Python's `multiprocessing.Pool`, with workers whose death fails only their own task.
//!
//! The pool keeps `processes` worker processes. Each runs a loop of the runtime that executes any
//! registered worker by name on arguments the pool sends it, over a socket of its own; one
//! scheduler thread in the parent hands out tasks and collects results (see `scheduler`). How
//! workers are started is behind the `backend` traits, so the same scheduler can drive workers
//! that are not local processes.

mod arrived;
mod async_result;
pub(crate) mod backend;
mod builder;
pub(crate) mod bulk;
pub(crate) mod chunking;
mod intensity;
mod iter;
pub(crate) mod lane;
pub(crate) mod memory;
pub(crate) mod scheduler;
pub(crate) mod watchdog;
pub(crate) mod wire;
pub(crate) mod worker_channel;
pub(crate) mod worker_loop;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::async_result::MapSink;
pub use self::async_result::{AsyncResult, Callbacks};
pub(crate) use self::async_result::{Cell, OneSink, Watcher};
pub use self::backend::{Backend, StartFaults};
pub use self::builder::PoolBuilder;
use self::chunking::{default_chunksize, encode_batch, encode_chunk};
pub use self::iter::IMap;
use self::iter::chunks_ahead;
use self::scheduler::{Core, Sink, Task};
pub use self::watchdog::task_deadline;
use crate::error::{Error, Result};
use crate::start_method::StartMethod;
use crate::worker::{OneArg, Worker};

/// The encoded size of a chunk from which a blocking `map` decodes its results on the calling
/// thread, as `imap` does, instead of on the pool's thread: there, decoding (and touching the
/// pages of) large results would hold up every other worker's answers, while for small ones
/// the hand-off per chunk would cost more than the decoding.
const DECODE_ON_CALLER: usize = 64 * 1024;

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Functions given to it are `#[mp::worker]`s; `map` takes the single argument of a
/// one-argument worker per item, `starmap` a whole argument tuple per item.
///
/// ```
/// #[mp::worker]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[mp::worker]
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let pool = mp::Pool::new(2)?;
///     assert_eq!(pool.map(square, 0..5)?, vec![0, 1, 4, 9, 16]);
///     assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
///     assert_eq!(pool.apply(square, (9,))?, 81);
///     let total: u64 = pool.imap_unordered(square, 0..100)?.map(|r| r.unwrap()).sum();
///     assert_eq!(total, 328350);
///     pool.close();
///     pool.join()
/// }
/// ```
///
/// A worker process that dies while it runs a task (killed, aborted, crashed, `exit` called)
/// fails exactly that task with [`Error::WorkerDied`]; tasks it had been sent but not started
/// go to other workers, a replacement process starts, and every other task completes. A task
/// that panics or returns `Err` fails alone ([`Error::WorkerPanicked`], [`Error::TaskFailed`]).
///
/// A task is one chunk of items (`chunksize`, 1 for `apply` and, by default, `imap`). A chunk
/// travels as one encoded `Vec`, but unlike Python's, one bad item fails only itself: an item
/// whose worker returns `Err` or panics, or whose argument or result cannot be encoded, fails
/// with an error whose [`item_index`](Error::item_index) names it, and every other item of the
/// chunk returns its result. `map` returns the first failing item's error: the first to fail,
/// as in Python, or for chunks of 64 KiB or more (decoded as they come, like `imap`'s) the
/// first in input order; the iterators yield one result per item. (An argument or result that
/// does not *decode* also fails alone, but the items after it in its chunk cannot be read and
/// fail with it, saying so.) A path that is not UTF-8 cannot be encoded by serde: send it as [`PathBytes`](crate::PathBytes).
///
/// Dropping the pool terminates it, like leaving Python's `with Pool() as p:` block.
///
/// Measuring: the workers are children of the fork server (the default start method), not of
/// your program, so `/usr/bin/time` and `getrusage(RUSAGE_CHILDREN)` do not count their CPU;
/// [`cpu_time`](Pool::cpu_time) does.
///
/// Ctrl-C: worker processes ignore SIGINT, as Python's do, so a Ctrl-C in a terminal (which
/// reaches the whole process group) does not fail tasks one by one. The parent's default SIGINT
/// action ends the program at once, and the workers die with it (they have a parent-death
/// signal), so nothing is left running. A program that handles SIGINT itself should call
/// [`terminate`](Pool::terminate) (or drop the pool) from there.
pub struct Pool {
    core: Arc<Core>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    processes: usize,
    method: StartMethod,
    /// The time limit of this handle's calls (`None`: the pool's); see
    /// [`with_time_limit`](Pool::with_time_limit).
    limit: Option<Duration>,
    /// Whether this handle owns the pool (a view from `with_time_limit` does not).
    owner: bool,
}

impl Pool {
    /// A pool of `processes` workers with the default start method. Zero is
    /// [`Error::InvalidArgument`].
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for the other options (initializer, `max_tasks_per_child`, context, bound on
    /// tasks in flight).
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A view of this pool whose calls (`apply`, `map`, `imap`, … all of them) give each item
    /// the time limit `limit` instead of the pool's
    /// ([`PoolBuilder::time_limit`](crate::PoolBuilder::time_limit), which describes what
    /// happens when it passes). Zero is [`Error::InvalidArgument`]. Dropping the view leaves
    /// the pool as it is; `close`, `terminate` and `join` on it act on the pool.
    ///
    /// ```
    /// # #[mp::worker] fn sleep_ms(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// # #[mp::main] fn main() -> mp::Result<()> {
    /// use std::time::Duration;
    /// let pool = mp::Pool::new(2)?;
    /// let quick = pool.with_time_limit(Duration::from_millis(200))?;
    /// let r = quick.map_chunked(sleep_ms, vec![1, 60_000, 2], 1);
    /// let err = r.unwrap_err();
    /// assert!(matches!(err, mp::Error::TimeLimitExceeded { .. }));
    /// assert_eq!(err.item_index(), Some(1));
    /// assert_eq!(pool.apply(sleep_ms, (3,))?, 3, "the pool goes on, its worker replaced");
    /// # Ok(()) }
    /// ```
    pub fn with_time_limit(&self, limit: Duration) -> Result<Pool> {
        if limit.is_zero() {
            return Err(Error::InvalidArgument {
                message: "a time limit must be more than zero".into(),
            });
        }
        Ok(Pool {
            core: self.core.clone(),
            thread: self.thread.clone(),
            processes: self.processes,
            method: self.method,
            limit: Some(limit),
            owner: false,
        })
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The start method of the workers.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// The pids of the worker processes running now (replacements included).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.core.pids()
    }

    /// The CPU time (user plus system) that the worker processes running now have used so far,
    /// summed, read from `/proc/<pid>/stat`.
    ///
    /// `/usr/bin/time`, `getrusage(RUSAGE_CHILDREN)` and `times(2)` in the parent do not count
    /// the workers: under the default `ForkServer` start method they are children of the fork
    /// server, not of your program, and they are reaped there. This call counts them. Workers
    /// that already exited (replaced after `max_tasks_per_child` or a crash, or gone after
    /// [`join`](Pool::join)) are not counted, so read it before `close`/`join`. A pool whose
    /// workers run on other machines (a cluster backend) is [`Error::InvalidState`].
    ///
    /// ```
    /// #[mp::worker]
    /// fn spin(n: u64) -> u64 {
    ///     (0..n).fold(0, |a, i| std::hint::black_box(a ^ i))
    /// }
    ///
    /// #[mp::main]
    /// fn main() -> mp::Result<()> {
    ///     let pool = mp::Pool::new(2)?;
    ///     let before = pool.cpu_time()?;
    ///     pool.map(spin, vec![2_000_000; 4])?;
    ///     println!("the workers used {:?} of CPU", pool.cpu_time()?.saturating_sub(before));
    ///     Ok(())
    /// }
    /// ```
    pub fn cpu_time(&self) -> Result<std::time::Duration> {
        if self.core.is_remote() {
            return Err(Error::state(
                "the pool's workers run on other machines; their CPU time is not readable here",
            ));
        }
        let mut total = std::time::Duration::ZERO;
        for pid in self.core.pids() {
            match crate::sys::cpu_time::of(pid) {
                Ok(t) => total += t,
                // Exited since the list was taken: it no longer counts, as documented.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read /proc/<pid>/stat", e)),
            }
        }
        Ok(total)
    }

    /// Runs `worker(args)` in a worker process and waits for its result (Python's `apply`).
    pub fn apply<W>(&self, worker: W, args: W::Args) -> Result<W::Output>
    where
        W: Worker,
        W::Output: Send,
    {
        self.apply_async(worker, args)?.get()
    }

    /// Submits `worker(args)` and returns at once (Python's `apply_async`).
    pub fn apply_async<W>(&self, worker: W, args: W::Args) -> Result<AsyncResult<W::Output>>
    where
        W: Worker,
        W::Output: Send,
    {
        self.apply_async_with(worker, args, Callbacks::new())
    }

    /// [`apply_async`](Pool::apply_async) with success and error callbacks.
    ///
    /// ```
    /// # #[mp::worker] fn square(x: u64) -> u64 { x * x }
    /// # #[mp::main] fn main() -> mp::Result<()> {
    /// let pool = mp::Pool::new(1)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let r = pool.apply_async_with(square, (4,), mp::Callbacks::new().on_success(move |v| {
    ///     tx.send(*v).unwrap();
    /// }))?;
    /// assert_eq!(r.get()?, 16);
    /// assert_eq!(rx.recv().unwrap(), 16);
    /// # Ok(()) }
    /// ```
    pub fn apply_async_with<W>(
        &self,
        worker: W,
        args: W::Args,
        callbacks: Callbacks<W::Output>,
    ) -> Result<AsyncResult<W::Output>>
    where
        W: Worker,
        W::Output: Send,
    {
        let cell = Cell::new(Some(callbacks));
        let sink = Arc::new(OneSink { cell: cell.clone() });
        let id = submit_one(&self.core, worker.name(), &args, sink, None, self.limit)?;
        Ok(AsyncResult::of_tasks(cell, &self.core, vec![id]))
    }

    /// Applies a one-argument worker to every item and returns the results in order (Python's
    /// `map`), with Python's default chunk size (`len / (4 × processes)`, rounded up). The
    /// input is collected first, then encoded as workers take it: once 32 MiB of encoded
    /// chunks are unfinished, the next waits for one to finish, so that a large input's
    /// encoding is never held all at once. The first failing item's error fails the whole call.
    pub fn map<W, T, I>(&self, worker: W, items: I) -> Result<Vec<W::Output>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.map_blocking(worker.name(), items, None)
    }

    /// [`map`](Pool::map) with `chunksize` items per task. Zero is [`Error::InvalidArgument`].
    pub fn map_chunked<W, T, I>(
        &self,
        worker: W,
        items: I,
        chunksize: usize,
    ) -> Result<Vec<W::Output>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.map_blocking(worker.name(), items, Some(chunksize))
    }

    /// [`map`](Pool::map) without waiting (Python's `map_async`).
    pub fn map_async<W, T, I>(&self, worker: W, items: I) -> Result<AsyncResult<Vec<W::Output>>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.map_async_with(worker, items, None, Callbacks::new())
    }

    /// [`map_async`](Pool::map_async) with a chunk size (`None`: Python's default) and
    /// callbacks, which receive the whole result vector or the first error.
    pub fn map_async_with<W, T, I>(
        &self,
        worker: W,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<W::Output>>,
    ) -> Result<AsyncResult<Vec<W::Output>>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.map_items(worker.name(), items, chunksize, callbacks)
    }

    /// Calls a worker with each argument tuple and returns the results in order (Python's
    /// `starmap`), with the default chunk size.
    pub fn starmap<W, I>(&self, worker: W, items: I) -> Result<Vec<W::Output>>
    where
        W: Worker,
        W::Output: Send,
        I: IntoIterator<Item = W::Args>,
    {
        self.map_blocking(worker.name(), items, None)
    }

    /// [`starmap`](Pool::starmap) without waiting (Python's `starmap_async`).
    pub fn starmap_async<W, I>(&self, worker: W, items: I) -> Result<AsyncResult<Vec<W::Output>>>
    where
        W: Worker,
        W::Output: Send,
        I: IntoIterator<Item = W::Args>,
    {
        self.starmap_async_with(worker, items, None, Callbacks::new())
    }

    /// [`starmap_async`](Pool::starmap_async) with a chunk size and callbacks.
    pub fn starmap_async_with<W, I>(
        &self,
        worker: W,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<W::Output>>,
    ) -> Result<AsyncResult<Vec<W::Output>>>
    where
        W: Worker,
        W::Output: Send,
        I: IntoIterator<Item = W::Args>,
    {
        self.map_items(worker.name(), items, chunksize, callbacks)
    }

    /// The blocking `map` and `starmap`. Chunks of [`DECODE_ON_CALLER`] bytes or more (judged
    /// by the first item) go through an ordered [`IMap`], which decodes on this thread; smaller
    /// ones through [`submit_map`](Pool::submit_map), which decodes on the pool's. Either keeps
    /// to [`chunks_ahead`] unfinished chunks ahead of the results.
    fn map_blocking<R, T, I>(
        &self,
        name: &'static str,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        R: DeserializeOwned + Send + 'static,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        let (items, chunksize) = self.map_input(items, chunksize)?;
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        // An item that cannot be encoded fails in either path, alone.
        let first_len = crate::codec::encode(first).map_or(0, |e| e.bytes.len());
        if first_len.saturating_mul(chunksize) >= DECODE_ON_CALLER
            && !self.core.on_scheduler_thread()
        {
            let mut out = Vec::with_capacity(items.len());
            for result in self.iter(name, items.into_iter(), chunksize, true)? {
                out.push(result?);
            }
            return Ok(out);
        }
        self.submit_map(name, items, chunksize, Callbacks::new(), true)?
            .get()
    }

    /// Checks a `map`'s chunk size and that the pool is open, and collects its input: the items,
    /// and the chunk size to use (Python's default for `None`).
    fn map_input<T, I>(&self, items: I, chunksize: Option<usize>) -> Result<(Vec<T>, usize)>
    where
        I: IntoIterator<Item = T>,
    {
        if chunksize == Some(0) {
            return Err(Error::InvalidArgument {
                message: "chunksize must be at least 1".into(),
            });
        }
        self.core.ensure_open()?;
        let items: Vec<T> = items.into_iter().collect();
        let chunksize = chunksize.unwrap_or_else(|| default_chunksize(items.len(), self.processes));
        Ok((items, chunksize))
    }

    /// `map_async` and `starmap_async`: every chunk is submitted before this returns.
    fn map_items<R, T, I>(
        &self,
        name: &'static str,
        items: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        R: DeserializeOwned + Send + 'static,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        let (items, chunksize) = self.map_input(items, chunksize)?;
        self.submit_map(name, items, chunksize, callbacks, false)
    }

    /// Submits the chunks of a `map` (`items` from [`map_input`](Pool::map_input)). When
    /// `bounded`, for a caller that then waits for the results, it stops encoding once
    /// [`chunks_ahead`] chunks are unfinished, and goes on as they finish: a large input's
    /// encoding is never held all at once, and its buffers are reused.
    fn submit_map<R, T>(
        &self,
        name: &'static str,
        items: Vec<T>,
        chunksize: usize,
        callbacks: Callbacks<Vec<R>>,
        bounded: bool,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        R: DeserializeOwned + Send + 'static,
        T: Serialize,
    {
        let len = items.len();
        let cell = Cell::new(Some(callbacks));
        if len == 0 {
            cell.set(Ok(Vec::new()));
            return Ok(AsyncResult::of_tasks(cell, &self.core, Vec::new()));
        }
        let sink = Arc::new(MapSink::new(cell.clone(), len, chunksize));
        // Each chunk is encoded as one `Vec` and submitted at once, so workers start while the
        // rest is being encoded. An item that cannot be encoded fails alone (the call returns
        // the first error, as for any failing item).
        let mut ids = Vec::with_capacity(len.div_ceil(chunksize));
        let bounded = bounded && !self.core.on_scheduler_thread();
        let mut encoded = 0usize;
        for (index, part) in items.chunks(chunksize).enumerate() {
            if bounded && index > 0 {
                let window = chunks_ahead(encoded, index, self.processes);
                if !sink.wait_for_room(index, window) {
                    // Failed already: the call returns that error.
                    break;
                }
            }
            let (id, bytes) = submit_part(
                &self.core,
                name,
                index,
                part,
                sink.clone(),
                false,
                self.limit,
            )?;
            ids.extend(id);
            encoded += bytes;
        }
        Ok(AsyncResult::of_tasks(cell, &self.core, ids))
    }

    /// A lazy iterator of results in input order, one item per task (Python's `imap`).
    ///
    /// ```
    /// # #[mp::worker] fn square(x: u64) -> u64 { x * x }
    /// # #[mp::main] fn main() -> mp::Result<()> {
    /// let pool = mp::Pool::new(2)?;
    /// let it = pool.imap(square, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9])?;
    /// assert_eq!(it.len(), 10);
    /// let v: mp::Result<Vec<u64>> = it.collect();
    /// assert_eq!(v?, (0..10).map(|x| x * x).collect::<Vec<_>>());
    /// # Ok(()) }
    /// ```
    pub fn imap<W, T, I>(&self, worker: W, items: I) -> Result<IMap<W::Output, I::IntoIter>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.imap_chunked(worker, items, 1)
    }

    /// [`imap`](Pool::imap) with `chunksize` items per task.
    pub fn imap_chunked<W, T, I>(
        &self,
        worker: W,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<W::Output, I::IntoIter>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.iter(worker.name(), items.into_iter(), chunksize, true)
    }

    /// Like [`imap`](Pool::imap), but results come in the order they finish (Python's
    /// `imap_unordered`).
    pub fn imap_unordered<W, T, I>(
        &self,
        worker: W,
        items: I,
    ) -> Result<IMap<W::Output, I::IntoIter>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.imap_unordered_chunked(worker, items, 1)
    }

    /// [`imap_unordered`](Pool::imap_unordered) with `chunksize` items per task.
    pub fn imap_unordered_chunked<W, T, I>(
        &self,
        worker: W,
        items: I,
        chunksize: usize,
    ) -> Result<IMap<W::Output, I::IntoIter>>
    where
        W: Worker + OneArg<W::Args, Arg = T>,
        W::Output: Send,
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        self.iter(worker.name(), items.into_iter(), chunksize, false)
    }

    fn iter<R, I>(
        &self,
        name: &'static str,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<R, I>>
    where
        R: DeserializeOwned + Send + 'static,
        I: Iterator,
        I::Item: Serialize,
    {
        if chunksize == 0 {
            return Err(Error::InvalidArgument {
                message: "chunksize must be at least 1".into(),
            });
        }
        self.core.ensure_open()?;
        Ok(IMap::new(
            self.core.clone(),
            name,
            items,
            chunksize,
            self.processes,
            ordered,
            self.limit,
        ))
    }

    /// Accepts no more tasks; the workers exit once everything submitted is done (Python's
    /// `close`). Iterators from `imap` made before still take their input.
    pub fn close(&self) {
        self.core.close();
    }

    /// Stops the workers at once (SIGKILL) and fails every unfinished task with
    /// [`Error::PoolBroken`] (Python's `terminate`). Returns once the workers are reaped.
    pub fn terminate(&self) {
        self.core.terminate();
        self.core.wait_finished();
        self.join_thread();
    }

    /// Waits for the workers to exit, after [`close`](Pool::close) or
    /// [`terminate`](Pool::terminate) ([`Error::InvalidState`] before either, as Python's
    /// `ValueError`). After `close`, it waits for every submitted task, and for `imap`
    /// iterators made before `close` to be consumed or dropped (they may still submit).
    pub fn join(&self) -> Result<()> {
        if !self.core.is_closed() {
            return Err(Error::state(
                "join() needs close() or terminate() first: the pool is still accepting tasks",
            ));
        }
        self.core.wait_finished();
        self.join_thread();
        Ok(())
    }

    fn join_thread(&self) {
        if self.core.on_scheduler_thread() {
            // Called from a result callback: the thread ends on its own once it returns.
            return;
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Encodes the items of chunk `index` and submits them: one item as a plain task (cheapest for
/// `chunksize` 1), more as a batch. An item that cannot be encoded fails alone, with its
/// position: the others are encoded one by one and travel as a task of their own items, whose
/// results are put back in place around the failures (see [`Patched`]). Returns the id of the
/// task submitted, if one was (not when every item failed to encode), and its encoded size.
pub(crate) fn submit_part<T: Serialize>(
    core: &Core,
    name: &'static str,
    index: usize,
    part: &[T],
    sink: Arc<dyn Sink>,
    feeder: bool,
    limit: Option<Duration>,
) -> Result<(Option<u64>, usize)> {
    let whole = if part.len() == 1 {
        encode_chunk(&mut part.iter(), 1).1
    } else {
        encode_batch(part)
    };
    let type_name = std::any::type_name::<T>();
    let failed = match whole {
        Ok(chunk) => {
            core.ensure_portable(&chunk, type_name)?;
            let bytes = chunk.items.len();
            let id = core.submit(
                Task::new(name, index, chunk, sink).with_limit(limit),
                feeder,
            )?;
            return Ok((Some(id), bytes));
        }
        Err(_) => {
            // Rare: find the items that do not encode, and send the others alone.
            let mut good_items = Vec::new();
            let mut good = scheduler::Chunk {
                items: Default::default(),
                fds: Vec::new(),
                nitems: 0,
                batch: false,
            };
            let mut failed = Vec::new();
            for (at, item) in part.iter().enumerate() {
                match encode_chunk(&mut std::iter::once(item), 1).1 {
                    Ok(one) => {
                        good_items.extend_from_slice(&one.items);
                        good.fds.extend(one.fds);
                        good.nitems += 1;
                    }
                    Err(e) => failed.push((at, e.at_position(0))),
                }
            }
            good.items = good_items.into();
            if good.nitems > 0 {
                core.ensure_portable(&good, type_name)?;
                let bytes = good.items.len();
                let patched: Arc<dyn Sink> = Arc::new(Patched {
                    sink,
                    failed: Mutex::new(failed),
                    len: part.len(),
                });
                let id = core.submit(
                    Task::new(name, index, good, patched).with_limit(limit),
                    feeder,
                )?;
                return Ok((Some(id), bytes));
            }
            failed
        }
    };
    let results = failed.into_iter().map(|(_, e)| Err(e)).collect();
    sink.complete(index, scheduler::ChunkResult::Items(results));
    Ok((None, 0))
}

/// The sink of a chunk some of whose items could not be encoded: the results of the items that
/// travelled, with the encoding errors put back at their positions.
struct Patched {
    sink: Arc<dyn Sink>,
    failed: Mutex<Vec<(usize, Error)>>,
    len: usize,
}

impl Sink for Patched {
    fn complete(&self, chunk: usize, results: scheduler::ChunkResult<'_>) {
        let mut failed =
            std::mem::take(&mut *self.failed.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .peekable();
        let mut travelled = match results {
            scheduler::ChunkResult::Items(v) => v.into_iter(),
            scheduler::ChunkResult::Batch(r) => vec![r].into_iter(),
            scheduler::ChunkResult::Hole { .. } => Vec::new().into_iter(),
        };
        let mut out = Vec::with_capacity(self.len);
        for at in 0..self.len {
            match failed.next_if(|(p, _)| *p == at) {
                Some((_, e)) => out.push(Err(e)),
                None => out.push(
                    travelled
                        .next()
                        .unwrap_or_else(|| Err(Error::protocol("a chunk's result is missing"))),
                ),
            }
        }
        self.sink
            .complete(chunk, scheduler::ChunkResult::Items(out));
    }
}

/// Encodes one argument tuple and submits it as a one-item task; returns the task id.
pub(crate) fn submit_one<A: Serialize>(
    core: &Core,
    name: &'static str,
    args: &A,
    sink: Arc<dyn Sink>,
    started: Option<Arc<std::sync::atomic::AtomicBool>>,
    limit: Option<Duration>,
) -> Result<u64> {
    let (_, chunk) = encode_chunk(&mut std::iter::once(args), 1);
    let chunk = chunk?;
    core.ensure_portable(&chunk, std::any::type_name::<A>())?;
    let mut task = Task::new(name, 0, chunk, sink).with_limit(limit);
    task.started = started;
    core.submit(task, false)
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.owner {
            self.terminate();
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Pool processes={} start_method={} state={}>",
            self.processes,
            self.method,
            if self.core.is_closed() {
                "closed"
            } else {
                "running"
            }
        )
    }
}
