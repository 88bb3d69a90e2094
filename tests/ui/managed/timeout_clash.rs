pub struct Counter(u64);

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn get(&self) -> u64 {
        self.0
    }

    pub fn get_timeout(&self, ms: u64) -> u64 {
        self.0 + ms
    }
}

fn main() {}
