//! A managed semaphore, plain or bounded (one server object; the proxies differ).

use crate::manager::host::SessionWatch;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::Result;
use crate::manager::Manager;
use crate::manager::builtins::{Wait, builtin, lock, proxy_type, take_when};
use crate::manager::managed::{Call, Managed, Out, Shared};
use crate::manager::protocol::RemoteError;

const ACQUIRE: u16 = 0;
const RELEASE: u16 = 1;
const GET_VALUE: u16 = 2;

struct Count {
    value: u32,
    /// A bounded semaphore's initial value, which a release may not exceed.
    bound: Option<u32>,
}

/// The server's semaphore.
pub(crate) struct SemaphoreObj {
    count: Mutex<Count>,
    cv: Condvar,
}

impl Managed for SemaphoreObj {
    builtin!(
        SemaphoreObj,
        "mp::manager::Semaphore",
        [
            "Semaphore::acquire",
            "Semaphore::release",
            "Semaphore::get_value"
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Semaphore::?");
        let caller = SessionWatch::of(call);
        match method {
            ACQUIRE => call.read_try(this, name, |s, (wait,): (Wait,)| {
                let guard = lock(&s.count);
                // A semaphore has no owner: a permit is not kept for its taker.
                take_when(
                    &s.cv,
                    guard,
                    wait,
                    caller,
                    false,
                    |c| c.value > 0,
                    |c| c.value -= 1,
                )
                .1
            }),
            RELEASE => call.read_try(this, name, |s, ()| {
                let mut c = lock(&s.count);
                if c.bound.is_some_and(|b| c.value >= b) {
                    return Err(RemoteError::State(
                        "a bounded semaphore was released more times than it was acquired".into(),
                    ));
                }
                c.value = c.value.checked_add(1).ok_or_else(|| {
                    RemoteError::State("a semaphore's value cannot exceed u32::MAX".into())
                })?;
                drop(c);
                s.cv.notify_one();
                Ok(())
            }),
            GET_VALUE => call.read(this, name, |s, ()| lock(&s.count).value),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Semaphore::new", |(value, bounded): (u32, bool)| {
            SemaphoreObj {
                count: Mutex::new(Count {
                    value,
                    bound: bounded.then_some(value),
                }),
                cv: Condvar::new(),
            }
        })
    }
}

/// The methods both semaphore proxies share.
macro_rules! semaphore_methods {
    ($name:ident) => {
        impl $name {
            /// Takes a permit, waiting as long as it takes.
            pub fn acquire(&self) -> Result<()> {
                self.r.call::<_, bool>(ACQUIRE, &(None::<Duration>,))?;
                Ok(())
            }

            /// Takes a permit, waiting at most `timeout`; false if none came.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.r
                    .call_bounded(ACQUIRE, &(Some(timeout),), Some(timeout))
            }

            /// Takes a permit if one is free now (Python's `acquire(False)`).
            pub fn try_acquire(&self) -> Result<bool> {
                self.acquire_timeout(Duration::ZERO)
            }

            /// Gives a permit back (any process may).
            pub fn release(&self) -> Result<()> {
                self.r.call(RELEASE, &())
            }

            /// The number of free permits.
            pub fn get_value(&self) -> Result<u32> {
                self.r.call(GET_VALUE, &())
            }
        }
    };
}

proxy_type!(
    /// A proxy of a managed semaphore (Python's `manager.Semaphore(n)`): a count of permits that
    /// any process may take and give back.
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let s = m.semaphore(1)?;
    /// s.acquire()?;
    /// assert!(!s.try_acquire()?);
    /// s.release()?;
    /// s.release()?; // a plain semaphore may go above its initial value
    /// assert_eq!(s.get_value()?, 2);
    /// # Ok(())
    /// # }
    /// ```
    SemaphoreProxy,
    "Semaphore"
);

semaphore_methods!(SemaphoreProxy);

proxy_type!(
    /// A proxy of a managed bounded semaphore (Python's `manager.BoundedSemaphore(n)`): a
    /// release that would exceed the initial value is [`Error::InvalidState`].
    ///
    /// [`Error::InvalidState`]: crate::Error::InvalidState
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let s = m.bounded_semaphore(1)?;
    /// s.acquire()?;
    /// s.release()?;
    /// assert!(matches!(s.release(), Err(mp::Error::InvalidState { .. })));
    /// # Ok(())
    /// # }
    /// ```
    BoundedSemaphoreProxy,
    "BoundedSemaphore"
);

semaphore_methods!(BoundedSemaphoreProxy);

impl Manager {
    /// A new managed semaphore with `value` permits (Python's `manager.Semaphore(value)`).
    pub fn semaphore(&self, value: u32) -> Result<SemaphoreProxy> {
        self.create::<SemaphoreProxy, _>(
            SemaphoreObj::TYPE_NAME,
            SemaphoreObj::FINGERPRINT,
            0,
            &(value, false),
        )
    }

    /// A new managed bounded semaphore with `value` permits (Python's
    /// `manager.BoundedSemaphore(value)`).
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphoreProxy> {
        self.create::<BoundedSemaphoreProxy, _>(
            SemaphoreObj::TYPE_NAME,
            SemaphoreObj::FINGERPRINT,
            0,
            &(value, true),
        )
    }
}
