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

#[derive(Debug, Clone)]
struct Node {
    /// Children `(byte, node)`, sorted by byte.
    children: Vec<(u8, u32)>,
    /// Token ending here, or `NONE`.
    token: u32,
    /// Its priority (0 = first processed: longest, then lowest id).
    prio: u32,
}

/// A trie over the special tokens' texts.
#[derive(Debug, Clone)]
pub(crate) struct SpecialMatcher {
    nodes: Vec<Node>,
    /// Node reached from the root by each byte, or `NONE`.
    root: Box<[u32; 256]>,
    /// (token id, its text length) by priority.
    by_prio: Vec<(u32, u32)>,
}

impl SpecialMatcher {
    /// Builds the matcher from `(id, text)` of the special tokens; empty texts are ignored.
    pub(crate) fn new<'a>(specials: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        let mut list: Vec<(u32, &str)> = specials
            .into_iter()
            .filter(|(_, t)| !t.is_empty())
            .collect();
        list.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut nodes = vec![Node {
            children: Vec::new(),
            token: NONE,
            prio: NONE,
        }];
        let mut by_prio = Vec::with_capacity(list.len());
        for (prio, &(id, text)) in list.iter().enumerate() {
            let prio = u32::try_from(prio).unwrap_or(NONE);
            let mut node = 0usize;
            for &b in text.as_bytes() {
                node = match nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[node].children[i].1 as usize,
                    Err(i) => {
                        let child = nodes.len();
                        nodes.push(Node {
                            children: Vec::new(),
                            token: NONE,
                            prio: NONE,
                        });
                        nodes[node].children.insert(i, (b, child as u32));
                        child
                    }
                };
            }
            // Texts are unique per id; for duplicate texts the first in priority order wins,
            // as the later one never finds an unclaimed occurrence in llama.cpp either.
            if nodes[node].token == NONE {
                nodes[node].token = id;
                nodes[node].prio = prio;
            }
            by_prio.push((id, text.len() as u32));
        }
        let mut root = Box::new([NONE; 256]);
        for &(b, child) in &nodes[0].children {
            root[usize::from(b)] = child;
        }
        Self {
            nodes,
            root,
            by_prio,
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
            let n = &self.nodes[node as usize];
            if n.token != NONE && i <= end {
                best = Some((n.prio, i - pos));
            }
            if i >= end {
                break;
            }
            node = match n.children.binary_search_by_key(&text[i], |c| c.0) {
                Ok(k) => n.children[k].1,
                Err(_) => NONE,
            };
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
        let m = SpecialMatcher::new(specials.iter().copied());
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
        let m = SpecialMatcher::new(specials.iter().copied());
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
        let m = SpecialMatcher::new(std::iter::empty());
        assert_eq!(parts(&m, "abc"), ["'abc'"]);
    }
}
