//! Recognition of special tokens (control, user-defined, unknown) in raw text, as
//! llama.cpp's `tokenizer_st_partition` does with `parse_special = true`.
//!
//! llama.cpp takes the special tokens longest first and, for each one, splits every
//! remaining text fragment at its leftmost non-overlapping occurrences. A longer token
//! therefore wins over a shorter one anywhere in the text, not only at the same position.
//! This module gives the same result without a pass per token: a trie finds the longest
//! special token at each position; candidates are taken from a heap in llama.cpp's order
//! (priority, then position); a candidate overlapping a taken one is replaced by the
//! longest shorter match at its position that still fits, or dropped.

use crate::mem::{reserved, sort_by, try_collect, try_vec};
use crate::Result;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

const NONE: u32 = u32::MAX;

/// One piece of partitioned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Ordinary text, a byte range of the input.
    Text(Range<usize>),
    /// A special token.
    Special(u32),
}

/// A trie over the special tokens' texts, stored flat: the children of a node are
/// consecutive nodes, found by binary search on their bytes. About 13 bytes per node (at
/// most one node per byte of special text, `MAX_SPECIAL_BYTES` in all), no allocation per
/// node, and depth at most `MAX_SPECIAL_TOKEN_LEN`, which bounds the walk from any position.
#[derive(Debug, Clone)]
pub(crate) struct SpecialMatcher {
    /// Byte on the edge into each node (unused for the root, node 0).
    byte: Vec<u8>,
    /// First child of each node; its children are `first[n]..first[n] + count[n]`.
    first: Vec<u32>,
    /// Number of children of each node.
    count: Vec<u16>,
    /// Priority of the token ending at each node, or `NONE`.
    prio: Vec<u32>,
    /// Node reached from the root by each byte, or `NONE`.
    root: Box<[u32; 256]>,
    /// (token id, its text length) by priority.
    by_prio: Vec<(u32, u32)>,
}

impl SpecialMatcher {
    /// Builds the matcher from `(id, text)` of the special tokens; empty texts are ignored.
    /// Every table is allocated once, at its final size; failure is `OutOfMemory`.
    pub(crate) fn new<'a>(specials: impl IntoIterator<Item = (u32, &'a str)>) -> Result<Self> {
        let mut list: Vec<(u32, &str)> =
            try_collect(specials.into_iter().filter(|(_, t)| !t.is_empty()))?;
        // Priority: longest first, then lowest id (llama.cpp's order). Keys are distinct
        // (ids are), so an unstable sort gives the one order.
        sort_by(&mut list, &mut |a, b| {
            b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0))
        })?;
        let by_prio = try_collect(list.iter().map(|&(id, t)| (id, t.len() as u32)))?;
        // Texts in byte order (ties by priority), so that the texts below any trie node are
        // a contiguous range of `sorted` and its children are runs of equal next bytes.
        let mut sorted: Vec<(&[u8], u32)> = try_collect(
            list.iter()
                .enumerate()
                .map(|(p, &(_, t))| (t.as_bytes(), u32::try_from(p).unwrap_or(NONE))),
        )?;
        sort_by(&mut sorted, &mut |a, b| a.cmp(b))?;
        // One node per distinct prefix: the root, plus each text's bytes past its longest
        // common prefix with the text before it in byte order.
        let n_nodes = 1 + sorted
            .iter()
            .enumerate()
            .map(|(i, (t, _))| {
                let prev: &[u8] = if i == 0 { &[] } else { sorted[i - 1].0 };
                t.len() - t.iter().zip(prev).take_while(|(a, b)| a == b).count()
            })
            .sum::<usize>();
        /// A node table with room for every node, holding the root's `init`.
        fn table<T>(n_nodes: usize, init: T) -> Result<Vec<T>> {
            let mut v = try_vec(n_nodes)?;
            v.push(init);
            Ok(v)
        }
        let mut m = SpecialMatcher {
            byte: table(n_nodes, 0)?,
            first: table(n_nodes, 0)?,
            count: table(n_nodes, 0)?,
            prio: table(n_nodes, NONE)?,
            root: Box::new([NONE; 256]),
            by_prio,
        };
        // Breadth first: (node, depth, range of `sorted` below it). A node's children are
        // appended together, so they are consecutive. The queue holds parts of two levels
        // at most, each of at most one node per text.
        let mut queue = std::collections::VecDeque::new();
        let most = 2 * sorted.len() + 1;
        reserved(queue.try_reserve(most), most)?;
        queue.push_back((0usize, 0usize, 0..sorted.len()));
        while let Some((node, depth, range)) = queue.pop_front() {
            let mut i = range.start;
            // Texts ending here come first in byte order; for duplicate texts the first in
            // priority order wins, as the later one never finds an unclaimed occurrence in
            // llama.cpp either.
            while i < range.end && sorted[i].0.len() == depth {
                if m.prio[node] == NONE {
                    m.prio[node] = sorted[i].1;
                }
                i += 1;
            }
            m.first[node] = m.byte.len() as u32;
            while i < range.end {
                let b = sorted[i].0[depth];
                let mut j = i + 1;
                while j < range.end && sorted[j].0[depth] == b {
                    j += 1;
                }
                let child = m.byte.len();
                m.byte.push(b);
                m.first.push(0);
                m.count.push(0);
                m.prio.push(NONE);
                m.count[node] += 1;
                if node == 0 {
                    m.root[usize::from(b)] = child as u32;
                }
                queue.push_back((child, depth + 1, i..j));
                i = j;
            }
        }
        debug_assert_eq!(m.byte.len(), n_nodes, "trie nodes counted exactly");
        Ok(m)
    }

    /// Bytes this matcher holds on the heap.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.byte.capacity()
            + 4 * self.first.capacity()
            + 2 * self.count.capacity()
            + 4 * self.prio.capacity()
            + 256 * 4
            + 8 * self.by_prio.capacity()
    }

    /// The child of `node` on byte `b`, or `NONE`.
    fn child(&self, node: usize, b: u8) -> u32 {
        let lo = self.first[node] as usize;
        let kids = &self.byte[lo..lo + usize::from(self.count[node])];
        match kids.binary_search(&b) {
            Ok(k) => (lo + k) as u32,
            Err(_) => NONE,
        }
    }

    /// Whether there are no special tokens at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_prio.is_empty()
    }

    /// The longest special token starting at `text[pos..]` and at most `max_len` bytes
    /// long: `(priority, length)`.
    fn longest_at(&self, text: &[u8], pos: usize, max_len: usize) -> Option<(u32, usize)> {
        let end = text.len().min(pos.saturating_add(max_len));
        let first = *text.get(pos)?;
        let mut node = self.root[usize::from(first)];
        let mut best = None;
        let mut i = pos + 1;
        while node != NONE {
            let n = node as usize;
            if self.prio[n] != NONE && i <= end {
                best = Some((self.prio[n], i - pos));
            }
            if i >= end {
                break;
            }
            node = self.child(n, text[i]);
            i += 1;
        }
        best
    }

    /// Splits `text` into text fragments and special tokens, in order.
    pub(crate) fn partition(&self, text: &str, out: &mut Vec<Fragment>) {
        out.clear();
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return;
        }
        if self.is_empty() {
            out.push(Fragment::Text(0..bytes.len()));
            return;
        }
        let mut heap = BinaryHeap::new();
        for pos in 0..bytes.len() {
            if self.root[usize::from(bytes[pos])] == NONE {
                continue;
            }
            if let Some((prio, _)) = self.longest_at(bytes, pos, usize::MAX) {
                heap.push(Reverse((prio, pos)));
            }
        }
        if heap.is_empty() {
            out.push(Fragment::Text(0..bytes.len()));
            return;
        }
        let mut covered = vec![false; bytes.len()];
        let mut taken: Vec<(usize, usize, u32)> = Vec::new();
        while let Some(Reverse((prio, pos))) = heap.pop() {
            if covered[pos] {
                continue;
            }
            let (id, len) = self.by_prio[prio as usize];
            let len = len as usize;
            match covered[pos..pos + len].iter().position(|&c| c) {
                None => {
                    covered[pos..pos + len].fill(true);
                    taken.push((pos, len, id));
                }
                Some(room) => {
                    if let Some((p, _)) = self.longest_at(bytes, pos, room) {
                        heap.push(Reverse((p, pos)));
                    }
                }
            }
        }
        taken.sort_unstable_by_key(|t| t.0);
        let mut at = 0;
        for (pos, len, id) in taken {
            if pos > at {
                out.push(Fragment::Text(at..pos));
            }
            out.push(Fragment::Special(id));
            at = pos + len;
        }
        if at < bytes.len() {
            out.push(Fragment::Text(at..bytes.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(m: &SpecialMatcher, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        m.partition(text, &mut out);
        out.iter()
            .map(|f| match f {
                Fragment::Text(r) => format!("'{}'", &text[r.clone()]),
                Fragment::Special(id) => format!("#{id}"),
            })
            .collect()
    }

    /// llama.cpp's algorithm, literally: one pass per token, longest first.
    fn reference(specials: &[(u32, &str)], text: &str) -> Vec<String> {
        let mut list = specials.to_vec();
        list.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut frags: Vec<Result<(usize, usize), u32>> = vec![Ok((0, text.len()))];
        if text.is_empty() {
            frags.clear();
        }
        for (id, tok) in list {
            let mut next = Vec::new();
            for f in frags {
                match f {
                    Err(id) => next.push(Err(id)),
                    Ok((mut a, b)) => {
                        while let Some(m) = text[a..b].find(tok) {
                            if m > 0 {
                                next.push(Ok((a, a + m)));
                            }
                            next.push(Err(id));
                            a += m + tok.len();
                        }
                        if a < b {
                            next.push(Ok((a, b)));
                        }
                    }
                }
            }
            frags = next;
        }
        frags
            .into_iter()
            .map(|f| match f {
                Ok((a, b)) => format!("'{}'", &text[a..b]),
                Err(id) => format!("#{id}"),
            })
            .collect()
    }

    #[test]
    fn longest_wins_anywhere() {
        let specials = [
            (1, "abc"),
            (2, "bcde"),
            (3, "<s>"),
            (4, "  "),
            (5, "   "),
            (6, "e"),
        ];
        let m = SpecialMatcher::new(specials.iter().copied()).unwrap();
        assert_eq!(parts(&m, "xabcdey"), ["'xa'", "#2", "'y'"]);
        assert_eq!(parts(&m, "abcab"), ["#1", "'ab'"]);
        assert_eq!(parts(&m, "     "), ["#5", "#4"]);
        assert_eq!(parts(&m, ""), Vec::<String>::new());
        for text in [
            "xabcdey",
            "abcab",
            "     ",
            " ",
            "a<s>b<s><s>",
            "abcdeabcde e",
            "eee",
            "ab cde  abc   bcde",
            "<s<s>>",
            "abcbcde",
            "bcdebcde",
            "abcde   e",
        ] {
            assert_eq!(parts(&m, text), reference(&specials, text), "{text:?}");
        }
    }

    #[test]
    fn matches_reference_on_random_texts() {
        let specials = [
            (10, "aab"),
            (11, "ab"),
            (12, "ba"),
            (13, "bab"),
            (14, "b"),
            (15, "aaaa"),
            (16, "abab"),
        ];
        let m = SpecialMatcher::new(specials.iter().copied()).unwrap();
        let mut state = 12345u64;
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (state >> 60) as usize + 1;
            let mut text = String::new();
            let mut s = state;
            for _ in 0..len {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                text.push(['a', 'b', 'c'][((s >> 33) % 3) as usize]);
            }
            assert_eq!(parts(&m, &text), reference(&specials, &text), "{text:?}");
        }
    }

    #[test]
    fn no_specials() {
        let m = SpecialMatcher::new(std::iter::empty()).unwrap();
        assert_eq!(parts(&m, "abc"), ["'abc'"]);
    }

    /// Issue 13 row 5: a text of 1 MiB against the longest special token the format allows
    /// (and one byte shorter) takes one trie walk of at most that length per position, not
    /// a walk to the end of the text: this finished in hours before (quadratic).
    #[test]
    fn long_text_against_longest_token_is_linear() {
        let long = "a".repeat(pipit_format::limits::MAX_SPECIAL_TOKEN_LEN as usize);
        let m = SpecialMatcher::new([(7, long.as_str()), (8, &long[1..])]).unwrap();
        let text = "a".repeat((1 << 20) - 1);
        let mut out = Vec::new();
        m.partition(&text, &mut out);
        let n = text.len() / long.len();
        assert_eq!(out.len(), n + 1);
        assert!(out[..n].iter().all(|f| *f == Fragment::Special(7)));
        assert_eq!(out[n], Fragment::Special(8)); // the last 255 bytes
    }

    /// Issue 13 row 6: the trie took about 85 bytes per byte of special text (5.1 GB for
    /// 60 MiB). Now the format caps the special text at `MAX_SPECIAL_BYTES` and the flat trie
    /// takes at most 12 bytes per byte of it, plus fixed tables.
    #[test]
    fn trie_memory_is_small_per_special_byte() {
        let max = pipit_format::limits::MAX_SPECIAL_TOKEN_LEN as usize;
        let total = pipit_format::limits::MAX_SPECIAL_BYTES as usize;
        // Distinct texts sharing no prefix beyond their first bytes: one node per byte.
        let texts: Vec<String> = (0..total / max)
            .map(|i| {
                let mut t = format!("{i:08x}");
                t.push_str(&"z".repeat(max - t.len()));
                t
            })
            .collect();
        let m = SpecialMatcher::new(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| (i as u32, t.as_str())),
        )
        .unwrap();
        let per_byte = m.heap_bytes() as f64 / total as f64;
        assert!(per_byte < 12.0, "{per_byte:.1} bytes per special byte");
        let mut out = Vec::new();
        m.partition(&format!("x{}y", texts[5]), &mut out);
        assert_eq!(out, [Fragment::Text(0..1), Fragment::Special(5), Fragment::Text(257..258)]);
    }
}
