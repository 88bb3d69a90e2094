//! The launcher thread: every child of this process is created from one long-lived thread.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that created a child exits, not the process.
//! Children started from a short-lived thread (a test, a scoped thread, a pool's helper) would
//! be killed when that thread ends. Creating every child from one thread that lives as long as
//! the process ties the children's lifetime to the process, as users expect.
//!
//! The main thread lives as long as the process, so a start from the main thread runs inline
//! and skips the hop to the launcher (in a fork child the only thread counts as main).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::error::{Error, Result};
use crate::global::Global;

type Job = Box<dyn FnOnce() + Send>;

static LAUNCHER: Global<Option<SyncSender<Job>>> = Global::new(|| None);

/// The stack of the launcher thread; fork children run their worker on it.
const STACK_SIZE: usize = 8 << 20;

/// Runs `job` on the launcher thread and returns its result.
pub(crate) fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    if nix::unistd::gettid() == nix::unistd::getpid() {
        return Ok(job());
    }
    let (reply_tx, reply_rx) = sync_channel::<T>(1);
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(job());
    });
    let sender = {
        let mut slot = LAUNCHER.lock();
        match slot.as_ref() {
            Some(s) => s.clone(),
            None => {
                let (tx, rx) = sync_channel::<Job>(0);
                std::thread::Builder::new()
                    .name("mp-launcher".into())
                    .stack_size(STACK_SIZE)
                    .spawn(move || serve(rx))
                    .map_err(|e| Error::io("start the launcher thread", e))?;
                *slot = Some(tx.clone());
                tx
            }
        }
    };
    sender
        .send(job)
        .map_err(|_| Error::state("the launcher thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| Error::state("the launcher thread dropped a request"))
}

fn serve(rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        job();
    }
}

/// In a fork child: the launcher thread does not exist there; the next start makes a new one.
pub(crate) fn reset_after_fork() {
    LAUNCHER.reset();
}

/// Whether the launcher thread has been started in this process.
pub(crate) fn exists() -> bool {
    LAUNCHER.lock().is_some()
}

/// Whether the calling thread is the launcher.
pub(crate) fn on_launcher_thread() -> bool {
    std::thread::current().name() == Some("mp-launcher")
}
