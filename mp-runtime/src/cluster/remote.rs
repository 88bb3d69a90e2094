//! The cluster as a pool backend: [`MpiBackend`] checks that the job has agents that run the
//! same program, and its launcher starts workers on them, the least loaded agent first. The
//! scheduler drives a [`RemoteLink`] like a local worker, its stream in a [`Relay`].

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::head::{self, Command, ExitCell, Head};
use super::messages::LaunchSpec;
use super::relay::Relay;
use super::{fingerprint, launch_env};
use crate::error::{Error, Result};
use crate::pool::backend::{Launcher, Link, Pipe, Remote, RemoteSpec};
use crate::start_method::StartMethod;

/// How long the agents have to report after the job started.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent has to start a worker process.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent has to report the exit of a worker that was killed or stopped.
const REAP_TIMEOUT: Duration = Duration::from_secs(60);

/// `mp::cluster::Mpi` (`auto: false`) or `mp::cluster::Auto`.
pub(crate) struct MpiBackend {
    pub(crate) auto: bool,
}

fn no_peers(hint: &str) -> Error {
    Error::NoClusterPeers { hint: hint.into() }
}

impl Remote for MpiBackend {
    fn name(&self) -> &'static str {
        if self.auto {
            "mp::cluster::Auto"
        } else {
            "mp::cluster::Mpi::world()"
        }
    }

    fn connect(&self, spec: RemoteSpec) -> Result<Option<(Box<dyn Launcher>, usize)>> {
        let head = match head::installed() {
            Some(h) if h.size >= 2 => h,
            _ if self.auto => return Ok(None),
            Some(_) => {
                return Err(no_peers(
                    "the MPI job has a single rank, which runs main; launch it with at least two \
                     (`mpiexec -n 3 ./app`: rank 0 runs main, every other rank is a node agent)",
                ));
            }
            None if launch_env::launched_as_rank() => {
                return Err(no_peers(
                    "this process is an MPI rank but main is not marked #[mp::main], which \
                     makes ranks other than 0 node agents",
                ));
            }
            None => {
                return Err(no_peers(
                    "this program was not started by an MPI launcher; run it with \
                     `mpiexec -n 3 ./app` or `srun --mpi=pmi2 -n 3 ./app` (rank 0 runs main, \
                     every other rank is a node agent), or use mp::cluster::Auto to fall back \
                     to a local pool",
                ));
            }
        };
        if spec.processes.is_some() && !self.auto {
            return Err(Error::InvalidArgument {
                message: "processes() sets the size of a local pool; a cluster pool has \
                          processes_per_node() workers on each node agent"
                    .into(),
            });
        }
        if spec.method == StartMethod::Fork {
            return Err(Error::InvalidArgument {
                message: "the Fork start method cannot start cluster workers: a forked child \
                          would inherit its node agent's MPI state; use ForkServer (the \
                          default) or Spawn"
                    .into(),
            });
        }
        let hellos = head.hellos(HELLO_TIMEOUT)?;
        fingerprint::check(&hellos)?;
        let per_node = spec.per_node.unwrap_or_else(crate::identity::cpu_count);
        let agents = head.size - 1;
        let launcher = MpiLauncher {
            spec: LaunchSpec {
                method: spec.method,
                init: spec.init.map(|(n, a)| (n.to_owned(), a)),
                memory: spec.memory.to_wire(),
            },
            live: (0..agents).map(|_| Arc::new(AtomicUsize::new(0))).collect(),
            head,
        };
        Ok(Some((Box::new(launcher), per_node * agents)))
    }
}

/// Starts workers on the agents.
struct MpiLauncher {
    head: Arc<Head>,
    spec: LaunchSpec,
    /// Live workers per agent (agent `i + 1`), shared with their links.
    live: Vec<Arc<AtomicUsize>>,
}

/// Numbers the workers of every cluster pool of this process.
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

impl Launcher for MpiLauncher {
    /// A job and its answer each pass two more threads and MPI: about 2 ms of work in hand
    /// keeps a remote worker busy through the longer round trip.
    fn work_ahead(&self) -> (u64, usize) {
        (2_000_000, 512)
    }

    /// The workers are on other machines.
    fn shares_memory(&self) -> bool {
        false
    }

    fn launch(&mut self) -> Result<Box<dyn Link>> {
        let (index, live) = self
            .live
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| l.load(Ordering::SeqCst))
            .expect("a cluster pool has at least one agent");
        let agent = index + 1;
        let worker = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
        let relay = Arc::new(Relay::new(worker, self.head.waker())?);
        let exit = Arc::new(ExitCell::new()?);
        let (reply, answer) = mpsc::channel();
        let ended = |why: String| Error::PoolBroken {
            message: format!("the cluster has ended: {why}"),
        };
        self.head
            .ask(Command::Launch {
                worker,
                agent,
                spec: self.spec.clone(),
                relay: relay.clone(),
                exit: exit.clone(),
                reply,
            })
            .map_err(ended)?;
        let pid = match answer.recv_timeout(LAUNCH_TIMEOUT) {
            Ok(Ok(pid)) => pid,
            Ok(Err(message)) => {
                return Err(Error::io(
                    "start a worker on a node agent",
                    std::io::Error::other(format!("rank {agent}: {message}")),
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::io(
                    "start a worker on a node agent",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("rank {agent} did not answer within {LAUNCH_TIMEOUT:?}"),
                    ),
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ended("main returned".into()));
            }
        };
        live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(RemoteLink {
            worker,
            agent,
            pid,
            relay,
            exit,
            head: self.head.clone(),
            live: live.clone(),
        }))
    }
}

/// The scheduler's hold on a worker process on another rank.
struct RemoteLink {
    worker: u64,
    agent: usize,
    pid: i32,
    relay: Arc<Relay>,
    exit: Arc<ExitCell>,
    head: Arc<Head>,
    live: Arc<AtomicUsize>,
}

impl Link for RemoteLink {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn channel(&self) -> BorrowedFd<'_> {
        self.relay.fd()
    }

    fn pipe(&self) -> Option<Arc<dyn Pipe>> {
        Some(self.relay.clone())
    }

    fn sentinel(&self) -> BorrowedFd<'_> {
        self.exit.fd()
    }

    fn kill(&self) {
        if !self.exit.is_set() {
            let _ = self.head.ask(Command::Kill {
                worker: self.worker,
                agent: self.agent,
            });
        }
    }

    fn reap(&mut self) -> i32 {
        self.exit
            .wait(REAP_TIMEOUT)
            .unwrap_or(crate::process::child::UNKNOWN_EXITCODE)
    }
}

impl Drop for RemoteLink {
    fn drop(&mut self) {
        self.relay.drop_stream();
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}
