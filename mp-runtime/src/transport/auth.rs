//! Mutual authentication with a shared key: HMAC-SHA256 challenge-response in both directions.
//!
//! The side that accepted the connection calls [`serve_handshake`], the side that connected
//! calls [`client_handshake`]. Each side proves it knows the key by answering a random 32-byte
//! challenge from the other, so neither talks to an impostor. An empty key is allowed and the
//! handshake still runs. A wrong key is [`Error::Authentication`] on both sides.

use std::os::fd::BorrowedFd;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::frame::{recv_frame, send_frame};
use crate::error::{Error, Result};

const CHALLENGE: &[u8] = b"#CHALLENGE#{sha256}";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const NONCE_LEN: usize = 32;
/// Handshake frames are tiny; anything larger is not a handshake.
const MAX_HANDSHAKE_FRAME: u64 = 256;

/// The accepting side: challenge the peer, then answer its challenge.
pub(crate) fn serve_handshake(sock: BorrowedFd<'_>, key: &[u8]) -> Result<()> {
    deliver_challenge(sock, key)?;
    answer_challenge(sock, key)
}

/// The connecting side: answer the peer's challenge, then challenge it.
pub(crate) fn client_handshake(sock: BorrowedFd<'_>, key: &[u8]) -> Result<()> {
    answer_challenge(sock, key)?;
    deliver_challenge(sock, key)
}

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(message);
    m
}

fn recv_small(sock: BorrowedFd<'_>) -> Result<Vec<u8>> {
    match recv_frame(sock, MAX_HANDSHAKE_FRAME) {
        Ok(f) => Ok(f.payload),
        Err(Error::Closed) => Err(Error::Authentication {
            message: "the peer closed the connection during the handshake".into(),
        }),
        Err(Error::MessageTooLarge { .. }) | Err(Error::Protocol { .. }) => {
            Err(Error::Authentication {
                message: "the peer sent a malformed handshake message".into(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Sends a random challenge and checks the peer's answer.
pub(crate) fn deliver_challenge(sock: BorrowedFd<'_>, key: &[u8]) -> Result<()> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::sys::random_bytes(&mut nonce).map_err(|e| Error::io("getrandom", e))?;
    let mut message = CHALLENGE.to_vec();
    message.extend_from_slice(&nonce);
    send_frame(sock, &message, &[])?;
    let answer = recv_small(sock)?;
    if mac(key, &message).verify_slice(&answer).is_ok() {
        send_frame(sock, WELCOME, &[])
    } else {
        // Tell the peer, then fail; a send error here changes nothing.
        let _ = send_frame(sock, FAILURE, &[]);
        Err(Error::Authentication {
            message: "the peer's digest does not match: it uses a different authkey".into(),
        })
    }
}

/// Answers the peer's challenge and checks that it was accepted.
pub(crate) fn answer_challenge(sock: BorrowedFd<'_>, key: &[u8]) -> Result<()> {
    let message = recv_small(sock)?;
    if !message.starts_with(CHALLENGE) || message.len() != CHALLENGE.len() + NONCE_LEN {
        return Err(Error::Authentication {
            message: "the peer sent an invalid challenge".into(),
        });
    }
    let digest = mac(key, &message).finalize().into_bytes();
    send_frame(sock, &digest, &[])?;
    let reply = recv_small(sock)?;
    if reply == WELCOME {
        Ok(())
    } else {
        Err(Error::Authentication {
            message: "the peer rejected our digest: it uses a different authkey".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
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
        let t = std::thread::spawn(move || deliver_challenge(a.as_fd(), b"k"));
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
        let t = std::thread::spawn(move || answer_challenge(a.as_fd(), b"k"));
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
}
