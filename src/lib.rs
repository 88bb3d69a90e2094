//! # mp — Python's `multiprocessing`, in Rust
//!
//! Mark the functions that run in other processes with `#[mp::worker]` and your `main` with
//! `#[mp::main]`. Arguments and results are any `serde` types, checked at compile time; OS
//! handles inside them (pipes, queues, locks) travel as file descriptors.
//!
//! ## Installation
//!
//! The package is `multiproc` (the name `mp` is taken on crates.io); its library is `mp`, so code
//! says `mp::` whichever form the dependency takes:
//!
//! ```toml
//! [dependencies]
//! multiproc = "0.1"
//! # or: multiproc = { path = "../mp" }, multiproc = { git = "<repository URL>" }
//! # or, to have the key read `mp` as well: mp = { package = "multiproc", version = "0.1" }
//! ```
//!
//! `mp = "0.1"` does not work: Cargo looks for a package named `mp`.
//!
//! ## A first program
//!
//! ```no_run
//! #[mp::worker]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[mp::worker]
//! fn fails(reason: String) -> Result<u64, String> {
//!     Err(reason)
//! }
//!
//! #[mp::main]
//! fn main() -> mp::Result<()> {
//!     // A process per call, like `multiprocessing.Process(target=square, args=(7,))`.
//!     let mut p = mp::Process::new(square, (7,));
//!     p.start()?;
//!     assert_eq!(p.join()?, 49); // the worker's return value comes back
//!
//!     // Errors cross the process boundary as data, not as a bare exit code.
//!     let mut p = mp::Process::new(fails, ("no luck".to_string(),));
//!     p.start()?;
//!     assert!(matches!(p.join(), Err(mp::Error::ProcessFailed { exitcode: 1, .. })));
//!
//!     // Three start methods, mixed freely through contexts.
//!     for method in mp::get_all_start_methods() {
//!         let mut p = mp::get_context(method).process(square, (3,));
//!         p.start()?;
//!         assert_eq!(p.join()?, 9);
//!     }
//!
//!     // Pipes carry typed messages; their ends can be passed to children.
//!     let (a, b) = mp::Pipe::<String>::duplex()?;
//!     a.send(&"hello".to_string())?;
//!     assert_eq!(b.recv()?, "hello");
//!
//!     // A pool, like `multiprocessing.Pool`: a worker that crashes fails only its own task.
//!     let pool = mp::Pool::new(4)?;
//!     assert_eq!(pool.map(square, 0..4)?, vec![0, 1, 4, 9]);
//!     Ok(())
//! }
//! ```
//!
//! `square(7)` still calls the function directly: `#[mp::worker]` turns the name into a constant
//! that dereferences to the function and also identifies it to other processes.
//!
//! ## Workers
//!
//! [`#[mp::worker]`](macro@worker) documents the rules: argument and return types (owned `serde`
//! types), how a returned `Result` is handled, how workers are named and what that means for
//! shadowing, where a worker may be defined, and `cargo test`. [`#[mp::main]`](macro@main) says
//! what it joins at the end of `main` and what happens without it.
//!
//! ## When a worker fails
//!
//! A worker that returns `Err(e)` fails its process ([`Error::ProcessFailed`]) or its pool task
//! ([`Error::TaskFailed`], which also says which input item failed): the error's text always
//! arrives, and `e` itself when its type is serde-able ([`Error::downcast`]). A panic is
//! [`Error::WorkerPanicked`], a process that dies is [`Error::ProcessFailed`] with its exit code
//! or signal, a pool worker that dies fails its task with [`Error::WorkerDied`].
//!
//! ## Logging
//!
//! With the `tracing` feature, the runtime reports what it does as `tracing` events: processes
//! starting and exiting, pool workers dying and being replaced, the fork server and the resource
//! tracker starting, failed handshakes (with the peer's address, never the key). Install any
//! subscriber (`examples/logging.rs` uses `tracing-subscriber`). Without the feature there is no
//! logging code at all.
//!
//! ## Coming from Python or rayon
//!
//! [`coming_from_python`] lists what works differently from Python's `multiprocessing` (the
//! README maps every call); [`coming_from_rayon`] says when processes are worth their cost over
//! threads, and how rayon's loops look with a pool.
//!
//! ## How a child starts
//!
//! | [`StartMethod`] | Python | what happens |
//! |---|---|---|
//! | `ForkServer` (default) | `"forkserver"` | a single-threaded server (a fresh copy of the binary) forks children on request |
//! | `Spawn` | `"spawn"` | posix_spawn of the same binary; the child enters the worker before `main` |
//! | `Fork` | `"fork"` | fork(2) of the parent, memory and all |
//!
//! Children die with their parent (`PR_SET_PDEATHSIG`), so a `kill -9` of the parent leaves no
//! orphans.
//!
//! With glibc, an `#[mp::main]` program and its pool workers keep freed memory for reuse: blocks
//! up to 32 MiB come from the heap and up to 64 MiB of free heap is kept (where glibc's own
//! dynamic thresholds top out), so tasks that move megabytes do not fault their buffers in
//! afresh each time. Set `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…` (any `glibc.malloc.`
//! tunable) to keep your own settings; `max_memory_per_child` counts only memory in use. Workers also run from `cargo test` integration tests and doctests: a spawned child
//! enters its worker from a constructor that runs before the test harness's `main`.
//!
//! ## Without the macros
//!
//! `#[mp::main] fn main() -> T { body }` is `fn main() -> T { mp::__private::main(|| body) }`.
//! `#[mp::worker]` registers the function in a static registry (via `inventory`) and defines a
//! [`WorkerFn`] constant; it is generated because it names the function's types twice and
//! builds its decode glue.
//!
//! `#[mp::managed]` on an `impl` block implements [`manager::Managed`] (a table of the exposed
//! methods and a fingerprint of their signatures), registers the type for manager servers, and
//! generates its typed proxy; [`managed`]'s documentation shows the equivalent code.

#[doc = include_str!("../docs/COMING_FROM_PYTHON.md")]
pub mod coming_from_python {}

#[doc = include_str!("../docs/COMING_FROM_RAYON.md")]
pub mod coming_from_rayon {}

pub use mp_macros::{main, managed, worker};
pub use mp_runtime::{
    ActiveChild, Address, Array, ArrayGuard, AsyncResult, Backend, Barrier, BarrierBuilder,
    BoundedSemaphore, Callbacks, Client, Condition, ConditionGuard, Connection, Context,
    CurrentProcess, DEFAULT_MAX_DECODE_DEPTH, Error, Event, ExecutorBuilder, ExecutorMap, Handle,
    IMap, IntoAddress, JoinableQueue, Listener, Lock, LockGuard, MAX_DECODE_DEPTH_CEILING, Manager,
    ManagerBuilder, OneArg, ParentProcess, PathBytes, Pipe, Pool, PoolBuilder, Process,
    ProcessBuilder, ProcessPoolExecutor, Queue, RLock, RLockGuard, RawArray, RawValue,
    RegisteredRun, Result, Run, Semaphore, Sendable, SimpleQueue, StartMethod, TryPutError, Value,
    ValueGuard, Worker, WorkerError, WorkerFn, active_children, connection, cpu_count,
    current_process, default_context, forkserver, futures, get_all_start_methods, get_context,
    get_start_method, manager, max_decode_depth, parent_process, path_bytes, set_authkey,
    set_max_decode_depth, set_start_method, set_start_method_force, shared_memory, task_deadline,
};

/// Pools and executors on the ranks of an MPI job (the `mpi` feature): see
/// [`mp::cluster`](mp_runtime::cluster).
#[cfg(feature = "mpi")]
pub use mp_runtime::cluster;

/// The traits `Pod` and `Zeroable` (bytemuck's, for [`Value`] and [`Array`]) come in through a
/// glob so that the derive macros of the same names are `mp`'s own, which name the traits by
/// `mp`'s path: `#[derive(mp::Pod, mp::Zeroable)]` needs no `bytemuck` dependency. (Bytemuck's
/// derives, which the glob would bring too, name `::bytemuck`.)
mod pod {
    pub use mp_runtime::{Pod, Zeroable};
}
pub use mp_macros::{Pod, Zeroable};
pub use pod::*;

#[doc(hidden)]
pub mod __private {
    pub use mp_runtime::__private::*;
}
