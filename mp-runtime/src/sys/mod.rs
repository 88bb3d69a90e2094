//! Thin safe wrappers over the OS calls `mp` needs. Every `unsafe` block of the process layer
//! lives under this module.

pub(crate) mod cpu_time;
pub(crate) mod crowding;
pub(crate) mod fd;
pub(crate) mod malloc;
pub(crate) mod mmap;
pub(crate) mod pid;
pub(crate) mod pidfd;
pub(crate) mod poll;
pub(crate) mod posix_spawn;
pub(crate) mod spin_wait;
pub(crate) mod thread_tag;

use std::io;

/// Fills `buf` with random bytes from the kernel (getrandom(2)).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// The number of threads of this process: the 20th field of `/proc/self/stat`, read with one
/// `read` (this runs before every `Fork` start).
pub(crate) fn thread_count() -> usize {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let Ok(mut f) = std::fs::File::open("/proc/self/stat") else {
        return 1;
    };
    let n = f.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    // Fields after the command name, which is in parentheses and may contain spaces.
    text.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Asks the kernel to send `signal` to this process when the thread that created it exits
/// (prctl(2) `PR_SET_PDEATHSIG`).
pub(crate) fn set_parent_death_signal(signal: nix::sys::signal::Signal) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)
}

/// Arranges for this process to be killed when its parent dies, then checks that the parent has
/// not died already (in which case the signal would never come; the process exits at once).
pub(crate) fn die_with_parent(expected_parent: i32) {
    let _ = set_parent_death_signal(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != expected_parent {
        exit_now(1);
    }
}

/// `_exit(2)`: ends the process at once, without running atexit handlers or destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Writes one line to descriptor 2, bypassing the `eprintln!` capture of test harnesses (a forked
/// child may run on a thread that inherited libtest's capture buffer).
pub(crate) fn stderr_line(message: &str) {
    use std::io::Write;
    let mut line = message.trim_end_matches('\n').to_owned();
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_count_sees_a_new_thread() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        // At least libtest's main thread, this test's thread and the one just started.
        assert!(super::thread_count() >= 3);
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }
}
