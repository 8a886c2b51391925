//! The vocabulary as a trie over token byte strings, built once per model (cached on
//! [`crate::model::Model`]) and walked by every mask computation.
//!
//! Layout (as llguidance's toktrie): nodes in depth-first preorder, each knowing where its
//! subtree ends, so a walk that finds a dead prefix skips the whole subtree with one jump.

use super::vocab_slices::Slices;
use super::Tokenizer;
use crate::mem::{reserve, sort_u32_by, try_vec};
use crate::Result;

/// One trie node: the byte leading into it from its parent.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub byte: u8,
    /// Depth = length of the byte string it spells (1 for the root's children).
    pub depth: u32,
    /// Index one past the last node of its subtree.
    pub end: u32,
    /// Tokens spelling exactly this node's string: `tokens[tok_lo..tok_hi]`.
    pub tok_lo: u32,
    pub tok_hi: u32,
}

/// The model's vocabulary, indexed for constraints.
#[derive(Debug)]
pub struct VocabIndex {
    pub nodes: Vec<Node>,
    /// The same tokens partitioned into classes, each with its own trie and bit mask.
    pub slices: Slices,
    /// Token ids in byte-string order (the trie's tokens).
    pub tokens: Vec<u32>,
    /// Byte length of every token id (0: never produced by a constraint).
    pub len: Vec<u32>,
    /// The bytes of token `t`: `bytes[offs[t]..offs[t + 1]]`.
    pub bytes: Vec<u8>,
    pub offs: Vec<u32>,
    /// End-of-generation tokens (allowed only where the grammar accepts).
    pub eog: Vec<u32>,
    pub n_vocab: usize,
    /// Longest token, in bytes.
    pub max_len: usize,
    /// Identity of the vocabulary (FNV-1a of every piece and the size): a constraint only
    /// applies to models whose tokens spell the same bytes.
    pub id: u64,
}

impl VocabIndex {
    /// Indexes `tok`'s pieces. Tokens with an empty piece (control, unused) never match.
    ///
    /// # Panics
    /// Aborts if the index cannot be allocated, as any infallible collection; see
    /// [`VocabIndex::try_new`].
    pub fn new(tok: &Tokenizer) -> VocabIndex {
        VocabIndex::try_new(tok).unwrap_or_else(|_| {
            std::alloc::handle_alloc_error(std::alloc::Layout::new::<VocabIndex>())
        })
    }

    /// [`VocabIndex::new`], with allocation failure an error (`OutOfMemory`).
    pub fn try_new(tok: &Tokenizer) -> Result<VocabIndex> {
        VocabIndex::build(tok.n_vocab(), |t| tok.piece(t), |t| tok.is_eog(t))
    }

    /// Indexes a vocabulary given as pieces (tests, tools); `eog` lists the
    /// end-of-generation ids.
    ///
    /// # Panics
    /// If the index cannot be allocated.
    pub fn from_pieces(pieces: &[&[u8]], eog: &[u32]) -> VocabIndex {
        VocabIndex::build(pieces.len(), |t| pieces[t as usize], |t| eog.contains(&t))
            .expect("memory for a vocabulary index")
    }

    /// Every buffer is allocated once, at its final size, so that failure is an error.
    fn build<'p>(
        n: usize,
        piece: impl Fn(u32) -> &'p [u8],
        is_eog: impl Fn(u32) -> bool,
    ) -> Result<VocabIndex> {
        let mut id: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |b: u8| {
            id ^= u64::from(b);
            id = id.wrapping_mul(0x0100_0000_01b3);
        };
        for b in (n as u64).to_le_bytes() {
            mix(b);
        }
        let mut len = try_vec(n)?;
        len.resize(n, 0u32);
        let mut order: Vec<u32> = try_vec(n)?;
        let n_eog = (0..n as u32).filter(|&t| is_eog(t)).count();
        let mut eog = try_vec(n_eog)?;
        let n_bytes = (0..n as u32)
            .filter(|&t| !is_eog(t))
            .map(|t| piece(t).len())
            .sum();
        let mut bytes = try_vec(n_bytes)?;
        let mut offs = try_vec(n + 1)?;
        offs.push(0u32);
        for t in 0..n as u32 {
            let p = piece(t);
            if !is_eog(t) {
                bytes.extend_from_slice(p);
            }
            offs.push(bytes.len() as u32);
            for b in (p.len() as u32).to_le_bytes().iter().chain(p) {
                mix(*b);
            }
            if is_eog(t) {
                eog.push(t);
                continue;
            }
            if !p.is_empty() {
                len[t as usize] = p.len() as u32;
                order.push(t);
            }
        }
        // Keys are distinct (ids are): an unstable sort is exact.
        sort_u32_by(&mut order, &mut |a, b| piece(a).cmp(piece(b)).then(a.cmp(&b)));
        let nodes = build_trie(&order, &piece)?;
        let max_len = len.iter().copied().max().unwrap_or(0) as usize;
        let slices = Slices::new(n, &nodes, &order, &piece)?;
        Ok(VocabIndex {
            nodes,
            slices,
            tokens: order,
            len,
            bytes,
            offs,
            eog,
            n_vocab: n,
            max_len,
            id,
        })
    }

    /// The bytes token `t` adds to the output (empty for end-of-generation and control).
    pub fn piece(&self, t: u32) -> &[u8] {
        match (self.offs.get(t as usize), self.offs.get(t as usize + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    /// The tokens ending at node `k`.
    pub fn tokens_at(&self, k: usize) -> &[u32] {
        let n = &self.nodes[k];
        &self.tokens[n.tok_lo as usize..n.tok_hi as usize]
    }
}

/// The trie of the tokens `order` (sorted by their bytes): nodes in depth-first preorder,
/// a node's tokens given as a range of positions in `order`. One node per distinct prefix
/// (each piece's bytes past its longest common prefix with the piece before it), counted
/// first so that the nodes are one allocation of their final size.
pub(crate) fn build_trie<'p>(order: &[u32], piece: impl Fn(u32) -> &'p [u8]) -> Result<Vec<Node>> {
    let mut n_nodes = 0;
    let mut depth = 0;
    let mut prev: &[u8] = &[];
    for &t in order {
        let p = piece(t);
        n_nodes += p.len() - p.iter().zip(prev).take_while(|(a, b)| a == b).count();
        depth = depth.max(p.len());
        prev = p;
    }
    let mut nodes: Vec<Node> = try_vec(n_nodes)?;
    // path[d] = index of the node at depth d+1 on the current path.
    let mut path: Vec<usize> = Vec::new();
    reserve(&mut path, depth)?;
    let mut prev: &[u8] = &[];
    for (i, &t) in order.iter().enumerate() {
        let p = piece(t);
        let common = p.iter().zip(prev).take_while(|(a, b)| a == b).count();
        while path.len() > common {
            let k = path.pop().unwrap_or(0);
            nodes[k].end = nodes.len() as u32;
        }
        for (d, &b) in p.iter().enumerate().skip(common) {
            path.push(nodes.len());
            nodes.push(Node {
                byte: b,
                depth: d as u32 + 1,
                end: 0,
                tok_lo: i as u32,
                tok_hi: i as u32,
            });
        }
        if let Some(&k) = path.last() {
            if nodes[k].tok_hi == nodes[k].tok_lo {
                nodes[k].tok_lo = i as u32;
            }
            nodes[k].tok_hi = i as u32 + 1;
        }
        prev = p;
    }
    while let Some(k) = path.pop() {
        nodes[k].end = nodes.len() as u32;
    }
    Ok(nodes)
}
