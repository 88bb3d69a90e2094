#[mp::main]
fn start() {}

fn main() {}
