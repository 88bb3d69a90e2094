//! `ShareableList<T>`: a fixed-length list of serde values in a named shared-memory segment.
//!
//! ```text
//! 0: magic u64 | 8: len u64 | 16: len × slot {offset u64, capacity u32, used u32} | data
//! ```
//! Every slot holds one postcard-encoded value and its exact length, so a value is read back as
//! written: nothing is stripped (Python's ShareableList drops trailing NUL bytes of `bytes` and
//! `str`, gh-96779, and miscounts UTF-8, gh-145261). A slot's capacity is the first value's
//! encoded length rounded up to 8 bytes (at least 8); a larger value does not fit.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SharedMemory;
use crate::error::{Error, Result};

const MAGIC: u64 = u64::from_le_bytes(*b"mp-slst1");
const SLOT: usize = 16;
const TABLE: usize = 16;

/// A fixed-length list of values of type `T` in named shared memory (Python's
/// `ShareableList`), readable and writable from any process that opens the name or receives
/// the list.
///
/// Values are stored encoded; [`set`](ShareableList::set) accepts a new value if its encoding
/// fits the slot. There is no lock: use a [`Lock`](crate::Lock) if processes write the same
/// slots concurrently (a torn read is reported as [`Error::Codec`], never a wrong value of
/// another shape). For mixed types, use an enum.
///
/// ```
/// use mp::shared_memory::ShareableList;
/// let l = ShareableList::create(["howdy".to_string(), "a".into()])?;
/// assert_eq!(l.len(), 2);
/// l.set(1, &"b\0".to_string())?; // trailing NULs survive
/// assert_eq!(l.get(1)?, "b\0");
/// let too_long = "a string longer than its slot".to_string();
/// assert!(matches!(l.set(0, &too_long), Err(mp::Error::InvalidArgument { .. })));
/// assert_eq!(l.to_vec()?, ["howdy", "b\0"]);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct ShareableList<T> {
    shm: SharedMemory,
    len: usize,
    _type: PhantomData<fn(T) -> T>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| {
        Error::codec(format!(
            "cannot encode `{}` for a ShareableList: {e}",
            std::any::type_name::<T>()
        ))
    })
}

impl<T: Serialize + DeserializeOwned> ShareableList<T> {
    /// A list of `items` in a new segment with a fresh name.
    pub fn create(items: impl IntoIterator<Item = T>) -> Result<ShareableList<T>> {
        Self::build(items, SharedMemory::create)
    }

    /// A list of `items` in a new segment named `name` (errors as for
    /// [`SharedMemory::create_named`]).
    pub fn create_named(
        name: &str,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ShareableList<T>> {
        Self::build(items, |size| SharedMemory::create_named(name, size))
    }

    pub(crate) fn build(
        items: impl IntoIterator<Item = T>,
        make: impl FnOnce(usize) -> Result<SharedMemory>,
    ) -> Result<ShareableList<T>> {
        let encoded = items
            .into_iter()
            .map(|v| encode(&v))
            .collect::<Result<Vec<_>>>()?;
        let caps: Vec<usize> = encoded
            .iter()
            .map(|e| e.len().max(8).next_multiple_of(8))
            .collect();
        let data_start = TABLE + SLOT * encoded.len();
        let total = data_start + caps.iter().sum::<usize>();
        if caps.iter().any(|c| *c > u32::MAX as usize) {
            return Err(Error::InvalidArgument {
                message: "a ShareableList item is larger than 4 GiB".into(),
            });
        }
        let shm = make(total)?;
        shm.write_at(8, &(encoded.len() as u64).to_le_bytes())?;
        let mut off = data_start;
        for (i, (e, cap)) in encoded.iter().zip(&caps).enumerate() {
            let mut slot = [0u8; SLOT];
            slot[..8].copy_from_slice(&(off as u64).to_le_bytes());
            slot[8..12].copy_from_slice(&(*cap as u32).to_le_bytes());
            slot[12..].copy_from_slice(&(e.len() as u32).to_le_bytes());
            shm.write_at(TABLE + i * SLOT, &slot)?;
            shm.write_at(off, e)?;
            off += cap;
        }
        shm.write_at(0, &MAGIC.to_le_bytes())?;
        Ok(ShareableList {
            len: encoded.len(),
            shm,
            _type: PhantomData,
        })
    }

    /// Attaches to the list in segment `name`.
    pub fn open(name: &str) -> Result<ShareableList<T>> {
        Self::from_shm(SharedMemory::open(name)?)
    }

    fn from_shm(shm: SharedMemory) -> Result<ShareableList<T>> {
        let not_a_list = || Error::InvalidArgument {
            message: format!(
                "shared memory {:?} does not hold a ShareableList",
                shm.name()
            ),
        };
        let mut head = [0u8; TABLE];
        shm.read_at(0, &mut head).map_err(|_| not_a_list())?;
        if u64::from_le_bytes(head[..8].try_into().unwrap_or_default()) != MAGIC {
            return Err(not_a_list());
        }
        let len = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
        let len = usize::try_from(len)
            .ok()
            .filter(|n| n.checked_mul(SLOT).is_some_and(|t| t + TABLE <= shm.size()))
            .ok_or_else(not_a_list)?;
        let list = ShareableList {
            shm,
            len,
            _type: PhantomData,
        };
        // A segment cut shorter than its table says is refused now, not at some later `get`.
        for i in 0..len {
            list.slot(i).map_err(|_| Error::InvalidArgument {
                message: format!(
                    "shared memory {:?} holds a ShareableList whose item {i} lies beyond the \
                     segment's {} bytes: the segment was truncated or overwritten",
                    list.shm.name(),
                    list.shm.size()
                ),
            })?;
        }
        Ok(list)
    }

    /// The number of items (fixed at creation).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// (offset, capacity, used) of slot `i`, checked against the segment.
    fn slot(&self, i: usize) -> Result<(usize, usize, usize)> {
        if i >= self.len {
            return Err(Error::InvalidArgument {
                message: format!("index {i} out of range for a ShareableList of {}", self.len),
            });
        }
        let mut s = [0u8; SLOT];
        self.shm.read_at(TABLE + i * SLOT, &mut s)?;
        let off = u64::from_le_bytes(s[..8].try_into().unwrap_or_default()) as usize;
        let cap = u32::from_le_bytes(s[8..12].try_into().unwrap_or_default()) as usize;
        let used = u32::from_le_bytes(s[12..].try_into().unwrap_or_default()) as usize;
        if used > cap || off.checked_add(cap).is_none_or(|end| end > self.shm.size()) {
            return Err(Error::codec(format!("ShareableList slot {i} is corrupt")));
        }
        Ok((off, cap, used))
    }

    /// A copy of item `i`; [`Error::InvalidArgument`] out of range.
    pub fn get(&self, i: usize) -> Result<T> {
        let (off, _, used) = self.slot(i)?;
        let mut bytes = vec![0u8; used];
        self.shm.read_at(off, &mut bytes)?;
        crate::codec::decode_slice(&bytes)
            .map_err(|e| Error::codec(format!("ShareableList item {i}: {e}")))
    }

    /// Replaces item `i`. A value whose encoding exceeds the slot's capacity is
    /// [`Error::InvalidArgument`], and changes nothing.
    pub fn set(&self, i: usize, value: &T) -> Result<()> {
        let (off, cap, _) = self.slot(i)?;
        let bytes = encode(value)?;
        if bytes.len() > cap {
            return Err(Error::InvalidArgument {
                message: format!(
                    "the value ({} bytes encoded) exceeds available storage of {cap} bytes for \
                     ShareableList item {i}",
                    bytes.len()
                ),
            });
        }
        self.shm.write_at(off, &bytes)?;
        self.shm
            .write_at(TABLE + i * SLOT + 12, &(bytes.len() as u32).to_le_bytes())
    }

    /// Bytes available to item `i`'s encoding.
    pub fn capacity(&self, i: usize) -> Result<usize> {
        Ok(self.slot(i)?.1)
    }

    /// Copies of every item.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// The position of the first item equal to `value` (Python's `index`); `None` if absent.
    pub fn index(&self, value: &T) -> Result<Option<usize>>
    where
        T: PartialEq,
    {
        for i in 0..self.len {
            if self.get(i)? == *value {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// How many items equal `value`.
    pub fn count(&self, value: &T) -> Result<usize>
    where
        T: PartialEq,
    {
        let mut n = 0;
        for i in 0..self.len {
            n += usize::from(self.get(i)? == *value);
        }
        Ok(n)
    }

    /// The segment holding the list.
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// The segment's name (open the list elsewhere with [`open`](ShareableList::open)).
    pub fn name(&self) -> &str {
        self.shm.name()
    }
}

impl<T: Serialize + DeserializeOwned + fmt::Debug> fmt::Debug for ShareableList<T> {
    /// `ShareableList([…], name="mp-…")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = (0..self.len)
            .map(|i| match self.get(i) {
                Ok(v) => format!("{v:?}"),
                Err(_) => "<unreadable>".into(),
            })
            .collect();
        write!(
            f,
            "ShareableList([{}], name={:?})",
            items.join(", "),
            self.name()
        )
    }
}

impl<T> Serialize for ShareableList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for ShareableList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(d)?;
        ShareableList::from_shm(shm).map_err(|e| crate::codec::de_error::<D::Error>(&e.to_string()))
    }
}
