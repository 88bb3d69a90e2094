//! A managed list (Python's `Manager().list()`), also the storage of a managed array.
//!
//! Items are kept encoded (`value.rs`), so they may be other proxies; items are compared by
//! their encoding.

use std::ops::{Bound, RangeBounds};
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::proxy::ObjRef;
use super::super::value::{Encoded, Received, Stored};
use super::{Key, Refused, apply, builtin, call_answer, copy_failed, key, lock, proxy_type};
use crate::error::Result;
use crate::manager::Manager;
use crate::worker::Worker;

fn copies(items: &[Stored]) -> std::result::Result<Vec<Stored>, RemoteError> {
    items
        .iter()
        .map(|s| s.try_clone().map_err(copy_failed))
        .collect()
}

/// The server's list (also the storage of a managed array, which uses its fixed-length subset).
#[derive(Default)]
pub(crate) struct ListObj {
    items: Mutex<Vec<Stored>>,
}

pub(super) const LIST_LEN: u16 = 0;
pub(super) const LIST_GET: u16 = 1;
pub(super) const LIST_SET: u16 = 2;
const LIST_APPEND: u16 = 3;
const LIST_EXTEND: u16 = 4;
const LIST_INSERT: u16 = 5;
const LIST_POP: u16 = 6;
const LIST_REMOVE: u16 = 7;
const LIST_INDEX: u16 = 8;
const LIST_COUNT: u16 = 9;
const LIST_CLEAR: u16 = 10;
const LIST_REVERSE: u16 = 11;
pub(super) const LIST_TO_VEC: u16 = 12;
const LIST_SLICE: u16 = 13;
pub(super) const LIST_MODIFY: u16 = 14;

fn out_of_range(i: usize, len: usize) -> Refused {
    Refused::Argument(format!(
        "index {i} is out of range for a managed sequence of length {len}"
    ))
}

impl Managed for ListObj {
    const KEEPS_DECODED: bool = true;
    builtin!(
        ListObj,
        "mp::manager::List",
        [
            "List::len",
            "List::get",
            "List::set",
            "List::append",
            "List::extend",
            "List::insert",
            "List::pop",
            "List::remove",
            "List::index",
            "List::count",
            "List::clear",
            "List::reverse",
            "List::to_vec",
            "List::slice",
            "List::modify",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("List::?");
        match method {
            LIST_LEN => call.read(this, name, |l, ()| lock(&l.items).len()),
            LIST_GET => call.read_try(this, name, |l, (i,): (usize,)| {
                lock(&l.items)
                    .get(i)
                    .map(|s| s.try_clone().map_err(copy_failed))
                    .transpose()
            }),
            LIST_SET => call.read(this, name, |l, (i, v): (usize, Stored)| {
                let mut items = lock(&l.items);
                let len = items.len();
                match items.get_mut(i) {
                    Some(slot) => {
                        let old = std::mem::replace(slot, v);
                        drop(items);
                        drop(old);
                        Ok(())
                    }
                    None => Err(out_of_range(i, len)),
                }
            }),
            LIST_APPEND => call.read(this, name, |l, (v,): (Stored,)| lock(&l.items).push(v)),
            LIST_EXTEND => call.read(this, name, |l, (vs,): (Vec<Stored>,)| {
                lock(&l.items).extend(vs)
            }),
            LIST_INSERT => call.read(this, name, |l, (i, v): (usize, Stored)| {
                let mut items = lock(&l.items);
                let at = i.min(items.len());
                items.insert(at, v);
            }),
            LIST_POP => call.read(this, name, |l, (i,): (Option<usize>,)| {
                let mut items = lock(&l.items);
                match i {
                    None => items.pop(),
                    Some(i) if i < items.len() => Some(items.remove(i)),
                    Some(_) => None,
                }
            }),
            LIST_REMOVE => call.read(this, name, |l, (k,): (Key,)| {
                let mut items = lock(&l.items);
                match items.iter().position(|s| s.bytes() == k.0) {
                    Some(i) => {
                        let old = items.remove(i);
                        drop(items);
                        drop(old);
                        Ok(())
                    }
                    None => Err(Refused::Argument(
                        "the managed list holds no item equal to the one given".into(),
                    )),
                }
            }),
            LIST_INDEX => call.read(this, name, |l, (k,): (Key,)| {
                lock(&l.items).iter().position(|s| s.bytes() == k.0)
            }),
            LIST_COUNT => call.read(this, name, |l, (k,): (Key,)| {
                lock(&l.items).iter().filter(|s| s.bytes() == k.0).count()
            }),
            LIST_CLEAR => call.read(this, name, |l, ()| {
                let old = std::mem::take(&mut *lock(&l.items));
                drop(old);
            }),
            LIST_REVERSE => call.read(this, name, |l, ()| lock(&l.items).reverse()),
            LIST_TO_VEC => call.read_try(this, name, |l, ()| copies(&lock(&l.items))),
            LIST_SLICE => call.read_try(this, name, |l, (start, end): (usize, Option<usize>)| {
                let items = lock(&l.items);
                let end = end.unwrap_or(items.len()).min(items.len());
                let start = start.min(end);
                copies(&items[start..end])
            }),
            LIST_MODIFY => {
                call.read_try(this, name, |l, (i, worker, extra): (usize, String, Key)| {
                    let mut items = lock(&l.items);
                    let Some(slot) = items.get_mut(i) else {
                        return Ok(None);
                    };
                    let new = apply(&worker, slot, &extra.0)?;
                    let copy = new.try_clone().map_err(copy_failed)?;
                    let old = std::mem::replace(slot, new);
                    drop(items);
                    drop(old);
                    Ok(Some(copy))
                })
            }
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("List::new", |(items,): (Vec<Stored>,)| ListObj {
            items: Mutex::new(items),
        })
    }
}

proxy_type!(
    /// A proxy of a managed list (Python's `ListProxy`): items are any `serde` type, including
    /// other proxies (`ListProxy<QueueProxy<String>>`), which are used in place through the copy
    /// [`get`](ListProxy::get) returns.
    ///
    /// Reads return copies; changes go through the list's own methods, or
    /// [`modify`](ListProxy::modify) with a registered function. Items are compared by their
    /// encoding ([`remove`](ListProxy::remove), [`index`](ListProxy::index),
    /// [`count`](ListProxy::count)), so those take plain values. [`iter`](ListProxy::iter)
    /// reads one item per step, so changes made while iterating are seen, as in Python.
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let l = m.list([1u32, 2, 3])?;
    /// l.append(&4)?;
    /// assert_eq!(l.to_vec()?, vec![1, 2, 3, 4]);
    /// assert_eq!(l.pop(None)?, Some(4));
    /// assert_eq!(l.slice(1..)?, vec![2, 3]);
    /// assert_eq!(l.get(7)?, None);
    /// assert!(matches!(l.set(7, &0), Err(mp::Error::InvalidArgument { .. })));
    /// assert!(matches!(l.remove(&9), Err(mp::Error::InvalidArgument { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ListProxy<T>,
    "List"
);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// The number of items (Python's `len(l)`).
    pub fn len(&self) -> Result<usize> {
        self.r.call(LIST_LEN, &())
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of item `i` (Python's `l[i]`); `None` past the end.
    pub fn get(&self, i: usize) -> Result<Option<T>> {
        get_item(&self.r, i)
    }

    /// Replaces item `i` (Python's `l[i] = v`); [`Error::InvalidArgument`] past the end.
    ///
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    pub fn set(&self, i: usize, value: &T) -> Result<()> {
        call_answer(&self.r, LIST_SET, &(i, Encoded::of(value)?))
    }

    /// Appends `value` (Python's `l.append(v)`).
    pub fn append(&self, value: &T) -> Result<()> {
        self.r.call(LIST_APPEND, &(Encoded::of(value)?,))
    }

    /// The same as [`append`](ListProxy::append), under Rust's name.
    pub fn push(&self, value: &T) -> Result<()> {
        self.append(value)
    }

    /// Appends every item of `values`, in one call (Python's `l.extend(xs)` or `l += xs`).
    pub fn extend<'a>(&self, values: impl IntoIterator<Item = &'a T>) -> Result<()>
    where
        T: 'a,
    {
        let values = values
            .into_iter()
            .map(Encoded::of)
            .collect::<Result<Vec<_>>>()?;
        self.r.call(LIST_EXTEND, &(values,))
    }

    /// Inserts `value` before item `i` (at the end if `i` is past it, as in Python).
    pub fn insert(&self, i: usize, value: &T) -> Result<()> {
        self.r.call(LIST_INSERT, &(i, Encoded::of(value)?))
    }

    /// Removes and returns item `i`, or the last item for `None` (Python's `l.pop(i)`); `None`
    /// if there is no such item.
    pub fn pop(&self, i: Option<usize>) -> Result<Option<T>> {
        let v: Option<Received> = self.r.call(LIST_POP, &(i,))?;
        v.map(Received::decode).transpose()
    }

    /// Removes the first item equal to `value` (Python's `l.remove(v)`);
    /// [`Error::InvalidArgument`] if there is none.
    ///
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    pub fn remove(&self, value: &T) -> Result<()> {
        call_answer(&self.r, LIST_REMOVE, &(key(value)?,))
    }

    /// The position of the first item equal to `value` (Python's `l.index(v)`, which raises
    /// when there is none).
    pub fn index(&self, value: &T) -> Result<Option<usize>> {
        self.r.call(LIST_INDEX, &(key(value)?,))
    }

    /// How many items equal `value` (Python's `l.count(v)`).
    pub fn count(&self, value: &T) -> Result<usize> {
        self.r.call(LIST_COUNT, &(key(value)?,))
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.r.call(LIST_CLEAR, &())
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<()> {
        self.r.call(LIST_REVERSE, &())
    }

    /// Copies of every item, in order (Python's `list(l)` or `l.copy()`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        to_vec(&self.r)
    }

    /// Copies of the items in `range`, cut at the end of the list as Python's `l[a:b]` is.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e.saturating_add(1)),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        let items: Vec<Received> = self.r.call(LIST_SLICE, &(start, end))?;
        items.into_iter().map(Received::decode).collect()
    }

    /// The items one by one, each read when the iterator reaches it (Python's `for x in l`):
    /// an item appended while iterating is seen, and the iteration ends at the first index
    /// past the end.
    pub fn iter(&self) -> ListIter<'_, T> {
        ListIter::new(&self.r)
    }

    /// Replaces item `i` with `worker(item)`, run in the server under the list's lock, and
    /// returns the new item (`None` past the end, and nothing runs). See
    /// [`DictProxy::modify`](crate::manager::DictProxy::modify).
    pub fn modify<W: Worker<Args = (T,), Output = T>>(
        &self,
        i: usize,
        worker: W,
    ) -> Result<Option<T>> {
        modify_item(&self.r, i, worker.name(), Vec::new())
    }

    /// Like [`modify`](ListProxy::modify) with an extra argument: `worker(item, arg)`.
    pub fn modify_with<A: Serialize, W: Worker<Args = (T, A), Output = T>>(
        &self,
        i: usize,
        worker: W,
        arg: &A,
    ) -> Result<Option<T>> {
        modify_item(&self.r, i, worker.name(), Encoded::key(arg)?)
    }
}

/// Item `i` of a list (or array) object.
pub(super) fn get_item<T: DeserializeOwned>(r: &ObjRef, i: usize) -> Result<Option<T>> {
    let v: Option<Received> = r.call(LIST_GET, &(i,))?;
    v.map(Received::decode).transpose()
}

/// Every item of a list (or array) object.
pub(super) fn to_vec<T: DeserializeOwned>(r: &ObjRef) -> Result<Vec<T>> {
    let items: Vec<Received> = r.call(LIST_TO_VEC, &())?;
    items.into_iter().map(Received::decode).collect()
}

/// Runs `worker` on item `i` of a list (or array) object.
pub(super) fn modify_item<T: DeserializeOwned>(
    r: &ObjRef,
    i: usize,
    worker: &str,
    extra: Vec<u8>,
) -> Result<Option<T>> {
    let v: Option<Received> = r.call(LIST_MODIFY, &(i, worker, Key(extra)))?;
    v.map(Received::decode).transpose()
}

/// An iterator over a managed list or array that reads item `i` at step `i` (see
/// [`ListProxy::iter`]). A failed read is yielded once, and ends the iteration.
pub struct ListIter<'a, T> {
    r: &'a ObjRef,
    next: usize,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<'a, T> ListIter<'a, T> {
    pub(super) fn new(r: &'a ObjRef) -> Self {
        ListIter {
            r,
            next: 0,
            _type: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Iterator for ListIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.next == usize::MAX {
            return None;
        }
        match get_item(self.r, self.next) {
            Ok(Some(v)) => {
                self.next += 1;
                Some(Ok(v))
            }
            Ok(None) => {
                self.next = usize::MAX;
                None
            }
            Err(e) => {
                self.next = usize::MAX;
                Some(Err(e))
            }
        }
    }
}

impl Manager {
    /// A new managed list holding `init` (Python's `manager.list(init)`); `m.list::<T>([])` is
    /// an empty one (Python's `manager.list()`).
    pub fn list<T: Serialize>(&self, init: impl IntoIterator<Item = T>) -> Result<ListProxy<T>> {
        let items = init
            .into_iter()
            .map(|v| Encoded::of(&v))
            .collect::<Result<Vec<_>>>()?;
        self.create::<ListProxy<T>, _>(ListObj::TYPE_NAME, ListObj::FINGERPRINT, 0, &(items,))
    }
}
