//! Token sampling: penalties, truncation filters, temperature, and a seeded draw.
//!
//! The chain follows llama.cpp's default common sampler (common/sampling.cpp with the
//! samplers of src/llama-sampling.cpp), minus the ones bantam does not expose:
//!
//! ```text
//! logits [n_vocab] -> penalties -> top_k -> top_p -> min_p -> temperature -> softmax -> draw
//! ```
//!
//! A temperature of zero (or less) means greedy argmax after the penalties.
//!
//! ```
//! use engine::sampler::{Sampler, SamplingParams};
//! let mut sampler = Sampler::new(SamplingParams { seed: 7, ..SamplingParams::default() }, 4);
//! let token = sampler.sample(&[0.1, 2.0, -1.0, 0.5], &[3, 3]);
//! assert!(token < 4);
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

/// A sampling parameter outside its domain.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("invalid sampling parameter {field} = {value}: expected {expected}")]
    InvalidParam { field: &'static str, value: String, expected: &'static str },
}

/// How the next token is chosen from the logits. Defaults are Ollama's.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the draw; `<= 0` means greedy argmax.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set whose probability mass reaches `top_p`; 1.0 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the best one's; 0.0 = off.
    pub min_p: f32,
    /// Penalty on tokens seen in the window: positive logits divided, negative multiplied.
    pub repeat_penalty: f32,
    /// Penalty window in tokens: -1 = the whole history, 0 = penalties off.
    pub repeat_last_n: i32,
    /// Subtracted once from the logit of every token seen in the window.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per occurrence in the window.
    pub frequency_penalty: f32,
    /// Seed of the draw: same seed, same logits, same history -> same token.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Ollama's defaults (api/types.go `DefaultOptions`), with a seed taken from the clock.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: clock_seed(),
        }
    }
}

impl SamplingParams {
    /// Plain argmax: no penalties, no randomness.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }

    /// Checks every field's domain; the error names the first bad field.
    pub fn validate(&self) -> Result<(), SamplerError> {
        fn bad(field: &'static str, value: impl ToString, expected: &'static str) -> SamplerError {
            SamplerError::InvalidParam { field, value: value.to_string(), expected }
        }
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(bad("temperature", t, "a finite number >= 0"));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(bad("top_p", self.top_p, "a number in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(bad("min_p", self.min_p, "a number in [0, 1]"));
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(bad("repeat_penalty", r, "a finite number > 0"));
        }
        if self.repeat_last_n < -1 {
            return Err(bad("repeat_last_n", self.repeat_last_n, "-1 (whole context), 0 (off) or a window size"));
        }
        if !self.presence_penalty.is_finite() {
            return Err(bad("presence_penalty", self.presence_penalty, "a finite number"));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(bad("frequency_penalty", self.frequency_penalty, "a finite number"));
        }
        Ok(())
    }

    fn has_penalties(&self) -> bool {
        self.repeat_last_n != 0 && (self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0)
    }
}

/// A seed from the wall clock, mixed with a process-wide counter so that two defaults
/// made in the same instant still differ.
fn clock_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut state = nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    splitmix64(&mut state)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman & Vigna), its state filled from the seed by splitmix64.
#[derive(Debug, Clone)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn new(seed: u64) -> Self {
        let mut sm = seed;
        Self { s: [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)] }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One token still in the running.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
}

/// Higher logit first; ties go to the lower id, so every filter is deterministic.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Chooses tokens for one sequence. Owns its RNG and its scratch buffers, which are
/// sized on the first call and reused after it.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256,
    /// [n_vocab] the tokens still in the running, filtered in place.
    candidates: Vec<Candidate>,
    /// [n_vocab] occurrences of each token in the penalty window; all zero between calls.
    counts: Vec<u32>,
    /// Ids with a non-zero entry in `counts`, to apply and then clear only those.
    seen: Vec<u32>,
    /// [candidates.len()] softmax weights for the draw.
    weights: Vec<f64>,
}

impl Sampler {
    /// `params` are used as given; call [`SamplingParams::validate`] on user input first.
    /// Out-of-domain values do not panic: they fall back to the nearest sensible behaviour.
    pub fn new(params: SamplingParams, n_vocab: usize) -> Self {
        let rng = Xoshiro256::new(params.seed);
        // Distinct tokens in the window: at most repeat_last_n (the whole history for -1
        // grows on demand).
        let window = usize::try_from(params.repeat_last_n).map_or(0, |n| n.min(n_vocab));
        Self {
            params,
            rng,
            candidates: Vec::with_capacity(n_vocab),
            counts: vec![0; n_vocab],
            seen: Vec::with_capacity(window),
            weights: Vec::with_capacity(n_vocab),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// logits: `[n_vocab]` raw logits of the last position; history: tokens so far (prompt +
    /// generated) for the penalties. Returns 0 for empty logits. NaN logits never win.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(id, &logit)| Candidate { id: id as u32, logit: if logit.is_nan() { f32::NEG_INFINITY } else { logit } }));
        if self.candidates.is_empty() {
            return 0;
        }
        self.apply_penalties(history);

        let temperature = self.params.temperature;
        if temperature.is_nan() || temperature <= 0.0 {
            return argmax(&self.candidates);
        }
        self.top_k();
        self.top_p();
        self.min_p();
        for c in &mut self.candidates {
            c.logit /= temperature;
        }
        self.draw()
    }

    /// llama_sampler_penalties_apply: for each token seen `count > 0` times in the window,
    /// `logit = logit > 0 ? logit / repeat : logit * repeat` (dividing a negative logit
    /// would raise it), then `logit -= count * frequency + presence`.
    /// Expects `candidates` indexed by id, as `sample` builds them.
    fn apply_penalties(&mut self, history: &[u32]) {
        let p = &self.params;
        if !p.has_penalties() {
            return;
        }
        let window = match usize::try_from(p.repeat_last_n) {
            Ok(n) => &history[history.len().saturating_sub(n)..],
            Err(_) => history, // -1: the whole history
        };
        if self.counts.len() < self.candidates.len() {
            self.counts.resize(self.candidates.len(), 0);
        }
        for &id in window {
            let Some(count) = self.counts.get_mut(id as usize) else {
                continue;
            };
            if *count == 0 {
                self.seen.push(id);
            }
            *count += 1;
        }
        for &id in &self.seen {
            let count = std::mem::take(&mut self.counts[id as usize]);
            let Some(c) = self.candidates.get_mut(id as usize) else {
                continue;
            };
            if c.logit <= 0.0 {
                c.logit *= p.repeat_penalty;
            } else {
                c.logit /= p.repeat_penalty;
            }
            c.logit -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
        self.seen.clear();
    }

    /// Keeps the k best in O(n) by selection; their order is left unspecified.
    fn top_k(&mut self) {
        let k = self.params.top_k;
        if k == 0 || k >= self.candidates.len() {
            return;
        }
        self.candidates.select_nth_unstable_by(k - 1, by_logit_desc);
        self.candidates.truncate(k);
    }

    /// llama_sampler_top_p_apply: sorted by probability, keep tokens up to and including
    /// the one where the cumulative probability first reaches p (at least one token).
    fn top_p(&mut self) {
        let p = self.params.top_p;
        if p.is_nan() || p >= 1.0 || self.candidates.len() <= 1 {
            return;
        }
        self.candidates.sort_unstable_by(by_logit_desc);
        softmax(&self.candidates, &mut self.weights);
        let mut cumulative = 0.0;
        let mut keep = self.candidates.len();
        for (i, w) in self.weights.iter().enumerate() {
            cumulative += w;
            if cumulative >= p as f64 {
                keep = i + 1;
                break;
            }
        }
        self.candidates.truncate(keep);
    }

    /// llama_sampler_min_p_apply: keep tokens with `p >= min_p * p_max`, that is
    /// `logit >= max_logit + ln(min_p)`. Keeps everything if that would leave nothing.
    fn min_p(&mut self) {
        let p = self.params.min_p;
        if p.is_nan() || p <= 0.0 || self.candidates.len() <= 1 {
            return;
        }
        let max = self.candidates.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
        let threshold = max + p.ln();
        if self.candidates.iter().any(|c| c.logit >= threshold) {
            self.candidates.retain(|c| c.logit >= threshold);
        }
    }

    /// Draws one candidate with probability softmax(logit).
    fn draw(&mut self) -> u32 {
        if !softmax(&self.candidates, &mut self.weights) {
            return argmax(&self.candidates);
        }
        let mut target = self.rng.next_f64();
        for (c, w) in self.candidates.iter().zip(&self.weights) {
            target -= w;
            if target < 0.0 {
                return c.id;
            }
        }
        // Rounding left a sliver of mass: it belongs to the last token with weight.
        let last = self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        self.candidates[last].id
    }
}

/// Greedy choice: the highest logit, ties to the lowest id.
fn argmax(candidates: &[Candidate]) -> u32 {
    candidates.iter().min_by(|a, b| by_logit_desc(a, b)).map_or(0, |c| c.id)
}

/// Fills `weights` with softmax(logits) (in f64). Returns false when there is no finite
/// logit to normalise by (all -inf or overflow), leaving the caller to fall back to argmax.
fn softmax(candidates: &[Candidate], weights: &mut Vec<f64>) -> bool {
    weights.clear();
    let max = candidates.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return false;
    }
    weights.extend(candidates.iter().map(|c| ((c.logit - max) as f64).exp()));
    let sum: f64 = weights.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return false;
    }
    weights.iter_mut().for_each(|w| *w /= sum);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn params() -> SamplingParams {
        SamplingParams { temperature: 1.0, seed: 42, ..SamplingParams::greedy() }
    }

    /// Every token `sampler` can produce over many draws.
    fn support(p: SamplingParams, logits: &[f32]) -> BTreeSet<u32> {
        let mut s = Sampler::new(p, logits.len());
        (0..2000).map(|_| s.sample(logits, &[])).collect()
    }

    #[test]
    fn greedy_is_argmax_with_ties_to_lowest_id() {
        let mut s = Sampler::new(SamplingParams::greedy(), 5);
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9, 0.0], &[]), 1);
        assert_eq!(s.sample(&[1.0, 5.0, 5.0, 5.0, 0.0], &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, f32::NAN], &[]), 1);
        assert_eq!(s.sample(&[], &[]), 0);
        assert_eq!(s.sample(&[f32::NEG_INFINITY; 3], &[]), 0);
    }

    #[test]
    fn greedy_applies_penalties_first() {
        let p = SamplingParams { repeat_penalty: 2.0, repeat_last_n: 64, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p, 3);
        // token 0: 3.0 / 2 = 1.5 loses to token 1's 2.0.
        assert_eq!(s.sample(&[3.0, 2.0, 1.0], &[0]), 1);
        assert_eq!(s.sample(&[3.0, 2.0, 1.0], &[]), 0);
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let logits = [1.0, 4.0, 0.5, 3.0, 2.0, -1.0];
        let p = SamplingParams { top_k: 3, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([1, 3, 4]));
        let p = SamplingParams { top_k: 1, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([1]));
        let p = SamplingParams { top_k: 0, ..params() };
        assert_eq!(support(p, &logits).len(), 6);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let p = SamplingParams { top_p: 0.7, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1]));
        let p = SamplingParams { top_p: 0.3, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0]));
        // Two equal tokens, 0.5 each: the first reaches p = 0.5 exactly and is the only one kept.
        let p = SamplingParams { top_p: 0.5, ..params() };
        assert_eq!(support(p, &[0.0, 0.0]), BTreeSet::from([0]));
        let p = SamplingParams { top_p: 0.0, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0]));
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        // probabilities relative to the best: 1, 0.5, 0.2, 0.05.
        let logits = [0.0, 0.5f32.ln(), 0.2f32.ln(), 0.05f32.ln()];
        let p = SamplingParams { min_p: 0.1, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1, 2]));
        let p = SamplingParams { min_p: 0.4, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1]));
        let p = SamplingParams { min_p: 1.0, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0]));
    }

    #[test]
    fn filters_run_in_chain_order() {
        // Alone, top_p 0.7 over softmax = 0.459, 0.169, 0.062 x 6 needs four tokens;
        // after top_k 2 it sees the renormalised 0.731, 0.269 and keeps one.
        let logits = [2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let p = SamplingParams { top_p: 0.7, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0, 1, 2, 3]));
        let p = SamplingParams { top_k: 2, top_p: 0.7, ..params() };
        assert_eq!(support(p, &logits), BTreeSet::from([0]));
        // min_p sees the logits before temperature: 0.3 < 0.5 drops token 1, although at
        // temperature 3 its relative probability would be 0.3^(1/3) = 0.67.
        let p = SamplingParams { min_p: 0.5, temperature: 3.0, ..params() };
        assert_eq!(support(p, &[0.0, 0.3f32.ln()]), BTreeSet::from([0]));
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        let p = SamplingParams { repeat_penalty: 2.0, repeat_last_n: 3, presence_penalty: 0.5, frequency_penalty: 0.25, ..params() };
        let mut s = Sampler::new(p, 5);
        s.candidates = [4.0, -1.0, 2.0, 1.0, 3.0].iter().enumerate().map(|(id, &logit)| Candidate { id: id as u32, logit }).collect();
        // Window is the last 3 tokens: [1, 0, 1]; token 4 fell out of it.
        s.apply_penalties(&[4, 4, 1, 0, 1, 99]);
        let got: Vec<f32> = s.candidates.iter().map(|c| c.logit).collect();
        // The 99 is out of vocabulary and ignored, so the window is [0, 1, 99].
        // token 0: 4 / 2 - (1 * 0.25 + 0.5) = 1.25; token 1: -1 * 2 - (1 * 0.25 + 0.5) = -2.75.
        assert_eq!(got, vec![1.25, -2.75, 2.0, 1.0, 3.0]);
        assert!(s.counts.iter().all(|&c| c == 0), "counts are cleared for the next call");

        let p = SamplingParams { frequency_penalty: 1.0, repeat_last_n: -1, ..params() };
        let mut s = Sampler::new(p, 3);
        s.candidates = (0..3).map(|id| Candidate { id, logit: 1.0 }).collect();
        s.apply_penalties(&[2, 2, 2, 1]);
        let got: Vec<f32> = s.candidates.iter().map(|c| c.logit).collect();
        assert_eq!(got, vec![1.0, 0.0, -2.0]);

        let p = SamplingParams { repeat_penalty: 2.0, repeat_last_n: 0, ..params() };
        let mut s = Sampler::new(p, 2);
        s.candidates = (0..2).map(|id| Candidate { id, logit: 1.0 }).collect();
        s.apply_penalties(&[0, 1]);
        assert!(s.candidates.iter().all(|c| c.logit == 1.0), "repeat_last_n 0 turns them off");
    }

    fn sequence(seed: u64, n: usize) -> Vec<u32> {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams { seed, top_k: 0, top_p: 1.0, ..params() };
        let mut s = Sampler::new(p, logits.len());
        (0..n).map(|_| s.sample(&logits, &[])).collect()
    }

    #[test]
    fn same_seed_same_sequence() {
        assert_eq!(sequence(1234, 500), sequence(1234, 500));
    }

    #[test]
    fn different_seeds_different_sequences() {
        let a = sequence(1, 500);
        let b = sequence(2, 500);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 100, "{same} of 500 draws agree");
        assert_ne!(SamplingParams::default().seed, SamplingParams::default().seed);
    }

    #[test]
    fn draws_follow_the_softmax() {
        let logits = [1.0f32, 0.0, 2.0, -1.0, 0.5];
        let temperature = 0.7f32;
        let p = SamplingParams { temperature, seed: 99, ..params() };
        let mut s = Sampler::new(p, logits.len());
        let n = 100_000;
        let mut observed = [0usize; 5];
        for _ in 0..n {
            observed[s.sample(&logits, &[]) as usize] += 1;
        }
        let exps: Vec<f64> = logits.iter().map(|&l| ((l / temperature) as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let chi2: f64 = exps
            .iter()
            .zip(observed)
            .map(|(e, o)| {
                let expected = e / sum * n as f64;
                (o as f64 - expected).powi(2) / expected
            })
            .sum();
        // 4 degrees of freedom: P(chi2 > 18.47) = 0.001.
        assert!(chi2 < 18.47, "chi2 = {chi2}, observed {observed:?}");
    }

    #[test]
    fn validation_names_the_bad_field() {
        let field = |p: SamplingParams| match p.validate() {
            Err(SamplerError::InvalidParam { field, .. }) => field,
            Ok(()) => "ok",
        };
        let d = SamplingParams::default();
        assert_eq!(field(d.clone()), "ok");
        assert_eq!(field(SamplingParams::greedy()), "ok");
        assert_eq!(field(SamplingParams { temperature: f32::NAN, ..d.clone() }), "temperature");
        assert_eq!(field(SamplingParams { temperature: -0.1, ..d.clone() }), "temperature");
        assert_eq!(field(SamplingParams { top_p: 1.5, ..d.clone() }), "top_p");
        assert_eq!(field(SamplingParams { top_p: f32::NAN, ..d.clone() }), "top_p");
        assert_eq!(field(SamplingParams { min_p: -0.5, ..d.clone() }), "min_p");
        assert_eq!(field(SamplingParams { repeat_penalty: 0.0, ..d.clone() }), "repeat_penalty");
        assert_eq!(field(SamplingParams { repeat_last_n: -2, ..d.clone() }), "repeat_last_n");
        assert_eq!(field(SamplingParams { presence_penalty: f32::INFINITY, ..d.clone() }), "presence_penalty");
        assert_eq!(field(SamplingParams { frequency_penalty: f32::NAN, ..d.clone() }), "frequency_penalty");
        let msg = SamplingParams { top_p: 2.0, ..d }.validate().unwrap_err().to_string();
        assert!(msg.contains("top_p") && msg.contains('2'), "{msg}");
    }

    #[test]
    fn invalid_params_do_not_panic() {
        let bad = SamplingParams { top_p: f32::NAN, min_p: 5.0, repeat_penalty: 0.0, repeat_last_n: -1, ..params() };
        for temperature in [f32::NAN, 1.0, f32::INFINITY] {
            let mut s = Sampler::new(SamplingParams { temperature, ..bad.clone() }, 3);
            assert!(s.sample(&[1.0, 2.0, -3.0], &[0, 1, 2, 7]) < 3);
        }
        let mut s = Sampler::new(SamplingParams { top_k: 100, ..params() }, 3);
        assert!(s.sample(&[1.0, 2.0, 3.0, 4.0], &[3]) < 4, "logits longer than n_vocab");
    }

    #[test]
    fn scratch_buffers_are_reused() {
        let logits: Vec<f32> = (0..1000).map(|i| (i as f32).cos()).collect();
        let p = SamplingParams { top_k: 0, top_p: 0.95, repeat_penalty: 1.2, seed: 5, ..params() };
        let mut s = Sampler::new(p, logits.len());
        s.sample(&logits, &[1, 2, 3]);
        let ptrs = (s.candidates.as_ptr(), s.weights.as_ptr(), s.seen.as_ptr());
        for _ in 0..20 {
            s.sample(&logits, &[1, 2, 3]);
        }
        assert_eq!(ptrs, (s.candidates.as_ptr(), s.weights.as_ptr(), s.seen.as_ptr()));
    }
}
