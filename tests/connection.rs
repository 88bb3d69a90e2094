//! Pipe, Connection and `connection::wait`, ported from CPython's `_TestConnection`, `_TestPoll`,
//! `_TestPicklingConnections`, `TestIgnoreEINTR` and `TestWait` (rows CO- and WA-).
//!
//! What changed in the port: Python's heterogeneous `[1, 2.25, None]` becomes a typed tuple;
//! `recv_bytes_into(buf, offset)` is `recv_bytes_into(&mut buf[offset..])`, and
//! `send_bytes(buf, offset, size)` (CO-09) is `send_bytes(&buf[offset..offset + size])`, whose
//! range errors are Rust's own slicing; a simplex end used the wrong way (CO-07) and a closed end
//! (CO-10) are `Error::InvalidState`; a `Connection` cannot be built from an arbitrary integer
//! (CO-16), and socket timeouts (CO-17) do not exist to leak into pipes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mp::{Connection, Error, Handle, Pipe};

type Triple = (i32, f64, Option<i32>);

#[mp::worker]
fn echo_values(conn: Connection<Triple>) {
    while let Ok(v) = conn.recv() {
        if v.0 < 0 {
            break;
        }
        conn.send(&v).unwrap();
    }
}

#[mp::worker]
fn echo_bytes(conn: Connection<()>) {
    while let Ok(b) = conn.recv_bytes() {
        if b == b"stop" {
            break;
        }
        conn.send_bytes(&b).unwrap();
    }
}

#[mp::worker]
fn poll_then_return(conn: Connection<String>) -> bool {
    conn.poll(Some(LONG)).unwrap()
}

#[mp::worker]
fn send_one(conn: Connection<String>, text: String) {
    conn.send(&text).unwrap();
}

#[mp::worker]
fn recv_one(conn: Connection<String>) -> String {
    conn.recv().unwrap()
}

#[mp::worker]
fn write_through(h: Handle, text: String) {
    use std::io::Write;
    let mut f = std::fs::File::from(std::os::fd::OwnedFd::from(h));
    f.write_all(text.as_bytes()).unwrap();
}

#[mp::worker]
fn send_n(conn: Connection<u32>, id: u32, n: u32) {
    for i in 0..n {
        conn.send(&(id * 1000 + i)).unwrap();
    }
}

/// A message of `check_order`: its index, a body whose length and bytes follow from the index,
/// and a descriptor on some indices.
type Mixed = (u32, Vec<u8>, Option<Handle>);

/// The body of message `i`: sizes on both sides of what a pipe's shared memory holds (about
/// 8 KiB) and of a socket buffer.
fn mixed_body(i: u32) -> Vec<u8> {
    let len = [8, 100, 4000, 7990, 9000, 70_000][i as usize % 6];
    vec![i as u8; len]
}

/// Receives `Mixed` messages until `u32::MAX`, checking each against its index; answers every
/// third one, so that both sides spin for each other part of the time. Returns how many came.
#[mp::worker]
fn check_order(conn: Connection<Mixed>) -> u32 {
    let mut next = 0;
    loop {
        let (i, body, handle) = conn.recv().unwrap();
        if i == u32::MAX {
            return next;
        }
        assert_eq!(i, next, "messages out of order");
        assert!(body == mixed_body(i), "message {i} garbled");
        assert_eq!(handle.is_some(), i % 7 == 3, "message {i} lost its handle");
        next += 1;
        if i % 3 == 0 {
            conn.send(&(i, Vec::new(), None)).unwrap();
        }
    }
}

/// Sends `0..n`, pausing a little longer after each, so that the receiver's spins start and
/// end at every point of a send. (The tests start their children as daemons: a forked child
/// holds the test's own end of the pipe too, and a failed test must not wait for it at exit.)
#[mp::worker]
fn send_paced(conn: Connection<u32>, n: u32) {
    for i in 0..n {
        conn.send(&i).unwrap();
        for _ in 0..(i % 64) * 40 {
            std::hint::spin_loop();
        }
    }
}

for_each_method!(co_01_echo_child, |ctx: mp::Context| {
    let (a, b) = Pipe::<Triple>::duplex().unwrap();
    let mut p = started(ctx.process(echo_values, (b,)));
    let v = (1, 2.25, None);
    a.send(&v).unwrap();
    assert_eq!(a.recv_timeout(LONG).unwrap(), v);
    a.send(&(-1, 0.0, None)).unwrap();
    join(&mut p).unwrap();

    let (a, b) = Pipe::<()>::duplex().unwrap();
    let mut p = started(ctx.process(echo_bytes, (b,)));
    a.send_bytes(b"bytes").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"bytes");
    // CO-05: a 16 MiB message round-trips.
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 253) as u8).collect();
    a.send_bytes(&big).unwrap();
    assert_eq!(a.recv_bytes().unwrap(), big);
    a.send_bytes(b"stop").unwrap();
    join(&mut p).unwrap();
});

#[test]
fn co_02_03_recv_bytes_into() {
    let _g = shared();
    let (a, b) = Pipe::<()>::duplex().unwrap();
    a.send_bytes(b"hello").unwrap();
    let mut buf = [9u8; 12];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 5);
    assert_eq!(&buf, b"hello\x09\x09\x09\x09\x09\x09\x09");
    a.send_bytes(b"world").unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf[4..]).unwrap(), 5);
    assert_eq!(&buf, b"hellworld\x09\x09\x09");
    a.send_bytes(b"far too long for it").unwrap();
    match b.recv_bytes_into(&mut buf[..4]) {
        Err(Error::BufferTooShort { capacity, message }) => {
            assert_eq!(capacity, 4);
            assert_eq!(message, b"far too long for it");
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    // Nothing was lost: the next message is intact.
    a.send_bytes(b"next").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"next");
}

#[test]
fn queued_messages_of_every_small_size_arrive_whole_and_each_is_waitable() {
    let _g = shared();
    let (a, b) = Pipe::<Vec<u8>>::duplex().unwrap();
    // Sizes on both sides of the length a frame is padded to, queued back to back: a receive
    // must never take bytes of the next message, and each one left must keep the socket ready.
    let sizes: Vec<usize> = (0..=80).chain([127, 128, 1000, 70_000]).collect();
    // From a thread: more than the socket buffer holds may be queued.
    let sender = {
        let sizes = sizes.clone();
        std::thread::spawn(move || {
            for &n in &sizes {
                a.send(&vec![n as u8; n]).unwrap();
                a.send_bytes(&vec![!(n as u8); n]).unwrap();
            }
            a
        })
    };
    // Let the queue fill before anything is received.
    std::thread::sleep(Duration::from_millis(20));
    let mut buf = vec![0u8; 100];
    for &n in &sizes {
        assert_eq!(mp::connection::wait(&[&b], Some(LONG)).unwrap(), vec![0]);
        assert_eq!(b.recv().unwrap(), vec![n as u8; n]);
        assert!(b.poll(Some(Duration::ZERO)).unwrap());
        if n <= buf.len() {
            assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), n);
            assert_eq!(buf[..n], vec![!(n as u8); n]);
        } else {
            assert_eq!(b.recv_bytes().unwrap(), vec![!(n as u8); n]);
        }
    }
    let a = sender.join().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    drop(a);
    assert!(matches!(b.recv(), Err(Error::Closed)));
}

#[test]
fn co_04_poll() {
    let _g = shared();
    let (a, b) = Pipe::<u8>::duplex().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let t = Instant::now();
    let timeout = Duration::from_millis(100);
    assert!(!b.poll(Some(timeout)).unwrap());
    assert!(
        t.elapsed() >= timeout,
        "poll returned early: {:?}",
        t.elapsed()
    );
    a.send(&1).unwrap();
    assert!(b.poll(Some(LONG)).unwrap());
    assert_eq!(b.recv().unwrap(), 1);
    let t = Instant::now();
    assert!(matches!(b.recv_timeout(timeout), Err(Error::Timeout)));
    assert!(t.elapsed() >= timeout);
}

#[test]
fn co_06_peer_closed_is_eof() {
    let _g = shared();
    let (a, mut b) = Pipe::<u8>::duplex().unwrap();
    a.send(&5).unwrap();
    b.close();
    assert!(b.closed());
    assert!(matches!(b.recv(), Err(Error::InvalidState { .. })));
    assert!(a.readable() && a.writable());
    let (a, b) = Pipe::<u8>::duplex().unwrap();
    a.send(&5).unwrap();
    drop(a);
    assert_eq!(
        b.recv().unwrap(),
        5,
        "messages sent before the close are delivered"
    );
    assert!(matches!(b.recv(), Err(Error::Closed)));
    assert!(matches!(b.recv_bytes(), Err(Error::Closed)));
    assert!(matches!(b.send(&1), Err(Error::Closed)));
}

#[test]
fn co_07_simplex_ends_have_one_direction() {
    let _g = shared();
    let (r, w) = Pipe::<u8>::simplex().unwrap();
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    assert!(matches!(r.send(&1), Err(Error::InvalidState { .. })));
    assert!(matches!(w.recv(), Err(Error::InvalidState { .. })));
    assert!(matches!(
        w.poll(Some(Duration::ZERO)),
        Err(Error::InvalidState { .. })
    ));
    w.send(&3).unwrap();
    assert_eq!(r.recv().unwrap(), 3);
}

for_each_method!(
    co_08_parent_drops_the_childs_end_after_start,
    |ctx: mp::Context| {
        let (a, b) = Pipe::<String>::duplex().unwrap();
        let mut p = started(ctx.process(send_one, (b, "still works".into())));
        assert_eq!(a.recv_timeout(LONG).unwrap(), "still works");
        join(&mut p).unwrap();
    }
);

#[test]
fn co_11_12_14_message_boundaries() {
    let _g = shared();
    let (a, b) = Pipe::<()>::duplex().unwrap();
    a.send_bytes(b"").unwrap();
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert!(
        b.poll(Some(Duration::ZERO)).unwrap(),
        "poll does not consume"
    );
    assert_eq!(b.recv_bytes().unwrap(), b"");
    let msgs: [&[u8]; 7] = [b"a", b"", b"b", b"cd", b"", b"", b"efg"];
    for m in msgs {
        a.send_bytes(m).unwrap();
    }
    for m in msgs {
        assert!(b.poll(Some(Duration::ZERO)).unwrap());
        assert_eq!(b.recv_bytes().unwrap(), m);
    }
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

for_each_method!(
    co_13_poll_in_another_process_leaves_the_message,
    |ctx: mp::Context| {
        let (a, b) = Pipe::<String>::duplex().unwrap();
        let mut p = started(ctx.process(poll_then_return, (b.try_clone().unwrap(),)));
        a.send(&"intact".into()).unwrap();
        assert!(join(&mut p).unwrap());
        assert_eq!(b.recv().unwrap(), "intact");
    }
);

#[test]
fn co_15_large_messages_survive_eintr() {
    let _g = exclusive();
    use nix::sys::signal::Signal;
    interrupt_with(Signal::SIGUSR2);
    let (a, b) = Pipe::<Vec<u8>>::duplex().unwrap();
    let payload: Vec<u8> = (0..4u32 << 20).map(|i| (i % 241) as u8).collect();
    let expected = payload.clone();
    let receiver = std::thread::spawn(move || b.recv().unwrap());
    let me = nix::unistd::Pid::this();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let pest = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = nix::sys::signal::kill(me, Signal::SIGUSR2);
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    a.send(&payload).unwrap();
    let got = receiver.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pest.join().unwrap();
    assert_eq!(got, expected);
}

for_each_method!(
    co_18_accepted_connections_travel_to_children,
    |ctx: mp::Context| {
        for address in [
            "127.0.0.1:0".to_string(),
            format!("@mp-co18-{}-{}", std::process::id(), ctx.start_method()),
        ] {
            let l = mp::Listener::bind(address.as_str(), b"k").unwrap();
            let a = l.address().clone();
            let t = std::thread::spawn(move || {
                let c = mp::Client::connect::<String>(a, b"k").unwrap();
                c.recv_timeout(LONG).unwrap()
            });
            let accepted = l.accept_timeout::<String>(LONG).unwrap();
            let mut p = started(ctx.process(send_one, (accepted, "via child".into())));
            join(&mut p).unwrap();
            assert_eq!(t.join().unwrap(), "via child");
        }
    }
);

for_each_method!(co_19_both_simplex_ends_travel, |ctx: mp::Context| {
    let (r, w) = Pipe::<String>::simplex().unwrap();
    let mut reader = started(ctx.process(recv_one, (r,)));
    let mut writer = started(ctx.process(send_one, (w, "across".into())));
    join(&mut writer).unwrap();
    assert_eq!(join(&mut reader).unwrap(), "across");
});

for_each_method!(co_20_21_file_descriptors_travel, |ctx: mp::Context| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "mp-co20-{}-{}",
        std::process::id(),
        ctx.start_method()
    ));
    let file = std::fs::File::create(&path).unwrap();
    let mut p = started(ctx.process(
        write_through,
        (Handle::from(std::os::fd::OwnedFd::from(file)), "low".into()),
    ));
    join(&mut p).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "low");
    // CO-21: a descriptor numbered above 256.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let high = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(300)).unwrap();
    assert!(high >= 300);
    drop(file);
    // SAFETY: `high` was just returned by F_DUPFD_CLOEXEC and is owned by nothing else.
    let high = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
    let mut p = started(ctx.process(write_through, (Handle::from(high), "+high".into())));
    join(&mut p).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "low+high");
    std::fs::remove_file(&path).unwrap();
});

for_each_method!(
    messages_of_every_size_with_and_without_handles_keep_their_order,
    |ctx: mp::Context| {
        let (a, b) = Pipe::<Mixed>::duplex().unwrap();
        let mut p = started(ctx.process_builder().daemon(true).build(check_order, (b,)));
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::OwnedFd::from(file);
        for i in 0..600u32 {
            let handle = (i % 7 == 3).then(|| Handle::from(fd.try_clone().unwrap()));
            a.send(&(i, mixed_body(i), handle)).unwrap();
            if i % 3 == 0 {
                let (echo, body, handle) = a.recv_timeout(LONG).unwrap();
                assert_eq!((echo, body.len(), handle.is_none()), (i, 0, true));
            }
        }
        a.send(&(u32::MAX, Vec::new(), None)).unwrap();
        assert_eq!(join(&mut p).unwrap(), 600);
    }
);

for_each_method!(
    receives_that_time_out_while_messages_arrive_lose_none,
    |ctx: mp::Context| {
        let (r, w) = Pipe::<u32>::simplex().unwrap();
        let mut p = started(
            ctx.process_builder()
                .daemon(true)
                .build(send_paced, (w, 3000)),
        );
        let started_at = Instant::now();
        let (mut next, mut timeouts) = (0, 0u32);
        loop {
            match r.recv_timeout(Duration::from_micros(20)) {
                Ok(v) => {
                    assert_eq!(v, next, "a message was lost or overtaken");
                    next += 1;
                }
                Err(Error::Timeout) => timeouts += 1,
                Err(Error::Closed) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(started_at.elapsed() < LONG, "stuck at {next}");
        }
        assert_eq!(next, 3000, "after {timeouts} timeouts");
        join(&mut p).unwrap();
    }
);

for_each_method!(
    a_peer_killed_while_the_receiver_waits_is_end_of_stream,
    |ctx: mp::Context| {
        let (a, b) = Pipe::<Triple>::duplex().unwrap();
        let mut p = started(ctx.process_builder().daemon(true).build(echo_values, (b,)));
        for i in 0..200 {
            a.send(&(i, 0.5, Some(i))).unwrap();
            assert_eq!(a.recv_timeout(LONG).unwrap(), (i, 0.5, Some(i)));
        }
        p.kill().unwrap();
        assert!(matches!(a.recv_timeout(LONG), Err(Error::Closed)));
        let _ = join(&mut p);
    }
);

#[test]
fn a_short_buffer_or_a_low_limit_fails_the_same_whichever_way_a_message_came() {
    let _g = shared();
    let (a, mut b) = Pipe::<()>::duplex().unwrap();
    b.set_max_message_len(64);
    std::thread::scope(|s| {
        // Many round trips, so that the receiver spins (and the message goes through shared
        // memory) in most, on a machine with more than one CPU.
        s.spawn(|| {
            // Until the receiver closes its end.
            while let Ok(b"ok") = a.recv_bytes().as_deref() {
                a.send_bytes(&[9u8; 40]).unwrap();
                assert_eq!(a.recv_bytes().unwrap(), b"ok");
                a.send_bytes(&[7u8; 65]).unwrap();
            }
        });
        for _ in 0..300 {
            b.send_bytes(b"ok").unwrap();
            let mut short = [0u8; 10];
            match b.recv_bytes_into(&mut short) {
                Err(Error::BufferTooShort { capacity, message }) => {
                    assert_eq!((capacity, message), (10, vec![9u8; 40]))
                }
                other => panic!("{other:?}"),
            }
            b.send_bytes(b"ok").unwrap();
            match b.recv_bytes() {
                Err(Error::MessageTooLarge { len: 65, max: 64 }) => {}
                other => panic!("{other:?}"),
            }
            // A socket frame that was too long stays partly unread: the stream cannot go on.
            if b.poll(Some(Duration::ZERO)).unwrap() {
                break;
            }
        }
        b.close();
    });
}

#[test]
fn co_22_handle_message_without_descriptors_is_an_error() {
    let _g = shared();
    let (a, b) = Pipe::<Handle>::duplex().unwrap();
    // The bytes of a Handle (index 0) but no SCM_RIGHTS with them.
    a.send_bytes(&[0]).unwrap();
    let err = b.recv().unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    assert!(err.to_string().contains("out of range"), "{err}");
    // The connection still works.
    let file: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    a.send(&Handle::from(file)).unwrap();
    b.recv().unwrap();
}

#[test]
fn corrupt_and_oversized_frames_fail_only_that_connection() {
    let _g = shared();
    use std::io::Write;
    let (a, mut b) = Pipe::<u8>::duplex().unwrap();
    b.set_max_message_len(1024);
    let raw = a.try_clone().unwrap();
    let mut stream = std::os::unix::net::UnixStream::from(
        std::os::fd::AsFd::as_fd(&raw).try_clone_to_owned().unwrap(),
    );
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    header[12..].copy_from_slice(&0x4D50_0001u32.to_le_bytes());
    stream.write_all(&header).unwrap();
    assert!(matches!(b.recv(), Err(Error::MessageTooLarge { len, max: 1024 }) if len == 1 << 40));
    let (c, d) = Pipe::<u8>::duplex().unwrap();
    let mut s2 = std::os::unix::net::UnixStream::from(
        std::os::fd::AsFd::as_fd(&c).try_clone_to_owned().unwrap(),
    );
    s2.write_all(&[0x55; 16]).unwrap();
    assert!(matches!(d.recv(), Err(Error::Protocol { .. })));
    // Other connections are unaffected.
    let (e, f) = Pipe::<u8>::duplex().unwrap();
    e.send(&1).unwrap();
    assert_eq!(f.recv().unwrap(), 1);
}

for_each_method!(
    wa_01_04_wait_over_pipes_and_sentinels,
    |ctx: mp::Context| {
        let mut readers = Vec::new();
        let mut procs = Vec::new();
        for id in 0..4 {
            let (r, w) = Pipe::<u32>::simplex().unwrap();
            procs.push(started(ctx.process(send_n, (w, id, 10))));
            readers.push(Some(r));
        }
        let mut got = Vec::new();
        while readers.iter().any(Option::is_some) {
            let live: Vec<(usize, &Connection<u32>)> = readers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
                .collect();
            let objs: Vec<&dyn mp::connection::Waitable> = live
                .iter()
                .map(|(_, r)| *r as &dyn mp::connection::Waitable)
                .collect();
            let ready = mp::connection::wait(&objs, Some(LONG)).unwrap();
            assert!(!ready.is_empty());
            let mut finished = Vec::new();
            for k in ready {
                let (i, r) = live[k];
                match r.recv() {
                    Ok(v) => got.push(v),
                    Err(Error::Closed) => finished.push(i),
                    Err(e) => panic!("{e}"),
                }
            }
            for i in finished {
                readers[i] = None;
            }
        }
        got.sort();
        let expected: Vec<u32> = (0..4)
            .flat_map(|id| (0..10).map(move |i| id * 1000 + i))
            .collect();
        assert_eq!(got, expected, "all 40 messages arrive");
        for p in &mut procs {
            join(p).unwrap();
        }
        // WA-04: sentinels mixed with connections; an exited process is ready.
        let (a, b) = Pipe::<String>::duplex().unwrap();
        let mut p = started(ctx.process(send_one, (b, "x".into())));
        let s = p.sentinel().unwrap();
        let mut seen_exit = false;
        let mut seen_msg = false;
        while !(seen_exit && seen_msg) {
            let ready = mp::connection::wait(&[&a, &s], Some(LONG)).unwrap();
            assert!(!ready.is_empty());
            if ready.contains(&0) && !seen_msg {
                assert_eq!(a.recv().unwrap(), "x");
                seen_msg = true;
            }
            if ready.contains(&1) {
                seen_exit = true;
            }
        }
        join(&mut p).unwrap();
    }
);

#[test]
fn wa_03_05_wait_timeouts() {
    let _g = shared();
    let (a, b) = Pipe::<u8>::duplex().unwrap();
    let (c, d) = Pipe::<u8>::duplex().unwrap();
    let timeout = Duration::from_millis(100);
    let t = Instant::now();
    assert!(
        mp::connection::wait(&[&b, &d], Some(timeout))
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= timeout);
    assert!(
        mp::connection::wait(&[&b], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
    c.send(&1).unwrap();
    assert_eq!(
        mp::connection::wait(&[&b, &d], Some(LONG)).unwrap(),
        vec![1]
    );
    a.send(&1).unwrap();
    assert_eq!(
        mp::connection::wait(&[&b, &d], Some(LONG)).unwrap(),
        vec![0, 1]
    );
}

#[test]
fn recv_timeout_does_not_hang_on_a_peer_that_stops_mid_message() {
    let _g = shared();
    let (a, b) = Pipe::<u64>::duplex().unwrap();
    // Nothing sent: a plain timeout.
    let t = Instant::now();
    assert!(matches!(
        b.recv_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    // Half a frame header, then silence (the peer stays connected).
    nix::unistd::write(std::os::fd::AsFd::as_fd(&a), &[1u8; 8]).unwrap();
    assert!(matches!(
        b.recv_timeout(Duration::from_millis(100)),
        Err(Error::Protocol { .. })
    ));
    drop(a);
}

#[test]
fn recv_timeout_completes_a_long_message_that_keeps_arriving() {
    let _g = shared();
    let (a, b) = Pipe::<Vec<u8>>::duplex().unwrap();
    let payload: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let sender = std::thread::spawn(move || a.send(&payload).unwrap());
    // Far shorter than the transfer, but every piece arrives in time.
    let got = b
        .recv_timeout(Duration::from_millis(20))
        .unwrap_or_else(|e| {
            // The first byte may take longer than 20 ms on a loaded machine; then wait for it.
            assert!(matches!(e, Error::Timeout), "{e}");
            b.recv_timeout(LONG).unwrap()
        });
    sender.join().unwrap();
    assert_eq!(got, expected);
}

#[test]
fn wait_reports_a_closed_connection_instead_of_failing() {
    let _g = shared();
    let (mut a, b) = Pipe::<u8>::duplex().unwrap();
    a.close();
    assert_eq!(
        mp::connection::wait(&[&a], Some(Duration::ZERO)).unwrap(),
        vec![0]
    );
    assert!(matches!(a.recv(), Err(Error::InvalidState { .. })));
    // The peer sees the end of the stream.
    assert!(matches!(b.recv_timeout(LONG), Err(Error::Closed)));
}
