#[mp::worker]
fn generic<T: Clone>(value: T) -> T {
    value.clone()
}

fn main() {}
