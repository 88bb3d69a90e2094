pub struct Counter(u64);

#[mp::managed]
impl Default for Counter {
    fn default() -> Self {
        Counter(0)
    }
}

fn main() {}
