//! With the `tracing` feature, the runtime reports what it does as `tracing` events: processes
//! starting and exiting, pool workers dying and being replaced, the fork server and the resource
//! tracker starting, handshakes failing (with the peer's address, never the key). A subscriber
//! of the test's own records every event. Run with `cargo test --features tracing --test
//! logging`; without the feature this file is empty.
#![cfg(feature = "tracing")]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One recorded event: its level, target and fields (`message` included), as text.
#[derive(Clone, Debug)]
struct Captured {
    level: tracing::Level,
    target: String,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

/// Records every event, for the whole test binary (the pool's scheduler emits from its own
/// thread, so a thread-local subscriber would miss those).
struct Recorder {
    next_span: AtomicU64,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let m = event.metadata();
        EVENTS.lock().unwrap().push(Captured {
            level: *m.level(),
            target: m.target().to_owned(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Installs the recorder before the test starts any process.
fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing::subscriber::set_global_default(Recorder {
            next_span: AtomicU64::new(1),
        })
        .expect("no other global subscriber");
    });
}

/// The events recorded so far that `keep` accepts.
fn events(keep: impl Fn(&Captured) -> bool) -> Vec<Captured> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| keep(e))
        .cloned()
        .collect()
}

#[mp::worker]
fn noop() {}

#[mp::worker]
fn die(how: u32) -> u32 {
    if how == 9 {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    how
}

#[test]
fn process_start_and_exit_are_events() {
    init();
    let _g = shared();
    for method in [mp::StartMethod::Spawn, mp::StartMethod::ForkServer] {
        let mut p = started(mp::get_context(method).process(noop, ()));
        join(&mut p).unwrap();
        let pid = p.pid().unwrap().to_string();
        let started = events(|e| e.message() == "process started" && e.field("pid") == Some(&pid));
        assert_eq!(started.len(), 1, "{method}: {:?}", events(|_| true));
        let e = &started[0];
        assert_eq!(e.level, tracing::Level::DEBUG);
        assert!(e.target.starts_with("mp_runtime"), "{}", e.target);
        assert_eq!(e.field("method"), Some(method.to_string().as_str()));
        assert_eq!(e.field("name"), Some(p.name()));
        assert!(
            e.field("worker").unwrap().contains("logging::noop@"),
            "{e:?}"
        );
        let exited = events(|e| e.message() == "process exited" && e.field("pid") == Some(&pid));
        assert_eq!(exited.len(), 1, "{method}");
        assert_eq!(exited[0].field("exitcode"), Some("0"));
    }
}

#[test]
fn fork_server_start_is_an_event() {
    init();
    let _g = shared();
    let mut p = started(mp::get_context(mp::StartMethod::ForkServer).process(noop, ()));
    join(&mut p).unwrap();
    let server = mp::forkserver::server_pid()
        .expect("a fork server runs")
        .to_string();
    let e = events(|e| e.message() == "fork server started" && e.field("pid") == Some(&server));
    assert_eq!(e.len(), 1, "{:?}", events(|_| true));
    assert_eq!(e[0].level, tracing::Level::INFO);
}

#[test]
fn pool_worker_death_and_replacement_are_events() {
    init();
    let _g = shared();
    let pool = mp::Pool::builder()
        .processes(1)
        .context(mp::get_context(mp::StartMethod::ForkServer))
        .build()
        .unwrap();
    let first = pool.worker_pids()[0];
    let r = pool.apply_async(die, (9,)).unwrap();
    assert!(r.wait_timeout(LONG));
    assert!(matches!(r.get(), Err(mp::Error::WorkerDied { .. })));
    // The replacement runs this one.
    let r = pool.apply_async(die, (1,)).unwrap();
    assert!(r.wait_timeout(LONG));
    assert_eq!(r.get().unwrap(), 1);
    let replacement = pool.worker_pids()[0];
    assert_ne!(first, replacement);

    let died = events(|e| e.message() == "pool worker died");
    let died: Vec<_> = died
        .iter()
        .filter(|e| e.field("pid") == Some(&first.to_string()))
        .collect();
    assert_eq!(died.len(), 1, "{:?}", events(|_| true));
    assert_eq!(died[0].level, tracing::Level::WARN);
    assert_eq!(died[0].field("exitcode"), Some("-9"));
    assert_eq!(died[0].field("running_a_task"), Some("true"));
    let replaced = events(|e| {
        e.message() == "pool worker started in place of one that died"
            && e.field("pid") == Some(&replacement.to_string())
    });
    assert_eq!(replaced.len(), 1, "{:?}", events(|_| true));
}

#[test]
fn resource_tracker_start_is_an_event() {
    init();
    let _g = shared();
    let shm = mp::shared_memory::SharedMemory::create(64).unwrap();
    let tracker = mp::__private::resource_tracker_pid()
        .expect("a tracker runs")
        .to_string();
    shm.unlink().unwrap();
    let e =
        events(|e| e.message() == "resource tracker started" && e.field("pid") == Some(&tracker));
    assert_eq!(e.len(), 1, "{:?}", events(|_| true));
}

#[test]
fn failed_handshakes_name_the_peer_and_never_the_key() {
    init();
    let listener = mp::Listener::bind("127.0.0.1:0", b"listener-secret-1").unwrap();
    let address = listener.address().to_string();
    let client = std::thread::spawn({
        let address = address.clone();
        move || mp::Client::connect::<u8>(address.as_str(), b"client-secret-2").map(drop)
    });
    let accepted = listener.accept_timeout::<u8>(LONG);
    assert!(
        matches!(accepted, Err(mp::Error::Authentication { .. })),
        "{accepted:?}"
    );
    let connected = client.join().unwrap();
    assert!(
        matches!(connected, Err(mp::Error::Authentication { .. })),
        "{connected:?}"
    );

    let server_side = events(|e| e.message() == "handshake with a connecting peer failed");
    let ours: Vec<_> = server_side
        .iter()
        .filter(|e| e.field("peer").is_some_and(|p| p.starts_with("127.0.0.1:")))
        .collect();
    assert!(!ours.is_empty(), "{:?}", events(|_| true));
    assert_eq!(ours[0].level, tracing::Level::WARN);
    let client_side = events(|e| {
        e.message() == "handshake with the listener failed" && e.field("peer") == Some(&address)
    });
    assert_eq!(client_side.len(), 1, "{:?}", events(|_| true));
    for e in events(|_| true) {
        let text = format!("{e:?}");
        assert!(!text.contains("secret"), "an event shows a key: {text}");
    }
}
