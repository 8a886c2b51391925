//! Picking the next token from the logits.
//!
//! The chain follows llama.cpp's default order so that the same flags mean the same thing:
//! repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw. Temperature 0 (or
//! below) is pure argmax: penalties and filters are ignored. Every step works in buffers
//! sized once at creation, so sampling never allocates; the random draw and the softmax use
//! our own deterministic arithmetic, so the same seed and logits give the same token on every
//! machine.

use crate::{Error, Result};

/// Sampling settings; `Default` gives the documented defaults (CLI and C ABI alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 turns the filter off.
    pub top_k: u32,
    /// Keep the smallest set whose probability reaches p; 1 turns the filter off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 turns it off.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens; 1 turns it off.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: u32,
    /// Seed of the random draw.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(format!(
                "repeat_penalty must be a finite number > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// xoshiro256** seeded through splitmix64: small, fast and identical everywhere.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// exp(x) for x <= 0 from basic IEEE operations only (no libm), so that probabilities, and
/// hence sampled tokens, are bit-identical on every platform. Relative error < 1e-15.
fn exp_neg(x: f64) -> f64 {
    if x < -745.0 {
        return 0.0;
    }
    // x = k*ln2 + r with |r| <= ln2/2; exp(x) = 2^k * exp(r).
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to degree 13 is exact to double rounding for |r| <= 0.35.
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=13 {
        term = term * r / f64::from(i);
        sum += term;
    }
    // 2^k by exponent construction, in two steps so subnormal results stay right.
    let k = k as i64;
    let half = k / 2;
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    sum * pow2(half) * pow2(k - half)
}

/// The tokens a sampler may draw: one bit per token of the vocabulary, 64 a word (token `i`
/// at bit `i % 64` of word `i / 64`).
#[derive(Debug, Clone, Copy)]
pub struct Allowed<'a> {
    /// The bits.
    pub words: &'a [u64],
    /// Tokens the bits cover.
    pub n_vocab: usize,
}

/// One candidate token during sampling.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
    p: f64,
}

/// A sampler: parameters, its random stream and scratch sized for one vocabulary.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: Rng,
    cand: Vec<Candidate>,
}

impl Sampler {
    /// A sampler for a vocabulary of `n_vocab` tokens; checks the parameters.
    pub fn new(params: SamplerParams, n_vocab: usize) -> Result<Self> {
        params.validate()?;
        Ok(Sampler {
            params,
            rng: Rng::new(params.seed),
            cand: Vec::with_capacity(n_vocab),
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Picks the next token. `history` is the context so far (for the repetition penalty).
    /// A logit of negative infinity masks its token out (it is never picked). Fails if a
    /// logit is NaN or positive infinity, or if every token is masked.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        self.sample_masked(logits, history, None)
    }

    /// [`Sampler::sample`] restricted to the tokens `mask` allows: the mask applies before
    /// every step (penalties, top-k, top-p and min-p see only allowed tokens); greedy is
    /// the argmax over them. An empty mask is `InvalidArgument`.
    pub fn sample_masked(
        &mut self,
        logits: &[f32],
        history: &[u32],
        mask: Option<Allowed<'_>>,
    ) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument("no logits to sample from".into()));
        }
        if let Some(i) = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
        {
            return Err(Error::Numeric(format!("logit {i} is {}", logits[i])));
        }
        if logits.iter().all(|&l| l == f32::NEG_INFINITY) {
            return Err(Error::InvalidArgument(
                "every token is masked out: nothing to sample".into(),
            ));
        }
        let p = self.params;
        if let Some(m) = mask {
            if m.n_vocab != logits.len() {
                return Err(Error::InvalidArgument(format!(
                    "mask for {} tokens, logits for {}",
                    m.n_vocab,
                    logits.len()
                )));
            }
        }
        if p.temperature <= 0.0 {
            return match mask {
                None => Ok(argmax(logits)),
                Some(m) => argmax_masked(logits, m).ok_or_else(no_token),
            };
        }

        // Candidates in id order (the allowed ones only, under a mask).
        self.cand.clear();
        match mask {
            None => self
                .cand
                .extend(logits.iter().enumerate().map(|(i, &logit)| Candidate {
                    id: i as u32,
                    logit,
                    p: 0.0,
                })),
            Some(m) => {
                for (w, &bits) in m.words.iter().enumerate() {
                    let mut b = bits;
                    while b != 0 {
                        let i = w * 64 + b.trailing_zeros() as usize;
                        b &= b - 1;
                        self.cand.push(Candidate {
                            id: i as u32,
                            logit: logits[i],
                            p: 0.0,
                        });
                    }
                }
                if self.cand.is_empty() {
                    return Err(no_token());
                }
            }
        }
        let masked = mask.is_some();

        // 1. Repetition penalty: each distinct recent token once.
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let n = history.len().min(p.repeat_last_n as usize);
            let window = &history[history.len() - n..];
            for (j, &tok) in window.iter().enumerate() {
                if window[..j].contains(&tok) {
                    continue;
                }
                let at = if masked {
                    self.cand.binary_search_by_key(&tok, |c| c.id).ok()
                } else {
                    Some(tok as usize)
                };
                if let Some(c) = at.and_then(|i| self.cand.get_mut(i)) {
                    c.logit = if c.logit > 0.0 {
                        c.logit / p.repeat_penalty
                    } else {
                        c.logit * p.repeat_penalty
                    };
                }
            }
        }

        // 2. Top-k: partition the k best to the front, then sort them best first.
        let by_logit =
            |a: &Candidate, b: &Candidate| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id));
        let k = p.top_k as usize;
        let mut n = self.cand.len();
        if k > 0 && k < n {
            self.cand.select_nth_unstable_by(k - 1, by_logit);
            n = k;
        }
        let kept = &mut self.cand[..n];
        kept.sort_unstable_by(by_logit);
        // Masked tokens sort last; they never take part (at least one is unmasked).
        n = kept
            .iter()
            .take_while(|c| c.logit > f32::NEG_INFINITY)
            .count();
        let kept = &mut self.cand[..n];

        // 3. Top-p and 4. min-p on the untempered distribution.
        softmax(kept, 1.0);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = kept.len();
            for (i, c) in kept.iter().enumerate() {
                cum += c.p;
                if cum >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
        }
        if p.min_p > 0.0 {
            let floor = kept[0].p * f64::from(p.min_p);
            n = kept[..n].iter().take_while(|c| c.p >= floor).count().max(1);
        }
        let kept = &mut self.cand[..n];

        // 5. Temperature, then 6. draw from what is left.
        softmax(kept, p.temperature);
        let u = self.rng.next_f64();
        let mut cum = 0.0;
        for c in kept.iter() {
            cum += c.p;
            if u < cum {
                return Ok(c.id);
            }
        }
        Ok(kept[kept.len() - 1].id)
    }
}

fn no_token() -> Error {
    Error::InvalidArgument("the mask allows no token".into())
}

/// Index of the largest logit among the allowed ones; the lowest index wins ties.
fn argmax_masked(logits: &[f32], mask: Allowed<'_>) -> Option<u32> {
    let mut best: Option<usize> = None;
    for (w, &bits) in mask.words.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            let i = w * 64 + b.trailing_zeros() as usize;
            b &= b - 1;
            if best.is_none_or(|j| logits[i] > logits[j]) {
                best = Some(i);
            }
        }
    }
    best.map(|i| i as u32)
}

/// Index of the largest logit; the lowest index wins ties.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Probabilities of sorted (best first) candidates at `temperature`, summing to 1.
fn softmax(c: &mut [Candidate], temperature: f32) {
    let Some(first) = c.first() else { return };
    let max = f64::from(first.logit);
    let t = f64::from(temperature);
    let mut sum = 0.0;
    for x in c.iter_mut() {
        x.p = exp_neg((f64::from(x.logit) - max) / t);
        sum += x.p;
    }
    for x in c.iter_mut() {
        x.p /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mask_changes_nothing_and_a_partial_one_is_obeyed() {
        let n = 1000;
        let full = bits(n, |_| true);
        let odd = bits(n, |t| t % 2 == 1);
        for seed in 0..20 {
            let l = logits(n, seed);
            let hist: Vec<u32> = (0..64).map(|i| (i * 37 % n) as u32).collect();
            for params in [
                SamplerParams::greedy(),
                SamplerParams {
                    seed,
                    ..Default::default()
                },
                SamplerParams {
                    seed,
                    top_k: 0,
                    top_p: 0.9,
                    min_p: 0.05,
                    repeat_penalty: 1.3,
                    ..Default::default()
                },
            ] {
                let mut a = Sampler::new(params, n).unwrap();
                let mut b = Sampler::new(params, n).unwrap();
                let mut c = Sampler::new(params, n).unwrap();
                for _ in 0..5 {
                    let x = a.sample(&l, &hist).unwrap();
                    assert_eq!(b.sample_masked(&l, &hist, Some(allowed(&full, n))).unwrap(), x);
                    assert_eq!(c.sample_masked(&l, &hist, Some(allowed(&odd, n))).unwrap() % 2, 1);
                }
            }
        }
        let mut g = Sampler::new(SamplerParams::greedy(), n).unwrap();
        let l = logits(n, 3);
        let best_odd = (0..n)
            .filter(|i| i % 2 == 1)
            .max_by(|&a, &b| l[a].total_cmp(&l[b]).then(b.cmp(&a)))
            .unwrap();
        assert_eq!(
            g.sample_masked(&l, &[], Some(allowed(&odd, n))).unwrap() as usize,
            best_odd
        );
        let none = bits(n, |_| false);
        assert!(g.sample_masked(&l, &[], Some(allowed(&none, n))).is_err());
        let short = bits(n - 1, |_| true);
        assert!(g
            .sample_masked(&l, &[], Some(allowed(&short, n - 1)))
            .is_err());
    }

    /// The bits of the tokens `f` allows out of `n`.
    fn bits(n: usize, f: impl Fn(u32) -> bool) -> Vec<u64> {
        let mut w = vec![0u64; n.div_ceil(64)];
        for t in 0..n as u32 {
            if f(t) {
                w[t as usize / 64] |= 1 << (t % 64);
            }
        }
        w
    }

    fn allowed(words: &[u64], n_vocab: usize) -> Allowed<'_> {
        Allowed { words, n_vocab }
    }

    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|_| (r.next_f64() * 20.0 - 10.0) as f32)
            .collect()
    }

    #[test]
    fn exp_matches_std() {
        for i in 0..10_000 {
            let x = -(i as f64) * 0.0731;
            let want = x.exp();
            let got = exp_neg(x);
            assert!(
                (got - want).abs() <= want * 1e-14 + 1e-300,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-1e6), 0.0);
    }

    #[test]
    fn rng_is_fixed_by_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(43);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Known first output for seed 0: pins the stream across platforms and releases.
        assert_eq!(Rng::new(0).next_u64(), 0x99EC_5F36_CB75_F2B4);
    }

    #[test]
    fn greedy_is_argmax_and_ignores_penalties() {
        let l = logits(1000, 1);
        let want = argmax(&l);
        let mut s = Sampler::new(
            SamplerParams {
                temperature: 0.0,
                repeat_penalty: 10.0,
                ..Default::default()
            },
            1000,
        )
        .unwrap();
        assert_eq!(s.sample(&l, &[want, want]).unwrap(), want);
    }

    #[test]
    fn top_k_one_equals_greedy() {
        for seed in 0..20 {
            let l = logits(500, seed);
            let mut s = Sampler::new(
                SamplerParams {
                    top_k: 1,
                    repeat_penalty: 1.0,
                    seed,
                    ..Default::default()
                },
                500,
            )
            .unwrap();
            assert_eq!(s.sample(&l, &[]).unwrap(), argmax(&l));
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let l = vec![0.0f32; 256];
        let run = |seed| {
            let mut s = Sampler::new(
                SamplerParams {
                    seed,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    temperature: 1.0,
                    ..Default::default()
                },
                256,
            )
            .unwrap();
            (0..32)
                .map(|_| s.sample(&l, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn filters_keep_only_likely_tokens() {
        // Token 0 has almost all the mass; top-p 0.5 must keep only it.
        let mut l = vec![-10.0f32; 100];
        l[0] = 10.0;
        let mut s = Sampler::new(
            SamplerParams {
                top_p: 0.5,
                temperature: 5.0,
                ..Default::default()
            },
            100,
        )
        .unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&l, &[]).unwrap(), 0);
        }
        // min-p: two equal leaders and a long tail far below min_p * p_max.
        let mut l = vec![-20.0f32; 100];
        l[3] = 5.0;
        l[7] = 5.0;
        let mut s = Sampler::new(
            SamplerParams {
                min_p: 0.1,
                top_k: 0,
                top_p: 1.0,
                temperature: 3.0,
                ..Default::default()
            },
            100,
        )
        .unwrap();
        for _ in 0..50 {
            assert!(matches!(s.sample(&l, &[]).unwrap(), 3 | 7));
        }
    }

    #[test]
    fn repetition_penalty_moves_mass_away() {
        let mut l = vec![0.0f32; 4];
        l[0] = 2.0;
        l[1] = 1.9;
        let params = SamplerParams {
            top_k: 1,
            repeat_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params, 4).unwrap();
        assert_eq!(s.sample(&l, &[]).unwrap(), 0);
        assert_eq!(s.sample(&l, &[0]).unwrap(), 1);
        // Outside the window the penalty no longer applies.
        let mut s = Sampler::new(
            SamplerParams {
                repeat_last_n: 1,
                ..params
            },
            4,
        )
        .unwrap();
        assert_eq!(s.sample(&l, &[0, 3]).unwrap(), 0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut s = Sampler::new(SamplerParams::default(), 3).unwrap();
        assert!(matches!(
            s.sample(&[0.0, f32::NAN, 1.0], &[]),
            Err(Error::Numeric(_))
        ));
        assert!(matches!(s.sample(&[], &[]), Err(Error::InvalidArgument(_))));
        assert!(Sampler::new(
            SamplerParams {
                top_p: 0.0,
                ..Default::default()
            },
            3
        )
        .is_err());
        assert!(Sampler::new(
            SamplerParams {
                temperature: -1.0,
                ..Default::default()
            },
            3
        )
        .is_err());
        assert!(Sampler::new(
            SamplerParams {
                min_p: 1.5,
                ..Default::default()
            },
            3
        )
        .is_err());
        // History tokens outside the vocabulary are ignored, not a panic.
        assert!(s.sample(&[0.0, 1.0, 2.0], &[99]).is_ok());
        assert!(matches!(
            s.sample(&[0.0, f32::INFINITY, 1.0], &[]),
            Err(Error::Numeric(_))
        ));
        let all_masked = [f32::NEG_INFINITY; 3];
        assert!(matches!(
            s.sample(&all_masked, &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn masked_tokens_are_never_picked() {
        // Token 0 would win almost always; masked, it never does, greedy or sampled, with
        // the filters on or off and with a penalty on a masked token.
        let mut l = logits(50, 3);
        l[0] = 100.0;
        let mut masked = l.clone();
        for id in [0, 7, 8, 49] {
            masked[id] = f32::NEG_INFINITY;
        }
        assert_eq!(argmax(&l), 0);
        let mut g = Sampler::new(SamplerParams::greedy(), 50).unwrap();
        assert_eq!(g.sample(&masked, &[]).unwrap(), argmax(&masked));
        for (top_k, top_p, min_p) in [(40, 0.95, 0.05), (0, 1.0, 0.0), (1, 1.0, 0.0)] {
            let p = SamplerParams {
                temperature: 5.0,
                top_k,
                top_p,
                min_p,
                ..Default::default()
            };
            let mut s = Sampler::new(p, 50).unwrap();
            for _ in 0..500 {
                let t = s.sample(&masked, &[0, 7, 3]).unwrap() as usize;
                assert!(masked[t].is_finite(), "picked masked token {t}");
            }
        }
        // One token left: it is the only answer.
        let mut one = vec![f32::NEG_INFINITY; 50];
        one[17] = -3.0;
        let mut s = Sampler::new(SamplerParams::default(), 50).unwrap();
        assert_eq!(s.sample(&one, &[17]).unwrap(), 17);
    }
}
