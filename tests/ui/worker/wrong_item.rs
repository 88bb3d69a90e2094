#[mp::worker]
struct NotAFunction;

fn main() {}
