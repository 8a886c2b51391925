//! Buffers the runtime sizes from untrusted numbers: checked sizes and fallible allocation.

use crate::{Error, Result};

/// Fallible allocation of buffers sized by a file's numbers: the format crate's helpers,
/// one place for both crates. Their `FormatError::OutOfMemory` converts to
/// [`Error::OutOfMemory`].
pub(crate) use pipit_format::mem::{
    reserve, reserved, sort_by, sort_u32_by, try_collect, try_copy, try_vec,
};

/// The product of `dims`, or an error naming the overflow.
pub(crate) fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::OutOfMemory(format!("buffer of {dims:?} elements overflows")))
}

/// 64-bit FNV-1a of `bytes`, continuing from `h` (start with [`FNV_OFFSET`]).
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The FNV-1a offset basis.
pub const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// A zero-filled buffer of `len` elements; allocation failure is an error, not an abort.
/// The memory comes zeroed from the allocator (`calloc`-like), so a large buffer such as
/// the KV cache is not written here: the OS hands out zero pages as they are first used,
/// and an oversized cache costs nothing until it fills.
pub(crate) fn zeroed<T: Clone + bytemuck::Zeroable>(len: usize) -> Result<Vec<T>> {
    let oom = || {
        Error::OutOfMemory(format!(
            "cannot allocate {len} x {} bytes",
            std::mem::size_of::<T>()
        ))
    };
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| oom())?;
    if layout.size() == 0 {
        return Ok(vec![T::zeroed(); len]);
    }
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(oom());
    }
    // SAFETY: `ptr` comes from the global allocator with `Layout::array::<T>(len)`, the
    // layout of a `Vec<T>` of capacity `len`; its bytes are zero, a valid `T` (`Zeroable`),
    // so all `len` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}
