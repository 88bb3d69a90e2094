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

/// Nested `Option`s `n` deep as postcard writes them: `n` ones (Some) then a zero (None).
fn nested_options(n: usize) -> Vec<u8> {
    let mut bytes = vec![1u8; n];
    bytes.push(0);
    bytes
}

/// `Option<Option<…<u8>…>>` with every level an `Option`: decoded generically by recursion.
#[derive(Deserialize, Debug)]
struct Nest(#[allow(dead_code)] Option<Box<Nest>>);

#[test]
fn nesting_up_to_the_limit_decodes_and_one_more_level_is_an_error() {
    let limit = max_decode_depth() as usize;
    // Each level of `Nest` is one counted value (its Option; the newtype is not counted).
    let fits = nested_options(limit - 1);
    assert!(decode::<Nest>(&fits, vec![]).is_ok());
    let over = nested_options(limit + 1);
    let err = decode::<Nest>(&over, vec![]).unwrap_err().to_string();
    assert!(
        err.contains("nests deeper than the limit of 256 levels"),
        "{err}"
    );
    assert!(err.contains("set_max_decode_depth"), "{err}");
}

#[test]
fn a_million_levels_is_an_error_not_a_stack_overflow() {
    let err = decode::<Nest>(&nested_options(1_000_000), vec![]).unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
}

#[test]
fn long_flat_sequences_do_not_count_as_depth() {
    let v: Vec<Vec<u8>> = vec![vec![1, 2, 3]; 100_000];
    let e = encode(&v).unwrap();
    assert_eq!(decode::<Vec<Vec<u8>>>(&e.bytes, vec![]).unwrap(), v);
}

#[test]
fn the_limit_must_be_positive_and_below_the_ceiling() {
    assert!(set_max_decode_depth(0).is_err());
    assert!(set_max_decode_depth(MAX_DECODE_DEPTH_CEILING + 1).is_err());
    assert_eq!(max_decode_depth(), DEFAULT_MAX_DECODE_DEPTH);
}

#[test]
fn the_ceiling_fits_on_a_two_mebibyte_thread_stack() {
    // Thread stacks of the runtime are at least 2 MiB; this test is built without optimisation,
    // where frames are largest.
    let limit = MAX_DECODE_DEPTH_CEILING;
    let outcome = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let fits = nested_options(limit as usize - 1);
            let ok = decode_slice_within::<Nest>(&fits, depth::Budget::of(limit)).is_ok();
            let over = nested_options(limit as usize);
            let err = decode_slice_within::<Nest>(&over, depth::Budget::of(limit)).is_err();
            ok && err
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(outcome);
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
