#[mp::main(flavor = "multi_thread")]
fn main() {}
