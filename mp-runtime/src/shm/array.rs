//! `Array<T>` and `RawArray<T>`: a fixed-length slice of plain-old-data in shared memory, with
//! and without a lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::{assert_alignment, check_received};
use crate::codec;
use crate::error::{Error, Result};
use crate::sync::object::{Header, Object};
use crate::sync::{Lock, LockGuard};

#[repr(C)]
pub(crate) struct ArrayHeader {
    len: AtomicU64,
    size: AtomicU32,
    align: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl Header for ArrayHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-arry1");
    const KIND: &'static std::ffi::CStr = c"mp-array";
}

/// A fixed-length array of `T` in shared memory without a lock (Python's `RawArray`).
///
/// Element access copies (`get`, `set`, `to_vec`, `copy_from_slice`); a reader may see an element
/// half-written by another process. For slices over the shared memory use [`Array::lock`], or
/// the `unsafe` [`as_slice`](RawArray::as_slice) when you synchronize by other means.
///
/// ```
/// let a = mp::RawArray::<i32>::new(3)?;
/// assert_eq!(a.to_vec(), [0, 0, 0]); // zero-filled
/// a.set(1, 7)?;
/// assert_eq!(a.get(1), Some(7));
/// assert!(matches!(a.set(3, 0), Err(mp::Error::InvalidArgument { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct RawArray<T> {
    obj: Object<ArrayHeader>,
    len: usize,
    _type: PhantomData<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            obj: self.obj.clone(),
            len: self.len,
            _type: PhantomData,
        }
    }
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroes (fresh shared memory is always zero-filled).
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Self::create(len, |_| {})
    }

    /// An array holding a copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        Self::create(items.len(), |dst| dst.copy_from_slice(items))
    }

    fn create(len: usize, fill: impl FnOnce(&mut [T])) -> Result<RawArray<T>> {
        const { assert_alignment::<T>() };
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| Error::InvalidArgument {
                message: format!("an array of {len} elements does not fit in memory"),
            })?;
        let obj = Object::create(bytes, |o: &Object<ArrayHeader>| {
            let h = o.header();
            h.len.store(len as u64, Ordering::Relaxed);
            h.size.store(size_of::<T>() as u32, Ordering::Relaxed);
            h.align.store(align_of::<T>() as u32, Ordering::Relaxed);
            // SAFETY: the data area holds `len` aligned elements and is not shared yet.
            fill(unsafe { std::slice::from_raw_parts_mut(o.data_ptr() as *mut T, len) });
        })?;
        Ok(RawArray {
            obj,
            len,
            _type: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        self.obj.data_ptr() as *mut T
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of element `i`; `None` out of range.
    pub fn get(&self, i: usize) -> Option<T> {
        // SAFETY: `i < len`, so the element is inside the mapping and aligned; T: Pod is valid
        // for any bytes, so even a torn read yields a valid T.
        (i < self.len).then(|| unsafe { self.ptr().add(i).read_volatile() })
    }

    /// Overwrites element `i`; [`Error::InvalidArgument`] out of range.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        if i >= self.len {
            return Err(index_error(i, self.len));
        }
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { self.ptr().add(i).write_volatile(value) };
        Ok(())
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }

    /// Overwrites every element from `src`, whose length must be the array's.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<()> {
        if src.len() != self.len {
            return Err(Error::InvalidArgument {
                message: format!(
                    "cannot copy {} elements into an array of {}",
                    src.len(),
                    self.len
                ),
            });
        }
        for (i, v) in src.iter().enumerate() {
            self.set(i, *v)?;
        }
        Ok(())
    }

    /// The elements as a slice over the shared memory.
    ///
    /// # Safety
    /// No process may write the array while the slice is alive (hold the [`Array`]'s lock, or
    /// synchronize by other means, such as a [`Barrier`](crate::Barrier) between phases).
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` aligned elements inside the mapping, which outlives `&self`; the caller
        // guarantees nobody writes meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }

    /// The elements as a mutable slice over the shared memory.
    ///
    /// # Safety
    /// No other reference to the elements, in this or any other process, may be used while the
    /// slice is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as in `as_slice`; the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

fn index_error(i: usize, len: usize) -> Error {
    Error::InvalidArgument {
        message: format!("index {i} out of range for an array of {len} elements"),
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<RawArray({:?})>", self.to_vec())
    }
}

impl<T> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.obj.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        const { assert_alignment::<T>() };
        let obj = Object::<ArrayHeader>::deserialize(d)?;
        let h = obj.header();
        let len = check_received::<T>(
            h.size.load(Ordering::Relaxed),
            h.align.load(Ordering::Relaxed),
            h.len.load(Ordering::Relaxed),
            obj.data_len(),
            "array",
        )
        .map_err(|e| codec::de_error::<D::Error>(&e))?;
        Ok(RawArray {
            obj,
            len,
            _type: PhantomData,
        })
    }
}

/// A fixed-length array of `T` in shared memory guarded by a [`Lock`] (Python's `Array`).
/// [`lock`](Array::lock) returns a guard that dereferences to `[T]`.
///
/// `T` is any plain-old-data type ([`mp::Pod`](crate::Pod)). Python's typecodes map to Rust
/// types as follows (for [`Value`](crate::Value) too):
///
/// | typecode | C type | Rust |
/// |---|---|---|
/// | `'b'` / `'B'` | signed / unsigned char | `i8` / `u8` |
/// | `'c'` | char (a bytes of length 1) | `u8` |
/// | `'h'` / `'H'` | short / unsigned short | `i16` / `u16` |
/// | `'i'` / `'I'` | int / unsigned int | `i32` / `u32` |
/// | `'l'` / `'L'` | long / unsigned long (LP64) | `i64` / `u64` |
/// | `'q'` / `'Q'` | long long / unsigned long long | `i64` / `u64` |
/// | `'f'` / `'d'` | float / double | `f32` / `f64` |
/// | `'u'` | wchar_t | `u32` (convert with `char::from_u32`) |
/// | `'?'` (ctypes `c_bool`) | _Bool | `u8` (0 or 1: `bool` is not `Pod`) |
/// | ctypes `Structure` | struct | `#[repr(C)] #[derive(Pod, Zeroable, Clone, Copy)] struct` |
///
/// An unknown typecode, a Python run-time `TypeError`, is a compile error here.
///
/// ```
/// let a = mp::Array::from_slice(&[1.0f64, 2.0, 3.0])?;
/// {
///     let mut g = a.lock()?;
///     g[0] = 10.0;
///     g[1..].copy_from_slice(&[20.0, 30.0]);
/// }
/// assert_eq!(a.to_vec()?, [10.0, 20.0, 30.0]);
/// assert_eq!(a.len(), 3);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "", deserialize = "T: Pod"))]
pub struct Array<T> {
    lock: Lock,
    raw: RawArray<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            lock: self.lock.clone(),
            raw: self.raw.clone(),
        }
    }
}

impl<T: Pod> Array<T> {
    /// `len` zeroes, with a lock of their own.
    pub fn new(len: usize) -> Result<Array<T>> {
        Ok(Array {
            lock: Lock::new()?,
            raw: RawArray::new(len)?,
        })
    }

    /// A copy of `items`, with a lock of their own.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        Array::with_lock(RawArray::from_slice(items)?, Lock::new()?)
    }

    /// The collected items, with a lock of their own (fallible, so not `FromIterator`).
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter(items: impl IntoIterator<Item = T>) -> Result<Array<T>> {
        Array::from_slice(&items.into_iter().collect::<Vec<T>>())
    }

    /// `raw` guarded by `lock` (Python's `Array(..., lock=lock)`).
    pub fn with_lock(raw: RawArray<T>, lock: Lock) -> Result<Array<T>> {
        Ok(Array { lock, raw })
    }

    /// Takes the lock; the guard dereferences to the elements. Errors as for
    /// [`Lock::acquire`].
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        Ok(ArrayGuard {
            _guard: self.lock.acquire()?,
            ptr: self.raw.ptr(),
            len: self.raw.len(),
            _type: PhantomData,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// A copy of element `i` under the lock; [`Error::InvalidArgument`] out of range.
    pub fn get(&self, i: usize) -> Result<T> {
        let g = self.lock()?;
        g.get(i).copied().ok_or_else(|| index_error(i, g.len()))
    }

    /// Overwrites element `i` under the lock; [`Error::InvalidArgument`] out of range.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        let mut g = self.lock()?;
        let len = g.len();
        *g.get_mut(i).ok_or_else(|| index_error(i, len))? = value;
        Ok(())
    }

    /// A copy of every element, under the lock.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.lock()?.to_vec())
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The array without its lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.raw
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Array(len={}, {:?})>", self.len(), self.lock)
    }
}

/// The lock of an [`Array`], held: dereferences to `[T]`. Dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T> {
    _guard: LockGuard<'a>,
    ptr: *mut T,
    len: usize,
    _type: PhantomData<&'a mut [T]>,
}

impl<T> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` aligned elements inside the mapping, which the borrowed Array keeps
        // alive; the lock excludes every other guard in every process.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
