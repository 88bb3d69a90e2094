//! The `ForkServer` start method.
//!
//! On first use this process spawns a fresh copy of its binary as the fork server: a
//! single-threaded process that listens on an abstract Unix socket (nothing in the filesystem,
//! nothing to leak). A client connects once and authenticates with this process's authkey
//! (HMAC-SHA256 both ways); the connection then carries one request per child: the child's
//! bootstrap socket and a status socket, as SCM_RIGHTS. The server forks, replies with the pid,
//! and writes the child's exit code on the status socket when it reaps it. If the server dies,
//! the next start sees the broken connection, reaps it and starts a new one; if this process's
//! authkey changed, the next start authenticates again with the new key.
//!
//! The socket's name is not secret (`/proc/net/unix` lists it), so the server closes every
//! connection that does not come from its parent, as the kernel reports the peer, before reading
//! from it: no other process, whatever its user, can make it wait.
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
use super::worker_child;
use crate::codec;
use crate::error::{Error, Result};
use crate::global::Global;
use crate::sys::pidfd::PidFd;
use crate::sys::poll::{Deadline, wait_readable};
use crate::transport::auth::{client_handshake, serve_handshake};
use crate::transport::frame::{recv_frame, send_frame};
use crate::transport::socket::stream_pair;

/// Set in the fork server's environment: `<listener fd>:<control fd>:<parent pid>`.
pub(crate) const ENV_FORKSERVER: &str = "MP_RUNTIME_FORKSERVER";
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
    /// The authenticated connection requests go over, and the key it was authenticated with.
    conn: Option<(OwnedFd, Vec<u8>)>,
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
    let mut guard = SERVER.lock();
    for attempt in 0..2 {
        let server = running(&mut guard)?;
        match request(server, &key, &child_end) {
            Ok((pid, status)) => return Ok((pid, Waiter::Server(status))),
            Err(e) if attempt == 0 && server_gone(&e) => {
                if let Some(dead) = guard.take() {
                    crate::log::event!(
                        warn,
                        pid = dead.pid,
                        error = %e,
                        "the fork server is gone; starting a new one"
                    );
                    retire(dead.pid);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::state("the fork server could not be restarted"))
}

/// The running server, started first if there is none.
fn running(slot: &mut Option<Server>) -> Result<&mut Server> {
    if slot.is_none() {
        *slot = Some(launcher::run(launch)??);
    }
    Ok(slot.as_mut().expect("just set"))
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

/// Connects to the running server (starting it if needed) and runs only the handshake, on a
/// connection of its own.
pub(crate) fn handshake_only(key: &[u8]) -> Result<()> {
    let address = running(&mut SERVER.lock())?.address.clone();
    let conn = connect_to(&address)?;
    client_handshake(conn.as_fd(), key)
}

/// The authenticated connection to `server`, made (or remade, if the authkey changed) on demand.
fn connection<'a>(server: &'a mut Server, key: &[u8]) -> Result<&'a OwnedFd> {
    if server.conn.as_ref().is_some_and(|(_, k)| k != key) {
        server.conn = None;
    }
    if server.conn.is_none() {
        let conn = connect_to(&server.address)?;
        client_handshake(conn.as_fd(), key)?;
        server.conn = Some((conn, key.to_vec()));
    }
    Ok(&server.conn.as_ref().expect("just set").0)
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

/// One request: returns the child's pid and the socket its exit code will arrive on.
fn request(server: &mut Server, key: &[u8], child_end: &OwnedFd) -> Result<(i32, OwnedFd)> {
    let (status, status_child) = stream_pair()?;
    let result = (|| {
        let conn = connection(server, key)?;
        send_frame(
            conn.as_fd(),
            REQUEST,
            &[child_end.as_raw_fd(), status_child.as_raw_fd()],
        )?;
        recv_frame(conn.as_fd(), 256)
    })();
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            // A half-used connection is not reused.
            server.conn = None;
            return Err(e);
        }
    };
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
    Ok((pid, status))
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
    crate::log::event!(info, pid, "fork server started");
    Ok(Server {
        pid,
        address: name.into_bytes(),
        _control: control,
        conn: None,
    })
}

/// A child the server forked and will reap.
struct Kid {
    pidfd: PidFd,
    pid: i32,
    status: OwnedFd,
}

/// Everything the server polls.
struct ServerState {
    listener: OwnedFd,
    control: OwnedFd,
    clients: Vec<OwnedFd>,
    kids: Vec<Kid>,
}

impl ServerState {
    /// Every descriptor of the server, closed in each child it forks.
    fn close_all_in_child(&self) {
        let _ = nix::unistd::close(self.listener.as_raw_fd());
        let _ = nix::unistd::close(self.control.as_raw_fd());
        for c in &self.clients {
            let _ = nix::unistd::close(c.as_raw_fd());
        }
        for k in &self.kids {
            let _ = nix::unistd::close(k.pidfd.as_fd().as_raw_fd());
            let _ = nix::unistd::close(k.status.as_raw_fd());
        }
    }
}

/// Enters the fork-server role; `value` is [`ENV_FORKSERVER`]'s.
pub(crate) fn enter(value: &str) -> std::result::Result<std::convert::Infallible, String> {
    let mut parts = value.split(':').map(|p| p.parse::<i32>().ok());
    let (Some(Some(listener)), Some(Some(control)), Some(Some(ppid))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed {ENV_FORKSERVER}={value:?}"));
    };
    crate::sys::die_with_parent(ppid);
    match (
        crate::sys::fd::adopt_inherited(listener),
        crate::sys::fd::adopt_inherited(control),
    ) {
        (Ok(l), Ok(c)) => serve(l, c, ppid),
        _ => Err("the fork server was started without its descriptors".into()),
    }
}

/// The server's main loop. Never returns: exits when its parent goes away. Only `parent`, the
/// process that started the server, may connect (see [`from_parent`]).
fn serve(listener: OwnedFd, control: OwnedFd, parent: i32) -> ! {
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
    let mut st = ServerState {
        listener,
        control,
        clients: Vec::new(),
        kids: Vec::new(),
    };
    loop {
        let ready = {
            let mut fds = vec![st.listener.as_fd(), st.control.as_fd()];
            fds.extend(st.clients.iter().map(|c| c.as_fd()));
            fds.extend(st.kids.iter().map(|k| k.pidfd.as_fd()));
            match wait_readable(&fds, Deadline::NEVER) {
                Ok(r) => r,
                Err(_) => crate::sys::exit_now(1),
            }
        };
        if ready[1] {
            // The parent closed the control socket or died.
            crate::sys::exit_now(0);
        }
        let nclients = st.clients.len();
        let kid_ready = &ready[2 + nclients..];
        for i in (0..st.kids.len()).rev() {
            if kid_ready[i] {
                let kid = st.kids.swap_remove(i);
                let code = reap(kid.pid);
                let _ = send_frame(kid.status.as_fd(), &code.to_le_bytes(), &[]);
            }
        }
        for i in (0..nclients).rev() {
            if ready[2 + i] && serve_request(&mut st, i).is_err() {
                // The client went away or broke the protocol: forget its connection.
                st.clients.swap_remove(i);
            }
        }
        if ready[0]
            && let Ok(conn) = accept4(st.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)
        {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
            if from_parent(&conn, parent) && authenticate(&conn, &config).is_ok() {
                st.clients.push(conn);
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

/// Whether a new connection comes from the process that started the server. The server is
/// single-threaded and runs the handshake inline, so a peer that stalls it would stall every
/// start; but an abstract socket can be reached by any local process. The kernel's record of
/// who connected (`SO_PEERCRED`, which the peer cannot forge) lets the server close every other
/// connection before reading a byte from it. Only the parent ever connects: each process starts
/// a fork server of its own.
fn from_parent(conn: &OwnedFd, parent: i32) -> bool {
    nix::sys::socket::getsockopt(conn, sockopt::PeerCredentials).is_ok_and(|c| c.pid() == parent)
}

/// Runs the handshake on a new connection, bounded in time so that a stalled client cannot
/// block the server.
fn authenticate(conn: &OwnedFd, config: &ServerConfig) -> Result<()> {
    let timeout = TimeVal::new(HANDSHAKE_TIMEOUT.as_secs() as _, 0);
    let none = TimeVal::new(0, 0);
    setsockopt(conn, sockopt::ReceiveTimeout, &timeout).map_err(|e| Error::io("setsockopt", e))?;
    setsockopt(conn, sockopt::SendTimeout, &timeout).map_err(|e| Error::io("setsockopt", e))?;
    serve_handshake(conn.as_fd(), &config.authkey)?;
    setsockopt(conn, sockopt::ReceiveTimeout, &none).map_err(|e| Error::io("setsockopt", e))?;
    Ok(())
}

/// Reads one request from client `i` and forks its child.
fn serve_request(st: &mut ServerState, i: usize) -> Result<()> {
    let mut frame = recv_frame(st.clients[i].as_fd(), 64)?;
    if frame.payload != REQUEST || frame.fds.len() != 2 {
        return Err(Error::protocol("bad fork server request"));
    }
    let status = frame.fds.pop().expect("two descriptors");
    let child_end = frame.fds.pop().expect("two descriptors");
    let server_pid = std::process::id() as i32;
    // SAFETY: the fork server is single-threaded, so the child is a complete copy of a process
    // in a consistent state.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            // The child keeps only stdio and its bootstrap socket.
            st.close_all_in_child();
            drop(status);
            // SAFETY: restoring the default disposition installs no handler code.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
            crate::sys::die_with_parent(server_pid);
            worker_child::run_child(child_end)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(child_end);
            let pid = child.as_raw();
            let pidfd = PidFd::open(pid).map_err(|e| Error::io("pidfd_open", e));
            let reply = send_frame(st.clients[i].as_fd(), &pid.to_le_bytes(), &[]);
            match pidfd {
                Ok(pidfd) => st.kids.push(Kid { pidfd, pid, status }),
                Err(_) => {
                    let code = reap(pid);
                    let _ = send_frame(status.as_fd(), &code.to_le_bytes(), &[]);
                }
            }
            reply
        }
        Err(e) => send_frame(
            st.clients[i].as_fd(),
            format!("fork failed: {e}").as_bytes(),
            &[],
        ),
    }
}
