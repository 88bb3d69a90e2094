//! Bad input and dying children: every case is an `mp::Error` (or a clean non-zero exit of the
//! child that received it), never a panic or a hang of the parent.

mod common;

use common::*;
use mp::{Error, StartMethod, Worker};

#[mp::worker]
fn echo_len(data: Vec<u8>) -> usize {
    data.len()
}

#[mp::worker]
fn make_big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[mp::worker]
fn greeting() -> String {
    "not a number".into()
}

#[mp::worker]
fn die_by(how: String) {
    match how.as_str() {
        "abort" => std::process::abort(),
        "sigkill" => {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        "segfault" => {
            // Rust's runtime handles SIGSEGV (stack overflow detection) in a forked copy of the
            // test binary; put the default back so the signal kills, as a real crash would.
            use nix::sys::signal::{SigHandler, Signal, raise, signal};
            // SAFETY: SIG_DFL installs no handler code.
            let _ = unsafe { signal(Signal::SIGSEGV, SigHandler::SigDfl) };
            let _ = raise(Signal::SIGSEGV);
        }
        _ => std::process::exit(3),
    }
}

fn raw(frame: &[u8], close_after: bool) -> (i32, Option<String>) {
    let _g = shared();
    mp::__private::run_raw_bootstrap(frame, close_after).unwrap()
}

fn encoded_args(len: usize) -> Vec<u8> {
    // postcard of `(Vec<u8>,)` with `len` zero bytes: a varint length, then the bytes.
    assert!(len < 128);
    let mut v = vec![len as u8];
    v.extend(std::iter::repeat_n(0, len));
    v
}

#[test]
fn well_formed_raw_bootstrap_runs_the_worker() {
    let frame = mp::__private::bootstrap_frame(echo_len.name(), &encoded_args(5)).unwrap();
    assert_eq!(raw(&frame, false), (0, Some("returned".into())));
}

#[test]
fn unknown_worker_in_bootstrap_is_a_failure_report() {
    let frame = mp::__private::bootstrap_frame("faults::no_such_worker", &[]).unwrap();
    let (code, report) = raw(&frame, false);
    assert_eq!(code, 1);
    let report = report.unwrap();
    assert!(
        report.contains("no worker named `faults::no_such_worker`"),
        "{report}"
    );
}

#[test]
fn truncated_bootstrap_frame_exits_1() {
    let frame = mp::__private::bootstrap_frame(echo_len.name(), &encoded_args(5)).unwrap();
    assert_eq!(raw(&frame[..frame.len() / 2], true), (1, None));
    assert_eq!(raw(&frame[..7], true), (1, None));
    assert_eq!(raw(&[], true), (1, None));
}

#[test]
fn corrupt_frame_magic_exits_1() {
    let mut frame = mp::__private::bootstrap_frame(echo_len.name(), &encoded_args(5)).unwrap();
    frame[13] ^= 0xFF;
    assert_eq!(raw(&frame, true), (1, None));
}

#[test]
fn oversized_length_prefix_exits_1_without_allocating() {
    let mut frame = mp::__private::bootstrap_frame(echo_len.name(), &encoded_args(5)).unwrap();
    frame[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert_eq!(raw(&frame, true), (1, None));
}

#[test]
fn corrupt_bootstrap_payload_is_a_failure_report() {
    let mut frame = mp::__private::bootstrap_frame(echo_len.name(), &encoded_args(5)).unwrap();
    let len = frame.len();
    for b in &mut frame[16..len] {
        *b = 0xFF;
    }
    let (code, report) = raw(&frame, true);
    assert_eq!(code, 1);
    assert!(report.unwrap().contains("corrupt bootstrap"));
}

#[test]
fn arguments_that_do_not_decode_are_a_failure_report() {
    let frame = mp::__private::bootstrap_frame(echo_len.name(), &[0xFF, 0xFF]).unwrap();
    let (code, report) = raw(&frame, false);
    assert_eq!(code, 1);
    assert!(report.unwrap().contains("arguments could not be decoded"));
}

for_each_method!(child_that_dies_before_reporting, |ctx: mp::Context| {
    for (how, code) in [
        ("abort", -6),
        ("sigkill", -9),
        ("segfault", -11),
        ("exit", 3),
    ] {
        let mut p = started(ctx.process(die_by, (how.to_string(),)));
        match join(&mut p) {
            Err(Error::ProcessFailed {
                exitcode, message, ..
            }) => {
                assert_eq!(exitcode, code, "{how}: {message}");
            }
            other => panic!("{how}: expected ProcessFailed, got {other:?}"),
        }
    }
});

#[test]
fn unknown_worker_is_refused_at_start() {
    let _g = shared();
    fn unregistered() {}
    let fake = mp::WorkerFn::<fn(), (), ()>::new("faults::unregistered", unregistered);
    for m in mp::get_all_start_methods() {
        let mut p = mp::get_context(m).process(fake, ());
        let err = p.start().unwrap_err();
        assert!(matches!(err, Error::UnknownWorker { .. }), "{err}");
        assert!(err.to_string().contains("faults::unregistered"), "{err}");
    }
}

#[test]
fn result_of_the_wrong_type_is_a_codec_error() {
    let _g = shared();
    fn typed_wrong() -> u64 {
        0
    }
    // Same registered name as `greeting`, which returns a String; the parent expects u64.
    let liar = mp::WorkerFn::<fn() -> u64, (), u64>::new(greeting.name(), typed_wrong);
    let mut p = started(mp::get_context(StartMethod::Spawn).process(liar, ()));
    let err = join(&mut p).unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    assert_eq!(p.exitcode(), Some(0));
    let mut ok = started(mp::get_context(StartMethod::Spawn).process(greeting, ()));
    assert_eq!(join(&mut ok).unwrap(), "not a number");
}

for_each_method!(
    large_arguments_and_results_cross_whole,
    |ctx: mp::Context| {
        // Larger than any socket buffer, so both directions must stream while the peer reads.
        let n = 4 << 20;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let mut p = started(ctx.process(echo_len, (data,)));
        assert_eq!(join(&mut p).unwrap(), n);
        let mut p = started(ctx.process(make_big, (n,)));
        let big = join(&mut p).unwrap();
        assert_eq!(big.len(), n);
        assert!(big.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }
);
