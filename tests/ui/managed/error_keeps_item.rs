pub struct Counter(u64);

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub async fn get(&self) -> u64 {
        self.0
    }

    #[mp(proxy)]
    pub fn add(&mut self, k: u64) -> u64 {
        self.0 += k;
        self.0
    }
}

fn main() {
    // Only the mistake is reported: the impl block is still there, without `#[mp(...)]`.
    let mut c = Counter::new();
    assert_eq!(c.add(1), 1);
}
