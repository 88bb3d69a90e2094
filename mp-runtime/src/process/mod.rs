//! Processes: Python's `multiprocessing.Process`, with typed arguments and results.
//!
//! A [`Process`] runs one registered worker in a child process. Its arguments are encoded in the
//! parent and travel (with any OS handles inside them) over a socket private to the child; its
//! return value comes back the same way and is what [`Process::join`] returns. A panic, a
//! returned `Err` or a death by signal reaches the parent as an [`Error`], never only as an exit
//! code.

pub(crate) mod child;
pub(crate) mod children;
pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod launcher;
pub(crate) mod spawn;
pub(crate) mod worker_child;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use self::child::{ChildHandle, Report, describe_exit};
use self::worker_child::Bootstrap;
use crate::codec;
use crate::error::{Error, Result};
use crate::identity::{self, ChildIdentity};
use crate::registry;
use crate::start_method::{StartMethod, get_start_method};
use crate::transport::frame::send_frame;
use crate::transport::socket::stream_pair;
use crate::worker::{RegisteredRun, Worker};

/// A child process running one worker (Python's `multiprocessing.Process`).
///
/// `R` is what the worker returns (the `T` of a `Result<T, E>`); [`join`](Process::join) hands
/// it back.
///
/// ```
/// #[mp::worker]
/// fn greet(name: String) -> String {
///     format!("hello {name}")
/// }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let mut p = mp::Process::new(greet, ("bob".to_string(),));
///     p.start()?;
///     assert_eq!(p.join()?, "hello bob");
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub struct Process<R = ()> {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: StartMethod,
    worker: &'static str,
    payload: Option<Result<(Vec<u8>, Vec<OwnedFd>)>>,
    child: Option<Arc<ChildHandle>>,
    joined: bool,
    result_taken: bool,
    closed: Option<Option<i32>>,
    _result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Process<R> {
    /// A process that will run `worker(args...)` when started, with the default start method,
    /// an automatic name (`Process-N`) and the current process's daemon flag.
    pub fn new<W: Worker<Output = R>>(worker: W, args: W::Args) -> Self {
        Process::builder().build(worker, args)
    }
}

impl Process<()> {
    /// A builder to set the name, daemon flag or start method first.
    ///
    /// ```no_run
    /// # #[mp::worker] fn noop() {}
    /// let mut p = mp::Process::builder()
    ///     .name("reader")
    ///     .daemon(true)
    ///     .start_method(mp::StartMethod::Spawn)
    ///     .build(noop, ());
    /// assert_eq!(p.name(), "reader");
    /// ```
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// A process that runs `value.run()` (Python's subclass style, `class P(Process)`).
    pub fn from_run<T: RegisteredRun>(value: T) -> Self {
        Process::builder().build_run(value)
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Starts the child. Fails if the arguments cannot be encoded, if the process was already
    /// started or closed, or if the OS refuses to create a process.
    pub fn start(&mut self) -> Result<()> {
        if self.closed.is_some() {
            return Err(closed_error());
        }
        let Some(payload) = self.payload.take() else {
            return Err(Error::state("a process can only be started once"));
        };
        let (args, fds) = payload?;
        // Refuse an unknown or ambiguous worker here rather than in the child.
        registry::find(self.worker)?;
        let (parent_end, child_end) = stream_pair()?;
        let (pid, waiter) = match self.method {
            StartMethod::Spawn => spawn::start(child_end)?,
            StartMethod::Fork => fork::start(child_end, parent_end.as_raw_fd())?,
            StartMethod::ForkServer => forkserver::start(child_end)?,
        };
        let boot = Bootstrap {
            worker: self.worker.to_owned(),
            args,
            identity: ChildIdentity::for_child(
                self.name.clone(),
                self.identity.clone(),
                self.daemon,
                self.method,
            ),
        };
        let child = Arc::new(ChildHandle::new(
            pid,
            self.name.clone(),
            self.daemon,
            waiter,
            parent_end.try_clone().map_err(|e| Error::io("dup", e))?,
        ));
        children::register(child.clone());
        self.child = Some(child);
        let encoded = codec::encode(&boot)?;
        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
        match send_frame(parent_end.as_fd(), &encoded.bytes, &raw) {
            // A child that died before reading is reported by `join`.
            Ok(()) | Err(Error::Closed) => {
                crate::log::event!(
                    debug,
                    pid,
                    name = %self.name,
                    method = %self.method,
                    worker = self.worker,
                    "process started"
                );
                Ok(())
            }
            Err(e) => {
                let _ = self.kill();
                Err(e)
            }
        }
    }

    /// Waits for the child to exit and returns what its worker returned.
    ///
    /// Errors: [`Error::WorkerPanicked`] (message and location of the panic),
    /// [`Error::ProcessFailed`] (the worker returned `Err`, or the process was killed or exited
    /// without reporting; `exitcode` says how), [`Error::Codec`] (the result did not decode),
    /// [`Error::InvalidState`] (never started, closed, or the result was already returned by an
    /// earlier `join`).
    pub fn join(&mut self) -> Result<R> {
        let child = self.child_or_err()?;
        let code = child
            .wait_exit(None)?
            .ok_or_else(|| Error::state("the process did not exit"))?;
        self.finish_join(&child, code)
    }

    /// Waits at most `timeout` for the child to exit; true if it has (then [`join`] returns at
    /// once). False if it is still running or was never started.
    ///
    /// [`join`]: Process::join
    pub fn join_timeout(&mut self, timeout: Duration) -> bool {
        let Ok(child) = self.child_or_err() else {
            return false;
        };
        let exited = matches!(child.wait_exit(Some(timeout)), Ok(Some(_)));
        if exited && !self.joined {
            // Like Python, forget a child once a timed join has seen it exit.
            self.joined = true;
            children::unregister(&child);
        }
        exited
    }

    fn finish_join(&mut self, child: &Arc<ChildHandle>, code: i32) -> Result<R> {
        if !self.joined {
            self.joined = true;
            children::unregister(child);
        }
        if self.result_taken {
            return Err(Error::state(
                "this process was already joined and its result returned; use exitcode() to \
                 inspect it again",
            ));
        }
        self.result_taken = true;
        match child.take_report() {
            Some(Report::Returned { bytes, fds }) => codec::decode(&bytes, fds),
            Some(Report::Failed(message)) => Err(Error::ProcessFailed {
                exitcode: code,
                message: format!(
                    "the process could not run its worker (exit code {code}): {message}"
                ),
                error: None,
            }),
            Some(Report::Raised { message, error }) => Err(Error::ProcessFailed {
                exitcode: code,
                message,
                error: Some(error),
            }),
            Some(Report::Panicked { message, location }) => Err(Error::WorkerPanicked {
                message,
                location,
                index: None,
            }),
            Some(Report::Broken(m)) => Err(Error::protocol(format!(
                "the child's report could not be read: {m}"
            ))),
            None => Err(Error::ProcessFailed {
                exitcode: code,
                message: describe_exit(code),
                error: None,
            }),
        }
    }
}

impl<R> Process<R> {
    fn child_or_err(&self) -> Result<Arc<ChildHandle>> {
        if self.closed.is_some() {
            return Err(closed_error());
        }
        self.child
            .clone()
            .ok_or_else(|| Error::state("the process has not been started; call start() first"))
    }

    /// Whether the child is running: false before `start` and after it exited.
    pub fn is_alive(&self) -> bool {
        match (&self.child, self.closed) {
            (Some(c), None) => c.exitcode_now().is_none(),
            _ => false,
        }
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.pid())
    }

    /// Python's `ident`: the same as [`pid`](Process::pid).
    pub fn ident(&self) -> Option<i32> {
        self.pid()
    }

    /// The process's name (`Process-N` unless set with the builder).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is a daemon: terminated, not joined, when its parent's `main` ends.
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// The start method this process uses.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// The registered name of the worker this process runs.
    pub fn worker_name(&self) -> &'static str {
        self.worker
    }

    /// `None` while running or before start; then 0 for success, 1 for a panic or returned
    /// `Err`, `N` for `exit(N)`, `-N` when killed by signal `N` (Python's convention).
    pub fn exitcode(&self) -> Option<i32> {
        if let Some(code) = self.closed {
            return code;
        }
        self.child.as_ref().and_then(|c| c.exitcode_now())
    }

    /// Sends SIGTERM. The child's exit code becomes `-15` unless it handles the signal.
    pub fn terminate(&self) -> Result<()> {
        self.child_or_err()?.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL: exit code `-9`.
    pub fn kill(&self) -> Result<()> {
        self.child_or_err()?.signal(libc::SIGKILL)
    }

    /// Sends SIGINT (Python 3.14's `interrupt()`): exit code `-2` with Rust's default handling.
    pub fn interrupt(&self) -> Result<()> {
        self.child_or_err()?.signal(libc::SIGINT)
    }

    /// A descriptor that becomes readable when the child exits, for
    /// [`connection::wait`](crate::connection::wait) or your own poll loop.
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>> {
        if self.closed.is_some() {
            return Err(closed_error());
        }
        self.child
            .as_ref()
            .map(|c| c.sentinel())
            .ok_or_else(|| Error::state("the process has not been started; call start() first"))
    }

    /// Releases the process's resources. An error while the child is still running; calling it
    /// again is fine. Afterwards `join`, `terminate`, `kill` and `sentinel` return
    /// [`Error::InvalidState`].
    pub fn close(&mut self) -> Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        let code = match &self.child {
            Some(c) => match c.exitcode_now() {
                Some(code) => {
                    children::unregister(c);
                    Some(code)
                }
                None => {
                    return Err(Error::state(
                        "cannot close a process that is still running; join or kill it first",
                    ));
                }
            },
            None => None,
        };
        self.child = None;
        self.payload = None;
        self.closed = Some(code);
        Ok(())
    }
}

impl<R> Drop for Process<R> {
    /// A finished child is forgotten with its `Process`; a running one stays in the list of
    /// children, to be joined (or terminated, if a daemon) when the program ends.
    fn drop(&mut self) {
        if let Some(c) = &self.child
            && !self.joined
            && c.exitcode_now().is_some()
        {
            children::unregister(c);
        }
    }
}

fn closed_error() -> Error {
    Error::state("the process object is closed")
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (&self.child, self.closed) {
            (_, Some(_)) => "closed".to_owned(),
            (None, None) => "initial".to_owned(),
            (Some(c), None) => match c.exitcode_now() {
                None => "started".to_owned(),
                Some(code) => format!("stopped exitcode={code}"),
            },
        };
        write!(f, "<Process name={:?}", self.name)?;
        if let Some(pid) = self.pid() {
            write!(f, " pid={pid}")?;
        }
        write!(f, " {status}")?;
        if self.daemon {
            write!(f, " daemon")?;
        }
        write!(f, ">")
    }
}

/// Builds a [`Process`] with a name, daemon flag or start method of your choosing.
#[derive(Clone, Debug, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
}

impl ProcessBuilder {
    /// The process's name. Default: `Process-N`, with `N` counting this process's children
    /// (`Process-1:2` for the second child of `Process-1`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon. Default: the current process's own flag (false in the
    /// main process). Unlike Python, a daemon may start children of its own; they are
    /// terminated with it.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// The start method. Default: [`get_start_method()`](crate::get_start_method) when the
    /// process is built ([`StartMethod::ForkServer`] unless set).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A process that will run `worker(args...)`.
    pub fn build<W: Worker>(self, worker: W, args: W::Args) -> Process<W::Output> {
        let payload = codec::encode_owned(&args);
        self.finish(worker.name(), payload)
    }

    /// A process that will run `value.run()`.
    pub fn build_run<T: RegisteredRun>(self, value: T) -> Process<()> {
        let payload = codec::encode_owned(&(value,));
        self.finish(T::NAME, payload)
    }

    /// A process running the runtime's own registered worker `worker` on encoded arguments.
    pub(crate) fn build_internal(
        self,
        worker: &'static str,
        payload: Result<(Vec<u8>, Vec<OwnedFd>)>,
    ) -> Process<()> {
        self.finish(worker, payload)
    }

    fn finish<R>(
        self,
        worker: &'static str,
        payload: Result<(Vec<u8>, Vec<OwnedFd>)>,
    ) -> Process<R> {
        let (identity, auto_name) = identity::next_child_identity();
        Process {
            name: self.name.unwrap_or(auto_name),
            identity,
            daemon: self.daemon.unwrap_or_else(identity::is_daemon),
            method: self.method.unwrap_or_else(get_start_method),
            worker,
            payload: Some(payload),
            child: None,
            joined: false,
            result_taken: false,
            closed: None,
            _result: PhantomData,
        }
    }
}

/// A started child that has not been joined (what [`active_children`] returns).
#[derive(Clone)]
pub struct ActiveChild(Arc<ChildHandle>);

impl ActiveChild {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.0.pid()
    }
    /// The child's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }
    /// Whether the child is a daemon.
    pub fn daemon(&self) -> bool {
        self.0.daemon()
    }
    /// Whether it is still running.
    pub fn is_alive(&self) -> bool {
        self.0.exitcode_now().is_none()
    }
    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        self.0.signal(libc::SIGTERM)
    }
    /// Sends SIGKILL.
    pub fn kill(&self) -> Result<()> {
        self.0.signal(libc::SIGKILL)
    }
    /// Waits up to `timeout` for it to exit; returns its exit code if it did.
    pub fn join_timeout(&self, timeout: Duration) -> Option<i32> {
        self.0.wait_exit(Some(timeout)).ok().flatten()
    }
}

impl fmt::Debug for ActiveChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<ActiveChild name={:?} pid={}>", self.name(), self.pid())
    }
}

/// The children of this process that are still running; finished ones are reaped on the way
/// (Python's `active_children()`).
pub fn active_children() -> Vec<ActiveChild> {
    children::live().into_iter().map(ActiveChild).collect()
}

impl AsFd for ActiveChild {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.sentinel()
    }
}

/// Starts a spawned child and writes `frame_bytes` to it verbatim (see
/// `__private::run_raw_bootstrap`).
pub(crate) fn raw_bootstrap(
    frame_bytes: &[u8],
    close_after: bool,
) -> Result<(i32, Option<String>)> {
    use std::io::Write;
    let (parent_end, child_end) = stream_pair()?;
    let (pid, waiter) = spawn::start(child_end)?;
    let writer = parent_end.try_clone().map_err(|e| Error::io("dup", e))?;
    let child = ChildHandle::new(pid, "raw".into(), false, waiter, parent_end);
    let mut stream = std::os::unix::net::UnixStream::from(writer);
    let _ = stream.write_all(frame_bytes);
    if close_after {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let code = child
        .wait_exit(None)?
        .ok_or_else(|| Error::state("the child did not exit"))?;
    let report = child.take_report().map(|r| match r {
        Report::Returned { .. } => "returned".to_owned(),
        Report::Failed(m) | Report::Raised { message: m, .. } => format!("failed: {m}"),
        Report::Panicked { message, .. } => format!("panicked: {message}"),
        Report::Broken(m) => format!("broken: {m}"),
    });
    Ok((code, report))
}

/// A well-formed bootstrap frame (header included) for `worker` with encoded `args`.
pub(crate) fn bootstrap_frame(worker: &str, args: &[u8]) -> Result<Vec<u8>> {
    let boot = Bootstrap {
        worker: worker.to_owned(),
        args: args.to_vec(),
        identity: ChildIdentity::for_child("raw".into(), vec![1], false, StartMethod::Spawn),
    };
    let enc = codec::encode(&boot)?;
    let mut out = crate::transport::frame::header(enc.bytes.len(), 0).to_vec();
    out.extend_from_slice(&enc.bytes);
    Ok(out)
}
