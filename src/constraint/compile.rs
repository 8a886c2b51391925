//! From the IR to automata: rules that are not recursive (and not marked `keep`) are
//! inlined; each remaining rule becomes a DFA over byte classes whose edges may also call
//! another rule. All rules' states live in one numbering.

use std::collections::HashMap;

use super::ir::{ByteSet, Expr, Grammar};
use crate::mem::{sort_by, sort_u32_by};
use crate::{Error, Result};

/// Compile limits: past them the compiler stops with an error instead of growing.
pub const MAX_NFA_STATES: usize = 400_000;
pub const MAX_DFA_STATES: usize = 60_000;
pub const MAX_RULES: usize = 20_000;
/// Bound on compile work (NFA construction steps, plus the subset construction's set scans
/// and the sets it builds and interns), so that no input compiles for long: about 0.4 s in
/// an optimized build, where the first bound (counting only the scans) let a fuzzed regex
/// run 2 s (42 s under AddressSanitizer) before its refusal.
pub const MAX_WORK: u64 = 50_000_000;

pub const DEAD: u32 = u32::MAX;
pub const INF: u32 = u32::MAX / 4;

/// The compiled automata.
#[derive(Debug)]
pub struct Automata {
    /// Byte → class.
    pub class_of: [u8; 256],
    pub n_class: usize,
    /// `trans[s * n_class + c]`: next state or DEAD.
    pub trans: Vec<u32>,
    /// Calls out of state s: `calls[call_lo[s]..call_lo[s + 1]]` = (rule, return state).
    pub call_lo: Vec<u32>,
    pub calls: Vec<(u32, u32)>,
    pub accept: Vec<bool>,
    /// Whether any byte leaves the state.
    pub has_bytes: Vec<bool>,
    /// Fewest bytes from the state to the end of its rule.
    pub dist: Vec<u32>,
    /// Start state of each compiled rule (DEAD for inlined ones).
    pub rule_start: Vec<u32>,
    /// Fewest bytes a rule produces.
    pub rule_min: Vec<u32>,
    pub root: u32,
    pub names: Vec<String>,
}

impl Automata {
    #[inline]
    pub fn step(&self, s: u32, b: u8) -> u32 {
        self.trans[s as usize * self.n_class + self.class_of[b as usize] as usize]
    }
    #[inline]
    pub fn calls_of(&self, s: u32) -> &[(u32, u32)] {
        &self.calls[self.call_lo[s as usize] as usize..self.call_lo[s as usize + 1] as usize]
    }
    pub fn n_states(&self) -> usize {
        self.accept.len()
    }
}

fn too_large(what: &str) -> Error {
    Error::InvalidArgument(format!("grammar too large: more than {what}"))
}

/// Which rules stay separate: the root, `keep` ones and the targets of back edges of a
/// depth-first walk from the root (cutting every cycle). Unreachable rules are dropped.
fn kept_rules(g: &Grammar) -> Result<Vec<bool>> {
    let n = g.rules.len();
    if n > MAX_RULES {
        return Err(too_large(&format!("{MAX_RULES} rules")));
    }
    let mut refs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in g.rules.iter().enumerate() {
        collect_refs(r, &mut refs[i]);
        for &t in &refs[i] {
            if t >= n {
                return Err(Error::Internal(format!("rule {i} references rule {t}")));
            }
        }
    }
    let mut keep = g.keep.clone();
    keep.resize(n, false);
    keep[g.root] = true;
    // 0 = unseen, 1 = on the stack, 2 = done.
    let mut color = vec![0u8; n];
    let mut stack: Vec<(usize, usize)> = vec![(g.root, 0)];
    color[g.root] = 1;
    while let Some(&mut (r, ref mut i)) = stack.last_mut() {
        if let Some(&t) = refs[r].get(*i) {
            *i += 1;
            match color[t] {
                0 => {
                    color[t] = 1;
                    stack.push((t, 0));
                }
                1 => keep[t] = true,
                _ => {}
            }
        } else {
            color[r] = 2;
            stack.pop();
        }
    }
    for (k, c) in keep.iter_mut().zip(&color) {
        *k &= *c != 0;
    }
    Ok(keep)
}

fn collect_refs(e: &Expr, out: &mut Vec<usize>) {
    match e {
        Expr::Bytes(_) => {}
        Expr::Seq(v) | Expr::Alt(v) => v.iter().for_each(|x| collect_refs(x, out)),
        Expr::Repeat(x, _, _) => collect_refs(x, out),
        Expr::Ref(r) => out.push(*r),
        Expr::SepList(items, sep) => {
            items.iter().for_each(|(x, _)| collect_refs(x, out));
            collect_refs(sep, out);
        }
    }
}

fn collect_sets(e: &Expr, out: &mut Vec<ByteSet>) {
    match e {
        Expr::Bytes(s) => out.push(*s),
        Expr::Seq(v) | Expr::Alt(v) => v.iter().for_each(|x| collect_sets(x, out)),
        Expr::Repeat(x, _, _) => collect_sets(x, out),
        Expr::Ref(_) => {}
        Expr::SepList(items, sep) => {
            items.iter().for_each(|(x, _)| collect_sets(x, out));
            collect_sets(sep, out);
        }
    }
}

/// A Thompson NFA for one rule.
#[derive(Default)]
struct Nfa {
    work: u64,
    eps: Vec<Vec<u32>>,
    bytes: Vec<Vec<(ByteSet, u32)>>,
    calls: Vec<Vec<(u32, u32)>>,
}

impl Nfa {
    fn state(&mut self) -> Result<u32> {
        if self.eps.len() >= MAX_NFA_STATES {
            return Err(too_large(&format!("{MAX_NFA_STATES} NFA states")));
        }
        self.eps.push(Vec::new());
        self.bytes.push(Vec::new());
        self.calls.push(Vec::new());
        Ok(self.eps.len() as u32 - 1)
    }

    /// Adds `e` between `from` and a new end state, which it returns.
    fn build(
        &mut self,
        g: &Grammar,
        keep: &[bool],
        e: &Expr,
        from: u32,
        depth: usize,
    ) -> Result<u32> {
        if depth > 2_000 {
            return Err(too_large("2000 levels of nesting and inlining"));
        }
        self.work += 1;
        if self.work > MAX_WORK {
            return Err(too_large("the compile work bound"));
        }
        Ok(match e {
            Expr::Bytes(s) => {
                let to = self.state()?;
                if !s.is_empty() {
                    self.bytes[from as usize].push((*s, to));
                }
                to
            }
            Expr::Seq(v) => {
                let mut cur = from;
                for x in v {
                    cur = self.build(g, keep, x, cur, depth + 1)?;
                }
                cur
            }
            Expr::Alt(v) => {
                let to = self.state()?;
                for x in v {
                    let s = self.state()?;
                    self.eps[from as usize].push(s);
                    let end = self.build(g, keep, x, s, depth + 1)?;
                    self.eps[end as usize].push(to);
                }
                to
            }
            Expr::Repeat(x, min, max) => {
                let mut cur = from;
                for _ in 0..*min {
                    cur = self.build(g, keep, x, cur, depth + 1)?;
                }
                match max {
                    None => {
                        // cur -> loop -> x -> loop; loop -> end
                        let lp = self.state()?;
                        self.eps[cur as usize].push(lp);
                        let s = self.state()?;
                        self.eps[lp as usize].push(s);
                        let end = self.build(g, keep, x, s, depth + 1)?;
                        self.eps[end as usize].push(lp);
                        lp
                    }
                    Some(max) => {
                        let to = self.state()?;
                        self.eps[cur as usize].push(to);
                        for _ in *min..*max {
                            cur = self.build(g, keep, x, cur, depth + 1)?;
                            self.eps[cur as usize].push(to);
                        }
                        to
                    }
                }
            }
            Expr::Ref(r) => {
                if keep[*r] {
                    let to = self.state()?;
                    self.calls[from as usize].push((*r as u32, to));
                    to
                } else {
                    self.build(g, keep, &g.rules[*r], from, depth + 1)?
                }
            }
            Expr::SepList(items, sep) => {
                // Two tracks: `a` = nothing emitted yet, `b` = something emitted.
                let mut a = from;
                let mut b = self.state()?;
                for (x, required) in items {
                    let na_skip = self.state()?;
                    let nb = self.state()?;
                    let ea = self.build(g, keep, x, a, depth + 1)?;
                    self.eps[ea as usize].push(nb);
                    let s = self.build(g, keep, sep, b, depth + 1)?;
                    let eb = self.build(g, keep, x, s, depth + 1)?;
                    self.eps[eb as usize].push(nb);
                    a = if *required {
                        // The nothing-emitted track ends: this item cannot be skipped.
                        self.state()?
                    } else {
                        self.eps[a as usize].push(na_skip);
                        self.eps[b as usize].push(nb);
                        na_skip
                    };
                    b = nb;
                }
                let to = self.state()?;
                self.eps[a as usize].push(to);
                self.eps[b as usize].push(to);
                to
            }
        })
    }

    fn closure(&self, set: &mut Vec<u32>, seen: &mut [u32], mark: u32) {
        let mut i = 0;
        for &s in set.iter() {
            seen[s as usize] = mark;
        }
        while i < set.len() {
            let s = set[i] as usize;
            for &t in &self.eps[s] {
                if seen[t as usize] != mark {
                    seen[t as usize] = mark;
                    set.push(t);
                }
            }
            i += 1;
        }
        sort_u32_by(set, &mut |a, b| a.cmp(&b));
    }
}

/// Compiles `g`.
pub fn compile(g: &Grammar) -> Result<Automata> {
    if g.root >= g.rules.len() {
        return Err(Error::Internal("grammar root out of range".into()));
    }
    let keep = kept_rules(g)?;
    // Byte classes: the coarsest partition refining every byte set used.
    let mut sets = Vec::new();
    for r in &g.rules {
        collect_sets(r, &mut sets);
    }
    sort_by(&mut sets, &mut |a, b| a.0.cmp(&b.0))?;
    sets.dedup();
    let mut class_of = [0u8; 256];
    let mut n_class = 1usize;
    for s in &sets {
        let mut map: HashMap<(u8, bool), u8> = HashMap::new();
        let mut next = 0usize;
        let mut newc = [0u8; 256];
        for b in 0..256usize {
            let key = (class_of[b], s.contains(b as u8));
            let c = *map.entry(key).or_insert_with(|| {
                next += 1;
                (next - 1) as u8
            });
            newc[b] = c;
        }
        class_of = newc;
        n_class = next;
    }
    let mut rep = vec![0u8; n_class];
    for b in (0..256usize).rev() {
        rep[class_of[b] as usize] = b as u8;
    }

    let n_rules = g.rules.len();
    let mut a = Automata {
        class_of,
        n_class,
        trans: Vec::new(),
        call_lo: vec![0],
        calls: Vec::new(),
        accept: Vec::new(),
        has_bytes: Vec::new(),
        dist: Vec::new(),
        rule_start: vec![DEAD; n_rules],
        rule_min: vec![INF; n_rules],
        root: 0,
        names: g.names.clone(),
    };
    for r in 0..n_rules {
        if !keep[r] {
            continue;
        }
        let mut nfa = Nfa::default();
        let start = nfa.state()?;
        let end = nfa.build(g, &keep, &g.rules[r], start, 0)?;
        a.rule_start[r] = a.accept.len() as u32;
        determinize(&nfa, start, end, &rep, &mut a)?;
    }
    a.root = a.rule_start[g.root];
    shortest(&mut a)?;
    Ok(a)
}

/// Subset construction of one rule's NFA, appended to `a`.
fn determinize(nfa: &Nfa, start: u32, end: u32, rep: &[u8], a: &mut Automata) -> Result<()> {
    let base = a.accept.len() as u32;
    let mut seen = vec![0u32; nfa.eps.len()];
    let mut mark = 1u32;
    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut todo: Vec<Vec<u32>> = Vec::new();
    let mut first = vec![start];
    nfa.closure(&mut first, &mut seen, mark);
    ids.insert(first.clone(), base);
    todo.push(first);
    let mut k = 0;
    let mut work = 0u64;
    while k < todo.len() {
        let set = todo[k].clone();
        k += 1;
        work += (set.len() * (rep.len() + 1)) as u64;
        if work > MAX_WORK {
            return Err(too_large("the compile work bound"));
        }
        if base as usize + k > MAX_DFA_STATES {
            return Err(too_large(&format!("{MAX_DFA_STATES} DFA states")));
        }
        let mut row = vec![DEAD; a.n_class];
        for (c, &b) in rep.iter().enumerate() {
            let mut next = Vec::new();
            for &s in &set {
                for (bs, t) in &nfa.bytes[s as usize] {
                    if bs.contains(b) {
                        next.push(*t);
                    }
                }
            }
            if next.is_empty() {
                continue;
            }
            mark += 1;
            sort_u32_by(&mut next, &mut |a, b| a.cmp(&b));
            next.dedup();
            nfa.closure(&mut next, &mut seen, mark);
            work += next.len() as u64;
            row[c] = intern(&mut ids, &mut todo, next, base);
        }
        // Calls grouped by rule: one DFA edge per called rule.
        let mut by_rule: Vec<(u32, u32)> = set
            .iter()
            .flat_map(|&s| nfa.calls[s as usize].iter().copied())
            .collect();
        // The standard sort of `(u32, u32)`, which the mask computation compiles anyway.
        by_rule.sort_unstable();
        let mut calls = Vec::new();
        let mut i = 0;
        while i < by_rule.len() {
            let r = by_rule[i].0;
            let mut next = Vec::new();
            while i < by_rule.len() && by_rule[i].0 == r {
                next.push(by_rule[i].1);
                i += 1;
            }
            mark += 1;
            next.dedup();
            nfa.closure(&mut next, &mut seen, mark);
            work += next.len() as u64;
            calls.push((r, intern(&mut ids, &mut todo, next, base)));
        }
        a.has_bytes.push(row.iter().any(|&t| t != DEAD));
        a.trans.extend_from_slice(&row);
        a.calls.extend_from_slice(&calls);
        a.call_lo.push(a.calls.len() as u32);
        a.accept.push(set.binary_search(&end).is_ok());
        a.dist.push(INF);
    }
    Ok(())
}

fn intern(
    ids: &mut HashMap<Vec<u32>, u32>,
    todo: &mut Vec<Vec<u32>>,
    set: Vec<u32>,
    base: u32,
) -> u32 {
    if let Some(&id) = ids.get(&set) {
        return id;
    }
    let id = base + todo.len() as u32;
    ids.insert(set.clone(), id);
    todo.push(set);
    id
}

/// Fewest bytes to each rule's end (a byte costs 1, a call its rule's minimum): relaxation
/// to a fixed point, sweeping states backwards (Thompson order makes that quick).
fn shortest(a: &mut Automata) -> Result<()> {
    let n = a.n_states();
    for s in 0..n {
        if a.accept[s] {
            a.dist[s] = 0;
        }
    }
    let owner = {
        // rule of each state: starts are increasing in rule order of compilation
        let mut starts: Vec<(u32, usize)> = a
            .rule_start
            .iter()
            .enumerate()
            .filter(|(_, &s)| s != DEAD)
            .map(|(r, &s)| (s, r))
            .collect();
        sort_by(&mut starts, &mut |a, b| a.cmp(b))?;
        starts
    };
    loop {
        let mut changed = false;
        for s in (0..n).rev() {
            let mut best = a.dist[s];
            for c in 0..a.n_class {
                let t = a.trans[s * a.n_class + c];
                if t != DEAD {
                    best = best.min(a.dist[t as usize].saturating_add(1));
                }
            }
            for &(r, t) in a.calls_of(s as u32) {
                best = best.min(a.rule_min[r as usize].saturating_add(a.dist[t as usize]));
            }
            let best = best.min(INF);
            if best < a.dist[s] {
                a.dist[s] = best;
                changed = true;
            }
        }
        for &(s, r) in &owner {
            let d = a.dist[s as usize];
            if d < a.rule_min[r] {
                a.rule_min[r] = d;
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
    }
}

/// Rules that can call themselves without producing a byte first (left recursion) make
/// the pushdown walk unbounded: an error naming the rule.
pub fn check_left_recursion(a: &Automata) -> Result<()> {
    let n_rules = a.rule_start.len();
    // left[r] = rules r can call before any byte.
    let mut left: Vec<Vec<u32>> = vec![Vec::new(); n_rules];
    for (l, &s0) in left.iter_mut().zip(&a.rule_start) {
        if s0 == DEAD {
            continue;
        }
        let mut seen = vec![s0];
        let mut i = 0;
        while i < seen.len() {
            let s = seen[i];
            i += 1;
            for &(c, t) in a.calls_of(s) {
                if !l.contains(&c) {
                    l.push(c);
                }
                // Nullable call chains inside one rule are short; `seen` stays small.
                if a.rule_min[c as usize] == 0 && !seen.contains(&t) && seen.len() < 4096 {
                    seen.push(t);
                }
            }
        }
    }
    // A cycle in `left`: depth-first search with colors.
    let mut color = vec![0u8; n_rules];
    for r0 in 0..n_rules {
        if color[r0] != 0 || a.rule_start[r0] == DEAD {
            continue;
        }
        let mut stack = vec![(r0, 0usize)];
        color[r0] = 1;
        while let Some(&mut (r, ref mut i)) = stack.last_mut() {
            if let Some(&t) = left[r].get(*i) {
                *i += 1;
                let t = t as usize;
                match color[t] {
                    0 => {
                        color[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => {
                        return Err(Error::InvalidArgument(format!(
                            "left recursion through rule \"{}\" is not supported",
                            a.names.get(t).map_or("?", |s| s.as_str())
                        )))
                    }
                    _ => {}
                }
            } else {
                color[r] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}
