pub struct Cell<T>(T);

#[mp::managed]
impl<T: Clone> Cell<T> {
    pub fn get(&self) -> T {
        self.0.clone()
    }
}

#[mp::managed]
impl Cell<u64> {
    pub fn value(&self) -> u64 {
        self.0
    }
}

fn main() {}
