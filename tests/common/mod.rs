//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::time::Duration;

/// Every blocking wait in the tests is bounded by this; a hang becomes a failure, not a stuck CI.
pub const LONG: Duration = Duration::from_secs(60);

/// Defines one test per start method for a body taking the `mp::Context` to use:
/// `for_each_method!(pr_03_before_start, |ctx| { ... });` gives `pr_03_before_start::spawn`,
/// `::fork` and `::forkserver`.
#[macro_export]
macro_rules! for_each_method {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn spawn() {
                let _g = $crate::common::shared();
                ($body)(mp::get_context(mp::StartMethod::Spawn))
            }
            #[test]
            fn fork() {
                let _g = $crate::common::exclusive();
                ($body)(mp::get_context(mp::StartMethod::Fork))
            }
            #[test]
            fn forkserver() {
                let _g = $crate::common::shared();
                ($body)(mp::get_context(mp::StartMethod::ForkServer))
            }
        }
    };
}

static FORK_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Taken by tests that start `Fork` children, for their whole run. A forked child inherits every
/// descriptor of the test process, including pipe ends of tests running in other threads, which
/// would then see end-of-stream late; so no other test runs while one forks.
pub fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    FORK_LOCK.write().unwrap_or_else(|p| p.into_inner())
}

/// Taken by every other test that starts processes or relies on end-of-stream.
pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    FORK_LOCK.read().unwrap_or_else(|p| p.into_inner())
}

/// Starts `p` and returns it, panicking with the error otherwise.
pub fn started<R: serde::de::DeserializeOwned>(mut p: mp::Process<R>) -> mp::Process<R> {
    p.start().expect("start");
    p
}

/// Joins with a generous bound: a child that never exits fails the test instead of hanging it.
pub fn join<R: serde::de::DeserializeOwned>(p: &mut mp::Process<R>) -> mp::Result<R> {
    assert!(
        p.join_timeout(LONG),
        "process {:?} did not exit within {LONG:?}",
        p
    );
    p.join()
}

/// Whether `pid` is gone (or a zombie nobody reaped yet) according to /proc.
pub fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes. For conditions that have no
/// descriptor to wait on (a process of someone else's disappearing).
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pipe whose write end can be handed to a child; read the whole of it with `read_all`.
pub fn capture_pipe() -> (std::io::PipeReader, mp::Handle) {
    let (r, w) = std::io::pipe().expect("pipe");
    (r, mp::Handle::from(std::os::fd::OwnedFd::from(w)))
}

/// Reads until every writer has closed.
pub fn read_all(mut r: std::io::PipeReader) -> String {
    use std::io::Read;
    let mut s = String::new();
    r.read_to_string(&mut s).expect("read pipe");
    s
}

/// This thread's id, for [`asleep_in_futex`].
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is asleep (blocked in a system call, state `S`).
pub fn asleep(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
    })
}

/// Whether thread `tid` of this process is blocked in a futex wait (the kernel's wait channel
/// names it), which is where every `mp` primitive sleeps.
pub fn asleep_in_futex(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
        .is_ok_and(|w| w.starts_with("futex"))
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler that does nothing for `signal` (without SA_RESTART), so that the signal
/// interrupts blocking system calls with EINTR instead of killing the process.
pub fn interrupt_with(signal: nix::sys::signal::Signal) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(signal, &action) }.expect("sigaction");
}

/// Runs test `name` of this test binary alone in a child process and asserts that it passed;
/// returns true in that child, where the caller then runs the test's body. For tests that
/// change process-wide state (resource limits) that would disturb the other tests.
pub fn in_child_process(name: &str) -> bool {
    const VAR: &str = "MP_TEST_ALONE";
    if std::env::var(VAR).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let child = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the test binary again");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(2 * LONG) {
        Ok(output) => output.expect("wait for the child test"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            waiter.join().unwrap();
            panic!(
                "test {name} did not finish in its own process within {:?}",
                2 * LONG
            );
        }
    };
    waiter.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("1 passed"),
        "test {name} failed in its own process:\n{text}"
    );
    false
}

/// Lowers the soft limit on open descriptors (RLIMIT_NOFILE) to the lowest free descriptor
/// number, so that no new descriptor can be opened while those open keep working (and poll(2),
/// which refuses more descriptors than the limit, still works on them). Returns the previous
/// limit, for [`set_fd_limit`].
pub fn refuse_new_fds() -> u64 {
    let probe = std::fs::File::open("/dev/null").expect("open /dev/null");
    let lowest_free = std::os::fd::AsRawFd::as_raw_fd(&probe) as u64;
    drop(probe);
    set_fd_limit(lowest_free)
}

/// Sets the soft limit on open descriptors (RLIMIT_NOFILE) and returns the previous one.
pub fn set_fd_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let old = lim.rlim_cur;
    lim.rlim_cur = soft;
    // SAFETY: setrlimit reads the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

/// Whether a manager's object count reaches `n` within [`LONG`] (the references of an exited
/// client go when the server notices its connection closed).
pub fn settles_at(m: &mp::Manager, n: usize) -> bool {
    eventually(LONG, || m.number_of_objects().unwrap() == n)
}

/// A `kB` line of `/proc/<pid>/status` (`pid` may be `self`), such as `VmRSS`, in bytes.
pub fn proc_status_bytes(pid: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}
