//! Processes under a low descriptor limit: every start method works with `RLIMIT_NOFILE` at 64
//! (staging descriptors at 100 used to make Spawn and ForkServer fail with EINVAL at any limit
//! up to 100), thousands of processes finished in every way leave the descriptor count flat
//! (finished children used to keep their descriptors until `main` ended, failing near the
//! limit), and a limit with no room left is a clear error, not a panic or a hang.
//!
//! A `harness = false` test with `#[mp::main]`: the limit applies to the whole process, so
//! nothing else may run in it meanwhile.

use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[mp::worker]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn set_fd_limit(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = soft.min(lim.rlim_max);
    // SAFETY: setrlimit only reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Every start method starts, runs and joins processes with at most 64 descriptors.
fn works_at_64() {
    set_fd_limit(64);
    for m in mp::get_all_start_methods() {
        for i in 0..10 {
            let mut p = mp::get_context(m).process(add_one, (i,));
            p.start()
                .unwrap_or_else(|e| panic!("{m} start under RLIMIT_NOFILE=64: {e}"));
            assert!(p.join_timeout(LONG));
            assert_eq!(p.join().unwrap(), i + 1);
        }
    }
    println!("ok: every start method works with RLIMIT_NOFILE=64");
}

/// How a test is done with a process.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Join,
    JoinTimeoutThenDrop,
    DropAfterExit,
    DropWhileRunning,
    CloseAfterJoinTimeout,
}

const ENDINGS: [Ending; 5] = [
    Ending::Join,
    Ending::JoinTimeoutThenDrop,
    Ending::DropAfterExit,
    Ending::DropWhileRunning,
    Ending::CloseAfterJoinTimeout,
];

/// 3,000 processes under a limit of 256 descriptors, every method and every ending: none fails
/// to start, and afterwards the process holds no more descriptors than before.
fn descriptors_stay_flat() {
    set_fd_limit(256);
    let before = open_fds();
    let mut started = 0;
    for m in mp::get_all_start_methods() {
        let ctx = mp::get_context(m);
        for ending in ENDINGS {
            for i in 0..200 {
                let mut p = ctx.process(add_one, (i,));
                p.start().unwrap_or_else(|e| {
                    panic!(
                        "{m} {ending:?}: start #{i} failed with {} fds open: {e}",
                        open_fds()
                    )
                });
                started += 1;
                match ending {
                    Ending::Join => assert_eq!(p.join().unwrap(), i + 1),
                    Ending::JoinTimeoutThenDrop => assert!(p.join_timeout(LONG)),
                    Ending::DropAfterExit => {
                        let sentinel = p.sentinel().unwrap();
                        let ready = mp::connection::wait(&[&sentinel], Some(LONG)).unwrap();
                        assert_eq!(ready, vec![0], "{m}: the child did not exit");
                    }
                    Ending::DropWhileRunning => {}
                    Ending::CloseAfterJoinTimeout => {
                        assert!(p.join_timeout(LONG));
                        p.close().unwrap();
                    }
                }
            }
        }
    }
    // Children dropped while running are forgotten once they have exited, at the next start.
    for m in mp::get_all_start_methods() {
        let mut p = mp::get_context(m).process(add_one, (0,));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 1);
    }
    assert!(mp::active_children().is_empty());
    let after = open_fds();
    assert!(
        after <= before,
        "{started} processes left {} descriptors behind ({before} before, {after} after)",
        after - before
    );
    println!("ok: {started} processes in every ending left the descriptor count flat ({after})");
}

/// With no descriptor left, starting a process is an error that says so.
fn no_room_is_a_clear_error() {
    for m in mp::get_all_start_methods() {
        set_fd_limit(open_fds() as u64);
        // Fill every free number below the limit.
        let mut fillers = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fillers.push(f);
        }
        let mut p = mp::get_context(m).process(add_one, (1,));
        let err = p
            .start()
            .expect_err("a start with no free descriptor cannot succeed");
        drop(fillers);
        set_fd_limit(256);
        let text = err.to_string();
        assert!(
            text.contains("Too many open files"),
            "{m}: unclear error under a full descriptor table: {text}"
        );
        // And the next start, with room again, works.
        let mut p = mp::get_context(m).process(add_one, (1,));
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 2);
    }
    println!("ok: a full descriptor table is an error naming it");
}

#[mp::main]
fn main() {
    works_at_64();
    descriptors_stay_flat();
    no_room_is_a_clear_error();
}
