//! Telling a thread from a later thread that got the same id.
//!
//! A robust lock word names its holder by thread id, and a waiter that finds the holder gone
//! takes the lock over. But ids are recycled: once the holder is dead, any thread of any process
//! may get its id, and an id-only check would then wait for that stranger forever. So the holder
//! also records a 32-bit *tag* of itself, and a waiter compares it with the tag of whoever has
//! the id now:
//!
//! - pidfs inode (Linux 6.9+): every thread has a pidfd whose inode number is never reused
//!   during a boot (`pidfd_open(tid, PIDFD_THREAD)` + `fstat`); the tag keeps its low 31 bits,
//!   with bit 31 set. Two threads with one id collide only if 2^31 threads were created between
//!   them.
//! - start time otherwise: field 22 of `/proc/<tid>/stat`, in clock ticks since boot, plus 1,
//!   bit 31 clear. Two threads with one id collide only if the id was recycled within one tick
//!   (10 ms), which needs every other id of the pid namespace to be in use.
//! - 0 when neither can be read: waiters then fall back to "a thread with this id exists".
//!
//! A thread computes its own tag the way a waiter will, from its id, so both sides agree. When
//! a waiter cannot evaluate a tag (a pidfd refused by a seccomp filter, no file descriptors
//! left), it assumes the holder lives: a lock held a while longer is recoverable, a lock taken
//! from a live holder is not.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for any thread, not only a process leader.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
/// `PID_FS_MAGIC`: the file system of pidfds whose inode numbers are unique.
const PIDFS_MAGIC: i64 = 0x5049_4446;
/// Bit 31 of a tag: the rest is a pidfs inode number, not a start time.
const FROM_PIDFS: u32 = 1 << 31;
const LOW_31: u64 = 0x7FFF_FFFF;

/// A tag no thread has: its holder cannot be told from a namesake.
pub(crate) const UNKNOWN: u32 = 0;

/// The tag of thread `tid` as a waiter would see it, taken by the thread itself: the pidfs
/// form if this kernel has it, else the start time, else [`UNKNOWN`].
pub(crate) fn own(tid: u32) -> u32 {
    match pidfs_tag(tid) {
        Probe::Tag(tag) => tag,
        Probe::Gone | Probe::Unavailable => match proc_stat(tid) {
            Some(stat) => stat.tag,
            None => UNKNOWN,
        },
    }
}

/// Whether the thread that recorded `tag` under id `tid` still runs: false if no thread has the
/// id, if it is a zombie, or if the thread with the id now has another tag.
pub(crate) fn still_running(tid: u32, tag: u32) -> bool {
    if tag & FROM_PIDFS != 0 {
        match pidfs_tag(tid) {
            Probe::Gone => return false,
            Probe::Tag(now) => return now == tag,
            // Cannot compare: only the existence check below is left.
            Probe::Unavailable => {}
        }
    }
    match proc_stat(tid) {
        None => false,
        Some(stat) if stat.exited => false,
        Some(stat) => tag & FROM_PIDFS != 0 || tag == UNKNOWN || stat.tag == tag,
    }
}

enum Probe {
    /// The thread runs and has this tag.
    Tag(u32),
    /// No thread has the id, or it has exited.
    Gone,
    /// pidfds of threads, or their unique inodes, are not available here.
    Unavailable,
}

/// The pidfs tag of thread `tid`.
fn pidfs_tag(tid: u32) -> Probe {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it touches no
    // memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid as libc::pid_t, PIDFD_THREAD) };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Probe::Gone,
            _ => Probe::Unavailable,
        };
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // `f_type`'s width differs between targets.
    #[allow(clippy::unnecessary_cast)]
    let unique =
        nix::sys::statfs::fstatfs(&fd).is_ok_and(|fs| fs.filesystem_type().0 as i64 == PIDFS_MAGIC);
    let Ok(st) = nix::sys::stat::fstat(&fd) else {
        return Probe::Unavailable;
    };
    if !unique {
        return Probe::Unavailable;
    }
    // A thread that exited (a zombie leader included) makes its pidfd readable.
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
        return Probe::Gone;
    }
    Probe::Tag(FROM_PIDFS | (st.st_ino & LOW_31) as u32)
}

struct ProcStat {
    /// The start-time tag.
    tag: u32,
    /// A zombie, or dead.
    exited: bool,
}

/// What `/proc/<tid>/stat` says about thread `tid`; `None` if there is no such thread.
fn proc_stat(tid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces: the first
    // is field 3 (the state), so field 22 (the start time) is the 20th.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let start: u64 = fields.nth(18)?.parse().ok()?;
    Some(ProcStat {
        tag: (start % LOW_31) as u32 + 1,
        exited: matches!(state, "Z" | "X" | "x"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that lives until dropped.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn start() -> Sleeper {
            Sleeper(
                std::process::Command::new("sleep")
                    .arg("600")
                    .spawn()
                    .expect("start sleep(1)"),
            )
        }

        fn tid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn my_tid() -> u32 {
        nix::unistd::gettid().as_raw() as u32
    }

    #[test]
    fn a_running_thread_matches_its_own_tag() {
        let me = my_tid();
        let tag = own(me);
        assert_ne!(tag, UNKNOWN);
        assert!(still_running(me, tag));
        let child = Sleeper::start();
        assert!(still_running(child.tid(), own(child.tid())));
        // Without a tag, existence is all that counts.
        assert!(still_running(child.tid(), UNKNOWN));
    }

    #[test]
    fn another_thread_with_the_id_is_not_the_holder() {
        // The child stands for a process that got a dead holder's id: it runs, but its tag
        // is not the one the holder recorded.
        let child = Sleeper::start();
        let tag = own(child.tid());
        let other = if tag & FROM_PIDFS != 0 {
            FROM_PIDFS | (tag.wrapping_add(1) & !FROM_PIDFS)
        } else {
            tag % (LOW_31 as u32) + 1
        };
        assert!(!still_running(child.tid(), other));
    }

    #[test]
    fn the_start_time_form_is_checked_too() {
        let child = Sleeper::start();
        let stat = proc_stat(child.tid()).expect("the child's /proc entry");
        assert!(!stat.exited);
        assert!(still_running(child.tid(), stat.tag));
        assert!(!still_running(child.tid(), stat.tag % (LOW_31 as u32) + 1));
    }

    #[test]
    fn a_missing_or_exited_thread_is_not_running() {
        // Beyond any pid_max.
        assert!(!still_running(0x3FFF_FFF0, UNKNOWN));
        assert!(!still_running(0x3FFF_FFF0, FROM_PIDFS | 5));
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let tid = child.id();
        let tag = own(tid);
        assert!(still_running(tid, tag));
        child.kill().unwrap();
        // Wait for the exit without reaping: the child stays a zombie, which holds nothing.
        nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(tid as i32)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        assert!(proc_stat(tid).is_some_and(|s| s.exited));
        assert!(!still_running(tid, tag));
        assert!(!still_running(tid, UNKNOWN));
        child.wait().unwrap();
    }
}
