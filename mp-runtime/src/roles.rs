//! The roles a process of this binary can take, and the one place that enters them.
//!
//! Every process `mp` starts runs this same binary. What it becomes is decided here, before
//! `main`, by a constructor in `.init_array` (it runs after every dependent crate's `inventory`
//! registrations, because dependents are linked first, and before Rust's `main`, so before
//! libtest's or the user's): a variable `MP_RUNTIME_<ROLE>` in the environment names the role and
//! carries its descriptors; the constructor removes it and enters the role, which never returns.
//! A process with no such variable returns from here and runs `main` as usual.
//!
//! | role | entered through | module |
//! |---|---|---|
//! | worker child (`Spawn`) | `MP_RUNTIME_CHILD` | `process::worker_child` |
//! | fork server | `MP_RUNTIME_FORKSERVER` | `process::forkserver` |
//! | resource tracker | `MP_RUNTIME_TRACKER` | `shm::tracker` |
//! | pool worker | the internal worker `mp::pool::worker_loop`, run by a worker child | `pool::worker_loop` |
//! | manager server | the internal worker `mp::manager::server`, run by a worker child | `manager::server` |
//!
//! A process started by another launcher takes its role where `#[mp::main]` begins instead
//! (`enter_at_main`): that launcher, not `mp`, says what it is.
//!
//! | role | entered through | module |
//! |---|---|---|
//! | cluster node agent (`mpi` feature) | an MPI rank other than 0, at `#[mp::main]` | `cluster::session` |
//!
//! Fork and fork-server children skip the environment: they call
//! `process::worker_child::run_child` right after `fork`. The runtime's own workers are listed
//! here too and handed to the registry, which cannot name them itself.
//!
//! Nothing below this module imports it: adding a role means one row here and the role's own
//! module. What the roles share (running a worker child, dying with the parent, the start
//! method) lives below them.

use std::convert::Infallible;
use std::panic::catch_unwind;

#[cfg(feature = "mpi")]
use crate::cluster;
use crate::process::{forkserver, spawn::ROLE_ENV_PREFIX, worker_child};
use crate::registry::{self, InternalWorkers};
use crate::shm::tracker;
use crate::{manager, pool, sys};

/// A role a process can be started in through its environment.
struct Role {
    /// The variable that selects it; starts with [`ROLE_ENV_PREFIX`].
    env: &'static str,
    /// Becomes the role; returns only if the variable's value is malformed (the message says how).
    enter: fn(&str) -> Result<Infallible, String>,
}

const ROLES: &[Role] = &[
    Role {
        env: worker_child::ENV_CHILD,
        enter: worker_child::enter,
    },
    Role {
        env: forkserver::ENV_FORKSERVER,
        enter: forkserver::enter,
    },
    Role {
        env: tracker::ENV_TRACKER,
        enter: tracker::enter,
    },
];

/// Called with `main`'s exit code (101 if it panicked) once it has returned and this process's
/// children are joined, by a role entered at `main` whose process runs `main` (MPI rank 0).
pub(crate) type AtMainEnd = Box<dyn FnOnce(i32)>;

/// A role entered where `#[mp::main]` begins, for processes another launcher started.
struct MainRole {
    /// Becomes the role (never returns) if this process is to take it; otherwise returns, with
    /// what to do when `main` ends, if anything.
    enter: fn() -> Option<AtMainEnd>,
}

const MAIN_ROLES: &[MainRole] = &[
    #[cfg(feature = "mpi")]
    MainRole {
        enter: cluster::session::enter_at_main,
    },
];

/// The runtime's own workers, run by worker children like a user's `#[mp::worker]`.
const INTERNAL_WORKERS: InternalWorkers = &[
    (pool::worker_loop::WORKER_LOOP, pool::worker_loop::entry),
    (manager::server::SERVER_WORKER, manager::server::entry),
];

const _: () = {
    let mut i = 0;
    while i < ROLES.len() {
        assert!(
            starts_with(ROLES[i].env, ROLE_ENV_PREFIX),
            "a role's variable must start with ROLE_ENV_PREFIX, or spawned processes inherit it"
        );
        i += 1;
    }
};

const fn starts_with(s: &str, prefix: &str) -> bool {
    let (s, p) = (s.as_bytes(), prefix.as_bytes());
    if s.len() < p.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if s[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[used]
#[unsafe(link_section = ".init_array")]
static ENTER_ROLE_BEFORE_MAIN: extern "C" fn() = enter_role_before_main;

extern "C" fn enter_role_before_main() {
    // Unwinding out of an `extern "C"` function aborts; turn a panic into a clean exit.
    if catch_unwind(enter_if_requested).is_err() {
        sys::exit_now(70);
    }
}

/// If this process was started in one of `mp`'s roles, becomes it (never returns). Otherwise
/// returns at once. Runs before `main`, and again from `#[mp::main]` in case the constructor was
/// not linked in.
pub fn enter_if_requested() {
    registry::install_internal(INTERNAL_WORKERS);
    for role in ROLES {
        if let Some(value) = take_env(role.env) {
            let Err(message) = (role.enter)(&value);
            sys::stderr_line(&format!(
                "mp: {message}; {} is reserved for the processes mp starts",
                role.env
            ));
            sys::exit_now(1);
        }
    }
}

/// Enters the role another launcher gave this process, if any (never returns then); else
/// returns what must run when `main` ends. Called by `#[mp::main]` before the user's code.
pub fn enter_at_main() -> Vec<AtMainEnd> {
    MAIN_ROLES.iter().filter_map(|r| (r.enter)()).collect()
}

fn take_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok()?;
    // SAFETY: this runs before `main` from `.init_array` (or first thing in `#[mp::main]`) in a
    // process that `mp` started: no other thread exists yet that could read the environment.
    unsafe { std::env::remove_var(name) };
    Some(value)
}
