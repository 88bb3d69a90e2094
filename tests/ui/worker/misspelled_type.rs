// A misspelled type is reported once, where it is written.
#[mp::worker]
fn greet(name: Strng) -> String {
    format!("hello {name}")
}

fn main() {}
