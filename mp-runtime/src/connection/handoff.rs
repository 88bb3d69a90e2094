//! A pipe's hand-off in shared memory: a short message for a receiver that is spinning in a
//! receive at this very moment is copied into memory both ends map, instead of being written to
//! the socket, so a request and its reply between two CPUs make no system call at all.
//!
//! Each direction of a [`Pipe`](super::Pipe) has a *slot*: a state word, two counters and room
//! for one message of up to [`CAPACITY`] bytes. The socket stays the channel of record. It
//! carries every message the slot does not (messages with descriptors, longer ones, and any
//! message sent while no receiver spins), the end of the stream, and the readiness that
//! [`wait`](super::wait) and `poll(2)` see. A message only enters the slot while a receive waits
//! for it, so anything that watches the descriptor sees what it would without the slot.
//!
//! The state word holds a state in its low byte and an argument above it:
//!
//! ```text
//! IDLE ──receiver spins──▶ WAITING ──sender claims──▶ CLAIMED(pid) ──copied──▶ FULL(len)
//!                          WAITING ──sender wrote to the socket──▶ SOCKET
//! WAITING, SOCKET ──the receiver stops spinning──▶ IDLE
//! FULL ──a receiver copies it out──▶ TAKING ──▶ IDLE
//! ```
//!
//! **Order.** A message must not overtake one sent before it on the socket. A sender counts
//! each message it writes to the socket before writing it (`socket_sent`), a receiver each one
//! it reads (`socket_read`), and a sender only uses the slot when the two are equal: every
//! socket message it sent before was read. A receiver announces WAITING and then compares the
//! counters; a socket message counted after that comparison was counted before its sender
//! looked at the state, so that sender saw WAITING and turns it into SOCKET once its message is
//! written (the store-then-load pattern of Dekker's algorithm, with sequentially consistent
//! atomics on both sides). Messages sent after a slot message see the slot FULL and go to the
//! socket, and every receive takes a full slot before it reads the socket.
//!
//! **Crashes.** A sender that dies between CLAIMED and FULL is noticed by the receiver waiting
//! for its message (no thread has its id any more), which frees the slot. A receiver that dies
//! while WAITING leaves at most one message in the slot, which the next receive on that end
//! takes first. A slot left in TAKING by a receiver that died while copying stays unused, and
//! the socket carries everything, as it would without the slot; so does a pair of counters
//! left unequal by a process that died while it sent or read.
//!
//! **Untrusted peers.** A peer that maps the memory can write anything into it. Lengths are
//! checked against [`CAPACITY`], and a message is copied out before it is decoded, so the worst
//! a peer can do through the slot is what it can do through the socket: send a wrong message,
//! or stop in the middle of one (a receive with a timeout then fails as it would on the socket).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::mmap::{Mapping, SharedRegion};
use crate::sys::poll::{Deadline, readable};
use crate::sys::spin_wait::SpinWait;
use crate::sys::thread_tag;

/// The bytes of one direction's slot: its words, then its message.
const SLOT_LEN: usize = 8192;
/// Where each word of a slot is, a cache line apart: the state word is written by both sides,
/// each counter by one side only.
const STATE: usize = 0;
const SOCKET_SENT: usize = 64;
const SOCKET_READ: usize = 128;
const DATA: usize = 192;
/// The longest message that goes through a slot; longer ones take the socket.
pub(crate) const CAPACITY: usize = SLOT_LEN - DATA;
/// A pipe's memory: one slot for each direction.
const REGION_LEN: usize = 2 * SLOT_LEN;

const IDLE: u64 = 0;
const WAITING: u64 = 1;
const CLAIMED: u64 = 2;
const FULL: u64 = 3;
const SOCKET: u64 = 4;
const TAKING: u64 = 5;

/// A word of the first slot's state line that the side which did not make the memory sets
/// once it has mapped it, before its first message: how the other side learns, with no change
/// to the messages, that its peer uses the memory (a manager's connections).
const ATTACHED: usize = 8;
const ATTACHED_MAGIC: u64 = 0x6d70_5f70_6167_6531; // "mp_page1"

/// How long a receiver waits for a claimed slot before it checks that the sender still runs.
const LIVENESS_CHECK_AFTER: Duration = Duration::from_millis(1);

/// The state in a state word.
fn state(word: u64) -> u64 {
    word & 0xff
}

/// The argument in a state word: the sender's pid (CLAIMED) or the message's length (FULL).
fn argument(word: u64) -> u64 {
    word >> 8
}

fn word(state: u64, argument: u64) -> u64 {
    state | argument << 8
}

/// One end's view of its pipe's memory: the slot it receives on and the one it sends on.
#[derive(Clone, Debug)]
pub(crate) struct Handoff {
    /// The memory; its descriptor is kept (or not) by the owner, which needs it only to send
    /// the end to another process.
    memory: Arc<Mapping>,
    /// The slot this end receives on (0 or 1); it sends on the other.
    incoming: u8,
}

/// How a receiver's [`Handoff::spin`] went.
pub(crate) enum Spun {
    /// It announced itself on the slot: end it with [`Handoff::end_spin`].
    Announced,
    /// It looked at the socket instead (or did not spin at all); whether the socket became
    /// readable.
    OnSocket(bool),
}

/// Whether `fd` is readable now (an error counts: the read reports it).
fn looks_readable(fd: BorrowedFd<'_>) -> bool {
    readable(fd, Deadline::after(Some(Duration::ZERO))).unwrap_or(true)
}

/// What a receiver finds when it stops spinning.
pub(crate) enum Outcome {
    /// A message, from the slot.
    Message(Vec<u8>),
    /// Nothing in the slot: read the socket.
    Socket,
}

impl Handoff {
    /// The two ends of new memory (receiving on slots 0 and 1) and its descriptor, or `None`
    /// when it cannot be had (no memory, no descriptors left): the connection then works
    /// through its socket alone.
    pub(crate) fn pair() -> Option<(Handoff, Handoff, OwnedFd)> {
        let (memory, fd) = SharedRegion::create_reserved(c"mp-pipe", REGION_LEN)
            .ok()?
            .into_mapping();
        let memory = Arc::new(memory);
        let a = Handoff {
            memory: memory.clone(),
            incoming: 0,
        };
        Some((
            a,
            Handoff {
                memory,
                incoming: 1,
            },
            fd,
        ))
    }

    /// The end whose memory is `fd` and which receives on slot `incoming`, as another process
    /// sent it, with the descriptor back.
    pub(crate) fn from_fd(
        fd: OwnedFd,
        incoming: u8,
    ) -> std::result::Result<(Self, OwnedFd), String> {
        // The size first: a peer's descriptor is not mapped at whatever size it has.
        let size = nix::sys::stat::fstat(&fd)
            .map_err(|e| format!("cannot read the size of the memory received: {e}"))?
            .st_size;
        if size != REGION_LEN as i64 || incoming > 1 {
            return Err("the connection received has memory of the wrong size".into());
        }
        let region = SharedRegion::from_fd(fd)
            .map_err(|e| format!("cannot map the memory of the connection received: {e}"))?;
        if region.len() != REGION_LEN {
            return Err("the connection received has memory of the wrong size".into());
        }
        let (memory, fd) = region.into_mapping();
        Ok((
            Handoff {
                memory: Arc::new(memory),
                incoming,
            },
            fd,
        ))
    }

    /// The slot this end receives on.
    pub(crate) fn incoming(&self) -> u8 {
        self.incoming
    }

    /// Tells the side that made the memory that this side uses it (see [`ATTACHED`]).
    pub(crate) fn mark_attached(&self) {
        self.word(0, ATTACHED)
            .store(ATTACHED_MAGIC, Ordering::SeqCst);
    }

    /// Whether the other side said it uses the memory.
    pub(crate) fn peer_attached(&self) -> bool {
        self.word(0, ATTACHED).load(Ordering::SeqCst) == ATTACHED_MAGIC
    }

    /// A word of slot `slot`.
    fn word(&self, slot: u8, at: usize) -> &AtomicU64 {
        let offset = usize::from(slot) * SLOT_LEN + at;
        debug_assert!(offset + 8 <= self.memory.len() && offset.is_multiple_of(8));
        // SAFETY: `offset` is inside the mapping (two slots, checked at creation and when
        // received) and 8-aligned (the mapping is page-aligned, the words are at multiples of
        // 8). Any bit pattern is a valid `AtomicU64`, other processes only touch the word
        // atomically, and the mapping lives as long as `self.memory`, which the reference
        // borrows.
        unsafe { &*self.memory.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn data(&self, slot: u8) -> *mut u8 {
        // SAFETY: inside the mapping, as for `word`.
        unsafe {
            self.memory
                .as_ptr()
                .add(usize::from(slot) * SLOT_LEN + DATA)
        }
    }

    fn outgoing(&self) -> u8 {
        1 - self.incoming
    }

    // ---- the sending side ----

    /// Puts `payload` in the outgoing slot if a receiver spins for it and nothing sent before
    /// it is still on the socket. False: send it through the socket
    /// ([`before_socket_send`](Handoff::before_socket_send) and
    /// [`after_socket_send`](Handoff::after_socket_send) around the write).
    pub(crate) fn try_put(&self, payload: &[u8]) -> bool {
        let slot = self.outgoing();
        let state_word = self.word(slot, STATE);
        if payload.len() > CAPACITY
            || state_word.load(Ordering::SeqCst) != WAITING
            || self.word(slot, SOCKET_SENT).load(Ordering::SeqCst)
                != self.word(slot, SOCKET_READ).load(Ordering::SeqCst)
        {
            return false;
        }
        let claimed = word(CLAIMED, u64::from(crate::sys::pid::current()));
        if state_word
            .compare_exchange(WAITING, claimed, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        // SAFETY: the slot's data area holds CAPACITY bytes and `payload` is no longer; the
        // CLAIMED state gives this process the area until it publishes FULL (a receiver only
        // reads it after seeing FULL). A peer breaking that protocol can only garble the bytes
        // it then reads: they are copied out and decoded as untrusted input.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), self.data(slot), payload.len()) };
        // A receiver that took this process for dead freed the slot: send through the socket.
        state_word
            .compare_exchange(
                claimed,
                word(FULL, payload.len() as u64),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Writes one message to the socket by `write`, counted so that no later message overtakes
    /// it through the slot, and turns a receiver spinning on the slot to the socket.
    pub(crate) fn send_on_socket(&self, write: impl FnOnce() -> Result<()>) -> Result<()> {
        self.before_socket_send();
        let sent = write();
        self.after_socket_send();
        sent
    }

    /// Counts a message about to be written to the socket.
    fn before_socket_send(&self) {
        self.word(self.outgoing(), SOCKET_SENT)
            .fetch_add(1, Ordering::SeqCst);
    }

    /// After a message was written to the socket: a receiver spinning on the slot is told to
    /// read the socket.
    fn after_socket_send(&self) {
        fence(Ordering::SeqCst);
        let state_word = self.word(self.outgoing(), STATE);
        // A load first: with nobody spinning (the common case when the socket is used), the
        // cache line stays shared instead of being taken for a write that would fail.
        if state_word.load(Ordering::SeqCst) == WAITING {
            let _ =
                state_word.compare_exchange(WAITING, SOCKET, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    // ---- the receiving side ----

    /// Counts a message read from the socket.
    pub(crate) fn socket_read(&self) {
        self.word(self.incoming, SOCKET_READ)
            .fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a message is in the slot, left by a receive that announced it spun and died.
    pub(crate) fn has_message(&self) -> bool {
        state(self.word(self.incoming, STATE).load(Ordering::SeqCst)) == FULL
    }

    /// The message in the slot, if there is one: a receive takes it before it reads the socket.
    pub(crate) fn take_message(&self) -> Option<Result<Vec<u8>>> {
        let state_word = self.word(self.incoming, STATE);
        let now = state_word.load(Ordering::SeqCst);
        if state(now) != FULL
            || state_word
                .compare_exchange(now, TAKING, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return None;
        }
        let len = argument(now);
        let message = if len > CAPACITY as u64 {
            Err(Error::protocol(format!(
                "the peer put a message of {len} bytes in the pipe's shared memory, which holds \
                 at most {CAPACITY}"
            )))
        } else {
            let mut buf = vec![0u8; len as usize];
            // SAFETY: `len` bytes of the slot's data area, which holds CAPACITY; TAKING keeps
            // senders out of it until IDLE is stored below.
            unsafe {
                std::ptr::copy_nonoverlapping(self.data(self.incoming), buf.as_mut_ptr(), buf.len())
            };
            Ok(buf)
        };
        state_word.store(IDLE, Ordering::SeqCst);
        Some(message)
    }

    /// Announces that this receiver spins for a message. False when it cannot: another receiver
    /// of this end spins, or a socket message was sent that is not read yet (read it).
    fn announce(&self) -> bool {
        let slot = self.incoming;
        if self.word(slot, SOCKET_SENT).load(Ordering::SeqCst)
            != self.word(slot, SOCKET_READ).load(Ordering::SeqCst)
            || self
                .word(slot, STATE)
                .compare_exchange(IDLE, WAITING, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return false;
        }
        fence(Ordering::SeqCst);
        if self.word(slot, SOCKET_SENT).load(Ordering::SeqCst)
            != self.word(slot, SOCKET_READ).load(Ordering::SeqCst)
        {
            // A socket message came in between: it goes first.
            let _ = self.word(slot, STATE).compare_exchange(
                WAITING,
                SOCKET,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        true
    }

    /// Whether the spin announced by [`announce`](Handoff::announce) can end: a sender claimed
    /// the slot or wrote to the socket.
    fn answered(&self) -> bool {
        self.word(self.incoming, STATE).load(Ordering::SeqCst) != WAITING
    }

    /// A receiver's spin by `spin`'s rule, until `deadline` at most: on the slot if this
    /// receiver can announce itself there, else (a socket message is pending, or another
    /// receiver of this end spins) on the socket `fd`.
    pub(crate) fn spin(&self, spin: &SpinWait, fd: BorrowedFd<'_>, deadline: Deadline) -> Spun {
        let mut announced = None;
        let socket_ready = spin.spin_until(deadline, || match announced {
            None => {
                let on_slot = self.announce();
                announced = Some(on_slot);
                if on_slot {
                    self.answered()
                } else {
                    looks_readable(fd)
                }
            }
            Some(true) => self.answered(),
            Some(false) => looks_readable(fd),
        });
        if announced == Some(true) {
            Spun::Announced
        } else {
            Spun::OnSocket(socket_ready)
        }
    }

    /// Ends an announced spin: takes the message a sender put (or is putting) in the slot, or
    /// tells the caller to read the socket. `stall` bounds how long a sender may take between
    /// its claim and its message (`None`: as long as it runs); past it the peer is taken to
    /// have stopped in the middle of a message, [`Error::Protocol`], as on the socket.
    pub(crate) fn end_spin(&self, stall: Option<Duration>) -> Result<Outcome> {
        let state_word = self.word(self.incoming, STATE);
        let started = Instant::now();
        let mut checked = started;
        loop {
            let now = state_word.load(Ordering::SeqCst);
            match state(now) {
                WAITING | SOCKET => {
                    if state_word
                        .compare_exchange(now, IDLE, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        return Ok(Outcome::Socket);
                    }
                }
                FULL => {
                    if let Some(message) = self.take_message() {
                        return message.map(Outcome::Message);
                    }
                }
                CLAIMED => {
                    // The sender is copying its message in: as long as a memcpy, unless it
                    // was preempted or died.
                    if checked.elapsed() >= LIVENESS_CHECK_AFTER {
                        checked = Instant::now();
                        let pid = argument(now) as u32;
                        if !thread_tag::still_running(pid, thread_tag::UNKNOWN) {
                            let _ = state_word.compare_exchange(
                                now,
                                IDLE,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                            continue;
                        }
                        if stall.is_some_and(|s| started.elapsed() >= s.max(Duration::from_secs(1)))
                        {
                            return Err(Error::protocol(
                                "the peer stopped in the middle of a message it was putting \
                                 in the pipe's shared memory",
                            ));
                        }
                    }
                    // Yield at first; then sleep, longer the longer it lasts (up to 10 ms), so
                    // that a peer that claims and never finishes costs next to no CPU.
                    let waited = started.elapsed();
                    if waited < LIVENESS_CHECK_AFTER {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep((waited / 16).min(Duration::from_millis(10)));
                    }
                }
                // Not this receiver's spin any more (a peer rewrote the state, or a receiver
                // that died left it TAKING): read the socket.
                _ => return Ok(Outcome::Socket),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (Handoff, Handoff) {
        let (a, b, _fd) = Handoff::pair().unwrap();
        (a, b)
    }

    #[test]
    fn a_message_goes_through_the_slot_only_while_a_receiver_spins() {
        let (a, b) = pair();
        assert!(!a.try_put(b"early"), "nobody spins");
        assert!(b.announce());
        assert!(!b.answered());
        assert!(a.try_put(b"hello"));
        assert!(b.answered());
        match b.end_spin(None).unwrap() {
            Outcome::Message(m) => assert_eq!(m, b"hello"),
            Outcome::Socket => panic!("the message was in the slot"),
        }
        // The slot is free again, and the other direction is separate.
        assert!(!a.try_put(b"again"));
        assert!(a.announce());
        assert!(b.try_put(b"back"));
        assert!(matches!(a.end_spin(None).unwrap(), Outcome::Message(m) if m == b"back"));
    }

    #[test]
    fn a_socket_message_not_yet_read_keeps_later_ones_off_the_slot() {
        let (a, b) = pair();
        // Sent on the socket while nobody spun, not read yet.
        a.before_socket_send();
        a.after_socket_send();
        assert!(!b.announce(), "the socket message goes first");
        b.socket_read();
        assert!(b.announce());
        // A socket message written while the receiver spins turns its spin to the socket.
        a.before_socket_send();
        a.after_socket_send();
        assert!(b.answered());
        assert!(!a.try_put(b"late"));
        assert!(matches!(b.end_spin(None).unwrap(), Outcome::Socket));
        b.socket_read();
        assert!(b.announce());
        assert!(a.try_put(b"now"));
        assert!(matches!(b.end_spin(None).unwrap(), Outcome::Message(m) if m == b"now"));
    }

    #[test]
    fn a_spin_that_ends_unanswered_frees_the_slot() {
        let (a, b) = pair();
        assert!(b.announce());
        assert!(!b.announce(), "one receiver spins at a time");
        assert!(matches!(b.end_spin(None).unwrap(), Outcome::Socket));
        assert!(!a.try_put(b"x"));
        assert!(b.take_message().is_none());
    }

    #[test]
    fn a_message_left_by_a_receiver_that_died_is_taken_next() {
        let (a, b) = pair();
        assert!(b.announce());
        assert!(a.try_put(b"orphan"));
        // The receiver died here; the next receive of that end finds the message.
        assert!(b.has_message());
        assert_eq!(b.take_message().unwrap().unwrap(), b"orphan");
        assert!(!b.has_message());
    }

    #[test]
    fn a_message_too_long_for_the_slot_is_refused() {
        let (a, b) = pair();
        assert!(b.announce());
        assert!(!a.try_put(&vec![0u8; CAPACITY + 1]));
        assert!(a.try_put(&vec![7u8; CAPACITY]));
        assert!(matches!(b.end_spin(None).unwrap(), Outcome::Message(m) if m.len() == CAPACITY));
    }

    #[test]
    fn a_length_beyond_the_slot_written_by_a_peer_is_a_protocol_error() {
        let (_a, b) = pair();
        b.word(b.incoming, STATE)
            .store(word(FULL, CAPACITY as u64 + 1), Ordering::SeqCst);
        assert!(matches!(
            b.take_message(),
            Some(Err(Error::Protocol { .. }))
        ));
        // The slot is usable again.
        assert!(b.announce());
    }

    #[test]
    fn a_sender_that_died_after_its_claim_frees_the_slot() {
        let (_a, b) = pair();
        assert!(b.announce());
        // A pid no process has: above the kernel's maximum.
        let gone = (1u64 << 22) + 1;
        b.word(b.incoming, STATE)
            .store(word(CLAIMED, gone), Ordering::SeqCst);
        assert!(matches!(b.end_spin(None).unwrap(), Outcome::Socket));
        assert!(b.announce());
    }

    #[test]
    fn a_live_sender_that_never_finishes_its_message_fails_a_receive_with_a_limit() {
        let (_a, b) = pair();
        assert!(b.announce());
        b.word(b.incoming, STATE).store(
            word(CLAIMED, u64::from(crate::sys::pid::current())),
            Ordering::SeqCst,
        );
        let started = Instant::now();
        let err = b.end_spin(Some(Duration::ZERO)).err().unwrap();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[test]
    fn memory_of_the_wrong_size_is_refused() {
        let region = SharedRegion::create(c"mp-test", 4096).unwrap();
        let fd = region.as_fd().try_clone_to_owned().unwrap();
        assert!(Handoff::from_fd(fd, 0).unwrap_err().contains("wrong size"));
        let (_a, _b, fd) = Handoff::pair().unwrap();
        assert!(Handoff::from_fd(fd.try_clone().unwrap(), 2).is_err());
        let (b, _fd) = Handoff::from_fd(fd, 1).unwrap();
        assert_eq!(b.incoming(), 1);
        // Not memory at all (what a hostile manager client could offer).
        let devnull = std::fs::File::open("/dev/null").unwrap();
        assert!(Handoff::from_fd(devnull.into(), 1).is_err());
    }

    #[test]
    fn the_side_that_maps_the_memory_says_so() {
        let (a, _b, fd) = Handoff::pair().unwrap();
        assert!(!a.peer_attached());
        let (b, _fd) = Handoff::from_fd(fd, 1).unwrap();
        b.mark_attached();
        assert!(a.peer_attached());
    }
}
