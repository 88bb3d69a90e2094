// A result type without serde, used through a pool and a process: the first error is at the
// type and says what to derive; rustc then adds its own trait-bound errors at each call that
// sends the type (`map`, `Process::new`), which name the same derives.
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
    let pool = mp::Pool::new(1).unwrap();
    let _ = pool.map(count, vec!["a b".to_string()]);
    let _ = pool.apply(count, ("a b".to_string(),));
    let _ = mp::Process::new(count, ("a".to_string(),));
}
