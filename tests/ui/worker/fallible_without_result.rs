#[mp::worker(fallible)]
fn count(x: u32) -> u32 {
    x
}

#[mp::worker(fallible)]
impl mp::Run for Body {
    fn run(self) {}
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body;

fn main() {}
