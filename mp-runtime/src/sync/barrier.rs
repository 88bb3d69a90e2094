//! `Barrier`: a rendezvous of a fixed number of parties, in any processes.
//!
//! The state machine is Python's `threading.Barrier` (filling → draining → filling, with
//! resetting and broken), kept in shared memory under a robust lock; waiters sleep on a sequence
//! word that every state change bumps.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::object::{Header, Object};
use super::{futex, robust};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;
use crate::worker::Worker;

const FILLING: u32 = 0;
const DRAINING: u32 = 1;
const RESETTING: u32 = 2;
const BROKEN: u32 = 3;
/// Room for the action's registered name.
const MAX_ACTION_NAME: usize = 1024;

#[repr(C)]
pub(crate) struct BarrierHeader {
    lock: robust::Word,
    seq: AtomicU32,
    parties: AtomicU32,
    count: AtomicU32,
    state: AtomicU32,
    action_len: AtomicU32,
    /// Default timeout in nanoseconds; `u64::MAX` for none.
    timeout_ns: AtomicU64,
}

// SAFETY: atomics only.
unsafe impl Header for BarrierHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-barr2");
    const KIND: &'static std::ffi::CStr = c"mp-barrier";
}

/// A barrier for `parties` threads or processes (Python's `multiprocessing.Barrier`): each
/// [`wait`](Barrier::wait) blocks until all parties have called it, then all are released.
///
/// `wait` returns the party's arrival index, `0..parties`, different for each party of a round.
/// A party that times out, an [`abort`](Barrier::abort) or a [`reset`](Barrier::reset) breaks
/// the barrier: current and later waiters get [`Error::BrokenBarrier`] until it is reset.
///
/// ```
/// let b = mp::Barrier::new(1)?;
/// assert_eq!(b.wait()?, 0); // a single party passes at once
/// b.abort();
/// assert!(matches!(b.wait(), Err(mp::Error::BrokenBarrier)));
/// b.reset();
/// assert_eq!(b.wait()?, 0);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Barrier {
    obj: Object<BarrierHeader>,
}

/// Options of a [`Barrier`]: an action and a default timeout.
#[derive(Debug, Clone, Default)]
pub struct BarrierBuilder {
    parties: u32,
    action: Option<&'static str>,
    timeout: Option<Duration>,
}

impl BarrierBuilder {
    /// A `#[mp::worker]` function without arguments that the last party to arrive runs once per
    /// round, before the others are released (Python's `action`). Any process can be that party,
    /// so the action is a registered worker, found by name. If it panics or returns `Err`, the
    /// barrier breaks. Default: none.
    pub fn action<W: Worker<Args = ()>>(mut self, action: W) -> Self {
        self.action = Some(action.name());
        self
    }

    /// The timeout of a [`wait`](Barrier::wait) without one of its own (Python's `timeout`).
    /// Default: none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Creates the barrier. Zero parties is [`Error::InvalidArgument`].
    pub fn build(self) -> Result<Barrier> {
        if self.parties == 0 {
            return Err(Error::InvalidArgument {
                message: "a barrier needs at least one party".into(),
            });
        }
        let name = self.action.unwrap_or("").as_bytes();
        if name.len() > MAX_ACTION_NAME {
            return Err(Error::InvalidArgument {
                message: format!("barrier action name longer than {MAX_ACTION_NAME} bytes"),
            });
        }
        let timeout_ns = self
            .timeout
            .map_or(u64::MAX, |t| t.as_nanos().min(u64::MAX as u128 - 1) as u64);
        let obj = Object::create(MAX_ACTION_NAME, |o: &Object<BarrierHeader>| {
            let h = o.header();
            h.parties.store(self.parties, Ordering::Relaxed);
            h.timeout_ns.store(timeout_ns, Ordering::Relaxed);
            h.action_len.store(name.len() as u32, Ordering::Relaxed);
            // SAFETY: the data area is MAX_ACTION_NAME >= name.len() bytes, not yet shared.
            unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), o.data_ptr(), name.len()) };
        })?;
        Ok(Barrier { obj })
    }
}

/// Holds the barrier's internal lock.
struct Held<'a>(&'a Barrier);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        robust::unlock(&self.0.h().lock);
    }
}

impl Barrier {
    /// A barrier for `parties` parties, without action or default timeout.
    pub fn new(parties: u32) -> Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// A barrier with options: `Barrier::builder(5).timeout(d).action(worker).build()`.
    pub fn builder(parties: u32) -> BarrierBuilder {
        BarrierBuilder {
            parties,
            ..BarrierBuilder::default()
        }
    }

    fn h(&self) -> &BarrierHeader {
        self.obj.header()
    }

    /// Takes the internal lock. A party that died holding it leaves the state unknown: the
    /// barrier is broken.
    fn hold(&self) -> Held<'_> {
        let h = self.h();
        if robust::lock(&h.lock, Deadline::NEVER) == Some(robust::Acquired::OwnerDied) {
            h.state.store(BROKEN, Ordering::Relaxed);
            self.notify_all();
        }
        Held(self)
    }

    fn notify_all(&self) {
        self.h().seq.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.h().seq);
    }

    /// Releases the lock, sleeps until a state change or the deadline, takes the lock again.
    /// False if the deadline passed.
    fn sleep(&self, held: Held<'_>, deadline: Deadline) -> (Held<'_>, bool) {
        let seq = self.h().seq.load(Ordering::SeqCst);
        drop(held);
        let woke = futex::wait(&self.h().seq, seq, deadline);
        (self.hold(), woke || !deadline.passed())
    }

    fn state(&self) -> u32 {
        self.h().state.load(Ordering::Relaxed)
    }

    /// Waits for every party (or the barrier's default timeout, if it has one). Returns the
    /// arrival index; [`Error::BrokenBarrier`] if the barrier breaks.
    pub fn wait(&self) -> Result<usize> {
        let ns = self.h().timeout_ns.load(Ordering::Relaxed);
        let timeout = (ns != u64::MAX).then(|| Duration::from_nanos(ns));
        self.wait_until(Deadline::after(timeout))
    }

    /// Waits at most `timeout`; a party that times out breaks the barrier for everyone and gets
    /// [`Error::BrokenBarrier`] itself.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_until(Deadline::after(Some(timeout)))
    }

    fn wait_until(&self, deadline: Deadline) -> Result<usize> {
        let h = self.h();
        let mut held = self.hold();
        // Wait for a previous round to drain or a reset to finish.
        while matches!(self.state(), DRAINING | RESETTING) {
            held = self.sleep(held, Deadline::NEVER).0;
        }
        if self.state() == BROKEN {
            return Err(Error::BrokenBarrier);
        }
        let index = h.count.fetch_add(1, Ordering::Relaxed);
        let result = if index + 1 == h.parties.load(Ordering::Relaxed) {
            self.trip()
        } else {
            let (again, r) = self.await_trip(held, deadline);
            held = again;
            r
        };
        h.count.fetch_sub(1, Ordering::Relaxed);
        if h.count.load(Ordering::Relaxed) == 0 && matches!(self.state(), DRAINING | RESETTING) {
            h.state.store(FILLING, Ordering::Relaxed);
            self.notify_all();
        }
        drop(held);
        result.map(|()| index as usize)
    }

    /// The last party: runs the action, then releases everyone.
    fn trip(&self) -> Result<()> {
        let h = self.h();
        if let Err(e) = self.run_action() {
            h.state.store(BROKEN, Ordering::Relaxed);
            self.notify_all();
            return Err(e);
        }
        h.state.store(DRAINING, Ordering::Relaxed);
        self.notify_all();
        Ok(())
    }

    fn run_action(&self) -> Result<()> {
        let len = (self.h().action_len.load(Ordering::Relaxed) as usize).min(MAX_ACTION_NAME);
        if len == 0 {
            return Ok(());
        }
        let mut name = vec![0u8; len];
        // SAFETY: the data area holds MAX_ACTION_NAME >= len bytes written once at creation.
        unsafe { std::ptr::copy_nonoverlapping(self.obj.data_ptr(), name.as_mut_ptr(), len) };
        let name = String::from_utf8_lossy(&name).into_owned();
        let entry = crate::registry::find(&name)?;
        let input = crate::worker::Input {
            bytes: &[],
            fds: Vec::new(),
            batch: false,
        };
        match std::panic::catch_unwind(|| entry(input)) {
            Ok(crate::worker::Outcome::Returned { .. }) => Ok(()),
            Ok(_) | Err(_) => Err(Error::BrokenBarrier),
        }
    }

    fn await_trip<'a>(&'a self, mut held: Held<'a>, deadline: Deadline) -> (Held<'a>, Result<()>) {
        while self.state() == FILLING {
            let (again, in_time) = self.sleep(held, deadline);
            held = again;
            if !in_time && self.state() == FILLING {
                self.h().state.store(BROKEN, Ordering::Relaxed);
                self.notify_all();
                return (held, Err(Error::BrokenBarrier));
            }
        }
        let r = if self.state() == DRAINING {
            Ok(())
        } else {
            Err(Error::BrokenBarrier)
        };
        (held, r)
    }

    /// Breaks the barrier: every current and future waiter gets [`Error::BrokenBarrier`] until
    /// [`reset`](Barrier::reset).
    pub fn abort(&self) {
        let _held = self.hold();
        self.h().state.store(BROKEN, Ordering::Relaxed);
        self.notify_all();
    }

    /// Returns the barrier to its initial state. Parties waiting now get
    /// [`Error::BrokenBarrier`].
    pub fn reset(&self) {
        let h = self.h();
        let _held = self.hold();
        if h.count.load(Ordering::Relaxed) > 0 {
            if matches!(self.state(), FILLING | BROKEN) {
                h.state.store(RESETTING, Ordering::Relaxed);
            }
        } else {
            h.state.store(FILLING, Ordering::Relaxed);
        }
        self.notify_all();
    }

    /// The number of parties needed to pass.
    pub fn parties(&self) -> usize {
        self.h().parties.load(Ordering::Relaxed) as usize
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> usize {
        let _held = self.hold();
        if self.state() == FILLING {
            self.h().count.load(Ordering::Relaxed) as usize
        } else {
            0
        }
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.state() == BROKEN
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Barrier(parties={}, waiting={}, broken={})>",
            self.parties(),
            self.h().count.load(Ordering::Relaxed),
            self.is_broken()
        )
    }
}
