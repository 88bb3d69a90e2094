use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use super::*;
use crate::transport::socket::stream_pair;

#[test]
fn frames_round_trip_with_descriptors() {
    let (a, b) = stream_pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    send_frame(a.as_fd(), b"hello", &[file.as_raw_fd()]).unwrap();
    send_frame(a.as_fd(), b"", &[]).unwrap();
    let f = recv_frame(b.as_fd(), 1024).unwrap();
    assert_eq!(f.payload, b"hello");
    assert_eq!(f.fds.len(), 1);
    let f = recv_frame(b.as_fd(), 1024).unwrap();
    assert!(f.payload.is_empty() && f.fds.is_empty());
}

#[test]
fn oversized_length_is_rejected_before_allocating() {
    let (a, b) = stream_pair().unwrap();
    let mut raw = UnixStream::from(a);
    raw.write_all(&header(usize::MAX >> 1, 0)).unwrap();
    let err = recv_frame(b.as_fd(), 1 << 20).unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
}

#[test]
fn corrupt_magic_is_a_protocol_error() {
    let (a, b) = stream_pair().unwrap();
    let mut raw = UnixStream::from(a);
    raw.write_all(&[0xAB; HEADER_LEN]).unwrap();
    let err = recv_frame(b.as_fd(), 1 << 20).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
}

#[test]
fn truncated_frame_is_closed_not_a_hang() {
    let (a, b) = stream_pair().unwrap();
    let mut raw = UnixStream::from(a);
    raw.write_all(&header(100, 0)).unwrap();
    raw.write_all(&[1; 10]).unwrap();
    drop(raw);
    assert!(matches!(recv_frame(b.as_fd(), 1 << 20), Err(Error::Closed)));
}

#[test]
fn missing_descriptors_are_a_protocol_error() {
    let (a, b) = stream_pair().unwrap();
    let mut raw = UnixStream::from(a);
    raw.write_all(&header(0, 2)).unwrap();
    let err = recv_frame(b.as_fd(), 1 << 20).unwrap_err();
    assert!(err.to_string().contains("2 descriptors"), "{err}");
}

#[test]
fn send_to_closed_peer_is_closed() {
    let (a, b) = stream_pair().unwrap();
    drop(b);
    assert!(matches!(
        send_frame(a.as_fd(), b"x", &[]),
        Err(Error::Closed)
    ));
}

#[test]
fn padded_frames_round_trip_short_and_long() {
    let (a, b) = stream_pair().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let long: Vec<u8> = (0..200u8).collect();
    for payload in [&b""[..], b"hi", &long[..INLINE], &long[..INLINE + 1], &long] {
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(payload);
        send_padded(a.as_fd(), &mut buf, &[file.as_raw_fd()]).unwrap();
        send_padded_bytes(a.as_fd(), payload).unwrap();
        for nfds in [1, 0] {
            let h = recv_padded_head(b.as_fd(), 1024, RecvLimit::NEVER).unwrap();
            assert_eq!(h.fds.len(), nfds);
            assert_eq!(h.rest(), payload.len().saturating_sub(INLINE));
            assert_eq!(
                h.read_payload(b.as_fd(), RecvLimit::NEVER).unwrap(),
                payload
            );
        }
    }
    drop(a);
    let err = recv_padded_head(b.as_fd(), 1024, RecvLimit::NEVER)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Closed), "{err}");
}

#[test]
fn padded_head_checks_the_header_before_the_padding_arrives() {
    let (a, b) = stream_pair().unwrap();
    let mut raw = UnixStream::from(a);
    raw.write_all(&header(1 << 30, 0)).unwrap();
    let err = recv_padded_head(b.as_fd(), 1024, RecvLimit::NEVER)
        .err()
        .unwrap();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
}
