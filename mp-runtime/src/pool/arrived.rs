//! A task's results as they arrived, owning their bytes, so that the thread which consumes them
//! decodes them instead of the pool's thread.
//!
//! The pool's thread routes every answer of every worker; what it does per chunk bounds how many
//! chunks a second the whole pool moves. An answer is handed over whole (its bytes stay where
//! they arrived); only results that reach a sink one by one (failures, a chunk sent again
//! without an item that ran out of time) are copied. `imap` keeps chunks this way until its
//! consumer takes them.

use std::os::fd::OwnedFd;

use super::chunking::{Decoded, decode_chunk};
use super::scheduler::{Answer, ChunkResult, ItemResult};
use crate::error::{Error, Result};

/// One item's result, owned: the encoded value and its descriptors, or the error.
type OwnedItem = Result<(Vec<u8>, Vec<OwnedFd>)>;

/// An owned [`ChunkResult`].
pub(crate) enum Arrived {
    /// One result per item.
    Items(Vec<OwnedItem>),
    /// A batch chunk's results as one encoded `Vec`, or the error that failed the chunk.
    Batch(OwnedItem),
    /// A worker's answer, kept whole: no result is copied out of it.
    Answer(Answer),
    /// The other items' results, and the position and error of the item that ran out of time.
    Hole {
        rest: Box<Arrived>,
        at: usize,
        error: Error,
    },
}

impl Arrived {
    /// Copies what `results` borrows.
    pub(crate) fn keep(results: ChunkResult<'_>) -> Arrived {
        match results {
            ChunkResult::Items(items) => Arrived::Items(items.into_iter().map(keep_item).collect()),
            ChunkResult::Batch(r) => Arrived::Batch(keep_item(r)),
            ChunkResult::Hole { rest, at, error } => Arrived::Hole {
                rest: Box::new(Arrived::keep(*rest)),
                at,
                error,
            },
        }
    }

    /// The results of a chunk of `n` items whose first has input index `first`, as
    /// [`decode_chunk`] gives them.
    pub(crate) fn decode<R: serde::de::DeserializeOwned>(
        mut self,
        n: usize,
        first: Option<usize>,
    ) -> Decoded<R> {
        decode_chunk(self.view(), n, first)
    }

    /// A borrowed view for [`decode_chunk`], moving the descriptors and errors out (`self` is
    /// dropped right after).
    fn view(&mut self) -> ChunkResult<'_> {
        match self {
            Arrived::Items(items) => ChunkResult::Items(items.iter_mut().map(view_item).collect()),
            Arrived::Batch(r) => ChunkResult::Batch(view_item(r)),
            Arrived::Answer(a) => a.view(),
            Arrived::Hole { rest, at, error } => ChunkResult::Hole {
                rest: Box::new(rest.view()),
                at: *at,
                error: std::mem::replace(error, Error::Timeout),
            },
        }
    }
}

fn keep_item(r: ItemResult<'_>) -> OwnedItem {
    r.map(|(bytes, fds)| (bytes.to_vec(), fds))
}

fn view_item(r: &mut OwnedItem) -> ItemResult<'_> {
    match r {
        Ok((bytes, fds)) => Ok((bytes.as_slice(), std::mem::take(fds))),
        Err(e) => Err(std::mem::replace(e, Error::Timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<T: serde::Serialize>(v: &T) -> Vec<u8> {
        crate::codec::encode(v).unwrap().bytes
    }

    #[test]
    fn kept_results_decode_as_the_borrowed_ones_would() {
        let batch = encoded(&vec![1u64, 4, 9]);
        let kept = Arrived::keep(ChunkResult::Batch(Ok((&batch, Vec::new()))));
        let values: Vec<u64> = kept.decode(3, Some(0)).map(|r| r.unwrap()).collect();
        assert_eq!(values, [1, 4, 9]);

        let one = encoded(&7u32);
        let items = ChunkResult::Items(vec![Ok((&one, Vec::new())), Err(Error::Timeout)]);
        let out: Vec<Result<u32>> = Arrived::keep(items).decode(2, Some(10)).collect();
        assert_eq!(out[0].as_ref().unwrap(), &7);
        assert!(matches!(out[1], Err(Error::Timeout)));
    }

    #[test]
    fn a_hole_keeps_its_place_and_error() {
        let rest = encoded(&vec![1u64, 9]);
        let hole = ChunkResult::Hole {
            rest: Box::new(ChunkResult::Batch(Ok((&rest, Vec::new())))),
            at: 1,
            error: Error::Timeout,
        };
        let out: Vec<Result<u64>> = Arrived::keep(hole).decode(3, Some(0)).collect();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap(), &1);
        assert!(matches!(out[1], Err(Error::Timeout)));
        assert_eq!(out[2].as_ref().unwrap(), &9);
    }

    #[test]
    fn a_batch_of_the_wrong_length_fails_every_item() {
        let batch = encoded(&vec![1u64]);
        let kept = Arrived::keep(ChunkResult::Batch(Ok((&batch, Vec::new()))));
        let out: Vec<Result<u64>> = kept.decode(2, Some(0)).collect();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| matches!(r, Err(Error::Protocol { .. }))));
    }
}
