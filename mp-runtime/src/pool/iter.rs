//! The lazy iterators of `imap` and `imap_unordered`.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::arrived::Arrived;
use super::chunking::Decoded;
use super::scheduler::{Answer, ChunkResult, Core, Sink};
use crate::error::{Error, Result};
use crate::sys::poll::Deadline;
use crate::sys::spin_wait::SpinWait;

/// A finished chunk, still encoded: the consumer decodes it when it takes it.
struct Finished {
    /// Its index among the iterator's chunks.
    chunk: usize,
    /// How many items it has.
    len: usize,
    results: Arrived,
}

struct Ready {
    /// Finished chunks by chunk index (ordered) ...
    ordered: BTreeMap<usize, Finished>,
    /// ... or in the order they finished.
    arrived: VecDeque<Finished>,
    /// Consumers asleep on the condition variable: a chunk that arrives while the consumer is
    /// busy costs no wake-up call.
    sleepers: usize,
    /// The count of arrivals at which a sleeping consumer wants to be woken: while results
    /// stream in it takes several chunks per wake-up, instead of costing the pool's thread a
    /// wake-up call per chunk.
    wake_at: usize,
}

/// Collects results a chunk at a time as they arrive, keyed by chunk (ordered) or in arrival
/// order; the iterator takes a whole chunk per lock, and decodes it (`arrived`).
pub(crate) struct ImapSink {
    ordered: bool,
    chunksize: usize,
    /// The index plus one of the one chunk shorter than `chunksize` (the last; 0: none yet),
    /// and its length: set before that chunk is submitted, so before it completes.
    short_chunk: AtomicUsize,
    short_len: AtomicUsize,
    ready: Mutex<Ready>,
    cv: Condvar,
    /// Chunks completed so far, readable without the lock: what the consumer watches while it
    /// spins before sleeping.
    arrivals: AtomicUsize,
}

impl Sink for ImapSink {
    fn complete(&self, chunk: usize, results: ChunkResult<'_>) {
        let len = self.len_of(chunk, results.items());
        let r = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        self.arrive(r, chunk, len, Arrived::keep(results));
    }

    fn keeps_answers(&self) -> bool {
        true
    }

    fn complete_answer(&self, chunk: usize, answer: Answer) {
        let len = self.len_of(chunk, answer.items());
        let r = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        self.arrive(r, chunk, len, Arrived::Answer(answer));
    }
}

impl ImapSink {
    /// How many items chunk `chunk` holds: `items` if its results are counted (one per item),
    /// else its size as submitted.
    fn len_of(&self, chunk: usize, items: Option<usize>) -> usize {
        items.unwrap_or_else(|| {
            if self.short_chunk.load(Ordering::Acquire) == chunk + 1 {
                self.short_len.load(Ordering::Acquire)
            } else {
                self.chunksize
            }
        })
    }

    /// Files a finished chunk for the consumer, and wakes it if it waits for this many.
    fn arrive(&self, mut r: MutexGuard<'_, Ready>, chunk: usize, len: usize, results: Arrived) {
        let finished = Finished {
            chunk,
            len,
            results,
        };
        if self.ordered {
            r.ordered.insert(chunk, finished);
        } else {
            r.arrived.push_back(finished);
        }
        let arrived = self.arrivals.fetch_add(1, Ordering::Release) + 1;
        let wake = r.sleepers > 0 && arrived >= r.wake_at;
        drop(r);
        if wake {
            self.cv.notify_all();
        }
    }
}

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per input item.
///
/// It takes input only as results are consumed: a few chunks per worker are in flight ahead of
/// the consumer (up to 256 chunks while results stream in, so that the workers never wait for
/// it, and at most 32 MiB of encoded chunks, though always four per worker), so an endless or
/// huge input is fine. Where the input is an
/// [`ExactSizeIterator`], so is this (progress bars such as `indicatif`'s `.progress()` show a
/// length). Dropping it stops taking input; tasks already submitted still run. With a chunk size
/// above 1, an item that fails fails alone: the others of its chunk yield their results.
pub struct IMap<R, I> {
    core: Arc<Core>,
    sink: Arc<ImapSink>,
    worker: &'static str,
    input: I,
    chunksize: usize,
    window: usize,
    /// The pool's worker count, for [`chunks_ahead`].
    processes: usize,
    /// The encoded size of the chunks submitted so far.
    encoded: usize,
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
    /// While results come one at a time, the next chunk usually completes within a round trip:
    /// the consumer looks for it briefly before it sleeps, which saves the pool's thread a
    /// wake-up call and this one a wake-up.
    spin: SpinWait,
    /// How many chunks the next sleep waits for (see [`BATCH_DELAY`]).
    batch: usize,
    _r: PhantomData<fn() -> R>,
}

/// How many bytes of encoded chunks are held, at most, ahead of the results taken (unless that
/// is fewer than four chunks per worker): enough to keep every worker of a pool or a cluster
/// busy with large items, while their buffers are reused instead of a large input's encoding
/// being held, and its pages touched, at once. Small items never reach it.
const AHEAD_BYTES: usize = 32 << 20;

/// How many chunks may be unfinished ahead of the results taken, with `encoded` bytes in the
/// first `chunks` encoded: as many as [`AHEAD_BYTES`] hold at their average size, but at least
/// four per worker. `imap` and a blocking `map` both keep to it.
pub(crate) fn chunks_ahead(encoded: usize, chunks: usize, processes: usize) -> usize {
    let per_chunk = (encoded / chunks.max(1)).max(1);
    (AHEAD_BYTES / per_chunk).max(4 * processes.max(1))
}

/// The most chunks kept in flight ahead of a consumer whose results stream in: four times what
/// it waits for at once (see [`IMap::ahead`]), so that the workers keep a deep queue while it
/// sleeps.
const STREAM_WINDOW: usize = 256;

/// The longest a finished chunk waits for others while the consumer sleeps until several have
/// arrived. A consumer waits for more than one chunk only after waits that ended quickly
/// (results stream in), and goes back to one chunk at a time at the first wait that reaches
/// this bound, so a slow stream pays it at most once before its results come one by one again.
///
/// While results stream in, the consumer neither spins nor is woken per chunk: on a machine
/// with fewer CPUs than the consumer, the pool's thread and the workers together, a consumer
/// that looks for each chunk keeps its CPU from the workers (the kernel sees it busy and moves
/// nobody there), and one woken per chunk costs the pool's thread a wake-up call per chunk.
const BATCH_DELAY: Duration = Duration::from_millis(1);

/// A wait shorter than this means results stream in: the next one may wait for twice as many
/// chunks.
const SHORT_WAIT: Duration = Duration::from_micros(200);

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
                short_chunk: AtomicUsize::new(0),
                short_len: AtomicUsize::new(0),
                ready: Mutex::new(Ready {
                    ordered: BTreeMap::new(),
                    arrived: VecDeque::new(),
                    sleepers: 0,
                    wake_at: 0,
                }),
                cv: Condvar::new(),
                arrivals: AtomicUsize::new(0),
            }),
            worker,
            input,
            chunksize,
            window: chunksize * (processes.max(1) * 16).max(32),
            processes,
            encoded: 0,
            next_chunk: 0,
            submitted: 0,
            yielded: 0,
            exhausted: false,
            current: Decoded::Each(Vec::new().into_iter()),
            next_out: 0,
            limit,
            spin: SpinWait::pool(),
            batch: 1,
            _r: PhantomData,
        }
    }

    /// How many items may be in flight ahead of the consumer: a few chunks per worker, and while
    /// results stream in (the consumer sleeps until several chunks are back), four times that
    /// many chunks, up to [`STREAM_WINDOW`]; but no more chunks than [`chunks_ahead`] allows.
    fn ahead(&self) -> usize {
        let items = self
            .window
            .max(self.chunksize * (4 * self.batch).min(STREAM_WINDOW));
        if self.next_chunk == 0 {
            return items;
        }
        let chunks = chunks_ahead(self.encoded, self.next_chunk, self.processes);
        items.min(chunks.saturating_mul(self.chunksize))
    }

    /// Submits chunks until the window ahead of the consumer is full or the input ends.
    fn feed(&mut self) {
        while !self.exhausted && self.submitted - self.yielded < self.ahead() {
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
                self.sink.short_len.store(n, Ordering::Release);
                self.sink.short_chunk.store(index + 1, Ordering::Release);
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
            if let Ok((_, bytes)) = submitted {
                self.encoded += bytes;
            }
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
    fn take_chunk(&mut self, r: &mut Ready) -> Option<Finished> {
        if self.sink.ordered {
            let c = r.ordered.remove(&self.next_out);
            if c.is_some() {
                self.next_out += 1;
            }
            c
        } else {
            r.arrived.pop_front()
        }
    }

    /// Makes the next finished chunk, if it is there, the one being yielded (decoding it once
    /// the lock is released); else gives the lock back.
    fn start_next<'a>(&mut self, mut r: MutexGuard<'a, Ready>) -> Option<MutexGuard<'a, Ready>> {
        let f = match self.take_chunk(&mut r) {
            Some(f) => f,
            None => return Some(r),
        };
        drop(r);
        self.current = f.results.decode(f.len, Some(f.chunk * self.chunksize));
        None
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
            let Some(r) = self.start_next(sink.ready.lock().unwrap_or_else(|p| p.into_inner()))
            else {
                continue;
            };
            drop(r);
            // Chunks still out: a sleep for several leaves at least half of them running.
            let want = match deadline {
                Some(_) => 1,
                None => self
                    .batch
                    .min(self.next_chunk.saturating_sub(seen) / 2)
                    .max(1),
            };
            if want == 1 {
                let until =
                    Deadline::after(deadline.map(|d| d.saturating_duration_since(Instant::now())));
                if self
                    .spin
                    .spin_until(until, || sink.arrivals.load(Ordering::Acquire) != seen)
                {
                    // Found within a spin: results come quickly, the next wait may batch.
                    self.batch = self.batch.max(2);
                }
            }
            let Some(mut r) = self.start_next(sink.ready.lock().unwrap_or_else(|p| p.into_inner()))
            else {
                continue;
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Some(Err(Error::Timeout));
            }
            let seen = sink.arrivals.load(Ordering::Acquire);
            r.wake_at = seen + want;
            r.sleepers += 1;
            let bound = if want > 1 {
                Some(now + BATCH_DELAY)
            } else {
                deadline
            };
            let mut r = match bound {
                None => sink.cv.wait(r).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    sink.cv
                        .wait_timeout(r, d.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            r.sleepers -= 1;
            drop(r);
            let got = sink.arrivals.load(Ordering::Acquire) - seen;
            self.batch = match (got >= want, now.elapsed() < SHORT_WAIT) {
                (true, true) => (self.batch * 2).min(STREAM_WINDOW / 4),
                (true, false) => self.batch,
                // The bound passed first: back to one chunk at a time.
                (false, _) => 1,
            };
            if want == 1 {
                self.spin.woke();
            }
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
