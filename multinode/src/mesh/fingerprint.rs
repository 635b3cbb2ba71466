//! What a message between machines says of its type, so that a machine whose
//! message type differs (a deploy with a changed `M`) has its messages dropped
//! rather than decoded into garbage: postcard's bytes carry no type.

/// A fingerprint of `M`: its name and layout, hashed (FNV-1a, stable across
/// builds and Rust versions). A change to `M` that keeps both (two fields of
/// one type swapped, say) is not seen.
///
/// ```
/// use multinode::__private::fingerprint;
/// assert_ne!(fingerprint::of::<String>(), fingerprint::of::<u64>());
/// ```
pub fn of<M>() -> u32 {
    let name = std::any::type_name::<M>();
    let layout = [std::mem::size_of::<M>(), std::mem::align_of::<M>()];
    let mut hash: u32 = 0x811c_9dc5;
    let bytes = name
        .bytes()
        .chain(layout.iter().flat_map(|n| (*n as u64).to_le_bytes()));
    for byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    #[test]
    fn types_differ_by_name_or_layout_and_a_type_is_itself() {
        #[allow(dead_code)]
        struct Wider(u64, u64);
        assert_eq!(super::of::<String>(), super::of::<String>());
        assert_ne!(super::of::<String>(), super::of::<Vec<u8>>());
        assert_ne!(super::of::<(u64,)>(), super::of::<Wider>());
        assert_ne!(super::of::<u32>(), super::of::<i32>());
    }
}
