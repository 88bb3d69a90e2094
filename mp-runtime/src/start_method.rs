//! Start methods: how a child process comes to be, and which one this program uses by default.
//!
//! This sits below everything that starts or describes processes (identity, process, context),
//! so none of them needs another to name a method.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a child process is created.
///
/// | method | what happens | Python |
/// |---|---|---|
/// | `Spawn` | posix_spawn of this same binary (vfork semantics: cost independent of the parent's memory); the child enters the worker before `main` runs | `"spawn"` |
/// | `Fork` | fork(2) of the parent, which keeps its memory; warns once if other threads exist | `"fork"` |
/// | `ForkServer` (default) | a single-threaded server process, started on first use, forks children on request | `"forkserver"` |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// Start a fresh copy of this binary.
    Spawn,
    /// Fork the calling process.
    Fork,
    /// Ask the fork server to fork a child.
    ForkServer,
}

impl StartMethod {
    /// Python's name of the method: `"spawn"`, `"fork"` or `"forkserver"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
            StartMethod::ForkServer => "forkserver",
        }
    }

    fn code(self) -> u8 {
        match self {
            StartMethod::Spawn => 1,
            StartMethod::Fork => 2,
            StartMethod::ForkServer => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(StartMethod::Spawn),
            2 => Some(StartMethod::Fork),
            3 => Some(StartMethod::ForkServer),
            _ => None,
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StartMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "fork" => Ok(StartMethod::Fork),
            "forkserver" => Ok(StartMethod::ForkServer),
            other => Err(Error::InvalidArgument {
                message: format!(
                    "unknown start method `{other}`; expected \"spawn\", \"fork\" or \"forkserver\""
                ),
            }),
        }
    }
}

/// 0 = not chosen yet (default ForkServer); else `StartMethod::code`.
static DEFAULT: AtomicU8 = AtomicU8::new(0);
/// Whether `set_start_method` was called in this process.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// Sets the start method of this program's default context. Like Python, it may be called once;
/// a second call is [`Error::InvalidState`] (use [`set_start_method_force`] to change it again).
///
/// ```
/// mp::set_start_method(mp::StartMethod::Spawn)?;
/// assert_eq!(mp::get_start_method(), mp::StartMethod::Spawn);
/// assert!(matches!(mp::set_start_method(mp::StartMethod::Fork), Err(mp::Error::InvalidState { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
pub fn set_start_method(method: StartMethod) -> Result<()> {
    if CHOSEN.swap(1, Ordering::AcqRel) == 1 {
        return Err(Error::state(format!(
            "the start method was already set to `{}`; use set_start_method_force to change it, \
             or get_context for a context with another method",
            get_start_method()
        )));
    }
    DEFAULT.store(method.code(), Ordering::Release);
    Ok(())
}

/// Sets the default start method even if it was set before (Python's `force=True`).
pub fn set_start_method_force(method: StartMethod) {
    CHOSEN.store(1, Ordering::Release);
    DEFAULT.store(method.code(), Ordering::Release);
}

/// The start method of the default context: [`StartMethod::ForkServer`] unless set.
pub fn get_start_method() -> StartMethod {
    StartMethod::from_code(DEFAULT.load(Ordering::Acquire)).unwrap_or(StartMethod::ForkServer)
}

/// Every start method this platform supports, the default first.
pub fn get_all_start_methods() -> Vec<StartMethod> {
    vec![
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ]
}

/// A child inherits its parent's default method, without counting as having set it.
pub(crate) fn inherit_default(method: StartMethod) {
    DEFAULT.store(method.code(), Ordering::Release);
    CHOSEN.store(0, Ordering::Release);
}
