pub struct Counter;

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter
    }

    pub fn echo<T: Clone>(&self, value: T) -> T {
        value
    }

    pub fn bounded(&self) -> u64
    where
        u64: Copy,
    {
        1
    }
}

fn main() {}
