//! A message nested a million levels deep is a codec error on every receive path, never a
//! crash: a `Connection` (from a pipe and from a `Listener` peer), a `Queue`, a process's
//! arguments, a pool's arguments and results, a `#[mp::managed]` method's argument and a
//! manager `modify` that decodes a stored value in the server. Without the limit each of these
//! overflows the receiving thread's stack (SIGSEGV) at about 60,000 levels.

mod common;

use common::*;
use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// A million levels: 1 MB on the wire.
const DEEP: u32 = 1_000_000;
/// Deep enough to mean something, within the default limit.
const SHALLOW: u32 = 200;

/// A tree `levels` deep, as a recursive type has it on the wire.
///
/// Sent, it writes the bytes of [`Nest`] nested `levels` times without building the tree (and
/// without recursing in the sender); received, it is decoded as a real `Nest`, by recursion,
/// which is what the limit must stop.
#[derive(Debug, PartialEq)]
pub struct Deep(u32);

/// The recursive type whose encoding [`Deep`] writes: `Node` `levels` times, then `Leaf`.
#[derive(Deserialize)]
pub enum Nest {
    /// The bottom.
    Leaf,
    /// One more level.
    Node(Box<Nest>),
}

impl Serialize for Deep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // postcard writes a tuple as its elements, and `Nest::Node` as variant 1 then its field.
        let mut t = s.serialize_tuple(self.0 as usize + 1)?;
        for _ in 0..self.0 {
            t.serialize_element(&1u8)?;
        }
        t.serialize_element(&0u8)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Deep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut levels = 0;
        let mut cur = Nest::deserialize(d)?;
        while let Nest::Node(next) = cur {
            levels += 1;
            cur = *next;
        }
        u32::try_from(levels)
            .map(Deep)
            .map_err(|_| D::Error::custom("too many levels"))
    }
}

/// The error every deep message must give.
#[track_caller]
fn assert_too_deep<T: std::fmt::Debug>(outcome: mp::Result<T>) {
    match outcome {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("nests deeper than the limit of 256 levels"),
                "unexpected error: {text}"
            );
        }
        Ok(v) => panic!("a {DEEP}-level message decoded: {v:?}"),
    }
}

#[mp::worker]
fn levels_of(d: Deep) -> u32 {
    d.0
}

#[mp::worker]
fn make_deep(levels: u32) -> Deep {
    Deep(levels)
}

#[mp::worker]
fn deepen(d: Deep) -> Deep {
    Deep(d.0 + 1)
}

#[test]
fn pipe_recv_is_a_codec_error_and_the_connection_stays_usable() {
    let _g = shared();
    let (a, b) = mp::Pipe::<Deep>::duplex().unwrap();
    // A megabyte does not fit in the socket's buffer: send from another thread.
    let sender = std::thread::spawn(move || {
        a.send(&Deep(DEEP)).unwrap();
        a.send(&Deep(SHALLOW)).unwrap();
    });
    assert_too_deep(b.recv());
    assert_eq!(b.recv().unwrap(), Deep(SHALLOW));
    sender.join().unwrap();
}

#[test]
fn listener_peer_cannot_crash_the_receiver() {
    let _g = shared();
    let listener = mp::Listener::bind("127.0.0.1:0", b"depth-key").unwrap();
    let address = listener.address().to_string();
    let sender = std::thread::spawn(move || {
        let c = mp::Client::connect::<Deep>(address.as_str(), b"depth-key").unwrap();
        c.send(&Deep(DEEP)).unwrap();
        c.send(&Deep(SHALLOW)).unwrap();
        // Wait for the receiver's verdict before closing.
        c.recv().unwrap()
    });
    let conn = listener.accept::<Deep>().unwrap();
    assert_too_deep(conn.recv());
    assert_eq!(conn.recv().unwrap(), Deep(SHALLOW));
    conn.send(&Deep(1)).unwrap();
    assert_eq!(sender.join().unwrap(), Deep(1));
}

#[test]
fn queue_get_is_a_codec_error_and_the_next_item_arrives() {
    let _g = shared();
    let q = mp::Queue::<Deep>::new().unwrap();
    q.put(Deep(DEEP)).unwrap();
    q.put(Deep(SHALLOW)).unwrap();
    assert_too_deep(q.get_timeout(LONG));
    assert_eq!(q.get_timeout(LONG).unwrap(), Deep(SHALLOW));
}

#[test]
fn a_process_argument_fails_the_child_with_a_codec_error() {
    let _g = shared();
    let mut p = started(mp::Process::new(levels_of, (Deep(DEEP),)));
    assert_too_deep(join(&mut p));
    let mut p = started(mp::Process::new(levels_of, (Deep(SHALLOW),)));
    assert_eq!(join(&mut p).unwrap(), SHALLOW);
}

#[test]
fn pool_arguments_and_results_fail_only_their_task() {
    let _g = shared();
    let pool = mp::Pool::new(2).unwrap();
    assert_too_deep(pool.apply(levels_of, (Deep(DEEP),)));
    assert_too_deep(pool.apply(make_deep, (DEEP,)));
    assert_eq!(pool.apply(levels_of, (Deep(SHALLOW),)).unwrap(), SHALLOW);
    assert_eq!(pool.apply(make_deep, (SHALLOW,)).unwrap(), Deep(SHALLOW));
    pool.close();
    pool.join().unwrap();
}

/// A managed type whose method takes the recursive type.
#[derive(Default)]
pub struct Sink;

#[mp::managed]
impl Sink {
    /// An empty sink.
    pub fn new() -> Self {
        Sink
    }

    /// How deep the tree is.
    pub fn levels(&self, d: Deep) -> u32 {
        d.0
    }
}

#[test]
fn a_managed_method_argument_leaves_the_server_serving() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let sink = SinkProxy::new(&m).unwrap();
    assert_too_deep(sink.levels(Deep(DEEP)));
    assert_eq!(sink.levels(Deep(SHALLOW)).unwrap(), SHALLOW);
    assert_eq!(m.number_of_objects().unwrap(), 1);
    m.shutdown().unwrap();
}

#[test]
fn a_modify_decoding_a_deep_value_in_the_server_leaves_it_serving() {
    let _g = shared();
    let m = mp::Manager::start().unwrap();
    let v = m.value(Deep(DEEP)).unwrap();
    assert_too_deep(v.modify(deepen));
    assert_too_deep(v.get());
    v.set(&Deep(SHALLOW)).unwrap();
    assert_eq!(v.modify(deepen).unwrap(), Deep(SHALLOW + 1));
    assert_eq!(m.number_of_objects().unwrap(), 1);
    m.shutdown().unwrap();
}

#[test]
fn the_limit_is_inherited_by_children() {
    // Alone: the other tests expect the default limit.
    let _g = exclusive();
    // 300 levels: over the default of 256, under the raised limit.
    let deeper = 300;
    mp::set_max_decode_depth(1_000).unwrap();
    let mut p = started(mp::Process::new(levels_of, (Deep(deeper),)));
    let outcome = join(&mut p);
    mp::set_max_decode_depth(mp::DEFAULT_MAX_DECODE_DEPTH).unwrap();
    assert_eq!(outcome.unwrap(), deeper);
    assert!(matches!(
        mp::set_max_decode_depth(0),
        Err(mp::Error::InvalidArgument { .. })
    ));
    assert!(mp::set_max_decode_depth(mp::MAX_DECODE_DEPTH_CEILING + 1).is_err());
}
