//! A process-shared mutex word that survives the death of its holder.
//!
//! The word holds the holder's identity: its thread id (unique in the pid namespace while the
//! thread lives) and a tag that tells it from a later thread given the same id
//! (`sys/thread_tag.rs`), plus a bit that says someone may be sleeping on it. A contended locker
//! spins briefly, then sleeps at most [`LIVENESS_CHECK`] at a time; when a nap ends without a
//! wake-up it checks that the holder still runs, and takes the lock over from a dead holder,
//! reporting [`Acquired::OwnerDied`] so the caller can repair the protected state.
//!
//! ```text
//! bits 0..31: thread id   bit 31: CONTENDED   bits 32..64: tag
//! ```
//! The futex is the low 32-bit half (id and `CONTENDED`); the whole word changes in one
//! compare-and-swap, so a holder's id and tag are never seen apart.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::futex;
use crate::sys::poll::Deadline;
use crate::sys::thread_tag;

const CONTENDED: u64 = 1 << 31;
const TID: u64 = (1 << 31) - 1;
/// How long a waiter sleeps before checking that the holder is alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

/// A robust lock word in shared memory (all-zero: free).
#[repr(transparent)]
#[derive(Debug, Default)]
pub(crate) struct Word(AtomicU64);

impl Word {
    /// A word in the given state (tests write holders by hand).
    #[cfg(test)]
    pub(crate) const fn new(bits: u64) -> Word {
        Word(AtomicU64::new(bits))
    }

    /// The address of the futex: the half of the word holding the id and `CONTENDED`.
    fn futex(&self) -> *const u32 {
        let base = self.0.as_ptr() as *const u32;
        if cfg!(target_endian = "little") {
            base
        } else {
            base.wrapping_add(1)
        }
    }

    /// The raw word (id, bit and tag), for tests and diagnostics.
    #[cfg(test)]
    pub(crate) fn bits(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Overwrites the word (tests write holders by hand).
    #[cfg(test)]
    pub(crate) fn store(&self, bits: u64, order: Ordering) {
        self.0.store(bits, order)
    }
}

/// How a lock was obtained.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Normally.
    Clean,
    /// From a holder that died holding it.
    OwnerDied,
}

thread_local! {
    /// This thread's identity as a lock holder, cached (computing it takes a few system calls);
    /// 0 until first asked.
    static ME: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's identity, the value a holder writes into a lock word: its id and tag.
#[inline]
pub(crate) fn me() -> u64 {
    ME.with(|m| {
        let cached = m.get();
        if cached != 0 {
            return cached;
        }
        let id = identify();
        m.set(id);
        id
    })
}

#[cold]
fn identify() -> u64 {
    forget_identity_on_fork();
    let tid = nix::unistd::gettid().as_raw() as u32;
    u64::from(thread_tag::own(tid)) << 32 | u64::from(tid) & TID
}

/// A forked child runs on a copy of the forking thread, whose cached identity is the parent's:
/// make the child ask again. Registered before any identity is cached, so none can cross a fork.
fn forget_identity_on_fork() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        let _ = ME.try_with(|m| m.set(0));
    }
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only writes this thread's thread-local cell, which is
        // async-signal-safe in practice (no allocation: the cell is const-initialized).
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// The holder's identity in a lock word (0 when free).
pub(crate) fn holder(word: &Word) -> u64 {
    word.0.load(Ordering::Relaxed) & !CONTENDED
}

/// The holder's thread id in a lock word (0 when free).
pub(crate) fn owner_tid(word: &Word) -> u32 {
    (word.0.load(Ordering::Relaxed) & TID) as u32
}

/// Whether the word is held by anyone (possibly a dead holder nobody noticed yet).
pub(crate) fn is_locked(word: &Word) -> bool {
    word.0.load(Ordering::Relaxed) != 0
}

/// Takes `word` if it is free, without waiting.
#[inline]
pub(crate) fn try_lock_free(word: &Word) -> bool {
    word.0
        .compare_exchange(0, me(), Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Whether the holder `id` (from a lock word) still runs: its thread exists, is not a zombie and
/// is the thread that took the lock, not a later one that got its id.
fn holder_runs(id: u64) -> bool {
    thread_tag::still_running((id & TID) as u32, (id >> 32) as u32)
}

/// Locks `word`. `None` if the deadline passed first.
#[inline]
pub(crate) fn lock(word: &Word, deadline: Deadline) -> Option<Acquired> {
    let me = me();
    if word
        .0
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Some(Acquired::Clean);
    }
    lock_contended(word, me, deadline)
}

/// Busy-wait rounds before sleeping: a holder on another CPU usually lets go within them, and a
/// sleep costs two system calls.
const SPIN_ROUNDS: u32 = 100;

#[cold]
fn lock_contended(word: &Word, me: u64, deadline: Deadline) -> Option<Acquired> {
    let w = &word.0;
    for _ in 0..SPIN_ROUNDS {
        let cur = w.load(Ordering::Relaxed);
        if cur == 0 {
            if w.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::Clean);
            }
        } else if cur & CONTENDED != 0 {
            break;
        }
        std::hint::spin_loop();
    }
    // Checking the holder costs far more than a lock hand-over (system calls, maybe a /proc
    // read): do it only when a nap ended without a wake-up.
    let mut check_holder = false;
    loop {
        let cur = w.load(Ordering::Relaxed);
        if cur == 0 {
            // Having waited, assume others wait too: take it marked contended.
            if w.compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::Clean);
            }
            continue;
        }
        let holder = cur & !CONTENDED;
        // Our own identity in the word: a dead namesake whose tag could not be told from ours
        // (callers that allow re-entry check for it before locking).
        if holder == me || (check_holder && !holder_runs(holder)) {
            if w.compare_exchange(cur, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::OwnerDied);
            }
            continue;
        }
        if cur & CONTENDED == 0
            && w.compare_exchange(cur, cur | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        if deadline.passed() {
            return None;
        }
        let nap = Deadline::after(Some(
            deadline
                .remaining()
                .map_or(LIVENESS_CHECK, |r| r.min(LIVENESS_CHECK)),
        ));
        check_holder = !futex::wait_at(word.futex(), futex_half(cur | CONTENDED), nap);
    }
}

/// The futex half of a word value.
fn futex_half(bits: u64) -> u32 {
    (bits & (TID | CONTENDED)) as u32
}

/// Sleeps while `holder` holds the word, until it is unlocked, a spurious wake-up or the
/// deadline. Marks the word contended first, so that the unlock wakes the sleeper.
pub(crate) fn sleep_while_held_by(word: &Word, holder: u64, deadline: Deadline) {
    let w = &word.0;
    let mut cur = w.load(Ordering::Relaxed);
    while cur & !CONTENDED == holder && cur & CONTENDED == 0 {
        match w.compare_exchange(cur, cur | CONTENDED, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => cur |= CONTENDED,
            Err(now) => cur = now,
        }
    }
    if cur & !CONTENDED == holder {
        futex::wait_at(word.futex(), futex_half(cur), deadline);
    }
}

/// Unlocks `word`, waking one sleeper if any may be waiting.
#[inline]
pub(crate) fn unlock(word: &Word) {
    if word.0.swap(0, Ordering::Release) & CONTENDED != 0 {
        futex::wake_at(word.futex(), 1);
    }
}

/// A process that lives until dropped, standing for a thread that got a dead holder's id.
#[cfg(test)]
pub(crate) struct Namesake(std::process::Child);

#[cfg(test)]
impl Namesake {
    pub(crate) fn start() -> Namesake {
        Namesake(
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("start sleep(1)"),
        )
    }

    /// A word naming the child as holder with its real tag (`honest`) or another one: the word
    /// a holder that died would have left before the child got its id.
    pub(crate) fn word(&self, honest: bool) -> u64 {
        let tid = self.0.id();
        let tag = thread_tag::own(tid);
        let tag = match (honest, tag ^ 1) {
            (true, _) => tag,
            (false, thread_tag::UNKNOWN) => 2,
            (false, other) => other,
        };
        u64::from(tag) << 32 | u64::from(tid) | CONTENDED
    }
}

#[cfg(test)]
impl Drop for Namesake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_unlock_and_contention_between_threads() {
        let word = std::sync::Arc::new(Word::default());
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (w, c) = (word.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        assert_eq!(lock(&w, Deadline::NEVER), Some(Acquired::Clean));
                        let v = c.load(Ordering::Relaxed);
                        c.store(v + 1, Ordering::Relaxed);
                        unlock(&w);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 40_000);
        assert_eq!(word.bits(), 0);
    }

    #[test]
    fn the_word_holds_id_and_tag() {
        let word = Word::default();
        assert_eq!(lock(&word, Deadline::NEVER), Some(Acquired::Clean));
        let tid = nix::unistd::gettid().as_raw() as u32;
        assert_eq!(owner_tid(&word), tid);
        assert_eq!(holder(&word), me());
        assert_eq!(me() >> 32, u64::from(thread_tag::own(tid)));
        assert_ne!(me() >> 32, 0, "this kernel gives threads a tag");
        unlock(&word);
        assert!(!is_locked(&word));
    }

    #[test]
    fn a_dead_holder_is_detected() {
        // A thread id that cannot exist (beyond pid_max), without and with a tag.
        for bits in [0x3FFF_FFF0, 0x8000_0123_3FFF_FFF0] {
            let word = Word::new(bits);
            assert_eq!(lock(&word, Deadline::NEVER), Some(Acquired::OwnerDied));
            assert_eq!(holder(&word), me());
            unlock(&word);
        }
    }

    #[test]
    fn a_dead_holder_whose_id_was_reused_is_detected() {
        let namesake = Namesake::start();
        let word = Word::new(namesake.word(false));
        // Bounded, so that a regression fails instead of hanging: the check runs after 50 ms.
        let d = Deadline::after(Some(Duration::from_secs(60)));
        assert_eq!(lock(&word, d), Some(Acquired::OwnerDied));
        assert_eq!(holder(&word), me());
        unlock(&word);
    }

    #[test]
    fn a_live_holder_keeps_the_lock() {
        let namesake = Namesake::start();
        let word = Word::new(namesake.word(true));
        // Several liveness checks pass while the child runs.
        let d = Deadline::after(Some(Duration::from_millis(300)));
        assert_eq!(lock(&word, d), None);
        assert_eq!(word.bits(), namesake.word(true));
    }

    #[test]
    fn timeout_while_a_live_holder_keeps_it() {
        let word = Word::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let word = unsafe_static(&word);
            move || {
                lock(word, Deadline::NEVER);
                tx.send(()).unwrap();
                done_rx.recv().unwrap();
                unlock(word);
            }
        });
        rx.recv().unwrap();
        let d = Deadline::after(Some(Duration::from_millis(120)));
        assert_eq!(lock(&word, d), None);
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(lock(&word, Deadline::NEVER), Some(Acquired::Clean));
    }

    /// The test keeps `word` alive until the thread is joined.
    fn unsafe_static(word: &Word) -> &'static Word {
        // SAFETY: the caller joins the thread that uses the reference before `word` goes out of
        // scope.
        unsafe { &*(word as *const Word) }
    }
}
