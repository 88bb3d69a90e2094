//! Python's documentation example for `set_start_method` (its queue becomes a pipe here):
//!
//! ```python
//! import multiprocessing as mp
//!
//! def foo(q):
//!     q.put('hello')
//!
//! if __name__ == '__main__':
//!     mp.set_start_method('spawn')
//!     q = mp.Queue()
//!     p = mp.Process(target=foo, args=(q,))
//!     p.start()
//!     print(q.get())
//!     p.join()
//! ```

#[mp::worker]
fn foo(q: mp::Connection<String>) {
    q.send(&"hello".to_string()).unwrap();
}

#[mp::main]
fn main() -> mp::Result<()> {
    mp::set_start_method(mp::StartMethod::Spawn)?;
    let (rx, tx) = mp::Pipe::<String>::simplex()?;
    let mut p = mp::Process::new(foo, (tx,));
    p.start()?;
    println!("{}", rx.recv()?);
    p.join()
}
