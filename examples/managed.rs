//! The custom-manager example of Python's `multiprocessing` documentation ("Customized
//! managers"), with the object also used from a pool's workers:
//!
//! ```python
//! from multiprocessing import Pool
//! from multiprocessing.managers import BaseManager
//!
//! class MathsClass:
//!     def add(self, x, y):
//!         return x + y
//!     def mul(self, x, y):
//!         return x * y
//!
//! class MyManager(BaseManager):
//!     pass
//!
//! MyManager.register('Maths', MathsClass)
//!
//! def square(maths, x):
//!     return maths.mul(x, x)
//!
//! if __name__ == '__main__':
//!     with MyManager() as manager:
//!         maths = manager.Maths()
//!         print(maths.add(4, 3))         # prints 7
//!         print(maths.mul(7, 8))         # prints 56
//!         with Pool(4) as pool:
//!             print(pool.starmap(square, [(maths, x) for x in range(8)]))
//! ```
//!
//! `register` becomes `#[mp::managed]` on the type's `impl` block, which generates
//! `MathsClassProxy`; every manager of this program can build one.
//!
//! Run with `cargo run --example managed`.

/// The object that lives in the manager's server.
#[derive(Default)]
pub struct MathsClass;

#[mp::managed]
impl MathsClass {
    /// A new `MathsClass`.
    pub fn new() -> Self {
        MathsClass
    }

    /// `x + y`.
    pub fn add(&self, x: i64, y: i64) -> i64 {
        x + y
    }

    /// `x * y`.
    pub fn mul(&self, x: i64, y: i64) -> i64 {
        x * y
    }
}

/// Runs in a pool worker: the proxy arrived as an argument and calls the same object.
#[mp::worker]
fn square(maths: MathsClassProxy, x: i64) -> mp::Result<i64> {
    maths.mul(x, x)
}

#[mp::main]
fn main() -> mp::Result<()> {
    let manager = mp::Manager::start()?;
    let maths = MathsClassProxy::new(&manager)?;
    println!("{}", maths.add(4, 3)?); // prints 7
    println!("{}", maths.mul(7, 8)?); // prints 56

    let pool = mp::Pool::new(4)?;
    let squares = pool.starmap(square, (0..8).map(|x| (maths.clone(), x)))?;
    println!("{squares:?}"); // prints [0, 1, 4, 9, 16, 25, 36, 49]
    drop(pool);

    manager.shutdown()?;
    Ok(())
}
