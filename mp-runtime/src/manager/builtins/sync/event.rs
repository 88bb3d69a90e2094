//! A managed event (Python's `manager.Event()`).

use crate::manager::host::SessionWatch;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::error::Result;
use crate::manager::Manager;
use crate::manager::builtins::{Wait, builtin, deadline, lock, proxy_type, wait_until};
use crate::manager::managed::{Call, Managed, Out, Shared};
use crate::manager::protocol::RemoteError;

const SET: u16 = 0;
const CLEAR: u16 = 1;
const IS_SET: u16 = 2;
const WAIT: u16 = 3;

#[derive(Default)]
struct Flag {
    set: bool,
    /// Counts the `set`s, so that a waiter sees a set that a `clear` undid before it woke.
    sets: u64,
}

/// The server's event.
pub(crate) struct EventObj {
    flag: Mutex<Flag>,
    cv: Condvar,
}

impl Managed for EventObj {
    builtin!(
        EventObj,
        "mp::manager::Event",
        ["Event::set", "Event::clear", "Event::is_set", "Event::wait"]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Event::?");
        let caller = SessionWatch::of(call);
        match method {
            SET => call.read(this, name, |e, ()| {
                let mut f = lock(&e.flag);
                if !f.set {
                    f.set = true;
                    f.sets += 1;
                    drop(f);
                    e.cv.notify_all();
                }
            }),
            CLEAR => call.read(this, name, |e, ()| lock(&e.flag).set = false),
            IS_SET => call.read(this, name, |e, ()| lock(&e.flag).set),
            WAIT => call.read_try(this, name, |e, (wait,): (Wait,)| {
                let f = lock(&e.flag);
                let start = f.sets;
                let (_f, r) = wait_until(&e.cv, f, deadline(wait), caller, |f| {
                    f.set || f.sets != start
                });
                match r {
                    Ok(()) => Ok(true),
                    Err(RemoteError::Timeout) => Ok(false),
                    Err(e) => Err(e),
                }
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Event::new", |()| EventObj {
            flag: Mutex::new(Flag::default()),
            cv: Condvar::new(),
        })
    }
}

proxy_type!(
    /// A proxy of a managed event (Python's `manager.Event()`): a flag that any process sets or
    /// clears, and waits for.
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// use std::time::Duration;
    /// let m = mp::Manager::start()?;
    /// let e = m.event()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?);
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// e.wait()?; // returns at once
    /// e.clear()?;
    /// assert!(!e.is_set()?);
    /// # Ok(())
    /// # }
    /// ```
    EventProxy,
    "Event"
);

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        self.r.call(SET, &())
    }

    /// Clears the flag: later waits block until the next `set`.
    pub fn clear(&self) -> Result<()> {
        self.r.call(CLEAR, &())
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        self.r.call(IS_SET, &())
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.r.call::<_, bool>(WAIT, &(None::<Duration>,))?;
        Ok(())
    }

    /// Waits at most `timeout` for the flag; whether it was set (now, or by a `set` during the
    /// wait that a `clear` undid).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.r.call_bounded(WAIT, &(Some(timeout),), Some(timeout))
    }
}

impl Manager {
    /// A new managed event, not set (Python's `manager.Event()`).
    pub fn event(&self) -> Result<EventProxy> {
        self.create::<EventProxy, _>(EventObj::TYPE_NAME, EventObj::FINGERPRINT, 0, &())
    }
}
