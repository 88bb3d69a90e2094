pub struct Counter(u64);

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn try_new(start: u64) -> Result<Self, String> {
        Ok(Counter(start))
    }

    pub fn version() -> u32 {
        1
    }

    pub fn reset() {}
}

fn main() {}
