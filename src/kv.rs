//! The KV cache: the keys and values of every position of every sequence, for every layer.
//!
//! Storage is cut into pages of [`PAGE`] positions. Each sequence has a page table (its
//! logical page `j` holds positions `j * PAGE..(j + 1) * PAGE`), and pages are counted by
//! reference, so sequences forked from one another share their common prefix: the prompt of
//! a beam search is stored once, and beams that reorder swap page tables instead of copying
//! their tails. Writing into a page that another sequence still reads copies it first (at most
//! `PAGE - 1` positions: the part written before the fork).
//!
//! Layers are grouped by their attention window. A full-attention group keeps every position
//! of a sequence. A sliding-window group of window `W` keeps only what a future token can
//! still see: pages whose positions all lie before the window of the next token go back to
//! the pool, so its memory is the window plus one batch, not the context.
//!
//! Every call that writes a sequence is a transaction ([`KvCache::begin`],
//! [`KvCache::commit`], [`KvCache::rollback`]): a failed call leaves the positions a sequence
//! holds, and their contents, as they were. Pages of the committed window are released only
//! at commit; pages the call itself wrote and already left behind are released at once.
//!
//! Layout: a group's storage is `[page][layer of the group][kv head][PAGE][head_dim]` for the
//! keys and the same for the values, so the rows of one (layer, kv head) inside a page form a
//! matrix the matmul kernels take directly.

use half::f16;
use half::slice::HalfFloatSliceExt;
use pipit_format::blocks::BlockQ8_0;
use pipit_format::DType;

use crate::mem::{checked_len, zeroed};
use crate::kernels::{BlockQ8A, Kernels, QMatrix};
use crate::model::HParams;
use crate::{Error, Result};

/// Positions per page.
pub const PAGE: usize = 32;

/// A page table entry that holds no page.
const NONE: u32 = u32::MAX;

/// How the KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// IEEE half precision (the default: half the memory of f32, no visible accuracy loss).
    #[default]
    F16,
    /// Full precision.
    F32,
    /// Q8_0 blocks of 32 (a quarter of f32's memory); needs head_dim divisible by 32.
    Int8,
}

impl KvType {
    /// Bytes of one cached row of `head_dim` elements.
    fn row_bytes(self, head_dim: usize) -> usize {
        match self {
            KvType::F16 => 2 * head_dim,
            KvType::F32 => 4 * head_dim,
            KvType::Int8 => head_dim / 32 * std::mem::size_of::<BlockQ8_0>(),
        }
    }

    fn dtype(self) -> DType {
        match self {
            KvType::F16 => DType::F16,
            KvType::F32 => DType::F32,
            KvType::Int8 => DType::Q8_0,
        }
    }
}

/// The storage of one of the two caches (keys or values) of a group.
#[derive(Debug)]
enum KvStore {
    F16(Vec<f16>),
    F32(Vec<f32>),
    Int8(Vec<BlockQ8_0>),
}

impl KvStore {
    fn new(kv_type: KvType, rows: usize, head_dim: usize) -> Result<Self> {
        Ok(match kv_type {
            KvType::F16 => KvStore::F16(zeroed(checked_len(&[rows, head_dim])?)?),
            KvType::F32 => KvStore::F32(zeroed(checked_len(&[rows, head_dim])?)?),
            KvType::Int8 => KvStore::Int8(zeroed(checked_len(&[rows, head_dim / 32])?)?),
        })
    }

    fn bytes(&self) -> &[u8] {
        match self {
            KvStore::F16(v) => bytemuck::cast_slice(v),
            KvStore::F32(v) => bytemuck::cast_slice(v),
            KvStore::Int8(v) => bytemuck::cast_slice(v),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            KvStore::F16(v) => bytemuck::cast_slice_mut(v),
            KvStore::F32(v) => bytemuck::cast_slice_mut(v),
            KvStore::Int8(v) => bytemuck::cast_slice_mut(v),
        }
    }

    /// Stores `x` (one head vector) as row `row`; `tmp` holds head_dim/32 blocks for Int8.
    fn put(&mut self, kern: &Kernels, row: usize, x: &[f32], tmp: &mut [BlockQ8A]) {
        let hd = x.len();
        match self {
            KvStore::F16(v) => v[row * hd..(row + 1) * hd].convert_from_f32_slice(x),
            KvStore::F32(v) => v[row * hd..(row + 1) * hd].copy_from_slice(x),
            KvStore::Int8(v) => {
                let nb = hd / 32;
                kern.quantize_act(x, &mut tmp[..nb]);
                for (o, a) in v[row * nb..(row + 1) * nb].iter_mut().zip(&tmp[..nb]) {
                    *o = BlockQ8_0 {
                        d: f16::from_f32(a.d),
                        qs: a.qs,
                    };
                }
            }
        }
    }
}

/// The layers that share one attention window, and their pages.
#[derive(Debug)]
struct Group {
    /// Positions a token sees (itself included); 0 = all before it.
    window: usize,
    /// Model layers in the group.
    n_layer: usize,
    /// Keys and values: [page][layer of the group][kv head][PAGE] rows.
    k: KvStore,
    v: KvStore,
    /// Sequences reading each page (0 = free).
    refs: Vec<u32>,
    /// Free pages, taken from the end.
    free: Vec<u32>,
}

impl Group {
    /// Pages one sequence of `n_ctx` positions can hold at once, written in batches of up to
    /// `n_batch`: all of them for full attention, the window plus a batch for sliding.
    fn live_pages(window: usize, n_ctx: usize, n_batch: usize) -> usize {
        let all = n_ctx.div_ceil(PAGE);
        if window == 0 {
            return all;
        }
        // Positions pos0 + 1 - W ..= pos0 + n - 1 of a batch, over at most one more page than
        // they fill.
        ((window + n_batch - 1).div_ceil(PAGE) + 1).min(all)
    }

    /// Pages of the group's pool for `n_seq` sequences: the live pages of one sequence, one
    /// spare page per sequence (for a shared page copied on write), and for sliding windows
    /// the live pages of every sequence plus the committed window a failed call restores.
    fn pool_pages(window: usize, n_ctx: usize, n_batch: usize, n_seq: usize) -> Option<usize> {
        let live = Self::live_pages(window, n_ctx, n_batch);
        if window == 0 {
            return live.checked_add(n_seq);
        }
        let committed = Self::live_pages(window, n_ctx, 1);
        live.checked_add(1)?.checked_mul(n_seq)?.checked_add(committed)
    }
}

/// One group's page table of one sequence, plus what its open transaction must undo.
#[derive(Debug)]
struct Table {
    /// Logical page -> physical page, or NONE (not written yet, or released).
    pages: Vec<u32>,
    /// A page this transaction replaced by a private copy: (logical page, original). The
    /// original's reference is dropped at commit and the page restored at rollback.
    cow: Option<(usize, u32)>,
}

/// One sequence: the positions it holds and its page tables (one per group).
#[derive(Debug)]
struct Seq {
    /// Positions written and committed.
    len: usize,
    /// `len` when the open transaction began (equal to `len` when none is open).
    base: usize,
    /// The open transaction keeps every position from here on, whatever the windows (see
    /// [`KvCache::keep_from`]); usize::MAX when unset.
    keep: usize,
    tables: Vec<Table>,
}

/// Where a batch token's keys and values go, and what it attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The sequence.
    pub seq: usize,
    /// Position of the span's first token.
    pub pos: usize,
    /// Tokens in the span (consecutive positions).
    pub n: usize,
}

/// Keys and values of every sequence, in reference-counted pages (see the module docs).
#[derive(Debug)]
pub struct KvCache {
    /// Positions one sequence can hold.
    pub n_ctx: usize,
    /// Element type.
    pub kv_type: KvType,
    /// Most positions one call writes to a sequence.
    n_batch: usize,
    n_kv_head: usize,
    head_dim: usize,
    groups: Vec<Group>,
    /// Sliding-window groups release the pages out of every window (false: they keep every
    /// position, as a full cache with a window mask would; for tests).
    release: bool,
    /// Per model layer: (group, layer index inside the group).
    layer_at: Vec<(usize, usize)>,
    seqs: Vec<Seq>,
}

/// The distinct attention windows of a model's layers, in order of first use, and each layer's
/// (group, index inside the group).
fn groups_of(hp: &HParams) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut windows: Vec<usize> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    let mut at = Vec::with_capacity(hp.n_layer);
    for l in 0..hp.n_layer {
        let w = if hp.layer_sliding[l] {
            hp.sliding_window
        } else {
            0
        };
        let g = match windows.iter().position(|&x| x == w) {
            Some(g) => g,
            None => {
                windows.push(w);
                counts.push(0);
                windows.len() - 1
            }
        };
        at.push((g, counts[g]));
        counts[g] += 1;
    }
    (windows, at)
}

/// Sequence slots of a cache for searches of up to `n_seq_max` sequences, and how many of them
/// hold pages of their own at once. Beside sequence 0 (the context) and the prompt's, a search
/// keeps its current sequences and forks the next ones from them before releasing them:
/// 2 n + 2 slots, of which n + 1 own pages (forks share their parents').
/// A session for one sequence still has the slots of a one-beam search, but its pools are
/// sized for its own sequence alone (a search then needs the room [`KvCache::search_room`]
/// finds, which sliding windows do not leave).
fn slots_for(n_seq_max: usize) -> (usize, usize) {
    let n = n_seq_max.max(1);
    (2 * n + 2, if n == 1 { 1 } else { n + 1 })
}

impl KvCache {
    /// Bytes a cache for searches of up to `n_seq_max` sequences of up to `n_ctx` positions,
    /// written in batches of up to `n_batch`, takes for these hyper-parameters (with `release`
    /// false: sliding-window layers keeping every position, see [`KvCache::with_windows`]).
    pub fn bytes_for(
        hp: &HParams,
        n_ctx: usize,
        n_seq_max: usize,
        n_batch: usize,
        kv_type: KvType,
        release: bool,
    ) -> Option<usize> {
        let n_seq = slots_for(n_seq_max).1;
        let (windows, at) = groups_of(hp);
        let row = kv_type.row_bytes(hp.head_dim);
        let mut total = 0usize;
        for (g, &w) in windows.iter().enumerate() {
            let n_layer = at.iter().filter(|&&(gg, _)| gg == g).count();
            let pages = Group::pool_pages(if release { w } else { 0 }, n_ctx, n_batch, n_seq)?;
            let bytes = pages
                .checked_mul(n_layer)?
                .checked_mul(hp.n_kv_head)?
                .checked_mul(PAGE)?
                .checked_mul(row)?
                .checked_mul(2)?;
            total = total.checked_add(bytes)?;
        }
        Some(total)
    }

    /// An empty cache for searches of up to `n_seq_max` sequences of up to `n_ctx` positions
    /// each, written in batches of up to `n_batch` tokens.
    pub fn new(
        hp: &HParams,
        n_ctx: usize,
        n_seq_max: usize,
        n_batch: usize,
        kv_type: KvType,
    ) -> Result<Self> {
        Self::with_windows(hp, n_ctx, n_seq_max, n_batch, kv_type, true)
    }

    /// [`KvCache::new`], or with `release` false a cache whose sliding-window layers keep
    /// every position (the reference a window-sized cache is tested against).
    pub fn with_windows(
        hp: &HParams,
        n_ctx: usize,
        n_seq_max: usize,
        n_batch: usize,
        kv_type: KvType,
        release: bool,
    ) -> Result<Self> {
        let (n_slots, n_seq) = slots_for(n_seq_max);
        if kv_type == KvType::Int8 && !hp.head_dim.is_multiple_of(32) {
            return Err(Error::Unsupported(format!(
                "an int8 KV cache needs head_dim divisible by 32; this model has {}",
                hp.head_dim
            )));
        }
        let (windows, layer_at) = groups_of(hp);
        let overflow = || Error::OutOfMemory(format!("a KV cache of n_ctx = {n_ctx} overflows"));
        let mut groups = Vec::with_capacity(windows.len());
        for (g, &window) in windows.iter().enumerate() {
            let n_layer = layer_at.iter().filter(|&&(gg, _)| gg == g).count();
            let sized_as = if release { window } else { 0 };
            let pages = Group::pool_pages(sized_as, n_ctx, n_batch, n_seq).ok_or_else(overflow)?;
            if pages >= NONE as usize {
                return Err(overflow());
            }
            let rows = checked_len(&[pages, n_layer, hp.n_kv_head, PAGE])?;
            let mut free = Vec::new();
            free.try_reserve_exact(pages)
                .map_err(|_| Error::OutOfMemory("KV page list".into()))?;
            free.extend((0..pages as u32).rev());
            groups.push(Group {
                window,
                n_layer,
                k: KvStore::new(kv_type, rows, hp.head_dim)?,
                v: KvStore::new(kv_type, rows, hp.head_dim)?,
                refs: zeroed(pages)?,
                free,
            });
        }
        let per_seq = n_ctx.div_ceil(PAGE);
        let mut seqs = Vec::with_capacity(n_slots);
        for _ in 0..n_slots {
            let mut tables = Vec::with_capacity(groups.len());
            for _ in 0..groups.len() {
                let mut pages = Vec::new();
                pages
                    .try_reserve_exact(per_seq)
                    .map_err(|_| Error::OutOfMemory("KV page table".into()))?;
                pages.resize(per_seq, NONE);
                tables.push(Table { pages, cow: None });
            }
            seqs.push(Seq {
                len: 0,
                base: 0,
                keep: usize::MAX,
                tables,
            });
        }
        Ok(KvCache {
            n_ctx,
            kv_type,
            n_batch,
            n_kv_head: hp.n_kv_head,
            head_dim: hp.head_dim,
            groups,
            release,
            layer_at,
            seqs,
        })
    }

    /// Bytes of keys and values this cache allocated: what [`KvCache::bytes_for`] gives for
    /// its parameters.
    pub fn bytes(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.k.bytes().len() + g.v.bytes().len())
            .sum()
    }

    /// Sequence slots (1, or 2 n_seq_max + 2 for searches).
    pub fn n_slots(&self) -> usize {
        self.seqs.len()
    }

    /// Committed positions of sequence `seq`.
    pub fn len(&self, seq: usize) -> usize {
        self.seqs[seq].len
    }

    /// Whether `seq` still holds every position a token at `pos` (after a truncation to
    /// `pos`) attends to.
    pub fn can_truncate(&self, seq: usize, pos: usize) -> bool {
        if pos == 0 {
            return true;
        }
        let s = &self.seqs[seq];
        self.groups.iter().zip(&s.tables).all(|(g, t)| {
            let need = if g.window == 0 {
                0
            } else {
                (pos + 1).saturating_sub(g.window)
            };
            (need / PAGE..pos.div_ceil(PAGE)).all(|j| t.pages[j] != NONE)
        })
    }

    /// Opens a transaction on `seq` (a call about to write it).
    pub fn begin(&mut self, seq: usize) {
        let s = &mut self.seqs[seq];
        s.base = s.len;
        s.keep = usize::MAX;
        for t in &mut s.tables {
            t.cow = None;
        }
    }

    /// Within the open transaction on `seq`, keeps every position a token at `pos` attends
    /// to, whatever is written after it: the transaction writes ahead of `pos` and then again
    /// from `pos` (the options of a choice, each after the same prompt).
    pub fn keep_from(&mut self, seq: usize, pos: usize) {
        let from = (0..self.groups.len())
            .map(|g| self.window_from(g, pos))
            .min()
            .unwrap_or(pos);
        self.seqs[seq].keep = from;
    }

    /// First position the window of a token at `pos` covers in group `g`.
    fn window_from(&self, g: usize, pos: usize) -> usize {
        match self.groups[g].window {
            0 => 0,
            w => (pos + 1).saturating_sub(w),
        }
    }

    /// Makes sure `seq` has private pages for positions `pos..pos + n` (within `n_ctx`),
    /// copying shared ones, and releases the pages of sliding groups that no token from
    /// `pos` on can see (those this transaction wrote; committed ones wait for the commit).
    /// Fails when the pool is exhausted, changing nothing the rollback cannot undo.
    pub fn prepare(&mut self, seq: usize, pos: usize, n: usize) -> Result<()> {
        debug_assert!(n > 0 && pos + n <= self.n_ctx);
        let base = self.seqs[seq].base;
        for g in 0..self.groups.len() {
            let window = self.groups[g].window;
            if window > 0 && self.release {
                // This call's own pages below the window of its first token (and below what
                // it keeps).
                let below = (pos + 1).saturating_sub(window).min(self.seqs[seq].keep) / PAGE;
                for j in base.div_ceil(PAGE)..below {
                    self.release(seq, g, j);
                }
            }
            for j in pos / PAGE..=(pos + n - 1) / PAGE {
                let page = self.seqs[seq].tables[g].pages[j];
                if page == NONE {
                    let fresh = self.alloc(g)?;
                    self.seqs[seq].tables[g].pages[j] = fresh;
                } else if self.groups[g].refs[page as usize] > 1 {
                    let fresh = self.alloc(g)?;
                    // Only the rows below `pos` hold this sequence's keys and values.
                    self.copy_page(g, page, fresh, pos.saturating_sub(j * PAGE).min(PAGE));
                    let t = &mut self.seqs[seq].tables[g];
                    t.pages[j] = fresh;
                    if j * PAGE < base {
                        // A committed page: keep it until the commit, restore it on rollback.
                        debug_assert!(t.cow.is_none());
                        t.cow = Some((j, page));
                    } else {
                        self.groups[g].refs[page as usize] -= 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the transaction on `seq` successfully: it now holds its first `len` positions
    /// (what the transaction wrote past them is dropped).
    pub fn commit(&mut self, seq: usize, len: usize) {
        for g in 0..self.groups.len() {
            if let Some((_, old)) = self.seqs[seq].tables[g].cow.take() {
                self.unref(g, old);
            }
            let n_pages = self.seqs[seq].tables[g].pages.len();
            for j in len.div_ceil(PAGE)..n_pages {
                self.release(seq, g, j);
            }
            let window = self.groups[g].window;
            if window > 0 && self.release {
                let below = (len + 1).saturating_sub(window) / PAGE;
                for j in 0..below {
                    self.release(seq, g, j);
                }
            }
        }
        let s = &mut self.seqs[seq];
        s.len = len;
        s.base = len;
        s.keep = usize::MAX;
    }

    /// Ends the transaction on `seq` undoing it: the pages it took go back, the pages it
    /// replaced come back.
    pub fn rollback(&mut self, seq: usize) {
        let base = self.seqs[seq].base;
        for g in 0..self.groups.len() {
            let n_pages = self.seqs[seq].tables[g].pages.len();
            for j in base.div_ceil(PAGE)..n_pages {
                self.release(seq, g, j);
            }
            if let Some((j, old)) = self.seqs[seq].tables[g].cow.take() {
                self.release(seq, g, j);
                self.seqs[seq].tables[g].pages[j] = old;
            }
        }
        self.seqs[seq].len = base;
        self.seqs[seq].keep = usize::MAX;
    }

    /// Shortens `seq` to `len` positions (no transaction may be open), releasing the pages
    /// past them. The caller checks [`KvCache::can_truncate`] first when it needs the
    /// sliding windows intact.
    pub fn truncate(&mut self, seq: usize, len: usize) {
        debug_assert!(len <= self.seqs[seq].len);
        for g in 0..self.groups.len() {
            let n_pages = self.seqs[seq].tables[g].pages.len();
            for j in len.div_ceil(PAGE)..n_pages {
                self.release(seq, g, j);
            }
        }
        let s = &mut self.seqs[seq];
        s.len = len;
        s.base = len;
    }

    /// Makes `dst` a copy of `src` (no transaction open on either) that shares its pages;
    /// whatever `dst` held is released.
    pub fn fork(&mut self, src: usize, dst: usize) {
        if src == dst {
            return;
        }
        self.truncate(dst, 0);
        for g in 0..self.groups.len() {
            for j in 0..self.seqs[src].tables[g].pages.len() {
                let page = self.seqs[src].tables[g].pages[j];
                if page != NONE {
                    self.groups[g].refs[page as usize] += 1;
                }
                self.seqs[dst].tables[g].pages[j] = page;
            }
        }
        let len = self.seqs[src].len;
        let d = &mut self.seqs[dst];
        d.len = len;
        d.base = len;
    }

    /// Exchanges the contents of two sequences.
    pub fn swap(&mut self, a: usize, b: usize) {
        self.seqs.swap(a, b);
    }

    /// Tokens each of `n` sequences can generate in a search that first grows a fork of `seq`
    /// to `base` positions (the prompt) and then forks the `n` sequences from it: within
    /// `n_ctx`, and within the free pages of the full-attention group, where the prompt owns
    /// its pages past `seq`'s full ones and each sequence its pages past the prompt's full
    /// ones, plus one while its next page is being copied. `None` when a sliding-window pool
    /// cannot hold the windows of the prompt and the `n` sequences (a session created for one
    /// sequence).
    pub fn search_room(&self, seq: usize, base: usize, n: usize) -> Option<usize> {
        let mut room = self.n_ctx.saturating_sub(base);
        let len = self.seqs[seq].len;
        for grp in &self.groups {
            if grp.window == 0 || !self.release {
                let prompt = base.div_ceil(PAGE) - len / PAGE;
                let per_seq = (grp.free.len().saturating_sub(prompt) / n.max(1)).saturating_sub(1);
                room = room.min(((base / PAGE + per_seq) * PAGE).saturating_sub(base));
            } else {
                let batch = Group::live_pages(grp.window, self.n_ctx, self.n_batch) + 1;
                let step = Group::live_pages(grp.window, self.n_ctx, 1) + 1;
                if grp.free.len() < batch + n * step {
                    return None;
                }
            }
        }
        Some(room)
    }

    /// The smallest `n_ctx` whose cache lets `beams` sequences each generate `n_gen` tokens
    /// after a context of `base` positions (see [`KvCache::search_room`]): the context's
    /// pages, the prompt sequence's copy of a partial last page, and per sequence its pages
    /// past the context plus one being copied; the pool adds one spare page per sequence.
    pub fn n_ctx_for_search(base: usize, n_gen: usize, beams: usize) -> usize {
        let context = base.div_ceil(PAGE);
        let prompt_copy = context - base / PAGE;
        let per_seq = (base + n_gen).div_ceil(PAGE) - base / PAGE + 1;
        let pages = context + prompt_copy + beams * per_seq;
        let spare = beams + 1;
        (pages.saturating_sub(spare) * PAGE).max(base + n_gen)
    }

    fn alloc(&mut self, g: usize) -> Result<u32> {
        let grp = &mut self.groups[g];
        let page = grp.free.pop().ok_or_else(|| {
            Error::OutOfMemory(format!(
                "the KV cache has no free page left ({} pages of {PAGE} positions); \
                 the sequences together need more positions than the session holds",
                grp.refs.len()
            ))
        })?;
        grp.refs[page as usize] = 1;
        Ok(page)
    }

    /// Drops one reference to `page`, freeing it when none is left.
    fn unref(&mut self, g: usize, page: u32) {
        let grp = &mut self.groups[g];
        let r = &mut grp.refs[page as usize];
        debug_assert!(*r > 0);
        *r -= 1;
        if *r == 0 {
            grp.free.push(page);
        }
    }

    /// Releases logical page `j` of `seq` in group `g`, if it holds one.
    fn release(&mut self, seq: usize, g: usize, j: usize) {
        let page = std::mem::replace(&mut self.seqs[seq].tables[g].pages[j], NONE);
        if page != NONE {
            self.unref(g, page);
        }
    }

    /// First position of group `g` a sequence of `n_past` positions must keep: 0 for full
    /// attention, the window of the next token for a sliding group.
    fn kept_from(&self, g: usize, n_past: usize) -> usize {
        if !self.release || n_past == 0 {
            0
        } else {
            self.window_from(g, n_past)
        }
    }

    /// Bytes [`KvCache::export`] writes for sequence 0 of `n_past` positions.
    pub fn state_len(&self, n_past: usize) -> usize {
        let rb = self.kv_type.row_bytes(self.head_dim);
        (0..self.groups.len())
            .map(|g| {
                let rows = n_past.min(self.n_ctx) - self.kept_from(g, n_past.min(self.n_ctx));
                2 * self.groups[g].n_layer * self.n_kv_head * rows * rb
            })
            .sum()
    }

    /// Calls `f(group, store, row)` for every row sequence 0 keeps of its `n_past` positions:
    /// keys then values, per group, layer and kv head, in position order. The only
    /// description of the saved layout is here.
    fn state_rows(&self, n_past: usize, mut f: impl FnMut(usize, usize, usize)) {
        for store in 0..2 {
            for g in 0..self.groups.len() {
                let from = self.kept_from(g, n_past);
                for lg in 0..self.groups[g].n_layer {
                    for kv_head in 0..self.n_kv_head {
                        for pos in from..n_past {
                            let page = self.seqs[0].tables[g].pages[pos / PAGE] as usize;
                            let n_layer = self.groups[g].n_layer;
                            let row = ((page * n_layer + lg) * self.n_kv_head + kv_head) * PAGE
                                + pos % PAGE;
                            f(g, store, row);
                        }
                    }
                }
            }
        }
    }

    /// A 64-bit FNV-1a digest of the rows sequence 0 keeps of its first `n` positions (what
    /// [`KvCache::export`] writes), continuing from `h`: with
    /// [`crate::session::Session::state_digest`], how tests check that a failed call left
    /// the context exactly as it was.
    pub fn digest_below(&self, n: usize, mut h: u64) -> u64 {
        let rb = self.kv_type.row_bytes(self.head_dim);
        self.state_rows(n.min(self.seqs[0].len), |g, store, row| {
            let grp = &self.groups[g];
            let s = if store == 0 { &grp.k } else { &grp.v };
            h = crate::mem::fnv1a(h, &s.bytes()[row * rb..(row + 1) * rb]);
        });
        h
    }

    /// Appends the rows sequence 0 keeps of its first `n_past` positions to `out` (the
    /// sliding-window groups only their window).
    pub fn export(&self, n_past: usize, out: &mut Vec<u8>) {
        let rb = self.kv_type.row_bytes(self.head_dim);
        let n_past = n_past.min(self.seqs[0].len);
        self.state_rows(n_past, |g, store, row| {
            let grp = &self.groups[g];
            let s = if store == 0 { &grp.k } else { &grp.v };
            out.extend_from_slice(&s.bytes()[row * rb..(row + 1) * rb]);
        });
    }

    /// Replaces sequence 0 with `n_past` positions from what [`KvCache::export`] wrote (no
    /// other sequence may hold pages). Checks the length first: on error the cache is
    /// unchanged.
    pub fn import(&mut self, n_past: usize, bytes: &[u8]) -> Result<()> {
        if n_past > self.n_ctx || bytes.len() != self.state_len(n_past) {
            return Err(Error::State(crate::error::StateError::Truncated));
        }
        self.truncate(0, 0);
        for g in 0..self.groups.len() {
            let from = self.kept_from(g, n_past);
            if n_past > 0 {
                for j in from / PAGE..=(n_past - 1) / PAGE {
                    let page = self.alloc(g)?;
                    self.seqs[0].tables[g].pages[j] = page;
                }
            }
        }
        let rb = self.kv_type.row_bytes(self.head_dim);
        let mut rows = Vec::new();
        self.state_rows(n_past, |g, store, row| rows.push((g, store, row)));
        for ((g, store, row), from) in rows.into_iter().zip(bytes.chunks_exact(rb.max(1))) {
            let grp = &mut self.groups[g];
            let s = if store == 0 { &mut grp.k } else { &mut grp.v };
            s.bytes_mut()[row * rb..(row + 1) * rb].copy_from_slice(from);
        }
        let s = &mut self.seqs[0];
        s.len = n_past;
        s.base = n_past;
        Ok(())
    }

    /// Rows of one page in a group's store.
    fn page_rows(&self, g: usize) -> usize {
        self.groups[g].n_layer * self.n_kv_head * PAGE
    }

    /// Copies the first `rows` positions of page `from` to page `to`, for every (layer, kv
    /// head) of the group: a page is `n_layer * n_kv_head` runs of [`PAGE`] rows.
    fn copy_page(&mut self, g: usize, from: u32, to: u32, rows: usize) {
        let rb = self.kv_type.row_bytes(self.head_dim);
        let len = self.page_rows(g) * rb;
        let (run, used) = (PAGE * rb, rows * rb);
        let grp = &mut self.groups[g];
        for store in [&mut grp.k, &mut grp.v] {
            let bytes = store.bytes_mut();
            let (src, dst) = (from as usize * len, to as usize * len);
            for r in (0..len).step_by(run) {
                bytes.copy_within(src + r..src + r + used, dst + r);
            }
        }
    }

    /// Row of (layer, kv head, position) of `seq` in its group's store. The page must exist.
    fn row(&self, seq: usize, layer: usize, kv_head: usize, pos: usize) -> (usize, usize) {
        let (g, lg) = self.layer_at[layer];
        let page = self.seqs[seq].tables[g].pages[pos / PAGE];
        debug_assert!(page != NONE, "position {pos} of sequence {seq} has no page");
        let n_layer = self.groups[g].n_layer;
        let row = ((page as usize * n_layer + lg) * self.n_kv_head + kv_head) * PAGE + pos % PAGE;
        (g, row)
    }

    /// Stores the key and value head vectors of (layer, kv head) at `pos` of `seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        kern: &Kernels,
        seq: usize,
        layer: usize,
        kv_head: usize,
        pos: usize,
        k: &[f32],
        v: &[f32],
        tmp: &mut [BlockQ8A],
    ) {
        let (g, row) = self.row(seq, layer, kv_head, pos);
        let grp = &mut self.groups[g];
        grp.k.put(kern, row, k, tmp);
        grp.v.put(kern, row, v, tmp);
    }

    /// The attention window of a token at `pos` on `layer`: its first position.
    pub fn window_start(&self, layer: usize, pos: usize) -> usize {
        self.window_from(self.layer_at[layer].0, pos)
    }

    /// Whether sequences `a` and `b` read position `pos` of `layer` from the same page (one
    /// they share since a fork, so its rows are the same for both).
    pub fn same_page(&self, a: usize, b: usize, layer: usize, pos: usize) -> bool {
        let g = self.layer_at[layer].0;
        let page = |seq: usize| self.seqs[seq].tables[g].pages.get(pos / PAGE).copied();
        let pa = page(a);
        pa.is_some_and(|p| p != NONE) && pa == page(b)
    }

    /// Calls `f(first, keys, values)` for each run of positions `first..first + rows` of
    /// `positions` in `seq` that one page holds, in position order; keys and values of
    /// (layer, kv head) as matrices of `rows` rows.
    pub fn for_each_run<'a>(
        &'a self,
        seq: usize,
        layer: usize,
        kv_head: usize,
        positions: std::ops::Range<usize>,
        mut f: impl FnMut(usize, QMatrix<'a>, QMatrix<'a>),
    ) {
        let rb = self.kv_type.row_bytes(self.head_dim);
        let mut pos = positions.start;
        while pos < positions.end {
            let end = ((pos / PAGE + 1) * PAGE).min(positions.end);
            let (g, row) = self.row(seq, layer, kv_head, pos);
            let grp = &self.groups[g];
            let bytes = row * rb..(row + end - pos) * rb;
            let mat = |store: &'a KvStore| QMatrix {
                dtype: self.kv_type.dtype(),
                rows: end - pos,
                cols: self.head_dim,
                data: &store.bytes()[bytes.clone()],
            };
            f(pos, mat(&grp.k), mat(&grp.v));
            pos = end;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Hyper-parameters of a tiny model: 3 layers, the middle one sliding over `window`.
    pub(crate) fn hp(window: usize) -> HParams {
        HParams {
            arch: crate::model::Arch::Llama,
            n_layer: 3,
            d_model: 64,
            n_head: 2,
            n_kv_head: 1,
            head_dim: 32,
            d_ff: 128,
            n_vocab: 16,
            n_ctx_train: 4096,
            rope_dim: 32,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_theta_local: 10000.0,
            rope_scale: 1.0,
            rope_scaling: crate::model::RopeScaling::None,
            rope_pairs: crate::model::RopePairs::Adjacent,
            activation: crate::model::Activation::Silu,
            tied: true,
            qkv_bias: false,
            qk_norm: false,
            post_norms: false,
            sliding_window: window,
            layer_sliding: vec![false, window > 0, false],
            embed_scale: 1.0,
            attn_scale: 1.0,
            attn_softcap: None,
            final_logit_softcap: None,
        }
    }

    fn total_refs(kv: &KvCache) -> Vec<u32> {
        kv.groups.iter().map(|g| g.refs.iter().sum()).collect()
    }

    #[test]
    fn fork_shares_pages_and_writes_copy_only_the_shared_page() {
        let hp = hp(0);
        let mut kv = KvCache::new(&hp, 256, 2, 64, KvType::F32).unwrap();
        kv.begin(0);
        kv.prepare(0, 0, 40).unwrap();
        kv.commit(0, 40);
        let free0 = kv.groups[0].free.len();
        kv.fork(0, 1);
        assert_eq!(kv.groups[0].free.len(), free0, "a fork takes no page");
        kv.begin(1);
        kv.prepare(1, 40, 1).unwrap();
        kv.commit(1, 41);
        // Page 1 (positions 32..64) was shared: sequence 1 got a copy; page 0 stays shared.
        assert_eq!(kv.groups[0].free.len(), free0 - 1);
        assert_eq!(kv.seqs[0].tables[0].pages[0], kv.seqs[1].tables[0].pages[0]);
        assert_ne!(kv.seqs[0].tables[0].pages[1], kv.seqs[1].tables[0].pages[1]);
        kv.truncate(1, 0);
        kv.truncate(0, 0);
        assert_eq!(total_refs(&kv), vec![0]);
        assert_eq!(kv.groups[0].free.len(), kv.groups[0].refs.len());
    }

    #[test]
    fn a_cache_allocates_what_bytes_for_computes() {
        let types = [(1, KvType::F16), (64, KvType::F32), (7, KvType::Int8)];
        for window in [0, 1, 31, 32, 100] {
            let hp = hp(window);
            for n_ctx in [1, 33, 500, 4096] {
                for n_seq in [1, 3] {
                    for (n_batch, ty) in types {
                        for release in [true, false] {
                            let kv = KvCache::with_windows(&hp, n_ctx, n_seq, n_batch, ty, release)
                                .unwrap();
                            let want = KvCache::bytes_for(&hp, n_ctx, n_seq, n_batch, ty, release);
                            assert_eq!(Some(kv.bytes()), want, "window {window} n_ctx {n_ctx}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_cache_sized_for_a_search_has_room_for_it() {
        let hp = hp(0);
        for base in [1, 5, 31, 32, 33, 100] {
            for n_gen in [1, 8, 31, 40, 64] {
                for beams in [1, 2, 4, 7] {
                    let n_ctx = KvCache::n_ctx_for_search(base, n_gen, beams);
                    let mut kv = KvCache::new(&hp, n_ctx, beams.max(2), 64, KvType::F16).unwrap();
                    kv.begin(0);
                    kv.prepare(0, 0, base).unwrap();
                    kv.commit(0, base);
                    let room = kv.search_room(0, base, beams).unwrap();
                    assert!(room >= n_gen, "base {base} n_gen {n_gen} beams {beams}: {room}");
                }
            }
        }
    }

    #[test]
    fn rollback_restores_pages_and_references() {
        let hp = hp(0);
        let mut kv = KvCache::new(&hp, 256, 2, 64, KvType::F16).unwrap();
        kv.begin(0);
        kv.prepare(0, 0, 40).unwrap();
        kv.commit(0, 40);
        kv.fork(0, 1);
        let before: Vec<u32> = kv.seqs[0].tables[0].pages.clone();
        let refs = total_refs(&kv);
        kv.begin(0);
        kv.prepare(0, 40, 64).unwrap();
        kv.rollback(0);
        assert_eq!(kv.seqs[0].tables[0].pages, before);
        assert_eq!(total_refs(&kv), refs);
        assert_eq!(kv.len(0), 40);
    }

    #[test]
    fn sliding_groups_keep_the_window_and_a_failed_call_keeps_it_too() {
        let hp = hp(40);
        let mut kv = KvCache::new(&hp, 1024, 1, 16, KvType::F32).unwrap();
        let pool = kv.groups[1].refs.len();
        // Decode-sized steps far past the window never exhaust the window's pool.
        for pos in 0..600 {
            kv.begin(0);
            kv.prepare(0, pos, 1).unwrap();
            kv.commit(0, pos + 1);
        }
        assert!(kv.can_truncate(0, 600));
        assert!(!kv.can_truncate(0, 500), "positions before the window are gone");
        let held = kv.groups[1].refs.iter().filter(|&&r| r > 0).count();
        assert!(held <= 3, "{held} pages held for a window of 40");
        // A call of several batches that fails restores the committed window.
        let before: Vec<u32> = kv.seqs[0].tables[1].pages.clone();
        kv.begin(0);
        for b in 0..8 {
            kv.prepare(0, 600 + 16 * b, 16).unwrap();
        }
        kv.rollback(0);
        assert_eq!(kv.seqs[0].tables[1].pages, before);
        assert!(kv.can_truncate(0, 600));
        assert_eq!(
            kv.groups[1].free.len() + held,
            pool,
            "rollback returned every page the call took"
        );
    }
}
