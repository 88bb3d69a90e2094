//! The `ProcessPoolExecutor` examples of Python's `concurrent.futures` documentation: the prime
//! check with `Executor.map`, and `submit` with `as_completed`.
//!
//! ```python
//! import concurrent.futures
//! import math
//!
//! PRIMES = [112272535095293, 112582705942171, 112272535095293,
//!           115280095190773, 115797848077099, 1099726899285419]
//!
//! def is_prime(n):
//!     if n < 2:
//!         return False
//!     if n == 2:
//!         return True
//!     if n % 2 == 0:
//!         return False
//!     sqrt_n = int(math.floor(math.sqrt(n)))
//!     for i in range(3, sqrt_n + 1, 2):
//!         if n % i == 0:
//!             return False
//!     return True
//!
//! def main():
//!     with concurrent.futures.ProcessPoolExecutor() as executor:
//!         for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):
//!             print('%d is prime: %s' % (number, prime))
//!
//!         future_to_n = {executor.submit(is_prime, n): n for n in PRIMES}
//!         for future in concurrent.futures.as_completed(future_to_n):
//!             print(future_to_n[future], future.result())
//! ```
//!
//! `as_completed` takes the futures by value; keep what you need to know about each one next to
//! it (here the submissions are in input order, so an index does).

const PRIMES: [u64; 6] = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419,
];

#[mp::worker]
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let sqrt_n = (n as f64).sqrt().floor() as u64;
    (3..=sqrt_n).step_by(2).all(|i| !n.is_multiple_of(i))
}

#[mp::main]
fn main() -> mp::Result<()> {
    let executor = mp::ProcessPoolExecutor::new(mp::cpu_count())?;
    for (number, prime) in PRIMES.iter().zip(executor.map(is_prime, PRIMES)) {
        println!("{number} is prime: {}", prime?);
    }

    let futures = PRIMES
        .iter()
        .map(|n| executor.submit(is_prime, (*n,)))
        .collect::<mp::Result<Vec<_>>>()?;
    let pending = futures.len();
    for future in mp::futures::as_completed(futures, None) {
        let future = future?;
        println!("a future finished: {}", future.result()?);
    }
    println!("{pending} futures done");
    executor.shutdown(true, false);
    Ok(())
}
