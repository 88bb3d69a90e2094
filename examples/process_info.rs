//! Python's documentation example that shows the ids of the processes involved:
//!
//! ```python
//! def info(title):
//!     print(title)
//!     print('module name:', __name__)
//!     print('parent process:', os.getppid())
//!     print('process id:', os.getpid())
//!
//! def f(name):
//!     info('function f')
//!     print('hello', name)
//! ```

fn info(title: &str) {
    println!("{title}");
    println!("module name: {}", module_path!());
    println!("parent process: {}", std::os::unix::process::parent_id());
    println!("process id: {}", std::process::id());
}

#[mp::worker]
fn f(name: String) {
    info("function f");
    println!("hello {name}");
}

#[mp::main]
fn main() -> mp::Result<()> {
    info("main line");
    let mut p = mp::Process::new(f, ("bob".to_string(),));
    p.start()?;
    p.join()
}
