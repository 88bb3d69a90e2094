//! futex(2) on a word in shared memory: process-shared (no `FUTEX_PRIVATE_FLAG`), waits bounded
//! by a monotonic deadline.

use std::sync::atomic::AtomicU32;

use crate::sys::poll::Deadline;

/// Sleeps while `*word == expected`, until woken, the deadline passes, or a spurious wake-up.
/// Returns false only if the deadline passed. Callers re-check their condition in a loop.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> bool {
    wait_at(word.as_ptr(), expected, deadline)
}

/// [`wait`] on the 32-bit word at `addr`, which may be half of a wider atomic: the kernel reads
/// it, Rust code never does through this address.
pub(crate) fn wait_at(addr: *const u32, expected: u32, deadline: Deadline) -> bool {
    let ts = match deadline.remaining() {
        None => None,
        Some(left) if left.is_zero() => return false,
        Some(left) => Some(libc::timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        }),
    };
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT only reads the u32 at `addr`, atomically and in the kernel (an invalid
    // address is EFAULT, never a fault in this process); callers pass a word of a mapping they
    // keep alive. The timeout pointer is null or points to a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0,
        )
    };
    if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        return !deadline.passed();
    }
    true
}

/// Wakes up to `n` waiters on `word` (in any process).
pub(crate) fn wake(word: &AtomicU32, n: i32) {
    wake_at(word.as_ptr(), n);
}

/// [`wake`] for the 32-bit word at `addr` (see [`wait_at`]).
pub(crate) fn wake_at(addr: *const u32, n: i32) {
    // SAFETY: FUTEX_WAKE does not access the memory at `addr`; it only uses the address to find
    // the waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        );
    }
}

/// Wakes every waiter.
pub(crate) fn wake_all(word: &AtomicU32) {
    wake(word, i32::MAX);
}
