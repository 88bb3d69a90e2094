//! A managed condition variable with its own re-entrant lock (Python's `manager.Condition()`).

use crate::manager::host::SessionWatch;
use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::guard::{ACQUIRE, RELEASE};
use super::{Owned, ProxyLockGuard};
use crate::error::Result;
use crate::manager::Manager;
use crate::manager::builtins::{Wait, builtin, deadline, lock, proxy_type, take_when, wait_until};
use crate::manager::managed::{Call, Managed, Out, Shared};
use crate::manager::protocol::RemoteError;

const WAIT: u16 = 2;
const NOTIFY: u16 = 3;
const NOTIFY_ALL: u16 = 4;

#[derive(Default)]
struct State {
    lock: Owned,
    /// Waiters not notified yet, oldest first.
    waiters: VecDeque<u64>,
    /// Waiters notified that have not woken yet.
    notified: HashSet<u64>,
    next_waiter: u64,
}

impl State {
    /// Notifies up to `n` waiters, oldest first; whether any was.
    fn notify(&mut self, n: usize) -> bool {
        let k = n.min(self.waiters.len());
        for id in self.waiters.drain(..k) {
            self.notified.insert(id);
        }
        k > 0
    }
}

/// The server's condition: its lock and its waiters, on one `Condvar`.
pub(crate) struct ConditionObj {
    state: Mutex<State>,
    cv: Condvar,
}

fn not_held(what: &str) -> RemoteError {
    RemoteError::State(format!(
        "cannot {what} a condition whose lock this thread does not hold: acquire it first"
    ))
}

impl Managed for ConditionObj {
    builtin!(
        ConditionObj,
        "mp::manager::Condition",
        [
            "Condition::acquire",
            "Condition::release",
            "Condition::wait",
            "Condition::notify",
            "Condition::notify_all",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Condition::?");
        let watch = SessionWatch::of(call);
        let caller = call.caller();
        match method {
            ACQUIRE => call.read_try(this, name, |c, (wait,): (Wait,)| {
                let guard = lock(&c.state);
                take_when(
                    &c.cv,
                    guard,
                    wait,
                    watch,
                    true,
                    |s| s.lock.free_for(caller),
                    |s| s.lock.take(caller),
                )
                .1
            }),
            RELEASE => call.read_try(this, name, |c, ()| {
                let freed = lock(&c.state).lock.release(caller)?;
                if freed {
                    c.cv.notify_all();
                }
                Ok(())
            }),
            WAIT => call.read_try(this, name, |c, (wait,): (Wait,)| {
                let mut state = lock(&c.state);
                if !state.lock.is_owned_by(caller) {
                    return Err(not_held("wait on"));
                }
                let levels = state.lock.release_all();
                let id = state.next_waiter;
                state.next_waiter += 1;
                state.waiters.push_back(id);
                c.cv.notify_all();
                let (mut state, r) = wait_until(&c.cv, state, deadline(wait), watch, |s| {
                    s.notified.remove(&id)
                });
                let notified = match r {
                    Ok(()) => true,
                    Err(RemoteError::Timeout) => {
                        state.waiters.retain(|w| *w != id);
                        false
                    }
                    Err(e) => {
                        state.waiters.retain(|w| *w != id);
                        // A notification meant for a waiter that is gone goes to the next one.
                        if state.notified.remove(&id) && state.notify(1) {
                            c.cv.notify_all();
                        }
                        return Err(e);
                    }
                };
                // Take the lock back, however long it takes, as Python's `wait` does.
                let (_state, r) = take_when(
                    &c.cv,
                    state,
                    None,
                    watch,
                    true,
                    |s| s.lock.free_for(caller),
                    |s| s.lock.restore(caller, levels),
                );
                r.map(|_| notified)
            }),
            NOTIFY => call.read_try(this, name, |c, (n,): (usize,)| {
                let mut state = lock(&c.state);
                if !state.lock.is_owned_by(caller) {
                    return Err(not_held("notify"));
                }
                if state.notify(n) {
                    c.cv.notify_all();
                }
                Ok(())
            }),
            NOTIFY_ALL => call.read_try(this, name, |c, ()| {
                let mut state = lock(&c.state);
                if !state.lock.is_owned_by(caller) {
                    return Err(not_held("notify"));
                }
                if state.notify(usize::MAX) {
                    c.cv.notify_all();
                }
                Ok(())
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Condition::new", |()| ConditionObj {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        })
    }

    fn session_ended(this: &Shared<Self>, session: u64) {
        let c = this.value();
        if lock(&c.state).lock.drop_session(session) {
            c.cv.notify_all();
        }
    }
}

proxy_type!(
    /// A proxy of a managed condition variable (Python's `manager.Condition()`), with a
    /// re-entrant lock of its own.
    ///
    /// As with [`RLockProxy`](crate::manager::RLockProxy), the lock belongs to the client thread
    /// that acquired it; waiting and notifying require holding it
    /// ([`Error::InvalidState`] otherwise). [`wait`](ConditionProxy::wait) lets go of the lock
    /// (every level of it) while it waits and takes it back before it returns. If the process
    /// holding the lock dies, the server releases it.
    ///
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// use std::time::Duration;
    /// let m = mp::Manager::start()?;
    /// let c = m.condition()?;
    /// c.acquire()?;
    /// assert!(!c.wait_timeout(Duration::from_millis(10))?); // nobody notified
    /// c.notify_all()?;
    /// c.release()?;
    /// assert!(matches!(c.notify(1), Err(mp::Error::InvalidState { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ConditionProxy,
    "Condition"
);

impl ConditionProxy {
    /// Takes the condition's lock (again, if this thread holds it) and returns a guard that
    /// releases one level when dropped; `wait` and `notify` work while it is held.
    pub fn acquire_guard(&self) -> Result<ProxyLockGuard<'_>> {
        ProxyLockGuard::acquire(&self.r, None)?.ok_or(crate::Error::Timeout)
    }

    /// Like [`acquire_guard`](ConditionProxy::acquire_guard), waiting at most `timeout`: `None`
    /// if another thread kept the lock.
    pub fn acquire_guard_timeout(&self, timeout: Duration) -> Result<Option<ProxyLockGuard<'_>>> {
        ProxyLockGuard::acquire(&self.r, Some(timeout))
    }

    /// Takes the condition's lock (again, if this thread holds it).
    pub fn acquire(&self) -> Result<()> {
        self.r.call::<_, bool>(ACQUIRE, &(None::<Duration>,))?;
        Ok(())
    }

    /// Takes the lock, waiting at most `timeout`; false if another thread kept it.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.r
            .call_bounded(ACQUIRE, &(Some(timeout),), Some(timeout))
    }

    /// Takes the lock if this thread can now.
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_timeout(Duration::ZERO)
    }

    /// Releases one level of the lock; [`Error::InvalidState`] if this thread does not hold it.
    ///
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    pub fn release(&self) -> Result<()> {
        self.r.call(RELEASE, &())
    }

    /// Waits for a notification (the lock is let go meanwhile and held again on return).
    pub fn wait(&self) -> Result<()> {
        self.r.call::<_, bool>(WAIT, &(None::<Duration>,))?;
        Ok(())
    }

    /// Waits at most `timeout` for a notification; false if none came. The lock is held again
    /// on return either way.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.r.call_bounded(WAIT, &(Some(timeout),), Some(timeout))
    }

    /// Waits until `predicate` holds, checking it before each wait (Python's `wait_for`; the
    /// predicate runs here, with the lock held, and may read other managed objects).
    pub fn wait_for(&self, mut predicate: impl FnMut() -> Result<bool>) -> Result<()> {
        while !predicate()? {
            self.wait()?;
        }
        Ok(())
    }

    /// Like [`wait_for`](ConditionProxy::wait_for), giving up after `timeout`: returns the
    /// predicate's last value.
    pub fn wait_for_timeout(
        &self,
        mut predicate: impl FnMut() -> Result<bool>,
        timeout: Duration,
    ) -> Result<bool> {
        let end = Instant::now().checked_add(timeout);
        loop {
            if predicate()? {
                return Ok(true);
            }
            let left = match end {
                Some(end) => end.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Ok(false);
            }
            self.wait_timeout(left)?;
        }
    }

    /// Wakes up to `n` waiters, oldest first.
    pub fn notify(&self, n: usize) -> Result<()> {
        self.r.call(NOTIFY, &(n,))
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<()> {
        self.r.call(NOTIFY_ALL, &())
    }
}

impl Manager {
    /// A new managed condition variable with its own re-entrant lock (Python's
    /// `manager.Condition()`).
    pub fn condition(&self) -> Result<ConditionProxy> {
        self.create::<ConditionProxy, _>(ConditionObj::TYPE_NAME, ConditionObj::FINGERPRINT, 0, &())
    }
}
