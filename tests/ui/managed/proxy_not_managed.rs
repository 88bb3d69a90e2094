#[derive(serde::Serialize, serde::Deserialize)]
pub struct Plain(u64);

pub struct Counter(u64);

#[mp::managed]
impl Counter {
    pub fn new() -> Self {
        Counter(0)
    }

    #[mp(proxy)]
    pub fn plain(&self) -> Plain {
        Plain(self.0)
    }
}

fn main() {}
