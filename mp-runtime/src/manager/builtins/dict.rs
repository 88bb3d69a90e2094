//! A managed dict (Python's `Manager().dict()`): insertion-ordered, keys compared by their
//! encoding.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::proxy::{ObjRef, Proxy, deserialize_proxy, serialize_proxy};
use super::super::value::{Encoded, Received, Stored};
use super::{apply, builtin, label};
use crate::error::Result;
use crate::manager::Manager;
use crate::worker::Worker;

/// The server's dict: entries by key, and their order of insertion.
#[derive(Default)]
pub(crate) struct DictObj {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<Vec<u8>, (u64, Stored)>,
    order: BTreeMap<u64, Vec<u8>>,
    next: u64,
}

impl Entries {
    fn insert(&mut self, key: Vec<u8>, value: Stored) -> Option<Stored> {
        match self.by_key.get_mut(&key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                let seq = self.next;
                self.next += 1;
                self.order.insert(seq, key.clone());
                self.by_key.insert(key, (seq, value));
                None
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Stored> {
        let (seq, v) = self.by_key.remove(key)?;
        self.order.remove(&seq);
        Some(v)
    }

    fn items(&self) -> Result<Vec<(Vec<u8>, Stored)>, RemoteError> {
        self.order
            .values()
            .map(|k| {
                let v = self.by_key[k]
                    .1
                    .try_clone()
                    .map_err(|e| RemoteError::State(e.to_string()))?;
                Ok((k.clone(), v))
            })
            .collect()
    }
}

const LEN: u16 = 0;
const GET: u16 = 1;
const SET: u16 = 2;
const INSERT: u16 = 3;
const REMOVE: u16 = 4;
const CONTAINS: u16 = 5;
const KEYS: u16 = 6;
const VALUES: u16 = 7;
const ITEMS: u16 = 8;
const CLEAR: u16 = 9;
const UPDATE: u16 = 10;
const SETDEFAULT: u16 = 11;
const POPITEM: u16 = 12;
const MODIFY: u16 = 13;
const MERGE: u16 = 14;

/// A key as it travels: its encoding (serialized as bytes).
#[derive(Serialize, Deserialize)]
struct Key(#[serde(with = "serde_bytes")] Vec<u8>);

fn cloned(v: Option<&Stored>) -> Result<Option<Stored>, RemoteError> {
    v.map(|s| s.try_clone().map_err(|e| RemoteError::State(e.to_string())))
        .transpose()
}

impl Managed for DictObj {
    const KEEPS_DECODED: bool = true;
    builtin!(
        DictObj,
        "mp::manager::Dict",
        [
            "Dict::len",
            "Dict::get",
            "Dict::set",
            "Dict::insert",
            "Dict::remove",
            "Dict::contains_key",
            "Dict::keys",
            "Dict::values",
            "Dict::items",
            "Dict::clear",
            "Dict::update",
            "Dict::setdefault",
            "Dict::popitem",
            "Dict::modify",
            "Dict::merge_with",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Dict::?");
        match method {
            LEN => call.read(this, name, |d, ()| d.lock().by_key.len()),
            GET => call.read_try(this, name, |d, (k,): (Key,)| {
                cloned(d.lock().by_key.get(&k.0).map(|e| &e.1))
            }),
            SET => call.read(this, name, |d, (k, v): (Key, Stored)| {
                let old = d.lock().insert(k.0, v);
                drop(old);
            }),
            INSERT => call.read(this, name, |d, (k, v): (Key, Stored)| {
                d.lock().insert(k.0, v)
            }),
            REMOVE => call.read(this, name, |d, (k,): (Key,)| d.lock().remove(&k.0)),
            CONTAINS => call.read(this, name, |d, (k,): (Key,)| {
                d.lock().by_key.contains_key(&k.0)
            }),
            KEYS => call.read(this, name, |d, ()| {
                d.lock()
                    .order
                    .values()
                    .cloned()
                    .map(Key)
                    .collect::<Vec<_>>()
            }),
            VALUES => call.read_try(this, name, |d, ()| {
                let items = d.lock().items()?;
                Ok(items.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
            }),
            ITEMS => call.read_try(this, name, |d, ()| {
                let items = d.lock().items()?;
                Ok(items
                    .into_iter()
                    .map(|(k, v)| (Key(k), v))
                    .collect::<Vec<_>>())
            }),
            CLEAR => call.read(this, name, |d, ()| {
                let old = std::mem::take(&mut *d.lock());
                drop(old);
            }),
            UPDATE => call.read(this, name, |d, (items,): (Vec<(Key, Stored)>,)| {
                let mut e = d.lock();
                let old: Vec<_> = items
                    .into_iter()
                    .filter_map(|(k, v)| e.insert(k.0, v))
                    .collect();
                drop(e);
                drop(old);
            }),
            SETDEFAULT => call.read_try(this, name, |d, (k, v): (Key, Stored)| {
                let mut e = d.lock();
                if let Some((_, existing)) = e.by_key.get(&k.0) {
                    return existing
                        .try_clone()
                        .map_err(|e| RemoteError::State(e.to_string()));
                }
                let copy = v
                    .try_clone()
                    .map_err(|e| RemoteError::State(e.to_string()))?;
                e.insert(k.0, v);
                Ok(copy)
            }),
            POPITEM => call.read(this, name, |d, ()| {
                let mut e = d.lock();
                let last = e.order.last_key_value().map(|(_, k)| k.clone())?;
                e.remove(&last).map(|v| (Key(last), v))
            }),
            MODIFY => call.read_try(this, name, |d, (k, worker, extra): (Key, String, Key)| {
                let mut e = d.lock();
                let Some((_, v)) = e.by_key.get_mut(&k.0) else {
                    return Ok(None);
                };
                let new = apply(&worker, v, &extra.0)?;
                let copy = new
                    .try_clone()
                    .map_err(|e| RemoteError::State(e.to_string()))?;
                let old = std::mem::replace(v, new);
                drop(e);
                drop(old);
                Ok(Some(copy))
            }),
            MERGE => call.read_try(
                this,
                name,
                |d, (items, worker, default): (Vec<(Key, Key)>, String, Key)| {
                    let old = merge(&mut d.lock(), items, &worker, default.0)?;
                    drop(old);
                    Ok(())
                },
            ),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Dict::new", |()| DictObj::default())
    }
}

/// Sets each key of `items` to `worker(value, arg)`, where `value` is the key's value (the
/// result of an earlier item of the same key, or `default` for a key not in the dict). All or
/// nothing: the first error leaves the dict as it was. Returns the values replaced, to drop
/// after the dict's lock.
fn merge(
    e: &mut Entries,
    items: Vec<(Key, Key)>,
    worker: &str,
    default: Vec<u8>,
) -> Result<Vec<Stored>, RemoteError> {
    let default = Stored::from_bytes(default);
    let mut new: Vec<(Vec<u8>, Stored)> = Vec::new();
    let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
    for (k, arg) in items {
        let i = at.get(&k.0).copied();
        let current = match i {
            Some(i) => &new[i].1,
            None => e.by_key.get(&k.0).map_or(&default, |(_, v)| v),
        };
        let value = apply(worker, current, &arg.0)?;
        match i {
            Some(i) => new[i].1 = value,
            None => {
                at.insert(k.0.clone(), new.len());
                new.push((k.0, value));
            }
        }
    }
    Ok(new
        .into_iter()
        .filter_map(|(k, v)| e.insert(k, v))
        .collect())
}

impl DictObj {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A proxy of a managed dict (Python's `DictProxy`): `K` and `V` are any `serde` types, and
/// values may be other proxies (`DictProxy<String, ListProxy<u32>>`), changed in place through
/// them.
///
/// `get` returns a copy; to change a value where it lives, use a nested proxy, or
/// [`modify`](DictProxy::modify) with a registered function. Keys are compared by their
/// encoding, so two keys that are equal as values are one key.
///
/// ```
/// # fn main() -> mp::Result<()> {
/// let m = mp::Manager::start()?;
/// let d = m.dict::<String, u32>()?;
/// d.set(&"a".into(), &1)?;
/// assert_eq!(d.get(&"a".into())?, Some(1));
/// assert_eq!(d.get(&"b".into())?, None);
/// assert_eq!(d.remove(&"a".into())?, Some(1));
/// assert!(d.is_empty()?);
/// # Ok(())
/// # }
/// ```
pub struct DictProxy<K, V> {
    r: ObjRef,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            r: self.r.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DictProxy({:?})", self.r)
    }
}

impl<K, V> Proxy for DictProxy<K, V> {
    fn label() -> String {
        label(
            "Dict",
            &[std::any::type_name::<K>(), std::any::type_name::<V>()],
        )
    }
    fn from_ref(r: ObjRef) -> Self {
        DictProxy {
            r,
            _types: PhantomData,
        }
    }
    fn obj_ref(&self) -> &ObjRef {
        &self.r
    }
}

impl<K, V> Serialize for DictProxy<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_proxy(self, s)
    }
}

impl<'de, K, V> Deserialize<'de> for DictProxy<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        deserialize_proxy(d)
    }
}

fn key<K: Serialize>(k: &K) -> Result<Key> {
    Encoded::key(k).map(Key)
}

fn decode_opt<V: DeserializeOwned>(r: Option<Received>) -> Result<Option<V>> {
    r.map(Received::decode).transpose()
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The number of entries (Python's `len(d)`).
    pub fn len(&self) -> Result<usize> {
        self.r.call(LEN, &())
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of the value for `key` (Python's `d.get(k)`).
    pub fn get(&self, key_: &K) -> Result<Option<V>> {
        decode_opt(self.r.call(GET, &(key(key_)?,))?)
    }

    /// Sets `key` to `value` (Python's `d[k] = v`).
    pub fn set(&self, key_: &K, value: &V) -> Result<()> {
        self.r.call(SET, &(key(key_)?, Encoded::of(value)?))
    }

    /// Sets `key` to `value` and returns the value it replaces.
    pub fn insert(&self, key_: &K, value: &V) -> Result<Option<V>> {
        decode_opt(self.r.call(INSERT, &(key(key_)?, Encoded::of(value)?))?)
    }

    /// Removes `key` and returns its value (Python's `d.pop(k, None)`).
    pub fn remove(&self, key_: &K) -> Result<Option<V>> {
        decode_opt(self.r.call(REMOVE, &(key(key_)?,))?)
    }

    /// Whether `key` is in the dict (Python's `k in d`).
    pub fn contains_key(&self, key_: &K) -> Result<bool> {
        self.r.call(CONTAINS, &(key(key_)?,))
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        let keys: Vec<Key> = self.r.call(KEYS, &())?;
        keys.into_iter()
            .map(|k| crate::codec::decode(&k.0, Vec::new()))
            .collect()
    }

    /// Copies of the values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        let values: Vec<Received> = self.r.call(VALUES, &())?;
        values.into_iter().map(Received::decode).collect()
    }

    /// Copies of the entries, in insertion order (Python's `d.items()`, or `d.copy()`).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let items: Vec<(Key, Received)> = self.r.call(ITEMS, &())?;
        items
            .into_iter()
            .map(|(k, v)| Ok((crate::codec::decode(&k.0, Vec::new())?, v.decode()?)))
            .collect()
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.r.call(CLEAR, &())
    }

    /// Sets every `(key, value)` of `items`, in one call (Python's `d.update(...)`).
    pub fn update<'a>(&self, items: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        let items = items
            .into_iter()
            .map(|(k, v)| Ok((key(k)?, Encoded::of(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.r.call(UPDATE, &(items,))
    }

    /// The value of `key`, first setting it to `default` if absent (Python's `setdefault`).
    pub fn setdefault(&self, key_: &K, default: &V) -> Result<V> {
        let v: Received = self
            .r
            .call(SETDEFAULT, &(key(key_)?, Encoded::of(default)?))?;
        v.decode()
    }

    /// Removes and returns the most recently inserted entry (Python's `popitem()`).
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        let item: Option<(Key, Received)> = self.r.call(POPITEM, &())?;
        item.map(|(k, v)| Ok((crate::codec::decode(&k.0, Vec::new())?, v.decode()?)))
            .transpose()
    }

    /// Replaces the value of `key` with `worker(value)`, run in the server under the dict's
    /// lock, and returns the new value (`None` if `key` is absent, and nothing runs). Several
    /// processes modifying one entry lose no update, unlike Python's `d[k] = f(d[k])`.
    ///
    /// The worker is a `#[mp::worker] fn(V) -> V`; it cannot be given a value that holds handles
    /// or proxies. A worker that returns `Err` leaves the value as it was
    /// ([`Error::TaskFailed`](crate::Error::TaskFailed)).
    ///
    /// While the worker runs, every other call on this dict, from any process, waits for it
    /// (that is what makes the update atomic); other objects of the manager are served as
    /// usual. Keep such workers short: a worker that blocks holds the dict for as long.
    pub fn modify<W: Worker<Args = (V,), Output = V>>(
        &self,
        key_: &K,
        worker: W,
    ) -> Result<Option<V>> {
        let v: Option<Received> = self
            .r
            .call(MODIFY, &(key(key_)?, worker.name(), Key(Vec::new())))?;
        decode_opt(v)
    }

    /// Sets each key of `items` to `worker(value, arg)` in the server, in one call: `value` is
    /// the key's value, or `default` for a key not in the dict (and the result of the previous
    /// item for a key given twice). The batched form of [`modify_with`](DictProxy::modify_with)
    /// plus `setdefault`, for counting or summing many keys at once: one round trip instead of
    /// two per key. All or nothing: a worker that fails (or panics) leaves the dict as it was
    /// ([`Error::TaskFailed`](crate::Error::TaskFailed)); values holding handles or proxies
    /// cannot be merged.
    ///
    /// For other server-side updates, a `#[mp::managed]` type of your own (say, a word counter
    /// with a `merge(&mut self, HashMap<String, u64>)` method) runs any code in one call.
    ///
    /// ```
    /// #[mp::worker]
    /// fn add(count: u64, more: u64) -> u64 {
    ///     count + more
    /// }
    ///
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let counts = m.dict::<String, u64>()?;
    /// counts.set(&"a".into(), &5)?;
    /// let words = ["a", "b", "a"].map(String::from);
    /// counts.merge_with(words.iter().map(|w| (w, &1)), add, &0)?;
    /// assert_eq!(counts.get(&"a".into())?, Some(7));
    /// assert_eq!(counts.get(&"b".into())?, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn merge_with<'a, A, W>(
        &self,
        items: impl IntoIterator<Item = (&'a K, &'a A)>,
        worker: W,
        default: &V,
    ) -> Result<()>
    where
        K: 'a,
        A: Serialize + 'a,
        W: Worker<Args = (V, A), Output = V>,
    {
        let items = items
            .into_iter()
            .map(|(k, a)| Ok((key(k)?, Key(Encoded::key(a)?))))
            .collect::<Result<Vec<_>>>()?;
        let default = Key(Encoded::key(default)?);
        self.r.call(MERGE, &(items, worker.name(), default))
    }

    /// Like [`modify`](DictProxy::modify) with an extra argument: `worker(value, arg)`.
    pub fn modify_with<A: Serialize, W: Worker<Args = (V, A), Output = V>>(
        &self,
        key_: &K,
        worker: W,
        arg: &A,
    ) -> Result<Option<V>> {
        let extra = Encoded::key(arg)?;
        let v: Option<Received> = self
            .r
            .call(MODIFY, &(key(key_)?, worker.name(), Key(extra)))?;
        decode_opt(v)
    }
}

impl Manager {
    /// A new managed dict (Python's `manager.dict()`).
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>> {
        self.create::<DictProxy<K, V>, _>(DictObj::TYPE_NAME, DictObj::FINGERPRINT, 0, &())
    }
}
