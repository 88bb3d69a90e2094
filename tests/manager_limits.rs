//! A manager against clients that know the key but misbehave: what one session may hold, how
//! many connections and blocked calls it may have, memory that large messages leave behind,
//! objects that refer to each other, who may stop the server and who may replace a published
//! name. Each test fails on a server that lets the client win.

mod common;

use std::sync::mpsc;

use common::*;

/// The resident memory of `pid`, in MiB.
fn rss_mib(pid: i32) -> u64 {
    proc_status_bytes(&pid.to_string(), "VmRSS").unwrap_or(0) >> 20
}

#[test]
fn large_messages_do_not_stay_in_the_servers_buffers() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let pid = m.pid().expect("a started manager has a pid");
    let d = m.dict::<u32, Vec<u8>>().unwrap();
    let before = rss_mib(pid);
    const MIB: usize = 48;
    let (done_tx, done_rx) = mpsc::channel();
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for i in 0..2u32 {
        let d = d.clone();
        let done = done_tx.clone();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        stops.push(stop_tx);
        // Each thread has a connection of its own, which stays open below.
        threads.push(std::thread::spawn(move || {
            let r = d.set(&i, &vec![1u8; MIB << 20]).and_then(|()| d.get(&i));
            done.send(r.map(|v| v.map_or(0, |v| v.len()))).unwrap();
            let _ = stop_rx.recv();
        }));
    }
    for _ in 0..2 {
        assert_eq!(done_rx.recv_timeout(LONG).unwrap().unwrap(), MIB << 20);
    }
    d.clear().unwrap();
    // The connections stay open and idle, each having received and sent 48 MiB.
    let released = eventually(std::time::Duration::from_secs(10), || {
        rss_mib(pid) < before + MIB as u64 / 2
    });
    let held = rss_mib(pid);
    drop(stops);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        released,
        "server RSS {before} MiB before, {held} MiB with the dict empty"
    );
    m.shutdown().unwrap();
}

const KEY: &[u8] = b"manager-limits-key";

/// A LEB128 varint, as postcard writes integers.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An authenticated connection that speaks the manager's protocol by hand, as any program that
/// knows the key can: it opens a session of its own.
fn raw_session(address: &str) -> mp::Connection<()> {
    let c = mp::Client::connect::<()>(address, KEY).unwrap();
    // Hello { protocol: 1, pid, session: None } (a client may leave out the later fields)
    let mut hello = Vec::new();
    varint(1, &mut hello);
    varint(u64::from(std::process::id()), &mut hello);
    hello.push(0);
    c.send_bytes(&hello).unwrap();
    let welcome = c.recv_bytes().unwrap();
    assert_eq!(welcome[0], 0, "session refused: {welcome:?}");
    c
}

/// The object id a proxy's `Debug` shows (ids are not secrets: a session reaches only the
/// objects it holds).
fn id_of<P: std::fmt::Debug>(p: &P) -> u64 {
    let s = format!("{p:?}");
    let i = s.rfind("object ").expect("an id in the Debug form") + 7;
    u64::from_str_radix(&s[i..i + 16], 16).expect("hex id")
}

/// The next frame, within a generous bound.
fn reply(c: &mp::Connection<()>) -> Vec<u8> {
    assert!(c.poll(Some(LONG)).unwrap(), "no reply within {LONG:?}");
    c.recv_bytes().unwrap()
}

/// Whether a reply frame is `Reply::Ok` (variant 0).
fn is_ok(reply: &[u8]) -> bool {
    reply.first() == Some(&0)
}

#[test]
fn only_the_starting_handle_can_shut_the_server_down() {
    let _g = shared();
    let m = mp::Manager::serve("127.0.0.1:0", KEY).unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let c = raw_session(&m.address().to_string());
    // `Request::Shutdown { id: 1, token }` with a guessed token, and without one.
    c.send_bytes(&[8, 1, 42]).unwrap();
    assert!(!is_ok(&reply(&c)));
    c.send_bytes(&[8, 1]).unwrap();
    let _ = reply(&c);
    d.set(&1, &1).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    // A handle that did not start the manager is refused on its own side too.
    let other = mp::Manager::connect(m.address(), KEY).unwrap();
    assert!(matches!(
        other.shutdown(),
        Err(mp::Error::InvalidState { .. })
    ));
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

#[test]
fn a_session_reaches_only_the_objects_it_holds() {
    let _g = shared();
    let m = mp::Manager::serve("127.0.0.1:0", KEY).unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.set(&1, &7).unwrap();
    let c = raw_session(&m.address().to_string());
    // `Request::Call { id: 1, obj, method: 0, args: [] }`: the id is known, the object is not
    // held by this session.
    let mut call = vec![0];
    varint(1, &mut call);
    varint(id_of(&d), &mut call);
    varint(0, &mut call);
    varint(0, &mut call);
    c.send_bytes(&call).unwrap();
    assert!(!is_ok(&reply(&c)));
    // `Request::Retain { id: 2, obj }` is refused the same way.
    let mut retain = vec![2];
    varint(2, &mut retain);
    varint(id_of(&d), &mut retain);
    c.send_bytes(&retain).unwrap();
    assert!(!is_ok(&reply(&c)));
    assert_eq!(d.get(&1).unwrap(), Some(7));
    m.shutdown().unwrap();
}

#[mp::worker]
fn publish(m: mp::Manager, name: String, replace: bool) -> mp::Result<()> {
    let d = m.dict::<String, String>()?;
    d.set(&"owner".into(), &"child".into())?;
    if replace {
        m.expose_replace(&name, &d)
    } else {
        m.expose(&name, &d)
    }
}

#[test]
fn a_published_name_cannot_be_taken_over() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let d = m.dict::<String, String>().unwrap();
    d.set(&"owner".into(), &"main".into()).unwrap();
    m.expose("shared", &d).unwrap();
    m.expose("shared", &d).unwrap(); // the same object again: fine
    for replace in [false, true] {
        let mut p = started(mp::Process::new(
            publish,
            (m.clone(), "shared".into(), replace),
        ));
        let outcome = join(&mut p);
        assert!(
            matches!(&outcome, Err(e) if e.to_string().contains("shared")),
            "{outcome:?}"
        );
    }
    let mut p = started(mp::Process::new(publish, (m.clone(), "mine".into(), false)));
    join(&mut p).unwrap();
    let seen = m
        .lookup::<mp::manager::DictProxy<String, String>>("shared")
        .unwrap();
    assert_eq!(seen.get(&"owner".into()).unwrap().as_deref(), Some("main"));
    // The publisher may replace its own.
    let e = m.dict::<String, String>().unwrap();
    e.set(&"owner".into(), &"main again".into()).unwrap();
    assert!(matches!(
        m.expose("shared", &e),
        Err(mp::Error::InvalidState { .. })
    ));
    m.expose_replace("shared", &e).unwrap();
    let seen = m
        .lookup::<mp::manager::DictProxy<String, String>>("shared")
        .unwrap();
    assert_eq!(
        seen.get(&"owner".into()).unwrap().as_deref(),
        Some("main again")
    );
    m.shutdown().unwrap();
}

/// The server's threads.
fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn silent_authenticated_connections_do_not_get_threads_past_the_bound() {
    let _g = shared();
    let m = mp::Manager::builder()
        .address("127.0.0.1:0")
        .unwrap()
        .authkey(KEY)
        .max_connections(8)
        .start()
        .unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let base = threads_of(pid);
    let address = m.address().to_string();
    // Authenticated, then silent: no `Hello`.
    let silent: Vec<_> = (0..40)
        .map(|_| mp::Client::connect::<()>(address.as_str(), KEY).unwrap())
        .collect();
    // Every connection past the bound is told at once that the server is full.
    let refused = silent
        .iter()
        .filter(|c| {
            c.poll(Some(std::time::Duration::from_secs(2)))
                .unwrap_or(false)
        })
        .count();
    assert!(refused >= 40 - 8, "only {refused} of 40 were refused");
    assert!(
        threads_of(pid) <= base + 8,
        "{} server threads for {base} before",
        threads_of(pid)
    );
    drop(silent);
    // The connection that was there all along still works.
    d.set(&1, &2).unwrap();
    m.shutdown().unwrap();
}

#[test]
fn one_process_cannot_take_every_connection() {
    let _g = shared();
    let m = mp::Manager::builder()
        .max_connections_per_process(4)
        .start()
        .unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    // The process's first connection (its session's) and this thread's: two of four.
    d.set(&0, &0).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = (1..=3u32)
        .map(|i| {
            let d = d.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let r = d.set(&i, &i);
                // Keep the connection open until every thread has called.
                barrier.wait();
                r
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let limited = outcomes
        .iter()
        .filter(|r| matches!(r, Err(mp::Error::LimitExceeded { .. })))
        .count();
    assert_eq!(limited, 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 2);
    m.shutdown().unwrap();
}

#[test]
fn objects_and_descriptors_per_process_are_bounded() {
    let _g = shared();
    let m = mp::Manager::builder()
        .max_objects_per_process(5)
        .start()
        .unwrap();
    let mut dicts: Vec<_> = (0..5).map(|_| m.dict::<u32, u32>().unwrap()).collect();
    let e = m.dict::<u32, u32>().unwrap_err();
    assert!(matches!(e, mp::Error::LimitExceeded { .. }), "{e}");
    assert!(e.to_string().contains("max_objects_per_process"), "{e}");
    dicts.pop();
    dicts.push(m.dict::<u32, u32>().unwrap());
    drop(dicts);
    m.shutdown().unwrap();

    let m = mp::Manager::builder()
        .max_descriptors_per_process(40)
        .start()
        .unwrap();
    let mut queues = Vec::new();
    let e = loop {
        match m.queue::<u32>() {
            Ok(q) => queues.push(q),
            Err(e) => break e,
        }
        assert!(queues.len() < 100, "100 queues within 40 descriptors");
    };
    assert!(matches!(e, mp::Error::LimitExceeded { .. }), "{e}");
    assert!(queues.len() >= 5, "only {} queues", queues.len());
    // Another process still gets its own share.
    let other = mp::Manager::connect(m.address(), mp::current_process().authkey()).unwrap();
    drop(other);
    queues.clear();
    m.queue::<u32>().unwrap();
    m.shutdown().unwrap();
}

#[test]
fn zero_bounds_are_refused_when_the_manager_is_built() {
    assert!(matches!(
        mp::Manager::builder().max_objects_per_process(0).start(),
        Err(mp::Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        mp::Manager::builder()
            .max_connections_per_process(0)
            .start(),
        Err(mp::Error::InvalidArgument { .. })
    ));
}

/// A small deterministic generator (xorshift64*), so that a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random requests after a valid handshake and `Hello`: every kind of request with random
/// fields (ids of real objects, tickets, names, tokens, truncated and overlong bodies). After
/// each, a `Stats` probe on the same connection must be answered, or the connection closed;
/// the owner's client keeps working throughout and the server stays up.
#[test]
fn random_requests_from_an_authenticated_peer_reach_nothing() {
    let _g = shared();
    let cases: u64 = std::env::var("MP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let m = mp::Manager::serve("127.0.0.1:0", KEY).unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.set(&1, &1).unwrap();
    let id = id_of(&d);
    let address = m.address().to_string();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut c = raw_session(&address);
    // `Request::Stats { id: 16383 }` and the start of its reply.
    let probe = [7u8, 0xff, 0x7f];
    let answered = [0u8, 0xff, 0x7f];
    for case in 0..cases {
        let mut frame = vec![rng.below(10) as u8];
        for _ in 0..rng.below(6) {
            match rng.below(4) {
                0 => varint(id, &mut frame),
                1 => varint(rng.next(), &mut frame),
                2 => {
                    let n = rng.below(40) as usize;
                    varint(n as u64 + rng.below(3), &mut frame);
                    frame.extend((0..n).map(|_| rng.next() as u8));
                }
                _ => frame.push(rng.next() as u8),
            }
        }
        c.send_bytes(&frame).unwrap();
        let _ = c.send_bytes(&probe);
        let open = loop {
            if !c.poll(Some(LONG)).unwrap_or(true) {
                panic!("case {case}: no answer within {LONG:?} to {frame:?}");
            }
            match c.recv_bytes() {
                Ok(reply) if reply.starts_with(&answered) => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if !open {
            c = raw_session(&address);
        }
        if case % 50 == 0 {
            assert_eq!(d.get(&1).unwrap(), Some(1), "case {case}");
        }
    }
    assert_eq!(d.get(&1).unwrap(), Some(1));
    assert_eq!(m.number_of_objects().unwrap(), 1);
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

/// A list item holding a proxy of a list: lists can hold themselves or each other.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Node(mp::manager::ListProxy<Node>);

#[mp::worker]
fn make_cycles(m: mp::Manager, n: u32) -> mp::Result<()> {
    for _ in 0..n {
        let a = m.list::<Node>([])?;
        a.append(&Node(a.clone()))?;
        let b = m.list::<Node>([])?;
        let c = m.list::<Node>([])?;
        b.append(&Node(c.clone()))?;
        c.append(&Node(b.clone()))?;
    }
    Ok(())
}

#[test]
fn cycles_that_no_client_reaches_are_freed() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let mut p = started(mp::Process::new(make_cycles, (m.clone(), 30)));
    join(&mut p).unwrap();
    assert!(
        settles_at(&m, 0),
        "{:?} objects left",
        m.number_of_objects()
    );

    // A cycle this process still reaches stays, and so does what it refers to.
    let a = m.list::<Node>([]).unwrap();
    a.append(&Node(a.clone())).unwrap();
    let b = m.list::<Node>([]).unwrap();
    a.append(&Node(b.clone())).unwrap();
    drop(b);
    assert_eq!(m.number_of_objects().unwrap(), 2);
    // Reached only through `a`: `b` is still usable from a copy taken out of `a`.
    let Some(Node(b)) = a.get(1).unwrap() else {
        panic!("the list has two items")
    };
    assert_eq!(b.len().unwrap(), 0);
    drop(b);
    assert_eq!(m.number_of_objects().unwrap(), 2);
    // The last proxy goes: the cycle, and what only it reached, go with it.
    drop(a);
    assert!(
        settles_at(&m, 0),
        "{:?} objects left",
        m.number_of_objects()
    );
    m.shutdown().unwrap();
}

/// Blocks in the server until the test's listener on `port` writes a byte.
#[mp::worker]
fn wait_for_go(value: u32, port: u16) -> u32 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut go = [0u8];
    s.read_exact(&mut go).unwrap();
    value + 1
}

#[test]
fn a_slow_modify_holds_its_dict_only() {
    use std::io::Write;
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let other = m.dict::<u32, u32>().unwrap();
    d.set(&1, &10).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let modifier = {
        let d = d.clone();
        std::thread::spawn(move || d.modify_with(&1, wait_for_go, &port))
    };
    // The worker runs in the server now, under the dict's lock.
    let (mut worker, _) = listener.accept().unwrap();
    // Another object is served meanwhile.
    other.set(&1, &1).unwrap();
    assert_eq!(other.get(&1).unwrap(), Some(1));
    // A call on the same dict waits for the worker, then sees its result.
    let reader = {
        let d = d.clone();
        std::thread::spawn(move || d.get(&1))
    };
    worker.write_all(&[1]).unwrap();
    assert_eq!(modifier.join().unwrap().unwrap(), Some(11));
    assert_eq!(reader.join().unwrap().unwrap(), Some(11));
    m.shutdown().unwrap();
}
