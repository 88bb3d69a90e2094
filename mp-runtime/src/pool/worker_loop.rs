//! The child side of a pool: a runtime-registered worker that runs other registered workers by
//! name, many times, on what the pool sends it.
//!
//! It reads `Job` frames (from its lanes in memory shared with the pool, or its socket: see
//! `worker_channel`), runs every item of a job through the item's registered entry function
//! (catching panics), and answers each job with one `Done` frame before it starts the next, so
//! that the pool always knows which job a dead worker held.
//! It ends on `Stop` or end of stream. It ignores SIGINT, as Python's pool workers do: Ctrl-C in a
//! terminal reaches the whole process group, and the parent (not each worker) decides what to
//! stop; when the parent dies, its workers die with it (parent-death signal).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::wire::{self, Cursor};
use super::worker_channel::WorkerChannel;
use crate::codec;
use crate::connection::FdOwned;
use crate::error::{Error, Result};
use crate::registry::{self, EntryFn};
use crate::transport::frame::{HEADER_LEN, header, send_parts};
use crate::transport::reader::take_fds;
use crate::worker::{Input, Outcome};

/// The registered name of the pool's worker loop.
pub(crate) const WORKER_LOOP: &str = "mp::pool::worker_loop";

/// What the pool sends a worker process when it starts: its task socket, the initializer, and
/// its memory limits in bytes (soft, hard; 0 for none: see `pool::memory`).
pub(crate) type LoopArgs = (FdOwned, Option<(String, Vec<u8>)>, Vec<FdOwned>, (u64, u64));

/// The entry function of [`WORKER_LOOP`] (listed in the role table, `roles.rs`).
pub(crate) fn entry(input: Input<'_>) -> Outcome {
    let (sock, init, init_fds, (soft, hard)): LoopArgs = match codec::decode(input.bytes, input.fds)
    {
        Ok(a) => a,
        Err(e) => {
            return Outcome::Failed {
                message: format!("a pool's worker process started with bad arguments: {e}"),
            };
        }
    };
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let sock = sock.0;
    crate::sys::malloc::keep_freed_memory();
    if hard > 0
        && let Err(e) = super::memory::limit_data(hard)
    {
        return Outcome::Failed {
            message: format!("a pool worker could not set its memory limit (RLIMIT_DATA): {e}"),
        };
    }
    if let Some((name, args)) = init {
        let fds = init_fds.into_iter().map(|f| f.0).collect();
        if let Err(message) = run_initializer(&name, args, fds) {
            let mut buf = Vec::new();
            let at = wire::begin_frame(&mut buf);
            buf.push(wire::INIT_FAILED);
            wire::put_bytes(&mut buf, message.as_bytes());
            wire::end_frame(&mut buf, at, 0);
            let _ = send_parts(sock.as_fd(), &[&buf], &[]);
            return Outcome::Failed { message };
        }
    }
    match serve(sock.as_fd(), soft) {
        Ok(()) => Outcome::Returned {
            bytes: Vec::new(),
            fds: Vec::new(),
        },
        Err(e) => Outcome::Failed {
            message: format!(
                "a worker process of a pool (pid {}) stopped: {e}",
                std::process::id()
            ),
        },
    }
}

fn run_initializer(
    name: &str,
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
) -> std::result::Result<(), String> {
    let f = registry::find(name).map_err(|e| e.to_string())?;
    let name = registry::display_name(name);
    match run_one(
        f,
        Input {
            bytes: &bytes,
            fds,
            batch: false,
        },
    ) {
        Outcome::Returned { .. } => Ok(()),
        Outcome::Failed { message }
        | Outcome::Codec { message }
        | Outcome::Raised { message, .. } => {
            Err(format!("the pool's initializer `{name}` failed: {message}"))
        }
        Outcome::Panicked { message, location } => Err(format!(
            "the pool's initializer `{name}` panicked at {location}: {message}"
        )),
        Outcome::Each(_) => Err(format!(
            "the pool's initializer `{name}` answered as a chunk"
        )),
    }
}

/// Runs one entry, turning a panic that escaped it into [`Outcome::Panicked`].
fn run_one(f: EntryFn, input: Input<'_>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(o) => o,
        Err(_) => crate::worker::caught_panic(),
    }
}

/// The shortest result sent from its own buffer, after the bytes of the answer before it,
/// instead of being copied into the answer.
const SENT_IN_PLACE: usize = 64 * 1024;

/// A `Done` answer being built: its bytes, and long results that follow the bytes up to a
/// position (`Answer::parts` puts them in order).
struct Answer {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    long: Vec<(usize, Vec<u8>)>,
}

impl Answer {
    /// The answer in order: its bytes, cut where the long results go.
    fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(2 * self.long.len() + 1);
        let mut from = 0;
        for (at, result) in &self.long {
            parts.push(&self.bytes[from..*at]);
            parts.push(&result[..]);
            from = *at;
        }
        parts.push(&self.bytes[from..]);
        parts
    }

    /// The bytes of the long results.
    fn long_len(&self) -> usize {
        self.long.iter().map(|(_, r)| r.len()).sum()
    }
}

/// Appends one result in the `Done` format (see `wire`): the tag and its fields.
fn put_outcome(answer: &mut Answer, outcome: Outcome) {
    let out = &mut answer.bytes;
    match outcome {
        Outcome::Returned { bytes, fds } => {
            out.push(wire::TAG_OK);
            wire::put_uint(out, fds.len() as u64);
            if bytes.len() >= SENT_IN_PLACE {
                wire::put_uint(out, bytes.len() as u64);
                answer.long.push((out.len(), bytes));
            } else {
                wire::put_bytes(out, &bytes);
                crate::worker::recycle_result_buffer(bytes);
            }
            answer.fds.extend(fds);
        }
        Outcome::Failed { message } => {
            out.push(wire::TAG_FAILED);
            wire::put_bytes(out, message.as_bytes());
        }
        Outcome::Codec { message } => {
            out.push(wire::TAG_CODEC);
            wire::put_bytes(out, message.as_bytes());
        }
        Outcome::Raised {
            message,
            error,
            position,
        } => {
            out.push(wire::TAG_RAISED);
            wire::put_bytes(out, message.as_bytes());
            wire::put_bytes(out, error.type_name().as_bytes());
            match error.value_bytes() {
                Some(v) => {
                    out.push(1);
                    wire::put_bytes(out, v);
                }
                None => out.push(0),
            }
            wire::put_uint(out, position as u64);
        }
        Outcome::Panicked { message, location } => {
            out.push(wire::TAG_PANICKED);
            wire::put_bytes(out, message.as_bytes());
            wire::put_bytes(out, location.as_bytes());
        }
        Outcome::Each(items) => {
            out.push(wire::TAG_EACH);
            wire::put_uint(out, items.len() as u64);
            for item in items {
                put_outcome(answer, item);
            }
        }
    }
}

/// A job's items to run: the entry, and how its items are answered.
struct Items<'a> {
    f: &'a std::result::Result<EntryFn, String>,
    batch: bool,
    /// Results in the answer: the items, or one for a batch.
    units: usize,
    watchdog: Option<&'static std::sync::Arc<super::watchdog::Watchdog>>,
}

impl Items<'_> {
    /// Runs each item read from `cur`, appending its result to `answer`.
    fn run(
        &self,
        cur: &mut Cursor<'_>,
        fds: &mut std::collections::VecDeque<OwnedFd>,
        answer: &mut Answer,
    ) -> Result<()> {
        for pos in 0..self.units {
            let nfds = cur.usize()?;
            let bytes = cur.bytes()?;
            self.item(pos, nfds, bytes, fds, answer)?;
        }
        Ok(())
    }

    /// Runs item `pos` (or a batch), whose arguments are `bytes` and `nfds` descriptors of
    /// `fds`, appending its result to `answer`.
    fn item(
        &self,
        pos: usize,
        nfds: usize,
        bytes: &[u8],
        fds: &mut std::collections::VecDeque<OwnedFd>,
        answer: &mut Answer,
    ) -> Result<()> {
        let item_fds = take_fds(fds, nfds)?;
        if let Some(w) = self.watchdog
            && !self.batch
        {
            // A batch's items report themselves as they start (`worker::run_chunk`).
            w.item(pos, (0, 0));
        }
        let ran = match self.f {
            Ok(f) => run_one(
                *f,
                Input {
                    bytes,
                    fds: item_fds,
                    batch: self.batch,
                },
            ),
            Err(m) => Outcome::Failed { message: m.clone() },
        };
        put_outcome(answer, ran);
        Ok(())
    }
}

/// Runs jobs from `sock` until the pool stops this worker or the stream ends; a worker whose
/// resident memory is above `max_resident` (0: no limit) after a job retires.
pub(crate) fn serve(sock: BorrowedFd<'_>, max_resident: u64) -> Result<()> {
    let ended = serve_jobs(sock, max_resident);
    super::watchdog::release();
    ended
}

fn serve_jobs(sock: BorrowedFd<'_>, max_resident: u64) -> Result<()> {
    let mut channel = WorkerChannel::new(sock);
    let mut entries: HashMap<String, std::result::Result<EntryFn, String>> = HashMap::new();
    let mut answer = Answer {
        bytes: Vec::with_capacity(4096),
        fds: Vec::new(),
        long: Vec::new(),
    };
    loop {
        let Some(frame) = channel.next()? else {
            return Ok(());
        };
        let mut fds: std::collections::VecDeque<OwnedFd> = frame.fds.into();
        let mut cur = Cursor::new(&frame.payload);
        // Where the job's items are: after its head, or in the bulk job area.
        let in_bulk = match cur.u8()? {
            wire::JOB => None,
            wire::JOB_BULK => {
                let span = (cur.uint()?, cur.usize()?);
                if cur.u8()? != wire::JOB {
                    return Err(Error::protocol("a job in bulk areas without its head"));
                }
                Some(span)
            }
            wire::STOP => return Ok(()),
            k => return Err(Error::protocol(format!("unknown pool message kind {k}"))),
        };
        let started = Instant::now();
        let id = cur.uint()?;
        let name = std::str::from_utf8(cur.bytes()?)
            .map_err(|_| Error::protocol("worker name is not UTF-8"))?;
        let f = entries
            .entry(name.to_owned())
            .or_insert_with(|| registry::find(name).map_err(|e| e.to_string()))
            .clone();
        let batch = cur.u8()? == wire::MODE_BATCH;
        let limit_ns = cur.uint()?;
        let nitems = cur.usize()?;
        let watchdog = match limit_ns {
            0 => None,
            _ => super::watchdog::get(sock),
        };
        if let Some(w) = watchdog {
            w.begin_job(id, std::time::Duration::from_nanos(limit_ns));
        }
        // A batch job is answered with one result for the whole chunk.
        let units = if batch { 1 } else { nitems };
        answer.long.clear();
        let out = &mut answer.bytes;
        out.clear();
        let at = wire::begin_frame(out);
        out.push(wire::DONE);
        wire::put_uint(out, id);
        let elapsed_at = out.len();
        out.extend_from_slice(&[0u8; 8]);
        wire::put_uint(out, units as u64);
        let job = Items {
            f: &f,
            batch,
            units,
            watchdog,
        };
        match in_bulk {
            None => job.run(&mut cur, &mut fds, &mut answer)?,
            // A batch's descriptor count and length are in the head, its bytes in the area.
            Some((pos, len)) if batch => {
                let nfds = cur.usize()?;
                if cur.usize()? != len {
                    return Err(Error::protocol("a batch in bulk areas of the wrong length"));
                }
                channel.bulk_job(pos, len, |items| {
                    job.item(0, nfds, items, &mut fds, &mut answer)
                })??
            }
            Some((pos, len)) => channel.bulk_job(pos, len, |items| {
                job.run(&mut Cursor::new(items), &mut fds, &mut answer)
            })??,
        }
        if let Some(w) = watchdog {
            w.end_job();
        }
        let ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        answer.bytes[elapsed_at..elapsed_at + 8].copy_from_slice(&ns.to_le_bytes());
        let fds = std::mem::take(&mut answer.fds);
        let len = answer.bytes.len() - at - HEADER_LEN + answer.long_len();
        answer.bytes[at..at + HEADER_LEN].copy_from_slice(&header(len, fds.len()));
        let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let sent = if answer.long.is_empty() {
            channel.send(&answer.bytes, &raw)
        } else if raw.is_empty() {
            channel.send_answer(&answer.parts())
        } else {
            channel.send_long(&answer.parts(), &raw)
        };
        drop(fds);
        if let Some((_, result)) = answer.long.pop() {
            crate::worker::recycle_result_buffer(result);
        }
        match sent {
            // The pool is gone (its program ended, e.g. on Ctrl-C, or it terminated the pool)
            // while this task ran: nobody is waiting for the result, and nothing went wrong
            // here. End quietly, as at end of stream.
            Err(Error::Closed) => return Ok(()),
            other => other?,
        }
        if max_resident > 0 && super::memory::above(max_resident) {
            // Tell the pool first, so that it gives the jobs sent ahead to other workers
            // instead of counting this exit as a death.
            let _ = channel.send(&wire::short_frame(wire::RETIRE), &[]);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::socket::stream_pair;

    /// The pool went away (its program ended on Ctrl-C, or it was terminated) while the worker
    /// ran a task: the worker cannot send the result, and ends quietly instead of reporting a
    /// failure of its own (which a terminal would show after the Ctrl-C).
    #[test]
    fn a_pool_gone_before_the_result_is_a_quiet_end() {
        let (ours, theirs) = stream_pair().unwrap();
        let mut job = Vec::new();
        let at = wire::begin_frame(&mut job);
        job.push(wire::JOB);
        wire::put_uint(&mut job, 1);
        wire::put_bytes(&mut job, b"no::such::worker");
        job.push(wire::MODE_ITEMS);
        wire::put_uint(&mut job, 0);
        wire::put_uint(&mut job, 1);
        wire::put_uint(&mut job, 0);
        wire::put_bytes(&mut job, &[]);
        wire::end_frame(&mut job, at, 0);
        send_parts(theirs.as_fd(), &[&job], &[]).unwrap();
        drop(theirs);
        assert!(matches!(serve(ours.as_fd(), 0), Ok(())));
    }
}
