//! The lazy iterators of `imap` and `imap_unordered`.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunking::{Decoded, decode_chunk};
use super::scheduler::{ChunkResult, Core, Sink};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;
use crate::sys::spin_wait::SpinWait;

#[derive(Default)]
struct Ready<R> {
    /// Finished chunks by chunk index (ordered) ...
    ordered: BTreeMap<usize, Decoded<R>>,
    /// ... or in the order they finished.
    arrived: VecDeque<Decoded<R>>,
    /// Consumers asleep on the condition variable: a chunk that arrives while the consumer is
    /// busy costs no wake-up call.
    sleepers: usize,
}

/// Collects results a chunk at a time as they arrive, keyed by chunk (ordered) or in arrival
/// order; the iterator takes a whole chunk per lock.
pub(crate) struct ImapSink<R> {
    ordered: bool,
    chunksize: usize,
    /// Item counts of submitted chunks shorter than `chunksize` (the last one).
    sizes: Mutex<std::collections::HashMap<usize, usize>>,
    ready: Mutex<Ready<R>>,
    cv: Condvar,
    /// Chunks completed so far, readable without the lock: what the consumer watches while it
    /// spins before sleeping.
    arrivals: AtomicUsize,
}

impl<R: DeserializeOwned + Send> Sink for ImapSink<R> {
    fn complete(&self, chunk: usize, results: ChunkResult<'_>) {
        let n = match &results {
            ChunkResult::Items(v) => v.len(),
            ChunkResult::Batch(_) | ChunkResult::Hole { .. } => self
                .sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&chunk)
                .unwrap_or(self.chunksize),
        };
        let decoded = decode_chunk(results, n, Some(chunk * self.chunksize));
        let mut r = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if self.ordered {
            r.ordered.insert(chunk, decoded);
        } else {
            r.arrived.push_back(decoded);
        }
        let sleepers = r.sleepers > 0;
        self.arrivals.fetch_add(1, Ordering::Release);
        drop(r);
        if sleepers {
            self.cv.notify_all();
        }
    }
}

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per input item.
///
/// It takes input only as results are consumed: at most a few chunks per worker are in flight
/// ahead of the consumer, so an endless or huge input is fine. Where the input is an
/// [`ExactSizeIterator`], so is this (progress bars such as `indicatif`'s `.progress()` show a
/// length). Dropping it stops taking input; tasks already submitted still run. With a chunk size
/// above 1, an item that fails fails alone: the others of its chunk yield their results.
pub struct IMap<R, I> {
    core: Arc<Core>,
    sink: Arc<ImapSink<R>>,
    worker: &'static str,
    input: I,
    chunksize: usize,
    window: usize,
    next_chunk: usize,
    submitted: usize,
    yielded: usize,
    exhausted: bool,
    /// The chunk being yielded.
    current: Decoded<R>,
    /// The next chunk to yield, in ordered mode.
    next_out: usize,
    /// The time limit of each item (`None`: the pool's).
    limit: Option<Duration>,
    /// The next chunk usually completes within a round trip: the consumer looks for it briefly
    /// before it sleeps, which saves the pool's thread a wake-up call and this one a wake-up.
    spin: SpinWait,
    _r: PhantomData<fn() -> R>,
}

impl<R, I> IMap<R, I>
where
    R: DeserializeOwned + Send + 'static,
    I: Iterator,
    I::Item: Serialize,
{
    pub(crate) fn new(
        core: Arc<Core>,
        worker: &'static str,
        input: I,
        chunksize: usize,
        processes: usize,
        ordered: bool,
        limit: Option<Duration>,
    ) -> Self {
        core.feeder(true);
        let chunksize = chunksize.max(1);
        IMap {
            core,
            sink: Arc::new(ImapSink {
                ordered,
                chunksize,
                sizes: Mutex::new(std::collections::HashMap::new()),
                ready: Mutex::new(Ready {
                    ordered: BTreeMap::new(),
                    arrived: VecDeque::new(),
                    sleepers: 0,
                }),
                cv: Condvar::new(),
                arrivals: AtomicUsize::new(0),
            }),
            worker,
            input,
            chunksize,
            window: chunksize * (processes.max(1) * 16).max(32),
            next_chunk: 0,
            submitted: 0,
            yielded: 0,
            exhausted: false,
            current: Decoded::Each(Vec::new().into_iter()),
            next_out: 0,
            limit,
            spin: SpinWait::pool(),
            _r: PhantomData,
        }
    }

    /// Submits chunks until the window ahead of the consumer is full or the input ends.
    fn feed(&mut self) {
        while !self.exhausted && self.submitted - self.yielded < self.window {
            let index = self.next_chunk;
            let items: Vec<I::Item> = self.input.by_ref().take(self.chunksize).collect();
            let n = items.len();
            if n < self.chunksize {
                self.exhausted = true;
            }
            if n == 0 {
                break;
            }
            self.next_chunk += 1;
            self.submitted += n;
            if n < self.chunksize {
                self.sink
                    .sizes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(index, n);
            }
            let sink: Arc<dyn Sink> = self.sink.clone();
            let submitted = super::submit_part(
                &self.core,
                self.worker,
                index,
                &items,
                sink,
                true,
                self.limit,
            );
            if let Err(e) = submitted {
                // Items that cannot be sent to another machine fail their chunk; a terminated
                // pool also ends the iteration (an endless input would otherwise yield errors
                // forever). An item that cannot be encoded fails alone (`submit_part`).
                if !matches!(e, Error::Codec { .. } | Error::NotPortable { .. }) {
                    self.exhausted = true;
                }
                let text = e.to_string();
                let fail = |_| {
                    Err(match &e {
                        Error::Codec { message, index } => Error::Codec {
                            message: message.clone(),
                            index: *index,
                        },
                        Error::NotPortable { type_name } => Error::NotPortable {
                            type_name: type_name.clone(),
                        },
                        _ => Error::state(text.clone()),
                    })
                };
                self.sink
                    .complete(index, ChunkResult::Items((0..n).map(fail).collect()));
            }
        }
    }

    /// Takes the next finished chunk, if it is there.
    fn take_chunk(&mut self, r: &mut Ready<R>) -> bool {
        let chunk = if self.sink.ordered {
            let c = r.ordered.remove(&self.next_out);
            if c.is_some() {
                self.next_out += 1;
            }
            c
        } else {
            r.arrived.pop_front()
        };
        match chunk {
            Some(c) => {
                self.current = c;
                true
            }
            None => false,
        }
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        loop {
            if let Some(v) = self.current.next() {
                self.yielded += 1;
                return Some(v);
            }
            self.feed();
            if self.exhausted && self.yielded >= self.submitted {
                return None;
            }
            let sink = self.sink.clone();
            let seen = sink.arrivals.load(Ordering::Acquire);
            let mut r = sink.ready.lock().unwrap_or_else(|p| p.into_inner());
            if self.take_chunk(&mut r) {
                continue;
            }
            drop(r);
            let until =
                Deadline::after(deadline.map(|d| d.saturating_duration_since(Instant::now())));
            self.spin
                .spin_until(until, || sink.arrivals.load(Ordering::Acquire) != seen);
            let mut r = sink.ready.lock().unwrap_or_else(|p| p.into_inner());
            if self.take_chunk(&mut r) {
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Some(Err(Error::Timeout));
            }
            r.sleepers += 1;
            let mut r = match deadline {
                None => sink.cv.wait(r).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    sink.cv
                        .wait_timeout(r, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            r.sleepers -= 1;
            self.spin.woke();
        }
    }

    /// The next result, waiting at most `timeout`: `Some(Err(Error::Timeout))` if none came in
    /// time (nothing is lost; ask again), `None` at the end (Python's `next(timeout)`).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(Instant::now().checked_add(timeout))
    }
}

impl<R, I> Iterator for IMap<R, I>
where
    R: DeserializeOwned + Send + 'static,
    I: Iterator,
    I::Item: Serialize,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let pending = self.submitted - self.yielded;
        if self.exhausted {
            return (pending, Some(pending));
        }
        let (lo, hi) = self.input.size_hint();
        (
            pending.saturating_add(lo),
            hi.and_then(|h| h.checked_add(pending)),
        )
    }
}

impl<R, I> ExactSizeIterator for IMap<R, I>
where
    R: DeserializeOwned + Send + 'static,
    I: ExactSizeIterator,
    I::Item: Serialize,
{
}

impl<R, I> Drop for IMap<R, I> {
    fn drop(&mut self) {
        self.core.feeder(false);
    }
}

impl<R, I> std::fmt::Debug for IMap<R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<IMap submitted={} yielded={}>",
            self.submitted, self.yielded
        )
    }
}
