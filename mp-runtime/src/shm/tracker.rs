//! The resource tracker: a small process that unlinks the named shared-memory segments a process
//! created and did not unlink, once that process is gone (Python's `resource_tracker`).
//!
//! A process starts its tracker when it first creates a named segment: this same binary, spawned
//! with `MP_RUNTIME_TRACKER=<fd>`, holding one end of a socket pair. The tracker answers one byte
//! once it ignores SIGINT and SIGTERM; then the creator writes a line per event (`R <pid> <name>`
//! registered, `U <pid> <name>` unlinked), one `send` per line, under a process-wide mutex. The tracker watches every
//! registering process with a pidfd; when one exits (normally or killed), it unlinks the names
//! that process still owns and says so on stderr. When every writer of the socket is gone it
//! cleans up what is left and exits (status 1 if it had to unlink anything, else 0). It ignores
//! SIGINT and SIGTERM, so a Ctrl-C of the program does not stop it before its job is done.
//!
//! A fork child starts a tracker of its own when it creates segments. If a tracker dies, the
//! next registration starts a new one and registers again every name this process still owns.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Error, Result};
use crate::global::Global;
use crate::sys::pidfd::PidFd;
use crate::sys::poll::{Deadline, wait_readable};

/// Set in the tracker's environment: the descriptor number of its end of the socket pair.
pub(crate) const ENV_TRACKER: &str = "MP_RUNTIME_TRACKER";
const TRACKER_FD: i32 = 3;
/// How long a new tracker may take to start (exec of this binary).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

struct Client {
    pid: i32,
    tx: OwnedFd,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    /// Names this process created and still owns.
    names: HashSet<String>,
}

static STATE: Global<State> = Global::new(State::default);

fn reset_in_fork_child() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn in_child() {
        STATE.reset();
    }
    ONCE.call_once(|| {
        // SAFETY: the handler only stores a null pointer into an atomic (Global::reset), which is
        // async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// The tracker's pid, if this process started one.
pub(crate) fn tracker_pid() -> Option<i32> {
    STATE.lock().client.as_ref().map(|c| c.pid)
}

fn launch() -> Result<Client> {
    reset_in_fork_child();
    let (tx, rx) = crate::transport::socket::stream_pair()?;
    let pid = crate::process::spawn::spawn_self(
        &[(ENV_TRACKER, TRACKER_FD.to_string())],
        &[(rx, TRACKER_FD)],
    )?;
    // Wait for its "ready" byte, so that a signal sent to it from now on finds it ignoring
    // SIGINT and SIGTERM.
    let ready = crate::sys::poll::readable(tx.as_fd(), Deadline::after(Some(READY_TIMEOUT)))
        .unwrap_or(false);
    let mut byte = [0u8; 1];
    if !ready || !matches!(nix::unistd::read(tx.as_fd(), &mut byte), Ok(1)) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(Error::io(
            "start the resource tracker",
            std::io::Error::other("the tracker process did not start"),
        ));
    }
    crate::log::event!(info, pid, "resource tracker started");
    Ok(Client { pid, tx })
}

fn send(tx: &OwnedFd, line: &str) -> std::io::Result<()> {
    use nix::sys::socket::{MsgFlags, send};
    use std::os::fd::AsRawFd;
    match send(tx.as_raw_fd(), line.as_bytes(), MsgFlags::MSG_NOSIGNAL) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(_) => Err(std::io::Error::other("short write to the resource tracker")),
        Err(e) => Err(e.into()),
    }
}

/// Registers a name this process just created.
pub(crate) fn register(name: &str) -> Result<()> {
    let mut st = STATE.lock();
    st.names.insert(name.to_owned());
    let line = format!("R {} {name}\n", std::process::id());
    if let Some(c) = &st.client {
        if send(&c.tx, &line).is_ok() {
            return Ok(());
        }
        // The tracker died: reap it (it is our child), start another, and hand it every name
        // we own.
        // Its end of the pipe is closed, so it is exiting: this does not block for long.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(c.pid), None);
        crate::sys::stderr_line(
            "mp: the resource tracker died unexpectedly; starting a new one and registering \
             this process's shared memory segments with it again",
        );
        crate::log::event!(
            warn,
            pid = c.pid,
            "the resource tracker died; starting a new one"
        );
    }
    let client = launch()?;
    let pid = std::process::id();
    for n in &st.names {
        send(&client.tx, &format!("R {pid} {n}\n"))
            .map_err(|e| Error::io("register with the resource tracker", e))?;
    }
    st.client = Some(client);
    Ok(())
}

/// Forgets a name this process unlinked (or gave up).
pub(crate) fn unregister(name: &str) {
    let mut st = STATE.lock();
    st.names.remove(name);
    if let Some(c) = &st.client {
        let _ = send(&c.tx, &format!("U {} {name}\n", std::process::id()));
    }
}

/// The tracker process's life. Never returns.
/// Enters the tracker role; `value` is [`ENV_TRACKER`]'s (the descriptor number).
pub(crate) fn enter(value: &str) -> std::result::Result<std::convert::Infallible, String> {
    match value.parse().map(crate::sys::fd::adopt_inherited) {
        Ok(Ok(rx)) => serve(rx),
        _ => Err(format!("malformed {ENV_TRACKER}={value:?}")),
    }
}

fn serve(rx: OwnedFd) -> ! {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
        let _ = signal(Signal::SIGTERM, SigHandler::SigIgn);
    }
    // Nothing to say on stdout; do not keep a reader of the creator's stdout waiting.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let _ = nix::unistd::write(&rx, b"+");
    let mut t = Tracker::default();
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let watched: Vec<i32> = t.watch.keys().copied().collect();
        let mut fds = vec![rx.as_fd()];
        fds.extend(watched.iter().map(|p| t.watch[p].as_fd()));
        let Ok(ready) = wait_readable(&fds, Deadline::NEVER) else {
            continue;
        };
        for (i, pid) in watched.iter().enumerate() {
            if ready[i + 1] {
                t.process_ended(*pid);
            }
        }
        if ready[0] {
            match nix::unistd::read(rx.as_fd(), &mut buf) {
                Ok(0) => {
                    let pids: Vec<i32> = t.owned.keys().copied().collect();
                    for pid in pids {
                        t.process_ended(pid);
                    }
                    crate::sys::exit_now(i32::from(t.leaked));
                }
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        t.handle(&String::from_utf8_lossy(&line[..end]));
                    }
                    for pid in std::mem::take(&mut t.gone) {
                        t.process_ended(pid);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => crate::sys::exit_now(2),
            }
        }
    }
}

#[derive(Default)]
struct Tracker {
    /// Names each process owns.
    owned: HashMap<i32, HashSet<String>>,
    /// A pidfd per process that owns names.
    watch: HashMap<i32, PidFd>,
    /// Whether anything had to be unlinked.
    leaked: bool,
    /// Registrants found dead while reading a batch of lines.
    gone: Vec<i32>,
}

impl Tracker {
    fn handle(&mut self, line: &str) {
        let mut parts = line.splitn(3, ' ');
        let (Some(op), Some(Some(pid)), Some(name)) = (
            parts.next(),
            parts.next().map(|p| p.parse::<i32>().ok()),
            parts.next(),
        ) else {
            return;
        };
        match op {
            "R" => {
                self.owned.entry(pid).or_default().insert(name.to_owned());
                if let std::collections::hash_map::Entry::Vacant(slot) = self.watch.entry(pid) {
                    match PidFd::open(pid) {
                        Ok(fd) => {
                            slot.insert(fd);
                        }
                        // Already gone before we heard of it: clean up after this batch.
                        Err(_) => self.gone.push(pid),
                    }
                }
            }
            "U" => {
                for names in self.owned.values_mut() {
                    names.remove(name);
                }
            }
            _ => {}
        }
    }

    fn process_ended(&mut self, pid: i32) {
        self.watch.remove(&pid);
        let Some(names) = self.owned.remove(&pid) else {
            return;
        };
        let mut unlinked = Vec::new();
        for name in names {
            if nix::sys::mman::shm_unlink(format!("/{name}").as_str()).is_ok() {
                unlinked.push(name);
            }
        }
        if !unlinked.is_empty() {
            self.leaked = true;
            unlinked.sort();
            crate::sys::stderr_line(&format!(
                "mp resource tracker: process {pid} ended without unlinking {} shared memory \
                 segment(s); unlinked {}",
                unlinked.len(),
                unlinked.join(", ")
            ));
        }
    }
}
