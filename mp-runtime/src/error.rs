//! The one error type of `mp`.

use std::io;

use serde::de::DeserializeOwned;

pub use crate::worker_error::WorkerError;

/// Everything that can go wrong in `mp`.
///
/// Each variant's doc says which calls return it and what the caller can do. Display strings are
/// lowercase sentences without a trailing period; the facts are in the fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed. `context` names the operation (`"fork"`, `"connect"`,
    /// …); the original [`io::Error`] is kept as the source.
    #[error("{context}: {source}")]
    Io {
        /// What `mp` was doing.
        context: &'static str,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },

    /// A value could not be serialized for another process, or bytes from another process could
    /// not be decoded into the expected type. Returned by `start`, `send`, `recv`, `put`, `get`
    /// and by `join` when a worker's result does not decode. The connection stays usable.
    ///
    /// In a pool, an item whose argument or result cannot be encoded or decoded fails alone,
    /// and `index` names it (as [`Error::item_index`] does); `None` elsewhere.
    #[error("{}", codec_text(message, *index))]
    Codec {
        /// What failed, with the type or field where known.
        message: String,
        /// The position, in the input of a pool's `map`/`imap`/… call, of the item concerned.
        index: Option<usize>,
    },

    /// The peer closed its end, or died: end of stream. Returned by receives on a connection whose
    /// every writer is gone, by sends whose reader is gone, and by `put`/`get` on a queue after
    /// `close()` in this process.
    #[error("the other end of the connection is closed")]
    Closed,

    /// A blocking call's timeout passed before it could complete. Nothing was consumed.
    #[error("the operation timed out")]
    Timeout,

    /// A frame from a peer broke the wire protocol (truncated, corrupt, wrong handle count).
    /// Only that connection is affected; drop it.
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong with the bytes received.
        message: String,
    },

    /// A peer announced a message longer than the connection's maximum; nothing was allocated.
    /// Raise the limit with `set_max_message_len` if such messages are expected.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },

    /// `recv_bytes_into` got a message longer than the buffer. The whole message is here, so
    /// nothing is lost.
    #[error("buffer of {capacity} bytes is too short for a message of {} bytes", message.len())]
    BufferTooShort {
        /// The size of the caller's buffer.
        capacity: usize,
        /// The complete message that did not fit.
        message: Vec<u8>,
    },

    /// A bootstrap message named a worker this binary does not contain: the child runs a
    /// different build than the parent.
    #[error("no worker named `{name}` is registered in this binary{hint}")]
    UnknownWorker {
        /// The registered name that was asked for.
        name: String,
        /// Extra explanation (may be empty).
        hint: String,
    },

    /// The worker panicked. `message` is the panic payload, `location` is `file:line:column`.
    /// In a pool only that item fails; `index` names it within the input of a `map`/`imap`/…
    /// call (`None` for a single call and for a process).
    #[error("{}", panicked_text(message, location, *index))]
    WorkerPanicked {
        /// The panic message.
        message: String,
        /// Where the panic happened.
        location: String,
        /// The position, in the input of a pool's `map`/`imap`/… call, of the item that
        /// panicked.
        index: Option<usize>,
    },

    /// The child process did not return a value: its worker returned `Err` (then `error` holds
    /// it: get it back with [`Error::downcast`]), or the process could not run its worker, or it
    /// exited or was killed before reporting. `exitcode` follows Python: `N` for `exit(N)`, `-N`
    /// for signal `N`, 255 when the fork server died and the status is unknown.
    #[error("{}", process_failed_text(message, error.is_some()))]
    #[non_exhaustive]
    ProcessFailed {
        /// Python-style exit code.
        exitcode: i32,
        /// The worker's error text (its `Display`), or what happened to the process.
        message: String,
        /// The worker's `Err` value, when the worker returned one.
        error: Option<WorkerError>,
    },

    /// A worker process of a pool died while it held a task (signal or abrupt exit).
    /// `signal` is 0 when the worker exited without a signal; `exitcode` is Python's
    /// `Process.exitcode`: the status it exited with, or minus the signal. Within a chunk, the
    /// item that was running fails with it (`index`); the items it finished keep their results
    /// only under a time limit (see [`PoolBuilder::time_limit`](crate::PoolBuilder::time_limit)).
    #[error("{}", died_text(*pid, *signal, *exitcode))]
    WorkerDied {
        /// The dead worker's process id.
        pid: i32,
        /// The signal that killed it, 0 if none.
        signal: i32,
        /// The exit status, or `-signal` when a signal killed it.
        exitcode: i32,
        /// The position, in the input of a pool's `map`/`imap`/… call, of the item concerned,
        /// when known.
        index: Option<usize>,
    },

    /// A pool or executor task ran past its time limit
    /// ([`PoolBuilder::time_limit`](crate::PoolBuilder::time_limit), or a call's own): its
    /// worker process was killed and replaced. Only that item fails: the items of its chunk
    /// that had finished keep their results, and those not started run in another worker.
    /// Time spent queued does not count.
    #[error("{}", time_limit_text(*pid, *limit, *elapsed, *index))]
    TimeLimitExceeded {
        /// The limit that applied.
        limit: std::time::Duration,
        /// How long the item had run when its worker was told to stop.
        elapsed: std::time::Duration,
        /// The worker process that was killed.
        pid: i32,
        /// The position, in the input of a pool's `map`/`imap`/… call, of the item.
        index: Option<usize>,
    },

    /// A pool worker with a hard memory limit
    /// ([`PoolBuilder::memory_limit_per_child`](crate::PoolBuilder::memory_limit_per_child))
    /// aborted while it ran this item: an allocation past the limit failed, and Rust aborts the
    /// process on a failed allocation. The worker was replaced; only this item failed. (A task
    /// that calls `abort()` itself under a memory limit is reported the same way.)
    #[error("{}", memory_limit_text(*pid, *limit, *index))]
    MemoryLimitExceeded {
        /// The limit in bytes.
        limit: u64,
        /// The worker process that aborted.
        pid: i32,
        /// The position, in the input of a pool's `map`/`imap`/… call, of the item.
        index: Option<usize>,
    },

    /// [`JoinableQueue::join`](crate::JoinableQueue::join): every item is done, but `count`
    /// of them were taken by consumer processes that died before their `task_done`. They count
    /// as done from now on (the next `join` returns `Ok`); put them again if they must be
    /// processed.
    #[error(
        "{count} item(s) of the JoinableQueue were taken by consumer processes that died before \
         calling task_done(); they are counted as done now (put them again if they must be \
         processed)"
    )]
    ItemsLost {
        /// How many items were lost.
        count: u32,
    },

    /// A pool task's worker returned `Err` (or the task could not run in the worker: its
    /// arguments did not decode, its result could not be sent). Only that task fails; the pool
    /// keeps serving. `message` is the error's text; `error` the value itself, for
    /// [`Error::downcast`]; `index` says which input item failed.
    #[error("{}", task_failed_text(message, *index))]
    #[non_exhaustive]
    TaskFailed {
        /// The `Display` text of the worker's error, or why the task could not run.
        message: String,
        /// The position, in the input, of the item whose worker returned `Err`: for `map`,
        /// `starmap`, `imap`, `imap_unordered` (and their variants) and the executor's `map`.
        /// `None` for a single call (`apply`, `submit`). The other items of its chunk are not
        /// affected (unlike Python, where the chunk fails as a whole).
        index: Option<usize>,
        /// The worker's `Err` value, when the worker returned one.
        error: Option<WorkerError>,
    },

    /// The task was cancelled: before it ran (an executor future's `cancel()`, or `shutdown`
    /// with `cancel_futures`), or while it ran, by `terminate()` on its
    /// [`Future`](crate::futures::Future::terminate) or
    /// [`AsyncResult`](crate::AsyncResult::terminate), which killed its worker.
    #[error("the task was cancelled")]
    Cancelled,

    /// A pool or executor cannot run the task: it was terminated with the task unfinished, its
    /// initializer failed, or no worker process could be started. `message` says which; create
    /// a new pool to go on.
    #[error("the pool cannot run this task: {message}")]
    PoolBroken {
        /// Why.
        message: String,
    },

    /// The authentication handshake failed: the peer used another authkey, or is not an `mp`
    /// peer. Returned on both sides; a `Listener` keeps accepting afterwards.
    #[error("authentication failed: {message}")]
    Authentication {
        /// What went wrong in the handshake.
        message: String,
    },

    /// A bounded queue is full (`try_put`, `put_timeout`).
    #[error("the queue is full")]
    Full,

    /// A queue is empty (`try_get`, `get_timeout`).
    #[error("the queue is empty")]
    Empty,

    /// The queue was shut down (`shutdown`): no more `put`, and `get` once it is empty.
    #[error("the queue was shut down")]
    ShutDown,

    /// A barrier was aborted, reset or timed out while this party waited.
    #[error("the barrier is broken")]
    BrokenBarrier,

    /// The holder of a lock (`Lock`, `RLock`, the lock of a `Value`, `Array` or `Condition`)
    /// died while holding it. The lock is free again and the next acquire succeeds, but the
    /// data it protected may be half-updated: take the lock again and check or repair it.
    /// Returned by the lock's `acquire` family (and by `Condition` waits, whose guard then holds
    /// the lock).
    #[error(
        "the previous holder of the lock died while holding it; the data it protects may be \
         inconsistent (the lock is free again: acquire it and repair the data)"
    )]
    OwnerDied,

    /// The manager's server process is gone (it exited, was killed, or never listened at this
    /// address). Every call on its proxies fails at once with this error from then on; there
    /// are no reconnection attempts. Start a new manager.
    #[error("the manager at {address} is gone; its objects are lost")]
    ManagerGone {
        /// Where the manager was.
        address: String,
    },

    /// The manager was shut down (`Manager::shutdown`, or the drop of the handle that started
    /// it) while the call waited, or before it. Keep the `Manager` that started the server
    /// alive for as long as its proxies are used.
    #[error(
        "the manager was shut down (by `Manager::shutdown`, or because the `Manager` handle \
         that started it was dropped); its objects are gone"
    )]
    ManagerShutdown,

    /// A managed method panicked in the manager's server. The server keeps serving; an object
    /// whose `&mut self` method panicked is poisoned ([`Error::Poisoned`] from then on).
    #[error("managed method `{method}` panicked at {location}: {message}")]
    RemotePanic {
        /// The method that panicked (`Type::method`).
        method: String,
        /// The panic message.
        message: String,
        /// Where it panicked.
        location: String,
    },

    /// An earlier call panicked while it had the managed object exclusively (a `&mut self`
    /// method): the object may be half-updated, so the manager refuses further calls on it, as
    /// `std::sync::Mutex` does after a panic.
    #[error("the managed object is poisoned: an earlier method panicked while changing it")]
    Poisoned,

    /// The managed object no longer exists, or a proxy sent to this process was not claimed in
    /// time (it expired) or was claimed already.
    #[error("the managed object does not exist (any more)")]
    NoSuchObject,

    /// Client and manager disagree about a managed type: it is not registered in the server's
    /// program, its definition differs (fingerprints), or a proxy received or looked up is of
    /// another type than expected. Build both sides from the same source.
    #[error("incompatible managed type `{type_name}`: {message}")]
    Incompatible {
        /// The type concerned.
        type_name: String,
        /// What differs.
        message: String,
    },

    /// A manager refused a request that would take its process past a bound it keeps for
    /// everyone's sake: the objects or descriptors one client process may hold, or the
    /// descriptors the server keeps in reserve for new connections. `message` names the bound
    /// and the builder option that raises it. Nothing was created; drop objects and retry.
    #[error("the manager refused: {message}")]
    LimitExceeded {
        /// Which bound, its value, and how to raise it.
        message: String,
    },

    /// The manager serves the most connections it allows; retry later or raise the bound.
    #[error("the manager refuses more connections (its connection limit is reached)")]
    Busy,

    /// The call is not valid in the object's current state (joining a process never started,
    /// closing a live process, setting the start method twice, …). `message` says what to do.
    #[error("{message}")]
    InvalidState {
        /// What was wrong and how to fix it.
        message: String,
    },

    /// An argument was out of range (zero processes, a negative size, …).
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// Which argument and why.
        message: String,
    },

    /// A cluster pool (`mp::cluster`, `mpi` feature) has no node agents to run on: the program
    /// was not started by `mpiexec`/`srun`, was started with one rank, or its `main` is not
    /// marked `#[mp::main]`. `hint` says which and how to launch it.
    #[error("no cluster peers to run workers on: {hint}")]
    NoClusterPeers {
        /// What was found and what to do.
        hint: String,
    },

    /// A node agent of a cluster pool runs a program whose registered workers differ from
    /// this one's (another build, or another binary given to `mpiexec`). Returned by `build`,
    /// before any task runs; launch the same build on every rank.
    #[error("rank {rank} runs a different build of the program: {message}")]
    ClusterMismatch {
        /// The MPI rank of the agent that differs.
        rank: usize,
        /// What differs (workers missing, extra, or with other types).
        message: String,
    },

    /// A task (or initializer) for a cluster pool carries OS handles (connections, queues,
    /// locks, shared memory, `Handle`), which mean nothing on another machine. Returned at
    /// submit; nothing was sent. Pass plain data to cluster workers.
    #[error(
        "`{type_name}` carries OS handles (connections, queues, locks, shared memory), which \
         cannot cross to another node; pass plain data to workers of a cluster pool"
    )]
    NotPortable {
        /// The type of the arguments that carried them.
        type_name: String,
    },
}

/// `Result<T, mp::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] from the last OS error, or from a given one.
    pub(crate) fn io(context: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context,
            source: source.into(),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn state(message: impl Into<String>) -> Self {
        Error::InvalidState {
            message: message.into(),
        }
    }

    pub(crate) fn codec(message: impl std::fmt::Display) -> Self {
        Error::Codec {
            message: message.to_string(),
            index: None,
        }
    }

    /// A copy of this error, for each task of a chunk that failed as a whole (errors hold an
    /// `io::Error`, which is not `Clone`).
    pub(crate) fn replicate(&self) -> Error {
        match self {
            Error::TaskFailed {
                message,
                index,
                error,
            } => Error::TaskFailed {
                message: message.clone(),
                index: *index,
                error: error.clone(),
            },
            Error::WorkerPanicked {
                message,
                location,
                index,
            } => Error::WorkerPanicked {
                message: message.clone(),
                location: location.clone(),
                index: *index,
            },
            Error::WorkerDied {
                pid,
                signal,
                exitcode,
                index,
            } => Error::WorkerDied {
                pid: *pid,
                signal: *signal,
                exitcode: *exitcode,
                index: *index,
            },
            Error::TimeLimitExceeded {
                limit,
                elapsed,
                pid,
                index,
            } => Error::TimeLimitExceeded {
                limit: *limit,
                elapsed: *elapsed,
                pid: *pid,
                index: *index,
            },
            Error::MemoryLimitExceeded { limit, pid, index } => Error::MemoryLimitExceeded {
                limit: *limit,
                pid: *pid,
                index: *index,
            },
            Error::Codec { message, index } => Error::Codec {
                message: message.clone(),
                index: *index,
            },
            Error::PoolBroken { message } => Error::PoolBroken {
                message: message.clone(),
            },
            Error::Protocol { message } => Error::Protocol {
                message: message.clone(),
            },
            Error::Cancelled => Error::Cancelled,
            Error::Timeout => Error::Timeout,
            other => Error::state(other.to_string()),
        }
    }

    /// Builds an `Io` error from a nix errno, mapping broken connections to [`Error::Closed`].
    pub(crate) fn sys(context: &'static str, errno: nix::errno::Errno) -> Self {
        use nix::errno::Errno;
        match errno {
            Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN => Error::Closed,
            e => Error::io(context, io::Error::from(e)),
        }
    }
}

/// What went wrong as the user sees it, when a worker returned `Err` or its process ended
/// early: the methods that take the error apart.
impl Error {
    /// The worker's `Err` value, decoded as `E`: for [`Error::TaskFailed`] and
    /// [`Error::ProcessFailed`] from a worker declared `-> Result<T, E>` whose `E` implements
    /// `serde::Serialize` and `serde::Deserialize`.
    ///
    /// A clear error, never a panic, otherwise: [`Error::InvalidArgument`] when this error did
    /// not come from a worker's `Err` (a panic, a death, a timeout, …), when the worker's error is
    /// of another type than `E` (the message names both), or when its type is not `Serialize`
    /// (only its text, in `message`, crossed the process boundary); [`Error::Codec`] when the
    /// bytes do not decode. See [`WorkerError`] for an example.
    pub fn downcast<E: DeserializeOwned>(&self) -> Result<E> {
        match self.worker_error() {
            Some(w) => w.decode(),
            None => Err(Error::InvalidArgument {
                message: format!(
                    "cannot downcast to `{}`: this error did not come from a worker's `Err` \
                     (it is: {self})",
                    std::any::type_name::<E>()
                ),
            }),
        }
    }

    /// The worker's `Err` as it arrived (its type name, and its value where the type is
    /// `Serialize`), if this error is a worker's `Err`.
    pub fn worker_error(&self) -> Option<&WorkerError> {
        match self {
            Error::TaskFailed { error, .. } | Error::ProcessFailed { error, .. } => error.as_ref(),
            _ => None,
        }
    }

    /// Which input item failed: its position in the input of `map`, `starmap`, `imap`,
    /// `imap_unordered` (and their variants) or the executor's `map`, for a worker's `Err`
    /// ([`Error::TaskFailed`]), a panic ([`Error::WorkerPanicked`]), an argument or result that
    /// could not be encoded or decoded ([`Error::Codec`]), a death
    /// ([`Error::WorkerDied`]), a time limit ([`Error::TimeLimitExceeded`]) and a memory limit
    /// ([`Error::MemoryLimitExceeded`]). `None` for
    /// other errors and for single calls (`apply`, `submit`).
    pub fn item_index(&self) -> Option<usize> {
        match self {
            Error::TaskFailed { index, .. }
            | Error::WorkerPanicked { index, .. }
            | Error::Codec { index, .. }
            | Error::WorkerDied { index, .. }
            | Error::TimeLimitExceeded { index, .. }
            | Error::MemoryLimitExceeded { index, .. } => *index,
            _ => None,
        }
    }

    /// The index slot of the variants that can name an input item.
    fn index_mut(&mut self) -> Option<&mut Option<usize>> {
        match self {
            Error::TaskFailed { index, .. }
            | Error::WorkerPanicked { index, .. }
            | Error::Codec { index, .. }
            | Error::WorkerDied { index, .. }
            | Error::TimeLimitExceeded { index, .. }
            | Error::MemoryLimitExceeded { index, .. } => Some(index),
            _ => None,
        }
    }

    /// A worker's `Err` that failed a pool task, with its position relative to the task's first
    /// item (made absolute by [`rebase_index`](Error::rebase_index)).
    pub(crate) fn raised(message: String, error: WorkerError, position: usize) -> Error {
        Error::TaskFailed {
            message,
            index: Some(position),
            error: Some(error),
        }
    }

    /// A task failure that did not come from the worker's `Err` (it could not run).
    pub(crate) fn task_failed(message: impl Into<String>) -> Error {
        Error::TaskFailed {
            message: message.into(),
            index: None,
            error: None,
        }
    }

    /// Turns the position of a worker's `Err` within its task into a position in the input:
    /// `first` is the input index of the task's first item (`None` for a single call, which
    /// then reports no index).
    pub(crate) fn rebase_index(mut self, first: Option<usize>) -> Error {
        if let Some(index) = self.index_mut()
            && let Some(p) = *index
        {
            *index = first.and_then(|f| f.checked_add(p));
        }
        self
    }

    /// Names position `position` of its task as the item concerned (made absolute by
    /// [`rebase_index`](Error::rebase_index)).
    pub(crate) fn at_position(mut self, position: usize) -> Error {
        if let Some(index) = self.index_mut() {
            *index = Some(position);
        }
        self
    }

    /// Sets the input index of a worker's `Err` (the executor's `map`, whose calls are single
    /// tasks).
    pub(crate) fn at_index(self, at: usize) -> Error {
        // A task failure that is not the worker's `Err` (the task could not run) names no item;
        // every other variant with an index slot does.
        if matches!(self, Error::TaskFailed { error: None, .. }) {
            return self;
        }
        self.at_position(at)
    }
}

/// The text of [`Error::ProcessFailed`]: the worker's error, or what happened to the process
/// (a full sentence, built where the exit is observed).
fn process_failed_text(message: &str, returned_err: bool) -> String {
    if returned_err {
        format!("the worker returned an error: {message}")
    } else {
        message.to_owned()
    }
}

/// The text of [`Error::TaskFailed`].
fn task_failed_text(message: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("task failed on input item {i}: {message}"),
        None => format!("task failed: {message}"),
    }
}

/// The text of [`Error::Codec`].
fn codec_text(message: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("codec error on input item {i}: {message}"),
        None => format!("codec error: {message}"),
    }
}

/// The text of [`Error::WorkerPanicked`].
fn panicked_text(message: &str, location: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("worker panicked on input item {i} at {location}: {message}"),
        None => format!("worker panicked at {location}: {message}"),
    }
}

/// The text of [`Error::MemoryLimitExceeded`].
fn memory_limit_text(pid: i32, limit: u64, index: Option<usize>) -> String {
    let item = match index {
        Some(i) => format!("input item {i}"),
        None => "the task".to_owned(),
    };
    format!(
        "{item} failed: its worker {pid} aborted under its memory limit of {limit} bytes (an \
         allocation past the limit aborts the process); the worker was replaced. Raise \
         PoolBuilder::memory_limit_per_child, or make the task use less memory"
    )
}

/// The text of [`Error::TimeLimitExceeded`].
fn time_limit_text(
    pid: i32,
    limit: std::time::Duration,
    elapsed: std::time::Duration,
    index: Option<usize>,
) -> String {
    let item = match index {
        Some(i) => format!("input item {i}"),
        None => "the task".to_owned(),
    };
    format!(
        "{item} ran past its time limit of {limit:?} ({elapsed:?} when stopped); worker {pid} \
         was killed and replaced"
    )
}

/// The text of [`Error::WorkerDied`].
fn died_text(pid: i32, signal: i32, exitcode: i32) -> String {
    if signal != 0 {
        format!("worker {pid} died from signal {signal} while running the task")
    } else {
        format!("worker {pid} exited with code {exitcode} while running the task")
    }
}
