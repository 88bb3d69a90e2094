fn square(x: u64) -> u64 {
    x * x
}

fn main() {
    // A function without `#[mp::worker]`.
    let _ = mp::Process::new(square, (5,));
    // A closure.
    let _ = mp::Process::new(|x: u64| x + 1, (5,));
    // The same through a pool.
    let pool = mp::Pool::new(1).unwrap();
    let _ = pool.apply(square, (5,));
}
