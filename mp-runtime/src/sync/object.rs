//! An anonymous shared-memory object: a `#[repr(C)]` header of atomics, optionally followed by a
//! data area, in a memfd that travels between processes as a descriptor. Every synchronization
//! primitive, `Value` and `Array` is one of these.
//!
//! ```text
//! offset 0: magic u64 (which kind of object)   offset 64: H   DATA_OFFSET: data area
//! ```

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::connection::{FdOwned, FdRef};
use crate::error::{Error, Result};
use crate::sys::mmap::SharedRegion;

const HEADER_OFFSET: usize = 64;
/// Where the data area starts; objects whose header is larger are not supported (checked at
/// compile time in [`Object::DATA`]).
pub(crate) const DATA_OFFSET: usize = 256;

/// A header that may live in shared memory.
///
/// # Safety
/// Every field is an atomic integer (or an array of them), so the type is valid for every bit
/// pattern, all-zero included, and may be shared by reference between threads and processes.
pub(crate) unsafe trait Header: Sized + Send + Sync + 'static {
    /// Identifies the kind of object in its first word, so that a descriptor of something else
    /// is rejected on receipt.
    const MAGIC: u64;
    /// What the object is called in errors (and in `/proc/*/maps`).
    const KIND: &'static std::ffi::CStr;
}

/// One process's handle on a shared object; clones share the mapping.
pub(crate) struct Object<H> {
    region: Arc<SharedRegion>,
    _header: PhantomData<H>,
}

impl<H> Clone for Object<H> {
    fn clone(&self) -> Self {
        Object {
            region: self.region.clone(),
            _header: PhantomData,
        }
    }
}

impl<H: Header> Object<H> {
    /// Where the data area starts; also checks, at compile time, that the header fits before
    /// it and that its alignment divides `HEADER_OFFSET` (what `header` relies on).
    const DATA: usize = {
        assert!(HEADER_OFFSET + size_of::<H>() <= DATA_OFFSET);
        assert!(HEADER_OFFSET.is_multiple_of(align_of::<H>()));
        DATA_OFFSET
    };

    /// A new zeroed object with `data_len` bytes of data after the header; `init` fills in the
    /// header (and data) before the object is published.
    pub(crate) fn create(data_len: usize, init: impl FnOnce(&Self)) -> Result<Self> {
        let len = Self::DATA
            .checked_add(data_len)
            .ok_or_else(|| Error::InvalidArgument {
                message: format!("{data_len} bytes of shared data do not fit in memory"),
            })?;
        // Reserved: a Value or Array written later must not meet a full memory as SIGBUS.
        let region = SharedRegion::create_reserved(H::KIND, len).map_err(|e| {
            Error::io(
                "create shared memory (memfd_create, ftruncate, fallocate and mmap)",
                e,
            )
        })?;
        let obj = Object {
            region: Arc::new(region),
            _header: PhantomData,
        };
        init(&obj);
        obj.magic().store(H::MAGIC, Ordering::Release);
        Ok(obj)
    }

    /// The object behind a descriptor received from another process: a memfd sealed against
    /// shrinking (so its memory cannot be cut from under the mapping), at least as large as the
    /// header, with the right magic word.
    pub(crate) fn from_fd(fd: OwnedFd) -> std::result::Result<Self, String> {
        let kind = H::KIND.to_string_lossy();
        let region =
            SharedRegion::from_fd(fd).map_err(|e| format!("cannot map the {kind}: {e}"))?;
        if region.len() < Self::DATA {
            return Err(format!("the descriptor received is not an mp {kind}"));
        }
        let obj = Object {
            region: Arc::new(region),
            _header: PhantomData,
        };
        if obj.magic().load(Ordering::Acquire) != H::MAGIC {
            return Err(format!("the descriptor received is not an mp {kind}"));
        }
        Ok(obj)
    }

    fn magic(&self) -> &AtomicU64 {
        // SAFETY: the region is at least DATA_OFFSET bytes and page-aligned; offset 0 holds an
        // AtomicU64, valid for any bits.
        unsafe { &*(self.region.as_ptr() as *const AtomicU64) }
    }

    /// The shared header.
    #[inline]
    pub(crate) fn header(&self) -> &H {
        // SAFETY: the region is at least DATA_OFFSET >= HEADER_OFFSET + size_of::<H>() bytes
        // (checked on creation and receipt); HEADER_OFFSET is a multiple of H's alignment
        // (checked at compile time in `DATA`) within a page-aligned mapping; `H: Header` is
        // valid for any bits and shareable.
        unsafe { &*(self.region.as_ptr().add(HEADER_OFFSET) as *const H) }
    }

    /// The start of the data area (256-byte aligned).
    #[inline]
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        // SAFETY: DATA_OFFSET is within the mapping (its length is at least DATA_OFFSET).
        unsafe { self.region.as_ptr().add(Self::DATA) }
    }

    /// Bytes of data after the header.
    pub(crate) fn data_len(&self) -> usize {
        self.region.len() - Self::DATA
    }

    /// Whether two handles map the same object (the same memfd).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        match (self.file_id(), other.file_id()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// The device and inode of the object's memfd: the same in every process that has it, and
    /// no other live object has them.
    pub(crate) fn file_id(&self) -> Result<(u64, u64)> {
        let st = nix::sys::stat::fstat(self.region.as_fd())
            .map_err(|e| Error::sys("fstat a shared object", e))?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }
}

impl<H: Header> Serialize for Object<H> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        FdRef(self.region.as_fd()).serialize(s)
    }
}

impl<'de, H: Header> Deserialize<'de> for Object<H> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let FdOwned(fd) = FdOwned::deserialize(d)?;
        Object::from_fd(fd).map_err(|e| codec::de_error::<D::Error>(&e))
    }
}
