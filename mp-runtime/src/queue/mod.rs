//! `Queue`, `SimpleQueue` and `JoinableQueue`: multi-producer, multi-consumer FIFO queues shared
//! between processes (Python's `multiprocessing.Queue` family).
//!
//! There is no feeder thread. `put` encodes the item in the caller (an encoding error is returned
//! by `put` itself) and copies it into shared memory before returning, so an item whose `put`
//! returned `Ok` is delivered even if its producer exits or is SIGKILLed right after. The queue
//! lives in anonymous shared memory passed as a file descriptor, so nothing is left behind by a
//! `kill -9`. `qsize` is exact: the difference of two counters that move with the items.
//!
//! **Design** (details in `ring.rs`, `wake.rs`, `side.rs`). Items are records in a shared ring.
//! Producers serialize on one robust futex lock and consumers on another, and each side writes
//! only its own cache lines and the one word that publishes its progress (count and offset
//! together, so every transition is a single store and a process killed at any instruction
//! leaves a consistent ring). A producer looks at the consumers' progress only when the room it
//! last saw runs out; a consumer looks at the producers' only when the records it last saw run
//! out, and then takes the whole run. A waiting side spins on an adaptive budget, looking only
//! every couple of microseconds so as not to pull the other side's cache line away, then sleeps
//! on a futex word that the busy side reads (never writes) while nobody sleeps; the store/load
//! ordering between the two is paid by the sleeper (`membarrier`), not by every `put` and `get`.
//! A holder of either lock that dies does not block the others (the locks are robust).
//! `docs/PERFORMANCE.md` has the figures.
//!
//! An unbounded queue keeps pending items in a 256 MiB shared ring whose pages are allocated as
//! items arrive; a steady flow keeps reusing the ring's first pages, and when the queue drains
//! after growing, all but its first 4 MiB are returned to the kernel. Items over 16 MiB live in
//! memory of their own. Byte buffers are fastest as `serde_bytes::ByteBuf` (one bytes value
//! instead of a sequence of `u8`).
//!
//! Handles inside items (connections, queues, `Handle`s) travel as descriptors, on a side
//! channel that never blocks `put`: an unbounded queue takes items with handles until the
//! kernel's limit on descriptors in flight (the open-file limit of the user, `ulimit -n`, unless
//! privileged) and then fails at once with [`Error::Full`]; a bounded one waits for room.

mod barrier;
mod crash;
mod put_error;
mod ready;
mod ring;
mod side;
mod wake;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::put_error::TryPutError;
use self::ring::{Ring, RingFds};
use crate::codec;
use crate::connection::{FdOwned, FdRef, Waitable};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;

/// Encode buffers above this size are not kept for the next `put`.
const SCRATCH_KEEP: usize = 16 << 20;

/// Runs `f` with this thread's encode buffer, emptied: a steady flow of items reuses one warm
/// buffer instead of allocating (and faulting in) a new one per `put`.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.with(|s| s.take());
    buf.clear();
    let result = f(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| s.set(buf));
    }
    result
}

/// The limit of a bounded queue; zero is an error (zero means unbounded inside the ring).
fn checked_limit(max_items: usize) -> Result<u64> {
    if max_items == 0 {
        return Err(Error::InvalidArgument {
            message: "a bounded queue needs room for at least one item; use new() for an \
                      unbounded queue"
                .into(),
        });
    }
    Ok(max_items as u64)
}

struct Shared {
    ring: Ring,
    closed: AtomicBool,
}

/// A FIFO queue between any number of producer and consumer processes.
///
/// Items are copied into shared memory by `put` itself: one whose `put` returned survives its
/// producer's SIGKILL, and a consumer killed at any point loses at most the item it was taking.
/// Handles inside items travel on a side channel: an unbounded queue takes items with handles
/// until the kernel's limit on descriptors in flight for the user (the open-file limit,
/// `ulimit -n`, unless privileged), then `put` fails at once with [`Error::Full`]; a bounded
/// queue waits for room there as when it is full.
///
/// ```
/// let q = mp::Queue::bounded(1)?;
/// assert!(q.try_put(1).is_ok());
/// assert!(matches!(q.try_put(2), Err(mp::TryPutError::Full(2))));
/// assert_eq!(q.qsize(), 1);
/// assert_eq!(q.get()?, 1);
/// assert!(matches!(q.try_get(), Err(mp::Error::Empty)));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Queue<T> {
    shared: Arc<Shared>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    /// Another handle on the same queue (in this process).
    fn clone(&self) -> Self {
        Queue {
            shared: self.shared.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue.
    pub fn new() -> Result<Self> {
        Self::with_limit(0)
    }

    /// A queue that holds at most `max_items` items: `put` waits while it is full. Zero is an
    /// error (use [`Queue::new`] for an unbounded queue).
    pub fn bounded(max_items: usize) -> Result<Self> {
        Self::with_limit(checked_limit(max_items)?)
    }

    fn with_limit(max_items: u64) -> Result<Self> {
        Ok(Queue {
            shared: Arc::new(Shared {
                ring: Ring::create(max_items, ring::DEFAULT_RING)?,
                closed: AtomicBool::new(false),
            }),
            _type: PhantomData,
        })
    }

    fn ring(&self) -> Result<&Ring> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(&self.shared.ring)
    }

    fn put_ref(&self, item: &T, block: bool, timeout: Option<Duration>) -> Result<()> {
        let ring = self.ring()?;
        let deadline = Deadline::after(timeout);
        with_scratch(|buf| {
            let fds = codec::encode_into(item, buf)?;
            ring.put(buf, &fds, block, deadline)
        })
    }

    fn put_or_give_back(
        &self,
        item: T,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), TryPutError<T>> {
        match self.put_ref(&item, timeout != Some(Duration::ZERO), timeout) {
            Ok(()) => Ok(()),
            Err(Error::Full) => Err(TryPutError::Full(item)),
            Err(e) => Err(TryPutError::Failed(item, e)),
        }
    }

    fn get_with(&self, block: bool, timeout: Option<Duration>) -> Result<T> {
        let ring = self.ring()?;
        ring.get(block, Deadline::after(timeout), |bytes, fds| {
            codec::decode(bytes, fds)
        })
    }

    /// Puts `item`, waiting while a bounded queue is full. An item that cannot be encoded is
    /// [`Error::Codec`], and takes no room in the queue. An unbounded queue never waits: at the
    /// kernel's limit on handles in flight (see [`Queue`]) it is [`Error::Full`].
    pub fn put(&self, item: T) -> Result<()> {
        self.put_ref(&item, true, None)
    }

    /// Puts `item`, waiting at most `timeout` for room. [`TryPutError::Full`] if none came, with
    /// the item; any other failure is [`TryPutError::Failed`], also with the item.
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), TryPutError<T>> {
        self.put_or_give_back(item, Some(timeout))
    }

    /// Puts `item` if there is room now; [`TryPutError::Full`] with the item otherwise.
    pub fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        self.put_or_give_back(item, Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting until there is one.
    pub fn get(&self) -> Result<T> {
        self.get_with(true, None)
    }

    /// Takes the oldest item, waiting at most `timeout`; [`Error::Empty`] if none came.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(true, Some(timeout))
    }

    /// Takes the oldest item if there is one now; [`Error::Empty`] otherwise.
    pub fn try_get(&self) -> Result<T> {
        self.get_with(false, Some(Duration::ZERO))
    }

    /// Waits up to `timeout` until the queue has an item or was shut down, without taking one;
    /// false if the time passed first. (Another consumer may take the item before this one.)
    pub(crate) fn wait_for_item(&self, timeout: Duration) -> Result<bool> {
        Ok(self.ring()?.wait_for_item(Deadline::after(Some(timeout))))
    }
}

impl<T> Queue<T> {
    /// The number of items in the queue (exact; unlike Python's, also on macOS).
    pub fn qsize(&self) -> usize {
        self.shared.ring.count() as usize
    }

    /// Whether the queue holds no items.
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue holds its maximum (always false when unbounded).
    pub fn is_full(&self) -> bool {
        self.shared.ring.is_full()
    }

    /// Says that this process will use the queue no more: further `put` and `get` through any
    /// handle of it in this process are [`Error::Closed`]. Items already put stay in the
    /// queue for other processes. Idempotent.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Shuts the queue down for every process (Python 3.13's `Queue.shutdown`): later `put`s are
    /// [`Error::ShutDown`], and so is `get` once the queue is empty; everyone blocked in `put` or
    /// `get` wakes up. With `immediate`, the pending items are discarded (and counted as done
    /// for [`JoinableQueue::join`]), so `get` fails at once.
    ///
    /// ```
    /// let q = mp::Queue::new()?;
    /// q.put(1)?;
    /// q.shutdown(false);
    /// assert!(matches!(q.put(2), Err(mp::Error::ShutDown)));
    /// assert_eq!(q.get()?, 1);
    /// assert!(matches!(q.get(), Err(mp::Error::ShutDown)));
    /// # Ok::<(), mp::Error>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.shared.ring.shutdown(immediate)
    }

    /// Whether [`shutdown`](Queue::shutdown) was called, in any process.
    pub fn is_shut_down(&self) -> bool {
        self.shared.ring.is_shut_down()
    }

    pub(crate) fn hold_lock_forever(&self) {
        self.shared.ring.hold_lock_forever()
    }
}

impl<T> Waitable for Queue<T> {
    /// Ready when the queue has an item or was shut down.
    fn begin_wait(&self) -> BorrowedFd<'_> {
        self.shared.ring.begin_wait()
    }
    fn end_wait(&self) {
        self.shared.ring.end_wait()
    }
}

impl<T> Waitable for JoinableQueue<T> {
    fn begin_wait(&self) -> BorrowedFd<'_> {
        self.0.begin_wait()
    }
    fn end_wait(&self) {
        self.0.end_wait()
    }
}

impl<T> Waitable for SimpleQueue<T> {
    fn begin_wait(&self) -> BorrowedFd<'_> {
        self.0.begin_wait()
    }
    fn end_wait(&self) {
        self.0.end_wait()
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Queue qsize={}>", self.qsize())
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let ring = &self.shared.ring;
        let [a, b, event] = ring.other_fds();
        (FdRef(ring.region_fd()), FdRef(a), FdRef(b), FdRef(event)).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (region, side_a, side_b, event): (FdOwned, FdOwned, FdOwned, FdOwned) =
            Deserialize::deserialize(d)?;
        let ring = Ring::from_fds(RingFds {
            region: region.0,
            side_a: side_a.0,
            side_b: side_b.0,
            event: event.0,
        })
        .map_err(|e| codec::de_error::<D::Error>(&e))?;
        Ok(Queue {
            shared: Arc::new(Shared {
                ring,
                closed: AtomicBool::new(false),
            }),
            _type: PhantomData,
        })
    }
}

/// A queue whose consumers acknowledge each item with [`task_done`](JoinableQueue::task_done),
/// so that a producer can [`join`](JoinableQueue::join) until every item was processed.
///
/// ```
/// let q = mp::JoinableQueue::<u32>::new()?;
/// q.put(7)?;
/// assert_eq!(q.get()?, 7);
/// q.task_done()?;
/// q.join()?;
/// assert!(matches!(q.task_done(), Err(mp::Error::InvalidState { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct JoinableQueue<T>(Queue<T>);

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An unbounded joinable queue.
    pub fn new() -> Result<Self> {
        Queue::with_limit(0).map(JoinableQueue::of)
    }

    /// A joinable queue of at most `max_items` items.
    pub fn bounded(max_items: usize) -> Result<Self> {
        Queue::with_limit(checked_limit(max_items)?).map(JoinableQueue::of)
    }

    fn of(q: Queue<T>) -> Self {
        q.shared.ring.make_joinable();
        JoinableQueue(q)
    }

    /// Marks one item taken with `get` as processed. Calling it more times than items were
    /// taken is [`Error::InvalidState`].
    pub fn task_done(&self) -> Result<()> {
        if self.0.shared.ring.task_done() {
            Ok(())
        } else {
            Err(Error::state(
                "task_done() called more times than there were items put",
            ))
        }
    }

    /// Waits until every item put has been marked done (or discarded by an immediate
    /// [`shutdown`](Queue::shutdown)).
    ///
    /// An item taken by a consumer process that died (was killed) before its `task_done` does
    /// not keep `join` waiting: it is counted as lost (within about 50 ms of the death), and
    /// `join` returns [`Error::ItemsLost`] with how many once every other item is done. The
    /// lost items count as done from then on: the next `join` returns `Ok` (each loss is
    /// reported once, by one `join`). Items are counted per consumer process, so a
    /// `task_done` marks one of its own process's items first; up to 127 consumer processes
    /// at a time are told apart (the items of any more are never counted as lost).
    pub fn join(&self) -> Result<()> {
        joined(self.0.shared.ring.join(Deadline::NEVER))
    }

    /// Like [`join`](JoinableQueue::join), giving up after `timeout` with [`Error::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        joined(self.0.shared.ring.join(Deadline::after(Some(timeout))))
    }
}

fn joined(j: ring::Joined) -> Result<()> {
    match j {
        ring::Joined::Finished => Ok(()),
        ring::Joined::Lost(count) => Err(Error::ItemsLost { count }),
        ring::Joined::TimedOut => Err(Error::Timeout),
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    /// Every `Queue` method (`put`, `get`, `qsize`, …).
    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<JoinableQueue qsize={}>", self.0.qsize())
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(JoinableQueue)
    }
}

/// The minimal queue of Python's `SimpleQueue`: unbounded, with `put`, `get`, `is_empty` and
/// `close`.
///
/// ```
/// let q = mp::SimpleQueue::new()?;
/// q.put("a".to_string())?;
/// assert!(!q.is_empty());
/// assert_eq!(q.get()?, "a");
/// # Ok::<(), mp::Error>(())
/// ```
pub struct SimpleQueue<T>(Queue<T>);

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// An empty queue.
    pub fn new() -> Result<Self> {
        Queue::new().map(SimpleQueue)
    }
    /// Puts `item`.
    pub fn put(&self, item: T) -> Result<()> {
        self.0.put(item)
    }
    /// Takes the oldest item, waiting until there is one.
    pub fn get(&self) -> Result<T> {
        self.0.get()
    }
}

impl<T> SimpleQueue<T> {
    /// Whether the queue holds no items.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Ends this process's use of the queue (see [`Queue::close`]).
    pub fn close(&self) {
        self.0.close()
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<SimpleQueue empty={}>", self.0.is_empty())
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(SimpleQueue)
    }
}
