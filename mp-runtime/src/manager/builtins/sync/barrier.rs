//! A managed barrier (Python's `manager.Barrier(parties)`).
//!
//! Each round is a *generation*: the last party to arrive ends it (tripped), as does a `reset`
//! (everyone waiting then gets `BrokenBarrier`). A party that times out, an `abort`, or a party
//! whose process died while it waited break the barrier until the next `reset`.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::Result;
use crate::manager::Manager;
use crate::manager::builtins::{
    Fail, Refused, Wait, answer, builtin, call_answer, call_answer_bounded, deadline, lock,
    proxy_type, wait_until,
};
use crate::manager::host::SessionWatch;
use crate::manager::managed::{Call, Managed, Out, Shared};
use crate::manager::protocol::RemoteError;

const WAIT: u16 = 0;
const ABORT: u16 = 1;
const RESET: u16 = 2;
const PARTIES: u16 = 3;
const N_WAITING: u16 = 4;
const BROKEN: u16 = 5;

struct State {
    parties: usize,
    /// Parties waiting in the current generation.
    count: usize,
    generation: u64,
    broken: bool,
    /// How ended generations ended (tripped or reset), with how many of their parties have not
    /// woken to read it yet.
    ended: HashMap<u64, (bool, usize)>,
}

impl State {
    /// Ends the current generation: its `waiting` parties are released (`tripped`) or broken.
    fn end_generation(&mut self, tripped: bool, waiting: usize) {
        if waiting > 0 {
            self.ended.insert(self.generation, (tripped, waiting));
        }
        self.generation += 1;
        self.count = 0;
        self.broken = false;
    }

    /// How generation `generation` ended, read by one of its parties.
    fn outcome(&mut self, generation: u64) -> bool {
        let Some((tripped, left)) = self.ended.get_mut(&generation) else {
            return false;
        };
        let tripped = *tripped;
        *left -= 1;
        if *left == 0 {
            self.ended.remove(&generation);
        }
        tripped
    }
}

/// The server's barrier.
pub(crate) struct BarrierObj {
    state: Mutex<State>,
    cv: Condvar,
}

impl Managed for BarrierObj {
    builtin!(
        BarrierObj,
        "mp::manager::Barrier",
        [
            "Barrier::wait",
            "Barrier::abort",
            "Barrier::reset",
            "Barrier::parties",
            "Barrier::n_waiting",
            "Barrier::broken",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Barrier::?");
        let caller = SessionWatch::of(call);
        match method {
            WAIT => call.read_try(this, name, |b, (wait,): (Wait,)| {
                answer(b.wait(wait, caller))
            }),
            ABORT => call.read(this, name, |b, ()| {
                lock(&b.state).broken = true;
                b.cv.notify_all();
            }),
            RESET => call.read(this, name, |b, ()| {
                let mut s = lock(&b.state);
                // Parties already gone from a broken round are not counted.
                let waiting = s.count;
                s.end_generation(false, waiting);
                drop(s);
                b.cv.notify_all();
            }),
            PARTIES => call.read(this, name, |b, ()| lock(&b.state).parties),
            N_WAITING => call.read(this, name, |b, ()| {
                let s = lock(&b.state);
                if s.broken { 0 } else { s.count }
            }),
            BROKEN => call.read(this, name, |b, ()| lock(&b.state).broken),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Barrier::new", |(parties,): (usize,)| BarrierObj {
            state: Mutex::new(State {
                parties,
                count: 0,
                generation: 0,
                broken: false,
                ended: HashMap::new(),
            }),
            cv: Condvar::new(),
        })
    }
}

impl BarrierObj {
    /// One party's wait: its arrival index, or why the barrier broke for it.
    fn wait(&self, wait: Wait, caller: SessionWatch) -> std::result::Result<usize, Fail> {
        let mut s = lock(&self.state);
        if s.broken {
            return Err(Refused::BrokenBarrier.into());
        }
        let index = s.count;
        s.count += 1;
        if s.count == s.parties {
            s.end_generation(true, index);
            drop(s);
            self.cv.notify_all();
            return Ok(index);
        }
        let generation = s.generation;
        let (mut s, r) = wait_until(&self.cv, s, deadline(wait), caller, |s| {
            s.generation != generation || s.broken
        });
        if s.generation != generation {
            // The round ended (its parties' count went with it); the caller may have died or
            // the server may be stopping meanwhile, which the error says.
            let tripped = s.outcome(generation);
            r?;
            return if tripped {
                Ok(index)
            } else {
                Err(Refused::BrokenBarrier.into())
            };
        }
        // Broken, timed out, dead or stopping: this party leaves the round, which breaks.
        s.count -= 1;
        s.broken = true;
        drop(s);
        self.cv.notify_all();
        match r {
            Ok(()) | Err(RemoteError::Timeout) => Err(Refused::BrokenBarrier.into()),
            Err(e) => Err(e.into()),
        }
    }
}

proxy_type!(
    /// A proxy of a managed barrier (Python's `manager.Barrier(parties)`): parties in any
    /// processes wait until all of them have arrived.
    ///
    /// A party that times out, [`abort`](BarrierProxy::abort), or a party whose process dies
    /// while it waits break the barrier: every waiting and later party gets
    /// [`Error::BrokenBarrier`] until [`reset`](BarrierProxy::reset).
    ///
    /// [`Error::BrokenBarrier`]: crate::Error::BrokenBarrier
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// use std::time::Duration;
    /// let m = mp::Manager::start()?;
    /// let b = m.barrier(1)?;
    /// assert_eq!(b.wait()?, 0); // a single party passes at once
    /// let b = m.barrier(2)?;
    /// assert_eq!(b.parties()?, 2);
    /// assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(mp::Error::BrokenBarrier)));
    /// assert!(b.is_broken()?);
    /// b.reset()?;
    /// assert!(!b.is_broken()?);
    /// # Ok(())
    /// # }
    /// ```
    BarrierProxy,
    "Barrier"
);

impl BarrierProxy {
    /// Waits for every party; returns this party's arrival index (0 for the first), or
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier).
    pub fn wait(&self) -> Result<usize> {
        call_answer(&self.r, WAIT, &(None::<Duration>,))
    }

    /// Waits at most `timeout`; a party that times out breaks the barrier for everyone and gets
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier) itself.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        call_answer_bounded(&self.r, WAIT, &(Some(timeout),), Some(timeout))
    }

    /// Breaks the barrier: every current and later waiter fails until
    /// [`reset`](BarrierProxy::reset).
    pub fn abort(&self) -> Result<()> {
        self.r.call(ABORT, &())
    }

    /// Returns the barrier to its first state; parties waiting now get
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier).
    pub fn reset(&self) -> Result<()> {
        self.r.call(RESET, &())
    }

    /// The number of parties needed to pass.
    pub fn parties(&self) -> Result<usize> {
        self.r.call(PARTIES, &())
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> Result<usize> {
        self.r.call(N_WAITING, &())
    }

    /// Whether the barrier is broken (Python's `broken`).
    pub fn is_broken(&self) -> Result<bool> {
        self.r.call(BROKEN, &())
    }
}

impl Manager {
    /// A new managed barrier for `parties` parties (Python's `manager.Barrier(parties)`); zero
    /// parties is [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
        if parties == 0 {
            return Err(crate::Error::InvalidArgument {
                message: "a barrier needs at least one party".into(),
            });
        }
        self.create::<BarrierProxy, _>(
            BarrierObj::TYPE_NAME,
            BarrierObj::FINGERPRINT,
            0,
            &(parties,),
        )
    }
}
