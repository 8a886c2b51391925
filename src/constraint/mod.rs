//! Structured output: the constraint engine.
//!
//! Regexes, JSON Schema, GBNF and choice lists compile into one byte-level grammar IR
//! ([`ir`]), then into one DFA per rule whose edges are byte classes or calls of other
//! rules ([`compile`]): a pushdown automaton. A [`ConstraintState`] is a small set of
//! stacks of DFA states (more than one only where the grammar is ambiguous), preallocated
//! and bounded: at most [`MAX_DEPTH`] frames (nesting levels of recursive rules) and
//! [`MAX_THREADS`] stacks. At the depth bound, calls that would nest deeper are not
//! offered, so output is steered to close.
//!
//! Masks: the vocabulary is a trie built once per model, its tokens also partitioned into
//! slices (by the first of a few byte languages that spells them, and by length), each
//! with its own trie and mask ([`crate::tokenizer::vocab_slices`]). For each DFA state the
//! tokens it accepts without leaving its rule are computed once (lazily, then cached: a
//! lookup per step for regular languages): a slice whose language the state provably
//! accepts (or rejects) up to the slice's longest token is taken (or skipped) whole, the
//! others' tries are walked. With them come the few trie nodes where the token could
//! continue through a call or a return ("escapes"); only those subtrees are walked with
//! the full stacks at each step. Near the byte budget, the local tokens are taken cheapest
//! first (token length plus shortest completion after it; that order is built on first
//! need, by a walk of the whole trie) up to the budget, and the escape
//! walks prune every prefix whose shortest completion no longer fits.

pub mod compile;
pub mod gbnf;
pub mod ir;
pub mod json;
pub mod regex;

use std::sync::{Arc, OnceLock};

use crate::model::Model;
use crate::tokenizer::vocab_index::VocabIndex;
use crate::tokenizer::vocab_slices::{Lang, NO_Q};
use crate::{Error, Result};
use compile::{Automata, DEAD, INF};
use ir::Grammar;

/// Deepest stack of rule frames: the nesting bound of recursive rules (a JSON value nested
/// 127 levels deep fits; `json.gbnf` uses one frame per level).
pub const MAX_DEPTH: usize = 128;
/// Most parses alive at once (ambiguous grammars); beyond it the grammar is refused.
pub const MAX_THREADS: usize = 256;

/// A set of stacks of DFA states, stored flat so that copying it never allocates once its
/// buffers have grown.
#[derive(Debug, Default)]
struct Threads {
    frames: Vec<u32>,
    spans: Vec<(u32, u32)>,
}

impl Clone for Threads {
    fn clone(&self) -> Self {
        let mut t = Threads::with_capacity();
        t.clone_from(self);
        t
    }
    fn clone_from(&mut self, src: &Self) {
        self.frames.clear();
        self.frames.extend_from_slice(&src.frames);
        self.spans.clear();
        self.spans.extend_from_slice(&src.spans);
    }
}

fn ambiguous() -> Error {
    Error::InvalidArgument(format!(
        "grammar too ambiguous: more than {MAX_THREADS} parses alive at once"
    ))
}

impl Threads {
    fn with_capacity() -> Self {
        Threads {
            frames: Vec::with_capacity(4 * MAX_DEPTH),
            spans: Vec::with_capacity(16),
        }
    }
    fn clear(&mut self) {
        self.frames.clear();
        self.spans.clear();
    }
    fn len(&self) -> usize {
        self.spans.len()
    }
    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    fn get(&self, i: usize) -> &[u32] {
        let (o, n) = self.spans[i];
        &self.frames[o as usize..(o + n) as usize]
    }
    /// Adds `stack` unless present.
    fn add(&mut self, stack: &[u32]) -> Result<()> {
        if (0..self.len()).any(|i| self.get(i) == stack) {
            return Ok(());
        }
        if self.len() >= MAX_THREADS {
            return Err(ambiguous());
        }
        let o = self.frames.len() as u32;
        self.frames.extend_from_slice(stack);
        self.spans.push((o, stack.len() as u32));
        Ok(())
    }
}

/// Where one sequence is in a constraint. Cheap to copy with `clone_from` (no allocation
/// once created by [`Constraint::start`]).
#[derive(Debug)]
pub struct ConstraintState {
    cur: Threads,
    a: Threads,
    b: Threads,
    tmp: Vec<u32>,
}

impl Clone for ConstraintState {
    fn clone(&self) -> Self {
        let mut s = ConstraintState::empty();
        s.clone_from(self);
        s
    }
    fn clone_from(&mut self, src: &Self) {
        self.cur.clone_from(&src.cur);
    }
}

impl ConstraintState {
    fn empty() -> Self {
        ConstraintState {
            cur: Threads::with_capacity(),
            a: Threads::with_capacity(),
            b: Threads::with_capacity(),
            tmp: Vec::with_capacity(MAX_DEPTH + 1),
        }
    }
}

/// Allowed tokens: one bit per vocabulary entry, plus the scratch a mask computation uses.
#[derive(Debug, Default)]
pub struct TokenMask {
    bits: Vec<u64>,
    n_vocab: usize,
    levels: Vec<Threads>,
    tmp: Vec<u32>,
}

impl TokenMask {
    /// An empty mask; buffers grow on first use and are then reused.
    pub fn new() -> Self {
        TokenMask::default()
    }
    /// The mask allowing the tokens `f` accepts, out of `n_vocab`.
    pub fn from_fn(n_vocab: usize, f: impl Fn(u32) -> bool) -> Self {
        let mut m = TokenMask::new();
        m.reset(n_vocab);
        for t in 0..n_vocab as u32 {
            if f(t) {
                m.set(t);
            }
        }
        m
    }

    /// Whether token `id` is allowed.
    #[inline]
    pub fn allowed(&self, id: u32) -> bool {
        let i = id as usize;
        i < self.n_vocab && self.bits[i >> 6] >> (i & 63) & 1 == 1
    }
    /// The number of allowed tokens.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// The bits, 64 tokens a word, token `i` at bit `i % 64` of word `i / 64`.
    pub fn words(&self) -> &[u64] {
        &self.bits
    }
    /// Vocabulary size the mask was computed for.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    /// The mask as the sampler takes it.
    pub fn allowed_tokens(&self) -> crate::sampler::Allowed<'_> {
        crate::sampler::Allowed {
            words: &self.bits,
            n_vocab: self.n_vocab,
        }
    }
    fn reset(&mut self, n_vocab: usize) {
        self.n_vocab = n_vocab;
        self.bits.clear();
        self.bits.resize(n_vocab.div_ceil(64), 0);
    }
    #[inline]
    fn set(&mut self, id: u32) {
        self.bits[id as usize >> 6] |= 1 << (id & 63);
    }
    /// Disallows token `id` (an end-of-generation token under ignore-eos).
    pub fn remove(&mut self, id: u32) {
        if (id as usize) < self.n_vocab {
            self.bits[id as usize >> 6] &= !(1 << (id & 63));
        }
    }
}

/// Tokens a DFA state accepts within its own rule, computed once per state.
#[derive(Debug)]
struct Local {
    tokens: TokSet,
    /// Trie nodes (with children) reached in a state that can call, or return to a
    /// caller: (node, state, whether the state calls).
    escapes: Vec<(u32, u32, bool)>,
    /// At least the largest (token length + shortest rest of the rule after it) over
    /// `tokens` (exact for walked tokens, a bound for whole slices).
    max_cost: u32,
    /// The same tokens as (cost, token), cheapest first: near the budget, the allowed
    /// ones are a prefix. Built on first need (a walk of the whole trie).
    by_cost: OnceLock<Vec<(u32, u32)>>,
}

#[derive(Debug)]
enum TokSet {
    Bits(Vec<u64>),
    List(Vec<u32>),
}

/// A compiled constraint: immutable, `Send + Sync`, for the vocabulary it was compiled
/// against (see [`Constraint::vocab_id`]).
pub struct Constraint {
    a: Automata,
    vocab: Arc<VocabIndex>,
    locals: Vec<OnceLock<Local>>,
    /// Per state: whether a token passing through it may leave the rule (the state calls,
    /// or it accepts in a rule that is called).
    escape: Vec<bool>,
    /// Per slice language: one byte of each class of bytes that both the automata and the
    /// language treat alike.
    lang_bytes: Vec<Vec<u8>>,
    start: ConstraintState,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Constraint>();
};

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("states", &self.a.n_states())
            .field("classes", &self.a.n_class)
            .finish()
    }
}

impl Constraint {
    /// Output matching `pattern` entirely (see [`regex`] for the syntax).
    pub fn regex(model: &Model, pattern: &str) -> Result<Arc<Constraint>> {
        Constraint::new(model.try_vocab_index()?.clone(), &regex::grammar(pattern)?)
    }

    /// Output valid against the JSON Schema `schema_json`; "" means any JSON value.
    pub fn json_schema(model: &Model, schema_json: &str) -> Result<Arc<Constraint>> {
        Constraint::new(model.try_vocab_index()?.clone(), &json::grammar(schema_json)?)
    }

    /// Output derived from the `root` rule of the GBNF (llama.cpp syntax) `grammar`.
    pub fn gbnf(model: &Model, grammar: &str) -> Result<Arc<Constraint>> {
        Constraint::new(model.try_vocab_index()?.clone(), &gbnf::grammar(grammar)?)
    }

    /// Output exactly one of `choices`.
    pub fn choices(model: &Model, choices: &[&str]) -> Result<Arc<Constraint>> {
        if choices.is_empty() {
            return Err(Error::InvalidArgument("no choices given".into()));
        }
        let mut g = Grammar::default();
        let alts = choices.iter().map(|c| ir::lit_str(c)).collect();
        g.root = g.add("root", ir::Expr::Alt(alts));
        Constraint::new(model.try_vocab_index()?.clone(), &g)
    }

    /// Compiles `g` for `vocab`. Errors when the grammar is too large, left-recursive, or
    /// satisfied by no token sequence.
    pub fn new(vocab: Arc<VocabIndex>, g: &Grammar) -> Result<Arc<Constraint>> {
        let a = compile::compile(g)?;
        if a.rule_min[g.root] >= INF {
            return Err(Error::InvalidArgument(
                "no output satisfies the grammar (its language is empty)".into(),
            ));
        }
        compile::check_left_recursion(&a)?;
        let locals = (0..a.n_states()).map(|_| OnceLock::new()).collect();
        let escape = escape_states(&a);
        let lang_bytes = vocab
            .slices
            .langs
            .iter()
            .map(|l| {
                let mut seen = Vec::new();
                let mut bytes = Vec::new();
                for b in 0..=255u8 {
                    let col: Vec<u8> = l.trans.iter().map(|row| row[b as usize]).collect();
                    if col.iter().all(|&q| q == NO_Q) {
                        continue;
                    }
                    let k = (a.class_of[b as usize], col);
                    if !seen.contains(&k) {
                        seen.push(k);
                        bytes.push(b);
                    }
                }
                bytes
            })
            .collect();
        let mut c = Constraint {
            a,
            vocab,
            locals,
            escape,
            lang_bytes,
            start: ConstraintState::empty(),
        };
        let mut st = ConstraintState::empty();
        st.cur.add(&[c.a.root])?;
        c.close(&mut st.cur, &mut st.tmp)?;
        c.start = st;
        // Some token must lead towards acceptance, or the grammar accepts the empty output.
        let mut m = TokenMask::new();
        c.mask(&c.start, None, &mut m);
        if m.count() == 0 {
            return Err(Error::InvalidArgument(
                "no token sequence of this model satisfies the grammar".into(),
            ));
        }
        Ok(Arc::new(c))
    }

    /// Identity of the vocabulary this constraint was compiled for.
    pub fn vocab_id(&self) -> u64 {
        self.vocab.id
    }

    /// Number of DFA states (all rules).
    pub fn n_states(&self) -> usize {
        self.a.n_states()
    }

    /// The state before any output.
    pub fn start(&self) -> ConstraintState {
        self.start.clone()
    }

    /// Resets `st` to the start state without allocating.
    pub fn restart(&self, st: &mut ConstraintState) {
        st.clone_from(&self.start);
    }

    /// Whether the output so far is complete (end-of-text allowed).
    pub fn is_accepting(&self, st: &ConstraintState) -> bool {
        (0..st.cur.len()).any(|i| {
            let s = st.cur.get(i);
            s.len() == 1 && self.a.accept[s[0] as usize]
        })
    }

    /// Fewest bytes that complete the output from `st`.
    pub fn min_completion_bytes(&self, st: &ConstraintState) -> usize {
        (0..st.cur.len())
            .map(|i| self.cost(st.cur.get(i)))
            .min()
            .unwrap_or(INF as usize)
    }

    fn cost(&self, stack: &[u32]) -> usize {
        stack
            .iter()
            .map(|&s| self.a.dist[s as usize] as usize)
            .sum()
    }

    /// Adds to `th` every stack reachable by calls and returns (no byte), then drops the
    /// stacks that can neither read a byte nor accept.
    fn close(&self, th: &mut Threads, tmp: &mut Vec<u32>) -> Result<()> {
        let mut i = 0;
        while i < th.len() {
            tmp.clear();
            tmp.extend_from_slice(th.get(i));
            let depth = tmp.len();
            let top = tmp[depth - 1];
            if depth < MAX_DEPTH {
                for &(r, ret) in self.a.calls_of(top) {
                    tmp[depth - 1] = ret;
                    tmp.push(self.a.rule_start[r as usize]);
                    th.add(tmp)?;
                    tmp.pop();
                }
                tmp[depth - 1] = top;
            }
            if self.a.accept[top as usize] && depth > 1 {
                th.add(&tmp[..depth - 1])?;
            }
            i += 1;
        }
        // Compact: keep stacks that read bytes, or the root's accepting one.
        let mut w = 0;
        let mut fw = 0usize;
        for k in 0..th.len() {
            let (o, n) = th.spans[k];
            let top = th.frames[(o + n - 1) as usize];
            if self.a.has_bytes[top as usize] || (n == 1 && self.a.accept[top as usize]) {
                th.frames.copy_within(o as usize..(o + n) as usize, fw);
                th.spans[w] = (fw as u32, n);
                fw += n as usize;
                w += 1;
            }
        }
        th.spans.truncate(w);
        th.frames.truncate(fw);
        Ok(())
    }

    /// `to` = the stacks of `from` after reading byte `b`, closed.
    fn step(&self, from: &Threads, b: u8, to: &mut Threads, tmp: &mut Vec<u32>) -> Result<()> {
        to.clear();
        for i in 0..from.len() {
            let s = from.get(i);
            let t = self.a.step(s[s.len() - 1], b);
            if t != DEAD {
                tmp.clear();
                tmp.extend_from_slice(&s[..s.len() - 1]);
                tmp.push(t);
                to.add(tmp)?;
            }
        }
        self.close(to, tmp)
    }

    /// Moves `st` past `token`. A token the constraint forbids is `InvalidArgument` and
    /// leaves `st` unchanged; an end-of-generation token is allowed where the output is
    /// complete and changes nothing.
    pub fn advance(&self, st: &mut ConstraintState, token: u32) -> Result<()> {
        if self.vocab.eog.contains(&token) {
            if self.is_accepting(st) {
                return Ok(());
            }
            return Err(Error::InvalidArgument(format!(
                "token {token} ends the output where the constraint needs {} more bytes",
                self.min_completion_bytes(st)
            )));
        }
        let piece = self.vocab.piece(token);
        let forbidden = || {
            Error::InvalidArgument(format!(
                "token {token} is not allowed by the constraint here"
            ))
        };
        if piece.is_empty() {
            return Err(forbidden());
        }
        let ConstraintState { cur, a, b, tmp } = st;
        a.clone_from(cur);
        for &byte in piece {
            self.step(a, byte, b, tmp).map_err(|_| forbidden())?;
            if b.is_empty() {
                return Err(forbidden());
            }
            std::mem::swap(a, b);
        }
        std::mem::swap(cur, a);
        Ok(())
    }

    /// Whether `token` is allowed in `st` (no budget).
    pub fn allows(&self, st: &ConstraintState, token: u32) -> bool {
        let mut s = st.clone();
        self.advance(&mut s, token).is_ok()
    }

    /// Writes the allowed next tokens to `out`, given that at most `budget_bytes` more
    /// bytes may be produced (`None` = unlimited): a token is allowed only if the shortest
    /// completion after it still fits. End-of-generation tokens are allowed only where the
    /// output is complete.
    pub fn mask(&self, st: &ConstraintState, budget_bytes: Option<usize>, out: &mut TokenMask) {
        out.reset(self.vocab.n_vocab);
        if self.is_accepting(st) {
            for &t in &self.vocab.eog {
                out.set(t);
            }
        }
        let nodes = &self.vocab.nodes;
        for i in 0..st.cur.len() {
            let stack = st.cur.get(i);
            let top = stack[stack.len() - 1];
            let rest = self.cost(&stack[..stack.len() - 1]);
            let local = self.local(top);
            match budget_bytes {
                Some(b) if rest + local.max_cost as usize > b => {
                    // Near the budget: the local tokens whose cost still fits.
                    let limit = b.saturating_sub(rest);
                    for &(cost, t) in self.by_cost(top, local) {
                        if cost as usize > limit {
                            break;
                        }
                        out.set(t);
                    }
                }
                _ => match &local.tokens {
                    TokSet::Bits(w) => out.bits.iter_mut().zip(w).for_each(|(o, x)| *o |= x),
                    TokSet::List(l) => l.iter().for_each(|&t| out.set(t)),
                },
            }
            for &(node, s, calls) in &local.escapes {
                if !calls && stack.len() == 1 {
                    continue;
                }
                // Stacks leaving the rule at this node: the closure minus the local one.
                out.tmp.clear();
                out.tmp.extend_from_slice(stack);
                let n = out.tmp.len();
                out.tmp[n - 1] = s;
                let init = level(&mut out.levels, 0);
                init.clear();
                let _ = init.add(&out.tmp);
                let mut tmp = std::mem::take(&mut out.tmp);
                let ok = self.close(&mut out.levels[0], &mut tmp).is_ok();
                tmp.clear();
                tmp.extend_from_slice(stack);
                tmp[n - 1] = s;
                let init = &mut out.levels[0];
                if let Some(k) = (0..init.len()).find(|&k| init.get(k) == tmp.as_slice()) {
                    init.spans.remove(k);
                }
                out.tmp = tmp;
                if !ok || out.levels[0].is_empty() {
                    continue;
                }
                let nd = &nodes[node as usize];
                self.walk(
                    node as usize + 1,
                    nd.end as usize,
                    nd.depth,
                    budget_bytes,
                    out,
                );
            }
        }
    }

    /// Marks the tokens of trie nodes `lo..hi` (a subtree's descendants, at depths past
    /// `base`) that the stacks in `out.levels[0]` accept within `budget`.
    fn walk(&self, lo: usize, hi: usize, base: u32, budget: Option<usize>, out: &mut TokenMask) {
        let nodes = &self.vocab.nodes;
        let mut i = lo;
        while i < hi {
            let nd = nodes[i];
            let d = (nd.depth - base) as usize;
            level(&mut out.levels, d);
            let (prev, next) = out.levels.split_at_mut(d);
            let next = &mut next[0];
            if self
                .step(&prev[d - 1], nd.byte, next, &mut out.tmp)
                .is_err()
                || next.is_empty()
            {
                i = nd.end as usize;
                continue;
            }
            if let Some(b) = budget {
                let mc = (0..next.len())
                    .map(|k| self.cost(next.get(k)))
                    .min()
                    .unwrap_or(INF as usize);
                if nd.depth as usize + mc > b {
                    i = nd.end as usize;
                    continue;
                }
            }
            for &t in self.vocab.tokens_at(i) {
                out.set(t);
            }
            i += 1;
        }
    }

    /// The cached local tokens of state `s`.
    fn local(&self, s: u32) -> &Local {
        self.locals[s as usize].get_or_init(|| self.compute_local(s))
    }

    /// The local tokens of `s` as (cost, token), cheapest first.
    fn by_cost<'l>(&self, s: u32, local: &'l Local) -> &'l [(u32, u32)] {
        local
            .by_cost
            .get_or_init(|| self.walk_whole_trie(s).by_cost)
    }

    /// The local tokens of `s`, slice by slice: a slice whose language `s` provably
    /// accepts in full (every string up to the slice's longest token stays alive and
    /// cannot leave the rule before its end) is taken whole from its mask; one whose
    /// language dies before the shortest token is skipped; the others' tries are walked.
    fn compute_local(&self, s: u32) -> Local {
        let v = &self.vocab;
        let mut bits = vec![0u64; v.n_vocab.div_ceil(64)];
        let mut escapes = Vec::new();
        let mut max_cost = 0u32;
        let mut levels = Vec::new();
        let mut lv = vec![DEAD; v.max_len + 1];
        let slices = &v.slices;
        for (li, (lang, bytes)) in slices.langs.iter().zip(&self.lang_bytes).enumerate() {
            let (max_lo, max_hi) = (slices.lang_max_lo[li], slices.lang_max[li]);
            self.levels(s, lang, bytes, max_lo, max_hi, &mut levels);
            // Whole slices come first (whether a slice is whole is monotone in its
            // length): the mask of the longest one covers them all.
            let mut upto = None;
            let mut prefix = true;
            for slice in slices.slices.iter().filter(|x| x.lang == li) {
                let mut plan = Plan::of(&levels, slice.min_len as usize, slice.max_len as usize);
                prefix &= plan == Plan::Whole;
                if prefix {
                    upto = Some(&slice.upto);
                    for l in &levels[slice.min_len as usize..=slice.max_len as usize] {
                        max_cost = max_cost.max(l.cost);
                    }
                    continue;
                }
                if plan == Plan::Whole {
                    plan = Plan::Walk;
                }
                if plan == Plan::Walk {
                    lv[0] = s;
                    let mut i = 0;
                    while i < slice.nodes.len() {
                        let nd = slice.nodes[i];
                        let d = nd.depth as usize;
                        let t = self.a.step(lv[d - 1], nd.byte);
                        if t == DEAD {
                            i = nd.end as usize;
                            continue;
                        }
                        lv[d] = t;
                        let toks = slice.tokens_at(i);
                        if !toks.is_empty() {
                            for &tok in toks {
                                bits[tok as usize >> 6] |= 1 << (tok & 63);
                            }
                            max_cost = max_cost.max(nd.depth + self.a.dist[t as usize].min(INF));
                        }
                        let f = slice.full[i];
                        if self.escape[t as usize] && v.nodes[f as usize].end > f + 1 {
                            escapes.push((f, t, !self.a.calls_of(t).is_empty()));
                        }
                        i += 1;
                    }
                }
            }
            if let Some(w) = upto {
                w.or_into(&mut bits);
            }
        }
        escapes.sort_unstable();
        escapes.dedup();
        let count: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
        let tokens = if count * 32 > v.n_vocab {
            TokSet::Bits(bits)
        } else {
            let mut list = Vec::with_capacity(count);
            for (i, &w) in bits.iter().enumerate() {
                let mut w = w;
                while w != 0 {
                    list.push((i * 64) as u32 + w.trailing_zeros());
                    w &= w - 1;
                }
            }
            TokSet::List(list)
        };
        Local {
            tokens,
            escapes,
            max_cost,
            by_cost: OnceLock::new(),
        }
    }

    /// What the strings of `lang` do from state `s`, by length: `out[k]` for k in
    /// `1..out.len()` describes the (automaton state, language state) pairs after k
    /// bytes. Stops after `max_hi` levels, at the first level with no live pair, when the
    /// pairs grow past [`MAX_PAIRS`] (the level then marked unknown), or as soon as no
    /// further level can change a plan: some string has died or may leave the rule (no
    /// longer slice is whole) and either one may leave the rule or `max_lo` is passed
    /// with live pairs (no slice is skipped).
    fn levels(
        &self,
        s: u32,
        lang: &Lang,
        bytes: &[u8],
        max_lo: u32,
        max_hi: u32,
        out: &mut Vec<Level>,
    ) {
        out.clear();
        out.push(Level {
            all_alive: true,
            escape: false,
            cost: 0,
            pairs: 1,
        });
        let mut cur: Vec<(u32, u8)> = vec![(s, 0)];
        let mut next = Vec::new();
        let (mut some_dead, mut some_escape) = (false, false);
        // Once a level's pairs equal the previous level's, every further level is the
        // same (its cost one more): no need to step them.
        let mut steady = false;
        for k in 1..=max_hi {
            let level = if steady {
                let mut l = out[out.len() - 1];
                if l.cost != 0 {
                    l.cost += 1;
                }
                l
            } else {
                next.clear();
                let mut all_alive = true;
                for &(g, q) in &cur {
                    for &b in bytes {
                        let q2 = lang.trans[q as usize][b as usize];
                        if q2 == NO_Q {
                            continue;
                        }
                        let g2 = self.a.step(g, b);
                        if g2 == DEAD {
                            all_alive = false;
                        } else {
                            next.push((g2, q2));
                        }
                    }
                }
                next.sort_unstable();
                next.dedup();
                if next.len() > MAX_PAIRS {
                    out.push(Level {
                        all_alive: false,
                        escape: true,
                        cost: INF,
                        pairs: next.len(),
                    });
                    return;
                }
                let mut level = Level {
                    all_alive,
                    escape: false,
                    cost: 0,
                    pairs: next.len(),
                };
                for &(g, q) in &next {
                    level.escape |= self.escape[g as usize];
                    if lang.accept[q as usize] {
                        level.cost = level.cost.max(k + self.a.dist[g as usize].min(INF));
                    }
                }
                steady = next == cur;
                std::mem::swap(&mut cur, &mut next);
                level
            };
            out.push(level);
            some_dead |= !level.all_alive;
            some_escape |= level.escape;
            if level.pairs == 0 || some_escape || some_dead && k >= max_lo {
                return;
            }
        }
    }

    /// The local tokens of `s` by one walk of the whole trie: the reference the slices
    /// must reproduce, and the costs near the budget.
    fn walk_whole_trie(&self, s: u32) -> WholeWalk {
        let v = &self.vocab;
        let mut lv = vec![DEAD; v.max_len + 1];
        lv[0] = s;
        let mut out = WholeWalk::default();
        let mut i = 0;
        while i < v.nodes.len() {
            let nd = v.nodes[i];
            let d = nd.depth as usize;
            let t = self.a.step(lv[d - 1], nd.byte);
            if t == DEAD {
                i = nd.end as usize;
                continue;
            }
            lv[d] = t;
            let toks = v.tokens_at(i);
            if !toks.is_empty() {
                out.tokens.extend_from_slice(toks);
                let cost = nd.depth + self.a.dist[t as usize].min(INF);
                out.max_cost = out.max_cost.max(cost);
                out.by_cost.extend(toks.iter().map(|&tok| (cost, tok)));
            }
            if nd.end as usize > i + 1 && self.escape[t as usize] {
                out.escapes
                    .push((i as u32, t, !self.a.calls_of(t).is_empty()));
            }
            i += 1;
        }
        out.by_cost.sort_unstable();
        out
    }
}

/// Bound on the (automaton state, language state) pairs per level when classifying
/// slices; past it, the slices are walked.
const MAX_PAIRS: usize = 4096;

/// One length of a slice language's strings, from one automaton state.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// No string of this length (of the language) dies in the automaton.
    all_alive: bool,
    /// A live string of this length is in a state that may leave the rule.
    escape: bool,
    /// Largest (length + shortest rest of the rule) over the language's words of this
    /// length that are alive.
    cost: u32,
    /// Live pairs.
    pairs: usize,
}

/// What the local tokens of a state take from one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// All its tokens: its mask.
    Whole,
    /// None of them.
    Skip,
    /// Those a walk of its trie finds.
    Walk,
}

impl Plan {
    /// The plan for a slice of tokens of lengths `lo..=hi`, from its language's levels.
    fn of(levels: &[Level], lo: usize, hi: usize) -> Plan {
        // Every string up to `hi` bytes alive, none able to leave the rule before its end.
        if levels.len() > hi
            && levels[1..=hi].iter().all(|l| l.all_alive)
            && levels[1..hi].iter().all(|l| !l.escape)
        {
            return Plan::Whole;
        }
        // The language dies, with no escape on the way, by the shortest token's length.
        if levels.len() <= lo + 1
            && levels.last().is_some_and(|l| l.pairs == 0)
            && levels[1..].iter().all(|l| !l.escape)
        {
            return Plan::Skip;
        }
        Plan::Walk
    }
}

/// The results of [`Constraint::walk_whole_trie`].
#[derive(Debug, Default)]
struct WholeWalk {
    tokens: Vec<u32>,
    escapes: Vec<(u32, u32, bool)>,
    max_cost: u32,
    by_cost: Vec<(u32, u32)>,
}

/// Per state: whether a token may leave the state's rule there, by a call or by a return
/// to a caller (the root rule returns to none unless it is called).
fn escape_states(a: &Automata) -> Vec<bool> {
    let root_rule = a.rule_start.iter().position(|&s| s == a.root);
    let root_called = a.calls.iter().any(|&(r, _)| Some(r as usize) == root_rule);
    let root_end = a
        .rule_start
        .iter()
        .copied()
        .filter(|&s| s != DEAD && s > a.root)
        .min()
        .unwrap_or(a.n_states() as u32);
    (0..a.n_states() as u32)
        .map(|s| {
            let in_root = a.root <= s && s < root_end;
            !a.calls_of(s).is_empty() || (a.accept[s as usize] && (root_called || !in_root))
        })
        .collect()
}

/// `levels[d]`, growing the list on first use.
fn level(levels: &mut Vec<Threads>, d: usize) -> &mut Threads {
    while levels.len() <= d {
        levels.push(Threads::with_capacity());
    }
    &mut levels[d]
}

#[cfg(test)]
mod tests;
