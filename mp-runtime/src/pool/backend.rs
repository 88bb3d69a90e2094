//! Where pool workers come from. The scheduler only sees [`Launcher`] and [`Link`]: a stream
//! socket to send jobs and read results on, a descriptor that becomes readable when the worker is
//! gone, and a way to kill and reap it. [`LocalLauncher`] starts local processes with any start
//! method; another backend (workers on other machines) implements the same two traits, and
//! [`Remote`] to be chosen with [`Backend`] (the cluster module, with the `mpi` feature).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::worker_loop::WORKER_LOOP;
use crate::codec;
use crate::connection::FdRef;
use crate::error::{Error, Result};
use crate::process::{Process, ProcessBuilder};
use crate::start_method::StartMethod;
use crate::transport::reader::FrameReader;
use crate::transport::socket::bulk_stream_pair;

/// Starts workers.
pub(crate) trait Launcher: Send {
    /// Starts one worker, running the pool's initializer (if any) before its first job.
    fn launch(&mut self) -> Result<Box<dyn Link>>;

    /// How much work a worker should hold so that it never waits for its next job, as run time
    /// in nanoseconds and at most that many jobs: about one round trip to it. A local worker is
    /// a socket away; a remote one further.
    fn work_ahead(&self) -> (u64, usize) {
        (200_000, 64)
    }

    /// Whether the workers run on this machine, so that jobs and answers can travel in memory
    /// shared with them (`pool::lane`).
    fn shares_memory(&self) -> bool {
        true
    }
}

/// The scheduler's hold on one started worker.
pub(crate) trait Link: Send {
    /// The worker's process id (for errors and introspection).
    fn pid(&self) -> i32;
    /// The job socket: jobs are written and results read here (non-blocking on this side).
    fn channel(&self) -> BorrowedFd<'_>;
    /// Readable once the worker has exited.
    fn sentinel(&self) -> BorrowedFd<'_>;
    /// Kills the worker at once (SIGKILL).
    fn kill(&self);
    /// Asks the worker to stop (SIGTERM), for a time limit with a grace period.
    fn terminate(&self) {
        self.kill();
    }
    /// Waits for the worker to exit and returns Python's exit code (`-N` for signal `N`).
    fn reap(&mut self) -> i32;
    /// The worker's stream when it travels in memory rather than on the socket (a remote
    /// worker's, handed to and from the thread that talks to its machine): `channel` is then
    /// only readable while answers wait in the pipe, and the pipe carries no descriptors.
    fn pipe(&self) -> Option<Arc<dyn Pipe>> {
        None
    }
}

/// A worker's byte stream carried in memory (see [`Link::pipe`]).
pub(crate) trait Pipe: Send + Sync {
    /// Takes `parts`, written one after the other, whole: a pipe is never full.
    fn send(&self, parts: &[&[u8]]);
    /// Takes a frame of `head` then `items`, the items sent from where they are (the task that
    /// holds them keeps them, to send again if the worker dies first).
    fn send_shared(&self, head: &[u8], items: &Arc<Vec<u8>>);
    /// Moves the whole frames that have arrived into `reader` (with
    /// [`FrameReader::push_frame`]): the bytes they hold, `Some(0)` once the stream has ended
    /// and everything was read, `None` if nothing is waiting. An error if the worker's side
    /// sent something that is not a frame of the pool's protocol.
    fn recv(&self, reader: &mut FrameReader) -> Result<Option<usize>>;
}

/// Where a pool's (or an executor's) workers run: on this machine (the default,
/// [`Backend::local`]), or on the ranks of an MPI job (`mp::cluster::Mpi`, with the `mpi`
/// feature). Given to [`PoolBuilder::backend`](crate::PoolBuilder::backend).
#[derive(Clone, Default)]
pub struct Backend(Option<Arc<dyn Remote>>);

impl Backend {
    /// Worker processes on this machine: an ordinary pool.
    pub fn local() -> Backend {
        Backend(None)
    }

    /// Workers on other machines, started through `remote`.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn remote(remote: Arc<dyn Remote>) -> Backend {
        Backend(Some(remote))
    }

    pub(crate) fn as_remote(&self) -> Option<&dyn Remote> {
        self.0.as_deref()
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Backend::local()"),
            Some(r) => f.write_str(r.name()),
        }
    }
}

/// A backend whose workers are not this machine's processes.
pub(crate) trait Remote: Send + Sync {
    /// How the user named it (`Debug` of [`Backend`]).
    fn name(&self) -> &'static str;
    /// Checks that the workers can be had and makes their launcher, with the number of workers
    /// a full pool has; `None` when the pool is to run locally after all (an automatic choice
    /// outside a cluster).
    fn connect(&self, spec: RemoteSpec) -> Result<Option<(Box<dyn Launcher>, usize)>>;
}

/// What a remote backend needs to start workers.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) struct RemoteSpec {
    /// The pool size asked for with `processes` (a local pool's), if any.
    pub(crate) processes: Option<usize>,
    /// Workers per node (`processes_per_node`), if given.
    pub(crate) per_node: Option<usize>,
    /// The start method of the worker processes on each node.
    pub(crate) method: StartMethod,
    /// The pool's initializer (without descriptors: refused before).
    pub(crate) init: Option<(&'static str, Vec<u8>)>,
    /// The workers' memory limits.
    pub(crate) memory: super::memory::MemoryLimits,
}

/// An initializer: registered worker name and encoded arguments.
pub(crate) struct InitSpec {
    pub(crate) name: &'static str,
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Test support: makes the next worker starts of the pools it is given to fail, as when the
/// process or descriptor limit is reached, so that tests can check what a pool does then without
/// exhausting the machine.
#[derive(Clone, Debug, Default)]
pub struct StartFaults(Arc<AtomicUsize>);

impl StartFaults {
    /// No failures until [`fail_next`](StartFaults::fail_next).
    pub fn new() -> Self {
        StartFaults::default()
    }

    /// The next `n` worker starts fail (replacing what was left of an earlier count).
    pub fn fail_next(&self, n: usize) {
        self.0.store(n, Ordering::SeqCst);
    }

    /// How many of the failures asked for are still to come.
    pub fn left(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether this start is to fail (counting it).
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Starts workers as local processes.
pub(crate) struct LocalLauncher {
    pub(crate) method: StartMethod,
    pub(crate) prefix: &'static str,
    pub(crate) init: Option<InitSpec>,
    pub(crate) started: usize,
    pub(crate) faults: Option<StartFaults>,
    pub(crate) memory: super::memory::MemoryLimits,
}

impl Launcher for LocalLauncher {
    fn launch(&mut self) -> Result<Box<dyn Link>> {
        if self.faults.as_ref().is_some_and(StartFaults::take) {
            return Err(Error::io(
                "fork (a failure injected by the test)",
                std::io::Error::from_raw_os_error(libc::EAGAIN),
            ));
        }
        let (ours, theirs) = bulk_stream_pair()?;
        crate::sys::fd::set_nonblocking(ours.as_fd(), true).map_err(|e| Error::io("fcntl", e))?;
        let init_fds: Vec<FdRef<'_>> = self
            .init
            .as_ref()
            .map(|i| i.fds.iter().map(|f| FdRef(f.as_fd())).collect())
            .unwrap_or_default();
        let init = self
            .init
            .as_ref()
            .map(|i| (i.name.to_owned(), i.args.clone()));
        let payload =
            codec::encode_owned(&(FdRef(theirs.as_fd()), init, init_fds, self.memory.to_wire()));
        drop(theirs);
        self.started += 1;
        let name = format!(
            "{}{}-{}",
            match self.method {
                StartMethod::Fork => "Fork",
                StartMethod::Spawn => "Spawn",
                StartMethod::ForkServer => "ForkServer",
            },
            self.prefix,
            self.started
        );
        let mut process = ProcessBuilder::default()
            .name(name)
            .daemon(true)
            .start_method(self.method)
            .build_internal(WORKER_LOOP, payload);
        process.start()?;
        Ok(Box::new(LocalLink {
            process,
            channel: ours,
        }))
    }
}

struct LocalLink {
    process: Process<()>,
    channel: OwnedFd,
}

impl Link for LocalLink {
    fn pid(&self) -> i32 {
        self.process.pid().unwrap_or(0)
    }
    fn channel(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
    fn sentinel(&self) -> BorrowedFd<'_> {
        self.process
            .sentinel()
            .expect("a started pool worker has a sentinel")
    }
    fn kill(&self) {
        let _ = self.process.kill();
    }
    fn terminate(&self) {
        let _ = self.process.terminate();
    }
    fn reap(&mut self) -> i32 {
        let _ = self.process.join();
        self.process.exitcode().unwrap_or(255)
    }
}
