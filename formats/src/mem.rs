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

/// Sorts `v` by `cmp`, unstably. For cold code (model open, tokenizer and constraint
/// building): the standard sort is compiled once, for `u32` indices under a `dyn` order,
/// instead of once per element type (3-7 KB of the library each), and the elements are then
/// moved into place. Needs 4 bytes per element. Hot sorts (sampling, beams, per-step
/// constraint work) call the standard sort.
pub fn sort_by<T>(v: &mut [T], cmp: &mut dyn FnMut(&T, &T) -> Ordering) -> Result<(), FormatError> {
    let n = u32::try_from(v.len()).map_err(|_| oom::<u32>(v.len()))?;
    let mut order = try_vec::<u32>(v.len())?;
    order.extend(0..n);
    sort_u32_by(&mut order, &mut |i, j| cmp(&v[i as usize], &v[j as usize]));
    permute(v, &mut order);
    Ok(())
}

/// The standard unstable sort of `v` by `cmp`: the one copy every [`sort_by`] shares, and
/// what a list of ids sorted by what they stand for calls directly (no buffer).
#[inline(never)]
pub fn sort_u32_by(v: &mut [u32], cmp: &mut dyn FnMut(u32, u32) -> Ordering) {
    v.sort_unstable_by(|&i, &j| cmp(i, j));
}

/// Moves element `order[i]` of `v` to place `i`, for every `i`, by following each cycle of
/// the permutation once (`order` is left as the identity, which marks the places done).
fn permute<T>(v: &mut [T], order: &mut [u32]) {
    for start in 0..v.len() {
        let mut at = start;
        loop {
            let from = order[at] as usize;
            order[at] = at as u32;
            if from == start {
                break;
            }
            // `at` still holds the cycle's first element; place `at` takes `from`'s.
            v.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_by_sorts_by_the_order_given() {
        for n in [0u32, 1, 2, 3, 7, 16, 17, 33, 1000, 5000] {
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
                sort_by(&mut v, &mut |a, b| b.cmp(a)).unwrap();
                assert_eq!(v, want, "n = {n}, input {input:?}");
                // By a key that ties: sorted by the key, and the same elements.
                let mut v = input.clone();
                sort_by(&mut v, &mut |a, b| (a % 5).cmp(&(b % 5))).unwrap();
                assert!(v.windows(2).all(|w| w[0] % 5 <= w[1] % 5), "n = {n}");
                let (mut got, mut all) = (v, input);
                got.sort_unstable();
                all.sort_unstable();
                assert_eq!(got, all, "n = {n}");
            }
        }
    }

    #[test]
    fn permute_moves_each_element_to_its_place() {
        for n in [0usize, 1, 2, 3, 10, 257] {
            // A permutation with cycles of several lengths and fixed points.
            let order: Vec<u32> = (0..n).map(|i| ((i * 7 + 3) % n.max(1)) as u32).collect();
            let mut v: Vec<usize> = (100..100 + n).collect();
            let want: Vec<usize> = order.iter().map(|&i| 100 + i as usize).collect();
            let mut o = order.clone();
            permute(&mut v, &mut o);
            assert_eq!(v, want, "n = {n}");
            assert!(o.iter().enumerate().all(|(i, &j)| i == j as usize));
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
