// A worker's name is a constant: a `let` of the same name in its scope is a pattern that
// matches the constant, which rustc refuses (E0530). Rename the variable (or the worker).
#[mp::worker]
fn client(id: u32) -> u32 {
    id
}

fn main() {
    let client = 5;
    let _ = client;
}
