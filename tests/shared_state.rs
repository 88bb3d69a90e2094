//! Value, Array, SharedMemory, ShareableList, SharedMemoryManager and the resource tracker,
//! ported from CPython's `_TestValue`, `_TestArray`, `_TestSharedCTypes`, `_TestSharedMemory`
//! and `TestResourceTracker` (rows VA-, SH-, RT-), under every start method where another
//! process takes part; plus what Python does not promise: after a `kill -9` of a process that
//! owns objects of every kind, `/dev/shm` holds nothing of it; a `Value`'s guard is the only way
//! to its memory while it lives; and shared memory that cannot be had, or that another process
//! tries to cut short, is an error rather than a SIGBUS.
//!
//! What changed in the port: typecodes are Rust types (`'i'` → `i32`, …; the table is in the
//! `Array` docs), so an unknown typecode (VA-03) and `get_lock()` on a raw value (VA-02, VA-06)
//! are compile errors; ctypes structures are `#[repr(C)]` `Pod` structs (VA-07);
//! `sharedctypes.copy` is `RawArray::from_slice(&a.to_vec())` (VA-08); `get_obj()` is the guard
//! of `lock()`, since every access to a locked object goes through its lock, and
//! `Array(..., lock=l)` copies its items into new memory (`Array::with_lock(&items, l)`), so
//! that no memory has two locks (VA-02). `SharedMemory` errors are
//! `Error::InvalidArgument` (ValueError) and `Error::Io` of kind `AlreadyExists` / `NotFound`;
//! passing a segment to a worker sends its descriptor, so the child maps it even after the name
//! is unlinked (SH-10, SH-21 assert that, and that opening by name fails). Attachers never
//! unlink (SH-14 asserts the opposite of Python). `ShareableList<T>` is typed (mixed types go in
//! an enum): SH-15..SH-20 use `Option<String>` and integers; there is no `format` string
//! (SH-16) and no negative indexing.
//!
//! Not ported: VA-09 (CPython's heap allocator: every object here is its own memfd), VA-10
//! (manager proxies), SH-23 (there is no manager server process to receive SIGINT), SH-24 (one
//! tracker per process by construction), RT-04 (each process starts its own tracker on demand,
//! so no child ever depends on its parent's), RT-06 (the tracker outlives its creator by design,
//! so its exit status has no observer), RT-08 (the pool is not part of this module).

mod common;

use std::collections::HashSet;
use std::io::ErrorKind;

use common::*;
use mp::shared_memory::{ShareableList, SharedMemory, SharedMemoryManager};
use mp::{
    Array, Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Queue, RLock, RawArray,
    RawValue, Semaphore, Value,
};

#[derive(Clone, Copy, Debug, PartialEq, mp::Pod, mp::Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
}

fn io_kind(r: mp::Result<impl std::fmt::Debug>) -> ErrorKind {
    match r {
        Err(Error::Io { source, .. }) => source.kind(),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

fn shm_names() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mp-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---- workers -------------------------------------------------------------------------------

#[mp::worker]
fn write_values(i: Value<i32>, d: Value<f64>, h: RawValue<i16>, q: RawValue<i64>, c: Value<u8>) {
    i.set(-7).unwrap();
    d.set(2.5).unwrap();
    h.set(-300);
    q.set(1 << 40);
    c.set(b'y').unwrap();
}

#[mp::worker]
fn prefix_sums(a: Array<i32>, raw: RawArray<i32>) {
    let mut g = a.lock().unwrap();
    for k in 1..g.len() {
        g[k] += g[k - 1];
    }
    drop(g);
    for k in 1..raw.len() {
        raw.set(k, raw.get(k).unwrap() + raw.get(k - 1).unwrap())
            .unwrap();
    }
}

#[mp::worker]
fn double_everything(
    d: Value<f64>,
    big: Value<i64>,
    p: Value<Point>,
    arr: Array<f64>,
    raw_p: RawValue<Point>,
    bytes: Array<u8>,
) {
    *d.lock().unwrap() *= 2.0;
    *big.lock().unwrap() *= 2;
    let mut g = p.lock().unwrap();
    g.x *= 2.0;
    g.y *= 2.0;
    drop(g);
    for v in arr.lock().unwrap().iter_mut() {
        *v *= 2.0;
    }
    let rp = raw_p.get();
    raw_p.set(Point {
        x: rp.x * 2.0,
        y: rp.y * 2.0,
    });
    bytes.lock().unwrap().make_ascii_uppercase();
}

#[mp::worker]
fn write_shm(shm: SharedMemory, by_name: String, data: Vec<u8>) {
    shm.write_at(0, &data).unwrap();
    let again = SharedMemory::open(&by_name).unwrap();
    assert!(!again.is_owner());
    again.write_at(100, &data).unwrap();
}

#[mp::worker]
fn attach_and_exit(name: String) -> usize {
    SharedMemory::open(&name).unwrap().size()
}

#[mp::worker]
fn read_passed(shm: SharedMemory) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    shm.read_at(0, &mut b).unwrap();
    b
}

#[mp::worker]
fn list_child(l: ShareableList<Option<String>>) -> Vec<Option<String>> {
    l.set(0, &Some("child".into())).unwrap();
    l.to_vec().unwrap()
}

#[mp::worker]
fn create_named_then_die(q: Queue<Vec<String>>, prefix: String) {
    let a = SharedMemory::create_named(&format!("{prefix}-a"), 4096).unwrap();
    let b = SharedMemory::create(100).unwrap();
    let l = ShareableList::create_named(&format!("{prefix}-l"), [1u64, 2, 3]).unwrap();
    let m = SharedMemoryManager::new();
    let ms = m.shared_memory(64).unwrap();
    q.put(vec![
        a.name().into(),
        b.name().into(),
        l.name().into(),
        ms.name().into(),
    ])
    .unwrap();
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    unreachable!("{a:?} {b:?} {l:?} {m:?}");
}

/// Tries to shrink every memfd of a `Value` in this process (safe code can: they are files in
/// /proc/self/fd); returns how many it found and the errors it got.
#[mp::worker]
fn shrink_values(v: Value<u64>) -> (usize, Vec<Option<i32>>) {
    let _keep = &v;
    let mut found = 0;
    let mut errors = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("/memfd:mp-value") {
            found += 1;
            let r = std::fs::OpenOptions::new()
                .write(true)
                .open(entry.path())
                .and_then(|f| f.set_len(0));
            errors.push(r.err().map(|e| e.raw_os_error().unwrap_or(0)));
        }
    }
    (found, errors)
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum FullShm {
    /// The mount namespace with a small /dev/shm could not be made: why.
    Unavailable(String),
    /// What `SharedMemory::create` of 8 MiB and of 64 KiB returned, and what /dev/shm held
    /// after them.
    Tried {
        large: Result<usize, String>,
        small: Result<usize, String>,
        left: Vec<String>,
    },
}

/// In a private mount namespace whose /dev/shm is a 1 MiB tmpfs: creates a segment larger than
/// that, and one that fits.
#[mp::worker]
fn create_on_a_small_dev_shm() -> FullShm {
    if let Err(why) = small_dev_shm() {
        return FullShm::Unavailable(why);
    }
    let size = |r: mp::Result<SharedMemory>| match r {
        Ok(shm) => Ok(shm.size()),
        Err(Error::Io { context, source }) => {
            Err(format!("{context}: {source}: {:?}", source.kind()))
        }
        Err(e) => Err(format!("{e:?}")),
    };
    let large = size(SharedMemory::create(8 << 20));
    let small = size(SharedMemory::create(64 << 10));
    FullShm::Tried {
        large,
        small,
        left: shm_names().into_iter().collect(),
    }
}

/// Enters a new mount namespace (changes stay in it: propagation is private) and mounts a 1 MiB
/// tmpfs on /dev/shm.
fn small_dev_shm() -> Result<(), String> {
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: unshare(2) takes flags only; this process is a single-threaded child.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(os_error("unshare(CLONE_NEWNS)"));
    }
    // SAFETY: NUL-terminated literals; null source, type and data are allowed for a change of
    // propagation.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(os_error("make / private"));
    }
    // SAFETY: NUL-terminated literals; tmpfs takes its options as a C string.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1m".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(os_error("mount a 1 MiB tmpfs on /dev/shm"));
    }
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Everything {
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    bsem: BoundedSemaphore,
    cond: Condition,
    event: Event,
    barrier: Barrier,
    value: Value<u64>,
    raw: RawValue<u32>,
    array: Array<f32>,
    raw_array: RawArray<u8>,
}

#[mp::worker]
fn own_everything_then_die(q: Queue<Everything>) {
    let e = Everything {
        lock: Lock::new().unwrap(),
        rlock: RLock::new().unwrap(),
        sem: Semaphore::new(1).unwrap(),
        bsem: BoundedSemaphore::new(1).unwrap(),
        cond: Condition::new().unwrap(),
        event: Event::new().unwrap(),
        barrier: Barrier::new(2).unwrap(),
        value: Value::new(41).unwrap(),
        raw: RawValue::new(7).unwrap(),
        array: Array::from_slice(&[1.0, 2.0]).unwrap(),
        raw_array: RawArray::from_slice(b"abc").unwrap(),
    };
    e.lock.acquire().unwrap().leak();
    e.rlock.acquire().unwrap().leak();
    e.value.lock().unwrap().leak_for_test();
    e.sem.acquire();
    e.event.set();
    q.put(e).unwrap();
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}

trait LeakForTest {
    fn leak_for_test(self);
}

impl<T> LeakForTest for mp::ValueGuard<'_, T> {
    fn leak_for_test(self) {
        std::mem::forget(self);
    }
}

// ---- 13. Value and Array -------------------------------------------------------------------

for_each_method!(va_01_values_written_by_a_child, |ctx: mp::Context| {
    let i = Value::new(25i32).unwrap();
    let d = Value::new(1.25f64).unwrap();
    let h = RawValue::new(-2i16).unwrap();
    let q = RawValue::new(1i64 << 33).unwrap();
    let c = Value::new(b'x').unwrap();
    assert_eq!((i.get().unwrap(), d.get().unwrap()), (25, 1.25));
    assert_eq!((h.get(), q.get(), c.get().unwrap()), (-2, 1 << 33, b'x'));
    let mut p = started(ctx.process(
        write_values,
        (i.clone(), d.clone(), h.clone(), q.clone(), c.clone()),
    ));
    join(&mut p).unwrap();
    assert_eq!((i.get().unwrap(), d.get().unwrap()), (-7, 2.5));
    assert_eq!((h.get(), q.get(), c.get().unwrap()), (-300, 1 << 40, b'y'));
});

#[test]
fn va_02_06_locks_of_values_and_arrays() {
    let v = Value::new(1u32).unwrap();
    assert!(!v.get_lock().locked());
    // Python's `get_obj()` is the guard: the memory has no lockless handle.
    assert_eq!(*v.lock().unwrap(), 1);
    let shared = Lock::new().unwrap();
    let a = Value::with_lock(2u32, shared.clone()).unwrap();
    let b = Array::with_lock(&[0u8; 3], shared.clone()).unwrap();
    assert!(a.get_lock().same_as(&shared) && b.get_lock().same_as(&shared));
    assert!(!v.get_lock().same_as(&shared));
    let g = a.lock().unwrap();
    assert!(shared.locked());
    assert!(b.get_lock().try_acquire().unwrap().is_none());
    drop(g);
    assert_eq!(b.to_vec().unwrap(), [0, 0, 0]);
    assert!(format!("{v:?}").starts_with("<Value(1, <Lock(owner=None)>"));
}

for_each_method!(va_04_array_prefix_sums_in_a_child, |ctx: mp::Context| {
    let items = [6i32, 3, 0, 2, 5, 1, 7, 9, 4, 8];
    let a = Array::from_iter(items).unwrap();
    let raw = RawArray::from_slice(&items).unwrap();
    assert_eq!(a.len(), 10);
    assert_eq!(a.get(3).unwrap(), 2);
    assert!(matches!(a.get(10), Err(Error::InvalidArgument { .. })));
    assert_eq!(&a.lock().unwrap()[2..5], &[0, 2, 5]);
    a.lock().unwrap()[2..4].copy_from_slice(&[10, 20]);
    a.lock().unwrap()[2..4].copy_from_slice(&[0, 2]);
    let mut p = started(ctx.process(prefix_sums, (a.clone(), raw.clone())));
    join(&mut p).unwrap();
    let mut expected = items.to_vec();
    for k in 1..expected.len() {
        expected[k] += expected[k - 1];
    }
    assert_eq!(a.to_vec().unwrap(), expected);
    assert_eq!(raw.to_vec(), expected);
});

#[test]
fn va_05_arrays_are_zero_filled() {
    for _ in 0..3 {
        let a = Array::<i32>::new(10).unwrap();
        assert_eq!(a.to_vec().unwrap(), [0; 10]);
        a.lock().unwrap().fill(-1);
        drop(a);
    }
    assert!(Array::<u8>::new(0).unwrap().is_empty());
}

for_each_method!(va_07_pod_types_doubled_by_a_child, |ctx: mp::Context| {
    let d = Value::new(1.5f64).unwrap();
    let big = Value::new(1i64 << 33).unwrap();
    let p = Value::new(Point { x: 1.0, y: -2.0 }).unwrap();
    let arr = Array::from_slice(&[1.0f64, 2.0, 3.0]).unwrap();
    let raw_p = RawValue::new(Point { x: 0.5, y: 4.0 }).unwrap();
    let bytes = Array::from_slice(b"hello world").unwrap();
    let mut child = started(ctx.process(
        double_everything,
        (
            d.clone(),
            big.clone(),
            p.clone(),
            arr.clone(),
            raw_p.clone(),
            bytes.clone(),
        ),
    ));
    join(&mut child).unwrap();
    assert_eq!(d.get().unwrap(), 3.0);
    assert_eq!(big.get().unwrap(), 1 << 34);
    assert_eq!(p.get().unwrap(), Point { x: 2.0, y: -4.0 });
    assert_eq!(arr.to_vec().unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(raw_p.get(), Point { x: 1.0, y: 8.0 });
    assert_eq!(bytes.to_vec().unwrap(), b"HELLO WORLD");
});

#[test]
fn va_08_copy_is_independent() {
    let a = Array::from_slice(&[1u16, 2, 3]).unwrap();
    let copy = RawArray::from_slice(&a.to_vec().unwrap()).unwrap();
    a.set(0, 9).unwrap();
    assert_eq!(copy.to_vec(), [1, 2, 3]);
    assert_eq!(a.to_vec().unwrap(), [9, 2, 3]);
}

#[test]
fn a_guard_is_the_only_way_to_the_memory_while_it_lives() {
    let v = Value::new(1u64).unwrap();
    let a = Array::from_slice(&[1u8, 2]).unwrap();
    let mut g = v.lock().unwrap();
    *g = 2;
    let mut ga = a.lock().unwrap();
    ga[0] = 10;
    // Another thread can neither take the lock nor release it from under the guard (before,
    // `release()` freed it, and a second guard then held a second `&mut` to the same value).
    let (other, other_a) = (v.clone(), a.clone());
    let seen = std::thread::spawn(move || {
        (
            other.get_lock().release(),
            other_a.get_lock().release(),
            other.get_lock().try_acquire().map(|g| g.is_some()),
        )
    })
    .join()
    .unwrap();
    assert!(
        matches!(seen.0, Err(Error::InvalidState { .. })),
        "{seen:?}"
    );
    assert!(
        matches!(seen.1, Err(Error::InvalidState { .. })),
        "{seen:?}"
    );
    assert!(matches!(seen.2, Ok(false)), "{seen:?}");
    assert!(v.get_lock().locked() && a.get_lock().locked());
    // Formatting does not wait for the lock, nor read the value under someone else's guard.
    assert!(format!("{v:?}").starts_with("<Value(<locked>, <Lock(owner="));
    assert_eq!((*g, ga[0]), (2, 10));
    drop((g, ga));
    assert_eq!(v.get().unwrap(), 2);
    assert_eq!(a.to_vec().unwrap(), [10, 2]);
}

for_each_method!(a_child_cannot_shrink_a_value, |ctx: mp::Context| {
    let v = Value::new(41u64).unwrap();
    let mut p = started(ctx.process(shrink_values, (v.clone(),)));
    let (found, errors) = join(&mut p).unwrap();
    assert!(found >= 1, "the child found no memfd of its Value");
    // Every memfd is sealed against shrinking: EPERM, and the memory is still there.
    assert!(errors.iter().all(|e| *e == Some(libc::EPERM)), "{errors:?}");
    assert_eq!(v.get().unwrap(), 41);
    v.set(42).unwrap();
    assert_eq!(v.get().unwrap(), 42);
});

// ---- 14. SharedMemory, ShareableList, SharedMemoryManager ----------------------------------

#[test]
fn create_on_a_full_dev_shm_is_an_error() {
    let _g = shared();
    let ctx = mp::get_context(mp::StartMethod::ForkServer);
    let mut p = started(ctx.process(create_on_a_small_dev_shm, ()));
    match join(&mut p).unwrap() {
        FullShm::Unavailable(why) => {
            eprintln!("skipped: no private mount namespace with a small /dev/shm here ({why})")
        }
        FullShm::Tried { large, small, left } => {
            // Before, the 8 MiB segment was created and the first write beyond 1 MiB was SIGBUS.
            let err = large.expect_err("an 8 MiB segment on a 1 MiB /dev/shm");
            assert!(
                err.starts_with("reserve shared memory (is /dev/shm full?)")
                    && err.ends_with(": StorageFull"),
                "{err}"
            );
            assert_eq!(small, Ok(64 << 10));
            // The failed segment's name was removed again; the small one's by its drop.
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

#[test]
fn a_shrunk_named_segment_is_an_error_not_sigbus() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    // Another process of the same user can shrink a named segment (here: this one, through
    // the file system). Before, the next access beyond the new end was SIGBUS.
    let seg = SharedMemory::create(8192).unwrap();
    seg.write_at(4096, b"gone").unwrap();
    let path = format!("/dev/shm/{}", seg.name());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut buf = [0u8; 4];
    for err in [
        seg.read_at(4096, &mut buf).unwrap_err(),
        seg.write_at(0, b"x").unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::InvalidState { message } if message.contains("shrunk to 0 bytes")),
            "{err}"
        );
    }
    // An empty segment cannot be mapped at all.
    assert_eq!(
        io_kind(SharedMemory::open(seg.name())),
        ErrorKind::InvalidInput
    );

    let l = ShareableList::create([1u64, 2, 3]).unwrap();
    let shm = SharedMemory::open(l.name()).unwrap();
    // Cut to the list's table: its items are gone.
    let path = format!("/dev/shm/{}", l.name());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(16 + 3 * 16).unwrap();
    // Opening it again: the items lie beyond its end.
    let err = ShareableList::<u64>::open(l.name()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("truncated")),
        "{err}"
    );
    // The handles mapped at the old size: a copy beyond the new end is refused, not SIGBUS.
    let mut buf = [0u8; 8];
    let err = shm.read_at(shm.size() - 8, &mut buf).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidState { message } if message.contains("shrunk to 64 bytes")),
        "{err}"
    );
    assert!(matches!(l.get(0), Err(Error::InvalidState { .. })));
    shm.read_at(0, &mut buf).unwrap();
}

#[test]
fn sh_01_02_03_basics() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let name = unique("sh01");
    let shm = SharedMemory::create_named(&name, 512).unwrap();
    assert_eq!(shm.name(), name);
    assert!(shm.size() >= 512);
    assert!(shm.is_owner());
    assert_eq!(
        format!("{shm:?}"),
        format!("SharedMemory({name:?}, size={})", shm.size())
    );
    shm.write_at(0, b"howdy").unwrap();
    let other = SharedMemory::open(&name).unwrap();
    let mut buf = [0u8; 5];
    other.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"howdy");
    // SAFETY: nobody else writes the segment while the slice is alive.
    assert_eq!(&unsafe { other.as_slice() }[..5], b"howdy");
    // SH-03: an attachment reports the real size.
    assert_eq!(other.size(), shm.size());
    // A leading slash names the same segment.
    assert_eq!(SharedMemory::open(&format!("/{name}")).unwrap().size(), 512);
    assert!(matches!(
        other.write_at(510, b"abc"),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn sh_04_05_invalid_creation() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    assert!(matches!(
        SharedMemory::create(0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        SharedMemory::create_named(&unique("sh04"), 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        SharedMemory::open(""),
        Err(Error::InvalidArgument { .. })
    ));
    for bad in ["a\0b", "a/b", "/"] {
        assert!(matches!(
            SharedMemory::create_named(bad, 8),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            SharedMemory::open(bad),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        SharedMemory::open(&"x".repeat(300)),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn sh_06_07_exists_missing_and_double_unlink() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let name = unique("sh06");
    let shm = SharedMemory::create_named(&name, 64).unwrap();
    assert_eq!(
        io_kind(SharedMemory::create_named(&name, 64)),
        ErrorKind::AlreadyExists
    );
    shm.unlink().unwrap();
    assert_eq!(io_kind(shm.unlink()), ErrorKind::NotFound);
    assert_eq!(io_kind(SharedMemory::open(&name)), ErrorKind::NotFound);
    // Still mapped after the unlink.
    shm.write_at(0, b"x").unwrap();
}

#[test]
fn sh_08_generated_names_are_fresh() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let segments: Vec<_> = (0..20).map(|_| SharedMemory::create(16).unwrap()).collect();
    let names: HashSet<&str> = segments.iter().map(|s| s.name()).collect();
    assert_eq!(names.len(), 20);
    assert!(names.iter().all(|n| n.starts_with("mp-")));
}

for_each_method!(
    sh_09_11_child_writes_through_both_paths,
    |ctx: mp::Context| {
        let shm = SharedMemory::create(4096).unwrap();
        let mut p = started(ctx.process(
            write_shm,
            (
                SharedMemory::open(shm.name()).unwrap(),
                shm.name().to_owned(),
                b"from the child".to_vec(),
            ),
        ));
        join(&mut p).unwrap();
        let mut a = [0u8; 14];
        shm.read_at(0, &mut a).unwrap();
        assert_eq!(&a, b"from the child");
        shm.read_at(100, &mut a).unwrap();
        assert_eq!(&a, b"from the child");
        // The child's attachments did not unlink anything.
        assert!(SharedMemory::open(shm.name()).is_ok());
    }
);

for_each_method!(sh_10_passed_after_unlink_still_maps, |ctx: mp::Context| {
    let shm = SharedMemory::create(64).unwrap();
    shm.write_at(0, b"live").unwrap();
    shm.unlink().unwrap();
    assert_eq!(io_kind(SharedMemory::open(shm.name())), ErrorKind::NotFound);
    let mut p = started(ctx.process(read_passed, (shm,)));
    assert_eq!(join(&mut p).unwrap(), b"live");
});

for_each_method!(
    sh_12_tracker_unlinks_for_a_killed_creator,
    |ctx: mp::Context| {
        let q = Queue::<Vec<String>>::new().unwrap();
        let prefix = unique("sh12");
        let mut p = started(ctx.process(create_named_then_die, (q.clone(), prefix)));
        let names = q.get_timeout(LONG).unwrap();
        assert!(join(&mut p).is_err());
        for name in &names {
            assert!(
                eventually(LONG, || matches!(
                    SharedMemory::open(name),
                    Err(Error::Io { ref source, .. }) if source.kind() == ErrorKind::NotFound
                )),
                "{name} was not unlinked after its creator was killed"
            );
        }
        let left = shm_names();
        assert!(names.iter().all(|n| !left.contains(n)));
    }
);

for_each_method!(sh_13_14_attachers_never_unlink, |ctx: mp::Context| {
    let shm = SharedMemory::create(300).unwrap();
    let mut p = started(ctx.process(attach_and_exit, (shm.name().to_owned(),)));
    assert_eq!(join(&mut p).unwrap(), 300);
    let other = SharedMemory::open(shm.name()).unwrap();
    assert!(!other.is_owner());
    drop(other);
    assert!(SharedMemory::open(shm.name()).is_ok());
    let name = shm.name().to_owned();
    drop(shm); // the creator unlinks
    assert_eq!(io_kind(SharedMemory::open(&name)), ErrorKind::NotFound);
});

#[test]
fn sh_15_17_18_shareable_list_basics() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let l = ShareableList::create([
        Some("howdy".to_string()),
        Some("HoWdY".into()),
        None,
        Some("100".into()),
        Some("42".into()),
        Some("42".into()),
    ])
    .unwrap();
    assert_eq!(l.len(), 6);
    assert_eq!(l.get(0).unwrap().as_deref(), Some("howdy"));
    assert_eq!(l.get(5).unwrap().as_deref(), Some("42"));
    assert!(matches!(l.get(6), Err(Error::InvalidArgument { .. })));
    assert!(matches!(
        l.set(6, &None),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(l.to_vec().unwrap().len(), 6);
    assert!(format!("{l:?}").contains(&format!("name={:?}", l.name())));
    // SH-17: a slot may change value if it fits; None → "some".
    l.set(2, &Some("some".into())).unwrap();
    assert_eq!(l.get(2).unwrap().as_deref(), Some("some"));
    // Too long: an error, and neither the slot nor its neighbours change.
    let cap = l.capacity(1).unwrap();
    assert!(matches!(
        l.set(1, &Some("x".repeat(cap))),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(l.get(1).unwrap().as_deref(), Some("HoWdY"));
    assert_eq!(l.get(2).unwrap().as_deref(), Some("some"));
    // Trailing NULs and multi-byte UTF-8 round-trip exactly (gh-96779, gh-145261).
    l.set(0, &Some("é\0\0".into())).unwrap();
    assert_eq!(l.get(0).unwrap().as_deref(), Some("é\0\0"));
    // SH-18.
    assert_eq!(l.index(&Some("100".into())).unwrap(), Some(3));
    assert_eq!(l.index(&Some("nope".into())).unwrap(), None);
    assert_eq!(l.count(&Some("42".into())).unwrap(), 2);
}

#[test]
fn shareable_list_refuses_a_corrupt_slot() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let l = ShareableList::create([1u32, 2]).unwrap();
    // Slot 1's offset (table at 16, 16 bytes a slot), pointed far beyond the segment.
    SharedMemory::open(l.name())
        .unwrap()
        .write_at(32, &u64::MAX.to_le_bytes())
        .unwrap();
    assert_eq!(l.get(0).unwrap(), 1);
    let err = l.get(1).unwrap_err();
    assert!(
        matches!(&err, Error::Codec { message, .. } if message.contains("slot 1 is corrupt")),
        "{err}"
    );
    assert!(matches!(l.set(1, &3), Err(Error::Codec { .. })));
}

for_each_method!(sh_19_21_shareable_list_shared, |ctx: mp::Context| {
    let name = unique("sh19");
    let l = ShareableList::create_named(&name, [Some("a".to_string()), None]).unwrap();
    let attached = ShareableList::<Option<String>>::open(&name).unwrap();
    assert_eq!(attached.to_vec().unwrap(), l.to_vec().unwrap());
    let mut p = started(ctx.process(list_child, (attached,)));
    assert_eq!(join(&mut p).unwrap(), [Some("child".to_string()), None]);
    assert_eq!(l.get(0).unwrap().as_deref(), Some("child"));
    // SH-19: a copy into a new segment is independent.
    let copy = ShareableList::create(l.to_vec().unwrap()).unwrap();
    copy.set(1, &Some("c".into())).unwrap();
    assert_eq!(l.get(1).unwrap(), None);
    // SH-21: the encoded handle is the same size whatever the length.
    let long = ShareableList::create(0..1000u32).unwrap();
    let (short_msg, long_msg) = (
        mp::__private::encoded_len(&l).unwrap(),
        mp::__private::encoded_len(&long).unwrap(),
    );
    assert_eq!(short_msg - l.name().len(), long_msg - long.name().len());
    // Unlinked: opening by name fails; passing still maps the memory.
    l.shm().unlink().unwrap();
    assert_eq!(
        io_kind(ShareableList::<Option<String>>::open(&name)),
        ErrorKind::NotFound
    );
});

#[test]
fn sh_20_empty_list() {
    let l = ShareableList::<u32>::create([]).unwrap();
    assert_eq!(l.len(), 0);
    assert!(l.is_empty());
    assert_eq!(l.count(&1).unwrap(), 0);
    assert_eq!(l.index(&1).unwrap(), None);
    assert!(ShareableList::<u32>::open(l.name()).unwrap().is_empty());
}

#[test]
fn sh_22_manager_unlinks_what_it_created() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let manager = SharedMemoryManager::new();
    let a = manager.shared_memory(128).unwrap();
    let l = manager.shareable_list(["x".to_string()]).unwrap();
    let names = manager.names();
    assert_eq!(names.len(), 2);
    assert!(!a.is_owner());
    assert_eq!(SharedMemory::open(a.name()).unwrap().size(), 128);
    assert_eq!(
        ShareableList::<String>::open(l.name())
            .unwrap()
            .get(0)
            .unwrap(),
        "x"
    );
    drop(a); // a handle of the manager's does not unlink
    assert!(SharedMemory::open(&names[0]).is_ok());
    manager.shutdown();
    for n in &names {
        assert_eq!(io_kind(SharedMemory::open(n)), ErrorKind::NotFound);
    }
    manager.shutdown(); // idempotent
    drop(l);
}

#[test]
fn sh_not_a_list() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    let shm = SharedMemory::create(64).unwrap();
    assert!(matches!(
        ShareableList::<u8>::open(shm.name()),
        Err(Error::InvalidArgument { .. })
    ));
}

// ---- 15. Resource tracker ------------------------------------------------------------------

#[test]
fn rt_01_tracker_unlinks_two_leaked_segments_of_a_killed_spawn_child() {
    let _g = shared();
    let ctx = mp::get_context(mp::StartMethod::Spawn);
    let q = Queue::<Vec<String>>::new().unwrap();
    let mut p = started(ctx.process(create_named_then_die, (q.clone(), unique("rt01"))));
    let names = q.get_timeout(LONG).unwrap();
    assert!(join(&mut p).is_err());
    assert!(eventually(LONG, || {
        let left = shm_names();
        names.iter().all(|n| !left.contains(n))
    }));
}

#[test]
fn rt_02_03_tracker_ignores_sigint_sigterm_and_is_relaunched_after_sigkill() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _g = exclusive();
    let first = SharedMemory::create(32).unwrap();
    let pid = mp::__private::resource_tracker_pid().expect("a tracker runs");
    kill(Pid::from_raw(pid), Signal::SIGINT).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let second = SharedMemory::create(32).unwrap();
    assert_eq!(mp::__private::resource_tracker_pid(), Some(pid));
    assert!(!pid_gone(pid));
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    assert!(eventually(LONG, || pid_gone(pid)));
    // The next registration starts a new tracker (and hands it the names still owned).
    let third = SharedMemory::create(32).unwrap();
    let new_pid = mp::__private::resource_tracker_pid().expect("a tracker runs");
    assert_ne!(new_pid, pid);
    drop((first, second, third));
}

#[test]
fn rt_05_name_too_long() {
    let _g = shared(); // names in /dev/shm: not while a test counts them
    assert!(matches!(
        SharedMemory::create_named(&"n".repeat(256), 8),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn rt_07_starting_the_tracker_keeps_the_signal_mask() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let _g = exclusive();
    let mut block = SigSet::empty();
    block.add(Signal::SIGUSR1);
    let mut before = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut before)).unwrap();
    let shm = SharedMemory::create(8).unwrap();
    let mut after = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), Some(&mut after)).unwrap();
    assert!(after.contains(Signal::SIGUSR1));
    drop(shm);
}

// ---- kill -9 of every kind of owner ---------------------------------------------------------

/// Anonymous objects of every kind, created and held by a child that is then SIGKILLed, under
/// each start method. Exclusive, so that no other test creates names meanwhile.
#[test]
fn kill_9_of_an_owner_leaves_nothing_behind() {
    let _g = exclusive();
    for method in mp::get_all_start_methods() {
        kill_9_of_an_owner(mp::get_context(method));
    }
}

fn kill_9_of_an_owner(ctx: mp::Context) {
    let before = shm_names();
    let q = Queue::<Everything>::new().unwrap();
    let mut p = started(ctx.process(own_everything_then_die, (q.clone(),)));
    let e = q.get_timeout(LONG).unwrap();
    assert!(join(&mut p).is_err());
    // They outlive their creator here, and their locks recover from the dead holder.
    assert!(matches!(e.lock.acquire(), Err(Error::OwnerDied)));
    assert!(matches!(e.rlock.acquire(), Err(Error::OwnerDied)));
    assert!(matches!(e.value.lock(), Err(Error::OwnerDied)));
    assert_eq!(e.value.get().unwrap(), 41);
    assert_eq!(e.sem.get_value(), 0);
    assert!(e.event.is_set());
    assert_eq!(e.raw.get(), 7);
    assert_eq!(e.array.to_vec().unwrap(), [1.0, 2.0]);
    assert_eq!(e.raw_array.to_vec(), b"abc");
    assert!(!e.barrier.is_broken() && e.bsem.get_value() == 1);
    drop(e.cond.acquire().unwrap());
    // None of them has a name: /dev/shm gained nothing.
    let after = shm_names();
    assert!(
        after.difference(&before).all(|n| !n.starts_with("mp-")),
        "new /dev/shm entries: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
}
