//! What the runtime is doing, through the `tracing` facade: Python's
//! `multiprocessing.log_to_stderr(logging.DEBUG)`.
//!
//! ```text
//! cargo run --example logging --features tracing
//! ```
//!
//! With the `tracing` feature the runtime emits events (targets under `mp_runtime`): processes
//! starting and exiting (`debug`), pool workers dying (`warn`) and their replacements (`info`),
//! the fork server and resource tracker starting (`info`), failed handshakes with the peer's
//! address (`warn`). Any subscriber shows them; here `tracing-subscriber`'s `fmt`, on stderr.
//! Without the feature the runtime contains no logging code, and this example only runs.

use std::time::Duration;

#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

/// Dies on 3, as a crashing worker would.
#[mp::worker]
fn fragile(x: u64) -> u64 {
    if x == 3 {
        std::process::abort();
    }
    x
}

#[mp::main]
fn main() -> mp::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::stderr)
        .init();
    if !cfg!(feature = "tracing") {
        eprintln!(
            "built without the `tracing` feature: no runtime events (add --features tracing)"
        );
    }

    let mut p = mp::Process::new(square, (7,));
    p.start()?;
    println!("square(7) = {}", p.join()?);

    // A worker that dies fails its own task; the pool starts a replacement and goes on.
    let pool = mp::Pool::new(2)?;
    let results: Vec<String> = pool
        .imap(fragile, 0..5)?
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("({e})"),
        })
        .collect();
    println!("fragile: {}", results.join(", "));
    pool.close();
    pool.join()?;

    // A client with the wrong key: both sides report the failed handshake, never the key.
    let listener = mp::Listener::bind("127.0.0.1:0", b"the right key")?;
    let address = listener.address().clone();
    let client = std::thread::spawn(move || mp::Client::connect::<u8>(address, b"a wrong key"));
    let accepted = listener.accept_timeout::<u8>(Duration::from_secs(10));
    println!(
        "accept with a wrong key: {}",
        accepted.err().map_or("ok".into(), |e| e.to_string())
    );
    let _ = client.join();
    Ok(())
}
