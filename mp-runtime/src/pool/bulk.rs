//! Long jobs and answers between a node agent and its worker processes, in memory they share,
//! so that a long message is not copied through their socket twice (into the kernel, out of it).
//!
//! A cluster worker's job arrives at its agent from MPI, and its answer leaves the agent by
//! MPI. With the bulk areas, the agent receives a long job's items from MPI straight into the
//! job area, where the worker decodes them in place; the worker writes a long answer into the
//! answer area, from which the agent's MPI sends it. The socket carries only short frames that
//! say where (`JobBulk`, `DoneBulk`, see `wire`), and everything that does not fit.
//!
//! Each area is written by one side and freed by the other, in order: positions are byte counts
//! since the start, a message never wraps (the writer skips to the area's start instead), and
//! the reader publishes how far it is done (`jobs_freed`, `answers_freed` in the header). The
//! writer never touches bytes past what the reader freed, so a span the reader holds does not
//! change under it. Each side checks the other's published position and announced spans
//! against the area; the agent never reads the answer area itself (its MPI does, and rank 0
//! checks what arrives), so a worker that writes nonsense breaks only its own answers.
//!
//! The memory is a sealed memfd sent in the agent's first frame to the worker, with every page
//! reserved: no name, nothing left behind however the processes die.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::sys::mmap::{Mapping, SharedRegion};

/// The bytes of each area.
pub(crate) const AREA: usize = 16 << 20;

/// The shortest message worth the areas (a shorter one goes on the socket).
pub(crate) const MIN_BULK: usize = 64 * 1024;

const HEADER: usize = 4096;
const LEN: usize = HEADER + 2 * AREA;
/// Job bytes the worker is done with (it writes; the agent reads).
const JOBS_FREED_AT: usize = 0;
/// Answer bytes the agent's MPI has sent (it writes; the worker reads).
const ANSWERS_FREED_AT: usize = 64;
const JOB_AREA: usize = HEADER;
const ANSWER_AREA: usize = HEADER + AREA;

/// The shared memory and the words in its header.
#[derive(Debug)]
struct Region(Mapping);

impl Region {
    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at + 8 <= HEADER);
        self.0.atomic_u64(at)
    }

    /// The address of byte `offset` of the area at `area`.
    fn at(&self, area: usize, offset: usize) -> *mut u8 {
        debug_assert!(offset <= AREA);
        // SAFETY: `area + offset` is at most `ANSWER_AREA + AREA = LEN`, inside or one past the
        // end of the mapping.
        unsafe { self.0.as_ptr().add(area + offset) }
    }
}

/// Where a message of `len` bytes goes in an area whose writer is at `written` and whose reader
/// freed up to `freed`: its position (skipping to the area's start rather than wrapping), or
/// `None` without room.
fn place(written: u64, freed: u64, len: usize) -> Option<u64> {
    if len == 0 || len > AREA {
        return None;
    }
    let offset = (written % AREA as u64) as usize;
    let pos = if offset + len > AREA {
        written + (AREA - offset) as u64
    } else {
        written
    };
    (pos + len as u64 - freed <= AREA as u64).then_some(pos)
}

/// The offset in its area of a span announced by the other side, checked: it lies in the part
/// of the area written and not yet freed, whole.
fn span(pos: u64, len: usize, freed: u64, written: u64) -> Option<usize> {
    let end = pos.checked_add(len as u64)?;
    let offset = (pos % AREA as u64) as usize;
    (pos >= freed && end <= written && offset + len <= AREA).then_some(offset)
}

/// The agent's end: it writes jobs and frees answers.
#[derive(Debug)]
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) struct AgentBulk {
    /// Shared with the sends in progress from the answer area, which keep it mapped.
    region: Arc<Region>,
    /// Job bytes written so far (past any skipped tail of the area).
    jobs_written: u64,
    /// The end of the last answer announced.
    answers_seen: u64,
}

#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
impl AgentBulk {
    /// New areas, and the memfd to send to the worker.
    pub(crate) fn create() -> Result<(AgentBulk, OwnedFd)> {
        let region = SharedRegion::create_reserved(c"mp-cluster-bulk", LEN)
            .map_err(|e| Error::io("create a cluster worker's shared areas", e))?;
        let (map, fd) = region.into_mapping();
        let bulk = AgentBulk {
            region: Arc::new(Region(map)),
            jobs_written: 0,
            answers_seen: 0,
        };
        Ok((bulk, fd))
    }

    /// Room for a job's items of `len` bytes: their position and where to write them (all
    /// `len` bytes, before the job is announced), or `None` if the area has no room now.
    /// An error if the worker published an impossible position.
    pub(crate) fn reserve_job(&mut self, len: usize) -> Result<Option<(u64, *mut u8)>> {
        let freed = self.region.word(JOBS_FREED_AT).load(Ordering::Acquire);
        if freed > self.jobs_written {
            return Err(Error::protocol(
                "a worker freed more of its job area than it was given",
            ));
        }
        let Some(pos) = place(self.jobs_written, freed, len) else {
            return Ok(None);
        };
        self.jobs_written = pos + len as u64;
        let offset = (pos % AREA as u64) as usize;
        Ok(Some((pos, self.region.at(JOB_AREA, offset))))
    }

    /// The address of an answer the worker announced at `pos`, `len` bytes long, checked to
    /// follow the last one and to lie in the area (a wrong one is an error: the worker broke
    /// its side).
    pub(crate) fn answer(&mut self, pos: u64, len: usize) -> Result<*const u8> {
        let offset = span(pos, len, self.answers_seen, u64::MAX)
            .filter(|_| len > 0)
            .ok_or_else(|| Error::protocol("a worker announced an answer outside its area"))?;
        self.answers_seen = pos + len as u64;
        Ok(self.region.at(ANSWER_AREA, offset))
    }

    /// What keeps the areas mapped while a send from them is in progress.
    pub(crate) fn keep_mapped(&self) -> Arc<dyn Send + Sync> {
        self.region.clone()
    }

    /// The answers up to `end` have been sent on: the worker may write there again.
    pub(crate) fn free_answers(&self, end: u64) {
        self.region
            .word(ANSWERS_FREED_AT)
            .fetch_max(end, Ordering::Release);
    }
}

/// The worker's end: it reads jobs in place and writes answers.
#[derive(Debug)]
pub(crate) struct WorkerBulk {
    region: Region,
    /// Answer bytes written so far.
    answers_written: u64,
    /// The end of the last job read.
    jobs_seen: u64,
}

impl WorkerBulk {
    /// The areas whose memfd the agent sent.
    pub(crate) fn attach(fd: OwnedFd) -> Result<WorkerBulk> {
        let region = SharedRegion::from_fd(fd).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                Error::protocol(format!("the node agent's shared areas cannot be used: {e}"))
            }
            _ => Error::io("map the node agent's shared areas", e),
        })?;
        if region.len() != LEN {
            return Err(Error::protocol(
                "the node agent's shared areas have the wrong size",
            ));
        }
        Ok(WorkerBulk {
            region: Region(region.into_mapping().0),
            answers_written: 0,
            jobs_seen: 0,
        })
    }

    /// Runs `f` on the items of the job announced at `pos`, `len` bytes long, where they lie,
    /// then gives their room back to the agent.
    pub(crate) fn with_job<R>(
        &mut self,
        pos: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let offset = span(pos, len, self.jobs_seen, u64::MAX)
            .ok_or_else(|| Error::protocol("the node agent announced a job outside its area"))?;
        self.jobs_seen = pos + len as u64;
        // SAFETY: the span lies inside the job area (checked); the agent wrote it before it
        // announced it, and writes no byte of the area past what this side freed, which this
        // span is not until `f` has returned; the slice does not outlive `f`.
        let items = unsafe { std::slice::from_raw_parts(self.region.at(JOB_AREA, offset), len) };
        let out = f(items);
        self.region
            .word(JOBS_FREED_AT)
            .store(self.jobs_seen, Ordering::Release);
        Ok(out)
    }

    /// Writes an answer of `parts` (one after the other) into the answer area: its position and
    /// length, or `None` if it does not fit now (it then goes on the socket).
    pub(crate) fn put_answer(&mut self, parts: &[&[u8]]) -> Option<(u64, usize)> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let freed = self
            .region
            .word(ANSWERS_FREED_AT)
            .load(Ordering::Acquire)
            .min(self.answers_written);
        let pos = place(self.answers_written, freed, len)?;
        let mut at = (pos % AREA as u64) as usize;
        for p in parts {
            // SAFETY: the whole answer lies in the area (`place` keeps `at + len <= AREA`), in
            // room the agent freed and does not read until the answer is announced; `p` is a
            // distinct Rust buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), self.region.at(ANSWER_AREA, at), p.len())
            };
            at += p.len();
        }
        self.answers_written = pos + len as u64;
        Some((pos, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_placed_whole_and_only_in_freed_room() {
        let a = AREA as u64;
        assert_eq!(place(0, 0, 10), Some(0));
        assert_eq!(place(0, 0, AREA), Some(0));
        assert_eq!(place(0, 0, AREA + 1), None);
        assert_eq!(place(0, 0, 0), None);
        // Not past what the reader freed.
        assert_eq!(place(a - 10, 0, 15), None);
        assert_eq!(place(a - 10, a - 20, 5), Some(a - 10));
        // Skips the tail rather than wrap, when the start is free.
        assert_eq!(place(a - 10, a - 10, 20), Some(a));
        assert_eq!(place(a - 10, 5, 20), None);
    }

    #[test]
    fn announced_spans_are_checked() {
        let a = AREA as u64;
        assert_eq!(span(0, 10, 0, 10), Some(0));
        assert_eq!(span(a + 4, 10, a, a + 14), Some(4));
        assert_eq!(span(0, 10, 0, 9), None, "past what was written");
        assert_eq!(span(3, 10, 5, 20), None, "before what was freed");
        assert_eq!(span(a - 4, 10, 0, u64::MAX), None, "wraps");
        assert_eq!(span(u64::MAX - 2, 10, 0, u64::MAX), None, "overflows");
    }

    #[test]
    fn a_job_is_read_in_place_and_an_answer_comes_back_by_position() {
        let (mut agent, fd) = AgentBulk::create().unwrap();
        let mut worker = WorkerBulk::attach(fd).unwrap();
        let items: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
        let (pos, at) = agent.reserve_job(items.len()).unwrap().unwrap();
        // SAFETY: `at` has room for the reserved length, in memory nobody else uses.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), at, items.len()) };
        let sum: u64 = worker
            .with_job(pos, items.len(), |b| {
                assert_eq!(b, &items[..]);
                b.iter().map(|&x| u64::from(x)).sum()
            })
            .unwrap();
        assert_eq!(sum, items.iter().map(|&x| u64::from(x)).sum::<u64>());
        assert!(worker.with_job(pos, 1, |_| ()).is_err(), "read twice");

        let (apos, alen) = worker.put_answer(&[b"head", &items[..1000]]).unwrap();
        let p = agent.answer(apos, alen).unwrap();
        // SAFETY: the answer's bytes, written above, in memory nobody writes now.
        let back = unsafe { std::slice::from_raw_parts(p, alen) };
        assert_eq!(&back[..4], b"head");
        assert_eq!(&back[4..], &items[..1000]);
        assert!(agent.answer(apos, alen).is_err(), "announced twice");
        assert!(agent.answer(u64::MAX - 1, 5).is_err());
    }

    #[test]
    fn a_full_area_refuses_until_the_other_side_frees() {
        let (mut agent, fd) = AgentBulk::create().unwrap();
        let mut worker = WorkerBulk::attach(fd).unwrap();
        let third = AREA / 3;
        let jobs: Vec<(u64, usize)> = (0..3)
            .map(|_| (agent.reserve_job(third).unwrap().unwrap().0, third))
            .collect();
        assert!(agent.reserve_job(third).unwrap().is_none());
        worker.with_job(jobs[0].0, third, |_| ()).unwrap();
        // The first third is free, but the next job would not fit before the area's end: it
        // starts over at its beginning.
        let (pos, _) = agent.reserve_job(third).unwrap().unwrap();
        assert_eq!(pos, AREA as u64);

        let big = vec![1u8; third];
        let answers: Vec<(u64, usize)> = (0..3)
            .map(|_| worker.put_answer(&[&big]).unwrap())
            .collect();
        assert!(worker.put_answer(&[&big]).is_none());
        for (p, l) in &answers {
            agent.answer(*p, *l).unwrap();
        }
        agent.free_answers(answers[0].0 + answers[0].1 as u64);
        assert_eq!(worker.put_answer(&[&big]).unwrap().0, AREA as u64);
    }

    #[test]
    fn a_worker_that_frees_too_much_is_an_error() {
        let (mut agent, fd) = AgentBulk::create().unwrap();
        let worker = WorkerBulk::attach(fd).unwrap();
        worker
            .region
            .word(JOBS_FREED_AT)
            .store(1 << 40, Ordering::Release);
        assert!(agent.reserve_job(10).is_err());
        assert!(
            WorkerBulk::attach(SharedRegion::create(c"x", 4096).unwrap().into_mapping().1).is_err()
        );
    }
}
