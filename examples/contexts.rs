//! Python's documentation example for `get_context`: one program, a context per start method.
//!
//! ```python
//! if __name__ == '__main__':
//!     ctx = mp.get_context('spawn')
//!     q = ctx.Queue()
//!     p = ctx.Process(target=foo, args=(q,))
//!     p.start()
//!     print(q.get())
//!     p.join()
//! ```

#[mp::worker]
fn foo(q: mp::Connection<String>) {
    let method = mp::current_process().start_method().unwrap();
    q.send(&format!("hello from a {method} child")).unwrap();
}

#[mp::main]
fn main() -> mp::Result<()> {
    for method in ["spawn", "fork", "forkserver"] {
        let ctx = mp::get_context(method.parse()?);
        let (rx, tx) = mp::Pipe::<String>::simplex()?;
        let mut p = ctx.process(foo, (tx,));
        p.start()?;
        println!("{}", rx.recv()?);
        p.join()?;
    }
    Ok(())
}
