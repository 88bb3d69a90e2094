//! Listener, Client and authentication, ported from CPython's `_TestListener`,
//! `_TestListenerClient` and `OtherTest` (rows LC- of the behaviour catalogue). LC-10 and LC-11
//! (bogus digest, bogus welcome) are unit tests of the handshake in
//! `mp-runtime/src/transport/auth.rs`, which can forge the peer's messages; LC-12 (md5 and
//! legacy digests) does not apply: mp speaks only HMAC-SHA256, in both directions.
//!
//! What changed in the port: AF_PIPE is Windows-only; wrong address families (LC-09) are parse
//! errors of `Address`.

mod common;

use std::time::Duration;

use common::*;
use mp::{Address, Client, Error, Listener, StartMethod};

const KEY: &[u8] = b"listener test key";

#[mp::worker]
fn client_says_hello(address: String, key: Vec<u8>) {
    let c = Client::connect::<String>(address.as_str(), key).unwrap();
    c.send(&"hello".to_string()).unwrap();
}

fn addresses() -> Vec<String> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    vec![
        "127.0.0.1:0".to_string(),
        format!(
            "{}/mp-test-{pid}-{}.sock",
            dir.display(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ),
        format!("@mp-test-{pid}-listener"),
    ]
}

fn spelled(a: &Address) -> String {
    a.to_string()
}

for_each_method!(lc_01_listener_client_every_family, |ctx: mp::Context| {
    for address in addresses() {
        let address = address.replace("listener", ctx.start_method().as_str());
        let l = Listener::bind(address.as_str(), KEY).unwrap();
        let mut p = started(ctx.process(client_says_hello, (spelled(l.address()), KEY.to_vec())));
        let conn = l.accept_timeout::<String>(LONG).unwrap();
        assert_eq!(conn.recv_timeout(LONG).unwrap(), "hello");
        join(&mut p).unwrap();
    }
});

#[test]
fn lc_02_second_bind_on_the_same_address_fails() {
    let _g = shared();
    for address in addresses() {
        let l = Listener::bind(address.as_str(), KEY).unwrap();
        let err = Listener::bind(l.address(), KEY).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse),
            "{address}: {err}"
        );
    }
}

#[test]
fn lc_03_unix_socket_file_removed_with_the_listener() {
    let _g = shared();
    let address = addresses().remove(1);
    let l = Listener::bind(address.as_str(), KEY).unwrap();
    assert!(std::path::Path::new(&address).exists());
    drop(l);
    assert!(!std::path::Path::new(&address).exists());
    assert!(Client::connect::<u8>(address.as_str(), KEY).is_err());
}

#[test]
fn lc_04_empty_authkey_is_allowed() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", b"").unwrap();
    let a = l.address().clone();
    let t = std::thread::spawn(move || Client::connect::<u8>(a, b"").and_then(|c| c.send(&7)));
    assert_eq!(
        l.accept_timeout::<u8>(LONG)
            .unwrap()
            .recv_timeout(LONG)
            .unwrap(),
        7
    );
    t.join().unwrap().unwrap();
}

for_each_method!(lc_05_abstract_socket, |ctx: mp::Context| {
    let name = format!("@mp-lc05-{}-{}", std::process::id(), ctx.start_method());
    let l = Listener::bind(name.as_str(), KEY).unwrap();
    assert!(matches!(l.address(), Address::Abstract(_)));
    let mut p = started(ctx.process(client_says_hello, (name.clone(), KEY.to_vec())));
    assert_eq!(
        l.accept_timeout::<String>(LONG)
            .unwrap()
            .recv_timeout(LONG)
            .unwrap(),
        "hello"
    );
    join(&mut p).unwrap();
});

#[test]
fn lc_06_message_sent_before_accept_is_delivered() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let mut p = started(
        mp::get_context(StartMethod::Spawn)
            .process(client_says_hello, (spelled(l.address()), KEY.to_vec())),
    );
    // The client may have sent and exited already; its message waits for us.
    let conn = l.accept_timeout::<String>(LONG).unwrap();
    join(&mut p).unwrap();
    assert_eq!(conn.recv_timeout(LONG).unwrap(), "hello");
    assert!(matches!(conn.recv_timeout(LONG), Err(Error::Closed)));
}

#[test]
fn lc_08_accept_survives_eintr() {
    let _g = shared();
    use nix::sys::signal::Signal;
    interrupt_with(Signal::SIGUSR1);
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let a = l.address().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let accepter = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send((unsafe { libc::pthread_self() }, thread_id()))
            .unwrap();
        let conn = l.accept::<String>().unwrap();
        conn.recv_timeout(LONG).unwrap()
    });
    let (thread, tid) = rx.recv().unwrap();
    // Interrupt the blocked accept a number of times before a client arrives, each time once
    // it is asleep again.
    for _ in 0..20 {
        assert!(eventually(LONG, || asleep(tid)), "accept did not block");
        // SAFETY: `thread` is alive until it is joined below (it waits for our client).
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
    }
    let c = Client::connect::<String>(a, KEY).unwrap();
    c.send(&"after signals".to_string()).unwrap();
    assert_eq!(accepter.join().unwrap(), "after signals");
}

#[test]
fn lc_07_poll_sees_data_sent_after_accept() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let a = l.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect::<u8>(a, KEY).unwrap();
        assert!(c.poll(Some(LONG)).unwrap());
        c.recv_bytes().unwrap()
    });
    let server_side = l.accept_timeout::<u8>(LONG).unwrap();
    server_side.send_bytes(b"x").unwrap();
    assert_eq!(t.join().unwrap(), b"x");
}

#[test]
fn lc_09_bad_addresses_are_errors() {
    let _g = shared();
    for bad in ["no-port-here", "256.1.1.1:80", ""] {
        let err = Listener::bind(bad, KEY).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{bad}: {err}");
    }
}

#[test]
fn wrong_key_fails_both_sides_and_listener_keeps_accepting() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    for _ in 0..3 {
        let a = l.address().clone();
        let t = std::thread::spawn(move || Client::connect::<u8>(a, b"wrong").map(|_| ()));
        assert!(matches!(
            l.accept_timeout::<u8>(LONG),
            Err(Error::Authentication { .. })
        ));
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::Authentication { .. })
        ));
    }
    let a = l.address().clone();
    let t = std::thread::spawn(move || Client::connect::<u8>(a, KEY).and_then(|c| c.send(&1)));
    assert_eq!(
        l.accept_timeout::<u8>(LONG)
            .unwrap()
            .recv_timeout(LONG)
            .unwrap(),
        1
    );
    t.join().unwrap().unwrap();
}

#[test]
fn a_peer_that_is_not_mp_is_refused() {
    let _g = shared();
    use std::io::Write;
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let Address::Tcp(a) = l.address().clone() else {
        unreachable!()
    };
    let t = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    });
    assert!(matches!(
        l.accept_timeout::<u8>(LONG),
        Err(Error::Authentication { .. })
    ));
    t.join().unwrap();
}

#[test]
fn handles_cannot_travel_over_tcp() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let a = l.address().clone();
    let t = std::thread::spawn(move || Client::connect::<mp::Handle>(a, KEY));
    let _server = l.accept_timeout::<mp::Handle>(LONG).unwrap();
    let client = t.join().unwrap().unwrap();
    let file: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let err = client.send(&mp::Handle::from(file)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn accept_timeout_without_a_client() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let t = std::time::Instant::now();
    let timeout = Duration::from_millis(200);
    assert!(matches!(
        l.accept_timeout::<u8>(timeout),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= timeout);
}

#[test]
fn a_silent_peer_cannot_block_the_listener() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let addr = match l.address() {
        Address::Tcp(a) => *a,
        other => panic!("expected a TCP address, got {other}"),
    };
    // Connects, then never answers the challenge.
    let silent = std::net::TcpStream::connect(addr).unwrap();
    assert!(matches!(
        l.accept_timeout::<String>(Duration::from_millis(300)),
        Err(Error::Timeout)
    ));
    drop(silent);
    let a = l.address().clone();
    let client = std::thread::spawn(move || {
        let c = Client::connect::<String>(a, KEY).unwrap();
        c.send(&"next".to_string()).unwrap();
    });
    let conn = l.accept_timeout::<String>(LONG).unwrap();
    assert_eq!(conn.recv_timeout(LONG).unwrap(), "next");
    client.join().unwrap();
}

/// Two threads wait in `accept_timeout` for one client: the one that finds the client taken
/// after its poll said "ready" must return `Timeout` at its deadline, not block in accept(2).
/// Several rounds, since both must be past their poll when the client arrives.
#[test]
fn accept_timeout_keeps_its_deadline_when_another_thread_takes_the_client() {
    let _g = shared();
    let l = std::sync::Arc::new(Listener::bind("127.0.0.1:0", KEY).unwrap());
    for round in 0..20u8 {
        let (tx, rx) = std::sync::mpsc::channel();
        let accepters: Vec<_> = (0..2)
            .map(|_| {
                let (l, tx) = (l.clone(), tx.clone());
                std::thread::spawn(move || {
                    let r = l.accept_timeout::<u8>(Duration::from_millis(100));
                    let _ = tx.send(r.map(|c| c.recv_timeout(LONG)));
                })
            })
            .collect();
        let c = Client::connect::<u8>(l.address().clone(), KEY).unwrap();
        c.send(&round).unwrap();
        let results: Vec<_> = (0..2)
            .map(|_| {
                rx.recv_timeout(LONG)
                    .expect("an accept_timeout overran its deadline")
            })
            .collect();
        let received: Vec<u8> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| *r.as_ref().unwrap())
            .collect();
        assert_eq!(received, [round]);
        assert!(results.iter().any(|r| matches!(r, Err(Error::Timeout))));
        for a in accepters {
            a.join().unwrap();
        }
    }
}

fn tcp_address(l: &Listener) -> std::net::SocketAddr {
    match l.address() {
        Address::Tcp(a) => *a,
        other => panic!("expected a TCP address, got {other}"),
    }
}

/// Connects to `addr`, reads the challenge, then sends the 48 bytes of an answer one every
/// `pace` until the listener hangs up or `stop` says so. Returns how long after the challenge
/// the listener hung up, if it did.
fn drip(
    addr: std::net::SocketAddr,
    pace: Duration,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<Option<Duration>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut challenge = [0u8; 16 + 19 + 32];
        s.read_exact(&mut challenge).unwrap();
        let begun = std::time::Instant::now();
        let mut answer = Vec::new();
        answer.extend_from_slice(&32u64.to_le_bytes());
        answer.extend_from_slice(&0u32.to_le_bytes());
        answer.extend_from_slice(&0x4D50_0001u32.to_le_bytes());
        answer.extend_from_slice(&[0u8; 32]);
        s.set_read_timeout(Some(pace)).unwrap();
        for byte in answer {
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(0) | Err(_) if stop.try_recv().is_ok() => return None,
                Ok(0) => return Some(begun.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Some(begun.elapsed()),
                Ok(_) => panic!("the listener sent more than its challenge"),
            }
            if s.write_all(&[byte]).is_err() {
                return Some(begun.elapsed());
            }
        }
        None
    })
}

/// A peer that connects first and never says a word does not hold up a client that connects
/// after it: `accept` returns that client at once (the slowloris reproduction, `silent`).
#[test]
fn a_silent_peer_does_not_delay_a_client_that_authenticates() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let silent = std::net::TcpStream::connect(tcp_address(&l)).unwrap();
    let a = l.address().clone();
    let client = std::thread::spawn(move || {
        Client::connect::<String>(a, KEY).and_then(|c| c.send(&"through".to_string()))
    });
    // The old accept spent up to its whole timeout on the silent peer.
    let conn = l
        .accept_timeout::<String>(Duration::from_secs(10))
        .expect("the client that authenticates is accepted");
    assert_eq!(conn.recv_timeout(LONG).unwrap(), "through");
    client.join().unwrap().unwrap();
    drop(silent);
}

/// `accept_timeout`'s timeout is a deadline for the whole call, even while a peer keeps the
/// handshake alive with a byte now and then (the slowloris reproduction, `drip`).
#[test]
fn accept_timeout_keeps_its_deadline_against_a_dripping_peer() {
    let _g = shared();
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel();
    let dripper = drip(tcp_address(&l), Duration::from_millis(200), stopped);
    let t = std::time::Instant::now();
    let r = l.accept_timeout::<u8>(Duration::from_millis(500));
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{:?}", r.map(|_| ()));
    // The dripper would take 48 x 200 ms to finish; the old accept waited for it.
    assert!(
        took < Duration::from_secs(4),
        "accept_timeout(500 ms) took {took:?}"
    );
    stop.send(()).unwrap();
    drop(l);
    dripper.join().unwrap();
}

/// A peer gets the handshake timeout in all, not per read: one that sends a byte every 50 ms
/// is disconnected when its 300 ms are up, while `accept` goes on waiting for others.
#[test]
fn a_dripping_peer_is_cut_off_at_its_handshake_deadline() {
    let _g = shared();
    let mut l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    l.set_handshake_timeout(Duration::from_millis(300));
    let (_stop, stopped) = std::sync::mpsc::channel();
    let dripper = drip(tcp_address(&l), Duration::from_millis(50), stopped);
    let a = l.address().clone();
    // A second thread keeps `accept` busy until the dripper is gone, then connects for real.
    let r = std::thread::scope(|s| {
        let accepted = s.spawn(|| l.accept_timeout::<u8>(LONG));
        let cut_after = dripper.join().unwrap();
        let c = Client::connect::<u8>(a, KEY).unwrap();
        c.send(&5).unwrap();
        (cut_after, accepted.join().unwrap())
    });
    let cut_after = r.0.expect("the dripping peer was disconnected");
    // Sending all 48 bytes would take 2.4 s.
    assert!(
        cut_after < Duration::from_secs(2),
        "cut after {cut_after:?}"
    );
    assert_eq!(r.1.unwrap().recv_timeout(LONG).unwrap(), 5);
}

/// More silent peers than the listener keeps handshakes for: the oldest are disconnected, and a
/// client that authenticates is still accepted.
#[test]
fn a_flood_of_silent_peers_does_not_lock_out_a_client() {
    let _g = shared();
    use std::io::Read;
    let l = Listener::bind("127.0.0.1:0", KEY).unwrap();
    let silent: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(tcp_address(&l)).unwrap())
        .collect();
    let a = l.address().clone();
    let client = std::thread::spawn(move || {
        Client::connect::<String>(a, KEY).and_then(|c| c.send(&"made it".to_string()))
    });
    let conn = l
        .accept_timeout::<String>(Duration::from_secs(10))
        .expect("the client that authenticates is accepted");
    assert_eq!(conn.recv_timeout(LONG).unwrap(), "made it");
    client.join().unwrap().unwrap();
    // The first peer got its challenge and was then dropped to make room.
    let mut first = &silent[0];
    first.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(first.read_to_end(&mut buf), Ok(67)), "{buf:?}");
}
