// `Outcome` is a `Result`, but the attribute cannot tell from the name: it asks to be told.
type Outcome<T> = Result<T, String>;

#[mp::worker]
fn aliased(x: u32) -> Outcome<u32> {
    Ok(x)
}

fn main() {}
