#[mp::worker]
fn borrows(text: &'static str) -> usize {
    text.len()
}

#[mp::worker]
fn borrows_two(name: &str, data: &[u8], owned: u64) -> usize {
    name.len() + data.len() + owned as usize
}

#[mp::worker]
fn borrows_inside(names: Vec<&'static str>) -> usize {
    names.len()
}

#[mp::worker]
fn returns_a_borrow() -> &'static str {
    "no"
}

fn main() {
    // Still callable: the item is kept, so only the borrow is reported.
    let _ = borrows("x") + borrows_two("a", b"b", 1) + borrows_inside(vec![]);
    let _ = returns_a_borrow();
}
