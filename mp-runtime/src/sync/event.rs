//! `Event`: a flag shared between processes that threads can wait for.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::futex;
use super::object::{Header, Object};
use crate::error::Result;
use crate::sys::poll::Deadline;

#[repr(C)]
pub(crate) struct EventHeader {
    flag: AtomicU32,
}

// SAFETY: one atomic.
unsafe impl Header for EventHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-evnt1");
    const KIND: &'static std::ffi::CStr = c"mp-event";
}

/// A flag shared between processes (Python's `multiprocessing.Event`): [`set`](Event::set)
/// wakes every waiter, [`clear`](Event::clear) resets it.
///
/// ```
/// use std::time::Duration;
/// let e = mp::Event::new()?;
/// assert!(!e.is_set());
/// assert!(!e.wait_timeout(Duration::from_millis(10)));
/// e.set();
/// assert!(e.wait_timeout(Duration::ZERO));
/// e.wait(); // returns at once
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    obj: Object<EventHeader>,
}

impl Event {
    /// A new, unset event.
    pub fn new() -> Result<Event> {
        Ok(Event {
            obj: Object::create(0, |_| {})?,
        })
    }

    fn flag(&self) -> &AtomicU32 {
        &self.obj.header().flag
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        if self.flag().swap(1, Ordering::AcqRel) == 0 {
            futex::wake_all(self.flag());
        }
    }

    /// Clears the flag: later waits block until the next `set`.
    pub fn clear(&self) {
        self.flag().store(0, Ordering::Release);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(Deadline::NEVER);
    }

    /// Waits at most `timeout` for the flag; returns whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            if !futex::wait(self.flag(), 0, deadline) {
                return self.is_set();
            }
        }
    }
}

impl fmt::Debug for Event {
    /// `<Event unset>` or `<Event set>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Event {}>", if self.is_set() { "set" } else { "unset" })
    }
}
