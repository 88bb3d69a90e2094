//! Custom managed types (`#[mp::managed]`), ported from CPython's `_TestMyManager`
//! (Lib/test/_test_multiprocessing.py, 3.14) and `TestInitializers.test_manager_initializer`:
//!
//! - MG-10 (`test_mymanager`, `FooBar`): `pub` methods are exposed, private ones are not. Python
//!   lists them at run time (`exposed=`); here the proxy has no method for a private function
//!   (a compile error, `tests/ui/managed/private_method_not_exposed.rs`), and a method index the
//!   type lacks is `Error::Incompatible`.
//! - MG-11 (`common()`: `g()` raises `ValueError`): a method's own error comes back with its own
//!   type inside `Ok`, apart from transport errors. Added: a panic in a method (or a
//!   constructor) is `Error::RemotePanic` naming it, and the server keeps serving; a panic under
//!   `&mut self` poisons the object (`Error::Poisoned`), one under `&self` does not.
//! - MG-12 (`baz()`, an `IteratorProxy`): an iterator-like object iterated remotely.
//! - MG-13 (`test_mymanager`, bpo-30356): after `shutdown()` the server exits with 0, or with
//!   -SIGTERM when it overran `shutdown_timeout`. Python provokes it with a server that takes
//!   too long to exit; here an object whose destructor does not finish, which the server runs
//!   as it drops its objects on shutdown.
//! - MG-17 (`test_manager_initializer`): the initializer runs in the server, before it serves.
//!   Python's half with a non-callable (`TypeError`) is a compile error here; added: a failing
//!   initializer fails `start()` with its message.
//!
//! And from the list: 8 processes × 10,000 increments through a managed counter (exact
//! total); a `#[mp(proxy)]` method called in a child (gh-99595); proxies nested two levels deep;
//! a `#[mp(proxy)]` method called from inside the server by another object; a proxy passed
//! parent → child → grandchild; a type whose fingerprint differs is
//! `Error::Incompatible`; the `_timeout` variants.

mod common;

use std::time::Duration;

use common::*;
use mp::manager::Managed;
use serde::{Deserialize, Serialize};

/// The counter every test shares.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counter {
    n: u64,
}

/// `Counter::div`'s own error.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DivByZero;

#[mp::managed]
impl Counter {
    /// A counter at `start`.
    pub fn new(start: u64) -> Self {
        Counter { n: start }
    }

    /// A counter at `start`, which must be below 100.
    pub fn small(start: u64) -> Self {
        assert!(start < 100, "{start} is not small");
        Counter { n: start }
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.n
    }

    /// Adds `k` and returns the new count.
    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }

    /// Divides the count by `d`.
    pub fn div(&mut self, d: u64) -> Result<u64, DivByZero> {
        self.n = self.n.checked_div(d).ok_or(DivByZero)?;
        Ok(self.n)
    }

    /// Moves half of the count into a new counter, which stays in the server.
    #[mp(proxy)]
    pub fn split(&mut self) -> Counter {
        let half = self.n / 2;
        self.n -= half;
        Counter { n: half }
    }

    /// A copy of the counter.
    pub fn snapshot(&self) -> Self {
        Counter { n: self.n }
    }

    /// Panics while holding the counter exclusively.
    pub fn panic_mut(&mut self) {
        self.n = u64::MAX;
        panic!("counter broke");
    }

    /// Panics while holding the counter shared.
    pub fn panic_ref(&self) -> u64 {
        panic!("counter looked wrong at {}", self.n);
    }

    /// Waits for `release` (at most `LONG`) under the shared lock.
    pub fn wait_for(&self, release: mp::Event) -> bool {
        release.wait_timeout(LONG)
    }
}

// ---- MG-10 ----

/// Python's `FooBar`: `f` and `g` are public, `_h` is not.
#[derive(Default)]
pub struct FooBar;

/// Python's `g()` raises `ValueError`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ValueError(String);

#[mp::managed]
impl FooBar {
    /// The object.
    pub fn new() -> Self {
        FooBar
    }

    /// Python's `f()`.
    pub fn f(&self) -> String {
        "f()".into()
    }

    /// Python's `g()`, which raises.
    pub fn g(&self) -> Result<String, ValueError> {
        Err(ValueError("g() failed".into()))
    }

    #[allow(dead_code)]
    fn h(&self) -> String {
        "_h()".into()
    }
}

#[test]
fn mg_10_public_methods_are_exposed_private_ones_are_not() {
    let _g = shared();
    assert_eq!(FooBar::METHODS, &["FooBar::f", "FooBar::g"]);
    let m = mp::Manager::start().unwrap();
    let foo = FooBarProxy::new(&m).unwrap();
    assert_eq!(foo.f().unwrap(), "f()");
    // A method index the type does not have (what a proxy built from other source would send).
    let r: mp::Result<String> = mp::manager::Proxy::obj_ref(&foo).call(2, &());
    assert!(
        matches!(&r, Err(mp::Error::Incompatible { type_name, .. }) if type_name.ends_with("::FooBar")),
        "{r:?}"
    );
    assert_eq!(foo.f().unwrap(), "f()");
    drop(foo);
    m.shutdown().unwrap();
}

// ---- MG-11 ----

#[test]
fn mg_11_a_method_error_comes_back_typed() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let foo = FooBarProxy::new(&m).unwrap();
    assert_eq!(foo.g().unwrap(), Err(ValueError("g() failed".into())));
    let c = CounterProxy::new(&m, 10).unwrap();
    assert_eq!(c.div(0).unwrap(), Err(DivByZero));
    assert_eq!(c.div(5).unwrap(), Ok(2));
    assert_eq!(c.get().unwrap(), 2);
    drop((foo, c));
    m.shutdown().unwrap();
}

#[test]
fn mg_11_a_panic_is_a_remote_panic_naming_the_method_and_the_server_keeps_serving() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let c = CounterProxy::new(&m, 7).unwrap();
    match c.panic_ref() {
        Err(mp::Error::RemotePanic {
            method,
            message,
            location,
        }) => {
            assert_eq!(method, "Counter::panic_ref");
            assert_eq!(message, "counter looked wrong at 7");
            assert!(location.contains("manager_custom.rs"), "{location}");
        }
        other => panic!("expected a remote panic, got {other:?}"),
    }
    // A constructor's panic too.
    match CounterProxy::small(&m, 1000) {
        Err(mp::Error::RemotePanic {
            method, message, ..
        }) => {
            assert_eq!(method, "Counter::small");
            assert_eq!(message, "1000 is not small");
        }
        other => panic!("expected a remote panic, got {other:?}"),
    }
    // A panic under `&self` leaves the object usable, and the server serves everyone.
    assert_eq!(c.add(1).unwrap(), 8);
    let other = CounterProxy::new(&m, 1).unwrap();
    assert_eq!(other.get().unwrap(), 1);
    drop((c, other));
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
}

#[test]
fn mg_11_a_panic_under_mut_self_poisons_the_object() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let c = CounterProxy::new(&m, 1).unwrap();
    let other = CounterProxy::new(&m, 2).unwrap();
    assert!(matches!(
        c.panic_mut(),
        Err(mp::Error::RemotePanic { ref method, .. }) if method == "Counter::panic_mut"
    ));
    // The counter may be half-updated: every later call is refused, reads included.
    assert!(matches!(c.get(), Err(mp::Error::Poisoned)), "{:?}", c.get());
    assert!(matches!(c.add(1), Err(mp::Error::Poisoned)));
    // Other objects are not affected.
    assert_eq!(other.add(1).unwrap(), 3);
    drop((c, other));
    m.shutdown().unwrap();
}

// ---- MG-12 ----

/// Python's `baz()` generator (`yield i*i` for `i` in `range(10)`), as an object with `next`.
pub struct Squares {
    i: u64,
    end: u64,
}

#[mp::managed]
impl Squares {
    /// The squares of `0..end`.
    pub fn new(end: u64) -> Self {
        Squares { i: 0, end }
    }

    /// The next square, `None` at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<u64> {
        (self.i < self.end).then(|| {
            self.i += 1;
            (self.i - 1) * (self.i - 1)
        })
    }
}

#[test]
fn mg_12_an_iterator_like_object_iterates_remotely() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let it = SquaresProxy::new(&m, 10).unwrap();
    let mut got = Vec::new();
    while let Some(x) = it.next().unwrap() {
        got.push(x);
    }
    assert_eq!(got, (0..10).map(|i| i * i).collect::<Vec<u64>>());
    assert_eq!(it.next().unwrap(), None);
    // As an iterator, with errors kept.
    let it = SquaresProxy::new(&m, 4).unwrap();
    let total: mp::Result<Vec<u64>> = std::iter::from_fn(|| it.next().transpose()).collect();
    assert_eq!(total.unwrap(), vec![0, 1, 4, 9]);
    drop(it);
    m.shutdown().unwrap();
}

// ---- MG-13 ----

/// An object whose destructor waits for `release`: the server, dropping it on shutdown, does
/// not exit until then.
pub struct SlowToDrop {
    release: mp::Event,
}

#[mp::managed]
impl SlowToDrop {
    /// Waits for `release` when dropped.
    pub fn new(release: mp::Event) -> Self {
        SlowToDrop { release }
    }

    /// Whether `release` is set.
    pub fn released(&self) -> bool {
        self.release.is_set()
    }
}

impl Drop for SlowToDrop {
    fn drop(&mut self) {
        self.release.wait_timeout(LONG);
    }
}

for_each_method!(
    mg_13_the_server_exits_0_after_shutdown,
    |ctx: mp::Context| {
        let m = mp::Manager::builder().context(ctx).start().unwrap();
        let c = CounterProxy::new(&m, 1).unwrap();
        assert_eq!(c.add(1).unwrap(), 2);
        m.shutdown().unwrap();
        assert_eq!(m.exitcode(), Some(0));
        // Calls after shutdown fail at once.
        assert!(matches!(
            c.get(),
            Err(mp::Error::ManagerShutdown | mp::Error::ManagerGone { .. })
        ));
    }
);

#[test]
fn mg_13_a_server_that_overruns_shutdown_timeout_is_terminated() {
    let _g = shared();
    let m = mp::Manager::builder()
        .shutdown_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let release = mp::Event::new().unwrap();
    let proxy = SlowToDropProxy::new(&m, release.clone()).unwrap();
    assert!(!proxy.released().unwrap());
    let started = std::time::Instant::now();
    m.shutdown().unwrap();
    assert!(started.elapsed() < LONG);
    assert_eq!(m.exitcode(), Some(-15));
}

// ---- MG-17 ----

static GREETING: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The server's initializer: sets `GREETING` in the server and reports its pid.
#[mp::worker]
fn init_greeting(greeting: String, report: mp::Queue<u32>) -> mp::Result<()> {
    GREETING
        .set(greeting)
        .map_err(|_| mp::Error::InvalidState {
            message: "initialized twice".into(),
        })?;
    report.put(std::process::id())
}

#[mp::worker]
fn init_fails() -> Result<(), String> {
    Err("no database".into())
}

/// Reads what the initializer left in the server process.
#[derive(Default)]
pub struct Greeter;

#[mp::managed]
impl Greeter {
    /// A greeter.
    pub fn new() -> Self {
        Greeter
    }

    /// The initializer's greeting for `name`, or `None` if it did not run here.
    pub fn greet(&self, name: String) -> Option<String> {
        GREETING.get().map(|g| format!("{g}, {name}"))
    }
}

for_each_method!(
    mg_17_the_initializer_runs_in_the_server,
    |ctx: mp::Context| {
        let report = mp::Queue::<u32>::new().unwrap();
        let m = mp::Manager::builder()
            .context(ctx)
            .initializer(init_greeting, ("hello".to_string(), report.clone()))
            .start()
            .unwrap();
        assert_eq!(report.get_timeout(LONG).unwrap() as i32, m.pid().unwrap());
        let g = GreeterProxy::new(&m).unwrap();
        assert_eq!(
            g.greet("ada".into()).unwrap().as_deref(),
            Some("hello, ada")
        );
        // Not in this process.
        assert!(GREETING.get().is_none());
        drop(g);
        m.shutdown().unwrap();
        assert_eq!(m.exitcode(), Some(0));
    }
);

#[test]
fn mg_17_a_failing_initializer_fails_start() {
    let _g = shared();
    let e = mp::Manager::builder()
        .initializer(init_fails, ())
        .start()
        .unwrap_err();
    assert!(e.to_string().contains("no database"), "{e}");
}

// ---- Counting from many processes ----

#[mp::worker]
fn add_many(counter: CounterProxy, times: u64) -> mp::Result<()> {
    for _ in 0..times {
        counter.add(1)?;
    }
    Ok(())
}

#[test]
fn eight_processes_count_to_80000_exactly() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let counter = CounterProxy::new(&m, 0).unwrap();
    let mut ps: Vec<_> = (0..8)
        .map(|_| started(mp::Process::new(add_many, (counter.clone(), 10_000))))
        .collect();
    for p in &mut ps {
        join(p).unwrap();
    }
    assert_eq!(counter.get().unwrap(), 80_000);
    assert_eq!(counter.snapshot().unwrap(), Counter { n: 80_000 });
    drop(counter);
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 0));
    m.shutdown().unwrap();
}

// ---- Proxies returned by methods, nested, and passed along ----

/// gh-99595: a method returning another managed object, called in a child.
#[mp::worker]
fn split_in_child(counter: CounterProxy) -> mp::Result<(u64, u64)> {
    let half = counter.split()?;
    half.add(100)?;
    Ok((counter.get()?, half.get()?))
}

#[test]
fn a_proxy_method_works_in_a_child() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let counter = CounterProxy::new(&m, 10).unwrap();
    let mut p = started(mp::Process::new(split_in_child, (counter.clone(),)));
    assert_eq!(join(&mut p).unwrap(), (5, 105));
    // The half the child made is gone with the child; the parent's own split works too.
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 1));
    let half = counter.split().unwrap();
    assert_eq!((counter.get().unwrap(), half.get().unwrap()), (3, 2));
    assert_eq!(m.number_of_objects().unwrap(), 2);
    drop((counter, half));
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 0));
    m.shutdown().unwrap();
}

/// A team keeps a counter of its own, in the server.
pub struct Team {
    name: String,
    score: CounterProxy,
}

#[mp::managed]
impl Team {
    /// A team scoring on `score`.
    pub fn new(name: String, score: CounterProxy) -> Self {
        Team { name, score }
    }

    /// Adds `points` to the team's counter (a call from the server to another object).
    pub fn scores(&self, points: u64) -> Result<u64, String> {
        self.score.add(points).map_err(|e| e.to_string())
    }

    /// The team's counter.
    pub fn score(&self) -> CounterProxy {
        self.score.clone()
    }

    /// Splits the team's counter from the server (a `#[mp(proxy)]` method called there): the
    /// new counter's proxy.
    pub fn split_score(&self) -> Result<CounterProxy, String> {
        self.score.split().map_err(|e| e.to_string())
    }

    /// The team's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }
}

/// A league keeps teams, which keep counters: proxies two levels deep.
#[derive(Default)]
pub struct League {
    teams: Vec<TeamProxy>,
}

#[mp::managed]
impl League {
    /// An empty league.
    pub fn new() -> Self {
        League::default()
    }

    /// Adds a team.
    pub fn join(&mut self, team: TeamProxy) {
        self.teams.push(team);
    }

    /// Team `i`.
    pub fn team(&self, i: usize) -> Option<TeamProxy> {
        self.teams.get(i).cloned()
    }

    /// Gives every team `points`; their new scores.
    pub fn round(&self, points: u64) -> Result<Vec<u64>, String> {
        self.teams
            .iter()
            .map(|t| t.scores(points).map_err(|e| e.to_string())?)
            .collect()
    }
}

#[test]
fn proxies_nested_two_levels_deep() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let league = LeagueProxy::new(&m).unwrap();
    for name in ["red", "blue"] {
        let team = TeamProxy::new(&m, name.into(), CounterProxy::new(&m, 0).unwrap()).unwrap();
        league.join(team).unwrap();
    }
    // The server holds the teams and counters for the league; the client let go of its proxies.
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 5));
    assert_eq!(league.round(3).unwrap(), Ok(vec![3, 3]));
    assert_eq!(league.round(2).unwrap(), Ok(vec![5, 5]));
    // Down two levels from the client, and a change through the innermost proxy.
    let blue = league.team(1).unwrap().unwrap();
    assert_eq!(blue.name().unwrap(), "blue");
    let score = blue.score().unwrap();
    assert_eq!(score.add(10).unwrap(), 15);
    assert_eq!(league.round(0).unwrap(), Ok(vec![5, 15]));
    assert!(league.team(2).unwrap().is_none());
    // A proxy made in the server, by a call from one object to another, reaches the client.
    let half = blue.split_score().unwrap().unwrap();
    assert_eq!((half.get().unwrap(), score.get().unwrap()), (7, 8));
    drop(half);
    drop((league, blue, score));
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 0));
    m.shutdown().unwrap();
}

#[mp::worker]
fn relay(counter: CounterProxy, depth: u32) -> mp::Result<u64> {
    if depth > 0 {
        let mut p = mp::Process::new(relay, (counter.clone(), depth - 1));
        p.start()?;
        p.join()?;
    }
    counter.add(1)
}

#[test]
fn a_proxy_passes_from_parent_to_child_to_grandchild() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let counter = CounterProxy::new(&m, 0).unwrap();
    let mut p = started(mp::Process::new(relay, (counter.clone(), 2)));
    // Grandchild's grandchild, grandchild, then the child: the child adds last.
    assert_eq!(join(&mut p).unwrap(), 3);
    assert_eq!(counter.get().unwrap(), 3);
    drop(counter);
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 0));
    m.shutdown().unwrap();
}

// ---- Compatibility and timeouts ----

#[test]
fn a_type_whose_definition_differs_is_incompatible() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let other =
        m.create::<CounterProxy, _>(Counter::TYPE_NAME, Counter::FINGERPRINT ^ 1, 0, &(5u64,));
    assert!(
        matches!(&other, Err(mp::Error::Incompatible { type_name, message })
            if type_name == Counter::TYPE_NAME && message.contains("fingerprints differ")),
        "{other:?}"
    );
    let unknown =
        m.create::<CounterProxy, _>("nowhere::Counter", Counter::FINGERPRINT, 0, &(5u64,));
    assert!(
        matches!(unknown, Err(mp::Error::Incompatible { .. })),
        "{unknown:?}"
    );
    // Nothing was built, and the right definition works.
    assert_eq!(m.number_of_objects().unwrap(), 0);
    assert_eq!(CounterProxy::new(&m, 5).unwrap().get().unwrap(), 5);
    m.shutdown().unwrap();
}

#[test]
fn timeout_variants_give_up_and_the_proxy_goes_on() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let c = CounterProxy::new(&m, 1).unwrap();
    let release = mp::Event::new().unwrap();
    let r = c.wait_for_timeout(release.clone(), Duration::from_millis(100));
    assert!(matches!(r, Err(mp::Error::Timeout)), "{r:?}");
    // The call goes on in the server, holding the counter shared: reads still go through (on
    // another connection), a change waits for it.
    assert_eq!(c.get_timeout(LONG).unwrap(), 1);
    assert!(matches!(
        c.add_timeout(1, Duration::from_millis(100)),
        Err(mp::Error::Timeout)
    ));
    release.set();
    assert!(c.wait_for_timeout(release.clone(), LONG).unwrap());
    c.add_timeout(1, LONG).unwrap();
    // The abandoned `add` ran too, once the wait ended.
    assert!(eventually(LONG, || c.get().unwrap() == 3));
    drop(c);
    m.shutdown().unwrap();
}

// ---- Sessions, owners and results (issue 17) ----

/// An object whose constructor says it started and then waits for `go` (at most `LONG`); its
/// destructor sets `dropped`.
pub struct SlowBuilt {
    dropped: mp::Event,
}

#[mp::managed]
impl SlowBuilt {
    /// Built once `go` is set.
    pub fn new(started: mp::Event, go: mp::Event, dropped: mp::Event) -> Self {
        started.set();
        go.wait_timeout(LONG);
        SlowBuilt { dropped }
    }

    /// Answers.
    pub fn ping(&self) -> u32 {
        1
    }
}

impl Drop for SlowBuilt {
    fn drop(&mut self) {
        self.dropped.set();
    }
}

#[mp::worker]
fn build_slowly(
    m: mp::Manager,
    started: mp::Event,
    go: mp::Event,
    dropped: mp::Event,
) -> mp::Result<()> {
    let _marker = m.list::<u8>([])?;
    let _slow = SlowBuiltProxy::new(&m, started, go, dropped)?;
    Ok(())
}

/// A client killed while the server builds its object: once built, the object is dropped
/// (the session it was for has ended), not kept for the manager's life.
#[test]
fn an_object_built_for_a_killed_client_is_dropped() {
    let _g = shared();
    let m = mp::Manager::builder()
        .transfer_timeout(Duration::from_secs(3600))
        .start()
        .unwrap();
    let (started_ev, go, dropped) = (
        mp::Event::new().unwrap(),
        mp::Event::new().unwrap(),
        mp::Event::new().unwrap(),
    );
    let mut p = started(mp::Process::new(
        build_slowly,
        (m.clone(), started_ev.clone(), go.clone(), dropped.clone()),
    ));
    assert!(started_ev.wait_timeout(LONG));
    p.kill().unwrap();
    assert!(join(&mut p).is_err());
    // The child's session has ended once its marker list is gone.
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 0));
    go.set();
    assert!(
        dropped.wait_timeout(LONG),
        "the object built for the dead client was kept"
    );
    assert_eq!(m.number_of_objects().unwrap(), 0);
    // The server goes on serving new clients.
    assert_eq!(CounterProxy::new(&m, 2).unwrap().get().unwrap(), 2);
    m.shutdown().unwrap();
}

#[mp::worker]
fn take_rlock(lock: mp::manager::RLockProxy) -> mp::Result<bool> {
    let got = lock.acquire_timeout(LONG)?;
    lock.release()?;
    Ok(got)
}

/// A `_timeout` call that times out makes the thread open a new connection: the re-entrant
/// lock and the condition it holds stay its own (owners are client threads, not connections).
#[test]
fn a_timed_out_call_keeps_the_threads_locks() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let c = CounterProxy::new(&m, 1).unwrap();
    let lock = m.rlock().unwrap();
    let cond = m.condition().unwrap();
    lock.acquire().unwrap();
    cond.acquire().unwrap();
    let release = mp::Event::new().unwrap();
    let r = c.wait_for_timeout(release.clone(), Duration::from_millis(50));
    assert!(matches!(r, Err(mp::Error::Timeout)), "{r:?}");
    assert!(lock.try_acquire().unwrap(), "the owner takes it again");
    lock.release().unwrap();
    lock.release().unwrap();
    assert!(!cond.wait_timeout(Duration::from_millis(1)).unwrap());
    cond.release().unwrap();
    release.set();
    let mut p = started(mp::Process::new(take_rlock, (lock.clone(),)));
    assert!(join(&mut p).unwrap());
    drop((c, lock, cond));
    m.shutdown().unwrap();
}

/// A result whose `Serialize` panics.
#[derive(Debug, Deserialize)]
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("this value cannot be encoded");
    }
}

/// Returns what cannot be encoded.
#[derive(Default)]
pub struct BadResult;

#[mp::managed]
impl BadResult {
    /// The object.
    pub fn new() -> Self {
        BadResult
    }

    /// A result that panics as it is encoded.
    pub fn bad(&self) -> Unencodable {
        Unencodable
    }
}

/// A result that panics while it is encoded is a `RemotePanic` naming the method, like a panic
/// in the method; the connection and the manager go on.
#[test]
fn a_result_that_panics_as_it_is_encoded_is_a_remote_panic() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let b = BadResultProxy::new(&m).unwrap();
    match b.bad() {
        Err(mp::Error::RemotePanic {
            method, message, ..
        }) => {
            assert!(method.contains("bad"), "{method}");
            assert!(message.contains("cannot be encoded"), "{message}");
        }
        other => panic!("expected a remote panic, got {other:?}"),
    }
    assert!(matches!(b.bad(), Err(mp::Error::RemotePanic { .. })));
    assert_eq!(m.number_of_objects().unwrap(), 1);
    drop(b);
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
}
