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
//! was slow or blocked elsewhere) makes the next waits sleep at once: 1 after the first miss in
//! a row, then 2, 4, … up to [`SKIP_AFTER_MISS`], so a consumer that waits long or often in vain
//! soon costs one failed window in seventeen waits, while a lone miss costs one sleep.
//!
//! Nobody spins while the machine is crowded (more runnable threads than twice its CPUs, see
//! [`crowding`](super::crowding)): then the peer gets a CPU when the kernel says so whether this
//! side looks or sleeps, and looking would only take turns from the others. (An earlier rule
//! guessed crowding from a yield that took long, and then slept for the next sixteen waits. When
//! a pool's caller, scheduler and worker shared two CPUs, one such yield put a side to sleep,
//! which made the others miss in turn, and round trips of `apply` stayed at the price of a
//! wake-up, 27 µs instead of 3–5, in about one run in three.)
//!
//! Nobody spins when this process may run on a single CPU (spinning could only delay the peer),
//! nor when the environment variable `MP_SPIN` is `0` when the process first waits (for
//! machines shared by many more processes than CPUs, and to measure what the spin buys).

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::poll::{Deadline, readable};

/// The longest a side looks for an answer before it sleeps.
pub(crate) const WINDOW: Duration = Duration::from_micros(50);

/// After a spin that ended without an answer, how many waits sleep at once before spinning is
/// tried again.
pub(crate) const SKIP_AFTER_MISS: u32 = 16;

/// The spin state of one receiving end (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SpinWait {
    /// How many waits to go before spinning is tried again (0: spin). Relaxed: a hint, read and
    /// written by whoever holds the end's receive side.
    skip: AtomicU32,
    /// Misses in a row: the next miss skips `2^misses` waits, up to [`SKIP_AFTER_MISS`].
    misses: AtomicU32,
    /// When the last wait that did not find its answer by spinning began, in microseconds
    /// since [`epoch`] plus one (0: none pending), for [`SpinWait::woke`].
    sleep_began: AtomicU64,
}

impl SpinWait {
    /// A state that spins at its first wait.
    pub(crate) const fn new() -> Self {
        SpinWait {
            skip: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            sleep_began: AtomicU64::new(0),
        }
    }

    /// After the blocking wait that followed a spin that did not find the answer: if the
    /// answer came within two windows of the wait's start, the peer is quick and the miss was
    /// a near one, so the next wait spins again. Without this, sides that skipped their spins
    /// woke each other late, which made the next spins miss too, and a steady flow settled at
    /// the price of a wake-up per message.
    pub(crate) fn woke(&self) {
        let began = self.sleep_began.swap(0, Ordering::Relaxed);
        if began != 0 && micros_since_epoch().saturating_sub(began) <= 2 * WINDOW.as_micros() as u64
        {
            self.skip.store(0, Ordering::Relaxed);
            self.misses.store(0, Ordering::Relaxed);
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
        if !enabled() || super::crowding::crowded() {
            return false;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            self.sleep_began
                .store(micros_since_epoch(), Ordering::Relaxed);
            return false;
        }
        let started = Instant::now();
        loop {
            if ready() {
                self.misses.store(0, Ordering::Relaxed);
                return true;
            }
            if started.elapsed() >= WINDOW || deadline.passed() {
                // The window passed in vain: sleep at once the next few times.
                let misses = self.misses.load(Ordering::Relaxed);
                self.misses.store((misses + 1).min(8), Ordering::Relaxed);
                self.skip
                    .store((1u32 << misses).min(SKIP_AFTER_MISS), Ordering::Relaxed);
                self.sleep_began.store(
                    micros_since_epoch().saturating_sub(WINDOW.as_micros() as u64),
                    Ordering::Relaxed,
                );
                return false;
            }
            // Give the CPU away between looks: when the peer waits for this very CPU it runs
            // now; when it runs elsewhere, this returns at once.
            std::thread::yield_now();
        }
    }
}

/// Microseconds since the first call in this process, plus one (never 0).
fn micros_since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
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
    fn misses_in_a_row_skip_more_and_more_waits() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let s = SpinWait::new();
        if !enabled() {
            assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
            return;
        }
        // Each miss skips twice as many waits as the one before, up to SKIP_AFTER_MISS.
        for expected in [1, 2, 4, 8, SKIP_AFTER_MISS, SKIP_AFTER_MISS] {
            assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
            assert_eq!(s.skip.load(Ordering::Relaxed), expected);
            for left in (0..expected).rev() {
                assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
                assert_eq!(s.skip.load(Ordering::Relaxed), left);
            }
        }
        // An answer found while spinning starts the count again.
        std::io::Write::write_all(&mut a, b"x").unwrap();
        assert!(s.spin_until_readable(b.as_fd(), Deadline::NEVER));
        let (_c, d) = UnixStream::pair().unwrap();
        assert!(!s.spin_until_readable(d.as_fd(), Deadline::NEVER));
        assert_eq!(s.skip.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_near_miss_spins_again_a_long_wait_does_not() {
        let (_a, b) = UnixStream::pair().unwrap();
        let s = SpinWait::new();
        if !enabled() {
            return;
        }
        // A miss, then a wait that ended long after it began: the skip stands.
        assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
        std::thread::sleep(3 * WINDOW);
        s.woke();
        assert_eq!(s.skip.load(Ordering::Relaxed), 1);
        // The skipped wait, then a second miss in a row (two waits to skip), whose answer came
        // at once (its start set later than now, so that no preemption of this test can make
        // it look long): the next wait spins.
        assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
        assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
        assert_eq!(s.skip.load(Ordering::Relaxed), 2);
        s.sleep_began
            .store(micros_since_epoch() + 10_000_000, Ordering::Relaxed);
        s.woke();
        assert_eq!(s.skip.load(Ordering::Relaxed), 0);
        assert_eq!(s.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn end_of_stream_counts_as_readable() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let s = SpinWait::new();
        assert_eq!(s.spin_until_readable(b.as_fd(), Deadline::NEVER), enabled());
    }
}
