//! The shared memory behind `Value`, `Array`, `RawValue` and `RawArray`: `len` elements of a
//! plain-old-data `T` after a header that records their layout.
//!
//! Each of the four types has a magic word of its own ([`Kind`]), so that the memory of a
//! locked `Value` or `Array` can never be received as a lockless `RawValue` or `RawArray`: the
//! only handles on a locked object's elements are its own, and they all go through its lock.
//! A locked object also records which lock guards it (the lock memfd's device and inode), so
//! that a message pairing its memory with another lock is refused too.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::{assert_alignment, check_received};
use crate::codec;
use crate::error::{Error, Result};
use crate::sync::Lock;
use crate::sync::object::{Header, Object};

/// Which public type an object belongs to.
pub(crate) trait Kind: Send + Sync + 'static {
    /// The object's magic word.
    const MAGIC: u64;
    /// Its name in errors and in `/proc/*/maps`.
    const NAME: &'static std::ffi::CStr;
    /// What it is called in error messages.
    const WHAT: &'static str;
}

macro_rules! kind {
    ($(#[$doc:meta])* $name:ident, $magic:literal, $file:literal, $what:literal) => {
        $(#[$doc])*
        pub(crate) enum $name {}
        impl Kind for $name {
            const MAGIC: u64 = u64::from_le_bytes(*$magic);
            const NAME: &'static std::ffi::CStr = $file;
            const WHAT: &'static str = $what;
        }
    };
}

kind!(
    /// A `RawValue`.
    RawValueKind, b"mp-rval2", c"mp-rawvalue", "raw value"
);
kind!(
    /// A `RawArray`.
    RawArrayKind, b"mp-rarr2", c"mp-rawarray", "raw array"
);
kind!(
    /// A `Value` (its elements; the lock is an object of its own).
    ValueKind, b"mp-valu2", c"mp-value", "value"
);
kind!(
    /// An `Array` (its elements; the lock is an object of its own).
    ArrayKind, b"mp-arry2", c"mp-array", "array"
);

#[repr(C)]
pub(crate) struct ElementsHeader<K> {
    len: AtomicU64,
    size: AtomicU32,
    align: AtomicU32,
    /// The device and inode of the lock's memfd (locked kinds only; 0 otherwise).
    lock_dev: AtomicU64,
    lock_ino: AtomicU64,
    _kind: PhantomData<K>,
}

// SAFETY: atomics only (the marker is zero-sized and uninhabited kinds are never stored).
unsafe impl<K: Kind> Header for ElementsHeader<K> {
    const MAGIC: u64 = K::MAGIC;
    const KIND: &'static std::ffi::CStr = K::NAME;
}

/// `len` elements of `T` in shared memory, of kind `K`.
pub(crate) struct Elements<T, K> {
    obj: Object<ElementsHeader<K>>,
    len: usize,
    _type: PhantomData<T>,
}

impl<T, K> Clone for Elements<T, K> {
    fn clone(&self) -> Self {
        Elements {
            obj: self.obj.clone(),
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T: Pod, K: Kind> Elements<T, K> {
    /// `len` elements, filled in by `fill` (they start zeroed) before anyone else can see them;
    /// `lock` is the lock that will guard them (locked kinds).
    pub(crate) fn create(
        len: usize,
        lock: Option<&Lock>,
        fill: impl FnOnce(&mut [T]),
    ) -> Result<Self> {
        const { assert_alignment::<T>() };
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| Error::InvalidArgument {
                message: format!("an array of {len} elements does not fit in memory"),
            })?;
        let (dev, ino) = match lock {
            Some(l) => l.file_id()?,
            None => (0, 0),
        };
        let obj = Object::create(bytes, |o: &Object<ElementsHeader<K>>| {
            let h = o.header();
            h.len.store(len as u64, Ordering::Relaxed);
            h.size.store(size_of::<T>() as u32, Ordering::Relaxed);
            h.align.store(align_of::<T>() as u32, Ordering::Relaxed);
            h.lock_dev.store(dev, Ordering::Relaxed);
            h.lock_ino.store(ino, Ordering::Relaxed);
            // SAFETY: the data area holds `len` elements aligned to 256 >= align_of::<T>() (a
            // compile-time check), and it is not shared yet: this is the only reference.
            fill(unsafe { std::slice::from_raw_parts_mut(o.data_ptr() as *mut T, len) });
        })?;
        Ok(Elements {
            obj,
            len,
            _type: PhantomData,
        })
    }

    /// Checks that a received locked object is guarded by `lock`, the lock it came with.
    pub(crate) fn check_lock(&self, lock: &Lock) -> std::result::Result<(), String> {
        let h = self.obj.header();
        let recorded = (
            h.lock_dev.load(Ordering::Relaxed),
            h.lock_ino.load(Ordering::Relaxed),
        );
        match lock.file_id() {
            Ok(id) if id == recorded => Ok(()),
            Ok(_) => Err(format!(
                "the {} received comes with another lock than the one that guards it",
                K::WHAT
            )),
            Err(e) => Err(format!(
                "cannot check the lock of the {} received: {e}",
                K::WHAT
            )),
        }
    }

    /// The first element (the data area is 256-byte aligned).
    pub(crate) fn ptr(&self) -> *mut T {
        self.obj.data_ptr() as *mut T
    }

    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl<T, K: Kind> Serialize for Elements<T, K> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.obj.serialize(s)
    }
}

impl<'de, T: Pod, K: Kind> Deserialize<'de> for Elements<T, K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        const { assert_alignment::<T>() };
        let obj = Object::<ElementsHeader<K>>::deserialize(d)?;
        let h = obj.header();
        let len = check_received::<T>(
            h.size.load(Ordering::Relaxed),
            h.align.load(Ordering::Relaxed),
            h.len.load(Ordering::Relaxed),
            obj.data_len(),
            K::WHAT,
        )
        .map_err(|e| codec::de_error::<D::Error>(&e))?;
        Ok(Elements {
            obj,
            len,
            _type: PhantomData,
        })
    }
}
