//! After a workload of every start method, with children that exit, fail, panic and get killed,
//! this process has no zombie children, no more open descriptors than before, and `/dev/shm`
//! holds nothing of ours. A `harness = false` test with `#[mp::main]`, so that nothing else runs
//! in the process while it counts.

use std::time::Duration;

#[mp::worker]
fn ok(x: u32) -> u32 {
    x + 1
}

#[mp::worker]
fn panics() {
    panic!("expected panic (hygiene test)");
}

#[mp::worker]
fn sleeps() {
    std::thread::sleep(Duration::from_secs(300));
}

#[mp::worker]
fn die_on(x: u32) -> u32 {
    if x == 7 {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    x
}

/// A pool of every start method: maps, a worker killed mid-map, workers replaced after one
/// task, a pool closed and joined, one terminated with work queued, one dropped; an executor.
fn pool_workload() {
    for m in mp::get_all_start_methods() {
        let ctx = mp::get_context(m);
        let pool = mp::Pool::builder()
            .processes(2)
            .context(ctx)
            .build()
            .unwrap();
        assert_eq!(pool.map(ok, 0..100).unwrap().len(), 100);
        let r: Vec<_> = pool.imap(die_on, 0..20).unwrap().collect();
        assert_eq!(r.iter().filter(|r| r.is_err()).count(), 1);
        pool.close();
        pool.join().unwrap();
        let pool = mp::Pool::builder()
            .processes(2)
            .max_tasks_per_child(1)
            .context(ctx)
            .build()
            .unwrap();
        assert_eq!(pool.map_chunked(ok, 0..6, 1).unwrap().len(), 6);
        let queued = pool.map_async(sleeps_ms, vec![60_000; 10]).unwrap();
        pool.terminate();
        assert!(queued.get().is_err());
        let pool = mp::Pool::builder()
            .processes(2)
            .context(ctx)
            .build()
            .unwrap();
        let _pending = pool.apply_async(sleeps_ms, (60_000,)).unwrap();
        drop(pool);
        let ex = mp::ProcessPoolExecutor::builder()
            .max_workers(2)
            .context(ctx)
            .build()
            .unwrap();
        let fs: Vec<_> = (0..10).map(|i| ex.submit(ok, (i,)).unwrap()).collect();
        ex.shutdown(true, false);
        assert!(fs.iter().all(|f| f.result().is_ok()));
    }
}

#[mp::worker]
fn sleeps_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Our zombie children, from /proc.
fn zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] == "Z" && fields[1] == me {
            found.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    found
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("mp-"))
                .collect()
        })
        .unwrap_or_default()
}

fn workload() {
    for m in mp::get_all_start_methods() {
        let ctx = mp::get_context(m);
        for i in 0..5 {
            let mut p = ctx.process(ok, (i,));
            p.start().unwrap();
            assert_eq!(p.join().unwrap(), i + 1);
        }
        let mut p = ctx.process(panics, ());
        p.start().unwrap();
        assert!(p.join().is_err());
        let mut p = ctx.process(sleeps, ());
        p.start().unwrap();
        p.kill().unwrap();
        assert!(p.join().is_err());
        // Dropped without join: reaped by active_children().
        let mut p = ctx.process(ok, (0,));
        p.start().unwrap();
        let pid = p.pid().unwrap();
        drop(p);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while mp::active_children().iter().any(|c| c.pid() == pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} never finished"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[mp::main]
fn main() {
    // PR-27: `#[mp::main]` never runs in a child; if it did, this would fail there.
    assert!(
        mp::parent_process().is_none(),
        "main ran in a child process"
    );
    // Warm up: the fork server and the launcher thread are started once and stay.
    workload();
    pool_workload();
    let fds_before = open_fds();
    workload();
    pool_workload();
    workload();
    pool_workload();
    let fds_after = open_fds();
    let z = zombies();
    let shm = shm_entries();
    assert!(z.is_empty(), "zombie children left: {z:?}");
    assert_eq!(fds_before, fds_after, "descriptors leaked");
    assert!(shm.is_empty(), "/dev/shm entries left: {shm:?}");
    println!("hygiene: 1 passed, 0 failed");
}
