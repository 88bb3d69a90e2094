//! `Event`: a flag shared between processes that threads can wait for.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::futex;
use super::object::{Header, Object};
use crate::error::Result;
use crate::sys::poll::Deadline;

/// Bit 0 of the word: the flag. The other bits count the `set`s that found it clear, so that a
/// waiter sees a `set` even if a `clear` followed before it woke up.
const SET: u32 = 1;
const GENERATION: u32 = 2;

#[repr(C)]
pub(crate) struct EventHeader {
    /// The flag and the generation (see [`SET`]).
    word: AtomicU32,
}

// SAFETY: one atomic.
unsafe impl Header for EventHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-evnt2");
    const KIND: &'static std::ffi::CStr = c"mp-event";
}

/// A flag shared between processes (Python's `multiprocessing.Event`): [`set`](Event::set)
/// wakes every waiter, [`clear`](Event::clear) resets it. A thread waiting when `set` is called
/// returns true even if `clear` follows at once (as in Python's `threading.Event`).
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

    fn word(&self) -> &AtomicU32 {
        &self.obj.header().word
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.word().load(Ordering::Acquire) & SET != 0
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        let was = self
            .word()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & SET == 0).then_some(w.wrapping_add(GENERATION) | SET)
            });
        if was.is_ok() {
            futex::wake_all(self.word());
        }
    }

    /// Clears the flag: later waits block until the next `set`.
    pub fn clear(&self) {
        self.word().fetch_and(!SET, Ordering::AcqRel);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_until(Deadline::NEVER);
    }

    /// Waits at most `timeout` for the flag; returns whether it was set (now, or by a `set`
    /// during the wait that a `clear` undid).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        let start = self.word().load(Ordering::Acquire);
        let mut seen = start;
        loop {
            if seen & SET != 0 || seen != start {
                return true;
            }
            let in_time = futex::wait(self.word(), seen, deadline);
            seen = self.word().load(Ordering::Acquire);
            if !in_time {
                return seen & SET != 0 || seen != start;
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
