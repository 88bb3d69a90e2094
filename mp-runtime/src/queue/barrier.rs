//! Asymmetric memory barriers between the side of a queue that makes progress and the side that
//! goes to sleep.
//!
//! A sleeper announces itself and then checks its condition; the other side stores the progress
//! and then checks for sleepers. Each side needs a full barrier between its store and its load,
//! or both may miss the other (x86 lets a load overtake an earlier store to another address).
//! A full barrier costs a producer most of a `put` when the consumer keeps reading the word it
//! stores (the store must reach the cache line before anything after it runs). So the busy side
//! only keeps the compiler from reordering ([`light`]), and the sleeper, which is about to spend
//! a system call anyway, makes every CPU running a process of the queue execute a barrier
//! ([`heavy`], Linux's `membarrier` with `MEMBARRIER_CMD_GLOBAL_EXPEDITED`). Processes register
//! for that once; registration survives `fork` and is renewed after `exec`. Where the kernel
//! refuses it, the busy side falls back to a full barrier of its own. (Were it refused to a
//! sleeper but granted to a busy side, a wake-up could be missed; sleepers look at their
//! condition again every 100 ms in any case, see `wake::Waiters::sleep_until`.)

use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};

const UNKNOWN: u8 = 0;
const REGISTERED: u8 = 1;
const REFUSED: u8 = 2;

/// This process's registration for expedited global barriers.
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

// From linux/membarrier.h.
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes two integers (and a CPU id with flags we do not pass); it reads
    // and writes no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Registers this process (once) so that [`heavy`] reaches it; called before a process first
/// uses a queue.
pub(crate) fn register() {
    if MODE.load(Ordering::Relaxed) == UNKNOWN {
        let mode = if membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) {
            REGISTERED
        } else {
            REFUSED
        };
        MODE.store(mode, Ordering::Relaxed);
    }
}

/// The busy side's barrier, between its store of progress and its load of the sleepers' word.
#[inline]
pub(crate) fn light() {
    if MODE.load(Ordering::Relaxed) == REGISTERED {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's barrier, between announcing itself and checking its condition: afterwards,
/// every store a busy side made before its [`light`] barrier is visible here, or that side's
/// load after the barrier sees the announcement.
pub(crate) fn heavy() {
    fence(Ordering::SeqCst);
    // Harmless if nobody registered (or the kernel refuses): then every busy side uses a full
    // barrier of its own.
    let _ = membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}
