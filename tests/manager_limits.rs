//! A manager against clients that know the key but misbehave: what one session may hold, how
//! many connections and blocked calls it may have, memory that large messages leave behind,
//! objects that refer to each other, who may stop the server and who may replace a published
//! name. Each test fails on a server that lets the client win.

mod common;

use std::sync::mpsc;

use common::*;

/// The resident memory of `pid`, in MiB.
fn rss_mib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|n| n.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

#[test]
fn large_messages_do_not_stay_in_the_servers_buffers() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let pid = m.pid().expect("a started manager has a pid");
    let d = m.dict::<u32, Vec<u8>>().unwrap();
    let before = rss_mib(pid);
    const MIB: usize = 48;
    let (done_tx, done_rx) = mpsc::channel();
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for i in 0..2u32 {
        let d = d.clone();
        let done = done_tx.clone();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        stops.push(stop_tx);
        // Each thread has a connection of its own, which stays open below.
        threads.push(std::thread::spawn(move || {
            let r = d.set(&i, &vec![1u8; MIB << 20]).and_then(|()| d.get(&i));
            done.send(r.map(|v| v.map_or(0, |v| v.len()))).unwrap();
            let _ = stop_rx.recv();
        }));
    }
    for _ in 0..2 {
        assert_eq!(done_rx.recv_timeout(LONG).unwrap().unwrap(), MIB << 20);
    }
    d.clear().unwrap();
    // The connections stay open and idle, each having received and sent 48 MiB.
    let released = eventually(std::time::Duration::from_secs(10), || {
        rss_mib(pid) < before + MIB as u64 / 2
    });
    let held = rss_mib(pid);
    drop(stops);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        released,
        "server RSS {before} MiB before, {held} MiB with the dict empty"
    );
    m.shutdown().unwrap();
}
