pub struct Counter(u64);

#[mp::managed(proxy = "CounterHandle")]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }
}

pub struct Other(u64);

#[mp::managed(proxy_name = "not an identifier")]
impl Other {
    pub fn new() -> Self {
        Other(0)
    }
}

fn main() {}
