//! The element layout that `Value` and `Array` record in their header, checked when another
//! process sends one: its `T` must be laid out as ours, and its elements must fit its memory.

/// Stops at compile time a `T` aligned beyond the data area's alignment.
pub(super) const fn assert_alignment<T>() {
    assert!(
        align_of::<T>() <= crate::sync::object::DATA_OFFSET,
        "types aligned to more than 256 bytes cannot live in mp shared memory"
    );
}

/// Checks a received object (a `what`) that records `count` elements of `size` bytes aligned
/// to `align` in a data area of `data_len` bytes: the layout must be `T`'s and the elements
/// must fit. Returns the element count.
pub(super) fn check_received<T>(
    size: u32,
    align: u32,
    count: u64,
    data_len: usize,
    what: &str,
) -> Result<usize, String> {
    if size as usize != size_of::<T>() || align as usize != align_of::<T>() {
        return Err(format!(
            "the {what} received holds elements of {size} bytes (alignment {align}), not `{}` \
             ({} bytes, alignment {})",
            std::any::type_name::<T>(),
            size_of::<T>(),
            align_of::<T>()
        ));
    }
    usize::try_from(count)
        .ok()
        .filter(|n| n.checked_mul(size_of::<T>()).is_some_and(|b| b <= data_len))
        .ok_or_else(|| {
            format!(
                "the {what} received is truncated: {count} elements of {} bytes do not fit in \
                 its {data_len} bytes of shared memory",
                size_of::<T>()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::check_received;

    #[test]
    fn a_matching_layout_that_fits_is_accepted() {
        assert_eq!(check_received::<u32>(4, 4, 3, 12, "array"), Ok(3));
        assert_eq!(check_received::<u64>(8, 8, 1, 4096, "value"), Ok(1));
    }

    #[test]
    fn another_element_type_is_refused() {
        let e = check_received::<u64>(4, 4, 1, 4096, "value").unwrap_err();
        assert!(e.contains("4 bytes (alignment 4), not `u64`"), "{e}");
    }

    #[test]
    fn elements_beyond_the_memory_are_refused() {
        let e = check_received::<u32>(4, 4, 4, 12, "array").unwrap_err();
        assert!(e.starts_with("the array received is truncated"), "{e}");
        // A count whose byte size overflows.
        assert!(check_received::<u32>(4, 4, u64::MAX, 12, "array").is_err());
    }
}
