//! futex(2) on a word in shared memory: process-shared (no `FUTEX_PRIVATE_FLAG`), waits bounded
//! by a monotonic deadline.

use std::sync::atomic::AtomicU32;

use crate::sys::poll::Deadline;

/// Sleeps while `*word == expected`, until woken, the deadline passes, or a spurious wake-up.
/// Returns false only if the deadline passed. Callers re-check their condition in a loop.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> bool {
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
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (it lives in a mapping
    // owned by the caller); the timeout pointer is null or points to a live timespec. FUTEX_WAIT
    // only reads the word.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
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
    // SAFETY: as in `wait`; FUTEX_WAKE does not access the word's memory beyond its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
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
