#[mp::worker]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn main() {
    let pool = mp::Pool::new(2).unwrap();
    let _ = pool.map(add, vec![(1, 2), (3, 4)]);
}
