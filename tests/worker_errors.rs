//! What a worker's `Err` becomes in the parent: its text always, its value when the error type
//! is serde-able (`Error::downcast`), and for pools which input item failed; whatever the
//! return type is called; and the messages of processes that end before their worker returns.

mod common;

use std::collections::BTreeSet;
use std::fmt;

use common::*;
use mp::{Error, Pool, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum HashError {
    Missing(String),
    TooBig { size: u64 },
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Missing(p) => write!(f, "{p} is missing"),
            HashError::TooBig { size } => write!(f, "too big: {size}"),
        }
    }
}

/// An error type that is only `Display`: its text crosses, its value cannot.
#[derive(Debug)]
struct TextOnly(u32);

impl fmt::Display for TextOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "text only {}", self.0)
    }
}

/// `Deserialize` but not `Serialize`: the worker cannot send it, so a downcast to it explains.
#[derive(Debug, Deserialize)]
struct ReadOnly;

impl fmt::Display for ReadOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("read only")
    }
}

/// Fails on every input `x` with `x % 5 == 3`, with that input in the error.
#[mp::worker]
fn hash(x: u64) -> Result<u64, HashError> {
    if x % 5 == 3 {
        Err(HashError::TooBig { size: x })
    } else {
        Ok(x * 10)
    }
}

#[mp::worker]
fn missing(path: String) -> Result<u64, HashError> {
    Err(HashError::Missing(path))
}

#[mp::worker]
fn text_only(x: u32) -> Result<u32, TextOnly> {
    Err(TextOnly(x))
}

#[mp::worker]
fn read_only() -> Result<u32, ReadOnly> {
    Err(ReadOnly)
}

#[mp::worker]
fn panics() -> Result<u32, String> {
    panic!("expected panic (worker_errors test)")
}

/// The alias of the issue: a `Result` whose name does not say so.
type Outcome<T> = Result<T, String>;

#[mp::worker(fallible)]
fn aliased(x: u32) -> Outcome<u32> {
    if x == 0 {
        Err("zero is refused".into())
    } else {
        Ok(x + 1)
    }
}

#[mp::worker(fallible = false)]
fn result_as_value(x: u32) -> Result<u32, String> {
    Err(format!("value {x}"))
}

#[mp::worker]
fn exits_zero() -> u32 {
    std::process::exit(0)
}

fn too_big(size: u64) -> HashError {
    HashError::TooBig { size }
}

for_each_method!(process_err_comes_back_typed, |ctx: mp::Context| {
    let mut p = started(ctx.process(missing, ("a.txt".to_string(),)));
    let err = join(&mut p).unwrap_err();
    assert!(
        matches!(&err, Error::ProcessFailed { exitcode: 1, message, error: Some(_), .. }
            if message == "a.txt is missing"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the worker returned an error: a.txt is missing"
    );
    assert_eq!(
        err.downcast::<HashError>().unwrap(),
        HashError::Missing("a.txt".into())
    );
    let w = err.worker_error().unwrap();
    assert_eq!(w.type_name(), std::any::type_name::<HashError>());
    assert!(w.has_value());
    assert_eq!(err.item_index(), None);
});

#[test]
fn wrong_downcast_type_is_a_clear_error() {
    let _g = shared();
    let mut p = started(mp::Process::new(missing, ("b".to_string(),)));
    let err = join(&mut p).unwrap_err();
    let wrong = err.downcast::<String>().unwrap_err();
    assert!(matches!(wrong, Error::InvalidArgument { .. }), "{wrong:?}");
    let text = wrong.to_string();
    assert!(text.contains("`alloc::string::String`"), "{text}");
    assert!(text.contains(std::any::type_name::<HashError>()), "{text}");

    // An error that did not come from a worker's `Err` has nothing to downcast.
    let mut p = started(mp::Process::new(panics, ()));
    let err = join(&mut p).unwrap_err();
    assert!(matches!(err, Error::WorkerPanicked { .. }), "{err:?}");
    let none = err.downcast::<String>().unwrap_err();
    assert!(
        none.to_string()
            .contains("did not come from a worker's `Err`"),
        "{none}"
    );
    assert!(Error::Timeout.downcast::<HashError>().is_err());
}

#[test]
fn display_only_errors_keep_their_text() {
    let _g = shared();
    let mut p = started(mp::Process::new(text_only, (7,)));
    let err = join(&mut p).unwrap_err();
    assert!(
        matches!(&err, Error::ProcessFailed { message, .. } if message == "text only 7"),
        "{err:?}"
    );
    let w = err.worker_error().unwrap();
    assert!(!w.has_value());
    assert_eq!(w.type_name(), std::any::type_name::<TextOnly>());

    let pool = Pool::new(1).unwrap();
    let err = pool.apply(text_only, (8,)).unwrap_err();
    assert!(
        matches!(&err, Error::TaskFailed { message, index: None, .. } if message == "text only 8"),
        "{err:?}"
    );

    // The type is right, but the worker could not send it: the error says so.
    let err = pool.apply(read_only, ()).unwrap_err();
    assert_eq!(err.to_string(), "task failed: read only");
    let why = err.downcast::<ReadOnly>().unwrap_err();
    assert!(matches!(why, Error::InvalidArgument { .. }), "{why:?}");
    assert!(
        why.to_string()
            .contains("does not implement `serde::Serialize`"),
        "{why}"
    );
}

#[test]
fn pool_apply_and_async_result_carry_the_value() {
    let _g = shared();
    let pool = Pool::new(2).unwrap();
    let err = pool.apply(hash, (13,)).unwrap_err();
    assert_eq!(err.downcast::<HashError>().unwrap(), too_big(13));
    assert_eq!(err.item_index(), None, "a single call has no input index");
    assert_eq!(err.to_string(), "task failed: too big: 13");

    let r = pool.apply_async(hash, (23,)).unwrap();
    assert!(r.wait_timeout(LONG));
    let err = r.get().unwrap_err();
    assert_eq!(err.downcast::<HashError>().unwrap(), too_big(23));

    // `map_async`: the whole map fails with the failing item's error and index.
    let r = pool.map_async(hash, 0..8).unwrap();
    assert!(r.wait_timeout(LONG));
    let err = r.get().unwrap_err();
    assert_eq!(err.item_index(), Some(3));
    assert_eq!(err.downcast::<HashError>().unwrap(), too_big(3));
}

#[test]
fn pool_map_names_the_failing_item_whatever_the_chunk_size() {
    let _g = shared();
    let pool = Pool::new(2).unwrap();
    for chunksize in [1, 2, 3, 8] {
        let err = pool.map_chunked(hash, 0..8, chunksize).unwrap_err();
        assert!(
            matches!(&err, Error::TaskFailed { index: Some(3), .. }),
            "chunksize {chunksize}: {err:?}"
        );
        assert_eq!(err.to_string(), "task failed on input item 3: too big: 3");
        assert_eq!(err.downcast::<HashError>().unwrap(), too_big(3));
    }
    let err = pool.starmap(hash, (0..8).map(|x| (x,))).unwrap_err();
    assert_eq!(err.item_index(), Some(3));
}

#[test]
fn imap_unordered_says_which_input_failed() {
    let _g = shared();
    let pool = Pool::new(2).unwrap();
    let expected: BTreeSet<usize> = [3, 8, 13, 18].into();

    // One item per task: one error per failing input, each naming it.
    let mut failed = BTreeSet::new();
    let mut it = pool.imap_unordered(hash, 0..20).unwrap();
    while let Some(r) = it.next_timeout(LONG) {
        match r {
            Ok(v) => assert_ne!(v % 50, 30),
            Err(e) => {
                let i = e.item_index().expect("an index");
                assert_eq!(e.downcast::<HashError>().unwrap(), too_big(i as u64));
                assert!(failed.insert(i), "item {i} reported twice");
            }
        }
    }
    assert_eq!(failed, expected);

    // Chunks of 3: a failing item fails alone, naming itself; the rest of its chunk succeeds.
    let mut errors = 0;
    let mut failed = BTreeSet::new();
    let mut it = pool.imap_unordered_chunked(hash, 0..20, 3).unwrap();
    while let Some(r) = it.next_timeout(LONG) {
        if let Err(e) = r {
            errors += 1;
            let i = e.item_index().expect("an index");
            assert_eq!(e.downcast::<HashError>().unwrap(), too_big(i as u64));
            failed.insert(i);
        }
    }
    assert_eq!(failed, expected);
    assert_eq!(errors, 4, "only the four failing items");

    // In order too.
    let firsts: Vec<Option<usize>> = pool
        .imap(hash, 0..10)
        .unwrap()
        .filter_map(|r| r.err().map(|e| e.item_index()))
        .collect();
    assert_eq!(firsts, vec![Some(3), Some(8)]);
}

#[test]
fn executor_futures_carry_the_value_and_map_the_index() {
    let _g = shared();
    let ex = mp::ProcessPoolExecutor::new(2).unwrap();
    let f = ex.submit(missing, ("c".to_string(),)).unwrap();
    assert!(f.wait(Some(LONG)));
    let err = f.result().unwrap_err();
    assert_eq!(
        err.downcast::<HashError>().unwrap(),
        HashError::Missing("c".into())
    );
    assert_eq!(err.item_index(), None);
    assert!(err.downcast::<u64>().is_err());

    let results: Vec<_> = ex.map(hash, 0..10).timeout(LONG).collect();
    let failed: Vec<(usize, HashError)> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| (e.item_index().unwrap(), e.downcast::<HashError>().unwrap()))
        .collect();
    assert_eq!(failed, vec![(3, too_big(3)), (8, too_big(8))]);
    ex.shutdown(true, false);
}

#[test]
fn a_result_alias_fails_with_the_switch_and_can_be_a_value() {
    let _g = shared();
    let mut p = started(mp::Process::new(aliased, (0,)));
    let err = join(&mut p).unwrap_err();
    assert_eq!(err.downcast::<String>().unwrap(), "zero is refused");
    assert_eq!(p.exitcode(), Some(1));
    let mut p = started(mp::Process::new(aliased, (4,)));
    assert_eq!(join(&mut p).unwrap(), 5);

    // `fallible = false`: the `Result` is the value; the process succeeds.
    let mut p = started(mp::Process::new(result_as_value, (2,)));
    let back: Result<u32, String> = join(&mut p).unwrap();
    assert_eq!(back, Err("value 2".to_string()));
    assert_eq!(p.exitcode(), Some(0));

    let pool = Pool::new(1).unwrap();
    let err = pool.map(aliased, vec![1, 0, 2]).unwrap_err();
    assert_eq!(err.item_index(), Some(1));
}

/// Two workers named `inner` in two function bodies of one module.
fn first_body() -> impl Worker<Args = (u64,), Output = u64> {
    #[mp::worker]
    fn inner(x: u64) -> u64 {
        x + 1
    }
    inner
}

fn second_body() -> impl Worker<Args = (u64,), Output = u64> {
    #[mp::worker]
    fn inner(x: u64) -> u64 {
        x * 100
    }
    inner
}

#[test]
fn workers_of_one_name_in_two_function_bodies_are_distinct() {
    let _g = shared();
    let (a, b) = (first_body(), second_body());
    assert_ne!(a.name(), b.name());
    assert!(
        a.name().starts_with("worker_errors::inner@"),
        "{}",
        a.name()
    );
    let mut p = started(mp::Process::new(a, (5,)));
    assert_eq!(join(&mut p).unwrap(), 6);
    let mut p = started(mp::Process::new(b, (5,)));
    assert_eq!(join(&mut p).unwrap(), 500);
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.map(a, [1, 2]).unwrap(), vec![2, 3]);
    assert_eq!(pool.map(b, [1, 2]).unwrap(), vec![100, 200]);
}

#[test]
fn a_worker_that_exits_zero_is_not_called_a_failure_with_code_zero() {
    let _g = shared();
    let mut p = started(mp::Process::new(exits_zero, ()));
    let err = join(&mut p).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProcessFailed {
                exitcode: 0,
                error: None,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("the process exited with code 0 before its worker returned a result"),
        "{text}"
    );
    assert!(!text.contains("failed"), "{text}");
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    greeting: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum Other {
    A,
    B,
}

#[test]
fn a_type_mismatch_over_a_connection_names_the_expected_type_and_what_arrived() {
    let l = mp::Listener::bind("127.0.0.1:0", b"key").unwrap();
    let address = l.address().clone();
    let sender = std::thread::spawn(move || {
        let c = mp::Client::connect::<Hello>(address, b"key").unwrap();
        c.send(&Hello {
            greeting: "hello".into(),
        })
        .unwrap();
        c
    });
    let conn = l.accept_timeout::<Other>(LONG).unwrap();
    assert!(conn.poll(Some(LONG)).unwrap());
    let err = conn.recv().unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("expected `worker_errors::Other`"), "{text}");
    assert!(
        text.contains("a message of 6 bytes (05 68 65 6c 6c 6f)"),
        "{text}"
    );
    assert!(text.contains("both ends must use the same type"), "{text}");
    assert!(!text.contains("Serde Deserialization Error"), "{text}");
    drop(sender.join().unwrap());
}
