struct NotSerde;

#[mp::worker]
fn takes(value: NotSerde) -> u32 {
    let _ = value;
    1
}

fn main() {}
