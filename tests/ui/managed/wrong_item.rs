#[mp::managed]
pub struct Counter(u64);

#[mp::managed]
pub fn count() -> u64 {
    1
}

fn main() {}
