#[mp::worker]
fn borrows(text: &'static str) -> usize {
    text.len()
}

fn main() {}
