//! A program without `#[mp::main]`: its non-daemon children are still joined when `main`
//! returns (they used to be killed with it, their work lost), and its daemon children are still
//! terminated, as in Python.
//!
//! A `harness = false` test with a plain `main`. It runs itself again as the program under test
//! (`MP_TEST_NO_MAIN` set): that program starts a child which waits on a FIFO, says so on its
//! stdout and returns from `main`. The outer process waits until the program has either exited or gone
//! to sleep past `main`, then releases the child through the FIFO and checks that the child's work
//! arrived and the program exited 0.

use std::io::{BufRead, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// Waits for one byte on `fifo`, then writes `marker`.
#[mp::worker]
fn wait_then_write(fifo: PathBuf, marker: PathBuf) {
    let mut byte = [0u8; 1];
    std::fs::File::open(&fifo)
        .and_then(|mut f| f.read_exact(&mut byte))
        .expect("read the release byte");
    std::fs::write(&marker, b"done").expect("write the marker");
}

fn program_under_test(spec: &str) {
    let mut parts = spec.split('\n');
    let (fifo, marker, daemon) = (
        PathBuf::from(parts.next().unwrap()),
        PathBuf::from(parts.next().unwrap()),
        parts.next() == Some("daemon"),
    );
    let mut p = mp::Process::builder()
        .daemon(daemon)
        .build(wait_then_write, (fifo, marker));
    p.start().expect("start");
    drop(p);
    // Tell the outer process that `main` is returning.
    println!("returning");
}

fn main_thread_asleep(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
    })
}

/// Runs the program under test and returns its exit status and whether its child did its work.
fn run(dir: &Path, name: &str, daemon: bool) -> (std::process::ExitStatus, bool) {
    let fifo = dir.join(format!("{name}.fifo"));
    let marker = dir.join(format!("{name}.done"));
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let spec = format!(
        "{}\n{}\n{}",
        fifo.display(),
        marker.display(),
        if daemon { "daemon" } else { "plain" }
    );
    let mut program = Command::new(std::env::current_exe().unwrap())
        .env("MP_TEST_NO_MAIN", spec)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the program under test");
    // `main` is returning once it has said so (its children share its stdout, so the pipe
    // stays open).
    let mut line = String::new();
    std::io::BufReader::new(program.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "returning\n");
    // Then it either exits (its children die with it) or sleeps, waiting for them.
    let deadline = Instant::now() + LONG;
    let mut status = None;
    while status.is_none() && !main_thread_asleep(program.id()) {
        assert!(
            Instant::now() < deadline,
            "{name}: the program neither exits nor waits"
        );
        status = program.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    if !daemon {
        // Release the child once it has the FIFO open (a writer's non-blocking open fails until
        // then), unless the program has exited, taking the child with it.
        let deadline = Instant::now() + LONG;
        loop {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo);
            if let Ok(mut w) = opened {
                use std::io::Write;
                w.write_all(b"x").unwrap();
                break;
            }
            if status.is_none() {
                status = program.try_wait().unwrap();
            }
            if status.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: the child never opened the FIFO"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let status = match status {
        Some(s) => s,
        None => {
            let deadline = Instant::now() + LONG;
            loop {
                if let Some(s) = program.try_wait().unwrap() {
                    break s;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: the program did not exit"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    (status, marker.exists())
}

fn main() {
    if let Ok(spec) = std::env::var("MP_TEST_NO_MAIN") {
        return program_under_test(&spec);
    }
    let dir = std::env::temp_dir().join(format!("mp-no-main-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let (status, done) = run(&dir, "plain", false);
    assert!(status.success(), "the program failed: {status:?}");
    assert!(
        done,
        "a non-daemon child was killed when main returned instead of being joined"
    );
    println!("ok: without #[mp::main], a non-daemon child is joined when main returns");

    let (status, done) = run(&dir, "daemon", true);
    assert!(status.success(), "the program failed: {status:?}");
    assert!(!done, "a daemon child cannot have been released");
    println!("ok: without #[mp::main], a daemon child is terminated when main returns");

    std::fs::remove_dir_all(&dir).unwrap();
}
