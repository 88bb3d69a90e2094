//! Python's documentation example for `Pipe`:
//!
//! ```python
//! from multiprocessing import Process, Pipe
//!
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! if __name__ == '__main__':
//!     parent_conn, child_conn = Pipe()
//!     p = Process(target=f, args=(child_conn,))
//!     p.start()
//!     print(parent_conn.recv())   # prints "[42, None, 'hello']"
//!     p.join()
//! ```

/// Python's heterogeneous list becomes a typed tuple.
type Message = (i32, Option<i32>, String);

#[mp::worker]
fn f(mut conn: mp::Connection<Message>) {
    conn.send(&(42, None, "hello".to_string())).unwrap();
    conn.close();
}

#[mp::main]
fn main() -> mp::Result<()> {
    let (parent_conn, child_conn) = mp::Pipe::<Message>::duplex()?;
    let mut p = mp::Process::new(f, (child_conn,));
    p.start()?;
    println!("{:?}", parent_conn.recv()?);
    p.join()
}
