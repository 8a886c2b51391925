//! The vocabulary as a trie over token byte strings, built once per model (cached on
//! [`crate::model::Model`]) and walked by every mask computation.
//!
//! Layout (as llguidance's toktrie): nodes in depth-first preorder, each knowing where its
//! subtree ends, so a walk that finds a dead prefix skips the whole subtree with one jump.

use super::vocab_slices::Slices;
use super::Tokenizer;

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
    pub fn new(tok: &Tokenizer) -> VocabIndex {
        VocabIndex::build(tok.n_vocab(), |t| tok.piece(t), |t| tok.is_eog(t))
    }

    /// Indexes a vocabulary given as pieces (tests, tools); `eog` lists the
    /// end-of-generation ids.
    pub fn from_pieces(pieces: &[&[u8]], eog: &[u32]) -> VocabIndex {
        VocabIndex::build(pieces.len(), |t| pieces[t as usize], |t| eog.contains(&t))
    }

    fn build<'p>(
        n: usize,
        piece: impl Fn(u32) -> &'p [u8],
        is_eog: impl Fn(u32) -> bool,
    ) -> VocabIndex {
        let mut id: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |b: u8| {
            id ^= u64::from(b);
            id = id.wrapping_mul(0x0100_0000_01b3);
        };
        for b in (n as u64).to_le_bytes() {
            mix(b);
        }
        let mut len = vec![0u32; n];
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut eog = Vec::new();
        let mut bytes = Vec::new();
        let mut offs = Vec::with_capacity(n + 1);
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
        order.sort_by(|&a, &b| piece(a).cmp(piece(b)).then(a.cmp(&b)));
        let nodes = build_trie(&order, &piece);
        let max_len = len.iter().copied().max().unwrap_or(0) as usize;
        let slices = Slices::new(n, &nodes, &order, &piece);
        VocabIndex {
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
        }
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
/// a node's tokens given as a range of positions in `order`.
pub(crate) fn build_trie<'p>(order: &[u32], piece: impl Fn(u32) -> &'p [u8]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    // path[d] = index of the node at depth d+1 on the current path.
    let mut path: Vec<usize> = Vec::new();
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
    nodes
}
