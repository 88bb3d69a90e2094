//! Managers: scratch.
mod common;
use common::*;

#[test]
fn dict_basics() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.set(&"a".into(), &1).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
    assert_eq!(m.number_of_objects().unwrap(), 1);
    drop(d);
    assert!(eventually(LONG, || m.number_of_objects().unwrap() == 0));
    m.shutdown().unwrap();
    assert_eq!(m.exitcode(), Some(0));
}
