//! Where a rank of an MPI job takes its part, at `#[mp::main]` (a row of the role table,
//! `roles.rs`): rank 0 runs `main` with an MPI thread beside it, every other rank becomes a
//! node agent and never runs `main`.
//!
//! Order matters for process hygiene: the fork server starts first, before `MPI_Init`, as a
//! fresh copy of the binary whose environment has none of the launcher's variables and whose
//! descriptors are only its own (`process::spawn`), so no worker process it forks ever sees
//! the rank's MPI state, `PMI_*`/`PMIX_*`/`HYDRA_*`/`OMPI_*` variables or PMI descriptor. Then
//! one thread initializes MPI and is the only one that calls it, for as long as the process
//! runs.

use std::sync::mpsc;

use super::mpi_io::Comm;
use super::{agent, head, launch_env};

/// The role table's entry: `None` outside an MPI job; on rank 0, what to do when `main`
/// ends; on any other rank, serves as a node agent and exits with rank 0's exit code.
pub(crate) fn enter_at_main() -> Option<Box<dyn FnOnce(i32)>> {
    if !launch_env::launched_as_rank() {
        return None;
    }
    if let Err(e) = crate::process::forkserver::handshake_only(&crate::identity::authkey()) {
        // Workers then start it later (or use another start method); MPI still works.
        crate::sys::stderr_line(&format!(
            "mp: the fork server could not be started before MPI: {e}"
        ));
    }
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("mp-mpi".into())
        .spawn(move || -> i32 {
            let mut comm = match Comm::init() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return 1;
                }
            };
            if comm.rank == 0 {
                match head::Head::new(comm.size) {
                    Ok(h) => {
                        let _ = tx.send(Ok(Some(h.clone())));
                        head::run(comm, h);
                        0
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        1
                    }
                }
            } else {
                let _ = tx.send(Ok(None));
                agent::serve(&mut comm)
            }
        });
    let thread = match thread {
        Ok(t) => t,
        Err(e) => fail(&format!("cannot start the MPI thread: {e}")),
    };
    match rx.recv() {
        Ok(Ok(Some(head))) => {
            head::install(head.clone());
            Some(Box::new(move |code| {
                head.finish(code);
                let _ = thread.join();
            }))
        }
        Ok(Ok(None)) => {
            // A node agent: serves until rank 0's main ends, then exits with its code.
            let code = thread.join().unwrap_or(70);
            crate::process::children::shutdown();
            std::process::exit(code)
        }
        Ok(Err(e)) => fail(&format!("MPI could not be initialized: {e}")),
        Err(_) => fail("the MPI thread failed while initializing MPI"),
    }
}

fn fail(message: &str) -> ! {
    crate::sys::stderr_line(&format!("mp: {message}"));
    std::process::exit(1)
}
