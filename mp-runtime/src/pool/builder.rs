//! [`PoolBuilder`]: the options of a [`Pool`].

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::Pool;
use super::backend::{Backend, InitSpec, Launcher, Link, LocalLauncher, RemoteSpec, StartFaults};
use super::intensity::Intensity;
use super::memory::MemoryLimits;
use super::scheduler::{self, Config, Core, Limits};
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
    backend: Backend,
    per_node: Option<usize>,
    time_limit: Option<Duration>,
    grace: Option<Duration>,
    intensity: Option<(u32, Duration)>,
    memory: MemoryLimits,
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
        let type_name = std::any::type_name::<W::Args>();
        self.init = Some(codec::encode_owned(&args).map(|(b, f)| (worker.name(), b, f, type_name)));
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

    /// Where the workers run: [`Backend::local`] (the default), or the ranks of an MPI job
    /// (`mp::cluster::Mpi::world()`, with the `mpi` feature), with the same methods and
    /// semantics. A cluster pool has [`processes_per_node`](PoolBuilder::processes_per_node)
    /// workers on each node agent; its tasks' arguments must not carry OS handles
    /// ([`Error::NotPortable`]).
    pub fn backend(mut self, backend: impl Into<Backend>) -> Self {
        self.backend = backend.into();
        self
    }

    /// Worker processes on each node of a cluster backend (default: this machine's
    /// [`cpu_count()`](crate::cpu_count)). Zero is [`Error::InvalidArgument`]. A local pool
    /// ignores it: its size is [`processes`](PoolBuilder::processes).
    pub fn processes_per_node(mut self, n: usize) -> Self {
        self.per_node = Some(n);
        self
    }

    /// A time limit for each item of every task (default: none), which a call can override
    /// ([`Pool::with_time_limit`](crate::Pool::with_time_limit)). An item still running when
    /// its limit passes has its worker process killed (SIGKILL, or SIGTERM first with
    /// [`time_limit_grace`](PoolBuilder::time_limit_grace)) and replaced; the item fails with
    /// [`Error::TimeLimitExceeded`], naming it, the limit and how long it ran. The other items
    /// of its chunk are run again by another worker, so they keep their results (a worker with
    /// side effects sees the ones that had finished run twice; use a chunk size of 1 for
    /// at-most-once). The clock of an item starts when a worker starts it: time queued does
    /// not count. The worker's watchdog looks every millisecond, so the kill comes within
    /// about a millisecond (plus scheduling) of the limit. A worker reads its deadline with
    /// [`task_deadline`](crate::task_deadline).
    /// Zero is [`Error::InvalidArgument`] at [`build`](PoolBuilder::build). On a cluster
    /// backend the worker is killed on its node, the same way.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// With a time limit, the worker of an item past its limit is sent SIGTERM and gets
    /// `grace` to exit before SIGKILL (default: SIGKILL at once). Zero is
    /// [`Error::InvalidArgument`], and so is a grace on a cluster backend (its workers are
    /// killed at once).
    pub fn time_limit_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Restart intensity (Erlang/OTP's `intensity` and `period`): once more than
    /// `max_restarts` worker processes died unexpectedly within `period`, the pool stops
    /// replacing them, and its queued and later tasks fail with [`Error::PoolBroken`] saying
    /// so, instead of the pool starting workers that die in a loop (an initializer that
    /// aborts, a run of items that crash the process). Only deaths the pool did not cause
    /// count: workers killed for a time limit or by [`AsyncResult::terminate`], and those
    /// retired by `max_tasks_per_child` or `max_memory_per_child`, do not. Default: 100 (or 2
    /// per worker, if more) within 10 s. Zero `max_restarts` or `period` is
    /// [`Error::InvalidArgument`].
    ///
    /// [`AsyncResult::terminate`]: crate::AsyncResult::terminate
    pub fn restart_intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Some((max_restarts, period));
        self
    }

    /// Replaces a worker process after a task if its resident memory (RSS) is then above
    /// `bytes` (Celery's `worker_max_memory_per_child`): memory a task leaked goes back to the
    /// system, and no task fails. The worker checks after each task (a read of
    /// `/proc/self/status`); its unstarted tasks go to other workers. Freed memory that the
    /// allocator keeps for reuse is given back first, so only memory in use counts. A value
    /// below what an idle worker already uses is [`Error::InvalidArgument`] at
    /// [`build`](PoolBuilder::build).
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.memory.soft = Some(bytes);
        self
    }

    /// A hard limit on each worker process's memory: an allocation that would take its data
    /// memory (heap and private mappings: `RLIMIT_DATA`) past `bytes` fails, which aborts the
    /// worker (Rust aborts on a failed allocation). The item it ran fails with
    /// [`Error::MemoryLimitExceeded`], naming it; the worker is replaced; the pool and the
    /// parent are untouched. Shared memory (queues, `SharedMemory`, `Array`) does not count.
    /// A value below what an idle worker already uses is [`Error::InvalidArgument`] at
    /// [`build`](PoolBuilder::build). On a cluster backend each node agent sets it on the
    /// workers it starts.
    pub fn memory_limit_per_child(mut self, bytes: u64) -> Self {
        self.memory.hard = Some(bytes);
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
        let parts = self.into_parts(None, "PoolWorker")?;
        let (core, mut launcher, method, cfg) = parts;
        let processes = cfg.processes;
        let mut links = Vec::with_capacity(processes);
        for _ in 0..processes {
            match launcher.launch() {
                Ok(l) => links.push(l),
                Err(e) => {
                    kill_all(links);
                    return Err(e);
                }
            }
        }
        let thread = scheduler::spawn(core.clone(), launcher, links, cfg)?;
        Ok(Pool {
            core,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
            processes,
            method,
            limit: None,
            owner: true,
        })
    }

    /// Validates the options and makes the shared state and launcher (also used by the
    /// executor, whose workers start on demand). `processes` overrides the builder's (the
    /// executor's `max_workers`); the pool's size is `Config::processes`.
    pub(crate) fn into_parts(
        self,
        processes: Option<usize>,
        prefix: &'static str,
    ) -> Result<Parts> {
        let asked = processes.or(self.processes);
        let processes = asked.unwrap_or_else(crate::identity::cpu_count);
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
        if self.time_limit == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument {
                message: "time_limit must be more than zero".into(),
            });
        }
        if self.grace == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument {
                message: "time_limit_grace must be more than zero (leave it unset for SIGKILL \
                          at once)"
                    .into(),
            });
        }
        let limits = Limits {
            time_limit: self.time_limit,
            grace: self.grace,
        };
        let intensity = match self.intensity {
            None => Intensity::default_for(processes),
            Some((0, _)) => {
                return Err(Error::InvalidArgument {
                    message: "restart_intensity's max_restarts must be at least 1 (a pool that \
                              may never replace a worker breaks at the first death)"
                        .into(),
                });
            }
            Some((_, Duration::ZERO)) => {
                return Err(Error::InvalidArgument {
                    message: "restart_intensity's period must be more than zero".into(),
                });
            }
            Some((max_restarts, period)) => Intensity {
                max_restarts,
                period,
            },
        };
        self.memory
            .validate(self.method.unwrap_or_else(get_start_method))?;
        if self.per_node == Some(0) {
            return Err(Error::InvalidArgument {
                message: "processes_per_node must be at least 1".into(),
            });
        }
        let init = match self.init {
            None => None,
            Some(r) => {
                let (name, args, fds, type_name) = r?;
                crate::registry::find(name)?;
                Some((InitSpec { name, args, fds }, type_name))
            }
        };
        let method = self.method.unwrap_or_else(get_start_method);
        if let Some(remote) = self.backend.as_remote() {
            let spec = RemoteSpec {
                processes: asked,
                per_node: self.per_node,
                method,
                init: init.as_ref().map(|(i, _)| (i.name, i.args.clone())),
                memory: self.memory,
            };
            if let Some((launcher, workers)) = remote.connect(spec)? {
                if let Some((i, type_name)) = &init
                    && !i.fds.is_empty()
                {
                    return Err(Error::NotPortable {
                        type_name: (*type_name).to_owned(),
                    });
                }
                if limits.grace.is_some() {
                    return Err(Error::InvalidArgument {
                        message: "time_limit_grace is not supported on a cluster backend: a \
                                  worker past its time limit is killed at once (SIGKILL on its \
                                  node)"
                            .into(),
                    });
                }
                let core = Core::new(self.max_in_flight, true, limits)?;
                let cfg = Config {
                    processes: workers,
                    max_tasks_per_child: self.max_tasks_per_child,
                    lazy: false,
                    intensity,
                    memory_limit: self.memory.hard,
                };
                return Ok((core, launcher, method, cfg));
            }
        }
        let core = Core::new(self.max_in_flight, false, limits)?;
        let launcher = LocalLauncher {
            method,
            prefix,
            init: init.map(|(spec, _)| spec),
            started: 0,
            faults: self.faults,
            memory: self.memory,
        };
        let cfg = Config {
            processes,
            max_tasks_per_child: self.max_tasks_per_child,
            lazy: false,
            intensity,
            memory_limit: self.memory.hard,
        };
        Ok((core, Box::new(launcher), method, cfg))
    }
}

/// What a builder makes: the state shared with the scheduler, the launcher of its workers,
/// their start method and the scheduler's configuration.
pub(crate) type Parts = (std::sync::Arc<Core>, Box<dyn Launcher>, StartMethod, Config);

/// An initializer's registered name, encoded arguments, their descriptors and their type.
type EncodedInit = (&'static str, Vec<u8>, Vec<OwnedFd>, &'static str);

fn kill_all(links: Vec<Box<dyn Link>>) {
    for l in &links {
        l.kill();
    }
    for mut l in links {
        l.reap();
    }
}
