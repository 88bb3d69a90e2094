//! Python's documentation example for `Queue`:
//!
//! ```python
//! from multiprocessing import Process, Queue
//!
//! def f(q):
//!     q.put([42, None, 'hello'])
//!
//! if __name__ == '__main__':
//!     q = Queue()
//!     p = Process(target=f, args=(q,))
//!     p.start()
//!     print(q.get())    # prints "[42, None, 'hello']"
//!     p.join()
//! ```

/// Python's heterogeneous list becomes a typed tuple.
type Message = (i32, Option<i32>, String);

#[mp::worker]
fn f(q: mp::Queue<Message>) {
    q.put((42, None, "hello".to_string())).unwrap();
}

#[mp::main]
fn main() -> mp::Result<()> {
    let q = mp::Queue::<Message>::new()?;
    let mut p = mp::Process::new(f, (q.clone(),));
    p.start()?;
    println!("{:?}", q.get()?); // prints "(42, None, "hello")"
    p.join()?;
    Ok(())
}
