//! The `Pool` example of Python's `multiprocessing` documentation:
//!
//! ```python
//! from multiprocessing import Pool, TimeoutError
//! import time
//! import os
//!
//! def f(x):
//!     return x*x
//!
//! if __name__ == '__main__':
//!     with Pool(processes=4) as pool:
//!         print(pool.map(f, range(10)))
//!         for i in pool.imap_unordered(f, range(10)):
//!             print(i)
//!         res = pool.apply_async(f, (20,))
//!         print(res.get(timeout=1))
//!         res = pool.apply_async(os.getpid, ())
//!         print(res.get(timeout=1))
//!         multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//!         print([res.get(timeout=1) for res in multiple_results])
//!         res = pool.apply_async(time.sleep, (10,))
//!         try:
//!             print(res.get(timeout=1))
//!         except TimeoutError:
//!             print("We lacked patience and got a multiprocessing.TimeoutError")
//!         print("For the moment, the pool remains available for more work")
//!     print("Now the pool is closed and no longer available")
//! ```

use std::time::Duration;

#[mp::worker]
fn f(x: u64) -> u64 {
    x * x
}

#[mp::worker]
fn getpid() -> u32 {
    std::process::id()
}

#[mp::worker]
fn sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[mp::main]
fn main() -> mp::Result<()> {
    let second = Duration::from_secs(1);
    {
        // start 4 worker processes
        let pool = mp::Pool::new(4)?;

        // prints "[0, 1, 4,..., 81]"
        println!("{:?}", pool.map(f, 0..10)?);

        // prints the same numbers in arbitrary order
        for i in pool.imap_unordered(f, 0..10)? {
            println!("{}", i?);
        }

        // evaluates "f(20)" asynchronously, in only one process
        let res = pool.apply_async(f, (20,))?;
        println!("{}", res.get_timeout(second)?); // prints "400"

        // evaluates "getpid()" asynchronously
        let res = pool.apply_async(getpid, ())?;
        println!("{}", res.get_timeout(second)?); // prints the pid of that process

        // launching several evaluations asynchronously *may* use more processes
        let multiple: Vec<_> = (0..4)
            .map(|_| pool.apply_async(getpid, ()))
            .collect::<mp::Result<_>>()?;
        let pids: Vec<u32> = multiple
            .iter()
            .map(|r| r.get_timeout(second))
            .collect::<mp::Result<_>>()?;
        println!("{pids:?}");

        // makes a single worker sleep for 10 seconds
        let res = pool.apply_async(sleep, (10,))?;
        match res.get_timeout(second) {
            Err(mp::Error::Timeout) => {
                println!("We lacked patience and got an mp::Error::Timeout")
            }
            other => println!("{other:?}"),
        }
        println!("For the moment, the pool remains available for more work");
    } // dropping the pool terminates it (the sleeping worker included)
    println!("Now the pool is closed and no longer available");
    Ok(())
}
