//! `Value<T>` and `RawValue<T>`: one plain-old-data value in shared memory, with and without a
//! lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::atomic_copy;
use super::elements::{Elements, RawValueKind, ValueKind};
use crate::codec;
use crate::error::Result;
use crate::sync::{Lock, LockGuard};

/// A `T` in shared memory without a lock (Python's `RawValue`).
///
/// [`get`](RawValue::get) and [`set`](RawValue::set) copy the whole value with atomic accesses
/// (in units of `T`'s alignment, at most 8 bytes), so any number of threads and processes may
/// call them at once: that is never undefined behaviour. What they do not give is atomicity of
/// a value larger than one unit: a `get` racing with a `set` may return a *torn* value, part old
/// and part new (still a valid `T`, since `T: Pod`), and a read-modify-write may lose another
/// process's update. Use [`Value`] when writers race.
///
/// ```
/// let v = mp::RawValue::new(1.5f64)?;
/// v.set(2.5);
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct RawValue<T> {
    mem: Elements<T, RawValueKind>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            mem: self.mem.clone(),
        }
    }
}

impl<T: Pod> RawValue<T> {
    /// A shared value initialized to `value`.
    pub fn new(value: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            mem: Elements::create(1, None, |v| v[0] = value)?,
        })
    }

    /// A copy of the value (possibly torn by a concurrent [`set`](RawValue::set)).
    pub fn get(&self) -> T {
        // SAFETY: the element is inside the mapping, aligned for T, and in this process it is
        // only accessed through `atomic_copy` with T's layout (no RawValue hands out references).
        unsafe { atomic_copy::load(self.mem.ptr()) }
    }

    /// Overwrites the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { atomic_copy::store(self.mem.ptr(), value) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<RawValue({:?})>", self.get())
    }
}

impl<T> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.mem.serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RawValue {
            mem: Elements::deserialize(d)?,
        })
    }
}

/// A `T` in shared memory guarded by a [`Lock`] (Python's `Value`). [`lock`](Value::lock)
/// returns a guard that dereferences to the value (`&mut T`); `get` and `set` lock for one copy.
///
/// `T` is any plain-old-data type ([`mp::Pod`](crate::Pod)): integers, floats, arrays of them,
/// and `#[repr(C)]` structs deriving `mp::Pod`. The table of Python typecodes is in the
/// [`Array`](crate::Array) docs.
///
/// Every access to the value, in every process, goes through the one lock, which is what makes
/// the guard's `&mut T` sound: clones and copies received by other processes carry the same
/// lock; there is no lockless handle on the memory (Python's `get_obj()` is the guard itself);
/// the memory cannot be received as a [`RawValue`] or with another lock; and nobody can release
/// the lock from under a guard ([`Lock::release`] only ends acquisitions leaked without one).
///
/// ```
/// let v = mp::Value::new(0i64)?;
/// *v.lock()? += 5;
/// v.set(v.get()? * 2)?;
/// assert_eq!(v.get()?, 10);
/// # Ok::<(), mp::Error>(())
/// ```
pub struct Value<T> {
    lock: Lock,
    mem: Elements<T, ValueKind>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            lock: self.lock.clone(),
            mem: self.mem.clone(),
        }
    }
}

impl<T: Pod> Value<T> {
    /// A shared value with a lock of its own.
    pub fn new(value: T) -> Result<Value<T>> {
        Value::with_lock(value, Lock::new()?)
    }

    /// A new shared value guarded by `lock` (Python's `Value(..., lock=lock)`), which may guard
    /// other objects too.
    pub fn with_lock(value: T, lock: Lock) -> Result<Value<T>> {
        let mem = Elements::create(1, Some(&lock), |v| v[0] = value)?;
        Ok(Value { lock, mem })
    }

    /// Takes the lock; the guard dereferences to the value. Errors as for [`Lock::acquire`].
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        Ok(ValueGuard {
            _guard: self.lock.acquire()?,
            ptr: self.mem.ptr(),
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
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    /// `<Value(5, <Lock(owner=None)>)>`; the value shows as `<locked>` while anyone holds the
    /// lock (formatting never waits, and never takes a lock over from a dead holder).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.lock.try_acquire_free().map(|g| {
            // SAFETY: the lock is held, so nothing else accesses the element.
            let v = unsafe { *self.mem.ptr() };
            drop(g);
            v
        });
        match value {
            Some(v) => write!(f, "<Value({v:?}, {:?})>", self.lock),
            None => write!(f, "<Value(<locked>, {:?})>", self.lock),
        }
    }
}

impl<T> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, &self.mem).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (lock, mem): (Lock, Elements<T, ValueKind>) = Deserialize::deserialize(d)?;
        mem.check_lock(&lock)
            .map_err(|e| codec::de_error::<D::Error>(&e))?;
        Ok(Value { lock, mem })
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
        // borrowed); every access to the value in every process holds the lock (see `Value`),
        // and this guard holds it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn message(r: crate::Result<impl fmt::Debug>) -> String {
        match r {
            Err(Error::Codec { message, .. }) => message,
            other => panic!("expected a decoding error, got {other:?}"),
        }
    }

    #[test]
    fn a_value_travels_with_its_lock() {
        let v = Value::new(5u64).unwrap();
        let (bytes, fds) = codec::encode_owned(&v).unwrap();
        let back: Value<u64> = codec::decode(&bytes, fds).unwrap();
        assert!(back.get_lock().same_as(v.get_lock()));
        *back.lock().unwrap() += 1;
        assert_eq!(v.get().unwrap(), 6);
    }

    #[test]
    fn the_memory_of_a_value_is_not_a_raw_value() {
        // A receiver that declares another type must not get a lockless handle on a Value's
        // memory, whose guards hand out `&mut`.
        let v = Value::new(5u64).unwrap();
        let (bytes, fds) = codec::encode_owned(&v).unwrap();
        let err = message(codec::decode::<(Lock, RawValue<u64>)>(&bytes, fds));
        assert!(err.contains("not an mp mp-rawvalue"), "{err}");
        let (bytes, fds) = codec::encode_owned(&RawValue::new(5u64).unwrap()).unwrap();
        assert!(codec::decode::<Elements<u64, ValueKind>>(&bytes, fds).is_err());
    }

    #[test]
    fn the_memory_of_a_value_is_refused_with_another_lock() {
        let v = Value::new(5u64).unwrap();
        let other = Lock::new().unwrap();
        // Handle indices are plain numbers in the message: these two put `other` (index 2)
        // before the value's memory (index 1), where a Value's own lock (index 0) would be.
        let (bytes, fds) = codec::encode_owned(&(2u32, 1u32, v.clone(), other)).unwrap();
        let err = message(codec::decode::<(Value<u64>, Lock)>(&bytes, fds));
        assert!(err.contains("comes with another lock"), "{err}");
    }
}
