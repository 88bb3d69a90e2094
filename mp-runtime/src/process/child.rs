//! The parent's handle on one started child: its pid, how to learn that it exited, and the
//! socket on which it reports its result.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::sys::pidfd::PidFd;
use crate::sys::poll::{Deadline, readable, wait_readable};
use crate::transport::frame::{DEFAULT_MAX_LEN, Frame, recv_frame};
use crate::worker_error::WorkerError;

/// The exit code reported when the fork server died before telling us a child's status
/// (Python reports 255 in that case too).
pub(crate) const UNKNOWN_EXITCODE: i32 = 255;

/// What a child sends its parent when its worker ends (or panics).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireReport {
    /// The encoded return value; descriptors travel with the frame.
    Returned(Vec<u8>),
    /// The worker could not run (why).
    Failed(String),
    /// The worker panicked.
    Panicked { message: String, location: String },
    /// The worker returned `Err`: its text, its type's name, and its encoding when the type is
    /// `Serialize`.
    Raised {
        message: String,
        type_name: String,
        value: Option<Vec<u8>>,
    },
}

/// A report as the parent keeps it.
#[derive(Debug)]
pub(crate) enum Report {
    Returned {
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
    },
    Failed(String),
    Raised {
        message: String,
        error: WorkerError,
    },
    Panicked {
        message: String,
        location: String,
    },
    /// The report could not be read (corrupt frame).
    Broken(String),
}

/// How the parent learns that the child exited.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// Our own child: a pidfd, readable at exit; reaped with waitpid.
    Direct(PidFd),
    /// A child of the fork server: the server writes the exit code on this connection.
    Server(OwnedFd),
}

impl Waiter {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Waiter::Direct(p) => p.as_fd(),
            Waiter::Server(c) => c.as_fd(),
        }
    }
}

/// A report as it arrived, decoded only when taken: reports are also read while the program
/// exits (to let children finish sending), when the codec's thread-local tables may be gone.
#[derive(Debug)]
enum Received {
    Frame(Frame),
    Broken(String),
}

#[derive(Debug, Default)]
struct State {
    result_sock: Option<OwnedFd>,
    report: Option<Received>,
    exitcode: Option<i32>,
}

/// A started child.
#[derive(Debug)]
pub(crate) struct ChildHandle {
    pid: i32,
    name: String,
    daemon: bool,
    waiter: Waiter,
    exited: AtomicBool,
    state: Mutex<State>,
}

impl ChildHandle {
    pub(crate) fn new(
        pid: i32,
        name: String,
        daemon: bool,
        waiter: Waiter,
        result_sock: OwnedFd,
    ) -> Self {
        ChildHandle {
            pid,
            name,
            daemon,
            waiter,
            exited: AtomicBool::new(false),
            state: Mutex::new(State {
                result_sock: Some(result_sock),
                ..State::default()
            }),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn daemon(&self) -> bool {
        self.daemon
    }

    /// Readable once the child has exited.
    pub(crate) fn sentinel(&self) -> BorrowedFd<'_> {
        self.waiter.fd()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The exit code if the child has exited, without blocking. While another thread is in
    /// `wait_exit`, reports `None` (still running) rather than wait for it.
    pub(crate) fn exitcode_now(&self) -> Option<i32> {
        match self.state.try_lock() {
            Ok(mut st) => self
                .wait_locked(&mut st, Deadline::after(Some(Duration::ZERO)))
                .ok()
                .flatten(),
            Err(_) => None,
        }
    }

    /// Waits up to `timeout` (forever if `None`) for the child to exit, reading its report as it
    /// arrives. Returns the exit code, or `None` on timeout.
    pub(crate) fn wait_exit(&self, timeout: Option<Duration>) -> Result<Option<i32>> {
        let mut st = self.lock();
        self.wait_locked(&mut st, Deadline::after(timeout))
    }

    fn wait_locked(&self, st: &mut State, deadline: Deadline) -> Result<Option<i32>> {
        loop {
            if let Some(code) = st.exitcode {
                return Ok(Some(code));
            }
            let (exited, report_ready) = {
                let mut fds = vec![self.waiter.fd()];
                if let Some(s) = &st.result_sock {
                    fds.push(s.as_fd());
                }
                let ready = wait_readable(&fds, deadline).map_err(|e| Error::io("poll", e))?;
                (ready[0], ready.get(1).copied().unwrap_or(false))
            };
            if report_ready {
                read_report(st, false);
            }
            if exited {
                let code = self.reap()?;
                st.exitcode = Some(code);
                crate::log::event!(
                    debug,
                    pid = self.pid,
                    name = %self.name,
                    exitcode = code,
                    "process exited"
                );
                self.exited.store(true, Ordering::Release);
                if st.result_sock.is_some() {
                    read_report(st, true);
                }
                return Ok(Some(code));
            }
            if !report_ready {
                return Ok(None);
            }
        }
    }

    fn reap(&self) -> Result<i32> {
        match &self.waiter {
            Waiter::Direct(_) => loop {
                match waitpid(Pid::from_raw(self.pid), None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(-(sig as i32)),
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    // Someone else reaped it (SIGCHLD ignored, or a foreign waitpid(-1)).
                    Err(nix::errno::Errno::ECHILD) => return Ok(UNKNOWN_EXITCODE),
                    Err(e) => return Err(Error::io("waitpid", e)),
                }
            },
            Waiter::Server(conn) => match recv_frame(conn.as_fd(), 16) {
                Ok(f) if f.payload.len() == 4 => Ok(i32::from_le_bytes(
                    f.payload[..4].try_into().expect("4 bytes"),
                )),
                // The server died (or sent garbage): the status is unknown.
                _ => Ok(UNKNOWN_EXITCODE),
            },
        }
    }

    /// Sends `signal` unless the child is known to have exited.
    pub(crate) fn signal(&self, signal: i32) -> Result<()> {
        if self.exited.load(Ordering::Acquire) {
            return Ok(());
        }
        match &self.waiter {
            Waiter::Direct(pidfd) => pidfd
                .send_signal(signal)
                .map_err(|e| Error::io("pidfd_send_signal", e)),
            Waiter::Server(conn) => {
                // Once the status is on the connection the server has reaped the child and its
                // pid may be reused: do not signal then.
                if readable(conn.as_fd(), Deadline::after(Some(Duration::ZERO))).unwrap_or(true) {
                    return Ok(());
                }
                // SAFETY: kill(2) only takes integers; the pid is a live (or zombie) child of
                // the fork server, which has not reaped it (checked above).
                let r = unsafe { libc::kill(self.pid, signal) };
                if r != 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::ESRCH) {
                        return Err(Error::io("kill", err));
                    }
                }
                Ok(())
            }
        }
    }

    /// Takes the child's report once it has exited.
    pub(crate) fn take_report(&self) -> Option<Report> {
        Some(match self.lock().report.take()? {
            Received::Frame(frame) => {
                match codec::decode::<WireReport>(&frame.payload, Vec::new()) {
                    Ok(WireReport::Returned(bytes)) => Report::Returned {
                        bytes,
                        fds: frame.fds,
                    },
                    Ok(WireReport::Failed(m)) => Report::Failed(m),
                    Ok(WireReport::Raised {
                        message,
                        type_name,
                        value,
                    }) => Report::Raised {
                        message,
                        error: WorkerError::new(type_name, value),
                    },
                    Ok(WireReport::Panicked { message, location }) => {
                        Report::Panicked { message, location }
                    }
                    Err(e) => Report::Broken(e.to_string()),
                }
            }
            Received::Broken(m) => Report::Broken(m),
        })
    }
}

/// Reads the single report frame from the result socket, then closes the socket.
fn read_report(st: &mut State, nonblocking: bool) {
    let Some(sock) = st.result_sock.take() else {
        return;
    };
    if nonblocking && crate::sys::fd::set_nonblocking(sock.as_fd(), true).is_err() {
        return;
    }
    match recv_frame(sock.as_fd(), DEFAULT_MAX_LEN) {
        Ok(frame) => st.report = Some(Received::Frame(frame)),
        Err(Error::Closed) => {}
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => st.report = Some(Received::Broken(e.to_string())),
    }
}

/// Python's exit-code convention for a wait status.
pub(crate) fn describe_exit(code: i32) -> String {
    if code < 0 {
        let name = nix::sys::signal::Signal::try_from(-code)
            .map(|s| s.as_str())
            .unwrap_or("unknown signal");
        format!(
            "the process was killed by signal {} ({name}) before its worker returned a result",
            -code
        )
    } else if code == UNKNOWN_EXITCODE {
        "the process exited with code 255 (or the fork server died and its status is unknown) \
         before its worker returned a result"
            .to_owned()
    } else {
        format!(
            "the process exited with code {code} before its worker returned a result (the worker \
             or code it called ended the process, e.g. with `std::process::exit`)"
        )
    }
}
