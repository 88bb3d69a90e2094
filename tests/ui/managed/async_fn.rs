pub struct Counter;

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter
    }

    pub async fn get(&self) -> u64 {
        1
    }
}

fn main() {}
