//! Mutual authentication with a shared key: HMAC-SHA256 challenge-response in both directions.
//!
//! The side that accepted the connection serves the handshake, the side that connected is the
//! client. Each side proves it knows the key by answering a random 32-byte challenge from the
//! other, so neither talks to an impostor. An empty key is allowed and the handshake still runs.
//! A wrong key is [`Error::Authentication`] on both sides.
//!
//! The protocol is a state machine without I/O ([`Handshake`]): it is fed the bytes that arrive
//! and says what to send, so one thread can advance many handshakes at once as bytes come (the
//! [`Listener`](crate::Listener) does), and a peer that sends slowly holds no thread. It never
//! asks for more than the rest of the current frame, so bytes the peer sends after its side of
//! the handshake (its first message) stay in the socket. [`serve_handshake_until`] and
//! [`client_handshake_until`] run it on one socket with an overall deadline.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use hmac::{Hmac, Mac};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use sha2::Sha256;

use super::frame::{HEADER_LEN, header, parse_header, recv_some_with};
use crate::error::{Error, Result};
use crate::sys::poll::{Deadline, readable, wait_writable};

/// How long, in all, a [`Listener`](crate::Listener) gives a connecting peer to complete the
/// handshake, and [`Client::connect`](crate::Client::connect) gives the listener. The deadline
/// covers the whole exchange, not each read: a peer that sends one byte now and then is cut off
/// when it passes.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

const CHALLENGE: &[u8] = b"#CHALLENGE#{sha256}";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 32;
/// Handshake frames are tiny; anything larger is not a handshake.
const MAX_HANDSHAKE_FRAME: u64 = 256;

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(message);
    m
}

fn malformed() -> Error {
    Error::Authentication {
        message: "the peer sent a malformed handshake message".into(),
    }
}

fn peer_closed() -> Error {
    Error::Authentication {
        message: "the peer closed the connection during the handshake".into(),
    }
}

/// What a [`Handshake`] waits for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The peer's digest of the challenge we sent.
    Answer,
    /// The peer's challenge.
    Challenge,
    /// The peer's verdict on our digest (`#WELCOME#` or `#FAILURE#`).
    Verdict,
    /// Authenticated (what is left to send, if anything, still has to be sent).
    Done,
    /// Failed; nothing more is read.
    Failed,
}

/// One side of the handshake, as a state machine without I/O.
///
/// The caller sends [`outgoing`](Handshake::outgoing) (reporting what was written with
/// [`sent`](Handshake::sent)), reads at most [`wanted`](Handshake::wanted) bytes and passes them
/// to [`feed`](Handshake::feed), until [`finished`](Handshake::finished).
pub(crate) struct Handshake {
    key: Vec<u8>,
    server: bool,
    stage: Stage,
    /// The challenge we sent, to check the peer's answer against.
    challenge: Vec<u8>,
    /// The frame being received: its header, then its payload.
    frame: Vec<u8>,
    /// Length of the whole frame being received, once its header is in.
    frame_len: Option<usize>,
    out: Vec<u8>,
    out_pos: usize,
}

impl Handshake {
    /// The accepting side: challenges the peer, then answers the peer's challenge.
    pub(crate) fn server(key: &[u8]) -> Result<Self> {
        let mut h = Handshake::new(key, true);
        h.send_challenge()?;
        Ok(h)
    }

    /// The connecting side: answers the peer's challenge, then challenges it.
    pub(crate) fn client(key: &[u8]) -> Self {
        Handshake::new(key, false)
    }

    fn new(key: &[u8], server: bool) -> Self {
        Handshake {
            key: key.to_vec(),
            server,
            stage: if server {
                Stage::Answer
            } else {
                Stage::Challenge
            },
            challenge: Vec::new(),
            frame: Vec::with_capacity(HEADER_LEN),
            frame_len: None,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    fn push_frame(&mut self, payload: &[u8]) {
        self.out.extend_from_slice(&header(payload.len(), 0));
        self.out.extend_from_slice(payload);
    }

    fn send_challenge(&mut self) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::sys::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
        let mut message = CHALLENGE.to_vec();
        message.extend_from_slice(&nonce);
        self.push_frame(&message);
        self.challenge = message;
        Ok(())
    }

    /// Bytes waiting to be sent to the peer.
    pub(crate) fn outgoing(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Records that the first `n` bytes of [`outgoing`](Handshake::outgoing) were sent.
    pub(crate) fn sent(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// How many bytes to read next: the rest of the frame being received (0 when nothing more
    /// is to be read). Reading no more than this leaves the peer's later messages in the socket.
    pub(crate) fn wanted(&self) -> usize {
        match self.stage {
            Stage::Done | Stage::Failed => 0,
            _ => self.frame_len.unwrap_or(HEADER_LEN) - self.frame.len(),
        }
    }

    /// Whether this side is authenticated (once [`outgoing`](Handshake::outgoing) is sent too,
    /// the connection is ready).
    pub(crate) fn authenticated(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Whether the handshake is complete: authenticated and everything sent.
    pub(crate) fn finished(&self) -> bool {
        self.authenticated() && self.outgoing().is_empty()
    }

    /// Takes bytes received from the peer; returns how many were used (fewer than given only
    /// once the handshake is over). A failed check is [`Error::Authentication`]; the handshake
    /// then takes nothing more, and [`outgoing`](Handshake::outgoing) may still hold a
    /// `#FAILURE#` for the peer.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<usize> {
        let given = bytes.len();
        while !bytes.is_empty() {
            let want = self.wanted();
            if want == 0 {
                break;
            }
            let n = want.min(bytes.len());
            self.frame.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.frame_len.is_none() && self.frame.len() == HEADER_LEN {
                let head: &[u8; HEADER_LEN] = self.frame[..].try_into().expect("a whole header");
                match parse_header(head, MAX_HANDSHAKE_FRAME) {
                    Ok((len, 0)) => self.frame_len = Some(HEADER_LEN + len),
                    Ok(_) | Err(_) => return Err(self.fail(malformed())),
                }
            }
            if self.frame_len == Some(self.frame.len()) {
                let payload = self.frame.split_off(HEADER_LEN);
                self.frame.clear();
                self.frame_len = None;
                self.on_message(&payload)?;
            }
        }
        Ok(given - bytes.len())
    }

    fn fail(&mut self, e: Error) -> Error {
        self.stage = Stage::Failed;
        e
    }

    fn on_message(&mut self, message: &[u8]) -> Result<()> {
        match self.stage {
            Stage::Answer => {
                if mac(&self.key, &self.challenge)
                    .verify_slice(message)
                    .is_err()
                {
                    // Tell the peer, then fail.
                    self.push_frame(FAILURE);
                    return Err(self.fail(Error::Authentication {
                        message: "the peer's digest does not match: it uses a different authkey"
                            .into(),
                    }));
                }
                self.push_frame(WELCOME);
                self.stage = if self.server {
                    Stage::Challenge
                } else {
                    Stage::Done
                };
            }
            Stage::Challenge => {
                if !message.starts_with(CHALLENGE) || message.len() != CHALLENGE.len() + NONCE_LEN {
                    return Err(self.fail(Error::Authentication {
                        message: "the peer sent an invalid challenge".into(),
                    }));
                }
                let digest = mac(&self.key, message).finalize().into_bytes();
                self.push_frame(&digest);
                self.stage = Stage::Verdict;
            }
            Stage::Verdict => {
                if message != WELCOME {
                    return Err(self.fail(Error::Authentication {
                        message: "the peer rejected our digest: it uses a different authkey".into(),
                    }));
                }
                if self.server {
                    self.stage = Stage::Done;
                } else {
                    self.send_challenge().map_err(|e| self.fail(e))?;
                    self.stage = Stage::Answer;
                }
            }
            Stage::Done | Stage::Failed => {}
        }
        Ok(())
    }
}

/// What [`advance`] is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The handshake is complete.
    Finished,
    /// The socket must become readable.
    Read,
    /// The socket must become writable.
    Write,
}

/// Advances `hs` on `sock` as far as it goes without blocking (whatever the socket's mode):
/// sends what it can, reads what has arrived. Descriptors are not part of a handshake: one that
/// arrives is closed and the handshake fails. A peer that hung up is [`Error::Closed`].
pub(crate) fn advance(sock: BorrowedFd<'_>, hs: &mut Handshake) -> Result<Wait> {
    let mut buf = [0u8; HEADER_LEN + MAX_HANDSHAKE_FRAME as usize];
    loop {
        while !hs.outgoing().is_empty() {
            match send(
                sock.as_raw_fd(),
                hs.outgoing(),
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => hs.sent(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(Wait::Write),
                Err(e) => return Err(Error::sys("send", e)),
            }
        }
        if hs.finished() {
            return Ok(Wait::Finished);
        }
        let want = hs.wanted().min(buf.len());
        let mut fds = 0usize;
        let got = recv_some_with(sock, &mut buf[..want], MsgFlags::MSG_DONTWAIT, |_fd| {
            fds += 1
        });
        let n = match got {
            Ok(None) => return Ok(Wait::Read),
            Ok(Some(0)) | Err(Error::Closed) => return Err(Error::Closed),
            Ok(Some(_)) | Err(Error::Protocol { .. }) if fds > 0 => return Err(malformed()),
            Ok(Some(n)) => n,
            Err(Error::Protocol { .. }) => return Err(malformed()),
            Err(e) => return Err(e),
        };
        if let Err(e) = hs.feed(&buf[..n]) {
            // Best effort: the `#FAILURE#` the handshake queued for the peer.
            let _ = send(
                sock.as_raw_fd(),
                hs.outgoing(),
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
            return Err(e);
        }
    }
}

/// Runs `hs` to completion on `sock`, giving up with [`Error::Timeout`] at `deadline`, which
/// bounds the whole handshake.
fn run(sock: BorrowedFd<'_>, mut hs: Handshake, deadline: Deadline) -> Result<()> {
    loop {
        let wait = advance(sock, &mut hs).map_err(|e| match e {
            Error::Closed => peer_closed(),
            e => e,
        })?;
        let ready = match wait {
            Wait::Finished => return Ok(()),
            Wait::Read => readable(sock, deadline),
            Wait::Write => wait_writable(sock, deadline),
        };
        if !ready.map_err(|e| Error::io("poll", e))? {
            return Err(Error::Timeout);
        }
    }
}

/// The accepting side of the handshake on `sock`, within `deadline` in all.
pub(crate) fn serve_handshake_until(
    sock: BorrowedFd<'_>,
    key: &[u8],
    deadline: Deadline,
) -> Result<()> {
    run(sock, Handshake::server(key)?, deadline)
}

/// The connecting side of the handshake on `sock`, within `deadline` in all.
pub(crate) fn client_handshake_until(
    sock: BorrowedFd<'_>,
    key: &[u8],
    deadline: Deadline,
) -> Result<()> {
    run(sock, Handshake::client(key), deadline)
}

/// The deadline of a handshake on `sock` started now: the socket's receive timeout
/// (`SO_RCVTIMEO`), if one is set, bounds the whole handshake.
fn socket_deadline(sock: BorrowedFd<'_>) -> Deadline {
    use nix::sys::socket::{getsockopt, sockopt};
    use nix::sys::time::TimeValLike;
    match getsockopt(&sock, sockopt::ReceiveTimeout) {
        Ok(tv) if tv.num_microseconds() > 0 => {
            Deadline::after(Some(Duration::from_micros(tv.num_microseconds() as u64)))
        }
        _ => Deadline::NEVER,
    }
}

/// The accepting side: challenge the peer, then answer its challenge. A receive timeout set on
/// the socket bounds the whole handshake ([`Error::Timeout`] when it passes).
pub(crate) fn serve_handshake(sock: BorrowedFd<'_>, key: &[u8]) -> Result<()> {
    serve_handshake_until(sock, key, socket_deadline(sock))
}

/// The connecting side: answer the peer's challenge, then challenge it. A receive timeout set on
/// the socket bounds the whole handshake ([`Error::Timeout`] when it passes).
pub(crate) fn client_handshake(sock: BorrowedFd<'_>, key: &[u8]) -> Result<()> {
    client_handshake_until(sock, key, socket_deadline(sock))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::transport::frame::{recv_frame, send_frame};
    use crate::transport::socket::stream_pair;

    fn run(server_key: &'static [u8], client_key: &'static [u8]) -> (Result<()>, Result<()>) {
        let (a, b) = stream_pair().unwrap();
        let t = std::thread::spawn(move || serve_handshake(a.as_fd(), server_key));
        let c = client_handshake(b.as_fd(), client_key);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_key_passes_both_ways() {
        let (s, c) = run(b"secret", b"secret");
        s.unwrap();
        c.unwrap();
    }

    #[test]
    fn lc_04_empty_key_still_runs_the_handshake() {
        let (s, c) = run(b"", b"");
        s.unwrap();
        c.unwrap();
        let (s, c) = run(b"", b"x");
        assert!(matches!(s, Err(Error::Authentication { .. })));
        assert!(matches!(c, Err(Error::Authentication { .. })));
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (s, c) = run(b"secret", b"other");
        assert!(matches!(s, Err(Error::Authentication { .. })), "{s:?}");
        assert!(matches!(c, Err(Error::Authentication { .. })), "{c:?}");
    }

    #[test]
    fn lc_10_bogus_digest_is_rejected() {
        let (a, b) = stream_pair().unwrap();
        let t = std::thread::spawn(move || serve_handshake(a.as_fd(), b"k"));
        let _challenge = recv_frame(b.as_fd(), 256).unwrap();
        send_frame(b.as_fd(), &[0u8; 32], &[]).unwrap();
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::Authentication { .. })
        ));
    }

    #[test]
    fn lc_11_bogus_welcome_is_rejected() {
        let (a, b) = stream_pair().unwrap();
        let t = std::thread::spawn(move || client_handshake(a.as_fd(), b"k"));
        let mut challenge = CHALLENGE.to_vec();
        challenge.extend_from_slice(&[7; NONCE_LEN]);
        send_frame(b.as_fd(), &challenge, &[]).unwrap();
        let _digest = recv_frame(b.as_fd(), 256).unwrap();
        send_frame(b.as_fd(), b"#BOGUS#", &[]).unwrap();
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::Authentication { .. })
        ));
    }

    #[test]
    fn bytes_after_the_handshake_stay_in_the_socket() {
        let (a, b) = stream_pair().unwrap();
        let t = std::thread::spawn(move || {
            client_handshake(b.as_fd(), b"k").unwrap();
            send_frame(b.as_fd(), b"first message", &[]).unwrap();
            b
        });
        serve_handshake(a.as_fd(), b"k").unwrap();
        let _b = t.join().unwrap();
        assert_eq!(recv_frame(a.as_fd(), 64).unwrap().payload, b"first message");
    }

    /// A peer that sends a byte now and then, each well within any per-read timeout, is cut
    /// off when the deadline of the whole handshake passes.
    #[test]
    fn the_deadline_bounds_the_whole_handshake_not_each_read() {
        let (a, b) = stream_pair().unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let dripper = std::thread::spawn(move || {
            let mut challenge = CHALLENGE.to_vec();
            challenge.extend_from_slice(&[7; NONCE_LEN]);
            let mut bytes = header(challenge.len(), 0).to_vec();
            bytes.extend_from_slice(&challenge);
            for byte in bytes {
                if stop_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    break;
                }
                let _ = send(b.as_raw_fd(), &[byte], MsgFlags::MSG_NOSIGNAL);
            }
        });
        let started = std::time::Instant::now();
        let deadline = Deadline::after(Some(Duration::from_millis(300)));
        let r = client_handshake_until(a.as_fd(), b"k", deadline);
        let took = started.elapsed();
        let _ = stop_tx.send(());
        dripper.join().unwrap();
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        // The whole challenge takes 67 bytes x 50 ms: far longer than this.
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn a_receive_timeout_on_the_socket_bounds_the_whole_handshake() {
        use nix::sys::socket::{setsockopt, sockopt};
        let (a, _b) = stream_pair().unwrap();
        let tv = nix::sys::time::TimeVal::new(0, 200_000);
        setsockopt(&a, sockopt::ReceiveTimeout, &tv).unwrap();
        assert!(matches!(
            serve_handshake(a.as_fd(), b"k"),
            Err(Error::Timeout)
        ));
    }

    #[test]
    fn descriptors_in_a_handshake_are_refused() {
        let (a, b) = stream_pair().unwrap();
        let t = std::thread::spawn(move || client_handshake(a.as_fd(), b"k"));
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut challenge = CHALLENGE.to_vec();
        challenge.extend_from_slice(&[7; NONCE_LEN]);
        send_frame(b.as_fd(), &challenge, &[file.as_raw_fd()]).unwrap();
        let r = t.join().unwrap();
        assert!(matches!(r, Err(Error::Authentication { .. })), "{r:?}");
    }

    fn pass_one_byte(from: &mut Handshake, to: &mut Handshake) {
        if let Some(&byte) = from.outgoing().first() {
            from.sent(1);
            assert_eq!(to.feed(&[byte]).unwrap(), 1);
        }
    }

    /// Two state machines talking to each other through byte slices of every size.
    #[test]
    fn the_state_machines_agree_fed_one_byte_at_a_time() {
        let mut server = Handshake::server(b"k").unwrap();
        let mut client = Handshake::client(b"k");
        for _ in 0..1000 {
            if server.finished() && client.finished() {
                return;
            }
            pass_one_byte(&mut server, &mut client);
            pass_one_byte(&mut client, &mut server);
        }
        panic!("the handshake did not finish");
    }
}
