//! Managers: the server, sessions, references, passing proxies between processes, remote
//! managers over TCP, and what bad input and dead peers do. CPython's `_TestRemoteManager`
//! (MG-14, MG-15), `_TestManagerRestart` (MG-16) and `ManagerMixin.tearDownClass` (MG-18) are
//! ported here, with the faults CPython does not test (a SIGKILLed client or server, proxies
//! in flight, hostile bytes). Built-in containers and synchronization objects are in
//! `manager_builtins.rs`, `#[mp::managed]` types in `manager_custom.rs`.
//!
//! What changed in the port: Python's `test_remote` registers a `queue.Queue` under a name; here
//! the server publishes a dict with `expose` and the client finds it with `lookup`, typed. The
//! value round trip covers the same kinds (str, None, bool, float, unicode, bytes) as a tuple.

mod common;

use std::io::{Read, Write};

use common::*;
use mp::manager::{DictProxy, Proxy};
use mp::{Error, Manager, Pipe, StartMethod};

type Dict = DictProxy<String, u64>;

#[mp::worker]
fn set_in(d: Dict, key: String, value: u64) {
    d.set(&key, &value).unwrap();
}

#[mp::worker]
fn hand_to_grandchild(d: Dict, method: StartMethod) {
    let mut p = mp::get_context(method).process(set_in, (d, "grandchild".into(), 3));
    p.start().unwrap();
    p.join().unwrap();
}

/// Creates `n` dicts in the manager, keeps them, says so, and waits to be killed.
#[mp::worker]
fn hold_dicts(m: Manager, n: u32, ready: mp::Connection<u32>) {
    let held: Vec<Dict> = (0..n).map(|_| m.dict().unwrap()).collect();
    ready.send(&(held.len() as u32)).unwrap();
    let _ = ready.recv();
    drop(held);
}

/// Makes a dict in the manager and returns its proxy: the child's session ends with it, the
/// proxy in flight keeps the object.
#[mp::worker]
fn make_dict(m: Manager) -> Dict {
    let d: Dict = m.dict().unwrap();
    d.set(&"made".into(), &1).unwrap();
    d
}

#[mp::worker]
fn remote_client(
    address: String,
    key: Vec<u8>,
) -> (String, Option<u64>, bool, f64, String, Vec<u8>) {
    let m = Manager::connect(address.as_str(), &key).unwrap();
    let d: DictProxy<String, (String, Option<u64>, bool, f64, String, Vec<u8>)> =
        m.lookup("shared").unwrap();
    let value = (
        "str".to_string(),
        None,
        true,
        2.5,
        "ünïcödé ✓".to_string(),
        vec![0u8, 255, 10],
    );
    d.set(&"from client".into(), &value).unwrap();
    d.get(&"from server".into()).unwrap().unwrap()
}

#[mp::worker]
fn bump(v: u64) -> u64 {
    v + 1
}

#[mp::worker]
fn explode(_v: u64) -> u64 {
    panic!("boom in the server")
}

fn objects(m: &Manager) -> usize {
    m.number_of_objects().unwrap()
}

#[test]
fn dict_round_trip_and_mg_18_no_objects_left() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    d.set(&"a".into(), &1).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
    assert_eq!(objects(&m), 1);
    let copy = d.clone();
    drop(d);
    // A clone is the same reference: the object stays.
    assert_eq!(copy.get(&"a".into()).unwrap(), Some(1));
    drop(copy);
    assert!(settles_at(&m, 0));
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

for_each_method!(
    mg_13_server_under_every_method_exits_0,
    |ctx: mp::Context| {
        let m = Manager::builder().context(ctx).start().unwrap();
        let d: Dict = m.dict().unwrap();
        d.set(&"x".into(), &7).unwrap();
        assert_eq!(d.get(&"x".into()).unwrap(), Some(7));
        m.shutdown().unwrap();
        assert_eq!(m.exitcode(), Some(0));
        // A second shutdown is fine; calls after it say so.
        m.shutdown().unwrap();
        assert!(matches!(
            d.get(&"x".into()),
            Err(Error::ManagerShutdown) | Err(Error::ManagerGone { .. })
        ));
    }
);

for_each_method!(proxy_used_by_child_is_seen_by_parent, |ctx: mp::Context| {
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    let mut p = started(ctx.process(set_in, (d.clone(), "child".into(), 2)));
    join(&mut p).unwrap();
    assert_eq!(d.get(&"child".into()).unwrap(), Some(2));
});

for_each_method!(proxy_passed_parent_child_grandchild, |ctx: mp::Context| {
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    let mut p = started(ctx.process(hand_to_grandchild, (d.clone(), ctx.start_method())));
    join(&mut p).unwrap();
    assert_eq!(d.get(&"grandchild".into()).unwrap(), Some(3));
    drop(d);
    assert!(settles_at(&m, 0));
});

/// gh-119937: the sender drops its proxy before the receiver has it; the transfer keeps the
/// object alive until the receiver claims it.
#[test]
fn proxy_dropped_by_sender_before_the_child_claims_it() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    let probe = d.clone();
    let mut p = mp::Process::new(set_in, (d, "late".into(), 4));
    // The arguments (and the proxy's ticket) were encoded by `new`; drop every proxy before the
    // child even exists, except a probe to read the result.
    p.start().unwrap();
    join(&mut p).unwrap();
    assert_eq!(probe.get(&"late".into()).unwrap(), Some(4));
}

/// A child that made an object and returned its proxy has exited (its session is gone) by the
/// time the parent claims the proxy: the ticket kept the object.
#[test]
fn proxy_returned_by_an_exited_child() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let mut p = started(mp::Process::new(make_dict, (m.clone(),)));
    let d = join(&mut p).unwrap();
    assert_eq!(d.get(&"made".into()).unwrap(), Some(1));
    drop(d);
    assert!(settles_at(&m, 0));
}

/// A client SIGKILLed while holding 1,000 proxies: its session ends and every object goes.
#[test]
fn killed_client_releases_every_reference() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let (ours, theirs) = Pipe::<u32>::duplex().unwrap();
    let mut p = started(mp::Process::new(hold_dicts, (m.clone(), 1000, theirs)));
    assert_eq!(ours.recv_timeout(LONG).unwrap(), 1000);
    assert_eq!(objects(&m), 1000);
    p.kill().unwrap();
    assert!(join(&mut p).is_err());
    assert!(settles_at(&m, 0), "{} objects left", objects(&m));
}

/// Nested proxies two levels deep: changes through the inner proxies reach the objects the
/// outer ones hold, and dropping the outer object releases the inner ones (gh-103136).
#[test]
fn mg_05_nested_proxies_two_levels_deep() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let outer: DictProxy<String, DictProxy<String, Dict>> = m.dict().unwrap();
    let middle: DictProxy<String, Dict> = m.dict().unwrap();
    let inner: Dict = m.dict().unwrap();
    middle.set(&"inner".into(), &inner).unwrap();
    outer.set(&"middle".into(), &middle).unwrap();
    drop((inner, middle));
    // The server keeps all three through the values that refer to them.
    assert_eq!(objects(&m), 3);
    let inner = outer
        .get(&"middle".into())
        .unwrap()
        .unwrap()
        .get(&"inner".into())
        .unwrap()
        .unwrap();
    inner.set(&"blankets".into(), &5).unwrap();
    let again = outer
        .get(&"middle".into())
        .unwrap()
        .unwrap()
        .get(&"inner".into())
        .unwrap()
        .unwrap();
    assert_eq!(again.get(&"blankets".into()).unwrap(), Some(5));
    drop((inner, again));
    // Clearing the outer dict drops the middle one, which drops the inner one.
    outer.clear().unwrap();
    assert!(settles_at(&m, 1));
    drop(outer);
    assert!(settles_at(&m, 0));
}

/// gh-101320: a `Fork` child uses a proxy it inherited in memory; it opens a connection of its
/// own, so the parent's calls on its connection, at the same time, are not garbled.
#[test]
fn fork_child_uses_its_own_connection() {
    static INHERITED: std::sync::OnceLock<Dict> = std::sync::OnceLock::new();
    #[mp::worker]
    fn use_inherited(n: u64) {
        let d = INHERITED.get().unwrap();
        for i in 0..n {
            d.set(&format!("child {i}"), &i).unwrap();
            assert_eq!(d.get(&format!("child {i}")).unwrap(), Some(i));
        }
    }
    let _g = exclusive();
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    d.set(&"parent".into(), &0).unwrap();
    let _ = INHERITED.set(d.clone());
    let mut p = started(mp::get_context(StartMethod::Fork).process(use_inherited, (200,)));
    for i in 0..200 {
        d.set(&format!("parent {i}"), &i).unwrap();
        assert_eq!(d.get(&format!("parent {i}")).unwrap(), Some(i));
    }
    join(&mut p).unwrap();
    assert_eq!(d.len().unwrap(), 401);
}

/// A manager killed while proxies are in use: calls fail with `ManagerGone` at once, from then on,
/// in every thread; none hangs.
#[test]
fn killed_manager_fails_every_call_with_manager_gone() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    let busy = d.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut i = 0u64;
        loop {
            if let Err(e) = busy.set(&"k".into(), &i) {
                let _ = tx.send(e);
                return;
            }
            i += 1;
        }
    });
    let pid = m.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let err = rx
        .recv_timeout(LONG)
        .expect("the busy thread's call did not fail");
    assert!(matches!(err, Error::ManagerGone { .. }), "{err}");
    t.join().unwrap();
    for _ in 0..3 {
        let err = d.get(&"k".into()).unwrap_err();
        assert!(matches!(err, Error::ManagerGone { .. }), "{err}");
        assert!(err.to_string().contains("is gone"), "{err}");
    }
    assert!(matches!(
        m.number_of_objects(),
        Err(Error::ManagerGone { .. })
    ));
}

/// A queue item over the size a queue copies out before decoding (256 bytes) that carries a
/// proxy: the consumer that takes it reaches the manager only after it released the queue, so
/// a stopped manager stalls that consumer alone and the others take the next items.
#[test]
fn a_consumer_waiting_on_a_stopped_manager_holds_up_no_other_consumer() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    d.set(&"k".into(), &7).unwrap();
    let q: mp::Queue<(Option<Dict>, String)> = mp::Queue::new().unwrap();
    let pad = "x".repeat(1000);
    q.put((Some(d.clone()), pad.clone())).unwrap();
    q.put((None, pad.clone())).unwrap();
    let manager = nix::unistd::Pid::from_raw(m.pid().unwrap());
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    nix::sys::signal::kill(manager, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let resume = Resume(manager);
    let first = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(LONG))
    };
    assert!(
        eventually(LONG, || q.qsize() == 1),
        "the consumer of the proxy did not take it off the queue"
    );
    let (none, text) = q.get_timeout(LONG).expect("the second item was held up");
    assert!(none.is_none() && text == pad);
    drop(resume);
    let (proxy, text) = first.join().unwrap().expect("the proxy was not received");
    assert_eq!(text, pad);
    assert_eq!(proxy.unwrap().get(&"k".into()).unwrap(), Some(7));
}

/// MG-14: a manager served on TCP port 0 with a 32-byte random key, used by a process that only
/// knows its address and key; every kind of value round-trips.
#[test]
fn mg_14_remote_manager_over_tcp() {
    let _g = shared();
    let mut key = vec![0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let m = Manager::serve("127.0.0.1:0", &key).unwrap();
    let address = m.address().to_string();
    assert!(
        !address.ends_with(":0"),
        "the real port is readable: {address}"
    );
    type Values = (String, Option<u64>, bool, f64, String, Vec<u8>);
    let d: DictProxy<String, Values> = m.dict().unwrap();
    let from_server: Values = ("s".into(), Some(1), false, -0.5, "ß".into(), vec![1, 2]);
    d.set(&"from server".into(), &from_server).unwrap();
    m.expose("shared", &d).unwrap();
    let mut p =
        started(mp::get_context(StartMethod::Spawn).process(remote_client, (address, key.clone())));
    assert_eq!(join(&mut p).unwrap(), from_server);
    let got = d.get(&"from client".into()).unwrap().unwrap();
    assert_eq!(got.0, "str");
    assert_eq!(got.1, None);
    assert!(got.2);
    assert_eq!(got.3, 2.5);
    assert_eq!(got.4, "ünïcödé ✓");
    assert_eq!(got.5, vec![0, 255, 10]);
}

/// MG-14's counterpart: a wrong key is refused on connect, and a name of another type is an error.
#[test]
fn remote_wrong_key_and_wrong_type_are_errors() {
    let _g = shared();
    let m = Manager::serve("127.0.0.1:0", b"right key").unwrap();
    let d: Dict = m.dict().unwrap();
    m.expose("d", &d).unwrap();
    let err = Manager::connect(m.address(), b"wrong key").unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err}");
    let client = Manager::connect(m.address(), b"right key").unwrap();
    let err = client.lookup::<DictProxy<u8, u8>>("d").unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    let err = client.lookup::<Dict>("nothing here").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let found: Dict = client.lookup("d").unwrap();
    found.set(&"ok".into(), &1).unwrap();
    assert_eq!(d.get(&"ok".into()).unwrap(), Some(1));
}

/// MG-15: a value that cannot be sent is an error in the caller, and the connection goes on.
#[test]
fn mg_15_unsendable_value_is_an_error_in_the_caller() {
    struct Refuses;
    impl serde::Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to be sent"))
        }
    }
    impl<'de> serde::Deserialize<'de> for Refuses {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Refuses)
        }
    }
    let _g = shared();
    let m = Manager::serve("127.0.0.1:0", b"k").unwrap();
    let d: DictProxy<String, Refuses> = m.dict().unwrap();
    let err = d.set(&"x".into(), &Refuses).unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    assert!(
        err.to_string().contains("Refuses"),
        "the type is named: {err}"
    );
    // A handle cannot reach a manager over TCP.
    let q: DictProxy<String, mp::Queue<u8>> = m.dict().unwrap();
    let err = q.set(&"q".into(), &mp::Queue::new().unwrap()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert_eq!(d.len().unwrap(), 0);
}

/// MG-16: a manager on a fixed address is shut down and another started there at once.
#[test]
fn mg_16_rapid_restart_on_the_same_address() {
    let _g = shared();
    let first = Manager::serve("127.0.0.1:0", b"k").unwrap();
    let address = first.address().clone();
    first.shutdown().unwrap();
    let second = Manager::serve(address.clone(), b"k").unwrap();
    assert_eq!(second.address(), &address);
    let d: Dict = second.dict().unwrap();
    d.set(&"again".into(), &1).unwrap();
}

#[test]
fn empty_key_on_a_public_address_is_refused() {
    let err = Manager::serve("0.0.0.0:0", b"").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

/// A connection that cannot be made is the OS's error, naming the address (not `ManagerGone`,
/// which says a manager that was there is gone). `&String` is an address too.
#[test]
fn nothing_listening_is_an_io_error_naming_the_address() {
    let err = Manager::connect("@mp-test-no-manager-here", b"k").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("@mp-test-no-manager-here"),
        "{err}"
    );
    let tcp = String::from("127.0.0.1:1");
    let err = Manager::connect(&tcp, b"k").unwrap_err();
    match &err {
        Error::Io { source, .. } => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{err}"
            )
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

/// `modify` runs a registered function in the server; a panic there comes back as an error
/// naming the function, and the server keeps serving.
#[test]
fn modify_in_the_server_and_a_panic_there() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let d: Dict = m.dict().unwrap();
    d.set(&"n".into(), &1).unwrap();
    assert_eq!(d.modify(&"n".into(), bump).unwrap(), Some(2));
    assert_eq!(d.modify(&"absent".into(), bump).unwrap(), None);
    let err = d.modify(&"n".into(), explode).unwrap_err();
    match &err {
        Error::RemotePanic {
            method, message, ..
        } => {
            assert!(method.ends_with("explode"), "{err}");
            assert!(message.contains("boom"), "{err}");
        }
        other => panic!("expected RemotePanic, got {other}"),
    }
    assert_eq!(d.get(&"n".into()).unwrap(), Some(2));
}

/// Hostile bytes on an authenticated connection: junk, an oversized length, a truncated request,
/// an unknown object, method or type. Each ends or fails that connection only; the server and
/// another client go on.
#[test]
fn bad_input_affects_only_its_connection() {
    let _g = shared();
    let key = b"hostile test key".to_vec();
    let m = Manager::serve("127.0.0.1:0", &key).unwrap();
    let d: Dict = m.dict().unwrap();
    d.set(&"still".into(), &1).unwrap();
    let address = m.address().to_string();
    let raw = |bytes: &[u8]| {
        let conn = mp::Client::connect::<()>(address.as_str(), &key).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&conn)
            .try_clone_to_owned()
            .unwrap();
        let mut s = std::net::TcpStream::from(fd);
        s.set_read_timeout(Some(LONG)).unwrap();
        s.write_all(bytes).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        // The server answers or closes; it never hangs.
        let _ = s.read_to_end(&mut rest);
    };
    // Junk instead of a frame.
    raw(b"this is not a frame at all, just bytes");
    // A frame announcing 1 TiB.
    let mut huge = Vec::new();
    huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
    huge.extend_from_slice(&0u32.to_le_bytes());
    huge.extend_from_slice(&0x4D50_0001u32.to_le_bytes());
    raw(&huge);
    // A frame cut short.
    let mut cut = Vec::new();
    cut.extend_from_slice(&100u64.to_le_bytes());
    cut.extend_from_slice(&0u32.to_le_bytes());
    cut.extend_from_slice(&0x4D50_0001u32.to_le_bytes());
    cut.extend_from_slice(b"only a few");
    raw(&cut);
    // Unknown object and method ids, through the hidden call API.
    let r = d.obj_ref();
    let err = r.call::<_, ()>(60_000, &()).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    let err = m
        .create::<Dict, _>("no::such::Type", 0, 0, &())
        .unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    // A silent TCP peer (connected, never authenticating) holds up nobody.
    let _silent = std::net::TcpStream::connect(m.address().to_string()).unwrap();
    let other = Manager::connect(address.as_str(), &key).unwrap();
    let found: Dict = {
        m.expose("d", &d).unwrap();
        other.lookup("d").unwrap()
    };
    assert_eq!(found.get(&"still".into()).unwrap(), Some(1));
    assert_eq!(d.get(&"still".into()).unwrap(), Some(1));
}

#[mp::worker]
fn tcp_queue_client(address: String, key: Vec<u8>) -> Vec<String> {
    let m = Manager::connect(address.as_str(), &key).unwrap();
    let q: mp::manager::QueueProxy<String> = m.lookup("q").unwrap();
    q.put("from tcp".into()).unwrap();
    (0..2).map(|_| q.get_timeout(LONG).unwrap()).collect()
}

/// A local client (on the native queue) and a TCP client (through the server) share one
/// managed queue, both ways.
#[test]
fn local_and_tcp_clients_share_one_queue() {
    let _g = shared();
    let key = b"queue key".to_vec();
    let m = Manager::serve("127.0.0.1:0", &key).unwrap();
    let q = m.queue::<String>().unwrap();
    m.expose("q", &q).unwrap();
    q.put("from local 1".into()).unwrap();
    q.put("from local 2".into()).unwrap();
    let mut p = started(
        mp::get_context(StartMethod::Spawn)
            .process(tcp_queue_client, (m.address().to_string(), key.clone())),
    );
    assert_eq!(join(&mut p).unwrap(), ["from local 1", "from local 2"]);
    assert_eq!(q.get_timeout(LONG).unwrap(), "from tcp");
    assert_eq!(q.qsize().unwrap(), 0);
}

#[mp::worker]
fn get_forever(q: mp::manager::QueueProxy<u8>, waiting: mp::Event) -> String {
    waiting.set();
    match q.get() {
        Err(Error::ManagerGone { .. }) => "gone".into(),
        other => format!("unexpected: {other:?}"),
    }
}

/// A local client blocked on the native queue (which lives on in shared memory) still learns
/// that the manager was killed, and so do its later calls.
#[test]
fn killed_manager_wakes_a_native_get() {
    let _g = shared();
    let m = Manager::start().unwrap();
    let q = m.queue::<u8>().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    let waiting = mp::Event::new().unwrap();
    let mut p = started(mp::Process::new(get_forever, (q.clone(), waiting.clone())));
    assert!(waiting.wait_timeout(LONG));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(join(&mut p).unwrap(), "gone");
    assert!(eventually(LONG, || matches!(
        q.try_get(),
        Err(Error::ManagerGone { .. })
    )));
    assert!(matches!(q.put(2), Err(Error::ManagerGone { .. })));
}
