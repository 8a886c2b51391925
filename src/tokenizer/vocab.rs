//! Token texts in one arena and a text -> id hash table over them.

use crate::mem::try_vec;
use crate::{Error, Result};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

const EMPTY: u64 = u64::MAX;

/// The vocabulary: token texts by id, and lookup of an id by text.
#[derive(Debug)]
pub(crate) struct Vocab {
    text: String,
    /// `offs[i]..offs[i + 1]` is token `i` in `text`.
    offs: Vec<u32>,
    /// Open addressing, linear probing; a slot holds `hash >> 32 << 32 | id`, or `EMPTY`.
    /// Comparing the stored hash half first keeps failed lookups (most SPM pair lookups)
    /// away from the token texts.
    slots: Vec<u64>,
    hasher: RandomState,
}

impl Vocab {
    /// Builds the vocabulary. With duplicate texts, lookup finds the highest id (as
    /// llama.cpp's `token_to_id` map, filled in id order). The caller checks that there are
    /// fewer than `u32::MAX` tokens of at most `u32::MAX` bytes in all.
    pub(crate) fn new(tokens: &[String]) -> Result<Self> {
        let total: usize = tokens.iter().map(String::len).sum();
        let mut text = String::new();
        text.try_reserve_exact(total)
            .map_err(|_| Error::OutOfMemory(format!("{total} bytes of token texts")))?;
        let mut offs = try_vec(tokens.len() + 1)?;
        offs.push(0);
        for t in tokens {
            text.push_str(t);
            offs.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        let cap = (tokens.len() * 2).next_power_of_two().max(16);
        let mut slots = try_vec(cap)?;
        slots.resize(cap, EMPTY);
        let mut v = Self {
            text,
            offs,
            slots,
            hasher: RandomState::new(),
        };
        for id in 0..tokens.len() as u32 {
            v.insert(id);
        }
        Ok(v)
    }

    fn insert(&mut self, id: u32) {
        let key = self.get(id).as_bytes();
        let h = self.hasher.hash_one(key);
        let tag = h & !0xFFFF_FFFF;
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY || (s & !0xFFFF_FFFF == tag && self.get(s as u32).as_bytes() == key) {
                self.slots[i] = tag | u64::from(id);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Number of tokens.
    pub(crate) fn len(&self) -> usize {
        self.offs.len() - 1
    }

    /// Text of token `id` ("" when out of range).
    pub(crate) fn get(&self, id: u32) -> &str {
        let i = id as usize;
        match (self.offs.get(i), self.offs.get(i.wrapping_add(1))) {
            (Some(&a), Some(&b)) => self.text.get(a as usize..b as usize).unwrap_or(""),
            _ => "",
        }
    }

    /// The id of the token whose text is `key`.
    pub(crate) fn find(&self, key: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        let tag = h & !0xFFFF_FFFF;
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if s & !0xFFFF_FFFF == tag && self.get(s as u32).as_bytes() == key {
                return Some(s as u32);
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        let toks: Vec<String> = ["a", "b", "ab", "", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = Vocab::new(&toks).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v.find(b"a"), Some(4));
        assert_eq!(v.find(b"ab"), Some(2));
        assert_eq!(v.find(b""), Some(3));
        assert_eq!(v.find(b"abc"), None);
        assert_eq!(v.get(2), "ab");
        assert_eq!(v.get(99), "");
        let empty = Vocab::new(&[]).unwrap();
        assert_eq!(empty.find(b"x"), None);
    }
}
