//! The `ForkServer` start method.
//!
//! On first use this process spawns a fresh copy of its binary as the fork server: a
//! single-threaded process that listens on an abstract Unix socket (nothing in the filesystem,
//! nothing to leak) and forks a child for every authenticated request. A request carries the
//! child's bootstrap socket as SCM_RIGHTS; the server replies with the child's pid and, when the
//! child exits, with its exit code on the same connection. The client authenticates with this
//! process's authkey (HMAC-SHA256 both ways). If the server dies, the next start notices the
//! refused connection, reaps it and starts a new one.
//!
//! Lifetimes chain: the server dies with this process (PR_SET_PDEATHSIG from the launcher
//! thread, plus EOF on its control socket), and its children die with the server.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, connect, listen,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::child::Waiter;
use super::launcher;
use super::spawn::spawn_self;
use crate::bootstrap::{self, ENV_FORKSERVER};
use crate::codec;
use crate::error::{Error, Result};
use crate::global::Global;
use crate::sys::pidfd::PidFd;
use crate::sys::poll::{Deadline, wait_readable};
use crate::transport::auth::{client_handshake, serve_handshake};
use crate::transport::frame::{recv_frame, send_frame};
use crate::transport::socket::stream_pair;

/// Where the server finds its listening socket and its control socket.
const LISTENER_FD: i32 = 3;
const CONTROL_FD: i32 = 4;
/// A client that stalls mid-handshake cannot block the server longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST: &[u8] = b"start";

#[derive(Serialize, Deserialize)]
struct ServerConfig {
    authkey: Vec<u8>,
}

/// The running server, as its parent knows it.
struct Server {
    pid: i32,
    address: Vec<u8>,
    /// Closing it (or dying) tells the server to exit.
    _control: OwnedFd,
}

static SERVER: Global<Option<Server>> = Global::new(|| None);

/// In a fork child: the parent's server belongs to the parent.
pub(crate) fn reset_after_fork() {
    SERVER.reset();
}

/// The fork server's pid, if one is running (for tests and diagnostics).
pub fn server_pid() -> Option<i32> {
    SERVER.lock().as_ref().map(|s| s.pid)
}

/// The fork server's abstract socket name (without the leading NUL), if one is running.
pub fn server_address() -> Option<Vec<u8>> {
    SERVER.lock().as_ref().map(|s| s.address.clone())
}

/// Asks the fork server for a child running the bootstrap protocol on `child_end`.
pub(crate) fn start(child_end: OwnedFd) -> Result<(i32, Waiter)> {
    let key = crate::identity::authkey();
    let mut server = SERVER.lock();
    for attempt in 0..2 {
        if server.is_none() {
            *server = Some(launcher::run(launch)??);
        }
        let address = server
            .as_ref()
            .map(|s| s.address.clone())
            .unwrap_or_default();
        match request(&address, &key, &child_end) {
            Ok((pid, conn)) => return Ok((pid, Waiter::Server(conn))),
            Err(e) if attempt == 0 && server_gone(&e) => {
                if let Some(dead) = server.take() {
                    retire(dead.pid);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::state("the fork server could not be restarted"))
}

fn server_gone(e: &Error) -> bool {
    match e {
        Error::Closed => true,
        Error::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ECONNREFUSED) | Some(libc::ENOENT) | Some(libc::ECONNRESET)
        ),
        _ => false,
    }
}

/// Reaps a server that stopped answering (killing it first if it is somehow still running).
fn retire(pid: i32) {
    let pid = Pid::from_raw(pid);
    if let Ok(WaitStatus::StillAlive) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Connects to the running server (starting it if needed) and runs only the handshake.
pub(crate) fn handshake_only(key: &[u8]) -> Result<()> {
    let address = {
        let mut server = SERVER.lock();
        if server.is_none() {
            *server = Some(launcher::run(launch)??);
        }
        server
            .as_ref()
            .map(|s| s.address.clone())
            .unwrap_or_default()
    };
    let conn = connect_to(&address)?;
    client_handshake(conn.as_fd(), key)
}

fn connect_to(address: &[u8]) -> Result<OwnedFd> {
    let conn = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socket", e))?;
    let addr = UnixAddr::new_abstract(address).map_err(|e| Error::io("fork server address", e))?;
    connect(conn.as_raw_fd(), &addr).map_err(|e| Error::io("connect to the fork server", e))?;
    Ok(conn)
}

fn request(address: &[u8], key: &[u8], child_end: &OwnedFd) -> Result<(i32, OwnedFd)> {
    let conn = connect_to(address)?;
    client_handshake(conn.as_fd(), key)?;
    send_frame(conn.as_fd(), REQUEST, &[child_end.as_raw_fd()])?;
    let reply = recv_frame(conn.as_fd(), 16)?;
    let pid = match <[u8; 4]>::try_from(reply.payload.as_slice()) {
        Ok(b) => i32::from_le_bytes(b),
        Err(_) => {
            // The server sends an error text when it cannot fork.
            return Err(Error::io(
                "fork server",
                std::io::Error::other(String::from_utf8_lossy(&reply.payload).into_owned()),
            ));
        }
    };
    Ok((pid, conn))
}

/// Starts a server (on the launcher thread, so that it dies with this process, not with
/// whichever thread asked first).
fn launch() -> Result<Server> {
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socket", e))?;
    let mut nonce = [0u8; 8];
    crate::sys::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    let name = format!(
        "mp-forkserver-{}-{}",
        std::process::id(),
        nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let addr =
        UnixAddr::new_abstract(name.as_bytes()).map_err(|e| Error::io("fork server address", e))?;
    bind(listener.as_raw_fd(), &addr).map_err(|e| Error::io("bind the fork server socket", e))?;
    listen(&listener, Backlog::new(128).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| Error::io("listen", e))?;
    let (control, control_child) = stream_pair()?;
    let env = (
        ENV_FORKSERVER,
        format!("{LISTENER_FD}:{CONTROL_FD}:{}", std::process::id()),
    );
    let pid = spawn_self(
        &[env],
        &[(listener, LISTENER_FD), (control_child, CONTROL_FD)],
    )?;
    let config = codec::encode(&ServerConfig {
        authkey: crate::identity::authkey(),
    })?;
    send_frame(control.as_fd(), &config.bytes, &[])?;
    Ok(Server {
        pid,
        address: name.into_bytes(),
        _control: control,
    })
}

struct Kid {
    pidfd: PidFd,
    pid: i32,
    conn: OwnedFd,
}

/// The server's main loop. Never returns: exits when its parent goes away.
pub(crate) fn serve(listener: OwnedFd, control: OwnedFd) -> ! {
    // A Ctrl-C reaches the whole process group: the parent decides what happens to its children,
    // so the server itself ignores SIGINT (as Python's does); children get the default back.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let config: ServerConfig = match recv_frame(control.as_fd(), 4096)
        .and_then(|f| codec::decode(&f.payload, Vec::new()))
    {
        Ok(c) => c,
        Err(_) => crate::sys::exit_now(1),
    };
    let mut kids: Vec<Kid> = Vec::new();
    loop {
        let ready = {
            let mut fds = vec![listener.as_fd(), control.as_fd()];
            fds.extend(kids.iter().map(|k| k.pidfd.as_fd()));
            match wait_readable(&fds, Deadline::NEVER) {
                Ok(r) => r,
                Err(_) => crate::sys::exit_now(1),
            }
        };
        if ready[1] {
            // The parent closed the control socket or died.
            crate::sys::exit_now(0);
        }
        for i in (0..kids.len()).rev() {
            if ready[2 + i] {
                let kid = kids.swap_remove(i);
                let code = reap(kid.pid);
                let _ = send_frame(kid.conn.as_fd(), &code.to_le_bytes(), &[]);
            }
        }
        if ready[0]
            && let Ok(conn) = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)
        {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
            if let Ok(kid) = handle(conn, &config, &listener, &control, &kids) {
                kids.push(kid);
            }
        }
    }
}

fn reap(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return c,
            Ok(WaitStatus::Signaled(_, s, _)) => return -(s as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return super::child::UNKNOWN_EXITCODE,
        }
    }
}

/// Authenticates one request and forks its child.
fn handle(
    conn: OwnedFd,
    config: &ServerConfig,
    listener: &OwnedFd,
    control: &OwnedFd,
    kids: &[Kid],
) -> Result<Kid> {
    let timeout = TimeVal::new(HANDSHAKE_TIMEOUT.as_secs() as _, 0);
    setsockopt(&conn, sockopt::ReceiveTimeout, &timeout).map_err(|e| Error::io("setsockopt", e))?;
    setsockopt(&conn, sockopt::SendTimeout, &timeout).map_err(|e| Error::io("setsockopt", e))?;
    serve_handshake(conn.as_fd(), &config.authkey)?;
    let mut frame = recv_frame(conn.as_fd(), 64)?;
    if frame.payload != REQUEST || frame.fds.len() != 1 {
        return Err(Error::protocol("bad fork server request"));
    }
    let child_end = frame.fds.pop().expect("one descriptor");
    let server_pid = std::process::id() as i32;
    // SAFETY: the fork server is single-threaded, so the child is a complete copy of a process
    // in a consistent state.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            // Close every descriptor of the server; the child keeps only stdio and its socket.
            let _ = nix::unistd::close(listener.as_raw_fd());
            let _ = nix::unistd::close(control.as_raw_fd());
            for k in kids.iter() {
                let _ = nix::unistd::close(k.pidfd.as_fd().as_raw_fd());
                let _ = nix::unistd::close(k.conn.as_raw_fd());
            }
            let _ = nix::unistd::close(conn.as_raw_fd());
            // SAFETY: restoring the default disposition installs no handler code.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
            bootstrap::die_with_parent(server_pid);
            bootstrap::run_child(child_end)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(child_end);
            let pid = child.as_raw();
            let pidfd = PidFd::open(pid).map_err(|e| Error::io("pidfd_open", e))?;
            // A client that vanished meanwhile does not stop us from reaping its child.
            let _ = send_frame(conn.as_fd(), &pid.to_le_bytes(), &[]);
            Ok(Kid { pidfd, pid, conn })
        }
        Err(e) => {
            let _ = send_frame(conn.as_fd(), format!("fork failed: {e}").as_bytes(), &[]);
            Err(Error::io("fork", e))
        }
    }
}
