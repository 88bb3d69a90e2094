//! The lazy iterators of `imap` and `imap_unordered`.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::chunking::{decode_item, encode_chunk};
use super::scheduler::{Core, ItemResult, Sink, Task};
use crate::error::{Error, Result};

#[derive(Default)]
struct Ready<R> {
    ordered: BTreeMap<usize, Result<R>>,
    arrived: VecDeque<Result<R>>,
}

/// Collects results as they arrive, keyed by item index (ordered) or in arrival order.
pub(crate) struct ImapSink<R> {
    ordered: bool,
    chunksize: usize,
    ready: Mutex<Ready<R>>,
    cv: Condvar,
}

impl<R: DeserializeOwned + Send> Sink for ImapSink<R> {
    fn complete(&self, chunk: usize, results: Vec<ItemResult<'_>>) {
        let base = chunk * self.chunksize;
        let decoded: Vec<Result<R>> = results.into_iter().map(decode_item).collect();
        let mut r = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        for (i, v) in decoded.into_iter().enumerate() {
            if self.ordered {
                r.ordered.insert(base + i, v);
            } else {
                r.arrived.push_back(v);
            }
        }
        drop(r);
        self.cv.notify_all();
    }
}

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per input item.
///
/// It takes input only as results are consumed: at most a few chunks per worker are in flight
/// ahead of the consumer, so an endless or huge input is fine. Where the input is an
/// [`ExactSizeIterator`], so is this (progress bars such as `indicatif`'s `.progress()` show a
/// length). Dropping it stops taking input; tasks already submitted still run.
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
    scratch: Vec<u8>,
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
    ) -> Self {
        core.feeder(true);
        let chunksize = chunksize.max(1);
        IMap {
            core,
            sink: Arc::new(ImapSink {
                ordered,
                chunksize,
                ready: Mutex::new(Ready {
                    ordered: BTreeMap::new(),
                    arrived: VecDeque::new(),
                }),
                cv: Condvar::new(),
            }),
            worker,
            input,
            chunksize,
            window: chunksize * (processes.max(1) * 16).max(32),
            next_chunk: 0,
            submitted: 0,
            yielded: 0,
            exhausted: false,
            scratch: Vec::new(),
            _r: PhantomData,
        }
    }

    /// Submits chunks until the window ahead of the consumer is full or the input ends.
    fn feed(&mut self) {
        while !self.exhausted && self.submitted - self.yielded < self.window {
            let index = self.next_chunk;
            let (n, chunk) = encode_chunk(&mut self.input, self.chunksize, &mut self.scratch);
            if n == 0 {
                self.exhausted = true;
                break;
            }
            self.next_chunk += 1;
            self.submitted += n;
            if n < self.chunksize {
                self.exhausted = true;
            }
            let sink: Arc<dyn Sink> = self.sink.clone();
            match chunk {
                Ok(c) => {
                    let nitems = c.nitems;
                    if let Err(e) = self
                        .core
                        .submit(Task::new(self.worker, index, c, sink), true)
                    {
                        let text = e.to_string();
                        self.sink.complete(
                            index,
                            (0..nitems)
                                .map(|_| Err(Error::state(text.clone())))
                                .collect(),
                        );
                    }
                }
                Err(e) => {
                    // The input ended inside this chunk or an item failed to encode: fail it.
                    let text = e.to_string();
                    self.sink.complete(
                        index,
                        (0..n)
                            .map(|_| {
                                Err(Error::Codec {
                                    message: text.clone(),
                                })
                            })
                            .collect(),
                    );
                }
            }
        }
    }

    fn take_ready(&mut self) -> Option<Result<R>> {
        let mut r = self.sink.ready.lock().unwrap_or_else(|p| p.into_inner());
        let v = if self.sink.ordered {
            r.ordered.remove(&self.yielded)
        } else {
            r.arrived.pop_front()
        };
        if v.is_some() {
            self.yielded += 1;
        }
        v
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        loop {
            self.feed();
            if let Some(v) = self.take_ready() {
                return Some(v);
            }
            if self.exhausted && self.yielded >= self.submitted {
                return None;
            }
            let r = self.sink.ready.lock().unwrap_or_else(|p| p.into_inner());
            let has = if self.sink.ordered {
                r.ordered.contains_key(&self.yielded)
            } else {
                !r.arrived.is_empty()
            };
            if has {
                continue;
            }
            match deadline {
                None => drop(self.sink.cv.wait(r).unwrap_or_else(|p| p.into_inner())),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Some(Err(Error::Timeout));
                    }
                    drop(
                        self.sink
                            .cv
                            .wait_timeout(r, d - now)
                            .unwrap_or_else(|p| p.into_inner()),
                    );
                }
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
