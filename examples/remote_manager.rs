//! The Python docs' remote-manager example: one process serves a queue on a TCP address, another
//! puts a message into it, a third gets it out. They share nothing but the address and the key.
//!
//! ```text
//! cargo run --example remote_manager                          # all three, on this machine
//! cargo run --example remote_manager -- serve 0.0.0.0:50000   # the server (on one machine)
//! cargo run --example remote_manager -- put HOST:50000 hello  # a client (on any machine)
//! cargo run --example remote_manager -- get HOST:50000        # another client
//! ```
//!
//! Python registers a `queue.Queue` under a name (`QueueManager.register('get_queue', ...)`);
//! here the server publishes its queue as `"queue"` and clients look it up, typed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mp::Manager;
use mp::manager::QueueProxy;

const AUTHKEY: &[u8] = b"abracadabra";

/// Serves a queue on `address` until stopped, after saying where on stdout.
fn serve(address: &str) -> mp::Result<()> {
    let manager = Manager::serve(address, AUTHKEY)?;
    let queue = manager.queue::<String>()?;
    manager.expose("queue", &queue)?;
    println!("serving on {}", manager.address());
    manager.join()
}

fn put(address: &str, message: &str) -> mp::Result<()> {
    let manager = Manager::connect(address, AUTHKEY)?;
    let queue: QueueProxy<String> = manager.lookup("queue")?;
    queue.put(message.to_owned())?;
    println!("put {message:?}");
    Ok(())
}

fn get(address: &str) -> mp::Result<()> {
    let manager = Manager::connect(address, AUTHKEY)?;
    let queue: QueueProxy<String> = manager.lookup("queue")?;
    println!(
        "got {:?}",
        queue.get_timeout(std::time::Duration::from_secs(60))?
    );
    Ok(())
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> mp::Error {
    move |source| mp::Error::Io { context, source }
}

/// Runs the three roles as separate programs on this machine.
fn all_three() -> mp::Result<()> {
    let me = std::env::current_exe().map_err(io("current_exe"))?;
    let mut server = Command::new(&me)
        .args(["serve", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io("start the server"))?;
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(io("read the server's address"))?;
    let address = line.trim().trim_start_matches("serving on ").to_owned();
    println!("server: serving on {address}");
    let run = |args: &[&str]| -> mp::Result<String> {
        let out = Command::new(&me)
            .args(args)
            .output()
            .map_err(io("run a client"))?;
        if !out.status.success() {
            return Err(mp::Error::InvalidState {
                message: format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    println!("client 1: {}", run(&["put", &address, "hello"])?);
    let got = run(&["get", &address])?;
    println!("client 2: {got}");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got, "got \"hello\"");
    Ok(())
}

#[mp::main]
fn main() -> mp::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => all_three(),
        ["serve", address] => serve(address),
        ["put", address, message] => put(address, message),
        ["get", address] => get(address),
        _ => {
            eprintln!("usage: remote_manager [serve ADDRESS | put ADDRESS MESSAGE | get ADDRESS]");
            std::process::exit(2)
        }
    }
}
