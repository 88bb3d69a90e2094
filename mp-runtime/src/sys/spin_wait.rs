//! The short, adaptive spin a request/response side runs before it sleeps in the kernel, shared
//! by [`Connection`](crate::connection::Connection), the manager's connections, a pool's
//! workers waiting for their next job, the pool's scheduler waiting for answers and callers
//! waiting for a result (`AsyncResult::get`, an executor's `Future::result`).
//!
//! Sleeping in `poll`/`recvmsg` and being woken costs 10–25 µs here when the wake-up crosses to
//! another CPU, more than the rest of a round trip. So a side that waits for an answer first
//! looks at the socket without blocking for a few tens of microseconds, yielding the CPU between
//! looks: when the peer runs on another CPU its answer usually arrives within that window and
//! nobody sleeps; when the peer waits for this very CPU, the yield lets it run.
//!
//! The window is adaptive, per receiving end, by one of two rules:
//!
//! - **Between two processes** (`Connection`, the manager's connections: [`SpinWait::new`]), a
//!   spin that ended without an answer, or in which a yield took 5 µs or more (the CPU went to
//!   another thread), makes the next [`SKIP_AFTER_MISS`] waits sleep at once, so a consumer that
//!   waits long or often in vain costs one failed window in seventeen waits, and a side whose
//!   CPU is wanted by others stops taking turns from them. Over loopback TCP to a manager that
//!   rule is worth 40% (110 k queue items a second against 77 k without it).
//! - **Inside a pool** (its scheduler, workers, `imap` consumers and result waiters:
//!   [`SpinWait::pool`]), that
//!   rule made `apply` round trips bimodal: with the caller, the scheduler and a worker on two
//!   CPUs, one yield that ran another of them put a side to sleep for sixteen waits, the others
//!   then missed in turn, and about one run in three stayed at 27 µs a round trip instead of
//!   3–5. There, nobody spins while the machine is crowded (more runnable threads than twice
//!   its CPUs, see [`crowding`](super::crowding)); misses in a row back off 1, 2, 4 … up to 16
//!   waits; and a wait whose answer came within two windows of its start
//!   ([`SpinWait::woke`]) resets the backoff.
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
/// tried again (at most, for a pool's rule).
pub(crate) const SKIP_AFTER_MISS: u32 = 16;

/// A yield that took this long gave the CPU to another thread (the rule between processes).
const CONTENDED_YIELD: Duration = Duration::from_micros(5);

/// Which rule a [`SpinWait`] follows (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Rule {
    /// Between two processes: a miss or a contended yield skips the next 16 waits.
    #[default]
    Peers,
    /// Inside a pool: off while crowded, misses back off, near misses reset.
    Pool,
}

/// The spin state of one receiving end (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SpinWait {
    /// How many waits to go before spinning is tried again (0: spin). Relaxed: a hint, read and
    /// written by whoever holds the end's receive side.
    skip: AtomicU32,
    /// Misses in a row: the next miss skips `2^misses` waits, up to [`SKIP_AFTER_MISS`].
    misses: AtomicU32,
    /// When the last wait that did not find its answer by spinning began, in microseconds
    /// since [`micros_since_epoch`]'s start plus one (0: none pending), for
    /// [`SpinWait::woke`].
    sleep_began: AtomicU64,
    rule: Rule,
}

impl SpinWait {
    /// A state that spins at its first wait, for an end talking to another process.
    pub(crate) const fn new() -> Self {
        SpinWait {
            skip: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            sleep_began: AtomicU64::new(0),
            rule: Rule::Peers,
        }
    }

    /// A state that spins at its first wait, for a pool's scheduler, workers and consumers.
    pub(crate) const fn pool() -> Self {
        SpinWait {
            rule: Rule::Pool,
            ..SpinWait::new()
        }
    }

    /// After the blocking wait that followed a spin that did not find the answer: if the
    /// answer came within two windows of the wait's start, the peer is quick and the miss was
    /// a near one, so the next wait spins again. Without this, sides that skipped their spins
    /// woke each other late, which made the next spins miss too, and a steady flow settled at
    /// the price of a wake-up per message.
    pub(crate) fn woke(&self) {
        if self.rule != Rule::Pool {
            return;
        }
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
    /// checked without blocking (several descriptors at once, say). A deadline already passed
    /// (a zero timeout: a look, not a wait) spins not at all and counts as no miss, so callers
    /// that poll do not stop the spin of the waits that follow.
    pub(crate) fn spin_until(&self, deadline: Deadline, ready: impl FnMut() -> bool) -> bool {
        if !enabled() || deadline.passed() {
            return false;
        }
        match self.rule {
            Rule::Peers => self.spin_between_peers(deadline, ready),
            Rule::Pool => self.spin_in_pool(deadline, ready, super::crowding::crowded()),
        }
    }

    fn spin_between_peers(&self, deadline: Deadline, mut ready: impl FnMut() -> bool) -> bool {
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
                // The window passed in vain, or a yield gave the CPU to another thread: the
                // peer runs when the kernel says so whether this side looks or sleeps, and
                // looking again would only take turns from the others. Sleep at once the next
                // few times.
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

    fn spin_in_pool(
        &self,
        deadline: Deadline,
        mut ready: impl FnMut() -> bool,
        crowded: bool,
    ) -> bool {
        if crowded {
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
    fn a_look_with_no_time_left_is_not_a_miss() {
        let (_a, b) = UnixStream::pair().unwrap();
        for s in [SpinWait::new(), SpinWait::pool()] {
            assert!(!s.spin_until_readable(b.as_fd(), Deadline::after(Some(Duration::ZERO))));
            assert_eq!(s.skip.load(Ordering::Relaxed), 0);
            assert_eq!(s.misses.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn between_peers_a_miss_skips_the_next_sixteen_waits() {
        let (_a, b) = UnixStream::pair().unwrap();
        let s = SpinWait::new();
        assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
        if enabled() {
            assert_eq!(s.skip.load(Ordering::Relaxed), SKIP_AFTER_MISS);
            assert!(!s.spin_until_readable(b.as_fd(), Deadline::NEVER));
            assert_eq!(s.skip.load(Ordering::Relaxed), SKIP_AFTER_MISS - 1);
        }
    }

    /// One wait by a pool's rule on `fd`, on a machine taken as not crowded.
    fn pool_wait(s: &SpinWait, fd: BorrowedFd<'_>) -> bool {
        s.spin_in_pool(
            Deadline::NEVER,
            || readable(fd, Deadline::after(Some(Duration::ZERO))).unwrap(),
            false,
        )
    }

    #[test]
    fn in_a_pool_misses_in_a_row_skip_more_and_more_waits() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let s = SpinWait::pool();
        // Each miss skips twice as many waits as the one before, up to SKIP_AFTER_MISS.
        for expected in [1, 2, 4, 8, SKIP_AFTER_MISS, SKIP_AFTER_MISS] {
            assert!(!pool_wait(&s, b.as_fd()));
            assert_eq!(s.skip.load(Ordering::Relaxed), expected);
            for left in (0..expected).rev() {
                assert!(!pool_wait(&s, b.as_fd()));
                assert_eq!(s.skip.load(Ordering::Relaxed), left);
            }
        }
        // An answer found while spinning starts the count again.
        std::io::Write::write_all(&mut a, b"x").unwrap();
        assert!(pool_wait(&s, b.as_fd()));
        let (_c, d) = UnixStream::pair().unwrap();
        assert!(!pool_wait(&s, d.as_fd()));
        assert_eq!(s.skip.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn in_a_pool_nobody_spins_while_the_machine_is_crowded() {
        let (mut a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut a, b"x").unwrap();
        let s = SpinWait::pool();
        let fd = b.as_fd();
        let ready = || readable(fd, Deadline::after(Some(Duration::ZERO))).unwrap();
        assert!(!s.spin_in_pool(Deadline::NEVER, ready, true));
        assert_eq!(s.skip.load(Ordering::Relaxed), 0);
        assert!(s.spin_in_pool(Deadline::NEVER, ready, false));
    }

    #[test]
    fn in_a_pool_a_near_miss_spins_again_a_long_wait_does_not() {
        let (_a, b) = UnixStream::pair().unwrap();
        let s = SpinWait::pool();
        // A miss, then a wait that ended long after it began: the skip stands.
        assert!(!pool_wait(&s, b.as_fd()));
        std::thread::sleep(3 * WINDOW);
        s.woke();
        assert_eq!(s.skip.load(Ordering::Relaxed), 1);
        // The skipped wait, then a second miss in a row (two waits to skip), whose answer came
        // at once (its start set later than now, so that no preemption of this test can make
        // it look long): the next wait spins.
        assert!(!pool_wait(&s, b.as_fd()));
        assert!(!pool_wait(&s, b.as_fd()));
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
