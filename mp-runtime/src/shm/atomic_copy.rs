//! Copies in and out of shared memory that other threads and processes may write at the same
//! time, made of atomic accesses so that they are never a data race.
//!
//! A plain copy (`ptr::read`, `copy_nonoverlapping`) racing with a write from another thread is
//! undefined behaviour, and `read_volatile` does not change that. Relaxed atomic loads and
//! stores cost the same as plain moves on the targets `mp` runs on; what they cannot give is a
//! copy of several units at once, so a value may be *torn* (part old, part new) — which a `Pod`
//! type survives as some valid value.
//!
//! Atomic accesses of different sizes to the same bytes must not race either. Each kind of
//! memory therefore uses one unit everywhere: a `RawValue<T>`/`RawArray<T>` element is copied in
//! units of `min(align_of::<T>(), 8)` bytes (every handle of one object has the same `T` layout,
//! checked on receipt), a `SharedMemory` byte by byte.

use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;

/// The access unit for `T`: its alignment, at most 8 bytes. It divides `size_of::<T>()` (a
/// size is a multiple of the alignment), and every element of `T` in memory is aligned to it.
const fn unit<T>() -> usize {
    if align_of::<T>() >= 8 {
        8
    } else {
        align_of::<T>()
    }
}

macro_rules! units {
    ($atomic:ty, $int:ty, $n:expr, $src:expr, $bytes:expr, load) => {
        for (k, chunk) in $bytes.chunks_exact_mut($n).enumerate() {
            // SAFETY: (the caller's contract) `src` points to an element aligned to `$n` that
            // is only accessed atomically in units of `$n`; unit `k` is inside the element.
            let a = unsafe { <$atomic>::from_ptr(($src as *mut $int).add(k)) };
            chunk.copy_from_slice(&a.load(Ordering::Relaxed).to_ne_bytes());
        }
    };
    ($atomic:ty, $int:ty, $n:expr, $dst:expr, $bytes:expr, store) => {
        for (k, chunk) in $bytes.chunks_exact($n).enumerate() {
            let v = <$int>::from_ne_bytes(chunk.try_into().unwrap_or_default());
            // SAFETY: as for loads.
            let a = unsafe { <$atomic>::from_ptr(($dst as *mut $int).add(k)) };
            a.store(v, Ordering::Relaxed);
        }
    };
}

/// A copy of the `T` at `src`.
///
/// # Safety
/// `src` is valid for reads and writes of a `T` and aligned for it, for the whole call; in this
/// process that memory is only accessed through [`load`] and [`store`] of the same `T` layout
/// (other processes may do anything to it).
pub(crate) unsafe fn load<T: Pod>(src: *const T) -> T {
    let mut value = T::zeroed();
    let bytes = bytemuck::bytes_of_mut(&mut value);
    match unit::<T>() {
        8 => units!(AtomicU64, u64, 8, src, bytes, load),
        4 => units!(AtomicU32, u32, 4, src, bytes, load),
        2 => units!(AtomicU16, u16, 2, src, bytes, load),
        _ => units!(AtomicU8, u8, 1, src, bytes, load),
    }
    value
}

/// Writes `value` at `dst`.
///
/// # Safety
/// As for [`load`].
pub(crate) unsafe fn store<T: Pod>(dst: *mut T, value: T) {
    let bytes = bytemuck::bytes_of(&value);
    match unit::<T>() {
        8 => units!(AtomicU64, u64, 8, dst, bytes, store),
        4 => units!(AtomicU32, u32, 4, dst, bytes, store),
        2 => units!(AtomicU16, u16, 2, dst, bytes, store),
        _ => units!(AtomicU8, u8, 1, dst, bytes, store),
    }
}

/// Copies `dst.len()` bytes from `src` into `dst`, one atomic byte at a time.
///
/// # Safety
/// `src` is valid for reads and writes of `dst.len()` bytes for the whole call; in this process
/// those bytes are only accessed through [`copy_out`] and [`copy_in`].
pub(crate) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    for (i, b) in dst.iter_mut().enumerate() {
        // SAFETY: byte `i` is inside the range (caller's contract); AtomicU8 has alignment 1.
        *b = unsafe { AtomicU8::from_ptr(src.add(i) as *mut u8) }.load(Ordering::Relaxed);
    }
}

/// Copies `src` to `dst`, one atomic byte at a time.
///
/// # Safety
/// As for [`copy_out`], with `src.len()` bytes at `dst`.
pub(crate) unsafe fn copy_in(src: &[u8], dst: *mut u8) {
    for (i, b) in src.iter().enumerate() {
        // SAFETY: as in `copy_out`.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(*b, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Odd {
        a: [u8; 3],
    }

    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Pair {
        x: f64,
        y: u32,
        z: u32,
    }

    fn round_trip<T: Pod + PartialEq + std::fmt::Debug>(v: T) {
        let mut slot = T::zeroed();
        // SAFETY: `slot` is a local T only accessed through `store` and `load` here.
        unsafe {
            store(&mut slot, v);
            assert_eq!(load(&slot), v);
        }
    }

    #[test]
    fn every_unit_size_round_trips() {
        round_trip(0xAAu8);
        round_trip(-2i16);
        round_trip(1.5f32);
        round_trip(u64::MAX - 3);
        round_trip(u128::MAX / 3);
        round_trip([1u16, 2, 3]);
        round_trip(Odd { a: [1, 2, 3] });
        round_trip(Pair {
            x: -0.25,
            y: 7,
            z: 9,
        });
        round_trip(());
    }

    #[test]
    fn byte_copies_round_trip() {
        let mut mem = [0u8; 16];
        // SAFETY: `mem` is a local buffer of 16 bytes only accessed through these copies.
        unsafe {
            copy_in(b"hello", mem.as_mut_ptr().add(3));
            let mut out = [0u8; 5];
            copy_out(mem.as_ptr().add(3), &mut out);
            assert_eq!(&out, b"hello");
        }
    }
}
