//! Whether this machine runs more threads at once than its CPUs can serve, for the spin of
//! [`spin_wait`](super::spin_wait): spinning pays only while the peer has a CPU of its own.
//!
//! The figure is the kernel's count of runnable threads (the fourth field of `/proc/loadavg`,
//! machine-wide and instantaneous), read at most every [`REFRESH`] per process, so that a wait
//! costs an atomic load. A machine counts as crowded above two runnable threads per online CPU:
//! a pool's caller, scheduler and busy workers spinning on two CPUs stay below that, eight
//! ping-pong pairs on the same two CPUs do not. Without `/proc` nothing is crowded.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How old a reading may be.
const REFRESH: Duration = Duration::from_millis(10);

/// Runnable threads per online CPU above which the machine is crowded.
const PER_CPU: usize = 2;

static CROWDED: AtomicBool = AtomicBool::new(false);
/// When the figure was last read, in microseconds since [`epoch`] plus one (0: never).
static READ_AT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Whether more threads are runnable now than twice the online CPUs (refreshed every 10 ms).
pub(crate) fn crowded() -> bool {
    let now = epoch().elapsed().as_micros() as u64 + 1;
    let at = READ_AT.load(Ordering::Relaxed);
    let stale = at == 0 || now.saturating_sub(at) >= REFRESH.as_micros() as u64;
    // One thread refreshes; the others use the last figure meanwhile.
    if stale
        && READ_AT
            .compare_exchange(at, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let crowded = runnable().is_some_and(|n| n > PER_CPU * online_cpus());
        CROWDED.store(crowded, Ordering::Relaxed);
    }
    CROWDED.load(Ordering::Relaxed)
}

/// The machine's runnable threads now (this one included).
fn runnable() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_runnable(&text)
}

/// The `running` of `"0.20 0.18 0.12 running/total lastpid"`.
fn parse_runnable(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

fn online_cpus() -> usize {
    static ONLINE: OnceLock<usize> = OnceLock::new();
    *ONLINE.get_or_init(|| {
        // SAFETY: sysconf only reads a system setting.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runnable_count_is_the_fourth_field() {
        assert_eq!(parse_runnable("0.20 0.18 0.12 3/812 11206\n"), Some(3));
        assert_eq!(parse_runnable("0.20 0.18"), None);
        assert_eq!(parse_runnable("a b c x/1 2"), None);
    }

    #[test]
    fn this_machine_can_be_read() {
        // This test's own thread is runnable.
        assert!(runnable().is_some_and(|n| n >= 1));
        let _ = crowded();
        assert!(READ_AT.load(Ordering::Relaxed) > 0);
    }
}
