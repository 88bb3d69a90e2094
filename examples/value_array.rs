//! Python's documentation example "Sharing state between processes" (shared memory):
//!
//! ```python
//! from multiprocessing import Process, Value, Array
//!
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! if __name__ == '__main__':
//!     num = Value('d', 0.0)
//!     arr = Array('i', range(10))
//!
//!     p = Process(target=f, args=(num, arr))
//!     p.start()
//!     p.join()
//!
//!     print(num.value)
//!     print(arr[:])
//! ```
//!
//! Typecode `'d'` is `f64` and `'i'` is `i32` (the full table is in `mp::Array`'s docs).

#[mp::worker]
#[allow(clippy::approx_constant)] // Python's literal, kept as in the original
fn f(n: mp::Value<f64>, a: mp::Array<i32>) {
    n.set(3.1415927).unwrap();
    for x in a.lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

#[mp::main]
fn main() -> mp::Result<()> {
    let num = mp::Value::new(0.0f64)?;
    let arr = mp::Array::from_iter(0..10i32)?;

    let mut p = mp::Process::new(f, (num.clone(), arr.clone()));
    p.start()?;
    p.join()?;

    println!("{}", num.get()?);
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
