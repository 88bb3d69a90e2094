//! Pools and executors past one machine, on the ranks of an MPI job (the `mpi` feature).
//!
//! The same binary runs on every rank (`mpiexec -n 9 ./app`, `srun --mpi=pmi2 -n 9 ./app`), so
//! the workers registered with `#[mp::worker]` are the same everywhere by construction. Rank 0
//! runs `main`; every other rank is a *node agent*: `#[mp::main]` never enters `main` there,
//! but keeps an ordinary local pool of worker processes that run the tasks rank 0 sends, and
//! exits with rank 0's exit code when `main` ends. MPI does launch, placement and transport.
//!
//! ```no_run
//! # // This doctest builds `mp` without its `mpi` feature: the module comes from the runtime.
//! # mod mp { pub use ::mp::*; pub use mp_runtime::cluster; }
//! #[mp::worker]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[mp::main]
//! fn main() -> mp::Result<()> {
//!     let pool = mp::Pool::builder()
//!         .backend(mp::cluster::Mpi::world())
//!         .processes_per_node(4)
//!         .build()?;
//!     assert_eq!(pool.map(square, 0..1000u64)?.len(), 1000);
//!     Ok(())
//! }
//! ```
//!
//! Every method of [`Pool`](crate::Pool) and [`ProcessPoolExecutor`](crate::ProcessPoolExecutor)
//! works and means the same as on a local pool: one scheduler on rank 0 hands tasks to the
//! workers of every node, in order, with callbacks, chunking, `terminate` and the rest. What
//! differs:
//!
//! - **Errors at build.** Outside an MPI job, or in a job of one rank,
//!   [`Error::NoClusterPeers`](crate::Error::NoClusterPeers) says how to launch the program
//!   ([`Auto`] builds a local pool there instead). An agent whose registered workers differ
//!   (another build) is [`Error::ClusterMismatch`](crate::Error::ClusterMismatch).
//! - **Plain data only.** Arguments that carry OS handles (connections, queues, locks, shared
//!   memory) are [`Error::NotPortable`](crate::Error::NotPortable) at submit; a result that
//!   carries one fails its task.
//! - **Failures.** A task process that dies on a node (panic, abort, SIGKILL) fails only its
//!   task, with [`Error::WorkerDied`](crate::Error::WorkerDied) or
//!   [`Error::WorkerPanicked`](crate::Error::WorkerPanicked), and the agent starts a
//!   replacement. An agent *rank* that dies ends the whole job within seconds: that is the MPI
//!   launcher's behaviour (`mpiexec` and `srun` kill every rank when one dies), so a pool never
//!   hangs waiting for a node that is gone; rank 0's workers die with it.
//! - **Worker ids.** [`Pool::worker_pids`](crate::Pool::worker_pids) lists process ids on the
//!   agents' machines.
//!
//! Process hygiene: each rank starts its fork server before `MPI_Init`; worker processes never
//! call MPI and inherit neither the launcher's variables (`PMI_*`, `PMIX_*`, `HYDRA_*`,
//! `OMPI_*`) nor its descriptors, so the `Fork` start method is refused for cluster workers.
//! All MPI calls go through one thread per rank, which backs off from polling when idle: an
//! idle agent costs well under 1 % of a core (see docs/PERFORMANCE.md).
//!
//! How bytes travel: on rank 0 a remote worker's stream stays in memory between the pool's
//! scheduler and the MPI thread (no socket), and a long job's items are sent from the buffer
//! the task keeps them in. On a node agent, long jobs (64 KiB or more) and long answers cross
//! between the agent and its worker in two areas of shared memory, received from MPI into one
//! and sent to MPI from the other, made for a worker when its first long job arrives: 32 MiB per
//! worker that moves long messages, reserved on its node (a worker that only gets short jobs
//! costs nothing). A message that does not fit takes the worker's socket.

mod agent;
mod fingerprint;
mod head;
mod launch_env;
mod messages;
mod mpi_io;
mod outbox;
mod relay;
mod remote;
pub(crate) mod session;
mod wake;

use std::sync::Arc;

use crate::pool::Backend;

/// The ranks of the MPI job this program was launched in, as a pool [`Backend`]: rank 0 runs
/// `main`, the others are node agents whose workers run the pool's tasks.
#[derive(Debug, Clone, Copy)]
pub struct Mpi {
    _private: (),
}

impl Mpi {
    /// Every rank of the job (`MPI_COMM_WORLD`). Building a pool on it fails with
    /// [`Error::NoClusterPeers`](crate::Error::NoClusterPeers) outside an MPI job or with a
    /// single rank.
    pub fn world() -> Mpi {
        Mpi { _private: () }
    }
}

impl From<Mpi> for Backend {
    fn from(_: Mpi) -> Backend {
        Backend::remote(Arc::new(remote::MpiBackend { auto: false }))
    }
}

/// [`Mpi::world()`] when the program was launched as an MPI job of at least two ranks, a
/// local pool otherwise: the same program runs on a laptop and on a cluster. A local pool has
/// the builder's `processes`; a cluster pool `processes_per_node` on each agent.
#[derive(Debug, Clone, Copy)]
pub struct Auto;

impl From<Auto> for Backend {
    fn from(_: Auto) -> Backend {
        Backend::remote(Arc::new(remote::MpiBackend { auto: true }))
    }
}

/// Test support: makes this process's registry differ by `line` when agents compare them.
pub(crate) fn skew_registry(line: &str) {
    fingerprint::skew(line);
}
