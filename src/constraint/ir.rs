//! The one grammar IR every input compiles into: rules whose bodies are byte-level regular
//! expressions that may reference other rules. Regexes are one rule; JSON Schema and GBNF
//! give several, recursion included.

use crate::Error;

/// A set of bytes, one bit per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByteSet(pub [u64; 4]);

impl ByteSet {
    /// The set of the bytes `lo..=hi`.
    pub fn range(lo: u8, hi: u8) -> Self {
        let mut s = ByteSet::default();
        for b in lo..=hi {
            s.insert(b);
        }
        s
    }
    /// The set of one byte.
    pub fn byte(b: u8) -> Self {
        ByteSet::range(b, b)
    }
    pub fn insert(&mut self, b: u8) {
        self.0[(b >> 6) as usize] |= 1 << (b & 63);
    }
    pub fn remove(&mut self, b: u8) {
        self.0[(b >> 6) as usize] &= !(1 << (b & 63));
    }
    pub fn contains(&self, b: u8) -> bool {
        self.0[(b >> 6) as usize] >> (b & 63) & 1 == 1
    }
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
}

/// A rule body.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// One byte out of the set.
    Bytes(ByteSet),
    /// The parts one after the other; empty = the empty string.
    Seq(Vec<Expr>),
    /// One of the parts; empty = nothing (no string matches).
    Alt(Vec<Expr>),
    /// `min..=max` repetitions (`None` = unbounded).
    Repeat(Box<Expr>, u32, Option<u32>),
    /// Another rule, by index.
    Ref(usize),
    /// JSON-style members: each item in order, required ones always, optional ones maybe,
    /// with `sep` between two items that are present (linear in the items, not 2^n).
    SepList(Vec<(Expr, bool)>, Box<Expr>),
}

impl Expr {
    /// The empty string.
    pub fn empty() -> Expr {
        Expr::Seq(Vec::new())
    }
    /// The bytes of `s`, literally.
    pub fn lit(s: &[u8]) -> Expr {
        if s.len() == 1 {
            return Expr::Bytes(ByteSet::byte(s[0]));
        }
        Expr::Seq(s.iter().map(|&b| Expr::Bytes(ByteSet::byte(b))).collect())
    }
    /// `e?`
    pub fn opt(e: Expr) -> Expr {
        Expr::Repeat(Box::new(e), 0, Some(1))
    }
    /// `e{min,max}`
    pub fn rep(e: Expr, min: u32, max: Option<u32>) -> Expr {
        Expr::Repeat(Box::new(e), min, max)
    }
}

/// Largest repetition count accepted in `{m,n}` (the compiled size is bounded separately).
pub const MAX_REPEAT: u32 = 10_000;

/// A grammar: rules, the root, and which rules stay separate (not inlined) so that their
/// states, and so their cached token masks, are shared by every use.
#[derive(Debug, Clone, Default)]
pub struct Grammar {
    pub rules: Vec<Expr>,
    pub names: Vec<String>,
    pub keep: Vec<bool>,
    pub root: usize,
}

impl Grammar {
    /// Adds a rule and returns its index.
    pub fn add(&mut self, name: &str, body: Expr) -> usize {
        self.rules.push(body);
        self.names.push(name.to_string());
        self.keep.push(false);
        self.rules.len() - 1
    }
}

/// An inclusive range of Unicode scalar values.
pub type CharRange = (u32, u32);

/// The ranges of scalar values not in `ranges` (surrogates excluded).
pub fn negate(ranges: &[CharRange]) -> Vec<CharRange> {
    let mut r: Vec<CharRange> = ranges.to_vec();
    // The standard sort of `(u32, u32)`, which the mask computation compiles anyway.
    r.sort_unstable();
    let mut out = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in r {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi.saturating_add(1));
    }
    if next <= 0x10FFFF {
        out.push((next, 0x10FFFF));
    }
    out
}

/// The UTF-8 encodings of the scalar values in `ranges`, as byte-level alternatives.
pub fn utf8_class(ranges: &[CharRange]) -> Expr {
    let mut alts = Vec::new();
    let mut ascii = ByteSet::default();
    for &(lo, hi) in ranges {
        // Surrogates are not scalar values.
        let (lo, hi) = (lo.min(0x10FFFF), hi.min(0x10FFFF));
        if lo > hi {
            continue;
        }
        for (a, b) in [(lo, hi.min(0xD7FF)), (lo.max(0xE000), hi)] {
            if a <= b {
                utf8_range(a, b, &mut alts, &mut ascii);
            }
        }
    }
    if !ascii.is_empty() {
        alts.insert(0, Expr::Bytes(ascii));
    }
    if alts.len() == 1 {
        return alts.pop().unwrap_or_else(|| Expr::Alt(Vec::new()));
    }
    Expr::Alt(alts)
}

/// Appends the byte sequences of `lo..=hi` (no surrogates inside): split at the encoded
/// length boundaries, then at continuation-byte boundaries, until each piece is a product
/// of byte ranges.
fn utf8_range(lo: u32, hi: u32, out: &mut Vec<Expr>, ascii: &mut ByteSet) {
    const MAX: [u32; 4] = [0x7F, 0x7FF, 0xFFFF, 0x10FFFF];
    for (n, &m) in MAX.iter().enumerate() {
        let start = if n == 0 { 0 } else { MAX[n - 1] + 1 };
        if lo <= m && hi >= start && lo.max(start) <= hi.min(m) {
            let (a, b) = (lo.max(start), hi.min(m));
            if n == 0 {
                for c in a..=b {
                    ascii.insert(c as u8);
                }
            } else {
                split(a, b, n + 1, out);
            }
        }
    }
}

/// Splits `a..=b` (all encoded in `len` bytes) into byte-range products.
fn split(a: u32, b: u32, len: usize, out: &mut Vec<Expr>) {
    for i in 1..len {
        let m = (1u32 << (6 * i)) - 1;
        if a & !m != b & !m {
            if a & m != 0 {
                split(a, a | m, len, out);
                split((a | m) + 1, b, len, out);
                return;
            }
            if b & m != m {
                split(a, (b & !m) - 1, len, out);
                split(b & !m, b, len, out);
                return;
            }
        }
    }
    let ea = encode(a, len);
    let eb = encode(b, len);
    out.push(Expr::Seq(
        (0..len)
            .map(|i| Expr::Bytes(ByteSet::range(ea[i], eb[i])))
            .collect(),
    ));
}

fn encode(c: u32, _len: usize) -> [u8; 4] {
    let mut buf = [0u8; 4];
    match char::from_u32(c) {
        Some(ch) => {
            ch.encode_utf8(&mut buf);
        }
        None => debug_assert!(false, "surrogate {c:x} reached utf8 encode"),
    }
    buf
}

/// Every Unicode scalar value.
pub fn any_char() -> Expr {
    utf8_class(&[(0, 0x10FFFF)])
}

/// A literal string, UTF-8.
pub fn lit_str(s: &str) -> Expr {
    Expr::lit(s.as_bytes())
}

/// The error for an input nested deeper than the parsers allow.
pub fn too_deep(what: &str) -> Error {
    Error::InvalidArgument(format!("{what} nested more than {MAX_NEST} levels"))
}

/// Deepest nesting of groups/values a parser accepts (their recursion is bounded by it).
pub const MAX_NEST: usize = 200;

/// Removes `b` from every byte set of `e` (used to keep raw `"` and `\` out of a JSON
/// string's pattern: the language only shrinks).
pub fn remove_bytes(e: &mut Expr, drop: &ByteSet) {
    match e {
        Expr::Bytes(s) => {
            for i in 0..4 {
                s.0[i] &= !drop.0[i];
            }
        }
        Expr::Seq(v) | Expr::Alt(v) => v.iter_mut().for_each(|x| remove_bytes(x, drop)),
        Expr::Repeat(x, _, _) => remove_bytes(x, drop),
        Expr::Ref(_) => {}
        Expr::SepList(items, sep) => {
            items.iter_mut().for_each(|(x, _)| remove_bytes(x, drop));
            remove_bytes(sep, drop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(e: &Expr, s: &[u8]) -> bool {
        // Tiny backtracking matcher over the restricted forms utf8_class builds.
        fn m<'a>(e: &Expr, s: &'a [u8]) -> Vec<&'a [u8]> {
            match e {
                Expr::Bytes(b) => match s.first() {
                    Some(&c) if b.contains(c) => vec![&s[1..]],
                    _ => vec![],
                },
                Expr::Seq(v) => {
                    let mut cur = vec![s];
                    for x in v {
                        cur = cur.into_iter().flat_map(|r| m(x, r)).collect();
                    }
                    cur
                }
                Expr::Alt(v) => v.iter().flat_map(|x| m(x, s)).collect(),
                _ => unreachable!(),
            }
        }
        m(e, s).iter().any(|r| r.is_empty())
    }

    #[test]
    fn utf8_class_matches_exactly_its_chars() {
        let ranges = [
            (0x41, 0x5A),
            (0x3041, 0x309F),
            (0x7FF, 0x801),
            (0x1F600, 0x1F64F),
        ];
        let e = utf8_class(&ranges);
        for c in (0u32..0x20000)
            .step_by(7)
            .chain([0x41, 0x5A, 0x7FF, 0x800, 0x801, 0x3041])
        {
            let Some(ch) = char::from_u32(c) else {
                continue;
            };
            let mut buf = [0u8; 4];
            let enc = ch.encode_utf8(&mut buf).as_bytes();
            let inside = ranges.iter().any(|&(a, b)| a <= c && c <= b);
            assert_eq!(accepts(&e, enc), inside, "U+{c:X}");
        }
        let neg = utf8_class(&negate(&[(0x22, 0x22), (0x5C, 0x5C), (0, 0x1F)]));
        assert!(accepts(&neg, "é".as_bytes()));
        assert!(!accepts(&neg, b"\""));
        assert!(!accepts(&neg, &[0xED, 0xA0, 0x80]), "surrogate");
    }
}
