//! How other threads wake rank 0's MPI thread, which sleeps in `poll` between its looks at MPI:
//! a command (launch, kill, finish) always wakes it; bytes written to a relay wake it only if it
//! sleeps, since while it is awake it finds them at its next round without a system call here.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;

use crate::error::{Error, Result};

/// The MPI thread's wake-up.
pub(crate) struct Waker {
    fd: EventFd,
    /// Bytes were written to a relay since the MPI thread last looked at the relays.
    pending: AtomicBool,
    /// The MPI thread sleeps in `poll` (or is about to).
    sleeping: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> Result<Waker> {
        Ok(Waker {
            fd: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("eventfd", e))?,
            pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
        })
    }

    /// Wakes the MPI thread whatever it is doing (a command waits for it).
    pub(crate) fn wake(&self) {
        let _ = self.fd.write(1);
    }

    /// A relay has bytes for an agent: wakes the MPI thread only if it sleeps. (Either it sees
    /// `pending` after saying it sleeps, or this sees `sleeping`: both are `SeqCst`.)
    pub(crate) fn nudge(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// The MPI thread is about to look at every relay: bytes written from now on are seen now
    /// or make its next [`Waker::sleep`] return at once.
    pub(crate) fn looking(&self) {
        self.pending.store(false, Ordering::SeqCst);
    }

    /// The MPI thread sleeps until woken or `timeout`; not at all if a relay got bytes since
    /// it last looked.
    pub(crate) fn sleep(&self, timeout: Duration) {
        self.sleeping.store(true, Ordering::SeqCst);
        let timeout = if self.pending.swap(false, Ordering::SeqCst) {
            // Still reads a wake-up that came meanwhile.
            Duration::ZERO
        } else {
            timeout
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let polled = nix::poll::ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None);
        self.sleeping.store(false, Ordering::SeqCst);
        if polled.is_ok()
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            let _ = self.fd.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};
    use std::time::Instant;

    use super::*;

    /// Sleeps on `waker` for a minute in another thread; the receiver hears when it returns.
    fn sleeper(waker: &Arc<Waker>) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        let w = waker.clone();
        std::thread::spawn(move || {
            w.sleep(Duration::from_secs(60));
            tx.send(()).unwrap();
        });
        rx
    }

    #[test]
    fn bytes_for_an_awake_thread_cost_no_wake_up_and_skip_its_next_sleep() {
        let waker = Arc::new(Waker::new().unwrap());
        waker.nudge();
        assert!(waker.fd.read().is_err(), "no wake-up while it is awake");
        sleeper(&waker)
            .recv_timeout(Duration::from_secs(30))
            .expect("a pending write skips the sleep");
        // Looking at the relays clears it: the next sleep waits for a wake-up.
        waker.nudge();
        waker.looking();
        let rx = sleeper(&waker);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        waker.wake();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a command wakes it");
    }

    #[test]
    fn bytes_for_a_sleeping_thread_wake_it() {
        let waker = Arc::new(Waker::new().unwrap());
        let rx = sleeper(&waker);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !waker.sleeping.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the thread never went to sleep");
            std::thread::yield_now();
        }
        waker.nudge();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the nudge wakes the sleeping thread");
    }
}
