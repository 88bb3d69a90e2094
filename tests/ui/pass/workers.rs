use std::fmt;

#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    id: u32,
}

#[derive(Debug)]
struct MyError;

impl fmt::Display for MyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("my error")
    }
}

/// Docs stay on the worker.
#[mp::worker]
pub fn plain(job: Job, scale: u64) -> u64 {
    u64::from(job.id) * scale
}

#[mp::worker]
fn fallible(x: u32) -> Result<u32, MyError> {
    if x > 0 { Ok(x) } else { Err(MyError) }
}

#[mp::worker]
fn io_result() -> std::io::Result<String> {
    Ok(String::new())
}

#[mp::worker]
fn nothing() {}

#[mp::worker]
fn with_handles(conn: mp::Connection<String>, h: mp::Handle) {
    let _ = (conn, h);
}

#[mp::worker]
fn recursive(n: u32) -> u32 {
    if n == 0 { 0 } else { recursive(n - 1) + 1 }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Body(String);

#[mp::worker]
impl mp::Run for Body {
    fn run(self) {}
}

#[mp::main]
fn main() -> mp::Result<()> {
    // Workers stay callable as plain functions.
    assert_eq!(plain(Job { id: 2 }, 3), 6);
    assert_eq!(recursive(3), 3);
    assert!(fallible(0).is_err());
    let _: mp::Process<u64> = mp::Process::new(plain, (Job { id: 1 }, 2));
    let _: mp::Process<u32> = mp::Process::new(fallible, (1,));
    let _: mp::Process<String> = mp::Process::new(io_result, ());
    let _: mp::Process<()> = mp::Process::new(nothing, ());
    let _: mp::Process<()> = mp::Process::from_run(Body(String::new()));
    let _ = with_handles;
    Ok(())
}
