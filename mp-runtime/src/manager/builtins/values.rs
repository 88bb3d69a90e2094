//! A managed value and a managed array (Python's `Manager().Value(typecode, x)` and
//! `Manager().Array(typecode, items)`): typed by the proxy instead of a typecode.
//!
//! An array is a list of fixed length: it is kept by the list object and its proxy offers the
//! subset of the list's methods that keep the length.

use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::value::{Encoded, Received, Stored};
use super::list::{self, LIST_LEN, LIST_SET, ListIter, ListObj};
use super::{Key, apply, builtin, call_answer, copy_failed, proxy_type};
use crate::error::Result;
use crate::manager::Manager;
use crate::worker::Worker;

/// The server's value.
pub(crate) struct ValueObj {
    value: Mutex<Stored>,
}

const GET: u16 = 0;
const SET: u16 = 1;
const MODIFY: u16 = 2;

impl Managed for ValueObj {
    const KEEPS_DECODED: bool = true;
    builtin!(
        ValueObj,
        "mp::manager::Value",
        ["Value::get", "Value::set", "Value::modify"]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Value::?");
        match method {
            GET => call.read_try(this, name, |v, ()| {
                v.lock().try_clone().map_err(copy_failed)
            }),
            SET => call.read(this, name, |v, (new,): (Stored,)| {
                let old = std::mem::replace(&mut *v.lock(), new);
                drop(old);
            }),
            MODIFY => call.read_try(this, name, |v, (worker, extra): (String, Key)| {
                let mut value = v.lock();
                let new = apply(&worker, &value, &extra.0)?;
                let copy = new.try_clone().map_err(copy_failed)?;
                let old = std::mem::replace(&mut *value, new);
                drop(value);
                drop(old);
                Ok(copy)
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Value::new", |(value,): (Stored,)| ValueObj {
            value: Mutex::new(value),
        })
    }
}

impl ValueObj {
    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

proxy_type!(
    /// A proxy of a managed value (Python's `manager.Value(typecode, x)`): one value of any
    /// `serde` type, read as a copy and replaced whole, or changed in the server with
    /// [`modify`](ValueProxy::modify) so that concurrent changes are not lost.
    ///
    /// ```
    /// #[mp::worker]
    /// fn double(x: u64) -> u64 {
    ///     x * 2
    /// }
    ///
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let v = m.value(21u64)?;
    /// assert_eq!(v.modify(double)?, 42);
    /// v.set(&1)?;
    /// assert_eq!(v.get()?, 1);
    /// // A worker of another type is caught at compile time; a stored value read as another
    /// // type is a codec error.
    /// let as_text: mp::manager::ValueProxy<String> = m.value(String::from("x"))?;
    /// assert_eq!(as_text.get()?, "x");
    /// # Ok(())
    /// # }
    /// ```
    ValueProxy<T>,
    "Value"
);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// A copy of the value (Python's `v.value` or `v.get()`).
    pub fn get(&self) -> Result<T> {
        let v: Received = self.r.call(GET, &())?;
        v.decode()
    }

    /// Replaces the value (Python's `v.value = x` or `v.set(x)`).
    pub fn set(&self, value: &T) -> Result<()> {
        self.r.call(SET, &(Encoded::of(value)?,))
    }

    /// Replaces the value with `worker(value)`, run in the server under the value's lock, and
    /// returns the new value: several processes modifying it lose no update. A worker that
    /// returns `Err` leaves the value as it was ([`Error::TaskFailed`]).
    ///
    /// [`Error::TaskFailed`]: crate::Error::TaskFailed
    pub fn modify<W: Worker<Args = (T,), Output = T>>(&self, worker: W) -> Result<T> {
        let v: Received = self.r.call(MODIFY, &(worker.name(), Key(Vec::new())))?;
        v.decode()
    }

    /// Like [`modify`](ValueProxy::modify) with an extra argument: `worker(value, arg)`.
    pub fn modify_with<A: Serialize, W: Worker<Args = (T, A), Output = T>>(
        &self,
        worker: W,
        arg: &A,
    ) -> Result<T> {
        let v: Received = self
            .r
            .call(MODIFY, &(worker.name(), Key(Encoded::key(arg)?)))?;
        v.decode()
    }
}

proxy_type!(
    /// A proxy of a managed array (Python's `manager.Array(typecode, items)`): a sequence of
    /// fixed length, read and written by index.
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let a = m.array([0i32, 1])?;
    /// a.set(1, &5)?;
    /// assert_eq!(a.len()?, 2);
    /// assert_eq!(a.get(1)?, Some(5));
    /// assert_eq!(a.iter().collect::<mp::Result<Vec<_>>>()?, vec![0, 5]);
    /// assert!(matches!(a.set(2, &0), Err(mp::Error::InvalidArgument { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ArrayProxy<T>,
    "Array"
);

impl<T: Serialize + DeserializeOwned> ArrayProxy<T> {
    /// The number of items (fixed when the array was made).
    pub fn len(&self) -> Result<usize> {
        self.r.call(LIST_LEN, &())
    }

    /// Whether the array has no items.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of item `i` (Python's `a[i]`); `None` past the end.
    pub fn get(&self, i: usize) -> Result<Option<T>> {
        list::get_item(&self.r, i)
    }

    /// Replaces item `i` (Python's `a[i] = v`); [`Error::InvalidArgument`] past the end.
    ///
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    pub fn set(&self, i: usize, value: &T) -> Result<()> {
        call_answer(&self.r, LIST_SET, &(i, Encoded::of(value)?))
    }

    /// Copies of every item (Python's `list(a)` or `a[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        list::to_vec(&self.r)
    }

    /// The items one by one, each read when the iterator reaches it.
    pub fn iter(&self) -> ListIter<'_, T> {
        ListIter::new(&self.r)
    }

    /// Replaces item `i` with `worker(item)` in the server (see [`ListProxy::modify`]).
    ///
    /// [`ListProxy::modify`]: crate::manager::ListProxy::modify
    pub fn modify<W: Worker<Args = (T,), Output = T>>(
        &self,
        i: usize,
        worker: W,
    ) -> Result<Option<T>> {
        list::modify_item(&self.r, i, worker.name(), Vec::new())
    }
}

impl Manager {
    /// A new managed value holding `value` (Python's `manager.Value(typecode, value)`).
    pub fn value<T: Serialize>(&self, value: T) -> Result<ValueProxy<T>> {
        self.create::<ValueProxy<T>, _>(
            ValueObj::TYPE_NAME,
            ValueObj::FINGERPRINT,
            0,
            &(Encoded::of(&value)?,),
        )
    }

    /// A new managed array holding `items` (Python's `manager.Array(typecode, items)`).
    pub fn array<T: Serialize>(&self, items: impl IntoIterator<Item = T>) -> Result<ArrayProxy<T>> {
        let items = items
            .into_iter()
            .map(|v| Encoded::of(&v))
            .collect::<Result<Vec<_>>>()?;
        self.create::<ArrayProxy<T>, _>(ListObj::TYPE_NAME, ListObj::FINGERPRINT, 0, &(items,))
    }
}
