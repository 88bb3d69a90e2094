//! What an MPI launcher tells a process through its environment, read before MPI is
//! initialized: whether the process is a rank of an MPI job at all.
//!
//! MPICH's Hydra (`mpiexec`) and Slurm's PMI-2 plugin (`srun --mpi=pmi2`) set `PMI_RANK`, PMIx
//! launchers (`srun --mpi=pmix`, Open MPI's `prterun`) `PMIX_RANK`, Open MPI
//! `OMPI_COMM_WORLD_RANK`. Slurm's own `SLURM_PROCID` does not count: a task that `srun`
//! started without an MPI plugin would initialize MPI as a job of one, and every task would
//! run `main`.

/// The variables whose presence says "this process is a rank of an MPI job".
const RANK_VARIABLES: &[&str] = &["PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"];

/// Whether a launcher started this process as a rank of an MPI job.
pub(crate) fn launched_as_rank() -> bool {
    RANK_VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_runner_is_no_rank() {
        // `cargo test` is not started by an MPI launcher: the cluster stays out of the way.
        assert!(!super::launched_as_rank());
    }
}
