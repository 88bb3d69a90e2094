#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

#[mp::worker]
fn square(x: u32) -> u32 {
    x * x
}

fn main() {}
