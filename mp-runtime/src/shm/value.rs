//! `Value<T>` and `RawValue<T>`: one plain-old-data value in shared memory, with and without a
//! lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::{assert_alignment, check_received};
use crate::codec;
use crate::error::Result;
use crate::sync::object::{Header, Object};
use crate::sync::{Lock, LockGuard};

#[repr(C)]
pub(crate) struct ValueHeader {
    size: AtomicU32,
    align: AtomicU32,
}

// SAFETY: atomics only.
unsafe impl Header for ValueHeader {
    const MAGIC: u64 = u64::from_le_bytes(*b"mp-valu1");
    const KIND: &'static std::ffi::CStr = c"mp-value";
}

/// A `T` in shared memory without a lock (Python's `RawValue`): `get` and `set` copy the whole
/// value, but a reader may see a value half-written by another process. Use [`Value`] when
/// writers race.
///
/// ```
/// let v = mp::RawValue::new(1.5f64)?;
/// v.set(2.5);
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct RawValue<T> {
    obj: Object<ValueHeader>,
    _type: PhantomData<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            obj: self.obj.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Pod> RawValue<T> {
    /// A shared value initialized to `value`.
    pub fn new(value: T) -> Result<RawValue<T>> {
        const { assert_alignment::<T>() };
        let obj = Object::create(size_of::<T>(), |o: &Object<ValueHeader>| {
            let h = o.header();
            h.size.store(size_of::<T>() as u32, Ordering::Relaxed);
            h.align.store(align_of::<T>() as u32, Ordering::Relaxed);
            // SAFETY: the data area is at least size_of::<T>() bytes, aligned to 256 >=
            // align_of::<T>(), and not yet shared.
            unsafe { (o.data_ptr() as *mut T).write(value) };
        })?;
        Ok(RawValue {
            obj,
            _type: PhantomData,
        })
    }

    pub(super) fn ptr(&self) -> *mut T {
        self.obj.data_ptr() as *mut T
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        // SAFETY: the pointer is valid and aligned for T (checked at creation and receipt);
        // T: Pod is valid for any bytes, so even a torn read yields a valid T.
        unsafe { self.ptr().read_volatile() }
    }

    /// Overwrites the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; the memory is writable shared memory of at least size_of::<T>().
        unsafe { self.ptr().write_volatile(value) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<RawValue({:?})>", self.get())
    }
}

impl<T> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.obj.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        const { assert_alignment::<T>() };
        let obj = Object::<ValueHeader>::deserialize(d)?;
        let h = obj.header();
        check_received::<T>(
            h.size.load(Ordering::Relaxed),
            h.align.load(Ordering::Relaxed),
            1,
            obj.data_len(),
            "value",
        )
        .map_err(|e| codec::de_error::<D::Error>(&e))?;
        Ok(RawValue {
            obj,
            _type: PhantomData,
        })
    }
}

/// A `T` in shared memory guarded by a [`Lock`] (Python's `Value`). [`lock`](Value::lock)
/// returns a guard that dereferences to the value; `get` and `set` lock for one copy.
///
/// `T` is any plain-old-data type (`bytemuck::Pod`, re-exported as [`mp::Pod`](crate::Pod)):
/// integers, floats, arrays of them, and `#[repr(C)]` structs deriving `Pod`. The table of
/// Python typecodes is in the [`Array`](crate::Array) docs.
///
/// ```
/// let v = mp::Value::new(0i64)?;
/// *v.lock()? += 5;
/// v.set(v.get()? * 2)?;
/// assert_eq!(v.get()?, 10);
/// # Ok::<(), mp::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "", deserialize = "T: Pod"))]
pub struct Value<T> {
    lock: Lock,
    raw: RawValue<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            lock: self.lock.clone(),
            raw: self.raw.clone(),
        }
    }
}

impl<T: Pod> Value<T> {
    /// A shared value with a lock of its own.
    pub fn new(value: T) -> Result<Value<T>> {
        Value::with_lock(value, Lock::new()?)
    }

    /// A shared value guarded by `lock` (Python's `Value(..., lock=lock)`), which may guard
    /// other objects too.
    pub fn with_lock(value: T, lock: Lock) -> Result<Value<T>> {
        Ok(Value {
            lock,
            raw: RawValue::new(value)?,
        })
    }

    /// Takes the lock; the guard dereferences to the value. Errors as for [`Lock::acquire`].
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        Ok(ValueGuard {
            _guard: self.lock.acquire()?,
            ptr: self.raw.ptr(),
            _type: PhantomData,
        })
    }

    /// A copy of the value, read under the lock.
    pub fn get(&self) -> Result<T> {
        Ok(*self.lock()?)
    }

    /// Overwrites the value under the lock.
    pub fn set(&self, value: T) -> Result<()> {
        *self.lock()? = value;
        Ok(())
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The value without its lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Value({:?}, {:?})>", self.raw.get(), self.lock)
    }
}

/// The lock of a [`Value`], held: dereferences to the value. Dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T> {
    _guard: LockGuard<'a>,
    ptr: *mut T,
    _type: PhantomData<&'a mut T>,
}

impl<T> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `ptr` is valid and aligned for T for the guard's lifetime (the Value is
        // borrowed); holding the lock excludes every other guard, in every process.
        unsafe { &*self.ptr }
    }
}

impl<T> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is borrowed mutably, so this is the only reference.
        unsafe { &mut *self.ptr }
    }
}

impl<T: fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
