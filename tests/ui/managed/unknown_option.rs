pub struct Counter(u64);

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    #[mp(proxied)]
    pub fn get(&self) -> u64 {
        self.0
    }
}

fn main() {}
