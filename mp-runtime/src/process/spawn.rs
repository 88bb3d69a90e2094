//! The `Spawn` start method: posix_spawn of this same binary.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use super::child::Waiter;
use super::launcher;
use super::worker_child::ENV_CHILD;
use crate::error::{Error, Result};
use crate::sys::pidfd::PidFd;
use crate::sys::posix_spawn;

/// Every variable that tells a process of this binary to take a role (`roles.rs`) starts with
/// this; a spawned process never inherits one from its parent, only gets the one it is given.
pub(crate) const ROLE_ENV_PREFIX: &str = "MP_RUNTIME_";

/// Variables a spawned process never inherits: the role variables, and those through which an
/// MPI launcher (MPICH's Hydra, PMIx, Open MPI) tells a process that it is a rank. A process of
/// `mp` is never a rank: with them, an MPI library in it would try to join the job (and its
/// `PMI_FD` names a descriptor it does not have).
const NOT_INHERITED: &[&str] = &[
    ROLE_ENV_PREFIX,
    "PMI_",
    "PMIX_",
    "HYDRA_",
    "OMPI_",
    "MPI_LOCAL",
];

/// The descriptor number the child finds its bootstrap socket at.
pub(crate) const CHILD_FD: i32 = 3;

/// Starts a copy of this binary that will run the bootstrap protocol on `child_end`.
pub(crate) fn start(child_end: OwnedFd) -> Result<(i32, Waiter)> {
    launcher::run(move || {
        let env = (ENV_CHILD, format!("{CHILD_FD}:{}", std::process::id()));
        let pid = spawn_self(&[env], &[(child_end, CHILD_FD)])?;
        let pidfd = PidFd::open(pid).map_err(|e| Error::io("pidfd_open", e))?;
        Ok((pid, Waiter::Direct(pidfd)))
    })?
}

/// posix_spawn of `/proc/self/exe` with the current environment plus `extra`, and exactly the
/// given descriptors (plus stdout and stderr; stdin is /dev/null).
pub(crate) fn spawn_self(extra: &[(&str, String)], fds: &[(OwnedFd, i32)]) -> Result<i32> {
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("mp-child"));
    let argv = vec![cstring(argv0.into_vec())?];
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        let k_bytes = k.as_encoded_bytes();
        if NOT_INHERITED
            .iter()
            .any(|p| k_bytes.starts_with(p.as_bytes()))
        {
            continue;
        }
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        envp.push(cstring(kv)?);
    }
    for (k, v) in extra {
        envp.push(cstring(format!("{k}={v}").into_bytes())?);
    }
    let borrowed: Vec<_> = fds.iter().map(|(fd, n)| (fd.as_fd(), *n)).collect();
    posix_spawn::spawn(c"/proc/self/exe", &argv, &envp, &borrowed)
        .map_err(|e| Error::io("posix_spawn", e))
}

fn cstring(bytes: Vec<u8>) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::InvalidArgument {
        message: "an argument or environment variable contains a NUL byte".into(),
    })
}
