pub struct Counter(u64);

#[mp::managed]
impl Counter {
    #[mp(proxy)]
    pub fn new() -> Self {
        Counter(0)
    }

    #[mp(proxy)]
    fn split(&self) -> Counter {
        Counter(self.0 / 2)
    }

    #[mp(proxy)]
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

fn main() {}
