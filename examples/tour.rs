//! A tour of `mp`: workers, processes under every start method, results and errors that cross
//! the process boundary, pipes, the subclass style, children that die with their parent, and a
//! pool that outlives a crashing worker.
//!
//! Run it with `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use mp::{Connection, Pipe, StartMethod};

/// An ordinary function, callable directly, that can also run in another process.
#[mp::worker]
fn square(x: u64) -> u64 {
    x * x
}

/// Returns an error: the parent receives its text, not just an exit code.
#[mp::worker]
fn parse_port(text: String) -> Result<u16, std::num::ParseIntError> {
    text.parse()
}

/// Panics: the parent receives the message and the location.
#[mp::worker]
fn divide(a: u32, b: u32) -> u32 {
    a / b
}

/// Talks to its parent through a pipe end it received as an argument.
#[mp::worker]
fn shout(conn: Connection<String>) -> usize {
    let mut n = 0;
    while let Ok(line) = conn.recv() {
        if line.is_empty() {
            break;
        }
        conn.send(&line.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

/// Who am I? Name, pid, parent and start method as the child sees them.
#[mp::worker]
fn whoami() -> String {
    let me = mp::current_process();
    let parent = mp::parent_process().expect("a child has a parent");
    format!(
        "{} (pid {}) started by {} (pid {}) with {}",
        me.name(),
        me.pid(),
        parent.name(),
        parent.pid(),
        me.start_method().map(|m| m.as_str()).unwrap_or("?"),
    )
}

/// Python's `class Greeter(Process): def run(self)` becomes a value implementing `mp::Run`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Greeter {
    names: Vec<String>,
    out: Connection<String>,
}

#[mp::worker]
impl mp::Run for Greeter {
    fn run(self) {
        for n in self.names {
            self.out.send(&format!("hello {n}")).unwrap();
        }
    }
}

#[mp::worker]
fn sleeper() {
    std::thread::sleep(Duration::from_secs(600));
}

#[mp::main]
fn main() -> mp::Result<()> {
    println!(
        "mp tour — {} CPUs, main process pid {}\n",
        mp::cpu_count(),
        std::process::id()
    );

    println!(
        "1. A worker is still a function: square(12) = {}",
        square(12)
    );

    println!("\n2. The same worker in a child, under each start method:");
    for method in mp::get_all_start_methods() {
        let ctx = mp::get_context(method);
        let t = Instant::now();
        let mut p = ctx.process(square, (12,));
        p.start()?;
        let value = p.join()?;
        println!(
            "   {:<10} -> {value}  (start+join {:>8.3?}, exit code {:?})",
            method.as_str(),
            t.elapsed(),
            p.exitcode()
        );
        let mut who = ctx.process(whoami, ());
        who.start()?;
        println!("   {:<10}    {}", "", who.join()?);
    }

    println!("\n3. Errors cross the boundary as data:");
    let mut p = mp::Process::new(parse_port, ("80a".to_string(),));
    p.start()?;
    println!("   returned Err -> {}", p.join().unwrap_err());
    let mut p = mp::Process::new(divide, (1, 0));
    p.start()?;
    println!("   panicked     -> {}", p.join().unwrap_err());
    let mut p = mp::Process::new(sleeper, ());
    p.start()?;
    p.kill()?;
    println!("   killed       -> {}", p.join().unwrap_err());

    println!("\n4. A pipe end passed to a child:");
    let (here, there) = Pipe::<String>::duplex()?;
    let mut p = mp::Process::new(shout, (there,));
    p.start()?;
    for word in ["ping", "multiprocessing in rust"] {
        here.send(&word.to_string())?;
        println!("   sent {word:?}, got {:?}", here.recv()?);
    }
    here.send(&String::new())?;
    println!("   the child handled {} messages", p.join()?);

    println!("\n5. The subclass style (mp::Run):");
    let (rx, tx) = Pipe::<String>::simplex()?;
    let mut p = mp::get_context(StartMethod::Spawn).process_from_run(Greeter {
        names: vec!["alice".into(), "bob".into()],
        out: tx,
    });
    p.start()?;
    p.join()?;
    while rx.poll(Some(Duration::ZERO))? {
        match rx.recv() {
            Ok(line) => println!("   {line}"),
            Err(_) => break,
        }
    }

    println!("\n6. Bookkeeping like Python's:");
    let mut daemon = mp::Process::builder()
        .name("background")
        .daemon(true)
        .build(sleeper, ());
    daemon.start()?;
    let names: Vec<String> = mp::active_children()
        .iter()
        .map(|c| format!("{} (pid {})", c.name(), c.pid()))
        .collect();
    println!("   active children: {names:?}");
    println!("   the daemon is terminated when main returns; nothing is left behind.");

    println!("\n7. A pool that survives its workers:");
    let pool = mp::Pool::new(2)?;
    println!("   map      -> {:?}", pool.map(square, 0..8)?);
    let pids = pool.worker_pids();
    let results: Vec<mp::Result<u64>> = pool.imap(square_or_die, 0..6)?.collect();
    for (x, r) in results.iter().enumerate() {
        match r {
            Ok(v) => println!("   {x}^2 = {v}"),
            Err(e) => println!("   {x}: {e} (only this task failed)"),
        }
    }
    println!("   workers {pids:?} -> {:?}", pool.worker_pids());
    let slow = pool.apply_async(square, (12,))?;
    println!("   apply_async -> {}", slow.get()?);
    pool.close();
    pool.join()?;
    Ok(())
}

/// Kills its own process on 3: the pool fails that task alone and starts a new worker.
#[mp::worker]
fn square_or_die(x: u64) -> u64 {
    if x == 3 {
        // SAFETY: abort() never returns; nothing to uphold.
        unsafe { libc::abort() }
    }
    x * x
}
