pub struct Counter;

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter
    }

    pub fn consume(self) -> u64 {
        1
    }

    pub fn boxed(self: Box<Self>) -> u64 {
        2
    }

    pub fn pinned<'a>(&'a self) -> u64 {
        3
    }
}

fn main() {}
