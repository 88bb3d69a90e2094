// A worker that borrows is reported once: the name stays a function (`shout("x")`) and a worker
// of the owned types (`String`), so its uses add no "not an mp worker" errors.
#[mp::worker]
fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {
    let _ = shout("direct call");
    let _ = mp::Process::new(shout, ("a".to_string(),));
    let pool = mp::Pool::new(1).unwrap();
    let _ = pool.map(shout, vec!["b".to_string()]);
}
