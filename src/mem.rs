//! Buffers the runtime sizes from untrusted numbers: checked sizes and fallible allocation.

use crate::{Error, Result};

/// The product of `dims`, or an error naming the overflow.
pub(crate) fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::OutOfMemory(format!("buffer of {dims:?} elements overflows")))
}

/// A zero-filled buffer of `len` elements; allocation failure is an error, not an abort.
pub(crate) fn zeroed<T: Clone + bytemuck::Zeroable>(len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        Error::OutOfMemory(format!(
            "cannot allocate {len} x {} bytes",
            std::mem::size_of::<T>()
        ))
    })?;
    v.resize(len, T::zeroed());
    Ok(v)
}
