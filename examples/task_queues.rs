//! Python's documentation example of feeding tasks to a set of worker processes through one
//! queue and collecting the results through another ("An example showing how to use queues to
//! feed tasks to a collection of worker processes"), with `'STOP'` sentinels.
//!
//! Python sends `(function, args)` pairs; a worker here receives a typed task instead (a function
//! name is not data in Rust), and `None` plays the part of `'STOP'`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Task {
    Mul(i64, i64),
    Plus(i64, i64),
}

impl Task {
    fn calculate(self) -> String {
        let me = mp::current_process();
        let name = me.name();
        // Python's example sleeps a random 0..1 s to simulate work; a short fixed nap will do.
        std::thread::sleep(Duration::from_millis(5));
        match self {
            Task::Mul(a, b) => format!("{name} says that mul({a}, {b}) = {}", a * b),
            Task::Plus(a, b) => format!("{name} says that plus({a}, {b}) = {}", a + b),
        }
    }
}

/// Python's `for func, args in iter(input.get, 'STOP')`.
#[mp::worker]
fn worker(input: mp::Queue<Option<Task>>, output: mp::Queue<String>) {
    while let Some(task) = input.get().unwrap() {
        output.put(task.calculate()).unwrap();
    }
}

#[mp::main]
fn main() -> mp::Result<()> {
    const NUMBER_OF_PROCESSES: usize = 4;
    let tasks1: Vec<Task> = (0..20).map(|i| Task::Mul(i, 7)).collect();
    let tasks2: Vec<Task> = (0..10).map(|i| Task::Plus(i, 8)).collect();

    let task_queue = mp::Queue::new()?;
    let done_queue = mp::Queue::new()?;

    for task in &tasks1 {
        task_queue.put(Some(*task))?;
    }
    let mut workers = Vec::new();
    for _ in 0..NUMBER_OF_PROCESSES {
        let mut p = mp::Process::new(worker, (task_queue.clone(), done_queue.clone()));
        p.start()?;
        workers.push(p);
    }

    println!("Unordered results:");
    for _ in 0..tasks1.len() {
        println!("\t{}", done_queue.get()?);
    }

    for task in &tasks2 {
        task_queue.put(Some(*task))?;
    }
    for _ in 0..tasks2.len() {
        println!("\t{}", done_queue.get()?);
    }

    for _ in 0..NUMBER_OF_PROCESSES {
        task_queue.put(None)?;
    }
    for mut p in workers {
        p.join()?;
    }
    Ok(())
}
