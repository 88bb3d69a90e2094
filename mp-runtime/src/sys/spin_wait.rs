//! The short, adaptive spin a request/response side runs before it sleeps in the kernel, shared
//! by [`Connection`](crate::connection::Connection), the manager's connections, a pool's
//! workers waiting for their next job and the pool's scheduler waiting for answers.
//!
//! Sleeping in `poll`/`recvmsg` and being woken costs 10–25 µs here when the wake-up crosses to
//! another CPU, more than the rest of a round trip. So a side that waits for an answer first
//! looks at the socket without blocking for a few tens of microseconds, yielding the CPU between
//! looks: when the peer runs on another CPU its answer usually arrives within that window and
//! nobody sleeps; when the peer waits for this very CPU, the yield lets it run.
//!
//! The window is adaptive, per connection end: a spin that ended without an answer (the peer
//! was slow or blocked elsewhere) is left out for
//! the next [`SKIP_AFTER_MISS`] waits, which sleep at once, so a consumer that waits long or
//! often in vain costs one failed window in seventeen waits. A spin in which a yield gave the CPU
//! to another process counts as a miss too, whatever the next look finds: then there are more
//! runnable processes than CPUs, the peer gets a CPU when the scheduler says so whether this side
//! looks or sleeps, and looking again would only take turns from the others.
//! Nobody spins when this process may
//! run on a single CPU (spinning could only delay the peer), nor when the environment variable
//! `MP_SPIN` is `0` when the process first waits (for machines shared by many more processes
//! than CPUs, and to measure what the spin buys).

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::poll::{Deadline, readable};

/// The longest a side looks for an answer before it sleeps.
pub(crate) const WINDOW: Duration = Duration::from_micros(50);

/// A yield that took this long gave the CPU to another process.
const CONTENDED_YIELD: Duration = Duration::from_micros(5);

/// After a spin that ended without an answer, how many waits sleep at once before spinning is
/// tried again.
pub(crate) const SKIP_AFTER_MISS: u32 = 16;

/// The spin state of one receiving end (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SpinWait {
    /// How many waits to go before spinning is tried again (0: spin). Relaxed: a hint, read and
    /// written by whoever holds the end's receive side.
    skip: AtomicU32,
}

impl SpinWait {
    /// A state that spins at its first wait.
    pub(crate) const fn new() -> Self {
        SpinWait {
            skip: AtomicU32::new(0),
        }
    }

    /// Looks at `fd` without blocking, for at most [`WINDOW`] (and not past `deadline`), until
    /// it is readable (data, end of stream or an error to report). True: a read will not block.
    /// False: the window passed, spinning is off or skipped this time, or polling failed; the
    /// caller then sleeps in its blocking read or `poll` as it would have without the spin.
    pub(crate) fn spin_until_readable(&self, fd: BorrowedFd<'_>, deadline: Deadline) -> bool {
        // On an error, stop looking: the blocking call meets (and reports) it.
        self.spin_until(deadline, || {
            readable(fd, Deadline::after(Some(Duration::ZERO))).unwrap_or_default()
        })
    }

    /// [`spin_until_readable`](SpinWait::spin_until_readable) for any condition that can be
    /// checked without blocking (several descriptors at once, say).
    pub(crate) fn spin_until(&self, deadline: Deadline, mut ready: impl FnMut() -> bool) -> bool {
        if !enabled() {
            return false;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return false;
        }
        let started = Instant::now();
        let mut contended = false;
        loop {
            let ready = ready();
            if contended || !ready && (started.elapsed() >= WINDOW || deadline.passed()) {
                // The window passed in vain, or a yield gave the CPU to another process: the
                // CPUs are shared by more runnable processes than they hold, the peer runs when
                // the scheduler says so whether this side looks or sleeps, and looking again
                // would only take turns from the others. Sleep at once the next few times.
                self.skip.store(SKIP_AFTER_MISS, Ordering::Relaxed);
                return ready;
            }
            if ready {
                return true;
            }
            // Give the CPU away between looks: when the peer waits for this very CPU it runs
            // now; when it runs elsewhere, this returns at once.
            let before = Instant::now();
            std::thread::yield_now();
            contended = before.elapsed() >= CONTENDED_YIELD;
        }
    }
}

/// Whether spinning can help this process: more than one CPU to run on, and `MP_SPIN` is not
/// `0`. Read once.
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var_os("MP_SPIN").is_none_or(|v| v != "0") && crate::identity::cpu_count() > 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ready_socket_is_seen_at_once() {
        let (mut a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, b"x").unwrap();
        let s = SpinWait::new();
        // With one CPU (or MP_SPIN=0) there is no spin at all.
        assert_eq!(s.spin_until_readable(b.as_fd(), Deadline::NEVER), enabled());
    }

    #[test]
    fn a_miss_skips_the_next_waits() {
        let (_a, b) = UnixStream::pair().unwrap();
        let s = SpinWait::new();
        assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
        if enabled() {
            assert_eq!(s.skip.load(Ordering::Relaxed), SKIP_AFTER_MISS);
            assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
            assert_eq!(s.skip.load(Ordering::Relaxed), SKIP_AFTER_MISS - 1);
        }
    }

    #[test]
    fn end_of_stream_counts_as_readable() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let s = SpinWait::new();
        assert_eq!(s.spin_until_readable(b.as_fd(), Deadline::NEVER), enabled());
    }
}
