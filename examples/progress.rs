//! A progress bar over a pool's lazy results: `imap` over an input of known length is an
//! `ExactSizeIterator`, so `indicatif`'s `.progress()` shows how far along it is.

use indicatif::ProgressIterator;

/// Some work worth watching.
#[mp::worker]
fn collatz_steps(mut n: u64) -> u64 {
    let mut steps = 0;
    while n != 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

#[mp::main]
fn main() -> mp::Result<()> {
    let pool = mp::Pool::new(mp::cpu_count())?;
    let inputs: Vec<u64> = (1..=200_000).collect();
    let mut longest = (0, 0);
    for (n, steps) in inputs.iter().copied().zip(
        pool.imap_chunked(collatz_steps, inputs.clone(), 500)?
            .progress(),
    ) {
        let steps = steps?;
        if steps > longest.1 {
            longest = (n, steps);
        }
    }
    println!("{} takes the most steps: {}", longest.0, longest.1);
    Ok(())
}
