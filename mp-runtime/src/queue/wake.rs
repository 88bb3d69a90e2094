//! Waiting for the other side of a queue: spin while that pays, then sleep on a futex word that
//! says whether anyone sleeps, so that the side that makes progress pays nothing (one load of a
//! line nobody writes) while nobody does.
//!
//! **Sleeping.** A sleeper sets the word's low bit, checks its condition once more, and sleeps
//! on the word. Whoever makes the condition true stores that and then reads the word (see
//! [`Waiters::wake`]), with the asymmetric barriers of [`barrier`] in between on both sides:
//! either the sleeper's second check saw the change, or the waker sees the bit, clears it
//! (bumping the word) and wakes every sleeper. Only the first waker after a sleep enters the
//! kernel.
//!
//! **Spinning.** A peer running on another CPU usually makes the condition true within
//! microseconds, which is cheaper to watch than to sleep through (a futex sleep and wake-up cost
//! two system calls and a trip through the scheduler). A peer that is not running, because it
//! sleeps, computes something else, or waits for the very CPU the spinner holds, gains nothing
//! from it. [`Spin`] therefore adapts each process's budget to what its recent waits found:
//! it doubles after a wait that spinning ended, and halves after one that had to sleep. While
//! it spins, a waiter checks its condition only every [`STEP`] rounds, so that it takes runs of
//! items rather than pulling the other side's cache line at every one.

use std::sync::atomic::{AtomicU32, Ordering};

use super::barrier;
use crate::sync::futex;
use crate::sys::poll::Deadline;

/// The low bit: someone sleeps (or is about to) on the word.
const ASLEEP: u32 = 1;

/// A futex word for the sleepers waiting on one condition.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct Waiters(AtomicU32);

impl Waiters {
    /// Wakes the sleepers, if any. Call after the store that made their condition true and a
    /// [`barrier::light`].
    #[inline]
    pub(crate) fn wake(&self) {
        let w = self.0.load(Ordering::SeqCst);
        if w & ASLEEP != 0 {
            self.wake_sleepers(w);
        }
    }

    #[cold]
    fn wake_sleepers(&self, w: u32) {
        // `w + 1` clears the bit and moves the word: a sleeper about to sleep on `w` will not.
        if self
            .0
            .compare_exchange(w, w.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            futex::wake_all(&self.0);
        }
    }

    /// Wakes every sleeper whatever the bit says (shutdown, repair after a death).
    pub(crate) fn wake_everyone(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some((w | ASLEEP).wrapping_add(1))
            });
        futex::wake_all(&self.0);
    }

    /// Sleeps until `ready()` holds (it must read with `SeqCst`); false if the deadline passed
    /// first. Looks again every [`NAP`] even without a wake-up: a waker killed between its
    /// store and its wake-up must not leave a sleeper asleep for good.
    pub(crate) fn sleep_until(&self, deadline: Deadline, ready: impl Fn() -> bool) -> bool {
        loop {
            let w = self.0.load(Ordering::SeqCst);
            let armed = w | ASLEEP;
            if w != armed
                && self
                    .0
                    .compare_exchange(w, armed, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                continue;
            }
            barrier::heavy();
            if ready() {
                return true;
            }
            let nap = Deadline::after(Some(deadline.remaining().map_or(NAP, |r| r.min(NAP))));
            futex::wait(&self.0, armed, nap);
            if ready() {
                return true;
            }
            if deadline.passed() {
                return false;
            }
        }
    }
}

/// The longest a sleeper sleeps before it looks at its condition again.
const NAP: std::time::Duration = std::time::Duration::from_millis(100);

/// Spin rounds before sleeping, at least, at first and at most. One round is a `pause`, which
/// takes 10 to 150 cycles depending on the CPU (33 ns on the AMD EPYC of docs/PERFORMANCE.md):
/// the floor is about a microsecond there, the ceiling about what a sleep and a wake-up cost.
const MIN_SPINS: u32 = 32;
const MAX_SPINS: u32 = 4096;

/// Spin rounds between two checks of the condition. Each check reads a cache line the other
/// side writes, and pulling that line away from a busy writer stalls the writer's next store
/// (measured: a producer of small items ran at 8 M items/s with a consumer checking at every
/// round, 13 to 15 M with one check per 32 to 128 rounds). A waiter that looks less often finds
/// a run of items at once, and notices a new one within a couple of microseconds, still well
/// under a futex wake-up.
const STEP: u32 = 64;

/// A process's spin budget for one kind of wait (see the module docs).
#[derive(Debug)]
pub(crate) struct Spin(AtomicU32);

impl Default for Spin {
    fn default() -> Spin {
        Spin(AtomicU32::new(MAX_SPINS / 4))
    }
}

impl Spin {
    /// Spins until `ready()`, the budget runs out or the deadline passes; true if it became
    /// ready.
    #[inline]
    pub(crate) fn spin(&self, deadline: Deadline, ready: impl Fn() -> bool) -> bool {
        let budget = self.0.load(Ordering::Relaxed);
        let timed = deadline.remaining().is_some();
        let mut spun = 0;
        while spun < budget && !(timed && deadline.passed()) {
            if ready() {
                self.0.store((budget * 2).min(MAX_SPINS), Ordering::Relaxed);
                return true;
            }
            for _ in 0..STEP {
                std::hint::spin_loop();
            }
            spun += STEP;
        }
        self.0.store((budget / 2).max(MIN_SPINS), Ordering::Relaxed);
        false
    }
}

/// Waits until `ready()`: spins on `spin`'s budget, then sleeps on `waiters`. False if the
/// deadline passed first.
pub(crate) fn wait(
    spin: &Spin,
    waiters: &Waiters,
    deadline: Deadline,
    ready: impl Fn() -> bool,
) -> bool {
    spin.spin(deadline, &ready) || waiters.sleep_until(deadline, ready)
}
