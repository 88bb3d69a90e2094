//! Who this process is: name, identity, daemon flag, authkey, parent. Python's
//! `current_process()` and `parent_process()`.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::global::Global;
use crate::start_method::{self, StartMethod};
use crate::sys::pidfd::PidFd;
use crate::sys::poll::{Deadline, readable};

/// What a parent tells a child about itself, in the bootstrap message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChildIdentity {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) authkey: Vec<u8>,
    pub(crate) parent_pid: i32,
    pub(crate) parent_name: String,
    pub(crate) start_method: StartMethod,
    pub(crate) default_method: StartMethod,
    /// The parent's [`max_decode_depth`](crate::max_decode_depth).
    pub(crate) max_decode_depth: u32,
}

impl ChildIdentity {
    /// What this process tells a new child: the given name, identity, daemon flag and method,
    /// plus this process's authkey, pid, name and default start method.
    pub(crate) fn for_child(
        name: String,
        identity: Vec<u32>,
        daemon: bool,
        start_method: StartMethod,
    ) -> Self {
        ChildIdentity {
            name,
            identity,
            daemon,
            authkey: authkey(),
            parent_pid: std::process::id() as i32,
            parent_name: self::name(),
            start_method,
            default_method: start_method::get_start_method(),
            max_decode_depth: crate::codec::max_decode_depth(),
        }
    }
}

struct State {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    authkey: Option<Vec<u8>>,
    parent: Option<(i32, String)>,
    start_method: Option<StartMethod>,
}

fn main_state() -> State {
    State {
        name: "MainProcess".into(),
        identity: Vec::new(),
        daemon: false,
        authkey: None,
        parent: None,
        start_method: None,
    }
}

static STATE: Global<State> = Global::new(main_state);
static PARENT_PIDFD: Global<Option<std::sync::Arc<PidFd>>> = Global::new(|| None);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Installs the identity a child received from its parent.
pub(crate) fn install(id: &ChildIdentity) {
    STATE.reset();
    PARENT_PIDFD.reset();
    COUNTER.store(0, Ordering::Relaxed);
    {
        let mut s = STATE.lock();
        s.name = id.name.clone();
        s.identity = id.identity.clone();
        s.daemon = id.daemon;
        s.authkey = Some(id.authkey.clone());
        s.parent = Some((id.parent_pid, id.parent_name.clone()));
        s.start_method = Some(id.start_method);
    }
    // Open the parent's pidfd now, while it is certainly alive (it just sent us our bootstrap).
    if let Ok(fd) = PidFd::open(id.parent_pid) {
        *PARENT_PIDFD.lock() = Some(std::sync::Arc::new(fd));
    }
    start_method::inherit_default(id.default_method);
    crate::codec::inherit_max_decode_depth(id.max_decode_depth);
}

/// The identity a new child of this process gets: `Process-1`, `Process-1:2`, …
pub(crate) fn next_child_identity() -> (Vec<u32>, String) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    let mut identity = STATE.lock().identity.clone();
    identity.push(n);
    let name = format!(
        "Process-{}",
        identity
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    (identity, name)
}

/// This process's authkey: inherited from the parent, or 32 random bytes in the main process.
pub(crate) fn authkey() -> Vec<u8> {
    let mut s = STATE.lock();
    s.authkey
        .get_or_insert_with(|| {
            let mut k = vec![0u8; 32];
            crate::sys::random_bytes(&mut k).expect("getrandom failed");
            k
        })
        .clone()
}

/// Replaces this process's authkey (Python: `current_process().authkey = key`). Children started
/// afterwards inherit the new key; connections to the fork server use it from now on.
pub fn set_authkey(key: impl Into<Vec<u8>>) {
    STATE.lock().authkey = Some(key.into());
}

/// Whether this process is a daemon (children inherit the flag as their default).
pub(crate) fn is_daemon() -> bool {
    STATE.lock().daemon
}

/// A description of the current process, as Python's `current_process()` gives.
#[derive(Clone)]
pub struct CurrentProcess {
    name: String,
    pid: i32,
    daemon: bool,
    authkey: Vec<u8>,
    identity: Vec<u32>,
    start_method: Option<StartMethod>,
}

impl CurrentProcess {
    /// `"MainProcess"` in the main process; in a child, the name its parent gave it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The OS process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }
    /// Python's `ident`: the same as `pid`.
    pub fn ident(&self) -> i32 {
        self.pid
    }
    /// Whether this process is a daemon.
    pub fn daemon(&self) -> bool {
        self.daemon
    }
    /// The authentication key, shared with the whole process tree unless changed.
    pub fn authkey(&self) -> &[u8] {
        &self.authkey
    }
    /// Python's `_identity`: empty in the main process, `[1, 2]` for `Process-1:2`.
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }
    /// How this process was started; `None` in the main process.
    pub fn start_method(&self) -> Option<StartMethod> {
        self.start_method
    }
    /// Always true: the current process is running.
    pub fn is_alive(&self) -> bool {
        true
    }
    /// Always `None`: the current process has not exited.
    pub fn exitcode(&self) -> Option<i32> {
        None
    }
}

impl fmt::Debug for CurrentProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentProcess")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

/// The process this code runs in (Python's `multiprocessing.current_process()`).
///
/// ```
/// let me = mp::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id() as i32);
/// assert!(me.is_alive() && me.exitcode().is_none());
/// ```
pub fn current_process() -> CurrentProcess {
    let authkey = authkey();
    let s = STATE.lock();
    CurrentProcess {
        name: s.name.clone(),
        pid: std::process::id() as i32,
        daemon: s.daemon,
        authkey,
        identity: s.identity.clone(),
        start_method: s.start_method,
    }
}

/// The process that started this one, seen from the child (Python's `parent_process()`).
#[derive(Clone)]
pub struct ParentProcess {
    pid: i32,
    name: String,
    pidfd: Option<std::sync::Arc<PidFd>>,
}

impl ParentProcess {
    /// The parent's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }
    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        !self.join_timeout(Duration::ZERO)
    }
    /// Waits up to `timeout` for the parent to exit; true if it has.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        match &self.pidfd {
            Some(fd) => readable(fd.as_fd(), Deadline::after(Some(timeout))).unwrap_or(true),
            None => true,
        }
    }
    /// A descriptor that becomes readable when the parent exits (for `connection::wait`).
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|p| p.as_fd())
    }
}

impl fmt::Debug for ParentProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParentProcess")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .finish()
    }
}

/// The parent of this process, `None` in the main process (Python's `parent_process()`).
///
/// ```
/// assert!(mp::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let parent = STATE.lock().parent.clone()?;
    Some(ParentProcess {
        pid: parent.0,
        name: parent.1,
        pidfd: PARENT_PIDFD.lock().clone(),
    })
}

/// The name of this process, for the identity of its children.
pub(crate) fn name() -> String {
    STATE.lock().name.clone()
}

/// The number of CPUs usable by this process (at least 1).
///
/// ```
/// assert!(mp::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
