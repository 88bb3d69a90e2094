//! The CPU time of another process, from `/proc/<pid>/stat` (proc_pid_stat(5)).

use std::io;
use std::time::Duration;

/// User plus system CPU time process `pid` has used so far (its `utime` and `stime`, without
/// its children's). `ErrorKind::NotFound` once the process is gone.
pub(crate) fn of(pid: i32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/<pid>/stat"))?;
    // SAFETY: sysconf(3) takes a constant and touches no memory of ours.
    let per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second,
    ))
}

/// `utime + stime` in clock ticks. The command name (field 2) may hold spaces and parentheses,
/// so the fields are counted from the last `)`: after it come `state` (field 3), ...,
/// `utime` (14) and `stime` (15).
fn parse(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fields_after_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 1 0";
        assert_eq!(parse(stat), Some(100));
        assert_eq!(parse("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_uses_cpu() {
        // Spins until the figure moves (it counts in clock ticks); a busy machine only makes
        // that take longer.
        let me = std::process::id() as i32;
        let before = of(me).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while of(me).unwrap() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time stuck at {before:?}"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(of(me).unwrap() > before);
        assert_eq!(of(i32::MAX).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
