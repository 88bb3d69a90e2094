//! [`PoolBuilder`]: the options of a [`Pool`].

use std::os::fd::OwnedFd;

use super::Pool;
use super::backend::{InitSpec, Launcher, Link, LocalLauncher, StartFaults};
use super::scheduler::{self, Config, Core};
use crate::codec;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::start_method::{StartMethod, get_start_method};
use crate::worker::Worker;

/// Builds a [`Pool`] (Python's `Pool(processes, initializer, initargs, maxtasksperchild,
/// context)`, plus a bound on tasks in flight).
///
/// ```
/// static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
///
/// #[mp::worker]
/// fn setup(value: String) { let _ = TAG.set(value); }
/// #[mp::worker]
/// fn read_tag() -> String { TAG.get().cloned().unwrap_or_default() }
///
/// #[mp::main]
/// fn main() -> mp::Result<()> {
///     let pool = mp::Pool::builder()
///         .processes(2)
///         .initializer(setup, ("ready".to_string(),))
///         .max_tasks_per_child(100)
///         .context(mp::get_context(mp::StartMethod::Spawn))
///         .build()?;
///     assert_eq!(pool.apply(read_tag, ())?, "ready");
///     Ok(())
/// }
/// ```
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<Result<EncodedInit>>,
    max_tasks_per_child: Option<usize>,
    method: Option<StartMethod>,
    max_in_flight: Option<usize>,
    faults: Option<StartFaults>,
}

impl PoolBuilder {
    /// How many worker processes (default: [`cpu_count()`](crate::cpu_count)). Zero is
    /// [`Error::InvalidArgument`] at [`build`](PoolBuilder::build).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `worker(args)` in every worker process before its first task (Python's
    /// `initializer`/`initargs`). If it fails (panics or returns `Err`), the pool is broken:
    /// every task fails with [`Error::PoolBroken`] carrying the initializer's error.
    pub fn initializer<W: Worker>(mut self, worker: W, args: W::Args) -> Self {
        self.init = Some(codec::encode_owned(&args).map(|(b, f)| (worker.name(), b, f)));
        self
    }

    /// Replaces each worker process after it ran this many tasks (chunks) (Python's
    /// `maxtasksperchild`). Zero is [`Error::InvalidArgument`].
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Starts the workers with `ctx`'s start method.
    pub fn context(mut self, ctx: Context) -> Self {
        self.method = Some(ctx.start_method());
        self
    }

    /// Starts the workers with `method`.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// At most `n` tasks (chunks) submitted and unfinished at a time: submitting more blocks
    /// until one finishes. Default: unbounded, as in Python.
    pub fn max_tasks_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Test support: worker starts fail as `faults` says.
    pub(crate) fn start_faults(mut self, faults: &StartFaults) -> Self {
        self.faults = Some(faults.clone());
        self
    }

    /// Starts the worker processes. If one cannot be started, those already started are killed
    /// and the error is returned.
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::identity::cpu_count);
        let parts = self.into_parts(processes, "PoolWorker")?;
        let mut links = Vec::with_capacity(processes);
        let (core, mut launcher, method, cfg) = parts;
        for _ in 0..processes {
            match launcher.launch() {
                Ok(l) => links.push(l),
                Err(e) => {
                    kill_all(links);
                    return Err(e);
                }
            }
        }
        let thread = scheduler::spawn(core.clone(), Box::new(launcher), links, cfg)?;
        Ok(Pool {
            core,
            thread: std::sync::Mutex::new(Some(thread)),
            processes,
            method,
        })
    }

    /// Validates the options and makes the shared state and launcher (also used by the
    /// executor, whose workers start on demand).
    pub(crate) fn into_parts(
        self,
        processes: usize,
        prefix: &'static str,
    ) -> Result<(std::sync::Arc<Core>, LocalLauncher, StartMethod, Config)> {
        if processes == 0 {
            return Err(Error::InvalidArgument {
                message: "processes must be at least 1".into(),
            });
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument {
                message: "max_tasks_per_child must be at least 1".into(),
            });
        }
        if self.max_in_flight == Some(0) {
            return Err(Error::InvalidArgument {
                message: "max_tasks_in_flight must be at least 1".into(),
            });
        }
        let init = match self.init {
            None => None,
            Some(r) => {
                let (name, args, fds) = r?;
                crate::registry::find(name)?;
                Some(InitSpec { name, args, fds })
            }
        };
        let method = self.method.unwrap_or_else(get_start_method);
        let core = Core::new(self.max_in_flight)?;
        let launcher = LocalLauncher {
            method,
            prefix,
            init,
            started: 0,
            faults: self.faults,
        };
        let cfg = Config {
            processes,
            max_tasks_per_child: self.max_tasks_per_child,
            lazy: false,
        };
        Ok((core, launcher, method, cfg))
    }
}

/// An initializer's registered name, encoded arguments and their descriptors.
type EncodedInit = (&'static str, Vec<u8>, Vec<OwnedFd>);

fn kill_all(links: Vec<Box<dyn Link>>) {
    for l in &links {
        l.kill();
    }
    for mut l in links {
        l.reap();
    }
}
