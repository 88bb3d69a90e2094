//! The one place that calls MPI, on one thread per rank: initialization, messages out without
//! blocking, messages in, finalization, and the wait between two looks at the network.
//!
//! Sends are non-blocking (`MPI_Isend`): two ranks that send each other a large message at the
//! same time would both wait in a blocking send for the other's receive. A sent buffer is owned
//! here until its request completes. MPI has no descriptor to poll, so the thread looks for
//! messages (`MPI_Iprobe`) between polls of its sockets; [`Backoff`] makes those polls longer
//! the longer nothing happens, so that an idle rank costs almost no CPU (see `Backoff`).

use std::time::Duration;

use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source, Status};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Equivalence;
use mpi::{Tag, Threading};

/// The one tag of `mp`'s messages: MPI keeps the order of messages with one tag between two
/// ranks, which `messages` relies on.
const TAG: Tag = 0x6d70;

/// A send in progress: its request, and the buffer it owns until then.
struct Sending {
    request: Request<'static, [u8], StaticScope>,
    buffer: *const [u8],
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
        let request = self
            .world
            .process_at_rank(rank as i32)
            .immediate_send_with_tag(StaticScope, buffer, TAG);
        self.sending.push(Sending {
            request,
            buffer: buffer as *const [u8],
        });
        // Small messages often complete at once; frees their buffers early.
        self.progress();
    }

    /// Completes the sends that are done and frees their buffers; true if some are pending.
    pub(crate) fn progress(&mut self) -> bool {
        let mut pending = Vec::with_capacity(self.sending.len());
        for s in self.sending.drain(..) {
            match s.request.test() {
                Ok(_) => free(s.buffer),
                Err(request) => pending.push(Sending {
                    request,
                    buffer: s.buffer,
                }),
            }
        }
        self.sending = pending;
        !self.sending.is_empty()
    }

    /// The next message that arrived, from any rank, if there is one.
    pub(crate) fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        let (message, status): (mpi::point_to_point::Message, Status) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(TAG)?;
        let len = usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0);
        let mut buf = vec![0u8; len];
        message.matched_receive_into(&mut buf[..]);
        Some((status.source_rank() as usize, buf))
    }

    /// Waits for every send in progress to complete.
    pub(crate) fn flush(&mut self) {
        for s in self.sending.drain(..) {
            s.request.wait_without_status();
            free(s.buffer);
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

/// How long to wait for the sockets between two looks at MPI: nothing for the first rounds
/// after something happened (the answer to a job usually follows within microseconds), then
/// 10 µs doubling up to [`MAX_WAIT`]. An idle rank then looks at MPI [`MAX_WAIT`] apart: a
/// few hundred cheap calls a second, well under 1 % of a core; an answer arriving while it
/// waits the longest waits at most that long. Traffic on the sockets ends the wait at once.
pub(crate) struct Backoff {
    idle_rounds: u32,
}

/// Rounds without waiting after activity.
const EAGER_ROUNDS: u32 = 16;
/// The longest wait between two looks at MPI.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(2);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { idle_rounds: 0 }
    }

    /// Something happened: look again at once.
    pub(crate) fn active(&mut self) {
        self.idle_rounds = 0;
    }

    /// The wait before the next look (and counts this round as idle).
    pub(crate) fn next_wait(&mut self) -> Duration {
        let r = self.idle_rounds;
        self.idle_rounds = r.saturating_add(1);
        if r < EAGER_ROUNDS {
            return Duration::ZERO;
        }
        let shift = (r - EAGER_ROUNDS).min(16);
        (Duration::from_micros(10) * (1u32 << shift)).min(MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_eager_after_activity_then_grows_to_its_bound() {
        let mut b = Backoff::new();
        for _ in 0..EAGER_ROUNDS {
            assert_eq!(b.next_wait(), Duration::ZERO);
        }
        let mut last = Duration::ZERO;
        for _ in 0..64 {
            let w = b.next_wait();
            assert!(w >= last && w <= MAX_WAIT);
            last = w;
        }
        assert_eq!(last, MAX_WAIT);
        b.active();
        assert_eq!(b.next_wait(), Duration::ZERO);
    }
}
