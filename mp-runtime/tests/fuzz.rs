//! Property tests of every decoder of bytes that come from another process: the frame decoder,
//! the pool's frame reader, both sides of the handshake, the codec (with its descriptor table)
//! and a pool worker's input. Inputs are arbitrary bytes and well-formed messages with random
//! damage, with descriptors attached.
//!
//! Each case asserts that the decoder does not panic, fails only with the errors it documents
//! (`Protocol`, `MessageTooLarge`, `Closed`, `Codec`, `Authentication`), makes no allocation
//! larger than [`MAX_ALLOCATION`] (a length taken from the input and trusted would), and leaves
//! no descriptor open (the count of /proc/self/fd is the same after the case as before).
//!
//! Cases per property: `MP_FUZZ_CASES` (default 256, a few seconds in all); raise it for a
//! longer run, e.g. `MP_FUZZ_CASES=100000 cargo test -p mp-runtime --release --test fuzz`.
//! (A `cargo fuzz` target would need a nightly toolchain, which this project does not use.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mp::{Error, Worker};
use mp_runtime::__private::fuzz;
use proptest::collection::vec;
use proptest::prelude::*;

/// The largest single allocation a decoder may make on inputs of a few KiB: a buffer of a
/// frame reader, or serde's cautious preallocation (1 MiB), with room to spare.
const MAX_ALLOCATION: usize = 2 << 20;

/// The largest frame payload the frame decoder is asked to accept.
const MAX_LEN: u64 = 4096;

/// Records the largest allocation made since the last reset.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator; only sizes are recorded.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One property at a time, so that the descriptor counts see only the case being checked.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn config() -> ProptestConfig {
    let cases = std::env::var("MP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // No regression files: reading them opens descriptors while other cases count theirs.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// `n` descriptors to attach to a message.
fn devnulls(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

/// Runs every case of `strategy` through `test` (shrinking a failure to a minimal input), alone:
/// generation, cases and the reports of failures, so that the descriptor counts of [`check`]
/// see only the case being checked.
fn property<S>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// Runs one case: no descriptor may be left open by it, and no allocation may exceed the bound.
fn check<R>(case: impl FnOnce() -> R) -> R {
    let before = open_fds();
    LARGEST.store(0, Ordering::Relaxed);
    let r = case();
    let largest = LARGEST.load(Ordering::Relaxed);
    let after = open_fds();
    assert!(
        largest <= MAX_ALLOCATION,
        "an allocation of {largest} bytes"
    );
    assert_eq!(before, after, "descriptors leaked");
    r
}

/// Whether HMAC treats two keys as the same: a key shorter than the hash's block (64 bytes) is
/// padded with zero bytes, so `b""` and `b"\0"` are one key (in Python's handshake too).
fn same_hmac_key(a: &[u8], b: &[u8]) -> bool {
    let trim = |k: &[u8]| k.len() - k.iter().rev().take_while(|&&b| b == 0).count();
    a.len() <= 64 && b.len() <= 64 && a[..trim(a)] == b[..trim(b)]
}

fn leb128(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Applies random damage to `bytes`: one byte XORed, and a cut.
fn damage(
    mut bytes: Vec<u8>,
    at: prop::sample::Index,
    xor: u8,
    cut: Option<prop::sample::Index>,
) -> Vec<u8> {
    if !bytes.is_empty() {
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
    }
    bytes
}

/// One piece of a stream of frames: a good frame, a header with any fields, or garbage.
fn frame_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (vec(any::<u8>(), 0..300), 0usize..3).prop_map(|(payload, nfds)| {
            let mut v = fuzz::frame_header(payload.len(), nfds).to_vec();
            v.extend_from_slice(&payload);
            v
        }),
        (any::<u64>(), any::<u32>(), vec(any::<u8>(), 0..64)).prop_map(|(len, nfds, rest)| {
            let mut v = fuzz::frame_header(0, 0).to_vec();
            v[..8].copy_from_slice(&len.to_le_bytes());
            v[8..12].copy_from_slice(&nfds.to_le_bytes());
            v.extend_from_slice(&rest);
            v
        }),
        vec(any::<u8>(), 0..64),
    ]
}

/// A stream of frame pieces, damaged or not.
fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(frame_piece(), 0..6),
        any::<prop::sample::Index>(),
        prop_oneof![Just(0u8), any::<u8>()],
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(pieces, at, xor, cut)| damage(pieces.concat(), at, xor, cut))
}

#[test]
fn frame_decoder() {
    property((frame_stream(), 0usize..4), |(bytes, nfds)| {
        let (lens, end) = check(|| fuzz::recv_frames(&bytes, &devnulls(nfds), MAX_LEN));
        prop_assert!(
            matches!(
                end,
                Error::Closed | Error::Protocol { .. } | Error::MessageTooLarge { .. }
            ),
            "{end:?}"
        );
        prop_assert!(lens.iter().all(|&l| l as u64 <= MAX_LEN));
        Ok(())
    });
}

#[test]
fn pool_frame_reader() {
    property((frame_stream(), 0usize..4), |(bytes, nfds)| {
        let (_, end) = check(|| fuzz::read_pool_frames(&bytes, &devnulls(nfds)));
        prop_assert!(
            matches!(
                end,
                None | Some(Error::Protocol { .. } | Error::MessageTooLarge { .. })
            ),
            "{end:?}"
        );
        Ok(())
    });
}

/// Whatever one side is fed, it authenticates only a peer that answered its random challenge,
/// which bytes made before the challenge cannot do.
#[test]
fn handshake_fed_arbitrary_bytes() {
    let input = (
        any::<bool>(),
        vec(any::<u8>(), 0..40),
        vec(frame_stream(), 0..4),
    );
    property(input, |(server, key, chunks)| {
        let r = check(|| fuzz::handshake_feed(server, &key, &chunks, |_| ()));
        match r {
            Ok(authenticated) => prop_assert!(!authenticated),
            Err(e) => prop_assert!(matches!(e, Error::Authentication { .. }), "{e:?}"),
        }
        Ok(())
    });
}

/// Two honest sides agree exactly when their keys match and nothing was damaged in transit.
#[test]
fn handshake_sides_against_each_other() {
    let input = (
        vec(any::<u8>(), 0..8),
        any::<bool>(),
        vec(any::<u8>(), 0..8),
        0usize..400,
        prop_oneof![Just(0u8), any::<u8>()],
        1usize..80,
    );
    property(
        input,
        |(server_key, same_key, client_key, at, xor, chunk)| {
            let client_key = if same_key {
                server_key.clone()
            } else {
                client_key
            };
            let (s, c) = check(|| fuzz::handshake_pair(&server_key, &client_key, at, xor, chunk));
            for r in [&s, &c] {
                if let Err(e) = r {
                    prop_assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
                }
            }
            // The whole exchange: challenge (67 bytes), digest (48), welcome (25), each way.
            const EXCHANGE: usize = 2 * (67 + 48 + 25);
            let both = matches!((&s, &c), (Ok(true), Ok(true)));
            let damaged = xor != 0 && at < EXCHANGE;
            let same = same_hmac_key(&server_key, &client_key);
            if same && !damaged {
                prop_assert!(both, "{s:?} {c:?}");
            }
            if !same {
                prop_assert!(
                    !matches!(s, Ok(true)) && !matches!(c, Ok(true)),
                    "{s:?} {c:?}"
                );
            }
            if damaged {
                prop_assert!(!both, "damage at byte {at} went unnoticed");
            }
            Ok(())
        },
    );
}

/// Both sides on a real socket, against a peer that sends anything and hangs up.
#[test]
fn handshake_on_a_socket() {
    property(
        (any::<bool>(), frame_stream(), 0usize..3),
        |(server, bytes, nfds)| {
            let r = check(|| {
                let fds = devnulls(nfds);
                fuzz::handshake_on_socket(server, b"key", &bytes, &fds, Duration::from_secs(30))
            });
            prop_assert!(matches!(r, Err(Error::Authentication { .. })), "{r:?}");
            Ok(())
        },
    );
}

type Plain = (
    u64,
    String,
    Vec<u8>,
    Option<bool>,
    std::collections::HashMap<String, Vec<u32>>,
);
type WithHandles = (Vec<mp::Handle>, Option<mp::Handle>, Result<u32, String>);

/// Encodings of the codec's types: a valid message, or arbitrary bytes; then damaged.
fn codec_input() -> impl Strategy<Value = Vec<u8>> {
    let valid = (any::<u64>(), ".{0,20}", vec(any::<u8>(), 0..40), 0usize..4).prop_map(
        |(n, s, b, handles)| {
            let mut map = std::collections::HashMap::new();
            map.insert(s.clone(), vec![n as u32]);
            let plain: Plain = (n, s, b, Some(true), map);
            let mut bytes = fuzz::encode(&plain).unwrap().0;
            // A handle is encoded as its index in the message's descriptor table: these are
            // the bytes of a `WithHandles`, made without opening descriptors (generation runs
            // beside other cases, whose descriptor counts it would disturb).
            let with: (Vec<u32>, Option<u32>, Result<u32, String>) =
                ((0..handles as u32).collect(), None, Ok(n as u32));
            bytes.extend(fuzz::encode(&with).unwrap().0);
            bytes
        },
    );
    (
        prop_oneof![valid, vec(any::<u8>(), 0..200)],
        any::<prop::sample::Index>(),
        prop_oneof![Just(0u8), any::<u8>()],
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(bytes, at, xor, cut)| damage(bytes, at, xor, cut))
}

fn assert_codec<T: std::fmt::Debug>(r: mp::Result<T>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!(matches!(e, Error::Codec { .. }), "{e:?}");
    }
    Ok(())
}

#[test]
fn codec_with_descriptor_table() {
    property((codec_input(), 0usize..5), |(bytes, nfds)| {
        check(|| -> Result<(), TestCaseError> {
            assert_codec(fuzz::decode::<Plain>(&bytes, devnulls(nfds)))?;
            assert_codec(fuzz::decode::<WithHandles>(&bytes, devnulls(nfds)))?;
            assert_codec(fuzz::decode::<(Plain, WithHandles)>(&bytes, devnulls(nfds)))?;
            assert_codec(fuzz::decode::<mp::Connection<u8>>(&bytes, devnulls(nfds)))?;
            assert_codec(fuzz::decode::<Vec<String>>(&bytes, devnulls(nfds)))?;
            Ok(())
        })
    });
}

/// The worker a fuzzed pool job may name: it takes data and handles, and drops the handles.
#[mp::worker]
fn fuzz_echo(data: Vec<u8>, handles: Vec<mp::Handle>) -> usize {
    data.len() + handles.len()
}

/// One item of a job: `nfds len bytes`, with a valid argument tuple or garbage.
fn job_item() -> impl Strategy<Value = (Vec<u8>, usize)> {
    prop_oneof![
        (vec(any::<u8>(), 0..30), 0usize..3).prop_map(|(data, handles)| {
            // The bytes of `(data, handles)`: each handle is its index in the table.
            let args = (data, (0..handles as u32).collect::<Vec<u32>>());
            let (bytes, _) = fuzz::encode(&args).unwrap();
            let mut item = Vec::new();
            leb128(&mut item, handles as u64);
            leb128(&mut item, bytes.len() as u64);
            item.extend_from_slice(&bytes);
            (item, handles)
        }),
        (vec(any::<u8>(), 0..30), 0u64..3).prop_map(|(garbage, nfds)| {
            let mut item = Vec::new();
            leb128(&mut item, nfds);
            leb128(&mut item, garbage.len() as u64);
            item.extend_from_slice(&garbage);
            (item, nfds as usize)
        }),
    ]
}

/// A `Job` frame: a known or unknown worker, either mode, any item count. Returns the frame and
/// the descriptors its items announce.
fn job_frame() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        any::<u64>(),
        prop_oneof![
            Just(fuzz_echo.name().as_bytes().to_vec()),
            vec(any::<u8>(), 0..12)
        ],
        0u8..3,
        vec(job_item(), 0..4),
        prop_oneof![Just(None), any::<u64>().prop_map(Some)],
        prop_oneof![Just(0u64), Just(0u64), 1u64..2_000_000],
    )
        .prop_map(|(id, name, mode, items, nitems, limit_ns)| {
            let mut payload = vec![1u8];
            leb128(&mut payload, id);
            leb128(&mut payload, name.len() as u64);
            payload.extend_from_slice(&name);
            payload.push(mode);
            // No time limit, or one short enough to expire during the job.
            leb128(&mut payload, limit_ns);
            let nfds: usize = items.iter().map(|(_, n)| n).sum();
            leb128(&mut payload, nitems.unwrap_or(items.len() as u64));
            for (item, _) in items {
                payload.extend_from_slice(&item);
            }
            let mut frame = fuzz::frame_header(payload.len(), nfds).to_vec();
            frame.extend_from_slice(&payload);
            (frame, nfds)
        })
}

/// A pool worker's loop, fed jobs as a pool (or anyone who got hold of its socket) could send
/// them: it answers or stops with a protocol error, and never panics or leaks.
#[test]
fn pool_worker_input() {
    let input = (
        vec(job_frame(), 0..4),
        prop_oneof![Just(Vec::new()), Just(vec![2u8]), frame_piece()],
        any::<prop::sample::Index>(),
        prop_oneof![Just(0u8), Just(0u8), any::<u8>()],
        0usize..2,
    );
    property(input, |(jobs, tail, at, xor, extra_fds)| {
        let nfds: usize = jobs.iter().map(|(_, n)| n).sum::<usize>() + extra_fds;
        let mut bytes: Vec<u8> = jobs.into_iter().flat_map(|(f, _)| f).collect();
        bytes.extend_from_slice(&tail);
        let bytes = damage(bytes, at, xor, None);
        let (end, _answered) = check(|| fuzz::worker_loop(&bytes, &devnulls(nfds.min(250))));
        if let Err(e) = end {
            prop_assert!(
                matches!(
                    e,
                    Error::Protocol { .. } | Error::MessageTooLarge { .. } | Error::Closed
                ),
                "{e:?}"
            );
        }
        Ok(())
    });
}
