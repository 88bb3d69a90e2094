//! The bounds a server keeps so that no client, even one that knows the key, can exhaust it for
//! the others: connections (and so threads and blocked calls) per process, objects and
//! descriptors per process, and descriptors kept in reserve for new connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::manager::protocol::RemoteError;

/// The bounds per client process that the builder set; the server fills in the rest.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SessionLimitSettings {
    pub(crate) objects: Option<usize>,
    pub(crate) fds: Option<usize>,
    pub(crate) connections: Option<usize>,
}

/// What one client process (a session) may hold and open at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionLimits {
    /// Live objects it created.
    pub(crate) objects: usize,
    /// Descriptors the objects it created opened in the server (a queue opens 4).
    pub(crate) fds: usize,
    /// Connections at once: one per thread that calls the manager, and so the calls it can
    /// have blocked in the server.
    pub(crate) connections: usize,
}

impl SessionLimits {
    /// The settings, with defaults for what they leave out: a quarter of the connections,
    /// 100,000 objects, and half of the descriptors the server can give to objects.
    pub(crate) fn resolve(
        settings: SessionLimitSettings,
        max_connections: usize,
        descriptors: &Descriptors,
    ) -> Self {
        SessionLimits {
            objects: settings.objects.unwrap_or(100_000),
            fds: settings.fds.unwrap_or(descriptors.for_objects() / 2),
            connections: settings.connections.unwrap_or((max_connections / 4).max(1)),
        }
    }
}

/// The server's descriptors: its limit, and the part kept free for connections. Measured once,
/// when the server starts (after [`raise_descriptor_limit`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Descriptors {
    limit: usize,
    /// Two per connection (its socket and the server's copy used to tell it about shutdown)
    /// plus a margin, at most half of the limit.
    reserve: usize,
}

impl Descriptors {
    /// This process's descriptors, for a server of `max_connections`.
    pub(crate) fn measure(max_connections: usize) -> Self {
        let limit = descriptor_limit();
        Descriptors {
            limit,
            reserve: (2 * max_connections + 64).min(limit / 2),
        }
    }

    /// Descriptors objects may use in all: the limit less the reserve.
    pub(crate) fn for_objects(&self) -> usize {
        self.limit.saturating_sub(self.reserve)
    }

    /// How many descriptors this process has open, or an error if they already reach into
    /// the reserve (reads `/proc/self/fd`: for requests that may open some, not every call).
    pub(crate) fn spare(&self) -> Result<usize, RemoteError> {
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        if open >= self.for_objects() {
            return Err(RemoteError::Limit(format!(
                "the manager has no descriptors to spare (it keeps {} of its {} for \
                 connections); drop objects that hold descriptors, or raise the server's \
                 RLIMIT_NOFILE",
                self.reserve, self.limit
            )));
        }
        Ok(open)
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit: a server holds descriptors
/// for many clients, and the soft limit (often 1,024) is a default for programs that use
/// `select`, which the server does not.
pub(crate) fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The soft `RLIMIT_NOFILE` of this process.
fn descriptor_limit() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft).unwrap_or(usize::MAX),
        Err(_) => 1024,
    }
}

/// How many descriptors this process has open now.
pub(crate) fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Whether an accept failed because this process (or the system) has no descriptor to spare.
pub(crate) fn out_of_descriptors(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::EMFILE) | Some(libc::ENFILE)
        ),
        _ => false,
    }
}

/// Waits that grow from 1 ms to 100 ms while a failure repeats.
#[derive(Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(1);
    const MOST: Duration = Duration::from_millis(100);

    /// Sleeps the next wait (a backoff on a failing resource, not a synchronisation).
    pub(crate) fn wait(&mut self) {
        let d = self.next.unwrap_or(Self::FIRST);
        std::thread::sleep(d);
        self.next = Some((d * 2).min(Self::MOST));
    }

    /// The failure is over.
    pub(crate) fn reset(&mut self) {
        self.next = None;
    }
}

/// Counts one more admitted connection if fewer than `max` are; false if the server is full.
pub(crate) fn admit(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}
