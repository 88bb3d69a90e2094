pub struct NotSerde;

pub struct Counter(u64);

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    pub fn take(&mut self, value: NotSerde) {
        let _ = value;
    }
}

fn main() {}
