//! Python's documentation example "Synchronization between processes":
//!
//! ```python
//! from multiprocessing import Process, Lock
//!
//! def f(l, i):
//!     l.acquire()
//!     try:
//!         print('hello world', i)
//!     finally:
//!         l.release()
//!
//! if __name__ == '__main__':
//!     lock = Lock()
//!
//!     for num in range(10):
//!         Process(target=f, args=(lock, num)).start()
//! ```
//!
//! The guard is the `try`/`finally`: the lock is released when it goes out of scope, even if
//! the code under it panics.

use std::io::Write;

#[mp::worker]
fn f(l: mp::Lock, i: u32) {
    let _guard = l.acquire().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "hello world {i}").unwrap();
    out.flush().unwrap();
}

#[mp::main]
fn main() -> mp::Result<()> {
    let lock = mp::Lock::new()?;
    let mut children = Vec::new();
    for num in 0..10 {
        let mut p = mp::Process::new(f, (lock.clone(), num));
        p.start()?;
        children.push(p);
    }
    for mut p in children {
        p.join()?;
    }
    Ok(())
}
