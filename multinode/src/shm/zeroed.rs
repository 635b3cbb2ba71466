//! Zeroed views for the unit tests, without a segment.

/// A `T` of atomics only, all zero, on the heap (the board is too large for the
/// stack).
pub(crate) fn zeroed<T>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    // SAFETY: only used for the shared views, whose fields are atomics (and
    // arrays of them), for which all zeroes is a valid value; the allocation
    // has `T`'s layout, so the box frees it rightly.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<T>();
        assert!(!ptr.is_null(), "out of memory");
        Box::from_raw(ptr)
    }
}
