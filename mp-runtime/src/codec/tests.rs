use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Plain {
    a: u64,
    b: String,
}

struct Handle(OwnedFd);

impl Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_fd(d).map(Handle)
    }
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

#[test]
fn plain_values_round_trip() {
    let v = Plain {
        a: 7,
        b: "x".into(),
    };
    let e = encode(&v).unwrap();
    assert!(e.fds.is_empty());
    assert_eq!(decode::<Plain>(&e.bytes, vec![]).unwrap(), v);
}

#[test]
fn handles_travel_in_the_side_table() {
    let h = (Handle(devnull()), 5u8, Handle(devnull()));
    let e = encode(&h).unwrap();
    assert_eq!(e.fds, vec![h.0.0.as_raw_fd(), h.2.0.as_raw_fd()]);
    let (bytes, fds) = encode_owned(&h).unwrap();
    let back: (Handle, u8, Handle) = decode(&bytes, fds).unwrap();
    assert_eq!(back.1, 5);
}

#[test]
fn bad_handle_index_is_an_error() {
    let h = Handle(devnull());
    let e = encode(&h).unwrap();
    let err = decode::<Handle>(&e.bytes, vec![]).err().unwrap();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn handle_used_twice_is_an_error() {
    let pair = (Handle(devnull()), Handle(devnull()));
    let (mut bytes, fds) = encode_owned(&pair).unwrap();
    // Make the second index point at the first descriptor.
    bytes[1] = bytes[0];
    let err = decode::<(Handle, Handle)>(&bytes, fds).err().unwrap();
    assert!(err.to_string().contains("used twice"), "{err}");
}

#[test]
fn serializing_a_handle_outside_mp_fails() {
    let h = Handle(devnull());
    assert!(postcard::to_stdvec(&h).is_err());
}

#[test]
fn trailing_and_truncated_bytes_are_errors() {
    let e = encode(&(1u64, 2u64)).unwrap();
    assert!(decode::<u64>(&e.bytes, vec![]).is_err());
    assert!(decode::<(u64, String)>(&e.bytes[..1], vec![]).is_err());
}

/// A value whose `Deserialize` refuses what it read, with a reason of its own (as a proxy whose
/// object is gone does).
#[derive(Debug)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u32(7)
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let _ = u32::deserialize(d)?;
        Err(de_error("the object it names is gone"))
    }
}

#[test]
fn a_value_refused_by_its_own_deserialize_does_not_blame_the_types() {
    let enc = encode(&(1u8, Refuses)).unwrap();
    let e = decode::<(u8, Refuses)>(&enc.bytes, Vec::new()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("the object it names is gone"), "{text}");
    assert!(!text.contains("another type"), "{text}");
    // A real mismatch still says what to check.
    let e = decode::<(u8, String)>(&enc.bytes, Vec::new()).unwrap_err();
    assert!(e.to_string().contains("another type"), "{e}");
}
