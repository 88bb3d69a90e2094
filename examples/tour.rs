//! A tour of `mp`: workers, processes under every start method, results and errors that cross
//! the process boundary, pipes, queues, locks and shared memory, the subclass style, children
//! that die with their parent, a pool that outlives a crashing worker, and a manager whose
//! objects every process can use.
//!
//! Run it with `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use mp::{Connection, JoinableQueue, Pipe, Queue, StartMethod};

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

/// Takes numbers from a shared queue until it is shut down, and reports each square.
#[mp::worker]
fn square_jobs(jobs: JoinableQueue<u64>, results: Queue<(i32, u64)>) -> usize {
    let me = mp::current_process().pid();
    let mut n = 0;
    while let Ok(x) = jobs.get() {
        std::thread::sleep(Duration::from_millis(1)); // stands for real work
        results.put((me, x * x)).unwrap();
        jobs.task_done().unwrap();
        n += 1;
    }
    n
}

/// Adds to a shared counter under its lock, then waits for every party at a barrier.
#[mp::worker]
fn add_then_meet(total: mp::Value<u64>, n: u64, barrier: mp::Barrier) -> usize {
    for _ in 0..n {
        *total.lock().unwrap() += 1;
    }
    barrier.wait().unwrap()
}

/// Takes a lock and dies holding it.
#[mp::worker]
fn die_holding(lock: mp::Lock) {
    lock.acquire().unwrap().leak();
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
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

    println!("\n6. Queues shared by many processes (no feeder thread, shared memory):");
    let jobs = JoinableQueue::<u64>::new()?;
    let results = Queue::<(i32, u64)>::new()?;
    let mut consumers: Vec<_> = (0..3)
        .map(|_| mp::Process::new(square_jobs, (jobs.clone(), results.clone())))
        .collect();
    for c in &mut consumers {
        c.start()?;
    }
    for x in 1..=300 {
        jobs.put(x)?;
    }
    jobs.join()?; // every item was marked done
    jobs.shutdown(false); // consumers' blocked `get` now ends with Error::ShutDown
    let mut sum = 0;
    let mut pids = std::collections::BTreeSet::new();
    while mp::connection::wait(&[&results], Some(Duration::ZERO))? == [0] {
        let (pid, sq) = results.try_get()?;
        pids.insert(pid);
        sum += sq;
    }
    let handled: Vec<usize> = consumers
        .iter_mut()
        .map(|c| c.join())
        .collect::<mp::Result<_>>()?;
    println!(
        "   sum of squares 1..=300 = {sum} (expected {})",
        300 * 301 * 601 / 6
    );
    println!(
        "   {} consumers took {handled:?} items; results came from {} pids",
        handled.len(),
        pids.len()
    );

    println!("\n7. Locks, shared values, barriers and shared memory:");
    let total = mp::Value::new(0u64)?;
    let barrier = mp::Barrier::new(3)?;
    let mut kids: Vec<_> = (0..3)
        .map(|_| mp::Process::new(add_then_meet, (total.clone(), 10_000, barrier.clone())))
        .collect();
    for k in &mut kids {
        k.start()?;
    }
    let mut arrivals = Vec::new();
    for k in &mut kids {
        arrivals.push(k.join()?);
    }
    arrivals.sort();
    println!(
        "   3 processes x 10000 locked increments = {} (barrier arrival indices {arrivals:?})",
        total.get()?
    );
    let lock = mp::Lock::new()?;
    let mut p = mp::Process::new(die_holding, (lock.clone(),));
    p.start()?;
    let _ = p.join();
    println!(
        "   a holder died: acquire -> {}",
        lock.acquire().map(|_| ()).unwrap_err()
    );
    println!("   and then: acquire -> ok = {}", lock.acquire().is_ok());
    let shm = mp::shared_memory::SharedMemory::create(4096)?;
    shm.write_at(0, b"shared")?;
    println!("   {shm:?} (unlinked when this handle drops, or by the resource tracker if killed)");

    println!("\n8. A pool that survives its workers:");
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

    println!("\n9. A manager: objects in a server process, used through typed proxies:");
    let manager = mp::Manager::start()?;
    let scores = manager.dict::<String, u64>()?;
    let log = manager.list::<String>(["started".to_string()])?;
    let total =
        mp::Pool::new(2)?.starmap(record, (0..4u64).map(|i| (scores.clone(), log.clone(), i)))?;
    println!("   4 workers recorded {} points", total.iter().sum::<u64>());
    println!("   scores: {:?}", scores.items()?);
    println!("   log:    {:?}", log.to_vec()?);
    // Changes happen where the data lives: a registered function run in the server.
    scores.modify(&"player 2".to_string(), double)?;
    println!(
        "   player 2 doubled in the server: {:?}",
        scores.get(&"player 2".into())?
    );
    println!(
        "   objects in the server: {} (each freed when its last proxy, anywhere, is dropped)",
        manager.number_of_objects()?
    );
    manager.shutdown()?;
    println!(
        "   after shutdown: {}",
        scores
            .len()
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.to_string())
    );

    println!("\n10. Bookkeeping like Python's:");
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

    Ok(())
}

/// Records a score and a log line in a manager's dict and list, from a pool's worker.
#[mp::worker]
fn record(
    scores: mp::manager::DictProxy<String, u64>,
    log: mp::manager::ListProxy<String>,
    i: u64,
) -> u64 {
    let points = 10 * (i + 1);
    scores.set(&format!("player {i}"), &points).unwrap();
    log.append(&format!(
        "player {i} scored {points} in pid {}",
        std::process::id()
    ))
    .unwrap();
    points
}

/// Runs inside the manager's server, on the stored value.
#[mp::worker]
fn double(points: u64) -> u64 {
    2 * points
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
