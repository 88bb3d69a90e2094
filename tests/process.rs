//! Process lifecycle and exit codes, ported from CPython's `_TestProcess`,
//! `_TestSubclassingProcess` and friends in `Lib/test/_test_multiprocessing.py` (rows PR-, EX- of
//! the behaviour catalogue). Every test runs under each start method.
//!
//! What changed in the port: Python's `target`/`args` become a `#[mp::worker]` and a typed
//! argument tuple; `join()` returns the worker's value or an `mp::Error`; `ValueError` for
//! misuse becomes `Error::InvalidState`; timing assertions are dropped (CPython's are off too)
//! and every blocking call has a generous bound.

mod common;

use std::time::Duration;

use common::*;
use mp::{Connection, Error, Handle, Pipe, StartMethod};

#[mp::worker]
fn noop() {}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Identity {
    name: String,
    pid: i32,
    authkey: Vec<u8>,
    daemon: bool,
    parent: Option<(i32, String)>,
    method: Option<StartMethod>,
}

#[mp::worker]
fn identity(args: Vec<String>, kw: (u8, String)) -> (Identity, Vec<String>, (u8, String)) {
    let me = mp::current_process();
    let id = Identity {
        name: me.name().to_owned(),
        pid: me.pid(),
        authkey: me.authkey().to_vec(),
        daemon: me.daemon(),
        parent: mp::parent_process().map(|p| (p.pid(), p.name().to_owned())),
        method: me.start_method(),
    };
    (id, args, kw)
}

/// Blocks until the parent sends something or goes away.
#[mp::worker]
fn wait_for_go(go: Connection<u8>) -> u8 {
    go.recv().unwrap_or(0)
}

#[mp::worker]
fn sleep_long() {
    std::thread::sleep(Duration::from_secs(300));
}

/// Restores the default SIGINT action (a shell without job control starts background commands
/// with SIGINT ignored, and a fork child inherits that), says so, then sleeps.
#[mp::worker]
fn sleep_with_default_sigint(ready: Connection<u8>) {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code.
    unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) }.unwrap();
    ready.send(&1).unwrap();
    std::thread::sleep(Duration::from_secs(300));
}

#[mp::worker]
fn exit_with(code: i32) {
    std::process::exit(code)
}

#[mp::worker]
fn panic_with(message: String, stderr: Handle) {
    let _ = nix::unistd::dup2_stderr(std::os::fd::OwnedFd::from(stderr));
    panic!("{message}");
}

#[mp::worker]
fn fail_with(message: String, stderr: Handle) -> Result<u32, String> {
    let _ = nix::unistd::dup2_stderr(std::os::fd::OwnedFd::from(stderr));
    Err(message)
}

#[mp::worker]
fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[mp::worker]
fn child_default_daemon(method: StartMethod) -> bool {
    let mut p = mp::get_context(method).process(identity, (vec![], (0, String::new())));
    p.start().unwrap();
    p.join().unwrap().0.daemon
}

#[mp::worker]
fn recurse(out: Connection<Vec<u32>>, id: Vec<u32>, method: StartMethod) {
    out.send(&id).unwrap();
    if id.len() < 2 {
        for i in 0..2u32 {
            let mut next = id.clone();
            next.push(i);
            let mut p =
                mp::get_context(method).process(recurse, (out.try_clone().unwrap(), next, method));
            p.start().unwrap();
            p.join().unwrap();
        }
    }
}

#[mp::worker]
fn parent_view() -> Option<(i32, String, bool, bool)> {
    let p = mp::parent_process()?;
    Some((
        p.pid(),
        p.name().to_owned(),
        p.is_alive(),
        p.join_timeout(Duration::from_millis(10)),
    ))
}

#[mp::worker]
fn close_stdio_then_print() -> u8 {
    let _ = nix::unistd::close(1);
    let _ = nix::unistd::close(2);
    println!("nobody reads this");
    eprintln!("nor this");
    7
}

#[mp::worker]
fn pipe_and_process_inside(method: StartMethod) -> String {
    let (a, b) = Pipe::<String>::duplex().unwrap();
    let mut p = mp::get_context(method).process(uppercase_echo, (b,));
    p.start().unwrap();
    a.send(&"nested".into()).unwrap();
    let r = a.recv().unwrap();
    p.join().unwrap();
    r
}

#[mp::worker]
fn uppercase_echo(conn: Connection<String>) {
    let s = conn.recv().unwrap();
    conn.send(&s.to_uppercase()).unwrap();
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Upper {
    conn: Connection<String>,
}

#[mp::worker]
impl mp::Run for Upper {
    fn run(self) {
        // Stops on an empty message: under Fork the child also holds a copy of the parent's end
        // (inherited, as in Python), so end-of-stream alone would never come.
        while let Ok(s) = self.conn.recv() {
            if s.is_empty() {
                break;
            }
            self.conn.send(&s.to_uppercase()).unwrap();
        }
    }
}

#[mp::worker]
fn threads_left_running(out: Connection<u8>) -> u8 {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(300));
        let _ = out.send(&1);
    });
    5
}

static ATEXIT_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn write_atexit_marker() {
    let fd = ATEXIT_FD.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: the descriptor was leaked into ATEXIT_FD by `register_atexit` and stays open until
    // the process ends; the buffer is a static byte string.
    unsafe { libc::write(fd, b"atexit ran".as_ptr().cast(), 10) };
}

#[mp::worker]
fn register_atexit(out: Handle) {
    use std::os::fd::IntoRawFd;
    ATEXIT_FD.store(
        std::os::fd::OwnedFd::from(out).into_raw_fd(),
        std::sync::atomic::Ordering::SeqCst,
    );
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe { libc::atexit(write_atexit_marker) };
}

fn in_active_children(pid: Option<i32>) -> bool {
    mp::active_children().iter().any(|c| Some(c.pid()) == pid)
}

#[test]
fn pr_01_current_process_in_main() {
    let me = mp::current_process();
    assert!(me.is_alive());
    assert!(!me.daemon());
    assert!(!me.authkey().is_empty());
    assert_eq!(me.ident(), std::process::id() as i32);
    assert_eq!(me.exitcode(), None);
    assert_eq!(me.name(), "MainProcess");
}

for_each_method!(pr_02_daemon_defaults_to_creator_flag, |ctx: mp::Context| {
    let method = ctx.start_method();
    let mut d = started(
        ctx.process_builder()
            .daemon(true)
            .build(child_default_daemon, (method,)),
    );
    assert!(
        join(&mut d).unwrap(),
        "a daemon's child is a daemon by default"
    );
    let mut n = started(ctx.process(child_default_daemon, (method,)));
    assert!(!join(&mut n).unwrap());
    let p = ctx.process_builder().daemon(false).build(noop, ());
    assert!(!p.daemon());
});

for_each_method!(pr_03_before_start, |ctx: mp::Context| {
    let p = ctx.process(noop, ());
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.pid(), None);
    assert!(mp::active_children().iter().all(|c| c.name() != p.name()));
    let mut q = started(ctx.process(identity, (vec![], (0, String::new()))));
    let (id, _, _) = join(&mut q).unwrap();
    assert_eq!(id.authkey, mp::current_process().authkey());
});

for_each_method!(pr_04_after_start, |ctx: mp::Context| {
    let (tx, rx) = Pipe::<u8>::duplex().unwrap();
    let mut p = started(ctx.process(wait_for_go, (rx,)));
    assert_eq!(p.exitcode(), None);
    assert!(p.is_alive());
    assert!(in_active_children(p.pid()));
    tx.send(&9).unwrap();
    assert_eq!(join(&mut p).unwrap(), 9);
});

for_each_method!(
    pr_05_child_sees_args_name_authkey_pid,
    |ctx: mp::Context| {
        let args = vec!["a".to_string(), "b".to_string()];
        let mut p = started(
            ctx.process_builder()
                .name("SomeName")
                .build(identity, (args.clone(), (3, "kw".into()))),
        );
        let pid = p.pid();
        let (id, got_args, kw) = join(&mut p).unwrap();
        assert_eq!(got_args, args);
        assert_eq!(kw, (3, "kw".to_string()));
        assert_eq!(id.name, "SomeName");
        assert_eq!(id.authkey, mp::current_process().authkey());
        assert_eq!(Some(id.pid), pid);
        assert_eq!(id.method, Some(ctx.start_method()));
    }
);

for_each_method!(pr_06_after_join, |ctx: mp::Context| {
    let mut p = started(ctx.process(noop, ()));
    join(&mut p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert!(!in_active_children(p.pid()));
});

for_each_method!(pr_07_active_children, |ctx: mp::Context| {
    let p = ctx.process(noop, ());
    assert!(mp::active_children().iter().all(|c| c.name() != p.name()));
    let (tx, rx) = Pipe::<u8>::duplex().unwrap();
    let mut q = started(ctx.process(wait_for_go, (rx,)));
    assert!(in_active_children(q.pid()));
    tx.send(&1).unwrap();
    join(&mut q).unwrap();
    assert!(!in_active_children(q.pid()));
});

#[test]
fn pr_09_parent_process_is_none_in_main() {
    assert!(mp::parent_process().is_none());
}

for_each_method!(pr_09_parent_process_in_child, |ctx: mp::Context| {
    let mut p = started(ctx.process(parent_view, ()));
    let (pid, name, alive, exited) = join(&mut p).unwrap().expect("a child has a parent");
    assert_eq!(pid, std::process::id() as i32);
    assert_eq!(name, "MainProcess");
    assert!(alive, "the parent is alive while it waits for the child");
    assert!(!exited, "join_timeout on a live parent times out");
});

for_each_method!(pr_11_recursion, |ctx: mp::Context| {
    let (r, w) = Pipe::<Vec<u32>>::simplex().unwrap();
    let mut p = started(ctx.process(recurse, (w, vec![], ctx.start_method())));
    join(&mut p).unwrap();
    let mut got = Vec::new();
    loop {
        match r.recv() {
            Ok(id) => got.push(id),
            Err(Error::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let expected: Vec<Vec<u32>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 1],
        vec![1],
        vec![1, 0],
        vec![1, 1],
    ];
    assert_eq!(got, expected);
});

for_each_method!(pr_12_sentinel, |ctx: mp::Context| {
    let p = ctx.process(noop, ());
    assert!(matches!(p.sentinel(), Err(Error::InvalidState { .. })));
    let (tx, rx) = Pipe::<u8>::duplex().unwrap();
    let mut p = started(ctx.process(wait_for_go, (rx,)));
    let s = p.sentinel().unwrap();
    assert!(
        mp::connection::wait(&[&s], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
    tx.send(&1).unwrap();
    assert_eq!(mp::connection::wait(&[&s], Some(LONG)).unwrap(), vec![0]);
    join(&mut p).unwrap();
});

for_each_method!(pr_13_close, |ctx: mp::Context| {
    let (tx, rx) = Pipe::<u8>::duplex().unwrap();
    let mut p = started(ctx.process(wait_for_go, (rx,)));
    assert!(matches!(p.close(), Err(Error::InvalidState { .. })));
    tx.send(&1).unwrap();
    join(&mut p).unwrap();
    p.close().unwrap();
    p.close().unwrap();
    assert!(!p.is_alive());
    assert!(matches!(p.join(), Err(Error::InvalidState { .. })));
    assert!(matches!(p.terminate(), Err(Error::InvalidState { .. })));
    assert!(matches!(p.sentinel(), Err(Error::InvalidState { .. })));
    assert_eq!(p.exitcode(), Some(0));
});

for_each_method!(pr_14_many_processes, |ctx: mp::Context| {
    let n = 40;
    let mut ps: Vec<_> = (0..n).map(|_| started(ctx.process(noop, ()))).collect();
    for p in &mut ps {
        join(p).unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut ps: Vec<_> = (0..n)
        .map(|_| started(ctx.process(sleep_long, ())))
        .collect();
    for p in &ps {
        p.terminate().unwrap();
    }
    for p in &mut ps {
        assert!(matches!(
            join(p),
            Err(Error::ProcessFailed { exitcode: -15, .. })
        ));
        assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    }
});

for_each_method!(
    pr_16_no_fd_inflation_between_siblings,
    |ctx: mp::Context| {
        if ctx.start_method() == StartMethod::Fork {
            return; // a fork child inherits whatever the parent has open, by design
        }
        let mut alone = started(ctx.process(open_fd_count, ()));
        let baseline = join(&mut alone).unwrap();
        let mut blockers = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = Pipe::<u8>::duplex().unwrap();
            blockers.push(started(ctx.process(wait_for_go, (rx,))));
            senders.push(tx);
        }
        let mut crowded = started(ctx.process(open_fd_count, ()));
        assert_eq!(join(&mut crowded).unwrap(), baseline);
        for tx in &senders {
            tx.send(&1).unwrap();
        }
        for b in &mut blockers {
            join(b).unwrap();
        }
    }
);

for_each_method!(
    pr_17_threads_do_not_outlive_the_worker,
    |ctx: mp::Context| {
        // Rust semantics: a process ends when its worker returns; threads still running are not
        // waited for (Python joins its non-daemon threads first).
        let (r, w) = Pipe::<u8>::simplex().unwrap();
        let mut p = started(ctx.process(threads_left_running, (w,)));
        assert_eq!(join(&mut p).unwrap(), 5);
        assert!(matches!(r.recv(), Err(Error::Closed)));
    }
);

for_each_method!(pr_18_child_with_closed_stdio, |ctx: mp::Context| {
    let mut p = started(ctx.process(close_stdio_then_print, ()));
    assert_eq!(join(&mut p).unwrap(), 7);
    assert_eq!(p.exitcode(), Some(0));
});

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn pr_19_join_survives_eintr() {
    let _g = exclusive();
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap();
    for ctx in mp::get_all_start_methods().into_iter().map(mp::get_context) {
        let (tx, rx) = Pipe::<u8>::duplex().unwrap();
        let mut p = started(ctx.process(wait_for_go, (rx,)));
        let me = nix::unistd::Pid::this();
        let interrupter = std::thread::spawn(move || {
            for _ in 0..20 {
                let _ = nix::sys::signal::kill(me, Signal::SIGUSR1);
                std::thread::sleep(Duration::from_millis(5));
            }
            tx.send(&3).unwrap();
        });
        assert_eq!(join(&mut p).unwrap(), 3);
        assert_eq!(p.exitcode(), Some(0));
        interrupter.join().unwrap();
    }
}

for_each_method!(pr_21_subclass_style, |ctx: mp::Context| {
    let (a, b) = Pipe::<String>::duplex().unwrap();
    let mut p = started(ctx.process_from_run(Upper { conn: b }));
    a.send(&"hello".into()).unwrap();
    assert_eq!(a.recv().unwrap(), "HELLO");
    a.send(&String::new()).unwrap();
    join(&mut p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
});

for_each_method!(pr_22_panic_reaches_parent_and_stderr, |ctx: mp::Context| {
    let (r, w) = capture_pipe();
    let mut p = started(ctx.process(panic_with, ("boom 42".into(), w)));
    match join(&mut p) {
        Err(Error::WorkerPanicked {
            message, location, ..
        }) => {
            assert_eq!(message, "boom 42");
            assert!(location.contains("tests/process.rs"), "{location}");
        }
        other => panic!("expected WorkerPanicked, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));
    let stderr = read_all(r);
    assert!(stderr.contains("boom 42"), "{stderr}");
    assert!(stderr.contains("tests/process.rs"), "{stderr}");
});

for_each_method!(
    pr_23_atexit_handlers_run_in_fresh_children,
    |ctx: mp::Context| {
        if ctx.start_method() == StartMethod::Fork {
            return; // a fork child exits with _exit: the atexit list is the parent's copy
        }
        let (r, w) = capture_pipe();
        let mut p = started(ctx.process(register_atexit, (w,)));
        join(&mut p).unwrap();
        assert_eq!(read_all(r), "atexit ran");
    }
);

for_each_method!(
    pr_24_pipes_and_processes_inside_a_child,
    |ctx: mp::Context| {
        let mut p = started(ctx.process(pipe_and_process_inside, (ctx.start_method(),)));
        assert_eq!(join(&mut p).unwrap(), "NESTED");
    }
);

#[test]
fn pr_29_cpu_count() {
    assert!(mp::cpu_count() >= 1);
}

for_each_method!(ex_01_terminate, |ctx: mp::Context| {
    let mut p = started(ctx.process(sleep_long, ()));
    p.terminate().unwrap();
    assert!(matches!(
        join(&mut p),
        Err(Error::ProcessFailed { exitcode: -15, .. })
    ));
    assert_eq!(p.exitcode(), Some(-15));
    assert!(!p.is_alive());
    assert!(!in_active_children(p.pid()));
});

for_each_method!(ex_02_kill, |ctx: mp::Context| {
    let mut p = started(ctx.process(sleep_long, ()));
    p.kill().unwrap();
    let err = join(&mut p).unwrap_err();
    assert!(
        matches!(&err, Error::ProcessFailed { exitcode: -9, message, .. } if message.contains("SIGKILL")),
        "{err}"
    );
});

for_each_method!(ex_03_04_interrupt, |ctx: mp::Context| {
    let (ready, child_end) = Pipe::<u8>::duplex().unwrap();
    let mut p = started(ctx.process(sleep_with_default_sigint, (child_end,)));
    ready.recv_timeout(LONG).unwrap();
    p.interrupt().unwrap();
    assert!(matches!(
        join(&mut p),
        Err(Error::ProcessFailed { exitcode: -2, .. })
    ));
});

for_each_method!(ex_05_join_zero_returns_at_once, |ctx: mp::Context| {
    let (tx, rx) = Pipe::<u8>::duplex().unwrap();
    let mut p = started(ctx.process(wait_for_go, (rx,)));
    assert!(!p.join_timeout(Duration::ZERO));
    assert!(p.is_alive());
    tx.send(&1).unwrap();
    join(&mut p).unwrap();
});

for_each_method!(ex_06_exit_codes, |ctx: mp::Context| {
    for code in [0, 1, 8] {
        let mut p = started(ctx.process(exit_with, (code,)));
        let err = join(&mut p).unwrap_err();
        assert!(matches!(err, Error::ProcessFailed { exitcode, .. } if exitcode == code));
        assert_eq!(p.exitcode(), Some(code));
    }
});

for_each_method!(
    ex_07_returned_error_is_exit_1_with_text,
    |ctx: mp::Context| {
        let (r, w) = capture_pipe();
        let mut p = started(ctx.process(fail_with, ("disk full".into(), w)));
        match join(&mut p) {
            Err(Error::ProcessFailed {
                exitcode: 1,
                message,
                ..
            }) => assert_eq!(message, "disk full"),
            other => panic!("expected ProcessFailed, got {other:?}"),
        }
        assert!(read_all(r).contains("disk full"));
    }
);

for_each_method!(
    join_twice_reports_the_result_was_taken,
    |ctx: mp::Context| {
        let mut p = started(ctx.process(noop, ()));
        join(&mut p).unwrap();
        assert!(matches!(p.join(), Err(Error::InvalidState { .. })));
        assert!(matches!(p.start(), Err(Error::InvalidState { .. })));
    }
);

/// Starts a daemon that sleeps and a non-daemon that reports after `delay_ms`, returns their
/// pids, and ends: the child's exit path is the same as the end of `#[mp::main]`.
#[mp::worker]
fn leave_children(method: StartMethod, out: Connection<String>) -> (i32, i32) {
    let ctx = mp::get_context(method);
    let mut daemon = ctx.process_builder().daemon(true).build(sleep_long, ());
    daemon.start().unwrap();
    let mut worker = ctx.process(send_after_go, (out,));
    worker.start().unwrap();
    (daemon.pid().unwrap(), worker.pid().unwrap())
}

#[mp::worker]
fn send_after_go(out: Connection<String>) {
    // Waits for the parent's go, so it certainly outlives the function that started it.
    let go = out.recv().unwrap();
    out.send(&format!("{go} done")).unwrap();
}

for_each_method!(
    end_of_main_joins_children_and_terminates_daemons,
    |ctx: mp::Context| {
        let (here, there) = Pipe::<String>::duplex().unwrap();
        let mut p = started(ctx.process(leave_children, (ctx.start_method(), there)));
        // The middle process is now waiting in its exit path for the non-daemon child.
        assert!(!p.join_timeout(Duration::from_millis(50)));
        here.send(&"go".into()).unwrap();
        assert_eq!(here.recv_timeout(LONG).unwrap(), "go done");
        let (daemon, worker) = join(&mut p).unwrap();
        assert!(
            pid_gone(daemon),
            "the daemon child was terminated and reaped"
        );
        assert!(pid_gone(worker), "the non-daemon child was joined");
    }
);

#[test]
fn start_twice_is_an_error() {
    let _g = shared();
    let mut p = started(mp::Process::new(noop, ()));
    assert!(matches!(p.start(), Err(Error::InvalidState { .. })));
    join(&mut p).unwrap();
}

#[test]
fn debug_shows_name_and_state() {
    let p = mp::Process::builder().name("dbg").build(noop, ());
    assert_eq!(format!("{p:?}"), "<Process name=\"dbg\" initial>");
}
