struct Counter(u32);

impl Counter {
    #[mp::worker]
    fn bump(self) -> u32 {
        self.0 + 1
    }
}

fn main() {}
