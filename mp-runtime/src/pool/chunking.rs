//! Splitting input into chunks and encoding them for the workers.

use std::os::fd::BorrowedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::scheduler::{Chunk, ChunkResult, ItemResult};
use super::wire;
use crate::codec;
use crate::error::{Error, Result};

/// Python's default chunk size for `map`: `len / (4 * processes)`, rounded up (0 for no input).
pub(crate) fn default_chunksize(len: usize, processes: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.div_ceil(processes.max(1) * 4)
    }
}

/// Room left before an item's bytes for its two varints (descriptor count, length): each item is
/// encoded where it stays in the chunk, and its varints are written in front once its size is
/// known.
const PREFIX_ROOM: usize = 2 + 5;

/// The longest item moved down to close the room its varints did not need. A longer one stays
/// where it is, behind varints padded to fill the room (the decoder reads them the same), so that
/// a large argument is not copied once more.
const COMPACT_MAX: usize = 16 * 1024;

/// Encodes up to `n` items of `items` into one chunk (fewer if the input ends). Returns how many
/// items were taken, and the chunk or the first encoding error among them.
pub(crate) fn encode_chunk<T: Serialize>(
    items: &mut impl Iterator<Item = T>,
    n: usize,
) -> (usize, Result<Chunk>) {
    let mut bytes = Vec::new();
    let mut chunk = Chunk {
        items: Default::default(),
        fds: Vec::new(),
        nitems: 0,
        batch: false,
    };
    let mut first_error = None;
    for item in items.take(n) {
        chunk.nitems += 1;
        if first_error.is_some() {
            continue;
        }
        let at = bytes.len();
        bytes.resize(at + PREFIX_ROOM, 0);
        match codec::encode_into(&item, &mut bytes) {
            Ok(raw) => {
                for fd in &raw {
                    // SAFETY: `fd` was recorded by the codec from a live handle inside `item`,
                    // which is still alive here.
                    let b = unsafe { BorrowedFd::borrow_raw(*fd) };
                    match b.try_clone_to_owned() {
                        Ok(o) => chunk.fds.push(o),
                        Err(e) => first_error = Some(Error::io("dup", e)),
                    }
                }
                let len = bytes.len() - at - PREFIX_ROOM;
                let nfds = raw.len() as u64;
                if len >= COMPACT_MAX && nfds < 1 << 14 && (len as u64) < 1 << 35 {
                    wire::put_uint_padded(&mut bytes[at..at + 2], nfds);
                    wire::put_uint_padded(&mut bytes[at + 2..at + PREFIX_ROOM], len as u64);
                } else {
                    let mut prefix = Vec::with_capacity(PREFIX_ROOM + 8);
                    wire::put_uint(&mut prefix, nfds);
                    wire::put_uint(&mut prefix, len as u64);
                    bytes.splice(at..at + PREFIX_ROOM, prefix);
                }
            }
            Err(e) => first_error = Some(e),
        }
    }
    let taken = chunk.nitems;
    chunk.items = bytes.into();
    match first_error {
        Some(e) => (taken, Err(e)),
        None => (taken, Ok(chunk)),
    }
}

/// Decodes one item's result.
pub(crate) fn decode_item<R: DeserializeOwned>(r: ItemResult<'_>) -> Result<R> {
    let (bytes, fds) = r?;
    codec::decode(bytes, fds).map_err(|e| Error::Codec {
        message: format!("a task's result could not be decoded: {}", reason(e)),
        index: Some(0),
    })
}

/// The text of a codec error without the "codec error:" its display adds.
fn reason(e: Error) -> String {
    match e {
        Error::Codec { message, .. } => message,
        other => other.to_string(),
    }
}

/// Encodes `items` as one batch chunk: a single `Vec` of argument tuples (a one-argument
/// worker's `T` encodes like `(T,)`).
pub(crate) fn encode_batch<T: Serialize>(items: &[T]) -> Result<Chunk> {
    // Room for a short chunk of small items up front: the encoder grows its buffer a byte at a
    // time, and for a chunk of numbers the reallocations cost as much as the encoding. A long
    // chunk grows as it goes (a guess of its whole size up front measured slower).
    let guess = items.len() * (std::mem::size_of::<T>() + 2).min(64);
    let mut bytes = Vec::with_capacity((10 + guess).min(4096));
    let fds = codec::encode_owned_into(items, &mut bytes)?;
    Ok(Chunk {
        items: bytes.into(),
        fds,
        nitems: items.len(),
        batch: true,
    })
}

/// A task's results as one `Result` per item, in order: a batch is decoded as a `Vec` of `n`;
/// an error that failed the whole chunk is given to its first item and repeated for the others.
/// `first` is the input index of the task's first item (`None` for a single call): a worker's
/// `Err` reports the input index of the item that returned it.
///
/// A batch that succeeded yields its values without building a `Vec` of `Result`s first: an
/// `Error` is several words, and for small items that copy cost more than the decode.
pub(crate) fn decode_chunk<R: DeserializeOwned>(
    r: ChunkResult<'_>,
    n: usize,
    first: Option<usize>,
) -> Decoded<R> {
    match r {
        ChunkResult::Items(items) => Decoded::Each(
            items
                .into_iter()
                .enumerate()
                .map(|(i, r)| decode_item(r).map_err(|e| e.rebase_index(first.map(|f| f + i))))
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        ChunkResult::Batch(Ok((bytes, fds))) => decode_batch(bytes, fds, n, first),
        ChunkResult::Hole { rest, at, error } => {
            let mut out: Vec<Result<R>> = decode_chunk(*rest, n.saturating_sub(1), first).collect();
            // The items after the hole moved down one place when it was taken out: their
            // input indices move back up.
            for r in out.iter_mut().skip(at) {
                if let Err(e) = r {
                    let moved = std::mem::replace(e, Error::Timeout);
                    *e = moved.rebase_index(Some(1));
                }
            }
            out.insert(
                at.min(out.len()),
                Err(error.rebase_index(first.map(|f| f + at))),
            );
            Decoded::Each(out.into_iter())
        }
        ChunkResult::Batch(r) => {
            let all = decode_item::<Vec<R>>(r.map_err(|e| e.rebase_index(first))).and_then(|v| {
                if v.len() == n {
                    Ok(v)
                } else {
                    Err(Error::protocol(format!(
                        "a worker returned {} results for a chunk of {n}",
                        v.len()
                    )))
                }
            });
            match all {
                Ok(v) => Decoded::All(v.into_iter()),
                Err(e) => {
                    let mut out: Vec<Result<R>> = (1..n).map(|_| Err(e.replicate())).collect();
                    out.insert(0, Err(e));
                    Decoded::Each(out.into_iter())
                }
            }
        }
    }
}

/// The values of a batch that succeeded in the worker. If they do not decode as a whole, they
/// are read one by one: those before the first that does not decode keep their values, that
/// one fails with the reason; the ones after it cannot be located in the bytes and fail saying
/// so.
fn decode_batch<R: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
    n: usize,
    first: Option<usize>,
) -> Decoded<R> {
    let (values, bad, total) = if fds.is_empty() {
        match codec::decode::<Vec<R>>(bytes, Vec::new()) {
            Ok(v) if v.len() == n => return Decoded::All(v.into_iter()),
            Ok(v) => {
                let e = Error::protocol(format!(
                    "a worker returned {} results for a chunk of {n}",
                    v.len()
                ));
                let out: Vec<Result<R>> = (0..n).map(|_| Err(e.replicate())).collect();
                return Decoded::Each(out.into_iter());
            }
            Err(_) => codec::decode_seq_prefix::<R>(bytes, Vec::new()),
        }
    } else {
        codec::decode_seq_prefix::<R>(bytes, fds)
    };
    let at = values.len();
    let mut out: Vec<Result<R>> = values.into_iter().map(Ok).collect();
    let index = |i: usize| first.map(|f| f + i);
    let reason = bad
        .map(reason)
        .unwrap_or_else(|| format!("the worker returned {total} results for a chunk of {n}"));
    for i in at..n {
        let message = if i == at {
            format!("a task's result could not be decoded: {reason}")
        } else {
            format!(
                "a task's result could not be decoded: the result of item {} of the same chunk \
                 before it did not decode, and where the results after it start cannot be told",
                index(at).unwrap_or(at)
            )
        };
        out.push(Err(Error::Codec {
            message,
            index: index(i),
        }));
    }
    Decoded::Each(out.into_iter())
}

/// [`decode_chunk`] collected.
pub(crate) fn decode_results<R: DeserializeOwned>(
    r: ChunkResult<'_>,
    n: usize,
    first: Option<usize>,
) -> Vec<Result<R>> {
    decode_chunk(r, n, first).collect()
}

/// The results of one task, item by item (see [`decode_chunk`]).
pub(crate) enum Decoded<R> {
    /// Every item succeeded.
    All(std::vec::IntoIter<R>),
    /// Item by item, failures included.
    Each(std::vec::IntoIter<Result<R>>),
}

impl<R> Iterator for Decoded<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        match self {
            Decoded::All(values) => values.next().map(Ok),
            Decoded::Each(results) => results.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Decoded::All(values) => values.size_hint(),
            Decoded::Each(results) => results.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    /// Per-item chunks as the worker reads them: each item's descriptor count and bytes.
    fn read_items(chunk: &Chunk) -> Vec<(u64, Vec<u8>)> {
        let mut c = wire::Cursor::new(&chunk.items);
        let mut out = Vec::new();
        for _ in 0..chunk.nitems {
            let nfds = c.uint().unwrap();
            out.push((nfds, c.bytes().unwrap().to_vec()));
        }
        assert!(c.u8().is_err(), "bytes after the last item");
        out
    }

    fn bytes_of(n: usize) -> ByteBuf {
        ByteBuf::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>())
    }

    #[test]
    fn items_short_and_long_read_back_whole() {
        let values: Vec<ByteBuf> = [0, 5, COMPACT_MAX - 8, COMPACT_MAX, 1 << 20]
            .into_iter()
            .map(bytes_of)
            .collect();
        let (taken, chunk) = encode_chunk(&mut values.iter(), 10);
        let chunk = chunk.unwrap();
        assert_eq!(taken, values.len());
        let read = read_items(&chunk);
        assert_eq!(read.len(), values.len());
        for (v, (nfds, bytes)) in values.iter().zip(&read) {
            assert_eq!(*nfds, 0);
            assert_eq!(&codec::decode::<ByteBuf>(bytes, Vec::new()).unwrap(), v);
        }
        // A short item's varints take what they need; a long one's fill the room.
        assert_eq!(chunk.items[..2], [0, 1]);
        let one = encode_chunk(&mut std::iter::once(&values[4]), 1).1.unwrap();
        let encoded = codec::encode(&values[4]).unwrap().bytes;
        assert_eq!(one.items.len(), PREFIX_ROOM + encoded.len());
        assert_eq!(one.items[PREFIX_ROOM..], encoded[..]);
    }

    #[test]
    fn an_item_that_cannot_be_encoded_fails_the_chunk_and_the_rest_are_taken() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let items = [None, Some(Refuses), None];
        let (taken, chunk) = encode_chunk(&mut items.iter(), 3);
        assert_eq!(taken, 3);
        assert!(matches!(chunk, Err(Error::Codec { .. })));
    }
}
