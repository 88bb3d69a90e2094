//! Synchronization and shared-state scenarios of bench.py (§9, §10): `lock_uncontended`,
//! `lock_contended` and `shared_array_sum`, each with raw baselines measured in the same run:
//!
//! - `raw_atomic_fetch_add`: a `fetch_add` loop on one shared atomic (the cost of one locked
//!   instruction, the floor of any lock).
//! - `raw_pshared_mutex`: `pthread_mutex_lock` + `unlock` of a `PTHREAD_PROCESS_SHARED` mutex in
//!   shared memory (what a C program would use; not robust to a dead holder).
//! - `raw_pshared_mutex_increments`: the contended counter on that mutex, same two processes.
//! - `raw_private_sum`: the same read-sum over a private buffer of the same size.
//!
//! Mirroring notes: Python's `Value('q')` is `Value<i64>`, and each increment takes its lock
//! once (`*v.lock()? += 1`). The 64 MiB segment is a named `SharedMemory` that the child opens by
//! name, as in Python; the parent sums `&[f64]` over the mapping. Rounds are paced by an
//! `mp::Barrier`, as in Python.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mp::shared_memory::SharedMemory;
use mp::{Barrier, Lock, RawArray, Value};

use crate::common::{Options, Scenario, emit, median};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "lock_uncontended",
            run: lock_uncontended,
        },
        Scenario {
            name: "lock_contended",
            run: lock_contended,
        },
        Scenario {
            name: "shared_array_sum",
            run: shared_array_sum,
        },
    ]
}

fn e(err: mp::Error) -> String {
    err.to_string()
}

/// Timed repetitions after one warm-up; returns the median rate of `per_rep / seconds`.
fn rate(
    o: &Options,
    per_rep: f64,
    mut body: impl FnMut() -> Result<f64, String>,
) -> Result<f64, String> {
    let mut samples = Vec::new();
    for rep in 0..=o.reps {
        let secs = body()?;
        if rep > 0 {
            samples.push(per_rep / secs);
        }
    }
    Ok(median(&mut samples))
}

fn lock_uncontended(o: &Options) -> Result<(), String> {
    let n = o.size(1_000_000, 200_000);
    let lock = Lock::new().map_err(e)?;
    let pairs = rate(o, n as f64, || {
        let t = Instant::now();
        for _ in 0..n {
            drop(std::hint::black_box(lock.acquire().map_err(e)?));
        }
        let dt = t.elapsed().as_secs_f64();
        if lock.try_acquire().map_err(e)?.is_none() {
            return Err("lock_uncontended: lock left held".into());
        }
        Ok(dt)
    })?;
    emit("lock_uncontended", "acquire_release", pairs, "pairs/s");

    let counter = RawArray::<u64>::new(1).map_err(e)?;
    // SAFETY: the array is 8-aligned shared memory that only this loop touches, through the
    // atomic view.
    let word = unsafe { &*(counter.as_mut_slice().as_mut_ptr() as *const AtomicU64) };
    let ops = rate(o, n as f64, || {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(word.fetch_add(1, Ordering::AcqRel));
        }
        Ok(t.elapsed().as_secs_f64())
    })?;
    emit("lock_uncontended", "raw_atomic_fetch_add", ops, "ops/s");

    let m = PsharedMutex::new()?;
    let pairs = rate(o, n as f64, || {
        let t = Instant::now();
        for _ in 0..n {
            m.lock();
            m.unlock();
        }
        Ok(t.elapsed().as_secs_f64())
    })?;
    emit("lock_uncontended", "raw_pshared_mutex", pairs, "pairs/s");
    Ok(())
}

#[mp::worker]
fn locked_increments(barrier: Barrier, v: Value<i64>, n: u64) {
    barrier.wait().unwrap();
    for _ in 0..n {
        *v.lock().unwrap() += 1;
    }
    barrier.wait().unwrap();
}

#[mp::worker]
fn raw_mutex_increments(barrier: Barrier, m: PsharedMutex, n: u64) {
    barrier.wait().unwrap();
    for _ in 0..n {
        m.lock();
        // SAFETY: the counter is only touched under the mutex.
        unsafe { *m.counter() += 1 };
        m.unlock();
    }
    barrier.wait().unwrap();
}

/// Times the region between the parent's two barrier waits around two children running `start`.
fn between_barriers(
    barrier: &Barrier,
    mut start: impl FnMut() -> Result<mp::Process<()>, String>,
) -> Result<f64, String> {
    let mut ps = vec![start()?, start()?];
    barrier.wait().map_err(e)?;
    let t = Instant::now();
    barrier.wait().map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    for p in &mut ps {
        p.join().map_err(e)?;
    }
    Ok(dt)
}

fn lock_contended(o: &Options) -> Result<(), String> {
    let n = o.size(200_000, 20_000) as u64;
    let ops = rate(o, 2.0 * n as f64, || {
        let v = Value::new(0i64).map_err(e)?;
        let barrier = Barrier::new(3).map_err(e)?;
        let dt = between_barriers(&barrier, || {
            let mut p = mp::Process::new(locked_increments, (barrier.clone(), v.clone(), n));
            p.start().map_err(e)?;
            Ok(p)
        })?;
        let total = v.get().map_err(e)?;
        if total != 2 * n as i64 {
            return Err(format!(
                "lock_contended: final value {total}, expected {}",
                2 * n
            ));
        }
        Ok(dt)
    })?;
    emit("lock_contended", "locked_increments", ops, "ops/s");

    let ops = rate(o, 2.0 * n as f64, || {
        let m = PsharedMutex::new()?;
        let barrier = Barrier::new(3).map_err(e)?;
        let dt = between_barriers(&barrier, || {
            let mut p = mp::Process::new(raw_mutex_increments, (barrier.clone(), m.clone(), n));
            p.start().map_err(e)?;
            Ok(p)
        })?;
        // SAFETY: both children have exited.
        let total = unsafe { *m.counter() };
        if total != 2 * n {
            return Err(format!("raw mutex counter {total}, expected {}", 2 * n));
        }
        Ok(dt)
    })?;
    emit(
        "lock_contended",
        "raw_pshared_mutex_increments",
        ops,
        "ops/s",
    );
    Ok(())
}

#[mp::worker]
fn fill_rounds(barrier: Barrier, name: String, rounds: u32) {
    let shm = SharedMemory::open(&name).unwrap();
    // SAFETY: the parent reads the segment only between the "filled" and the next "go"
    // barrier; this child writes only between "go" and "filled".
    let view = unsafe { shm.as_mut_slice_of::<f64>() };
    for r in 0..rounds {
        barrier.wait().unwrap(); // parent: go
        for (i, x) in view.iter_mut().enumerate() {
            *x = (i + r as usize) as f64;
        }
        barrier.wait().unwrap(); // parent: filled
    }
}

fn sum(values: &[f64]) -> f64 {
    values.iter().sum()
}

fn shared_array_sum(o: &Options) -> Result<(), String> {
    let size = o.size(64 << 20, 16 << 20);
    let n = size / 8;
    let shm = SharedMemory::create(size).map_err(e)?;
    let barrier = Barrier::new(2).map_err(e)?;
    let rounds = 1 + o.reps as u32;
    let mut p = mp::Process::new(
        fill_rounds,
        (barrier.clone(), shm.name().to_owned(), rounds),
    );
    p.start().map_err(e)?;
    let (mut fill, mut sums) = (Vec::new(), Vec::new());
    for r in 0..rounds as usize {
        barrier.wait().map_err(e)?;
        let t0 = Instant::now();
        barrier.wait().map_err(e)?;
        let t1 = Instant::now();
        // SAFETY: the child writes only between "go" and "filled"; it is waiting for "go".
        let total = sum(std::hint::black_box(unsafe { shm.as_slice_of::<f64>() }));
        let t2 = Instant::now();
        let expected = (n * (n - 1) / 2 + r * n) as f64;
        if total != expected {
            return Err(format!(
                "shared_array_sum: round {r} summed to {total}, expected {expected}"
            ));
        }
        if r > 0 {
            fill.push(size as f64 / (t1 - t0).as_secs_f64() / 1e9);
            sums.push(size as f64 / (t2 - t1).as_secs_f64() / 1e9);
        }
    }
    p.join().map_err(e)?;
    emit("shared_array_sum", "sum", median(&mut sums), "GB/s");
    emit("shared_array_sum", "fill", median(&mut fill), "GB/s");

    let private: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let gbs = rate(o, size as f64 / 1e9, || {
        let t = Instant::now();
        let total = sum(std::hint::black_box(&private));
        let dt = t.elapsed().as_secs_f64();
        if total != (n * (n - 1) / 2) as f64 {
            return Err("private sum is wrong".into());
        }
        Ok(dt)
    })?;
    emit("shared_array_sum", "raw_private_sum", gbs, "GB/s");
    Ok(())
}

/// A `PTHREAD_PROCESS_SHARED` mutex and a counter in anonymous shared memory (an `mp::RawArray`
/// used as raw bytes, so that it can be passed to a worker).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct PsharedMutex {
    mem: RawArray<u64>,
}

/// u64 words for the mutex (40 bytes on x86-64 glibc; room to spare), then one for the counter.
const MUTEX_WORDS: usize = 8;

impl PsharedMutex {
    fn new() -> Result<PsharedMutex, String> {
        let mem = RawArray::<u64>::new(MUTEX_WORDS + 1).map_err(e)?;
        let m = PsharedMutex { mem };
        // SAFETY: the memory is zeroed, 8-aligned, large enough for a pthread_mutex_t and not yet
        // shared; the attribute object is initialized before use and destroyed after.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            if libc::pthread_mutex_init(m.raw(), attr.as_ptr()) != 0 {
                return Err("pthread_mutex_init failed".into());
            }
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        Ok(m)
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        const { assert!(size_of::<libc::pthread_mutex_t>() <= MUTEX_WORDS * 8) };
        // SAFETY: only a pointer is produced; all access goes through pthread calls.
        unsafe { self.mem.as_mut_slice().as_mut_ptr() as *mut libc::pthread_mutex_t }
    }

    /// The counter word after the mutex.
    ///
    /// # Safety
    /// Only while holding the mutex, or when no other process uses it.
    unsafe fn counter(&self) -> *mut u64 {
        // SAFETY: word MUTEX_WORDS is inside the array.
        unsafe { self.mem.as_mut_slice().as_mut_ptr().add(MUTEX_WORDS) }
    }

    fn lock(&self) {
        // SAFETY: the mutex was initialized process-shared in `new`.
        unsafe { libc::pthread_mutex_lock(self.raw()) };
    }

    fn unlock(&self) {
        // SAFETY: called by the thread that locked it.
        unsafe { libc::pthread_mutex_unlock(self.raw()) };
    }
}
