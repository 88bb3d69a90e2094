//! The Python docs' `Manager` example: a child changes a dict and a list that live in the
//! manager's server, and the parent sees the changes.
//!
//! ```python
//! def f(d, l):
//!     d[1] = '1'
//!     d['2'] = 2
//!     d[0.25] = None
//!     l.reverse()
//!
//! with Manager() as manager:
//!     d = manager.dict()
//!     l = manager.list(range(10))
//!     p = Process(target=f, args=(d, l))
//!     p.start()
//!     p.join()
//!     print(d)
//!     print(l)
//! ```
//!
//! Rust's dict has one key type and one value type, so the keys are strings and the values
//! `Option<u32>`. Run it with `cargo run --example manager`.

use mp::manager::{DictProxy, ListProxy};

#[mp::worker]
fn f(d: DictProxy<String, Option<u32>>, l: ListProxy<u32>) -> mp::Result<()> {
    d.set(&"1".into(), &Some(1))?;
    d.set(&"2".into(), &Some(2))?;
    d.set(&"0.25".into(), &None)?;
    l.reverse()
}

#[mp::main]
fn main() -> mp::Result<()> {
    let manager = mp::Manager::start()?;
    let d = manager.dict::<String, Option<u32>>()?;
    let l = manager.list(0..10u32)?;
    let mut p = mp::Process::new(f, (d.clone(), l.clone()));
    p.start()?;
    p.join()?;
    println!("{:?}", d.items()?);
    println!("{:?}", l.to_vec()?);
    assert_eq!(l.to_vec()?, (0..10).rev().collect::<Vec<u32>>());
    Ok(())
}
