//! A managed lock (no owner: anyone may release it) and a managed re-entrant lock (owned by the
//! client thread that acquired it).

use crate::manager::host::SessionWatch;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::ProxyLockGuard;
use crate::error::Result;
use crate::manager::Manager;
use crate::manager::builtins::{Wait, builtin, lock, proxy_type, take_when};
use crate::manager::managed::{Call, Caller, Managed, Out, Shared};
use crate::manager::protocol::RemoteError;

use super::guard::{ACQUIRE, RELEASE};
const LOCKED: u16 = 2;

/// The server's lock: the session that took it last, if it is taken.
pub(crate) struct LockObj {
    holder: Mutex<Option<u64>>,
    cv: Condvar,
}

impl Managed for LockObj {
    builtin!(
        LockObj,
        "mp::manager::Lock",
        ["Lock::acquire", "Lock::release", "Lock::locked"]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Lock::?");
        let caller = SessionWatch::of(call);
        let session = call.caller().session;
        match method {
            ACQUIRE => call.read_try(this, name, |l, (wait,): (Wait,)| {
                let guard = lock(&l.holder);
                take_when(&l.cv, guard, wait, caller, true, Option::is_none, |h| {
                    *h = Some(session)
                })
                .1
            }),
            RELEASE => call.read_try(this, name, |l, ()| {
                let mut holder = lock(&l.holder);
                if holder.take().is_none() {
                    return Err(RemoteError::State(
                        "release of an unlocked lock: acquire it first".into(),
                    ));
                }
                drop(holder);
                l.cv.notify_one();
                Ok(())
            }),
            LOCKED => call.read(this, name, |l, ()| lock(&l.holder).is_some()),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Lock::new", |()| LockObj {
            holder: Mutex::new(None),
            cv: Condvar::new(),
        })
    }

    fn session_ended(this: &Shared<Self>, session: u64) {
        let l = this.value();
        let mut holder = lock(&l.holder);
        if *holder == Some(session) {
            *holder = None;
            drop(holder);
            l.cv.notify_one();
        }
    }
}

proxy_type!(
    /// A proxy of a managed lock (Python's `manager.Lock()`).
    ///
    /// As in Python, the lock has no owner: any thread of any process may release it, and
    /// releasing it while it is free is an error ([`Error::InvalidState`]). Unlike Python, a
    /// lock taken by a process that exits or is killed before releasing it is released by the
    /// server (Python's stays locked forever). For a lock owned by the thread that took it, use
    /// [`RLockProxy`]; for a lock in shared memory that costs no round trip, [`mp::Lock`].
    ///
    /// That release is silent, where [`mp::Lock`] reports [`Error::OwnerDied`] once to the
    /// next acquirer: a manager lock has no owner to speak of (any process may release it, so
    /// "the holder died" does not mean "the update was cut short"), and Python's manager
    /// locks report nothing. Data that must not be left half-updated belongs in one managed
    /// object, whose `&mut self` methods run whole under its own lock.
    ///
    /// [`acquire_guard`](LockProxy::acquire_guard) returns a guard that releases the lock when
    /// dropped, as [`mp::Lock::acquire`](crate::Lock::acquire) does.
    ///
    /// [`Error::OwnerDied`]: crate::Error::OwnerDied
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    /// [`mp::Lock`]: crate::Lock
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let l = m.lock()?;
    /// l.acquire()?;
    /// assert!(l.locked()?);
    /// assert!(!l.try_acquire()?);
    /// l.release()?;
    /// assert!(matches!(l.release(), Err(mp::Error::InvalidState { .. })));
    /// # Ok(())
    /// # }
    /// ```
    LockProxy,
    "Lock"
);

impl LockProxy {
    /// Takes the lock, waiting as long as it takes, and returns a guard that releases it when
    /// dropped (so `?` between acquire and release cannot leave it held).
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let l = m.lock()?;
    /// {
    ///     let _held = l.acquire_guard()?;
    ///     assert!(l.locked()?);
    /// }
    /// assert!(!l.locked()?);
    /// let held = l.acquire_guard_timeout(std::time::Duration::ZERO)?.expect("free");
    /// assert!(l.acquire_guard_timeout(std::time::Duration::ZERO)?.is_none());
    /// held.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn acquire_guard(&self) -> Result<ProxyLockGuard<'_>> {
        ProxyLockGuard::acquire(&self.r, None)?.ok_or(crate::Error::Timeout)
    }

    /// Like [`acquire_guard`](LockProxy::acquire_guard), waiting at most `timeout`: `None` if
    /// the lock stayed taken.
    pub fn acquire_guard_timeout(&self, timeout: Duration) -> Result<Option<ProxyLockGuard<'_>>> {
        ProxyLockGuard::acquire(&self.r, Some(timeout))
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn acquire(&self) -> Result<()> {
        self.r.call::<_, bool>(ACQUIRE, &(None::<Duration>,))?;
        Ok(())
    }

    /// Takes the lock, waiting at most `timeout`; false if it stayed taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        self.r
            .call_bounded(ACQUIRE, &(Some(timeout),), Some(timeout))
    }

    /// Takes the lock if it is free now (Python's `acquire(False)`).
    pub fn try_acquire(&self) -> Result<bool> {
        self.acquire_timeout(Duration::ZERO)
    }

    /// Releases the lock, whoever took it; [`Error::InvalidState`] if it is free.
    ///
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    pub fn release(&self) -> Result<()> {
        self.r.call(RELEASE, &())
    }

    /// Whether the lock is taken.
    pub fn locked(&self) -> Result<bool> {
        self.r.call(LOCKED, &())
    }
}

/// A re-entrant lock's state: the client thread that holds it, and how many times.
#[derive(Default)]
pub(crate) struct Owned {
    owner: Option<Caller>,
    count: u32,
}

impl Owned {
    /// Whether `caller` may take it now.
    pub(crate) fn free_for(&self, caller: Caller) -> bool {
        self.owner.is_none_or(|o| o == caller)
    }

    pub(crate) fn take(&mut self, caller: Caller) {
        self.owner = Some(caller);
        self.count += 1;
    }

    pub(crate) fn is_owned_by(&self, caller: Caller) -> bool {
        self.owner == Some(caller)
    }

    /// Releases one level; true if the lock is now free.
    pub(crate) fn release(&mut self, caller: Caller) -> std::result::Result<bool, RemoteError> {
        if !self.is_owned_by(caller) {
            return Err(RemoteError::State(
                "cannot release a lock this thread does not hold: only the thread (and process) \
                 that acquired it can"
                    .into(),
            ));
        }
        self.count -= 1;
        if self.count == 0 {
            self.owner = None;
        }
        Ok(self.count == 0)
    }

    /// Lets go entirely, returning how many levels were held (for a condition's wait).
    pub(crate) fn release_all(&mut self) -> u32 {
        self.owner = None;
        std::mem::take(&mut self.count)
    }

    /// Takes it again at `count` levels (after a condition's wait).
    pub(crate) fn restore(&mut self, caller: Caller, count: u32) {
        self.owner = Some(caller);
        self.count = count;
    }

    /// Lets go if `session` holds it; true if it did.
    pub(crate) fn drop_session(&mut self, session: u64) -> bool {
        if self.owner.is_some_and(|o| o.session == session) {
            self.release_all();
            true
        } else {
            false
        }
    }
}

/// The server's re-entrant lock.
pub(crate) struct RLockObj {
    state: Mutex<Owned>,
    cv: Condvar,
}

impl Managed for RLockObj {
    builtin!(
        RLockObj,
        "mp::manager::RLock",
        ["RLock::acquire", "RLock::release"]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("RLock::?");
        let watch = SessionWatch::of(call);
        let caller = call.caller();
        match method {
            ACQUIRE => call.read_try(this, name, |l, (wait,): (Wait,)| {
                let guard = lock(&l.state);
                take_when(
                    &l.cv,
                    guard,
                    wait,
                    watch,
                    true,
                    |s| s.free_for(caller),
                    |s| s.take(caller),
                )
                .1
            }),
            RELEASE => call.read_try(this, name, |l, ()| {
                let freed = lock(&l.state).release(caller)?;
                if freed {
                    l.cv.notify_one();
                }
                Ok(())
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("RLock::new", |()| RLockObj {
            state: Mutex::new(Owned::default()),
            cv: Condvar::new(),
        })
    }

    fn session_ended(this: &Shared<Self>, session: u64) {
        let l = this.value();
        if lock(&l.state).drop_session(session) {
            l.cv.notify_one();
        }
    }
}

proxy_type!(
    /// A proxy of a managed re-entrant lock (Python's `manager.RLock()`).
    ///
    /// The owner is the client thread that acquired it (even if the thread's connection to the
    /// server was replaced after a `_timeout` call gave up): it may acquire it again, and must
    /// release it as many times;
    /// a release by any other thread or process is [`Error::InvalidState`]. A lock held by a
    /// process that exits or is killed is released by the server.
    ///
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let l = m.rlock()?;
    /// l.acquire()?;
    /// assert!(l.try_acquire()?); // again, by its owner
    /// l.release()?;
    /// l.release()?;
    /// assert!(matches!(l.release(), Err(mp::Error::InvalidState { .. })));
    /// # Ok(())
    /// # }
    /// ```
    RLockProxy,
    "RLock"
);

impl RLockProxy {
    /// Takes the lock (again, if this thread holds it) and returns a guard that releases one
    /// level when dropped.
    pub fn acquire_guard(&self) -> Result<ProxyLockGuard<'_>> {
        ProxyLockGuard::acquire(&self.r, None)?.ok_or(crate::Error::Timeout)
    }

    /// Like [`acquire_guard`](RLockProxy::acquire_guard), waiting at most `timeout`: `None` if
    /// another thread kept the lock.
    pub fn acquire_guard_timeout(&self, timeout: Duration) -> Result<Option<ProxyLockGuard<'_>>> {
        ProxyLockGuard::acquire(&self.r, Some(timeout))
    }

    /// Takes the lock (again, if this thread holds it), waiting as long as it takes.
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

    /// Releases one level; [`Error::InvalidState`] if this thread does not hold the lock.
    ///
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    pub fn release(&self) -> Result<()> {
        self.r.call(RELEASE, &())
    }
}

impl Manager {
    /// A new managed lock (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<LockProxy> {
        self.create::<LockProxy, _>(LockObj::TYPE_NAME, LockObj::FINGERPRINT, 0, &())
    }

    /// A new managed re-entrant lock (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLockProxy> {
        self.create::<RLockProxy, _>(RLockObj::TYPE_NAME, RLockObj::FINGERPRINT, 0, &())
    }
}
