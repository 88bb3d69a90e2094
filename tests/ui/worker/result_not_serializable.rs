struct NotSerde;

#[mp::worker]
fn gives() -> NotSerde {
    NotSerde
}

fn main() {}
