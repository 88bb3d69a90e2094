// A result type without serde: one error at the type, which says what to derive; none inside
// the code the attribute generates, none per missing trait.
struct Stats {
    words: usize,
}

#[mp::worker]
fn count(text: String) -> Stats {
    Stats {
        words: text.split_whitespace().count(),
    }
}

fn main() {
    let _ = count("a b".to_string()).words;
}
