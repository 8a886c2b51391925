//! Fallible allocation for buffers sized by a file's numbers (issue 13): each is reserved
//! with `try_reserve_exact`, so a failed allocation is [`FormatError::OutOfMemory`], never
//! an abort. The runtime uses these same helpers (`pipit`'s `mem` module re-exports them),
//! and [`sort_by`], the one sort its cold code shares.

use std::cmp::Ordering;

use crate::FormatError;

/// The error for `n` elements of `T` that could not be allocated.
fn oom<T>(n: usize) -> FormatError {
    FormatError::OutOfMemory {
        bytes: u64::try_from(n)
            .unwrap_or(u64::MAX)
            .saturating_mul(std::mem::size_of::<T>() as u64),
    }
}

/// Makes room in `v` for `additional` more elements, exactly.
pub fn reserve<T>(v: &mut Vec<T>, additional: usize) -> Result<(), FormatError> {
    v.try_reserve_exact(additional)
        .map_err(|_| oom::<T>(additional))
}

/// An empty vector with room for `n` elements.
pub fn try_vec<T>(n: usize) -> Result<Vec<T>, FormatError> {
    let mut v = Vec::new();
    reserve(&mut v, n)?;
    Ok(v)
}

/// A copy of `s`.
pub fn try_copy<T: Clone>(s: &[T]) -> Result<Vec<T>, FormatError> {
    let mut v = try_vec(s.len())?;
    v.extend_from_slice(s);
    Ok(v)
}

/// The items of `it`: in one allocation when it knows its length (an `ExactSizeIterator`),
/// else growing by doubling.
pub fn try_collect<I: Iterator>(it: I) -> Result<Vec<I::Item>, FormatError> {
    let mut v = try_vec(it.size_hint().0)?;
    for x in it {
        if v.len() == v.capacity() {
            let more = v.len().max(4);
            reserve(&mut v, more)?;
        }
        v.push(x);
    }
    Ok(v)
}

/// A copy of `s`.
pub fn try_string(s: &str) -> Result<String, FormatError> {
    let mut out = String::new();
    out.try_reserve_exact(s.len())
        .map_err(|_| oom::<u8>(s.len()))?;
    out.push_str(s);
    Ok(out)
}

/// Makes room in a hash set or map for `additional` more entries (`try_reserve` of
/// `HashSet` and `HashMap`, whose error this maps).
pub fn reserved<E>(r: Result<(), E>, additional: usize) -> Result<(), FormatError> {
    r.map_err(|_| oom::<(usize, usize)>(additional))
}

/// Sorts `v` by `cmp`, unstably and without a buffer. For cold code (model open, tokenizer and
/// constraint building): one heapsort over a `dyn` view of the slice is compiled for every
/// element type and order, where the standard sort costs 3-7 KB of the library per element
/// type. Hot sorts (sampling, beams, per-step constraint work) call the standard sort.
pub fn sort_by<T>(v: &mut [T], cmp: &mut dyn FnMut(&T, &T) -> Ordering) {
    heapsort(&mut Slice { v, cmp });
}

/// A sequence seen through its order and its swaps.
trait Seq {
    fn len(&self) -> usize;
    /// Whether element `i` comes before element `j`.
    fn less(&mut self, i: usize, j: usize) -> bool;
    fn swap(&mut self, i: usize, j: usize);
}

struct Slice<'a, T> {
    v: &'a mut [T],
    cmp: &'a mut dyn FnMut(&T, &T) -> Ordering,
}

impl<T> Seq for Slice<'_, T> {
    fn len(&self) -> usize {
        self.v.len()
    }
    fn less(&mut self, i: usize, j: usize) -> bool {
        (self.cmp)(&self.v[i], &self.v[j]) == Ordering::Less
    }
    fn swap(&mut self, i: usize, j: usize) {
        self.v.swap(i, j);
    }
}

/// Heapsort: a max-heap of the whole sequence, then its largest element moved to the end,
/// one at a time. O(n log n) comparisons whatever the input, no recursion.
#[inline(never)]
fn heapsort(s: &mut dyn Seq) {
    let n = s.len();
    for start in (0..n / 2).rev() {
        sift_down(s, start, n);
    }
    for end in (1..n).rev() {
        s.swap(0, end);
        sift_down(s, 0, end);
    }
}

/// Restores the heap below `root` within the first `end` elements.
fn sift_down(s: &mut dyn Seq, mut root: usize, end: usize) {
    loop {
        // `root` is below `end`, a slice's length, so this overflows only for zero-sized types.
        let Some(mut child) = root.checked_mul(2).and_then(|c| c.checked_add(1)) else {
            return;
        };
        if child >= end {
            return;
        }
        if child + 1 < end && s.less(child, child + 1) {
            child += 1;
        }
        if !s.less(root, child) {
            return;
        }
        s.swap(root, child);
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_by_sorts_by_the_order_given() {
        for n in [0u32, 1, 2, 3, 7, 33, 1000] {
            let inputs: [Vec<u32>; 4] = [
                (0..n).map(|i| i.wrapping_mul(2_654_435_761) % 97).collect(),
                (0..n).collect(),
                (0..n).rev().collect(),
                vec![5; n as usize],
            ];
            for input in inputs {
                let mut v = input.clone();
                let mut want = input.clone();
                want.sort_unstable_by(|a, b| b.cmp(a));
                sort_by(&mut v, &mut |a, b| b.cmp(a));
                assert_eq!(v, want, "n = {n}, input {input:?}");
                // By a key that ties: sorted by the key, and the same elements.
                let mut v = input.clone();
                sort_by(&mut v, &mut |a, b| (a % 5).cmp(&(b % 5)));
                assert!(v.windows(2).all(|w| w[0] % 5 <= w[1] % 5), "n = {n}");
                let (mut got, mut all) = (v, input);
                got.sort_unstable();
                all.sort_unstable();
                assert_eq!(got, all, "n = {n}");
            }
        }
    }

    #[test]
    fn an_impossible_size_is_an_error_not_an_abort() {
        assert!(matches!(
            try_vec::<u64>(usize::MAX / 4),
            Err(FormatError::OutOfMemory { .. })
        ));
        let mut v = vec![1u8];
        assert!(reserve(&mut v, usize::MAX).is_err());
        assert_eq!(v, [1]);
    }

    #[test]
    fn helpers_copy_and_collect_exactly() {
        assert_eq!(try_copy(&[1, 2, 3]).unwrap(), [1, 2, 3]);
        assert!(try_copy::<u8>(&[]).unwrap().is_empty());
        let v = try_collect((0..5).map(|i| i * 2)).unwrap();
        assert_eq!((v.as_slice(), v.capacity()), (&[0, 2, 4, 6, 8][..], 5));
        let odd = try_collect((0..9).filter(|i| i % 2 == 1)).unwrap();
        assert_eq!(odd, [1, 3, 5, 7]);
        assert_eq!(try_string("héllo").unwrap(), "héllo");
    }
}
