//! poll(2) with deadlines measured on the monotonic clock, retried on EINTR.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// A point in time after which a blocking call gives up; `None` waits forever.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// `timeout` from now; `None` means forever. Durations too large to represent wait forever.
    pub(crate) fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Time left, `None` for forever; zero once passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// This deadline, or `grace` from now if that is later: for waits on short critical
    /// sections, which even a non-blocking call should sit out.
    pub(crate) fn at_least(self, grace: Duration) -> Deadline {
        match self.0 {
            None => self,
            Some(at) => {
                let floor = Deadline::after(Some(grace));
                match floor.0 {
                    Some(f) if at < f => floor,
                    _ => self,
                }
            }
        }
    }

    /// This deadline, or `limit` from now if that is sooner: for a wait that must look at
    /// something else now and then.
    pub(crate) fn at_most(self, limit: Duration) -> Deadline {
        let cap = Deadline::after(Some(limit));
        match (self.0, cap.0) {
            (Some(at), Some(c)) if at <= c => self,
            _ => cap,
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    fn poll_timeout(&self) -> PollTimeout {
        match self.remaining() {
            None => PollTimeout::NONE,
            Some(left) => {
                // Round up so that a wait never returns before its deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        }
    }
}

/// Readiness of one descriptor after [`wait_readable`].
pub(crate) fn is_ready(flags: Option<PollFlags>) -> bool {
    flags.is_some_and(|f| !f.is_empty())
}

/// Waits until at least one of `fds` is readable (or hung up / in error), or the deadline passes.
/// Returns, per descriptor, whether it is ready. All false means the deadline passed.
pub(crate) fn wait_readable(fds: &[BorrowedFd<'_>], deadline: Deadline) -> io::Result<Vec<bool>> {
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut pfds, deadline.poll_timeout()) {
            Ok(0) => {
                if deadline.passed() {
                    return Ok(vec![false; fds.len()]);
                }
            }
            Ok(_) => {
                let ready: Vec<bool> = pfds.iter().map(|p| is_ready(p.revents())).collect();
                if ready.iter().any(|r| *r) {
                    return Ok(ready);
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if deadline.passed() {
            return Ok(vec![false; fds.len()]);
        }
    }
}

/// Waits for one descriptor; true if readable before the deadline.
pub(crate) fn readable(fd: BorrowedFd<'_>, deadline: Deadline) -> io::Result<bool> {
    Ok(wait_readable(&[fd], deadline)?[0])
}

/// Whether the peer of socket `fd` has closed its end (or the socket failed), without waiting
/// and without reading: data still unread does not count.
pub(crate) fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    // POLLRDHUP (Linux): the peer shut its end, even with data still unread. nix lacks it.
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut p = [PollFd::new(fd, rdhup)];
    match nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO) {
        Ok(0) | Err(_) => false,
        Ok(_) => p[0]
            .revents()
            .is_some_and(|r| r.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR)),
    }
}

/// Waits until `fd` is writable or the deadline passes.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, deadline: Deadline) -> io::Result<bool> {
    loop {
        let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
        match nix::poll::poll(&mut p, deadline.poll_timeout()) {
            Ok(0) if deadline.passed() => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
