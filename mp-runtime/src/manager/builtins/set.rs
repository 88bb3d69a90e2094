//! A managed set (Python 3.14's `Manager().set()`): elements compared by their encoding, so
//! plain values (no handles, no proxies).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::super::managed::{Call, Managed, Out, Shared};
use super::super::protocol::RemoteError;
use super::super::value::Encoded;
use super::{Key, Refused, builtin, call_answer, decode_key, key, lock, proxy_type};
use crate::error::Result;
use crate::manager::Manager;

/// The server's set: element encodings, in the order of their bytes.
#[derive(Default)]
pub(crate) struct SetObj {
    elements: Mutex<BTreeSet<Vec<u8>>>,
}

const SET_LEN: u16 = 0;
const SET_ADD: u16 = 1;
const SET_REMOVE: u16 = 2;
const SET_DISCARD: u16 = 3;
const SET_CONTAINS: u16 = 4;
const SET_POP: u16 = 5;
const SET_CLEAR: u16 = 6;
const SET_TO_VEC: u16 = 7;
const SET_COMBINE: u16 = 8;
const SET_COMBINE_IN_PLACE: u16 = 9;
const SET_COMPARE: u16 = 10;

/// A set operation, with the elements of the other operand.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum SetOp {
    Union,
    Intersection,
    Difference,
    SymmetricDifference,
}

/// A relation between the set and the other operand.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum SetRel {
    Subset,
    Superset,
    Disjoint,
}

fn combine(op: SetOp, a: &BTreeSet<Vec<u8>>, b: &BTreeSet<Vec<u8>>) -> BTreeSet<Vec<u8>> {
    match op {
        SetOp::Union => a.union(b).cloned().collect(),
        SetOp::Intersection => a.intersection(b).cloned().collect(),
        SetOp::Difference => a.difference(b).cloned().collect(),
        SetOp::SymmetricDifference => a.symmetric_difference(b).cloned().collect(),
    }
}

fn keys(set: BTreeSet<Vec<u8>>) -> Vec<Key> {
    set.into_iter().map(Key).collect()
}

impl Managed for SetObj {
    builtin!(
        SetObj,
        "mp::manager::Set",
        [
            "Set::len",
            "Set::add",
            "Set::remove",
            "Set::discard",
            "Set::contains",
            "Set::pop",
            "Set::clear",
            "Set::to_vec",
            "Set::combine",
            "Set::combine_in_place",
            "Set::compare",
        ]
    );

    fn dispatch(this: &Shared<Self>, method: u16, call: &mut Call<'_>) -> Result<Out, RemoteError> {
        let name = Self::METHODS
            .get(method as usize)
            .copied()
            .unwrap_or("Set::?");
        match method {
            SET_LEN => call.read(this, name, |s, ()| lock(&s.elements).len()),
            SET_ADD => call.read(this, name, |s, (k,): (Key,)| lock(&s.elements).insert(k.0)),
            SET_REMOVE => call.read(this, name, |s, (k,): (Key,)| {
                if lock(&s.elements).remove(&k.0) {
                    Ok(())
                } else {
                    Err(Refused::Argument(
                        "the managed set holds no element equal to the one given (Python's \
                         KeyError); use discard to ignore a missing element"
                            .into(),
                    ))
                }
            }),
            SET_DISCARD => call.read(this, name, |s, (k,): (Key,)| lock(&s.elements).remove(&k.0)),
            SET_CONTAINS => call.read(this, name, |s, (k,): (Key,)| {
                lock(&s.elements).contains(&k.0)
            }),
            SET_POP => call.read(this, name, |s, ()| lock(&s.elements).pop_first().map(Key)),
            SET_CLEAR => call.read(this, name, |s, ()| lock(&s.elements).clear()),
            SET_TO_VEC => call.read(this, name, |s, ()| keys(lock(&s.elements).clone())),
            SET_COMBINE => call.read(this, name, |s, (op, other): (SetOp, Vec<Key>)| {
                let other: BTreeSet<Vec<u8>> = other.into_iter().map(|k| k.0).collect();
                keys(combine(op, &lock(&s.elements), &other))
            }),
            SET_COMBINE_IN_PLACE => call.read(this, name, |s, (op, other): (SetOp, Vec<Key>)| {
                let other: BTreeSet<Vec<u8>> = other.into_iter().map(|k| k.0).collect();
                let mut elements = lock(&s.elements);
                *elements = combine(op, &elements, &other);
            }),
            SET_COMPARE => call.read(this, name, |s, (rel, other): (SetRel, Vec<Key>)| {
                let other: BTreeSet<Vec<u8>> = other.into_iter().map(|k| k.0).collect();
                let elements = lock(&s.elements);
                match rel {
                    SetRel::Subset => elements.is_subset(&other),
                    SetRel::Superset => elements.is_superset(&other),
                    SetRel::Disjoint => elements.is_disjoint(&other),
                }
            }),
            other => Err(call.no_such_method::<Self>(other)),
        }
    }

    fn construct(_ctor: u16, call: &mut Call<'_>) -> Result<Self, RemoteError> {
        call.construct("Set::new", |(elements,): (Vec<Key>,)| SetObj {
            elements: Mutex::new(elements.into_iter().map(|k| k.0).collect()),
        })
    }
}

proxy_type!(
    /// A proxy of a managed set (Python 3.14's `SetProxy`). Elements are compared by their
    /// encoding, so they are plain values: no handles, no proxies.
    ///
    /// The set algebra takes any [`SetOperand`]: a slice, an array, a `Vec`, a `BTreeSet` or
    /// `HashSet`, or another `SetProxy`; the plain forms return a `Vec` (Python's `s | t`
    /// returns a plain set), the `_update` forms change this set in place (`s |= t`). The order
    /// of elements is that of their encodings, not of insertion.
    ///
    /// ```
    /// # fn main() -> mp::Result<()> {
    /// let m = mp::Manager::start()?;
    /// let s = m.set_from([1u32, 2, 3])?;
    /// assert!(s.add(&4)?);
    /// assert!(!s.add(&4)?);
    /// assert_eq!(s.intersection(&[2, 4, 6])?, vec![2, 4]);
    /// s.difference_update(&[1, 2])?;
    /// assert!(s.is_subset(&[3, 4, 5])?);
    /// assert!(matches!(s.remove(&9), Err(mp::Error::InvalidArgument { .. })));
    /// assert!(!s.discard(&9)?);
    /// # Ok(())
    /// # }
    /// ```
    SetProxy<T>,
    "Set"
);

/// The other operand of a set operation: its elements, encoded as set elements are.
pub trait SetOperand<T> {
    /// The encodings of the elements.
    #[doc(hidden)]
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>>;
}

fn encode_all<'a, T: Serialize + 'a>(
    items: impl IntoIterator<Item = &'a T>,
) -> Result<Vec<Vec<u8>>> {
    items.into_iter().map(|v| Encoded::key(v)).collect()
}

impl<T: Serialize> SetOperand<T> for [T] {
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>> {
        encode_all(self)
    }
}

impl<T: Serialize, const N: usize> SetOperand<T> for [T; N] {
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>> {
        encode_all(self)
    }
}

impl<T: Serialize> SetOperand<T> for Vec<T> {
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>> {
        encode_all(self)
    }
}

impl<T: Serialize> SetOperand<T> for BTreeSet<T> {
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>> {
        encode_all(self)
    }
}

impl<T: Serialize, S> SetOperand<T> for HashSet<T, S> {
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>> {
        encode_all(self)
    }
}

/// Another managed set: its elements are read first (one call), so the operation sees them
/// as they were then.
impl<T> SetOperand<T> for SetProxy<T> {
    fn encoded_elements(&self) -> Result<Vec<Vec<u8>>> {
        let ks: Vec<Key> = self.r.call(SET_TO_VEC, &())?;
        Ok(ks.into_iter().map(|k| k.0).collect())
    }
}

fn operand<T, O: SetOperand<T> + ?Sized>(other: &O) -> Result<Vec<Key>> {
    Ok(other.encoded_elements()?.into_iter().map(Key).collect())
}

impl<T: Serialize + DeserializeOwned> SetProxy<T> {
    /// The number of elements (Python's `len(s)`).
    pub fn len(&self) -> Result<usize> {
        self.r.call(SET_LEN, &())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Adds `value`; true if it was not there yet.
    pub fn add(&self, value: &T) -> Result<bool> {
        self.r.call(SET_ADD, &(key(value)?,))
    }

    /// Removes `value`; [`Error::InvalidArgument`] if it is not there (Python's `KeyError`).
    ///
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    pub fn remove(&self, value: &T) -> Result<()> {
        call_answer(&self.r, SET_REMOVE, &(key(value)?,))
    }

    /// Removes `value` if it is there; true if it was.
    pub fn discard(&self, value: &T) -> Result<bool> {
        self.r.call(SET_DISCARD, &(key(value)?,))
    }

    /// Whether `value` is in the set (Python's `v in s`).
    pub fn contains(&self, value: &T) -> Result<bool> {
        self.r.call(SET_CONTAINS, &(key(value)?,))
    }

    /// Removes and returns an element; `None` if the set is empty (Python raises `KeyError`).
    pub fn pop(&self) -> Result<Option<T>> {
        let k: Option<Key> = self.r.call(SET_POP, &())?;
        k.map(decode_key).transpose()
    }

    /// Removes every element.
    pub fn clear(&self) -> Result<()> {
        self.r.call(SET_CLEAR, &())
    }

    /// Copies of the elements (Python's `set(s)` or `s.copy()`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let ks: Vec<Key> = self.r.call(SET_TO_VEC, &())?;
        ks.into_iter().map(decode_key).collect()
    }

    fn combine<O: SetOperand<T> + ?Sized>(&self, op: SetOp, other: &O) -> Result<Vec<T>> {
        let ks: Vec<Key> = self.r.call(SET_COMBINE, &(op, operand(other)?))?;
        ks.into_iter().map(decode_key).collect()
    }

    fn combine_in_place<O: SetOperand<T> + ?Sized>(&self, op: SetOp, other: &O) -> Result<()> {
        self.r.call(SET_COMBINE_IN_PLACE, &(op, operand(other)?))
    }

    fn compare<O: SetOperand<T> + ?Sized>(&self, rel: SetRel, other: &O) -> Result<bool> {
        self.r.call(SET_COMPARE, &(rel, operand(other)?))
    }

    /// The elements of either (Python's `s | t`).
    pub fn union<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.combine(SetOp::Union, other)
    }

    /// The elements of both (`s & t`).
    pub fn intersection<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.combine(SetOp::Intersection, other)
    }

    /// The elements of this set not in `other` (`s - t`).
    pub fn difference<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.combine(SetOp::Difference, other)
    }

    /// The elements of exactly one of them (`s ^ t`).
    pub fn symmetric_difference<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<Vec<T>> {
        self.combine(SetOp::SymmetricDifference, other)
    }

    /// Adds the elements of `other` (`s |= t`).
    pub fn update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.combine_in_place(SetOp::Union, other)
    }

    /// Keeps only the elements also in `other` (`s &= t`).
    pub fn intersection_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.combine_in_place(SetOp::Intersection, other)
    }

    /// Removes the elements of `other` (`s -= t`).
    pub fn difference_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.combine_in_place(SetOp::Difference, other)
    }

    /// Keeps the elements of exactly one of them (`s ^= t`).
    pub fn symmetric_difference_update<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<()> {
        self.combine_in_place(SetOp::SymmetricDifference, other)
    }

    /// Whether every element is in `other` (`s <= t`).
    pub fn is_subset<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        self.compare(SetRel::Subset, other)
    }

    /// Whether every element of `other` is in this set (`s >= t`).
    pub fn is_superset<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        self.compare(SetRel::Superset, other)
    }

    /// Whether they have no element in common.
    pub fn is_disjoint<O: SetOperand<T> + ?Sized>(&self, other: &O) -> Result<bool> {
        self.compare(SetRel::Disjoint, other)
    }
}

impl Manager {
    /// A new, empty managed set (Python's `manager.set()`).
    pub fn set<T>(&self) -> Result<SetProxy<T>> {
        self.create::<SetProxy<T>, _>(
            SetObj::TYPE_NAME,
            SetObj::FINGERPRINT,
            0,
            &(Vec::<Key>::new(),),
        )
    }

    /// A new managed set holding the elements of `init` (Python's `manager.set(iterable)`).
    pub fn set_from<T: Serialize>(&self, init: impl IntoIterator<Item = T>) -> Result<SetProxy<T>> {
        let elements = init
            .into_iter()
            .map(|v| key(&v))
            .collect::<Result<Vec<_>>>()?;
        self.create::<SetProxy<T>, _>(SetObj::TYPE_NAME, SetObj::FINGERPRINT, 0, &(elements,))
    }
}
