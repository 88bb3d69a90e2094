//! Children die with their parent: after a `kill -9` of a process, its children (and, for the
//! fork-server method, its fork server) are gone within seconds, whatever the start method.
//! CPython has no such guarantee (its children are orphaned); this is the gap that
//! PR_SET_PDEATHSIG closes.

mod common;

use std::time::Duration;

use common::*;
use mp::{Connection, Pipe, StartMethod};

/// Started by `middle`: waits forever (until its parent's death kills it).
#[mp::worker]
fn leaf(ready: Connection<i32>) {
    ready.send(&std::process::id().cast_signed()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

/// Starts a leaf with `method`, reports the leaf's pid and its own fork server's pid, then
/// waits to be killed.
#[mp::worker]
fn middle(method: StartMethod, report: Connection<(i32, Option<i32>)>) {
    let (tx, rx) = Pipe::<i32>::duplex().unwrap();
    let mut p = mp::get_context(method).process(leaf, (tx,));
    p.start().unwrap();
    let leaf_pid = rx.recv().unwrap();
    report
        .send(&(leaf_pid, mp::forkserver::server_pid()))
        .unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

for_each_method!(children_die_with_a_killed_parent, |ctx: mp::Context| {
    let (report, child_end) = Pipe::<(i32, Option<i32>)>::duplex().unwrap();
    // The middle process is started with this test's method; it starts its leaf with the same.
    let mut mid = started(ctx.process(middle, (ctx.start_method(), child_end)));
    let (leaf_pid, server_pid) = report.recv_timeout(LONG).unwrap();
    assert!(!pid_gone(leaf_pid));
    mid.kill().unwrap();
    assert!(matches!(
        join(&mut mid),
        Err(mp::Error::ProcessFailed { exitcode: -9, .. })
    ));
    assert!(
        eventually(Duration::from_secs(10), || pid_gone(leaf_pid)),
        "leaf {leaf_pid} outlived its parent"
    );
    if ctx.start_method() == StartMethod::ForkServer {
        let server = server_pid.expect("the middle process ran a fork server");
        assert!(
            eventually(Duration::from_secs(10), || pid_gone(server)),
            "fork server {server} outlived its parent"
        );
    }
});
