//! A process-shared mutex word that survives the death of its holder.
//!
//! The word holds the holder's thread id (globally unique in the pid namespace), plus a bit that
//! says someone may be sleeping on it. A contended locker spins briefly, then sleeps at most
//! [`LIVENESS_CHECK`] at a time; when a nap ends without a wake-up it checks that the holder still
//! exists, and takes the lock over from a dead holder, reporting [`Acquired::OwnerDied`] so the
//! caller can repair the protected state.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::futex;
use crate::sys::poll::Deadline;

const CONTENDED: u32 = 1 << 31;
/// How long a waiter sleeps before checking that the holder is alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

/// How a lock was obtained.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Normally.
    Clean,
    /// From a holder that died holding it.
    OwnerDied,
}

thread_local! {
    /// This thread's id, cached (gettid is a system call); 0 until first asked.
    static TID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The calling thread's id, the value a holder writes into a lock word.
pub(crate) fn my_tid() -> u32 {
    TID.with(|t| {
        let cached = t.get();
        if cached != 0 {
            return cached;
        }
        forget_tid_on_fork();
        let tid = nix::unistd::gettid().as_raw() as u32;
        t.set(tid);
        tid
    })
}

/// A forked child runs on a copy of the forking thread, whose cached id is the parent's: make the
/// child ask again. Registered before any id is cached, so no cached id can cross a fork.
fn forget_tid_on_fork() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        let _ = TID.try_with(|t| t.set(0));
    }
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only writes this thread's thread-local cell, which is
        // async-signal-safe in practice (no allocation: the cell is const-initialized).
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// The thread id in a lock word (0 when free).
pub(crate) fn owner(word: &AtomicU32) -> u32 {
    word.load(Ordering::Relaxed) & !CONTENDED
}

/// Takes `word` if it is free, without waiting.
#[inline]
pub(crate) fn try_lock_free(word: &AtomicU32) -> bool {
    word.compare_exchange(0, my_tid(), Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Whether thread `tid` (of any process) exists and is not a zombie.
pub(crate) fn alive(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                let state = rest.trim_start().chars().next().unwrap_or('X');
                state != 'Z' && state != 'X'
            })
            .unwrap_or(false),
    }
}

/// Locks `word`. `None` if the deadline passed first.
#[inline]
pub(crate) fn lock(word: &AtomicU32, deadline: Deadline) -> Option<Acquired> {
    let me = my_tid();
    if word
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
fn lock_contended(word: &AtomicU32, me: u32, deadline: Deadline) -> Option<Acquired> {
    for _ in 0..SPIN_ROUNDS {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            if word
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::Clean);
            }
        } else if cur & CONTENDED != 0 {
            break;
        }
        std::hint::spin_loop();
    }
    // Reading /proc costs far more than a lock hand-over: check the holder only when a nap
    // ended without a wake-up.
    let mut check_holder = false;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            // Having waited, assume others wait too: take it marked contended.
            if word
                .compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::Clean);
            }
            continue;
        }
        let owner = cur & !CONTENDED;
        // Our own id in the word means a dead holder's tid was reused by this thread.
        if owner == me || (check_holder && !alive(owner)) {
            if word
                .compare_exchange(cur, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some(Acquired::OwnerDied);
            }
            continue;
        }
        if cur & CONTENDED == 0
            && word
                .compare_exchange(cur, cur | CONTENDED, Ordering::Relaxed, Ordering::Relaxed)
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
        check_holder = !futex::wait(word, cur | CONTENDED, nap);
    }
}

/// Unlocks `word`, waking one sleeper if any may be waiting.
#[inline]
pub(crate) fn unlock(word: &AtomicU32) {
    if word.swap(0, Ordering::Release) & CONTENDED != 0 {
        futex::wake(word, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_unlock_and_contention_between_threads() {
        let word = std::sync::Arc::new(AtomicU32::new(0));
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
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_dead_holder_is_detected() {
        // A thread id that cannot exist (beyond pid_max).
        let word = AtomicU32::new(0x3FFF_FFF0);
        assert_eq!(lock(&word, Deadline::NEVER), Some(Acquired::OwnerDied));
        unlock(&word);
    }

    #[test]
    fn timeout_while_a_live_holder_keeps_it() {
        let word = AtomicU32::new(0);
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
    fn unsafe_static(word: &AtomicU32) -> &'static AtomicU32 {
        // SAFETY: the caller joins the thread that uses the reference before `word` goes out of
        // scope.
        unsafe { &*(word as *const AtomicU32) }
    }
}
