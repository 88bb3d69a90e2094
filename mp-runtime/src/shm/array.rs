//! `Array<T>` and `RawArray<T>`: a fixed-length slice of plain-old-data in shared memory, with
//! and without a lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::atomic_copy;
use super::elements::{ArrayKind, Elements, RawArrayKind};
use crate::codec;
use crate::error::{Error, Result};
use crate::sync::{Lock, LockGuard};

/// A fixed-length array of `T` in shared memory without a lock (Python's `RawArray`).
///
/// Element access copies (`get`, `set`, `to_vec`, `copy_from_slice`), each element with atomic
/// accesses (in units of `T`'s alignment, at most 8 bytes), so any number of threads and
/// processes may use them at once: that is never undefined behaviour. A reader may see an
/// element torn by a concurrent write (part old, part new: a valid `T` all the same, since
/// `T: Pod`), and `to_vec` is not a snapshot of the whole array. For slices over the shared
/// memory use [`Array::lock`], or the `unsafe` [`as_slice`](RawArray::as_slice) when you
/// synchronize by other means.
///
/// ```
/// let a = mp::RawArray::<i32>::new(3)?;
/// assert_eq!(a.to_vec(), [0, 0, 0]); // zero-filled
/// a.set(1, 7)?;
/// assert_eq!(a.get(1)?, 7);
/// assert!(matches!(a.get(3), Err(mp::Error::InvalidArgument { .. })));
/// assert!(matches!(a.set(3, 0), Err(mp::Error::InvalidArgument { .. })));
/// # Ok::<(), mp::Error>(())
/// ```
pub struct RawArray<T> {
    mem: Elements<T, RawArrayKind>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            mem: self.mem.clone(),
        }
    }
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroes (fresh shared memory is always zero-filled).
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            mem: Elements::create(len, None, |_| {})?,
        })
    }

    /// An array holding a copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        Ok(RawArray {
            mem: Elements::create(items.len(), None, |dst| dst.copy_from_slice(items))?,
        })
    }

    fn ptr(&self) -> *mut T {
        self.mem.ptr()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of element `i` (possibly torn by a concurrent write); [`Error::InvalidArgument`]
    /// out of range, as for [`set`](RawArray::set) and [`Array::get`].
    pub fn get(&self, i: usize) -> Result<T> {
        if i >= self.len() {
            return Err(index_error(i, self.len()));
        }
        // SAFETY: `i < len`, so the element is inside the mapping and aligned; in this process
        // the elements are only accessed through `atomic_copy` with T's layout, or by callers
        // of the unsafe slice views, who promise no concurrent access.
        Ok(unsafe { atomic_copy::load(self.ptr().add(i)) })
    }

    /// Overwrites element `i`; [`Error::InvalidArgument`] out of range.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        if i >= self.len() {
            return Err(index_error(i, self.len()));
        }
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { atomic_copy::store(self.ptr().add(i), value) };
        Ok(())
    }

    /// A copy of every element, one at a time.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len()).filter_map(|i| self.get(i).ok()).collect()
    }

    /// Overwrites every element from `src`, whose length must be the array's.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<()> {
        if src.len() != self.len() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "cannot copy {} elements into an array of {}",
                    src.len(),
                    self.len()
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
    /// No thread of any process may write the array while the slice is alive (synchronize by
    /// other means, such as a [`Barrier`](crate::Barrier) between phases).
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` aligned elements inside the mapping, which outlives `&self`; the caller
        // guarantees nobody writes meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }

    /// The elements as a mutable slice over the shared memory.
    ///
    /// # Safety
    /// No other access to the elements (a reference, `get`, `set`), in this or any other
    /// process, may happen while the slice is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: as in `as_slice`; the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len()) }
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
        self.mem.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RawArray {
            mem: Elements::deserialize(d)?,
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
/// | ctypes `Structure` | struct | `#[repr(C)] #[derive(mp::Pod, mp::Zeroable, Clone, Copy)] struct` |
///
/// An unknown typecode, a Python run-time `TypeError`, is a compile error here.
///
/// Every access to the elements, in every process, goes through the one lock, which is what
/// makes the guard's `&mut [T]` sound: clones and copies received by other processes carry the
/// same lock; there is no lockless handle on the memory (Python's `get_obj()` is the guard
/// itself); the memory cannot be received as a [`RawArray`] or with another lock; and nobody
/// can release the lock from under a guard ([`Lock::release`] only ends acquisitions leaked
/// without one). To copy a `RawArray` into a locked array, use
/// [`Array::from_slice`]`(&raw.to_vec())`.
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
pub struct Array<T> {
    lock: Lock,
    mem: Elements<T, ArrayKind>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            lock: self.lock.clone(),
            mem: self.mem.clone(),
        }
    }
}

impl<T: Pod> Array<T> {
    /// `len` zeroes, with a lock of their own.
    pub fn new(len: usize) -> Result<Array<T>> {
        let lock = Lock::new()?;
        let mem = Elements::create(len, Some(&lock), |_| {})?;
        Ok(Array { lock, mem })
    }

    /// A copy of `items`, with a lock of their own.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        Array::with_lock(items, Lock::new()?)
    }

    /// The collected items, with a lock of their own (fallible, so not `FromIterator`).
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter(items: impl IntoIterator<Item = T>) -> Result<Array<T>> {
        Array::from_slice(&items.into_iter().collect::<Vec<T>>())
    }

    /// A copy of `items` guarded by `lock` (Python's `Array(..., lock=lock)`), which may guard
    /// other objects too.
    pub fn with_lock(items: &[T], lock: Lock) -> Result<Array<T>> {
        let mem = Elements::create(items.len(), Some(&lock), |dst| dst.copy_from_slice(items))?;
        Ok(Array { lock, mem })
    }

    /// Takes the lock; the guard dereferences to the elements. Errors as for
    /// [`Lock::acquire`].
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        Ok(ArrayGuard {
            _guard: self.lock.acquire()?,
            ptr: self.mem.ptr(),
            len: self.mem.len(),
            _type: PhantomData,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Array(len={}, {:?})>", self.len(), self.lock)
    }
}

impl<T> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, &self.mem).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (lock, mem): (Lock, Elements<T, ArrayKind>) = Deserialize::deserialize(d)?;
        mem.check_lock(&lock)
            .map_err(|e| codec::de_error::<D::Error>(&e))?;
        Ok(Array { lock, mem })
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
        // alive; every access to them in every process holds the lock (see `Array`), and this
        // guard holds it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_of_an_array_is_not_a_raw_array() {
        let a = Array::from_slice(&[1u32, 2]).unwrap();
        let (bytes, fds) = codec::encode_owned(&a).unwrap();
        let err = codec::decode::<(Lock, RawArray<u32>)>(&bytes, fds).unwrap_err();
        assert!(err.to_string().contains("not an mp mp-rawarray"), "{err}");
        let (bytes, fds) = codec::encode_owned(&(2u32, 1u32, a, Lock::new().unwrap())).unwrap();
        let err = codec::decode::<(Array<u32>, Lock)>(&bytes, fds).unwrap_err();
        assert!(err.to_string().contains("comes with another lock"), "{err}");
    }
}
