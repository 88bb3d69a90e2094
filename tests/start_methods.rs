//! Start methods, contexts and the fork server, ported from CPython's `TestStartMethod`,
//! `TestCloseFds` and `test_multiprocessing_forkserver/*` (rows SM- of the behaviour catalogue).
//!
//! What changed in the port: `ctx.set_start_method` on a non-default context (SM-02) cannot be
//! written in Rust, because `Context` has no such method; a second `set_start_method` is the
//! analogous misuse and is an error. Fork-server preloading (SM-08, SM-09, SM-15, SM-16) has no
//! equivalent: the server is a fresh exec of the program with its statics initialized, and there
//! is nothing to import. SM-10's premise (locks of one context unusable in another) does not
//! exist: every object works with every method, which SM-10 below asserts with a pipe. SM-13
//! (named semaphore warnings) belongs to the synchronization tests.

mod common;

use common::*;
use mp::{Connection, Error, Pipe, StartMethod};

#[mp::worker]
fn my_start_method() -> Option<StartMethod> {
    mp::current_process().start_method()
}

#[mp::worker]
fn wait_for_go(go: Connection<u8>) -> u8 {
    go.recv().unwrap_or(0)
}

#[mp::worker]
fn send_through(conn: Connection<String>, text: String) {
    conn.send(&text).unwrap();
}

#[mp::worker]
fn hand_on(conn: Connection<String>, method: StartMethod) {
    let mut p = mp::get_context(method).process(send_through, (conn, "from grandchild".into()));
    p.start().unwrap();
    p.join().unwrap();
}

/// Connects to the fork server at `address` like an unrelated local process would, and says
/// whether the server started a handshake with it ("challenged") or closed the connection.
#[mp::worker]
fn probe_forkserver(address: Vec<u8>) -> String {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::{AsFd, AsRawFd};
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(sock.as_raw_fd(), &UnixAddr::new_abstract(&address).unwrap()).unwrap();
    let mut fds = [nix::poll::PollFd::new(
        sock.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = nix::poll::PollTimeout::try_from(60_000).unwrap();
    assert_eq!(nix::poll::poll(&mut fds, timeout).unwrap(), 1, "no answer");
    let mut buf = [0u8; 64];
    match nix::unistd::read(&sock, &mut buf) {
        Ok(0) | Err(_) => "closed".into(),
        Ok(_) => "challenged".into(),
    }
}

/// The descriptors above 2 of this process that a program it runs would inherit (those
/// without close-on-exec).
#[mp::worker]
fn inheritable_fds() -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap() {
        let name = entry.unwrap().file_name();
        let fd: i32 = name.to_str().unwrap().parse().unwrap();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue; // the descriptor of the directory listing itself
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        if fd > 2 && flags & libc::O_CLOEXEC as u32 == 0 {
            out.push(fd);
        }
    }
    out
}

#[mp::worker]
fn fd_is_open(fd: i32) -> bool {
    nix::fcntl::fcntl(
        // SAFETY: only F_GETFD is asked of this number; an unknown descriptor gives EBADF.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok()
}

#[test]
fn sm_01_context_reports_its_method() {
    let _g = exclusive();
    for m in mp::get_all_start_methods() {
        let ctx = mp::get_context(m);
        assert_eq!(ctx.start_method(), m);
        assert_eq!(mp::get_context(ctx.start_method()), ctx);
        let mut p = started(ctx.process(my_start_method, ()));
        assert_eq!(join(&mut p).unwrap(), Some(m));
    }
}

#[test]
fn sm_02_03_04_default_method_and_set_start_method() {
    let _g = exclusive();
    // SM-04: forkserver first (the default), every method listed, default not fork.
    let all = mp::get_all_start_methods();
    assert_eq!(all[0], StartMethod::ForkServer);
    for m in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::ForkServer,
    ] {
        assert!(all.contains(&m));
    }
    assert_eq!(mp::get_start_method(), StartMethod::ForkServer);
    assert_eq!(
        mp::default_context().start_method(),
        StartMethod::ForkServer
    );

    // SM-02/03: set once; a second plain set is an error; force switches the default.
    mp::set_start_method(StartMethod::ForkServer).unwrap();
    let err = mp::set_start_method(StartMethod::Spawn).unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err}");
    assert!(err.to_string().contains("set_start_method_force"), "{err}");
    mp::set_start_method_force(StartMethod::Spawn);
    assert_eq!(mp::get_start_method(), StartMethod::Spawn);
    let mut p = mp::Process::new(my_start_method, ());
    assert_eq!(p.start_method(), StartMethod::Spawn);
    p.start().unwrap();
    assert_eq!(join(&mut p).unwrap(), Some(StartMethod::Spawn));
    mp::set_start_method_force(StartMethod::ForkServer);
    assert_eq!("fork".parse::<StartMethod>().unwrap(), StartMethod::Fork);
    assert!("thread".parse::<StartMethod>().is_err());
}

fn sm_05_with_signal(signal: nix::sys::signal::Signal) {
    let _g = exclusive();
    let ctx = mp::get_context(StartMethod::ForkServer);
    let mut warm = started(ctx.process(my_start_method, ()));
    join(&mut warm).unwrap();
    let server = mp::forkserver::server_pid().expect("the fork server runs");
    let (tx, rx) = Pipe::<u8>::duplex().unwrap();
    let mut in_flight = started(ctx.process(wait_for_go, (rx,)));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), signal).unwrap();
    if signal == nix::sys::signal::Signal::SIGKILL {
        assert!(eventually(LONG, || pid_gone(server)));
    }
    let _ = tx.send(&1);
    // The process in flight finishes (0), or died with the server (status unknown: 255).
    let _ = join(&mut in_flight);
    let code = in_flight.exitcode().unwrap();
    assert!(code == 0 || code == 255, "exit code {code}");
    // The next start works, with a new server if the old one died.
    let mut next = started(ctx.process(my_start_method, ()));
    assert_eq!(join(&mut next).unwrap(), Some(StartMethod::ForkServer));
    let now = mp::forkserver::server_pid().unwrap();
    if signal == nix::sys::signal::Signal::SIGKILL {
        assert_ne!(now, server);
    } else {
        assert_eq!(now, server, "the fork server ignores SIGINT");
        assert_eq!(code, 0);
    }
}

#[test]
fn sm_05_forkserver_sigkill_restarts() {
    sm_05_with_signal(nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn sm_05_forkserver_sigint_is_ignored() {
    sm_05_with_signal(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sm_06_forkserver_socket_is_authenticated() {
    let _g = shared();
    let key = mp::current_process().authkey().to_vec();
    assert!(key.len() > 15);
    mp::__private::forkserver_handshake(&key).unwrap();
    let err = mp::__private::forkserver_handshake(b"not the key").unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err}");
}

#[test]
fn sm_07_wrong_authkey_fails_start_then_right_key_works() {
    let _g = exclusive();
    let ctx = mp::get_context(StartMethod::ForkServer);
    let mut warm = started(ctx.process(my_start_method, ()));
    join(&mut warm).unwrap();
    let key = mp::current_process().authkey().to_vec();
    mp::set_authkey(b"wrong".to_vec());
    let mut p = ctx.process(my_start_method, ());
    let err = p.start().unwrap_err();
    mp::set_authkey(key);
    assert!(matches!(err, Error::Authentication { .. }), "{err}");
    let mut p = started(ctx.process(my_start_method, ()));
    assert_eq!(join(&mut p).unwrap(), Some(StartMethod::ForkServer));
}

#[test]
fn sm_10_objects_work_with_every_method() {
    let _g = exclusive();
    let (r, w) = Pipe::<String>::simplex().unwrap();
    for m in mp::get_all_start_methods() {
        let mut p = started(
            mp::get_context(m).process(send_through, (w.try_clone().unwrap(), m.to_string())),
        );
        join(&mut p).unwrap();
        assert_eq!(r.recv_timeout(LONG).unwrap(), m.to_string());
    }
}

for_each_method!(
    sm_11_child_hands_object_to_grandchild,
    |ctx: mp::Context| {
        let (r, w) = Pipe::<String>::simplex().unwrap();
        let mut p = started(ctx.process(hand_on, (w, ctx.start_method())));
        join(&mut p).unwrap();
        assert_eq!(r.recv_timeout(LONG).unwrap(), "from grandchild");
    }
);

for_each_method!(sm_12_unrelated_fds_not_inherited, |ctx: mp::Context| {
    let file = std::fs::File::open("/dev/null").unwrap();
    // A high descriptor without close-on-exec, as a careless library might leave.
    let high = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_DUPFD(300)).unwrap();
    let mut p = started(ctx.process(fd_is_open, (high,)));
    let inherited = join(&mut p).unwrap();
    nix::unistd::close(high).unwrap();
    assert_eq!(inherited, ctx.start_method() == StartMethod::Fork);
});

/// An unrelated local process (any user) that connects to the fork server and stays silent, or
/// drips a byte now and then, used to hold the single-threaded server in its handshake for
/// 10 s per connection, or indefinitely; now the server closes such connections unread.
#[test]
fn forkserver_closes_connections_from_other_processes_unread() {
    let _g = shared();
    let ctx = mp::get_context(StartMethod::ForkServer);
    let mut warm = started(ctx.process(my_start_method, ()));
    join(&mut warm).unwrap();
    let address = mp::forkserver::server_address().unwrap();
    let mut probe =
        started(mp::get_context(StartMethod::Spawn).process(probe_forkserver, (address,)));
    assert_eq!(join(&mut probe).unwrap(), "closed");
    let mut p = started(ctx.process(my_start_method, ()));
    assert_eq!(join(&mut p).unwrap(), Some(StartMethod::ForkServer));
}

/// A worker's own descriptors (its report socket above all: a program the worker runs could
/// write a forged result into it) are close-on-exec. Under Fork a child also inherits what the
/// parent left inheritable, as in Python, so only Spawn and ForkServer are asserted empty.
#[test]
fn worker_descriptors_do_not_reach_programs_it_runs() {
    let _g = shared();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let mut p = started(mp::get_context(m).process(inheritable_fds, ()));
        assert_eq!(join(&mut p).unwrap(), Vec::<i32>::new(), "{m}");
    }
}

#[test]
fn sm_14_forkserver_address_fits_sun_path() {
    let _g = shared();
    let mut p = started(mp::get_context(StartMethod::ForkServer).process(my_start_method, ()));
    join(&mut p).unwrap();
    let address = mp::forkserver::server_address().unwrap();
    assert!(address.len() + 1 < 108, "{} bytes", address.len());
}

#[test]
fn start_method_names_match_python() {
    let names: Vec<_> = mp::get_all_start_methods()
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(names, ["forkserver", "spawn", "fork"]);
}
