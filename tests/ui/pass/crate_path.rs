mod reexport {
    pub use mp;
}

#[mp::worker(crate = "reexport::mp")]
fn double(x: u64) -> u64 {
    x * 2
}

#[mp::main(crate = "reexport::mp")]
fn main() {
    assert_eq!(double(2), 4);
}
