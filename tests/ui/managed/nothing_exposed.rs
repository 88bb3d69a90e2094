pub struct Counter(u64);

#[mp::managed]
impl Counter {
    fn new() -> Self {
        Counter(0)
    }
}

fn main() {}
