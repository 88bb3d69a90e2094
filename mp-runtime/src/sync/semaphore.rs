//! `Semaphore` and `BoundedSemaphore`: counters shared between processes.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::futex;
use super::object::{Header, Object};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;

#[repr(C)]
pub(crate) struct SemHeader {
    value: AtomicU32,
    sleepers: AtomicU32,
    /// The bound of a BoundedSemaphore; `u32::MAX` for a plain one.
    max: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl Header for SemHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-sema1");
    const KIND: &'static std::ffi::CStr = c"mp-semaphore";
}

#[derive(Clone, Serialize, Deserialize)]
struct Sem {
    obj: Object<SemHeader>,
}

impl Sem {
    fn create(value: u32, max: u32) -> Result<Sem> {
        Ok(Sem {
            obj: Object::create(0, |o| {
                let h: &SemHeader = o.header();
                h.value.store(value, Ordering::Relaxed);
                h.max.store(max, Ordering::Relaxed);
            })?,
        })
    }

    fn h(&self) -> &SemHeader {
        self.obj.header()
    }

    fn try_take(&self) -> bool {
        let value = &self.h().value;
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn acquire_until(&self, deadline: Deadline) -> bool {
        let h = self.h();
        loop {
            if self.try_take() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            // Announce the sleep before checking the value in the kernel; a releaser increments
            // the value before reading `sleepers` (both SeqCst), so one of us sees the other.
            h.sleepers.fetch_add(1, Ordering::SeqCst);
            let woke = futex::wait(&h.value, 0, deadline);
            h.sleepers.fetch_sub(1, Ordering::SeqCst);
            if !woke {
                return self.try_take();
            }
        }
    }

    fn release(&self, what: &str) -> Result<()> {
        let h = self.h();
        let max = h.max.load(Ordering::Relaxed);
        let mut v = h.value.load(Ordering::Relaxed);
        loop {
            if v >= max {
                return Err(Error::state(if max == u32::MAX {
                    format!("{what} released too many times: its value would overflow")
                } else {
                    format!("{what} released too many times: its value is already its bound {max}")
                }));
            }
            match h
                .value
                .compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if h.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&h.value, 1);
        }
        Ok(())
    }

    fn value(&self) -> u32 {
        self.h().value.load(Ordering::Relaxed)
    }
}

macro_rules! semaphore_methods {
    () => {
        /// Takes one unit, waiting while the value is zero.
        pub fn acquire(&self) {
            self.0.acquire_until(Deadline::NEVER);
        }

        /// Takes one unit if the value is above zero now; false otherwise.
        pub fn try_acquire(&self) -> bool {
            self.0.try_take()
        }

        /// Takes one unit, waiting at most `timeout`; false if none became available.
        pub fn acquire_timeout(&self, timeout: Duration) -> bool {
            self.0.acquire_until(Deadline::after(Some(timeout)))
        }

        /// The current value (Python's `get_value()`, available on every platform).
        pub fn get_value(&self) -> u32 {
            self.0.value()
        }
    };
}

/// A counting semaphore shared between processes (Python's `multiprocessing.Semaphore`).
///
/// Units taken by a process that dies are not given back (a semaphore has no owner).
///
/// ```
/// let s = mp::Semaphore::new(1)?;
/// assert!(s.try_acquire());
/// assert!(!s.try_acquire());
/// s.release()?;
/// s.release()?; // a plain semaphore may go above its initial value
/// assert_eq!(s.get_value(), 2);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Semaphore(Sem);

impl Semaphore {
    /// A semaphore with initial value `value`.
    pub fn new(value: u32) -> Result<Semaphore> {
        Sem::create(value, u32::MAX).map(Semaphore)
    }

    semaphore_methods!();

    /// Gives one unit back, waking one waiter. Fails only if the value would overflow `u32`.
    pub fn release(&self) -> Result<()> {
        self.0.release("Semaphore")
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Semaphore(value={})>", self.0.value())
    }
}

/// A semaphore that may not be released above its initial value (Python's
/// `BoundedSemaphore`, whose check is missing on macOS; here it always holds).
///
/// ```
/// let s = mp::BoundedSemaphore::new(1)?;
/// s.acquire();
/// s.release()?;
/// assert!(matches!(s.release(), Err(mp::Error::InvalidState { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct BoundedSemaphore(Sem);

impl BoundedSemaphore {
    /// A bounded semaphore with initial (and maximum) value `value`.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Sem::create(value, value).map(BoundedSemaphore)
    }

    semaphore_methods!();

    /// Gives one unit back; [`Error::InvalidState`] if the value is already at its bound.
    pub fn release(&self) -> Result<()> {
        self.0.release("BoundedSemaphore")
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<BoundedSemaphore(value={}, maxvalue={})>",
            self.0.value(),
            self.0.h().max.load(Ordering::Relaxed)
        )
    }
}
