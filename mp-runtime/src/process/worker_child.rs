//! A worker child's life: read the bootstrap message, run the worker, report, join its own
//! children, exit.
//!
//! Every start method ends here in the child: a spawned child through the role table (it finds
//! its bootstrap socket in `MP_RUNTIME_CHILD`), a fork or fork-server child by a direct call
//! after `fork`.

use std::convert::Infallible;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::child::WireReport;
use super::children;
use crate::codec;
use crate::identity::ChildIdentity;
use crate::registry;
use crate::sys;
use crate::transport::frame::{DEFAULT_MAX_LEN, recv_frame, send_frame};
use crate::worker::{Input, Outcome};

/// Set in a spawned child's environment: `<bootstrap fd>:<parent pid>`.
pub(crate) const ENV_CHILD: &str = "MP_RUNTIME_CHILD";

/// Enters the worker-child role of a spawned child; `value` is [`ENV_CHILD`]'s.
pub(crate) fn enter(value: &str) -> Result<Infallible, String> {
    let parsed = value
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)));
    let Some((fd, ppid)) = parsed else {
        return Err(format!("malformed {ENV_CHILD}={value:?}"));
    };
    sys::die_with_parent(ppid);
    match sys::fd::adopt_inherited(fd) {
        Ok(sock) => run_child(sock),
        Err(e) => Err(format!(
            "the child cannot use its bootstrap descriptor: {e}"
        )),
    }
}

/// The first message a child receives.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    /// Registered name of the worker to run.
    pub(crate) worker: String,
    /// The encoded argument tuple; its descriptors are the frame's.
    pub(crate) args: Vec<u8>,
    /// Who the child is.
    pub(crate) identity: ChildIdentity,
}

static WORKER_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();
/// With `panic = "abort"` nothing unwinds to `run_child`: the hook reports directly on this.
static REPORT_SOCK: OnceLock<OwnedFd> = OnceLock::new();

/// Reports panics of the worker thread: records message and location for the parent and prints
/// them to the real stderr. (Rust's default hook would print into libtest's capture buffer when
/// the launcher thread was started from a test; writing to descriptor 2 always reaches the
/// terminal or wherever the child's stderr points.)
fn install_panic_hook() {
    let _ = WORKER_THREAD.set(std::thread::current().id());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if WORKER_THREAD.get() == Some(&std::thread::current().id()) {
            let message = panic_message(info.payload());
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "<unknown>".into());
            let trace = std::backtrace::Backtrace::capture();
            let trace = match trace.status() {
                std::backtrace::BacktraceStatus::Captured => format!("\n{trace}"),
                _ => String::new(),
            };
            sys::stderr_line(&format!(
                "mp: worker of process '{}' panicked at {location}:\n{message}{trace}",
                crate::identity::name(),
            ));
            if cfg!(panic = "abort")
                && let Some(sock) = REPORT_SOCK.get()
            {
                let _ = send_report(
                    sock,
                    &WireReport::Panicked {
                        message: message.clone(),
                        location: location.clone(),
                    },
                    &[],
                );
            }
            crate::worker::record_panic(message, location);
        } else {
            previous(info);
        }
    }));
}

fn send_report(sock: &OwnedFd, report: &WireReport, fds: &[OwnedFd]) -> crate::Result<()> {
    let enc = codec::encode(report)?;
    let raw: Vec<_> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    send_frame(sock.as_fd(), &enc.bytes, &raw)
}

/// A child's life: read the bootstrap message, run the worker, report, join its own children,
/// exit. Never returns.
pub(crate) fn run_child(sock: OwnedFd) -> ! {
    // Rust's runtime ignores SIGPIPE before `main`; a child entered before `main` does the same.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let frame = match recv_frame(sock.as_fd(), DEFAULT_MAX_LEN) {
        Ok(f) => f,
        Err(e) => {
            sys::stderr_line(&format!(
                "mp: child could not read its bootstrap message: {e}"
            ));
            sys::exit_now(1)
        }
    };
    let boot: Bootstrap = match codec::decode(&frame.payload, Vec::new()) {
        Ok(b) => b,
        Err(e) => fail(&sock, format!("corrupt bootstrap message: {e}")),
    };
    crate::identity::install(&boot.identity);
    let entry = match registry::find(&boot.worker) {
        Ok(f) => f,
        Err(e) => fail(&sock, e.to_string()),
    };
    install_panic_hook();
    let report_sock = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => fail(&sock, format!("dup: {e}")),
    };
    let _ = REPORT_SOCK.set(report_sock);
    let input = Input {
        bytes: &boot.args,
        fds: frame.fds,
        batch: false,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| entry(input)));
    let code = match outcome {
        Ok(Outcome::Returned { bytes, fds }) => {
            match send_report(&sock, &WireReport::Returned(bytes), &fds) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
        Ok(Outcome::Failed { message } | Outcome::Codec { message }) => {
            if registry::is_internal(&boot.worker) {
                // The runtime's own workers say what they are in their message.
                sys::stderr_line(&format!("mp: {message}"));
            } else {
                sys::stderr_line(&format!(
                    "mp: worker `{}` could not run: {message}",
                    registry::display_name(&boot.worker)
                ));
            }
            let _ = send_report(&sock, &WireReport::Failed(message), &[]);
            1
        }
        Ok(Outcome::Raised { message, error, .. }) => {
            sys::stderr_line(&format!(
                "mp: worker `{}` returned an error: {message}",
                registry::display_name(&boot.worker)
            ));
            let report = WireReport::Raised {
                message,
                type_name: error.type_name().to_owned(),
                value: error.value_bytes().map(<[u8]>::to_vec),
            };
            let _ = send_report(&sock, &report, &[]);
            1
        }
        Ok(Outcome::Panicked { message, location }) => {
            let _ = send_report(&sock, &WireReport::Panicked { message, location }, &[]);
            1
        }
        Ok(Outcome::Each(_)) => {
            let message = "the worker answered as a pool chunk".to_owned();
            let _ = send_report(&sock, &WireReport::Failed(message), &[]);
            1
        }
        Err(_) => {
            let (message, location) = crate::worker::take_panic();
            let _ = send_report(&sock, &WireReport::Panicked { message, location }, &[]);
            1
        }
    };
    drop(sock);
    finish(code)
}

fn fail(sock: &OwnedFd, message: String) -> ! {
    sys::stderr_line(&format!("mp: child cannot run: {message}"));
    let _ = send_report(sock, &WireReport::Failed(message), &[]);
    sys::exit_now(1)
}

/// Set in a child forked from a user process: it shares the parent's memory image, including
/// atexit handlers the parent registered, which must not run twice.
static FORKED_FROM_USER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this process as a `Fork` child (see [`finish`]).
pub(crate) fn mark_forked_from_user() {
    FORKED_FROM_USER.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Joins this process's children (terminating daemons), flushes stdio and exits. Spawned and
/// fork-server children exit like a program whose `main` returned (atexit handlers run); a
/// `Fork` child skips them, as Python's does, because they belong to the parent's image.
pub(crate) fn finish(code: i32) -> ! {
    children::shutdown();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if FORKED_FROM_USER.load(std::sync::atomic::Ordering::Relaxed) {
        sys::exit_now(code)
    }
    std::process::exit(code)
}

/// The text of a panic's payload (`panic!` makes a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned())
}
