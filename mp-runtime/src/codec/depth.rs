//! A bound on how deeply a received value may nest.
//!
//! serde decodes a recursive type (a tree, a JSON-like value) by recursion, one stack frame
//! group per level, and postcard spends a byte or two per level: a 100 kB message from a
//! hostile or broken peer could otherwise overflow a thread's stack and kill the whole process
//! (SIGSEGV, not an error). Every value the codec decodes therefore goes through [`Limited`], a
//! transparent [`Deserializer`] wrapper that counts the sequences, maps, enums and options open
//! at once and fails with a typed error past the limit. Every level of a recursive type passes
//! through one of those (it needs a way to stop); structs, tuples and newtypes nest only as deep
//! as their type says, so they are not counted, which keeps plain data as fast as without the
//! limit.
//!
//! The count lives in one [`Budget`] per decode, passed down by reference: no thread-local
//! lookups, two cell updates per compound value.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// The nesting depth a received value may reach unless [`set_max_decode_depth`] says otherwise.
///
/// Far deeper than ordinary data (a `Vec<Option<HashMap<String, Vec<u8>>>>` is 4 levels), and
/// shallow enough to decode on a 2 MiB thread stack in a debug build.
pub const DEFAULT_MAX_DECODE_DEPTH: u32 = 256;

/// The largest limit [`set_max_decode_depth`] accepts: what a 2 MiB thread stack holds with
/// room to spare even in a debug build (about 2,500 levels of a small recursive type fit there).
pub const MAX_DECODE_DEPTH_CEILING: u32 = 1_000;

static MAX_DEPTH: AtomicU32 = AtomicU32::new(DEFAULT_MAX_DECODE_DEPTH);

/// Sets how deeply a value received by this process (from a `Connection`, a `Queue`, a pool's
/// arguments or results, a manager's requests) may nest before decoding fails with
/// [`Error::Codec`](crate::Error::Codec). Children started afterwards inherit the limit.
///
/// Each sequence (`Vec`, …), map, enum or `Option` inside another counts one level (structs,
/// tuples and newtypes do not: they cannot recurse on their own). Raise the
/// limit only for data that is legitimately deeper than [`DEFAULT_MAX_DECODE_DEPTH`] (a deep
/// tree, a parsed document); every level costs stack in the receiving thread, hence the ceiling
/// of [`MAX_DECODE_DEPTH_CEILING`].
///
/// ```
/// mp::set_max_decode_depth(1_000)?;
/// assert_eq!(mp::max_decode_depth(), 1_000);
/// # mp::set_max_decode_depth(mp::DEFAULT_MAX_DECODE_DEPTH)?;
/// # Ok::<(), mp::Error>(())
/// ```
pub fn set_max_decode_depth(depth: u32) -> crate::Result<()> {
    if depth == 0 || depth > MAX_DECODE_DEPTH_CEILING {
        return Err(crate::Error::InvalidArgument {
            message: format!(
                "max_decode_depth must be between 1 and {MAX_DECODE_DEPTH_CEILING}, not {depth}"
            ),
        });
    }
    MAX_DEPTH.store(depth, Ordering::Relaxed);
    Ok(())
}

/// The nesting depth this process accepts in received values (see [`set_max_decode_depth`]).
pub fn max_decode_depth() -> u32 {
    MAX_DEPTH.load(Ordering::Relaxed)
}

/// Installs the limit a child inherited from its parent (already checked there).
pub(crate) fn inherit_max_decode_depth(depth: u32) {
    if (1..=MAX_DECODE_DEPTH_CEILING).contains(&depth) {
        MAX_DEPTH.store(depth, Ordering::Relaxed);
    }
}

/// The levels one decode may still open, and whether it ran out.
pub(super) struct Budget {
    left: Cell<u32>,
    limit: u32,
    exceeded: Cell<bool>,
}

impl Budget {
    /// A budget of this process's current limit.
    pub(super) fn new() -> Self {
        Self::of(max_decode_depth())
    }

    /// A budget of `limit` levels.
    pub(super) fn of(limit: u32) -> Self {
        Budget {
            left: Cell::new(limit),
            limit,
            exceeded: Cell::new(false),
        }
    }

    /// The limit, if this decode ran past it.
    pub(super) fn exceeded(&self) -> Option<u32> {
        self.exceeded.get().then_some(self.limit)
    }

    fn enter<E: de::Error>(&self) -> Result<Level<'_>, E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(Level(self))
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom(format_args!(
                    "the value nests deeper than {} levels",
                    self.limit
                )))
            }
        }
    }
}

/// One open level; closing it gives the level back.
struct Level<'b>(&'b Budget);

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.0.left.set(self.0.left.get() + 1);
    }
}

/// A [`Deserializer`] that counts nesting against a [`Budget`] and otherwise does what `D` does.
pub(super) struct Limited<'b, D> {
    inner: D,
    budget: &'b Budget,
}

impl<'b, D> Limited<'b, D> {
    pub(super) fn new(inner: D, budget: &'b Budget) -> Self {
        Limited { inner, budget }
    }
}

/// Wraps a visitor so that what it is handed (sequences, maps, enums, inner deserializers) is
/// limited too.
struct Wrap<'b, T> {
    inner: T,
    budget: &'b Budget,
}

impl<'b, T> Wrap<'b, T> {
    fn new(inner: T, budget: &'b Budget) -> Self {
        Wrap { inner, budget }
    }
}

/// Deserializer methods for values that hold no others: forwarded as they are.
macro_rules! leaves {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(visitor)
        }
    )*};
}

/// Deserializer methods for fixed shapes: not counted, the visitor wrapped.
macro_rules! shapes {
    ($($method:ident($($arg:ident: $ty:ty),*))*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* Wrap::new(visitor, self.budget))
        }
    )*};
}

/// Deserializer methods for compound values: one level each, the visitor wrapped.
macro_rules! compounds {
    ($($method:ident($($arg:ident: $ty:ty),*))*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let _level = self.budget.enter::<D::Error>()?;
            self.inner.$method($($arg,)* Wrap::new(visitor, self.budget))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    leaves! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    // What a recursive type must pass through at every level (it needs a way to stop: a
    // variant, a `None`, an empty sequence or map): one level each.
    compounds! {
        deserialize_any()
        deserialize_ignored_any()
        deserialize_option()
        deserialize_seq()
        deserialize_map()
        deserialize_enum(name: &'static str, variants: &'static [&'static str])
    }

    // Fixed shapes, nested only as deep as their type says: not counted (they cost nothing on
    // the hot path of plain data), but what they hold is still limited.
    shapes! {
        deserialize_unit_struct(name: &'static str)
        deserialize_newtype_struct(name: &'static str)
        deserialize_tuple(len: usize)
        deserialize_tuple_struct(name: &'static str, len: usize)
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Visitor methods that receive a plain value: forwarded as they are.
macro_rules! plain_visits {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    plain_visits! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Limited::new(d, self.budget))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(Limited::new(d, self.budget))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(Wrap::new(seq, self.budget))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Wrap::new(map, self.budget))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Wrap::new(data, self.budget))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited::new(d, self.budget))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Wrap::new(seed, self.budget))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Wrap::new(seed, self.budget))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Wrap::new(seed, self.budget))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'b, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<'b, A> {
    type Error = A::Error;
    type Variant = Wrap<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.inner.variant_seed(Wrap::new(seed, self.budget))?;
        Ok((value, Wrap::new(variant, self.budget)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner
            .newtype_variant_seed(Wrap::new(seed, self.budget))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, Wrap::new(visitor, self.budget))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, Wrap::new(visitor, self.budget))
    }
}
