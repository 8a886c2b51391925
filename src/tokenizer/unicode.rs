//! Code point classes for the pre-tokenizers, and GPT-2's byte <-> code point mapping.

use super::unicode_tables::{ASCII, RANGES};

pub(crate) use super::unicode_tables::{LETTER, NUMBER, PUNCTUATION, WHITESPACE};

/// Set for every code point inside the text being split, so that "no class" (an unassigned
/// or symbol code point) differs from "past the end" (0), as in llama.cpp's flags.
pub(crate) const ANY: u8 = 0x80;

/// Class bits of `c` (`LETTER`, `NUMBER`, `WHITESPACE`, `PUNCTUATION`) plus [`ANY`].
#[inline]
pub(crate) fn flags(c: char) -> u8 {
    let cp = u32::from(c);
    let f = match ASCII.get(cp as usize) {
        Some(&f) => f,
        None => match RANGES.binary_search_by(|&(lo, hi, _)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }) {
            Ok(i) => RANGES[i].2,
            Err(_) => 0,
        },
    };
    f | ANY
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68
/// bytes for U+0100.. in byte order.
const fn byte_to_cp_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable =
            (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if printable {
            t[b] = b as u32;
        } else {
            t[b] = 256 + n;
            n += 1;
        }
        b += 1;
    }
    t
}

const BYTE_TO_CP: [u32; 256] = byte_to_cp_table();

/// Inverse of `BYTE_TO_CP` over U+0000..U+0143; 0xFFFF marks code points that stand for no byte.
const fn cp_to_byte_table() -> [u16; 0x144] {
    let mut t = [0xFFFFu16; 0x144];
    let mut b = 0usize;
    while b < 256 {
        t[BYTE_TO_CP[b] as usize] = b as u16;
        b += 1;
    }
    t
}

const CP_TO_BYTE: [u16; 0x144] = cp_to_byte_table();

/// The code point GPT-2's byte-level BPE writes for byte `b`.
#[inline]
pub(crate) fn byte_to_char(b: u8) -> char {
    // Every table entry is below U+0144, a valid scalar value.
    char::from_u32(BYTE_TO_CP[usize::from(b)]).unwrap_or('\u{FFFD}')
}

/// The byte a GPT-2 byte-level code point stands for, `None` if `c` is not one of them.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let b = *CP_TO_BYTE.get(u32::from(c) as usize)?;
    u8::try_from(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(flags('a'), LETTER | ANY);
        assert_eq!(flags('Z'), LETTER | ANY);
        assert_eq!(flags('7'), NUMBER | ANY);
        assert_eq!(flags(' '), WHITESPACE | ANY);
        assert_eq!(flags('\n'), WHITESPACE | ANY);
        assert_eq!(flags('!'), PUNCTUATION | ANY);
        assert_eq!(flags('$'), ANY);
        assert_eq!(flags('é'), LETTER | ANY);
        assert_eq!(flags('你'), LETTER | ANY);
        assert_eq!(flags('，'), PUNCTUATION | ANY);
        assert_eq!(flags('²'), NUMBER | ANY);
        assert_eq!(flags('Ⅻ'), NUMBER | ANY);
        assert_eq!(flags('٣'), NUMBER | ANY);
        assert_eq!(flags('\u{00A0}'), WHITESPACE | ANY);
        assert_eq!(flags('\u{3000}'), WHITESPACE | ANY);
        assert_eq!(flags('\u{0085}'), WHITESPACE | ANY);
        assert_eq!(flags('\u{200B}'), ANY);
        assert_eq!(flags('🦀'), ANY);
        assert_eq!(flags('\u{0301}'), ANY);
        assert_eq!(flags('\u{10FFFF}'), ANY);
        assert_eq!(flags('\u{20000}'), LETTER | ANY);
        // New in Unicode 15.0/15.1 (llama.cpp's tables are 15.1): CJK extensions H and I, Kawi digits.
        assert_eq!(flags('\u{31350}'), LETTER | ANY);
        assert_eq!(flags('\u{2EBF0}'), LETTER | ANY);
        assert_eq!(flags('\u{11F50}'), NUMBER | ANY);
        assert_eq!(flags('\u{0378}'), ANY);
    }

    #[test]
    fn ascii_table_agrees_with_ranges() {
        for cp in 0u32..128 {
            let from_ranges = RANGES
                .iter()
                .find(|&&(lo, hi, _)| lo <= cp && cp <= hi)
                .map_or(0, |r| r.2);
            assert_eq!(ASCII[cp as usize], from_ranges, "U+{cp:04X}");
        }
    }

    #[test]
    fn ranges_sorted_and_disjoint() {
        for w in RANGES.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{:?}", w);
        }
    }

    #[test]
    fn byte_mapping_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(char_to_byte('▁'), None);
    }
}
