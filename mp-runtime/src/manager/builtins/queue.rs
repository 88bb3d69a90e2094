//! A managed queue, plain or joinable (Python's `manager.Queue(maxsize)` and
//! `manager.JoinableQueue(maxsize)`).
//!
//! The server keeps the items in a native `mp::JoinableQueue` (shared memory) of encoded items.
//! A client on this machine asks once for that queue's descriptors and then puts and gets
//! without a round trip to the server, at the native queue's speed; a client over TCP (which
//! carries no descriptors), or a proxy held inside the server, calls the server, which works on
//! the same queue. Either way the items are the same encoded values, so both kinds of client
//! share one queue.
//!
//! A local client's `get` waits on the queue and on its session's connection together, so a
//! dead manager wakes it at once; other waits (a full queue's `put`) check every 100 ms that
//! the manager still lives
//! ([`Link::check_alive`](super::super::link::Link::check_alive)), so a dead manager is
//! `Error::ManagerGone`, never a hang; a non-blocking call checks at most once a millisecond. A
//! proxy inside an item in the queue is a transfer in flight: it must be taken out within the
//! manager's transfer timeout (60 s by default), as for a proxy sent through any channel.

use crate::manager::host::SessionWatch;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::proxy::{ObjRef, Proxy, deserialize_proxy, serialize_proxy};
use super::super::value::Encoded;
use super::{Refused, Wait, builtin, call_answer_bounded, deadline, label, lock};
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::queue::{JoinableQueue, TryPutError};

const PUT: u16 = 0;
const GET: u16 = 1;
const QSIZE: u16 = 2;
const IS_EMPTY: u16 = 3;
const IS_FULL: u16 = 4;
const TASK_DONE: u16 = 5;
const JOIN: u16 = 6;
const NATIVE: u16 = 7;

/// How long a blocked call waits on the native queue before it looks again at the manager (in
/// a client) or at a shutdown and its caller (in the server).
const SLICE: Duration = Duration::from_millis(100);

/// How often a `put` looks again at a bounded queue kept full by items given back.
const RETURNED_POLL: Duration = Duration::from_millis(5);

/// The items of a managed queue: encoded values, as clients put them.
type Items = JoinableQueue<Encoded>;

/// The server's queue.
pub(crate) struct QueueObj {
    q: Items,
    /// The most items (0: no limit).
    max: usize,
    /// Items taken for a caller of the server's `get` who died before it had them, oldest
    /// first: they come out before the native queue's items, and were counted as put once
    /// already (see [`QueueObj::give_back`]).
    returned: Mutex<VecDeque<Encoded>>,
}

impl QueueObj {
    /// Gives back an item taken for a caller that died while its `get` waited: at the head of
    /// the queue, without counting a new put (a joinable queue's count of unfinished items
    /// already has it), and without waiting for room in a full bounded queue.
    ///
    /// Only the server's own `get` serves these items first, and only it can give one back:
    /// that is every consumer of a manager reached over TCP (which carries no descriptors) and
    /// the proxies inside the server, whose calls never lose their caller. A manager on a Unix
    /// socket serves its local clients' `get` from the native queue directly, never this way.
    fn give_back(&self, item: Encoded, from_returned: bool) {
        let mut returned = lock(&self.returned);
        if from_returned {
            returned.push_front(item);
        } else {
            // Taken from the native queue: newer than the items given back before.
            returned.push_back(item);
        }
    }

    /// The oldest item given back, if any.
    fn take_returned(&self) -> Option<Encoded> {
        lock(&self.returned).pop_front()
    }

    /// Items in the queue, as the server's callers see it.
    fn len(&self) -> usize {
        self.q.qsize() + lock(&self.returned).len()
    }

    /// Whether a bounded queue's items given back leave no room for `put` (the native queue
    /// does not know them).
    fn full_with_returned(&self) -> bool {
        let returned = lock(&self.returned).len();
        self.max != 0 && returned > 0 && self.q.qsize() + returned >= self.max
    }
}

impl Drop for QueueObj {
    /// Nobody holds a proxy any more; local clients may still hold the native queue: wake
    /// them (the queue is shut down, which they report as the manager's shutdown).
    fn drop(&mut self) {
        self.q.shutdown(true);
    }
}

/// Waits in slices until `attempt` gives an answer: between slices, the server's shutdown, the
/// caller's death and the deadline end the wait.
fn sliced<R>(
    wait: Wait,
    caller: SessionWatch,
    mut attempt: impl FnMut(Duration) -> Option<R>,
) -> std::result::Result<Option<R>, RemoteError> {
    let deadline = deadline(wait);
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(d) => SLICE.min(d.saturating_duration_since(Instant::now())),
        };
        if let Some(r) = attempt(slice) {
            return Ok(Some(r));
        }
        if super::super::host::stopping() {
            return Err(RemoteError::ShuttingDown);
        }
        if !caller.alive() {
            return Err(RemoteError::State("the caller is gone".into()));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// A native queue's error in the server's terms.
fn remote(e: Error) -> RemoteError {
    match e {
        Error::ShutDown => RemoteError::ShuttingDown,
        other => RemoteError::State(other.to_string()),
    }
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
            "Queue::native",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Queue::?");
        let caller = SessionWatch::of(call);
        let tcp = call.caller().tcp;
        match method {
            PUT => call.read_try(this, name, |q, (item, wait): (Encoded, Wait)| {
                let mut item = Some(item);
                let mut failed = None;
                let put = sliced(wait, caller, |slice| {
                    if q.full_with_returned() {
                        // Full, counting the items given back: look again shortly (this is
                        // rare: a consumer died while a bounded queue was at its limit).
                        std::thread::sleep(slice.min(RETURNED_POLL));
                        return None;
                    }
                    match q.q.put_timeout(item.take().expect("kept"), slice) {
                        Ok(()) => Some(()),
                        Err(TryPutError::Full(back)) => {
                            item = Some(back);
                            None
                        }
                        Err(TryPutError::Failed(_, e)) => {
                            failed = Some(e);
                            Some(())
                        }
                    }
                })?;
                match (put, failed) {
                    (_, Some(e)) => Err(remote(e)),
                    (Some(()), None) => Ok(Ok(())),
                    (None, None) => Ok(Err(Refused::Full)),
                }
            }),
            GET => call.read_try(this, name, |q, (wait,): (Wait,)| {
                let got = sliced(wait, caller, |slice| {
                    // The caller is looked at before anything is taken for it: one that died
                    // while this `get` waited takes nothing, so that nobody sees the queue an
                    // item short while it would be given back.
                    if !caller.alive() {
                        return None;
                    }
                    if let Some(item) = q.take_returned() {
                        return Some(Ok((item, true)));
                    }
                    match q.q.try_get() {
                        Ok(item) => Some(Ok((item, false))),
                        Err(Error::Empty) => {
                            // Wait for an item without taking it; the next look takes it.
                            match q.q.wait_for_item(slice) {
                                Ok(_) => None,
                                Err(e) => Some(Err(e)),
                            }
                        }
                        Err(e) => Some(Err(e)),
                    }
                });
                match got {
                    Ok(Some(Err(e))) => Err(remote(e)),
                    Ok(Some(Ok((item, from_returned)))) if !caller.alive() => {
                        // Its taker died between the look and the take: the item goes back,
                        // first in line.
                        q.give_back(item, from_returned);
                        Err(RemoteError::State("the caller is gone".into()))
                    }
                    Ok(Some(Ok((item, _)))) => Ok(Ok(item)),
                    Ok(None) => Ok(Err(Refused::Empty)),
                    Err(e) => Err(e),
                }
            }),
            QSIZE => call.read(this, name, |q, ()| q.len()),
            IS_EMPTY => call.read(this, name, |q, ()| q.len() == 0),
            IS_FULL => call.read(this, name, |q, ()| {
                q.q.is_full() || (q.max != 0 && q.len() >= q.max)
            }),
            TASK_DONE => call.read_try(this, name, |q, ()| q.q.task_done().map_err(remote)),
            JOIN => call.read_try(this, name, |q, (wait,): (Wait,)| {
                let mut failed = None;
                let joined = sliced(wait, caller, |slice| match q.q.join_timeout(slice) {
                    Ok(()) => Some(()),
                    Err(Error::Timeout) => None,
                    Err(e) => {
                        failed = Some(e);
                        Some(())
                    }
                })?;
                match (joined, failed) {
                    (_, Some(e)) => Err(remote(e)),
                    (Some(()), None) => Ok(()),
                    (None, None) => Err(RemoteError::Timeout),
                }
            }),
            NATIVE => call.read_try(this, name, |q, ()| {
                if tcp {
                    return Err(RemoteError::State(
                        "a queue's descriptors cannot cross TCP".into(),
                    ));
                }
                Ok(q.q.clone())
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Queue::new", |(max,): (usize,)| {
            let q = if max == 0 {
                JoinableQueue::new()
            } else {
                JoinableQueue::bounded(max)
            };
            q.map(|q| QueueObj {
                q,
                max,
                returned: Mutex::new(VecDeque::new()),
            })
        })?
        .map_err(|e| RemoteError::State(format!("the manager cannot make a queue: {e}")))
    }
}

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
/// assert!(matches!(q.try_put("b".into()), Err(mp::TryPutError::Full(b)) if b == "b"));
/// assert_eq!(q.get()?, "a");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(mp::Error::Empty)));
/// # Ok(())
/// # }
/// ```
pub struct QueueProxy<T> {
    r: ObjRef,
    /// The server's native queue, once asked for (`None`: reached over TCP or from inside the
    /// server, where every call goes to the server).
    native: Arc<OnceLock<Option<Items>>>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for QueueProxy<T> {
    fn clone(&self) -> Self {
        QueueProxy {
            r: self.r.clone(),
            native: self.native.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for QueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueProxy({:?})", self.r)
    }
}

impl<T> Proxy for QueueProxy<T> {
    fn label() -> String {
        label("Queue", &[std::any::type_name::<T>()])
    }
    fn from_ref(r: ObjRef) -> Self {
        QueueProxy {
            r,
            native: Arc::new(OnceLock::new()),
            _type: PhantomData,
        }
    }
    fn obj_ref(&self) -> &ObjRef {
        &self.r
    }
}

impl<T> Serialize for QueueProxy<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_proxy(self, s)
    }
}

impl<'de, T> Deserialize<'de> for QueueProxy<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_proxy(d)
    }
}

impl<T> QueueProxy<T> {
    /// The native queue for this process, with its manager's link, if it is local.
    fn native(&self) -> Result<Option<(&Items, Arc<super::super::link::Link>)>> {
        let Some(link) = self.r.link() else {
            return Ok(None);
        };
        let link = link?;
        if link.is_tcp() {
            return Ok(None);
        }
        if self.native.get().is_none() {
            let q: Items = self.r.call(NATIVE, &())?;
            let _ = self.native.set(Some(q));
        }
        Ok(self
            .native
            .get()
            .and_then(Option::as_ref)
            .map(|q| (q, link)))
    }
}

/// A native queue's error in the proxy's terms: the queue is shut down when the manager drops
/// it or shuts down.
fn native_error(e: Error) -> Error {
    match e {
        Error::ShutDown => Error::ManagerShutdown,
        other => other,
    }
}

/// Waits in slices on the native queue until `attempt` answers: between slices the manager's
/// life and the deadline are checked.
fn native_sliced<R>(
    link: &super::super::link::Link,
    wait: Wait,
    mut attempt: impl FnMut(Duration) -> Option<Result<R>>,
) -> Result<Option<R>> {
    let deadline = deadline(wait);
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(d) => SLICE.min(d.saturating_duration_since(Instant::now())),
        };
        if let Some(r) = attempt(slice) {
            return r.map(Some);
        }
        link.check_alive()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// Puts `item`, waiting up to `wait` for room (`None`: as long as it takes); gives it back
    /// when the queue stayed full.
    fn put_with(&self, item: T, wait: Wait) -> std::result::Result<(), TryPutError<T>> {
        let encoded = match Encoded::of(&item) {
            Ok(e) => e,
            Err(e) => return Err(TryPutError::Failed(item, e)),
        };
        let native = match self.native() {
            Ok(n) => n,
            Err(e) => return Err(TryPutError::Failed(item, e)),
        };
        let Some((q, link)) = native else {
            return match call_answer_bounded::<_, ()>(&self.r, PUT, &(encoded, wait), wait) {
                Ok(()) => Ok(()),
                Err(Error::Full) => Err(TryPutError::Full(item)),
                Err(e) => Err(TryPutError::Failed(item, e)),
            };
        };
        if let Err(e) = link.check_alive() {
            return Err(TryPutError::Failed(item, e));
        }
        let mut encoded = Some(encoded);
        let put = native_sliced(&link, wait, |slice| {
            match q.put_timeout(encoded.take().expect("kept"), slice) {
                Ok(()) => Some(Ok(())),
                Err(TryPutError::Full(back)) => {
                    encoded = Some(back);
                    None
                }
                Err(TryPutError::Failed(_, e)) => Some(Err(native_error(e))),
            }
        });
        match put {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(TryPutError::Full(item)),
            Err(e) => Err(TryPutError::Failed(item, e)),
        }
    }

    /// Takes the oldest item, waiting up to `wait` for one.
    fn get_with(&self, wait: Wait) -> Result<T> {
        let Some((q, link)) = self.native()? else {
            let item: Encoded = call_answer_bounded(&self.r, GET, &(wait,), wait)?;
            return item.decode();
        };
        link.check_alive()?;
        // An item there now is taken without a look at the clock.
        match q.try_get() {
            Ok(item) => return item.decode(),
            Err(Error::Empty) if wait == Some(Duration::ZERO) => return Err(Error::Empty),
            Err(Error::Empty) => {}
            Err(e) => return Err(native_error(e)),
        }
        let Some(death) = link.death_fd() else {
            let got = native_sliced(&link, wait, |slice| match q.get_timeout(slice) {
                Ok(item) => Some(Ok(item)),
                Err(Error::Empty) => None,
                Err(e) => Some(Err(native_error(e))),
            })?;
            return got.ok_or(Error::Empty)?.decode();
        };
        // Wait for an item or for the manager's death, whichever comes first: a killed
        // manager is noticed as promptly as by a lock or an event.
        let deadline = deadline(wait);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(SLICE, |l| l.min(SLICE));
            let objects: [&dyn crate::connection::Waitable; 2] = [q, &death];
            let ready = crate::connection::wait(&objects, Some(slice))?;
            match q.try_get() {
                Ok(item) => return item.decode(),
                Err(Error::Empty) => {}
                Err(e) => return Err(native_error(e)),
            }
            link.check_alive()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Empty);
            }
            if ready.contains(&1) {
                // The anchor is readable but the manager lives (a notice other than shutdown,
                // or someone else reading it): wait on the queue alone for a moment.
                if let Ok(item) = q.get_timeout(Duration::from_millis(1)) {
                    return item.decode();
                }
            }
        }
    }

    /// Puts `item`, waiting while a bounded queue is full. An item that cannot be encoded is
    /// [`Error::Codec`], and takes no room in the queue.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_with(item, None).map_err(Error::from)
    }

    /// Puts `item`, waiting at most `timeout` for room; [`TryPutError::Full`], with the item, if
    /// none came (`?` turns it into [`Error::Full`]).
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), TryPutError<T>> {
        self.put_with(item, Some(timeout))
    }

    /// Puts `item` if there is room now; [`TryPutError::Full`] with the item otherwise.
    pub fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        self.put_with(item, Some(Duration::ZERO))
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
        match self.native()? {
            Some((q, link)) => link.check_alive().map(|()| q.qsize()),
            None => self.r.call(QSIZE, &()),
        }
    }

    /// Whether the queue holds no items.
    pub fn is_empty(&self) -> Result<bool> {
        match self.native()? {
            Some((q, link)) => link.check_alive().map(|()| q.is_empty()),
            None => self.r.call(IS_EMPTY, &()),
        }
    }

    /// Whether a bounded queue holds its maximum (always false when unbounded).
    pub fn is_full(&self) -> Result<bool> {
        match self.native()? {
            Some((q, link)) => link.check_alive().map(|()| q.is_full()),
            None => self.r.call(IS_FULL, &()),
        }
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
        match self.q.native()? {
            Some((q, link)) => {
                link.check_alive()?;
                q.task_done().map_err(native_error)
            }
            None => self.q.r.call(TASK_DONE, &()),
        }
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_with(None)
    }

    /// Like [`join`](JoinableQueueProxy::join), giving up after `timeout` with
    /// [`Error::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_with(Some(timeout))
    }

    fn join_with(&self, wait: Wait) -> Result<()> {
        let Some((q, link)) = self.q.native()? else {
            return self.q.r.call_bounded(JOIN, &(wait,), wait);
        };
        let joined = native_sliced(&link, wait, |slice| match q.join_timeout(slice) {
            Ok(()) => Some(Ok(())),
            Err(Error::Timeout) => None,
            Err(e) => Some(Err(native_error(e))),
        })?;
        joined.ok_or(Error::Timeout)
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
