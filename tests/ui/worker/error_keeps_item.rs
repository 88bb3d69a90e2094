// The macro reports the `async` mistake and still emits the function, so the call below
// type-checks and produces no second, confusing error.
#[mp::worker]
async fn fetch(url: String) -> usize {
    url.len()
}

fn main() {
    let _future = fetch(String::new());
}
