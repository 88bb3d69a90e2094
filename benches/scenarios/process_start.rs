//! `process_start_fork`, `process_start_spawn`, `process_start_forkserver` (bench.py §1):
//! construct, start and join one process running `noop`, one at a time; the median sample in ms.
//!
//! Extra metrics measured in the same run:
//! - `raw_fork_wait`: fork(2), `_exit(0)` in the child, waitpid: the floor for `Fork`.
//! - `raw_posix_spawn`: posix_spawn of this same binary (which exits at once) + wait: the floor
//!   for `Spawn`.
//! - `*_heap_1gib`: the same with 1 GiB of touched heap in the parent. Fork copies page tables,
//!   so it grows with the parent; posix_spawn (vfork semantics) and the fork server do not.

use std::time::Instant;

use crate::common::{Scenario, emit, median, ms};

#[mp::worker]
fn noop() {}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "process_start_fork",
            run: |o| run(mp::StartMethod::Fork, o.size(200, 30)),
        },
        Scenario {
            name: "process_start_spawn",
            run: |o| run(mp::StartMethod::Spawn, o.size(40, 6)),
        },
        Scenario {
            name: "process_start_forkserver",
            run: |o| run(mp::StartMethod::ForkServer, o.size(100, 20)),
        },
    ]
}

fn start_join_ms(method: mp::StartMethod, n: usize) -> Result<f64, String> {
    let ctx = mp::get_context(method);
    for _ in 0..3 {
        one(&ctx)?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        one(&ctx)?;
        samples.push(ms(t.elapsed()));
    }
    Ok(median(&mut samples))
}

fn one(ctx: &mp::Context) -> Result<(), String> {
    let mut p = ctx.process(noop, ());
    p.start().map_err(|e| e.to_string())?;
    p.join().map_err(|e| e.to_string())?;
    if p.exitcode() != Some(0) {
        return Err(format!("exit code {:?}", p.exitcode()));
    }
    Ok(())
}

fn raw_fork_wait_ms(n: usize) -> Result<f64, String> {
    let mut samples = Vec::with_capacity(n + 3);
    for i in 0..n + 3 {
        let t = Instant::now();
        // SAFETY: the child calls only `_exit`, which is async-signal-safe.
        match unsafe { nix::unistd::fork() }.map_err(|e| e.to_string())? {
            nix::unistd::ForkResult::Child => {
                // SAFETY: `_exit` is always safe; it never returns.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).map_err(|e| e.to_string())?;
            }
        }
        if i >= 3 {
            samples.push(ms(t.elapsed()));
        }
    }
    Ok(median(&mut samples))
}

fn raw_posix_spawn_ms(n: usize) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(n + 3);
    for i in 0..n + 3 {
        let t = Instant::now();
        let status = std::process::Command::new(&exe)
            .arg("--exit-at-once")
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("raw spawn exited with {status}"));
        }
        if i >= 3 {
            samples.push(ms(t.elapsed()));
        }
    }
    Ok(median(&mut samples))
}

fn run(method: mp::StartMethod, n: usize) -> Result<(), String> {
    let scenario = format!("process_start_{}", method.as_str());
    emit(&scenario, "start_join", start_join_ms(method, n)?, "ms");
    let raw = |n| match method {
        mp::StartMethod::Spawn => raw_posix_spawn_ms(n).map(|v| ("raw_posix_spawn", v)),
        _ => raw_fork_wait_ms(n).map(|v| ("raw_fork_wait", v)),
    };
    let (name, v) = raw(n)?;
    emit(&scenario, name, v, "ms");

    // The same with 1 GiB of touched heap in the parent.
    let heap = vec![1u8; 1 << 30];
    std::hint::black_box(&heap);
    emit(
        &scenario,
        "start_join_heap_1gib",
        start_join_ms(method, n)?,
        "ms",
    );
    let (name, v) = raw(n)?;
    emit(&scenario, &format!("{name}_heap_1gib"), v, "ms");
    drop(heap);
    Ok(())
}
