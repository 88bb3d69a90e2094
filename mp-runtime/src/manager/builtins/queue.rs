//! A managed queue, plain or joinable (Python's `manager.Queue(maxsize)` and
//! `manager.JoinableQueue(maxsize)`, both a `queue.Queue` in the server).
//!
//! The items live in the server (encoded, so they may be other proxies); a blocked `get` or
//! `put` blocks its connection's thread there, with the caller's timeout. This is the path every
//! client can use, also over TCP. Each proxy method goes through [`QueueProxy::put_with`] or
//! [`QueueProxy::get_with`], the one place where a local client could be handed a native
//! shared-memory queue instead.

use crate::manager::host::SessionWatch;
use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::proxy::{ObjRef, Proxy, deserialize_proxy, serialize_proxy};
use super::super::value::{Encoded, Received, Stored};
use super::{Refused, Wait, builtin, call_answer, deadline, label, lock, proxy_type, wait_until};
use crate::error::{Error, Result};
use crate::manager::Manager;

const PUT: u16 = 0;
const GET: u16 = 1;
const QSIZE: u16 = 2;
const IS_EMPTY: u16 = 3;
const IS_FULL: u16 = 4;
const TASK_DONE: u16 = 5;
const JOIN: u16 = 6;

struct Items {
    items: VecDeque<Stored>,
    /// The most items it holds; 0 for no bound.
    max: usize,
    /// Items put and not yet marked done (for `join`).
    unfinished: u64,
}

impl Items {
    fn is_full(&self) -> bool {
        self.max > 0 && self.items.len() >= self.max
    }
}

/// The server's queue.
pub(crate) struct QueueObj {
    state: Mutex<Items>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
}

impl Managed for QueueObj {
    builtin!(
        QueueObj,
        "mp::manager::Queue",
        [
            "Queue::put",
            "Queue::get",
            "Queue::qsize",
            "Queue::is_empty",
            "Queue::is_full",
            "Queue::task_done",
            "Queue::join",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Queue::?");
        let caller = SessionWatch::of(call);
        match method {
            PUT => call.read_try(this, name, |q, (item, wait): (Stored, Wait)| {
                let guard = lock(&q.state);
                let (mut items, r) =
                    wait_until(&q.not_full, guard, deadline(wait), caller, |s| !s.is_full());
                let refused = match r {
                    Ok(()) => {
                        items.items.push_back(item);
                        items.unfinished += 1;
                        drop(items);
                        q.not_empty.notify_one();
                        return Ok(Ok(()));
                    }
                    Err(RemoteError::Timeout) => Ok(Err(Refused::Full)),
                    Err(e) => Err(e),
                };
                // The item (and the references it holds) goes after the queue is unlocked.
                drop(items);
                drop(item);
                refused
            }),
            GET => call.read_try(this, name, |q, (wait,): (Wait,)| {
                let guard = lock(&q.state);
                let (mut items, r) = wait_until(&q.not_empty, guard, deadline(wait), caller, |s| {
                    !s.items.is_empty()
                });
                match r {
                    Ok(()) => {
                        let item = items.items.pop_front();
                        drop(items);
                        q.not_full.notify_one();
                        Ok(item.ok_or(Refused::Empty))
                    }
                    Err(RemoteError::Timeout) => Ok(Err(Refused::Empty)),
                    Err(e) => Err(e),
                }
            }),
            QSIZE => call.read(this, name, |q, ()| lock(&q.state).items.len()),
            IS_EMPTY => call.read(this, name, |q, ()| lock(&q.state).items.is_empty()),
            IS_FULL => call.read(this, name, |q, ()| lock(&q.state).is_full()),
            TASK_DONE => call.read_try(this, name, |q, ()| {
                let mut items = lock(&q.state);
                if items.unfinished == 0 {
                    return Err(RemoteError::State(
                        "task_done() called more times than there were items put".into(),
                    ));
                }
                items.unfinished -= 1;
                if items.unfinished == 0 {
                    q.all_done.notify_all();
                }
                Ok(())
            }),
            JOIN => call.read_try(this, name, |q, (wait,): (Wait,)| {
                let guard = lock(&q.state);
                wait_until(&q.all_done, guard, deadline(wait), caller, |s| {
                    s.unfinished == 0
                })
                .1
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Queue::new", |(max,): (usize,)| QueueObj {
            state: Mutex::new(Items {
                items: VecDeque::new(),
                max,
                unfinished: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
        })
    }
}

proxy_type!(
    /// A proxy of a managed queue (Python's `manager.Queue(maxsize)`), with the methods of
    /// [`mp::Queue`](crate::Queue): items are any `serde` type, including other proxies.
    ///
    /// Python programs use a manager's queue where `multiprocessing.Queue` cannot go (a pool's
    /// arguments, another machine); here an `mp::Queue` can be passed to any worker, so a
    /// managed queue is for sharing through a manager: by name with a remote client, or inside
    /// another managed object (`ListProxy<QueueProxy<String>>`).
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// use std::time::Duration;
    /// let m = mp::Manager::start()?;
    /// let q = m.bounded_queue::<String>(1)?;
    /// q.put("a".into())?;
    /// assert!(q.is_full()?);
    /// assert!(matches!(q.try_put("b".into()), Err(mp::Error::Full)));
    /// assert_eq!(q.get()?, "a");
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(mp::Error::Empty)));
    /// # Ok(())
    /// # }
    /// ```
    QueueProxy<T>,
    "Queue"
);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// Puts `item`, waiting up to `wait` for room (`None`: as long as it takes).
    fn put_with(&self, item: &T, wait: Wait) -> Result<()> {
        call_answer(&self.r, PUT, &(Encoded::of(item)?, wait))
    }

    /// Takes the oldest item, waiting up to `wait` for one.
    fn get_with(&self, wait: Wait) -> Result<T> {
        let item: Received = call_answer(&self.r, GET, &(wait,))?;
        item.decode()
    }

    /// Puts `item`, waiting while a bounded queue is full. An item that cannot be encoded is
    /// [`Error::Codec`], and takes no room in the queue.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_with(&item, None)
    }

    /// Puts `item`, waiting at most `timeout` for room; [`Error::Full`] if none came.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.put_with(&item, Some(timeout))
    }

    /// Puts `item` if there is room now; [`Error::Full`] otherwise.
    pub fn try_put(&self, item: T) -> Result<()> {
        self.put_with(&item, Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting until there is one. If the manager shuts down meanwhile,
    /// [`Error::ManagerShutdown`].
    pub fn get(&self) -> Result<T> {
        self.get_with(None)
    }

    /// Takes the oldest item, waiting at most `timeout`; [`Error::Empty`] if none came.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Some(timeout))
    }

    /// Takes the oldest item if there is one now; [`Error::Empty`] otherwise.
    pub fn try_get(&self) -> Result<T> {
        self.get_with(Some(Duration::ZERO))
    }

    /// The number of items in the queue.
    pub fn qsize(&self) -> Result<usize> {
        self.r.call(QSIZE, &())
    }

    /// Whether the queue holds no items.
    pub fn is_empty(&self) -> Result<bool> {
        self.r.call(IS_EMPTY, &())
    }

    /// Whether a bounded queue holds its maximum (always false when unbounded).
    pub fn is_full(&self) -> Result<bool> {
        self.r.call(IS_FULL, &())
    }
}

/// A proxy of a managed joinable queue (Python's `manager.JoinableQueue(maxsize)`): a
/// [`QueueProxy`] (which it dereferences to) whose items are marked done with
/// [`task_done`](JoinableQueueProxy::task_done), so that [`join`](JoinableQueueProxy::join)
/// can wait for all of them.
///
/// ```
/// # fn main() -> mp::Result<()> {
/// use std::time::Duration;
/// let m = mp::Manager::start()?;
/// let q = m.joinable_queue::<u32>()?;
/// q.put(1)?;
/// assert!(matches!(q.join_timeout(Duration::from_millis(10)), Err(mp::Error::Timeout)));
/// assert_eq!(q.get()?, 1);
/// q.task_done()?;
/// q.join()?;
/// assert!(matches!(q.task_done(), Err(mp::Error::InvalidState { .. })));
/// # Ok(())
/// # }
/// ```
pub struct JoinableQueueProxy<T> {
    q: QueueProxy<T>,
}

impl<T> Clone for JoinableQueueProxy<T> {
    fn clone(&self) -> Self {
        JoinableQueueProxy { q: self.q.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinableQueueProxy({:?})", self.q.obj_ref())
    }
}

impl<T> Proxy for JoinableQueueProxy<T> {
    fn label() -> String {
        label("JoinableQueue", &[std::any::type_name::<T>()])
    }
    fn from_ref(r: ObjRef) -> Self {
        JoinableQueueProxy {
            q: QueueProxy::from_ref(r),
        }
    }
    fn obj_ref(&self) -> &ObjRef {
        self.q.obj_ref()
    }
}

impl<T> Serialize for JoinableQueueProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_proxy(self, s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueueProxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_proxy(d)
    }
}

impl<T> Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;
    fn deref(&self) -> &QueueProxy<T> {
        &self.q
    }
}

impl<T> JoinableQueueProxy<T> {
    /// Marks one item taken with `get` as processed. Calling it more times than items were put
    /// is [`Error::InvalidState`].
    pub fn task_done(&self) -> Result<()> {
        self.q.r.call(TASK_DONE, &())
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.q.r.call(JOIN, &(None::<Duration>,))
    }

    /// Like [`join`](JoinableQueueProxy::join), giving up after `timeout` with
    /// [`Error::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.q.r.call(JOIN, &(Some(timeout),))
    }
}

fn checked_bound(max_items: usize) -> Result<usize> {
    if max_items == 0 {
        return Err(Error::InvalidArgument {
            message: "a bounded queue needs room for at least one item (use `queue()` for an \
                      unbounded one)"
                .into(),
        });
    }
    Ok(max_items)
}

impl Manager {
    /// A new unbounded managed queue (Python's `manager.Queue()`).
    pub fn queue<T>(&self) -> Result<QueueProxy<T>> {
        self.create::<QueueProxy<T>, _>(QueueObj::TYPE_NAME, QueueObj::FINGERPRINT, 0, &(0usize,))
    }

    /// A new managed queue of at most `max_items` items (Python's `manager.Queue(maxsize)`);
    /// zero is [`Error::InvalidArgument`].
    pub fn bounded_queue<T>(&self, max_items: usize) -> Result<QueueProxy<T>> {
        let max = checked_bound(max_items)?;
        self.create::<QueueProxy<T>, _>(QueueObj::TYPE_NAME, QueueObj::FINGERPRINT, 0, &(max,))
    }

    /// A new unbounded managed joinable queue (Python's `manager.JoinableQueue()`).
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>> {
        self.create::<JoinableQueueProxy<T>, _>(
            QueueObj::TYPE_NAME,
            QueueObj::FINGERPRINT,
            0,
            &(0usize,),
        )
    }

    /// A new managed joinable queue of at most `max_items` items (Python's
    /// `manager.JoinableQueue(maxsize)`).
    pub fn bounded_joinable_queue<T>(&self, max_items: usize) -> Result<JoinableQueueProxy<T>> {
        let max = checked_bound(max_items)?;
        self.create::<JoinableQueueProxy<T>, _>(
            QueueObj::TYPE_NAME,
            QueueObj::FINGERPRINT,
            0,
            &(max,),
        )
    }
}
