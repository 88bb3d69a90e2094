//! The same pool on one machine or on an MPI cluster (`features = ["mpi"]`).
//!
//! ```text
//! cargo build --release --features mpi --example cluster
//! mpiexec.mpich -n 3 target/release/examples/cluster            # rank 0 + 2 node agents
//! srun --mpi=pmi2 -N 2 -n 3 target/release/examples/cluster     # the same under Slurm
//! cargo run --release --features mpi --example cluster          # no launcher: a local pool
//! ```
//!
//! Rank 0 runs `main`; every other rank serves as a node agent with two worker processes
//! (`processes_per_node(2)`). Without MPI (or built without the feature), `mp::cluster::Auto`
//! falls back to a local pool, so the program runs anywhere.

/// Sums `0..n` the slow way, so that there is some work to spread.
#[mp::worker]
fn slow_sum(n: u64) -> (u64, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    (
        (0..n).fold(0u64, |a, b| a.wrapping_add(b)),
        host.trim().to_owned(),
    )
}

#[cfg(feature = "mpi")]
fn builder() -> mp::PoolBuilder {
    mp::Pool::builder()
        .backend(mp::cluster::Auto)
        .processes(2)
        .processes_per_node(2)
}

#[cfg(not(feature = "mpi"))]
fn builder() -> mp::PoolBuilder {
    println!(
        "built without the `mpi` feature: a local pool. For a cluster:\n  \
         cargo build --release --features mpi --example cluster\n  \
         mpiexec.mpich -n 3 target/release/examples/cluster"
    );
    mp::Pool::builder().processes(2)
}

#[mp::main]
fn main() -> mp::Result<()> {
    let pool = builder().build()?;
    println!("{pool:?}: {} worker processes", pool.processes());
    let results = pool.map_chunked(slow_sum, (0..64).map(|i| 100_000 + i), 4)?;
    let mut hosts: Vec<&str> = results.iter().map(|(_, h)| h.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    let total = results.iter().fold(0u64, |a, (s, _)| a.wrapping_add(*s));
    println!(
        "64 tasks on {} host(s) {hosts:?}: checksum {total}",
        hosts.len()
    );
    pool.close();
    pool.join()
}
