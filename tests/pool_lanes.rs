//! A local pool's jobs and answers travel in memory shared with each worker (its lanes), with
//! the socket for what memory cannot carry: messages with descriptors and long ones. These
//! tests mix all three kinds so that order and delivery are checked across the two paths, and
//! check that a worker that breaks its lanes is reported and replaced, not trusted.

mod common;

use common::*;
use mp::{Connection, Error, Pipe, Pool};

/// Longer than the longest message a lane carries (2 KiB), in both directions.
const LONG_BYTES: usize = 5_000;

#[mp::worker]
fn echo_bytes(v: Vec<u8>) -> Vec<u8> {
    v
}

#[mp::worker]
fn send_on(conn: Connection<u64>, n: u64) -> u64 {
    conn.send(&n).unwrap();
    n + 1
}

/// Sends `n` on `conn` and echoes `blob`: a job and an answer that carry a descriptor and are
/// long enough to be read straight into their own buffer.
#[mp::worker]
fn send_on_and_echo(conn: Connection<u64>, n: u64, blob: Vec<u8>) -> Vec<u8> {
    conn.send(&n).unwrap();
    blob
}

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

/// Writes `value` at `offset` in this worker's lanes (found by the name of their memfd among
/// the mappings): what a compromised or buggy worker could do. False if it has no lanes.
fn scribble(offset: u64, value: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let Some(line) = maps.lines().find(|l| l.contains("mp-pool-lanes")) else {
        return false;
    };
    let start = u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .unwrap();
    mem.write_all_at(&value.to_le_bytes(), start + offset)
        .unwrap();
    true
}

/// Moves this worker's published read position in its job lane far past anything written
/// (the job lane's header comes first; its `head` at byte 64), then answers normally.
#[mp::worker]
fn break_job_lane() -> bool {
    scribble(64, 1 << 40)
}

/// Publishes an impossible write position in this worker's answer lane (the second header, at
/// byte 128; `tail` first), then exits without answering.
#[mp::worker]
fn break_answer_lane_and_exit() -> bool {
    if scribble(128, 1 << 40) {
        std::process::exit(0);
    }
    false
}

fn bytes(i: usize) -> Vec<u8> {
    (0..(i * 41) % LONG_BYTES).map(|b| (b + i) as u8).collect()
}

for_each_method!(
    short_long_and_handle_messages_keep_their_order,
    |ctx: mp::Context| {
        let pool = Pool::builder().processes(2).context(ctx).build().unwrap();
        let mut pending = Vec::new();
        let mut pipes = Vec::new();
        for i in 0..300usize {
            if i % 7 == 0 {
                let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
                pending.push((
                    i,
                    None,
                    Some(pool.apply_async(send_on, (theirs, i as u64)).unwrap()),
                ));
                pipes.push((i, ours));
            } else {
                pending.push((
                    i,
                    Some(pool.apply_async(echo_bytes, (bytes(i),)).unwrap()),
                    None,
                ));
            }
        }
        for (i, echoed, sent) in pending {
            match (echoed, sent) {
                (Some(r), None) => assert_eq!(r.get_timeout(LONG).unwrap(), bytes(i), "item {i}"),
                (None, Some(r)) => assert_eq!(r.get_timeout(LONG).unwrap(), i as u64 + 1),
                _ => unreachable!(),
            }
        }
        for (i, ours) in pipes {
            assert!(ours.poll(Some(LONG)).unwrap());
            assert_eq!(ours.recv().unwrap(), i as u64);
        }
        // Chunks too: whole chunks longer than a lane's message go on the socket.
        let inputs: Vec<Vec<u8>> = (0..200).map(bytes).collect();
        let out: Vec<Vec<u8>> = pool
            .imap_chunked(echo_bytes, inputs.clone(), 3)
            .unwrap()
            .collect::<mp::Result<_>>()
            .unwrap();
        assert_eq!(out, inputs);
        pool.close();
        pool.join().unwrap();
    }
);

/// A message of `len` bytes that tells items apart.
fn blob(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|b| (b * 7 + i) as u8).collect()
}

for_each_method!(
    large_messages_with_and_without_handles_keep_their_order,
    |ctx: mp::Context| {
        let pool = Pool::builder().processes(2).context(ctx).build().unwrap();
        let sizes = [300 << 10, 3 << 20, 10, 70 << 10, LONG_BYTES];
        let mut pending = Vec::new();
        let mut pipes = Vec::new();
        for i in 0..40usize {
            let data = blob(i, sizes[i % sizes.len()]);
            if i % 3 == 0 {
                let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
                let r = pool.apply_async(send_on_and_echo, (theirs, i as u64, data.clone()));
                pending.push((i, data, r.unwrap()));
                pipes.push((i, ours));
            } else {
                pending.push((
                    i,
                    data.clone(),
                    pool.apply_async(echo_bytes, (data,)).unwrap(),
                ));
            }
        }
        for (i, data, r) in pending {
            let got = r.get_timeout(LONG).unwrap();
            assert!(
                got == data,
                "item {i}: {} bytes back for {}",
                got.len(),
                data.len()
            );
        }
        for (i, ours) in pipes {
            assert!(ours.poll(Some(LONG)).unwrap());
            assert_eq!(ours.recv().unwrap(), i as u64);
        }
        pool.close();
        pool.join().unwrap();
    }
);

for_each_method!(
    answers_holding_several_long_results_come_back_whole,
    |ctx: mp::Context| {
        // Results of 64 KiB or more leave the worker from their own buffers, between the
        // bytes of the answer around them: several in one answer, short ones between.
        let pool = Pool::builder().processes(2).context(ctx).build().unwrap();
        let sizes = [
            10,
            70 << 10,
            3,
            200 << 10,
            64 << 10,
            (64 << 10) - 1,
            0,
            1 << 20,
        ];
        let data: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| blob(i, n)).collect();
        for chunk in [1, 3, 8] {
            let got = pool.map_chunked(echo_bytes, data.clone(), chunk).unwrap();
            for (i, (got, sent)) in got.iter().zip(&data).enumerate() {
                assert!(
                    got == sent,
                    "item {i} of chunks of {chunk}: {} bytes back",
                    got.len()
                );
            }
        }
        pool.close();
        pool.join().unwrap();
    }
);

fn assert_broken_lane(got: mp::Result<impl std::fmt::Debug>) {
    match got {
        Err(Error::Protocol { message }) => {
            assert!(message.contains("malformed"), "{message}");
            assert!(message.contains("lane"), "{message}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

for_each_method!(
    a_worker_that_breaks_its_lanes_is_replaced,
    |ctx: mp::Context| {
        let pool = Pool::builder().processes(1).context(ctx).build().unwrap();
        // A position the worker publishes is checked when the pool next writes to it: the next
        // task fails, the worker is killed and replaced.
        assert!(
            pool.apply(break_job_lane, ()).unwrap(),
            "the worker has lanes"
        );
        assert_broken_lane(pool.apply(square, (3,)));
        assert_eq!(pool.apply(square, (12,)).unwrap(), 144);
        // What a dead worker left in its lane is checked too.
        assert_broken_lane(
            pool.apply_async(break_answer_lane_and_exit, ())
                .unwrap()
                .get_timeout(LONG),
        );
        assert_eq!(pool.apply(square, (5,)).unwrap(), 25);
        pool.close();
        pool.join().unwrap();
    }
);
