//! The one place that calls MPI, on one thread per rank: initialization, messages out without
//! blocking, messages in, finalization, and the wait between two looks at the network.
//!
//! Sends are non-blocking (`MPI_Isend`): two ranks that send each other a large message at the
//! same time would both wait in a blocking send for the other's receive. A sent buffer is owned
//! here until its request completes. MPI has no descriptor to poll, so the thread looks for
//! messages (`MPI_Iprobe`) between polls of its sockets; [`Backoff`] makes those polls longer
//! the longer nothing happens, so that an idle rank costs almost no CPU (see `Backoff`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source, Status};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Equivalence;
use mpi::{Tag, Threading};

/// The one tag of `mp`'s messages: MPI keeps the order of messages with one tag between two
/// ranks, which `messages` relies on.
const TAG: Tag = 0x6d70;

/// A send in progress: its request, and the buffer it holds until then.
struct Sending {
    request: Request<'static, [u8], StaticScope>,
    buffer: Held,
}

/// The buffer of a send in progress.
enum Held {
    /// Owned: from `Box::leak` in [`Comm::send`], freed when the send completes.
    Owned(*const [u8]),
    /// Kept alive by its owner ([`Comm::send_shared`], [`Comm::send_mapped`]): the reference is
    /// dropped when the send completes, and `done` set.
    Kept {
        _keep: Arc<dyn Send + Sync>,
        done: Option<Arc<AtomicBool>>,
    },
}

impl Held {
    /// The send completed: nothing reads the buffer any more.
    fn release(self) {
        match self {
            Held::Owned(buffer) => free(buffer),
            Held::Kept { done, .. } => {
                if let Some(done) = done {
                    done.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// This rank's MPI: world communicator, rank and size, and the sends in progress.
pub(crate) struct Comm {
    sending: Vec<Sending>,
    world: SimpleCommunicator,
    pub(crate) rank: usize,
    pub(crate) size: usize,
    /// Dropped last: finalizes MPI.
    _universe: Universe,
}

impl Comm {
    /// Initializes MPI on the calling thread, the only one that will call it.
    pub(crate) fn init() -> Result<Comm, String> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or("MPI was already initialized in this process")?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).map_err(|_| "negative MPI rank")?;
        let size = usize::try_from(world.size()).map_err(|_| "negative MPI size")?;
        Ok(Comm {
            sending: Vec::new(),
            world,
            rank,
            size,
            _universe: universe,
        })
    }

    /// Starts sending `bytes` to `rank`; returns at once.
    pub(crate) fn send(&mut self, rank: usize, bytes: Vec<u8>) {
        let buffer: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        self.start(rank, buffer, Held::Owned(buffer as *const [u8]));
    }

    /// Starts sending `buffer`, which `held` keeps valid until the send completes.
    fn start(&mut self, rank: usize, buffer: &'static [u8], held: Held) {
        let request = self
            .world
            .process_at_rank(rank as i32)
            .immediate_send_with_tag(StaticScope, buffer, TAG);
        self.sending.push(Sending {
            request,
            buffer: held,
        });
        // Small messages often complete at once; frees their buffers early.
        self.progress();
    }

    /// Starts sending `bytes`, shared with their owner, to `rank` without copying them; returns
    /// at once. The reference is dropped when the send completes.
    pub(crate) fn send_shared(&mut self, rank: usize, bytes: Arc<Vec<u8>>) {
        // SAFETY: the slice points into the vector `bytes` holds, which is neither freed nor
        // written while this send is in progress: the `Arc` is kept in `sending` until the
        // request completes (`progress`, `flush`, or `Drop`, which flushes), and a vector
        // shared through an `Arc` cannot be written through it.
        let buffer: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let held = Held::Kept {
            _keep: bytes,
            done: None,
        };
        self.start(rank, buffer, held);
    }

    /// Starts sending the `len` bytes at `at` to `rank`, in shared memory that `keep` keeps
    /// mapped; returns at once. `done` is set when the send has completed.
    ///
    /// # Safety
    /// `at..at + len` must lie in the mapping `keep` holds, and nothing may write those bytes
    /// until `done` is set.
    pub(crate) unsafe fn send_mapped(
        &mut self,
        rank: usize,
        at: *const u8,
        len: usize,
        keep: Arc<dyn Send + Sync>,
        done: Arc<AtomicBool>,
    ) {
        // SAFETY: the caller's contract: the bytes stay mapped (held by `keep`, kept in
        // `sending` until the request completes) and unwritten until then.
        let buffer: &'static [u8] = unsafe { std::slice::from_raw_parts(at, len) };
        let held = Held::Kept {
            _keep: keep,
            done: Some(done),
        };
        self.start(rank, buffer, held);
    }

    /// The next message from `rank`, waiting for it (one known to be on its way), received
    /// where `place` says for its length if it says somewhere: `Ok(len)` then, the bytes
    /// otherwise.
    pub(crate) fn recv_placed(
        &mut self,
        rank: usize,
        place: impl FnOnce(usize) -> Option<&'static mut [u8]>,
    ) -> std::result::Result<usize, Vec<u8>> {
        let (message, status) = self
            .world
            .process_at_rank(rank as i32)
            .matched_probe_with_tag(TAG);
        let len = usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0);
        match place(len) {
            Some(room) => {
                message.matched_receive_into(room);
                Ok(len)
            }
            None => Err((message, status).matched_receive_vec::<u8>().0),
        }
    }

    /// Completes the sends that are done and frees their buffers; true if some are pending.
    pub(crate) fn progress(&mut self) -> bool {
        let mut pending = Vec::with_capacity(self.sending.len());
        for s in self.sending.drain(..) {
            match s.request.test() {
                Ok(_) => s.buffer.release(),
                Err(request) => pending.push(Sending {
                    request,
                    buffer: s.buffer,
                }),
            }
        }
        self.sending = pending;
        !self.sending.is_empty()
    }

    /// The next message that arrived, from any rank, if there is one. (`MPI_Iprobe` drives
    /// MPI's progress engine when nothing has arrived yet; a matched probe does not in MPICH's
    /// UCX device, where a message then waits for UCX's own timer. This thread is the only one
    /// that receives, so the probed message is the one received.)
    pub(crate) fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        let status: Status = self.world.any_process().immediate_probe_with_tag(TAG)?;
        let source = usize::try_from(status.source_rank()).ok()?;
        Some((source, self.recv_from(source)))
    }

    /// The next message from `rank`, waiting for it: one known to be there or on its way (the
    /// payload that follows a `Frame`). It lands in a vector of its exact size, not zeroed first.
    pub(crate) fn recv_from(&mut self, rank: usize) -> Vec<u8> {
        let (bytes, _) = self
            .world
            .process_at_rank(rank as i32)
            .receive_vec_with_tag::<u8>(TAG);
        bytes
    }

    /// Waits for every send in progress to complete.
    pub(crate) fn flush(&mut self) {
        for s in self.sending.drain(..) {
            s.request.wait_without_status();
            s.buffer.release();
        }
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // A buffer must outlive its send: finish them before MPI is finalized.
        self.flush();
    }
}

/// Frees the buffer of a completed send.
fn free(buffer: *const [u8]) {
    // SAFETY: `buffer` came from `Box::leak` in `send`, and its request has completed (and was
    // consumed), so neither MPI nor any reference uses it any more; it is freed exactly once.
    drop(unsafe { Box::from_raw(buffer as *mut [u8]) });
}

/// How long to wait for the sockets between two looks at MPI, which has no descriptor to wait
/// on. Right after something happened, not at all (for [`Backoff::spin`]: the next message
/// usually follows within microseconds: the answer to a job, or the next job after an answer);
/// the thread yields the CPU between looks. Then a quarter of the time since, from 20 µs up to
/// [`MAX_WAIT`]: an idle rank looks at MPI [`MAX_WAIT`] apart, a few hundred cheap calls a
/// second, well under 1 % of a core. While an answer is awaited, waits stay under
/// [`EXPECTING_WAIT`]; while a send is in progress, under [`SENDING_WAIT`]. Traffic on the
/// sockets ends a wait at once.
pub(crate) struct Backoff {
    last: Instant,
    /// How long after activity MPI is looked at without waiting.
    spin: Duration,
}

/// Rank 0's eager look after activity: it competes with the pool's workers for the CPU while
/// they run.
pub(crate) const HEAD_SPIN: Duration = Duration::from_micros(200);
/// A node agent's eager look after activity, when none of its workers holds a job (it only
/// waits for the next one then): long enough that a caller waiting for each result finds it
/// still looking after a hiccup of a few hundred microseconds, not in its backoff.
pub(crate) const AGENT_SPIN: Duration = Duration::from_millis(1);
/// The shortest wait after the eager look.
const MIN_WAIT: Duration = Duration::from_micros(20);
/// The longest wait while an answer from another rank is awaited.
pub(crate) const EXPECTING_WAIT: Duration = Duration::from_micros(100);
/// The longest wait between two looks at MPI.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(2);
/// The longest wait while a send is in progress. A send that has not completed is no reason to
/// spin: over shared memory the receiver takes a long message by itself, and this rank's calls
/// only complete the request; over a network its data leaves as MPI is called, which every
/// 20 µs keeps flowing. Spinning until a long message's receiver is done took the CPU from the
/// threads that make and consume the next ones: the cluster's rate both ways rose by about 15%
/// without it.
pub(crate) const SENDING_WAIT: Duration = Duration::from_micros(20);

/// What an MPI thread's next wait is for (see [`Backoff::next_wait`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Waiting {
    /// An answer from another rank is awaited.
    pub(crate) answer: bool,
    /// Looking without waiting right after activity is worth it (no local process is about to
    /// wake this thread anyway).
    pub(crate) spin: bool,
    /// A send is in progress.
    pub(crate) sending: bool,
}

impl Backoff {
    /// A backoff that looks at MPI without waiting for `spin` after activity.
    pub(crate) fn new(spin: Duration) -> Self {
        Backoff {
            last: Instant::now(),
            spin,
        }
    }

    /// Something happened: look again at once.
    pub(crate) fn active(&mut self) {
        self.last = Instant::now();
    }

    /// The wait before the next look. Yields the CPU when it returns zero.
    pub(crate) fn next_wait(&self, waiting: Waiting) -> Duration {
        let idle = self.last.elapsed();
        if idle < self.spin && waiting.spin {
            std::thread::yield_now();
            return Duration::ZERO;
        }
        let mut wait = (idle / 4).clamp(MIN_WAIT, MAX_WAIT);
        if waiting.answer {
            wait = wait.min(EXPECTING_WAIT);
        }
        if waiting.sending {
            wait = wait.min(SENDING_WAIT);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Waiting = Waiting {
        answer: false,
        spin: true,
        sending: false,
    };
    const ANSWER: Waiting = Waiting {
        answer: true,
        ..SPIN
    };
    const NO_SPIN: Waiting = Waiting {
        spin: false,
        ..SPIN
    };

    #[test]
    fn backoff_is_eager_after_activity_then_grows_to_its_bound() {
        let mut b = Backoff::new(HEAD_SPIN);
        assert_eq!(b.next_wait(SPIN), Duration::ZERO);
        assert_eq!(b.next_wait(NO_SPIN), MIN_WAIT);
        b.last = Instant::now() - Duration::from_millis(1);
        let w = b.next_wait(SPIN);
        assert!(
            w >= Duration::from_micros(250) && w < Duration::from_millis(1),
            "{w:?}"
        );
        assert_eq!(b.next_wait(ANSWER), EXPECTING_WAIT);
        b.last = Instant::now() - Duration::from_secs(5);
        assert_eq!(b.next_wait(SPIN), MAX_WAIT);
        assert_eq!(b.next_wait(ANSWER), EXPECTING_WAIT);
        b.active();
        assert_eq!(b.next_wait(SPIN), Duration::ZERO);
    }

    #[test]
    fn a_send_in_progress_bounds_the_wait_but_is_no_reason_to_spin() {
        let mut b = Backoff::new(HEAD_SPIN);
        b.last = Instant::now() - Duration::from_secs(5);
        let sending = Waiting {
            sending: true,
            ..SPIN
        };
        assert_eq!(b.next_wait(sending), SENDING_WAIT);
        assert_eq!(
            b.next_wait(Waiting {
                answer: true,
                ..sending
            }),
            SENDING_WAIT
        );
        b.last = Instant::now() - HEAD_SPIN;
        assert!(b.next_wait(sending) > Duration::ZERO, "past the eager look");
    }

    #[test]
    fn an_agent_looks_eagerly_for_longer_than_rank_0() {
        let ago = Instant::now() - Duration::from_micros(500);
        let mut head = Backoff::new(HEAD_SPIN);
        let mut agent = Backoff::new(AGENT_SPIN);
        (head.last, agent.last) = (ago, ago);
        assert!(head.next_wait(SPIN) >= MIN_WAIT);
        assert_eq!(agent.next_wait(SPIN), Duration::ZERO);
        // Not while a worker holds a job: its answer wakes the agent.
        assert!(agent.next_wait(NO_SPIN) >= MIN_WAIT);
    }
}
