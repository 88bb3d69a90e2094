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
