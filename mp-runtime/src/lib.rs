//! The runtime of [`multiproc`](https://docs.rs/multiproc) (imported as `mp`): everything that
//! runs. Use it through that facade crate, which adds the `#[mp::main]` and `#[mp::worker]`
//! macros.
//!
//! # Workers
//!
//! A worker is a function marked `#[mp::worker]`. The attribute only generates code that calls
//! into this crate: a constant of type [`WorkerFn`] in place of the function (it dereferences
//! to the function and implements [`Worker`], whose `Args` and `Output` types make
//! [`Process::new`], [`Pool`] and [`ProcessPoolExecutor`] check arguments and results at
//! compile time), and an entry in a static registry under the worker's registered name
//! (`module::name@line:column`). A child process is the same executable: it receives the name
//! and the encoded arguments, finds the entry, runs it and sends back the encoded result.
//!
//! The rules that follow, documented in full on the attribute (`multiproc`'s `worker`):
//!
//! - arguments and the result are owned `serde` types ([`Sendable`]); no borrows (`String`, not
//!   `&str`), no generics, no `async`;
//! - a return type spelled `...Result<T, E>` fails the worker on `Err`: the parent gets
//!   [`Error::ProcessFailed`] or [`Error::TaskFailed`] with `E`'s text, and `E` itself through
//!   [`Error::downcast`] when it is serde-able; a `Result` under another name is a compile error
//!   until `#[mp::worker(fallible)]` or `(fallible = false)` says which is meant;
//! - the worker's name is a constant, so a `let` of the same name beside it does not compile;
//! - a worker may be defined anywhere in the program (a function body, a test, a doctest), and
//!   runs under `cargo test` without `#[mp::main]`.
//!
//! `#[mp::main]` makes `main` join the children that were not joined when it returns; without
//! it, an `atexit` hook installed at the first start does the same when the program exits.
//!
//! # What is where
//!
//! | need | items |
//! |---|---|
//! | processes | [`Process`], [`ProcessBuilder`], [`Context`], [`StartMethod`], [`current_process`], [`active_children`] |
//! | messages | [`Pipe`], [`Connection`], [`Queue`], [`JoinableQueue`], [`SimpleQueue`], [`Listener`], [`Client`], [`Handle`] |
//! | synchronization | [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`] |
//! | shared state | [`Value`], [`Array`], [`RawValue`], [`RawArray`], [`shared_memory`], [`Manager`] |
//! | many tasks | [`Pool`], [`AsyncResult`], [`IMap`], [`ProcessPoolExecutor`], [`futures`] |
//! | failures | [`Error`], [`WorkerError`] |
//!
//! # Logging
//!
//! The `tracing` feature (off by default; enable it on `multiproc`) turns on events for the
//! `tracing` facade: processes starting and exiting, pool workers dying and being replaced, the
//! fork server and resource tracker starting, failed handshakes. Their targets are this crate's
//! modules (`mp_runtime::process`, `mp_runtime::pool::scheduler`, …). Without the feature the
//! crate contains no logging code.
//!
//! # Guides
//!
//! The `multiproc` crate's documentation has "Coming from Python" and "Coming from rayon"
//! pages (its modules `coming_from_python` and `coming_from_rayon`).

#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "mpi")]
pub mod cluster;
mod codec;
pub mod connection;
mod context;
mod error;
mod executor;
#[doc(hidden)]
pub mod fuzz_hooks;
mod global;
mod handle;
mod identity;
mod listener;
mod log;
pub mod manager;
pub mod path_bytes;
mod pool;
mod process;
mod queue;
mod registry;
mod roles;
mod shm;
mod start_method;
mod sync;
mod sys;
mod transport;
mod worker;
mod worker_error;

pub use codec::{
    DEFAULT_MAX_DECODE_DEPTH, MAX_DECODE_DEPTH_CEILING, max_decode_depth, set_max_decode_depth,
};
pub use connection::{Connection, Pipe};
pub use context::{Context, default_context, get_context};
pub use error::{Error, Result, WorkerError};
pub use executor::{ExecutorBuilder, ExecutorMap, ProcessPoolExecutor};
pub use handle::Handle;
pub use identity::{
    CurrentProcess, ParentProcess, cpu_count, current_process, parent_process, set_authkey,
};
pub use listener::{Address, Client, IntoAddress, Listener};
pub use manager::{Manager, ManagerBuilder};
pub use path_bytes::PathBytes;
pub use pool::{AsyncResult, Backend, Callbacks, IMap, Pool, PoolBuilder, task_deadline};
pub use process::{ActiveChild, Process, ProcessBuilder, active_children};
pub use queue::{JoinableQueue, Queue, SimpleQueue, TryPutError};
pub use shm::{Array, ArrayGuard, RawArray, RawValue, Value, ValueGuard};
pub use start_method::{
    StartMethod, get_all_start_methods, get_start_method, set_start_method, set_start_method_force,
};
pub use sync::{
    Barrier, BarrierBuilder, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard,
    RLock, RLockGuard, Semaphore,
};
pub use worker::{OneArg, RegisteredRun, Run, Sendable, Worker, WorkerFn};

/// Named shared memory (Python's `multiprocessing.shared_memory`): [`SharedMemory`],
/// [`ShareableList`] and [`SharedMemoryManager`], with a resource tracker that unlinks what a
/// killed creator leaked.
///
/// [`SharedMemory`]: shared_memory::SharedMemory
/// [`ShareableList`]: shared_memory::ShareableList
/// [`SharedMemoryManager`]: shared_memory::SharedMemoryManager
pub mod shared_memory {
    pub use crate::shm::{ShareableList, SharedMemory, SharedMemoryManager};
}

/// Plain-old-data types for [`Value`] and [`Array`] (re-exported from `bytemuck`).
pub use bytemuck::{Pod, Zeroable};

/// Python's `concurrent.futures`: the executor's [`Future`](futures::Future), [`wait`](futures::wait)
/// and [`as_completed`](futures::as_completed).
pub mod futures {
    pub use crate::executor::{AsCompleted, Future, ReturnWhen, as_completed, wait};
}

/// Fork-server diagnostics.
pub mod forkserver {
    pub use crate::process::forkserver::{server_address, server_pid};
}

/// Not public API: what the macros of `mp` expand to.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use serde;

    pub use crate::codec::{deserialize_fd, serialize_fd};
    pub use crate::registry::WorkerEntry;
    pub use crate::roles::enter_if_requested;
    pub use crate::worker::{
        DeserializeToo, EntryGlue, EntryUnsendable, ErrorAsText, ErrorAsValue, ErrorCodec,
        Fallible, Input, Outcome, Probe, ReturnsOther, ReturnsResult, SendableChecked, SendableFd,
        SendableHalf, SendableNot, SentAsHandle, SerializeAndDeserialize, assert_arg,
        assert_output, assert_plain_return, call_fallible, call_plain,
    };

    /// Wraps the user's `main`: enters child mode if this process is an `mp` child (in case the
    /// constructor did not run), or the role its launcher gave it (an MPI rank other than 0
    /// serves as a node agent and never runs `main`), runs `main`, then joins non-daemon
    /// children and terminates daemon ones, even if `main` panics. The program keeps freed
    /// memory for reuse (`sys::malloc`), as `mp`'s workers do.
    pub fn main<T: std::process::Termination>(body: impl FnOnce() -> T) -> T {
        crate::roles::enter_if_requested();
        crate::sys::malloc::keep_freed_memory();
        struct AtExit(Vec<crate::roles::AtMainEnd>);
        impl Drop for AtExit {
            fn drop(&mut self) {
                crate::process::children::shutdown();
                // Only reached with ends left when `main` panicked.
                for end in self.0.drain(..) {
                    end(101);
                }
            }
        }
        let mut at_exit = AtExit(crate::roles::enter_at_main());
        let out = body();
        if at_exit.0.is_empty() {
            return out;
        }
        // A role needs `main`'s exit code: report it here (as returning would) and exit with it.
        let code = exit_code(out.report());
        let ends = std::mem::take(&mut at_exit.0);
        drop(at_exit);
        for end in ends {
            end(code);
        }
        std::process::exit(code)
    }

    /// The number in an `ExitCode` (which does not expose it): the one code it equals.
    fn exit_code(code: std::process::ExitCode) -> i32 {
        if code == std::process::ExitCode::SUCCESS {
            return 0;
        }
        (1..=255u8)
            .find(|n| std::process::ExitCode::from(*n) == code)
            .map_or(1, i32::from)
    }

    /// Test support: starts a child with a hand-made bootstrap frame (`payload` as the frame
    /// body, written whole or cut after `cut` bytes of the frame) and returns its exit code
    /// and report. Used by the fault tests to feed children corrupt input.
    pub fn run_raw_bootstrap(
        frame_bytes: &[u8],
        close_after: bool,
    ) -> crate::Result<(i32, Option<String>)> {
        crate::process::raw_bootstrap(frame_bytes, close_after)
    }

    /// Test support: the length of `value`'s encoding in a message.
    pub fn encoded_len<T: serde::Serialize>(value: &T) -> crate::Result<usize> {
        crate::codec::encode(value).map(|e| e.bytes.len())
    }

    /// Test support: the pid of this process's resource tracker, if it started one.
    pub fn resource_tracker_pid() -> Option<i32> {
        crate::shm::tracker::tracker_pid()
    }

    /// Test support: connects to this process's fork server and runs the handshake with `key`.
    pub fn forkserver_handshake(key: &[u8]) -> crate::Result<()> {
        crate::process::forkserver::handshake_only(key)
    }

    /// Test support: a well-formed bootstrap frame for `worker` with an already encoded
    /// argument tuple.
    pub fn bootstrap_frame(worker: &str, args: &[u8]) -> crate::Result<Vec<u8>> {
        crate::process::bootstrap_frame(worker, args)
    }

    pub use crate::pool::StartFaults;

    pub use crate::fuzz_hooks as fuzz;

    /// Test support: `builder`'s pool fails to start workers as `faults` says.
    pub fn pool_start_faults(
        builder: crate::PoolBuilder,
        faults: &StartFaults,
    ) -> crate::PoolBuilder {
        builder.start_faults(faults)
    }

    /// Test support: `builder`'s executor fails to start workers as `faults` says.
    pub fn executor_start_faults(
        builder: crate::ExecutorBuilder,
        faults: &StartFaults,
    ) -> crate::ExecutorBuilder {
        builder.start_faults(faults)
    }

    /// Test support: this process's registry differs by `line` from the other ranks' (call it
    /// before `main` starts on the ranks that are to differ).
    #[cfg(feature = "mpi")]
    pub fn cluster_skew_registry(line: &str) {
        crate::cluster::skew_registry(line)
    }

    /// Test support: takes `queue`'s internal lock and never gives it back, so that a test can
    /// kill a process that holds it.
    pub fn hold_queue_lock<T>(queue: &crate::Queue<T>) {
        queue.hold_lock_forever()
    }
}
