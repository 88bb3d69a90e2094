//! How a program under `#[mp::main]`, its pool workers and a manager's server use glibc's
//! allocator.
//!
//! glibc gives memory back to the kernel eagerly: a block above 128 KiB is its own mapping,
//! unmapped when freed, and free space above 128 KiB at the top of the heap is trimmed. Its
//! dynamic threshold is meant to adapt to programs that allocate and free large blocks over and
//! over, but a worker that decodes a 1 MiB argument, encodes a 1 MiB result and reads the next
//! 1 MiB job keeps missing it: every task then faults its buffers in afresh (about 1,500 page
//! faults per 1 MiB round trip, most of its time), and the pool moved 1 MiB both ways at half
//! the rate it does with the buffers kept. [`keep_freed_memory`] sets the thresholds where the
//! dynamic rule tops out (32 MiB and 64 MiB), so a worker keeps up to 64 MiB of freed heap for
//! its next task; [`give_back_freed_memory`] returns it when that matters (the memory limit).
//! A manager's server, which holds its clients' data for long, returns freed memory at once
//! instead ([`give_back_eagerly`]), even when it was forked from a program that keeps it. A
//! program that sets its own allocator tuning (`GLIBC_TUNABLES=glibc.malloc.…`) keeps it.

/// Blocks up to this size come from the heap and are reused, not mapped and unmapped.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free heap kept at its top for the next allocations.
#[cfg(target_env = "gnu")]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Keeps freed memory for reuse (see the module docs). Does nothing outside glibc, or when the
/// environment tunes glibc's allocator itself.
pub(crate) fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD);
}

/// Returns freed memory to the system at once: blocks above 128 KiB are their own mappings,
/// and free space at the top of the heap is trimmed past 128 KiB (glibc's starting values).
pub(crate) fn give_back_eagerly() {
    #[cfg(target_env = "gnu")]
    set_thresholds(128 << 10, 128 << 10);
}

#[cfg(target_env = "gnu")]
fn set_thresholds(mmap: libc::c_int, trim: libc::c_int) {
    let tuned = std::env::var_os("GLIBC_TUNABLES")
        .is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."));
    if tuned {
        return;
    }
    // SAFETY: mallopt only changes the allocator's tuning parameters; any value is valid for
    // these two, and it takes the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
    }
}

/// Returns the freed memory the allocator holds to the kernel. Does nothing outside glibc.
pub(crate) fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
