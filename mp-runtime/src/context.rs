//! Contexts: a start method bound to the constructors of processes (Python's
//! `multiprocessing.get_context`).

use crate::process::{Process, ProcessBuilder};
use crate::start_method::{StartMethod, get_start_method};
use crate::worker::{RegisteredRun, Worker};

/// A context bound to one start method; its constructors mirror the crate's free functions, so
/// one program can mix methods (Python's `multiprocessing.get_context(method)`).
///
/// ```
/// # #[mp::worker] fn square(x: u64) -> u64 { x * x }
/// let ctx = mp::get_context(mp::StartMethod::Spawn);
/// let mut p = ctx.process(square, (7,));
/// p.start()?;
/// assert_eq!(p.join()?, 49);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// The start method of this context.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process running `worker(args)`, started with this context's method.
    pub fn process<W: Worker>(&self, worker: W, args: W::Args) -> Process<W::Output> {
        self.process_builder().build(worker, args)
    }

    /// A process running `value.run()` (the subclass style), started with this context's method.
    pub fn process_from_run<T: RegisteredRun>(&self, value: T) -> Process<()> {
        self.process_builder().build_run(value)
    }

    /// A builder whose start method is this context's.
    pub fn process_builder(&self) -> ProcessBuilder {
        Process::builder().start_method(self.method)
    }
}

/// A context for `method` (Python's `get_context(method)`).
pub fn get_context(method: StartMethod) -> Context {
    Context { method }
}

/// The default context (the default start method at the time of the call).
pub fn default_context() -> Context {
    Context {
        method: get_start_method(),
    }
}
