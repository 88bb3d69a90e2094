//! `pool_imap_unordered`'s `idle_consumer_cpu`: the CPU an `imap` consumer uses while it waits.

use std::time::{Duration, Instant};

use mp::Pool;

fn e(err: mp::Error) -> String {
    err.to_string()
}

/// Squares `x`, once `gate` (if any) is set.
#[mp::worker]
fn square_after(item: (u64, Option<mp::Event>)) -> u64 {
    if let Some(gate) = item.1 {
        gate.wait();
    }
    item.0 * item.0
}

/// The CPU a consumer of `imap_unordered` uses while it waits for a result that does not come:
/// a stream of quick results (the consumer batches its waits), then one that waits for a gate,
/// measured over the second after the consumer has been waiting for 10 ms (from
/// `/proc/self/task/<tid>/schedstat`, nanoseconds on a CPU).
pub fn idle_consumer_cpu(pool: &Pool) -> Result<f64, String> {
    // Whole chunks of 64: the gated item is alone in the last one.
    let quick = 64 * 1_600u64;
    let gate = mp::Event::new().map_err(e)?;
    let input = (0..quick)
        .map(|x| (x, None))
        .chain(std::iter::once((quick, Some(gate.clone()))));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || -> Result<(), String> {
            // SAFETY: gettid(2) takes no arguments and cannot fail.
            let tid = unsafe { libc::gettid() };
            let mut seen = 0u64;
            for r in pool
                .imap_unordered_chunked(square_after, input, 64)
                .map_err(e)?
            {
                r.map_err(e)?;
                seen += 1;
                if seen == quick {
                    let _ = tx.send(tid);
                }
            }
            Ok(())
        });
        let measured = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the quick results did not come".to_string())
            .and_then(|tid| {
                std::thread::sleep(Duration::from_millis(10));
                let before = on_cpu_ns(tid)?;
                let window = Instant::now();
                std::thread::sleep(Duration::from_secs(1));
                let used = on_cpu_ns(tid)? - before;
                Ok(used as f64 / window.elapsed().as_nanos() as f64 * 100.0)
            });
        gate.set();
        consumer
            .join()
            .map_err(|_| "the consumer panicked".to_string())??;
        measured
    })
}

/// Nanoseconds thread `tid` of this process has run on a CPU.
fn on_cpu_ns(tid: i32) -> Result<u64, String> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).map_err(|x| format!("{path}: {x}"))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| format!("unexpected {path}"))
}
