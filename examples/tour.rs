#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

#[mp::main]
fn main() -> mp::Result<()> {
    for m in mp::get_all_start_methods() {
        let t = std::time::Instant::now();
        let mut p = mp::get_context(m).process(square, (7,));
        p.start()?;
        println!("{m}: {} in {:?}", p.join()?, t.elapsed());
    }
    Ok(())
}
