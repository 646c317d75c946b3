//! Perplexity as llama-perplexity computes it (default mode): non-overlapping chunks of
//! `n_ctx` tokens (the tail is dropped), the first token of each chunk *replaced* by BOS
//! when the model adds BOS, each chunk decoded from an empty cache (in batches of 512, which
//! gives the same logits as one batch: the kernels are batch-invariant), and only
//! the second half scored: for `j` in `n_ctx/2 .. n_ctx-1`, the NLL of `token[j+1]` under
//! `log_softmax(logits[j])`.

use crate::EngineError;
use kernels::pool::Pool;
use model::{ActivationStats, Batch, CacheTypes, KvCache, Model, Scratch};

#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    pub ppl: f64,
    /// Standard error, propagated to perplexity as llama-perplexity prints it.
    pub stderr: f64,
    pub n_chunks: usize,
    pub n_scored: usize,
    /// Perplexity after each chunk.
    pub running: Vec<f64>,
}

/// Tokens per forward pass.
const UBATCH: usize = model::DEFAULT_PASS;

/// Score `tokens` (already tokenized with BOS as the model adds it).
pub fn perplexity(model: &Model, pool: &Pool, tokens: &[u32], n_ctx: usize, bos: Option<u32>, cache: CacheTypes) -> Result<PerplexityReport, EngineError> {
    score_chunks(model, pool, tokens, n_ctx, bos, cache, &mut Scratch::default(), |_, _| {})
}

/// The importance matrix of `tokens` as llama-imatrix computes it: the same chunks as
/// [`perplexity`] (which it also reports, as llama-imatrix does), every weight matmul's input
/// squared and summed over all tokens. Needs at least two chunks, as llama-imatrix does.
/// `on_chunk(i, running_ppl)` is called after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn imatrix(
    model: &Model,
    pool: &Pool,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    process_output: bool,
    on_chunk: impl FnMut(usize, f64),
) -> Result<(ActivationStats, PerplexityReport), EngineError> {
    if tokens.len() < 2 * n_ctx {
        return Err(EngineError::BadRequest(format!(
            "the text has {} tokens; an importance matrix with chunks of {n_ctx} needs at least {}",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let mut scratch = Scratch::default();
    scratch.stats = Some(ActivationStats::new(process_output));
    let report = score_chunks(model, pool, tokens, n_ctx, bos, CacheTypes::default(), &mut scratch, on_chunk)?;
    Ok((scratch.stats.take().unwrap_or_default(), report))
}

#[allow(clippy::too_many_arguments)]
fn score_chunks(
    model: &Model,
    pool: &Pool,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    cache: CacheTypes,
    scratch: &mut Scratch,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityReport, EngineError> {
    if n_ctx < 4 {
        return Err(EngineError::BadRequest(format!("context size {n_ctx} is too small for perplexity (at least 4)")));
    }
    let n_chunks = tokens.len() / n_ctx;
    if n_chunks == 0 {
        return Err(EngineError::BadRequest(format!("the text has {} tokens, fewer than one chunk of {n_ctx}; use a smaller --ctx-size", tokens.len())));
    }
    let mut cache = KvCache::with_types(&model.config, n_ctx, cache).map_err(|e| EngineError::BadRequest(e.to_string()))?;
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    // llama-imatrix asks for every token's logits, so output.weight sees every token
    let all_logits = scratch.stats.as_ref().is_some_and(|s| s.process_output);
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        decode_chunk(model, pool, chunk, bos, &mut cache, scratch, all_logits, |j, row| {
            let nll = -log_softmax_at(row, chunk[j + 1] as usize);
            sum += nll;
            sum2 += nll * nll;
            count += 1;
        })?;
        running.push((sum / count as f64).exp());
        on_chunk(c, (sum / count as f64).exp());
    }
    let mean = sum / count as f64;
    let ppl = mean.exp();
    let var = (sum2 / count as f64 - mean * mean).max(0.0);
    let stderr = if count > 1 { ppl * (var / (count - 1) as f64).sqrt() } else { 0.0 };
    Ok(PerplexityReport { ppl, stderr, n_chunks, n_scored: count, running })
}

/// `log_softmax(row)[i]` in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[i] as f64 - max - sum.ln()
}

/// What llama-perplexity's `--kl-divergence` reports for a model Q against a base model on
/// the same tokens (the second half of each chunk), here with both models run side by side:
/// no logits file.
#[derive(Debug, Clone, PartialEq)]
pub struct KldReport {
    pub count: usize,
    pub n_chunks: usize,
    /// `(value, uncertainty)` pairs, as llama-perplexity prints them.
    pub ppl_q: (f64, f64),
    pub ppl_base: (f64, f64),
    pub cor_ln_ppl: f64,
    pub ln_ppl_ratio: (f64, f64),
    pub ppl_ratio: (f64, f64),
    pub ppl_diff: (f64, f64),
    pub kld: (f64, f64),
    /// Sorted per-token KL divergences and probability differences of the scored token.
    pub kld_values: Vec<f32>,
    pub p_diff: (f64, f64),
    pub p_diff_values: Vec<f32>,
    pub rms_p_diff: (f64, f64),
    pub same_top: (f64, f64),
}

impl KldReport {
    /// `percentile(values, fraction)` as llama-perplexity interpolates it.
    pub fn percentile(values: &[f32], fraction: f32) -> f32 {
        if fraction <= 0.0 {
            return values[0];
        }
        if fraction >= 1.0 {
            return values[values.len() - 1];
        }
        let p = fraction * (values.len() - 1) as f32;
        let ip = p as usize;
        let p = p - ip as f32;
        (1.0 - p) * values[ip] + p * values[(ip + 1).min(values.len() - 1)]
    }

    pub fn median(values: &[f32]) -> f32 {
        let n = values.len();
        if n.is_multiple_of(2) {
            0.5 * (values[n / 2] + values[n / 2 - 1])
        } else {
            values[n / 2]
        }
    }
}

#[derive(Default)]
struct KldSums {
    nll: f64,
    nll2: f64,
    nll_base: f64,
    nll_base2: f64,
    nll_nll_base: f64,
    kld: f64,
    kld2: f64,
    p_diff: f64,
    p_diff2: f64,
    p_diff4: f64,
    same_top: usize,
    count: usize,
}

/// One token: `logits` of Q, `base` the base model's log-probabilities (f32, exact where
/// llama-perplexity stores them as 16-bit codes). llama-perplexity's `log_softmax` with
/// its KL-divergence terms, the base's probabilities below e^-16 ignored as it does.
fn kld_token(logits: &[f32], base: &[f32], tok: usize, s: &mut KldSums) -> (f32, f32) {
    let (mut max_logit, mut imax) = (logits[0], 0);
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max_logit {
            max_logit = l;
            imax = i;
        }
    }
    let mut sum_exp = 0f64;
    for &l in logits {
        sum_exp += (l - max_logit).exp() as f64;
    }
    let log_sum_exp = sum_exp.ln() as f32;
    let nll = max_logit + log_sum_exp - logits[tok];
    s.nll += nll as f64;
    s.nll2 += (nll * nll) as f64;
    let nll_base = -base[tok];
    s.nll_base += nll_base as f64;
    s.nll_base2 += (nll_base * nll_base) as f64;
    s.nll_nll_base += (nll * nll_base) as f64;
    let lse = max_logit + log_sum_exp;
    let mut sum = 0f64;
    let (mut imax_base, mut p_log_base_max) = (0, 0f32);
    for (i, (&pb, &l)) in base.iter().zip(logits).enumerate() {
        if i == 0 || pb > p_log_base_max {
            p_log_base_max = pb;
            imax_base = i;
        }
        if pb > -16.0 {
            sum += (pb.exp() * (pb - l + lse)) as f64;
        }
    }
    s.kld += sum;
    s.kld2 += sum * sum;
    s.count += 1;
    if imax == imax_base {
        s.same_top += 1;
    }
    let p_diff = (-nll).exp() - (-nll_base).exp();
    s.p_diff += p_diff as f64;
    let d2 = (p_diff * p_diff) as f64;
    s.p_diff2 += d2;
    s.p_diff4 += d2 * d2;
    (sum as f32, p_diff)
}

/// The base model's log-probabilities at every scored position (the second half of each
/// chunk, as [`perplexity`] scores): computed once, then compared against any number of
/// quantizations ([`kl_divergence_against`]). `[n_chunks * n_scored, n_vocab]`.
pub struct BaseLogProbs {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunks: usize,
    tokens: Vec<u32>,
    bos: Option<u32>,
    lp: Vec<f32>,
}

/// Decode one chunk from an empty cache, its first token replaced by BOS, in batches of
/// UBATCH (llama-perplexity's n_ubatch, so logits are held for one batch at a time), and
/// call `scored(j, logits of position j)` for each scored position (`n_ctx/2 .. n_ctx-1`) in
/// order. With `all_logits` every position gets logits (llama-imatrix's batches).
#[allow(clippy::too_many_arguments)]
fn decode_chunk(
    m: &Model,
    pool: &Pool,
    chunk: &[u32],
    bos: Option<u32>,
    cache: &mut KvCache,
    scratch: &mut Scratch,
    all_logits: bool,
    mut scored: impl FnMut(usize, &[f32]),
) -> Result<(), EngineError> {
    let (n_ctx, nv) = (chunk.len(), m.config.n_vocab);
    let first = n_ctx / 2;
    let mut batch = Batch::default();
    cache.clear();
    for start in (0..n_ctx).step_by(UBATCH) {
        let end = (start + UBATCH).min(n_ctx);
        batch.clear();
        for (j, &t) in chunk.iter().enumerate().take(end).skip(start) {
            let t = if j == 0 { bos.unwrap_or(t) } else { t };
            batch.push(t, 0, all_logits || (j >= first && j + 1 < n_ctx));
        }
        let logits = m.forward(pool, &batch, &mut [&mut *cache], scratch)?;
        for (k, j) in (start.max(first)..end.min(n_ctx - 1)).enumerate() {
            let r = if all_logits { j - start } else { k };
            scored(j, &logits[r * nv..(r + 1) * nv]);
        }
    }
    Ok(())
}

/// The logits of one chunk's scored positions, into `out` `[n_scored, n_vocab]`.
fn chunk_logits(
    m: &Model,
    pool: &Pool,
    chunk: &[u32],
    bos: Option<u32>,
    cache: &mut KvCache,
    scratch: &mut Scratch,
    out: &mut [f32],
) -> Result<(), EngineError> {
    let (first, nv) = (chunk.len() / 2, m.config.n_vocab);
    decode_chunk(m, pool, chunk, bos, cache, scratch, false, |j, row| out[(j - first) * nv..(j - first + 1) * nv].copy_from_slice(row))
}

impl BaseLogProbs {
    pub fn compute(base: &Model, pool: &Pool, tokens: &[u32], n_ctx: usize, bos: Option<u32>) -> Result<Self, EngineError> {
        if n_ctx < 4 || tokens.len() / n_ctx == 0 {
            return Err(EngineError::BadRequest(format!("the text has {} tokens, fewer than one chunk of {n_ctx}", tokens.len())));
        }
        let nv = base.config.n_vocab;
        let n_chunks = tokens.len() / n_ctx;
        let n_scored = n_ctx - 1 - n_ctx / 2;
        let mut cache = KvCache::with_types(&base.config, n_ctx, CacheTypes::default()).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let mut scratch = Scratch::default();
        let mut lp = vec![0f32; n_chunks * n_scored * nv];
        for c in 0..n_chunks {
            let out = &mut lp[c * n_scored * nv..(c + 1) * n_scored * nv];
            chunk_logits(base, pool, &tokens[c * n_ctx..(c + 1) * n_ctx], bos, &mut cache, &mut scratch, out)?;
            for row in out.chunks_exact_mut(nv) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = max as f64 + row.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln();
                row.iter_mut().for_each(|v| *v = (*v as f64 - lse) as f32);
            }
        }
        Ok(BaseLogProbs { n_ctx, n_vocab: nv, n_chunks, tokens: tokens[..n_chunks * n_ctx].to_vec(), bos, lp })
    }
}

/// KL divergence of `model` (Q) from `base` on `tokens` (tokenized by Q's tokenizer, BOS
/// as it adds it): chunks of `n_ctx` as [`perplexity`], both models decoding each chunk.
/// `on_chunk(i, ppl_q, mean_kld)` after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn kl_divergence(
    model: &Model,
    base: &Model,
    pool: &Pool,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    mut on_chunk: impl FnMut(usize, f64, f64),
) -> Result<KldReport, EngineError> {
    check_vocab(model, base.config.n_vocab)?;
    // one chunk at a time, so the base's log-probabilities are held for one chunk only
    let n_chunks = tokens.len() / n_ctx.max(1);
    let mut sums = KldSums::default();
    let (mut kld_values, mut p_diff_values) = (Vec::new(), Vec::new());
    for c in 0..n_chunks.max(1) {
        let chunk = &tokens[(c * n_ctx).min(tokens.len())..((c + 1) * n_ctx).min(tokens.len())];
        let b = BaseLogProbs::compute(base, pool, chunk, n_ctx, bos)?;
        accumulate(model, pool, &b, &mut sums, &mut kld_values, &mut p_diff_values)?;
        on_chunk(c, (sums.nll / sums.count as f64).exp(), sums.kld / sums.count as f64);
    }
    Ok(finish(sums, n_chunks, kld_values, p_diff_values))
}

/// KL divergence of `model` from log-probabilities computed once ([`BaseLogProbs`]).
pub fn kl_divergence_against(model: &Model, pool: &Pool, base: &BaseLogProbs) -> Result<KldReport, EngineError> {
    check_vocab(model, base.n_vocab)?;
    let mut sums = KldSums::default();
    let (mut kld_values, mut p_diff_values) = (Vec::new(), Vec::new());
    accumulate(model, pool, base, &mut sums, &mut kld_values, &mut p_diff_values)?;
    Ok(finish(sums, base.n_chunks, kld_values, p_diff_values))
}

fn check_vocab(model: &Model, base_vocab: usize) -> Result<(), EngineError> {
    if base_vocab != model.config.n_vocab {
        return Err(EngineError::BadRequest(format!(
            "the base model's vocabulary has {base_vocab} tokens and this model's {}: KL divergence needs the same vocabulary",
            model.config.n_vocab
        )));
    }
    Ok(())
}

fn accumulate(
    model: &Model,
    pool: &Pool,
    b: &BaseLogProbs,
    sums: &mut KldSums,
    kld_values: &mut Vec<f32>,
    p_diff_values: &mut Vec<f32>,
) -> Result<(), EngineError> {
    let (n_ctx, nv) = (b.n_ctx, b.n_vocab);
    let first = n_ctx / 2;
    let n_scored = n_ctx - 1 - first;
    let mut cache = KvCache::with_types(&model.config, n_ctx, CacheTypes::default()).map_err(|e| EngineError::BadRequest(e.to_string()))?;
    let mut scratch = Scratch::default();
    let mut q_logits = vec![0f32; n_scored * nv];
    for c in 0..b.n_chunks {
        let chunk = &b.tokens[c * n_ctx..(c + 1) * n_ctx];
        chunk_logits(model, pool, chunk, b.bos, &mut cache, &mut scratch, &mut q_logits)?;
        for r in 0..n_scored {
            let lp = &b.lp[(c * n_scored + r) * nv..(c * n_scored + r + 1) * nv];
            let tok = chunk[first + r + 1] as usize;
            let (k, d) = kld_token(&q_logits[r * nv..(r + 1) * nv], lp, tok, sums);
            kld_values.push(k);
            p_diff_values.push(d);
        }
    }
    Ok(())
}

fn finish(sums: KldSums, n_chunks: usize, mut kld_values: Vec<f32>, mut p_diff_values: Vec<f32>) -> KldReport {
    let n = sums.count;
    let mean_unc = |sum: f64, sum2: f64| {
        let f = sum / n as f64;
        let df = sum2 / n as f64 - f * f;
        (f, if df > 0.0 && n > 10 { (df / (n - 1) as f64).sqrt() } else { 0.0 })
    };
    let cov = if n < 10 { 0.0 } else { (sums.nll_nll_base / n as f64 - (sums.nll / n as f64) * (sums.nll_base / n as f64)) / (n - 1) as f64 };
    let log_ppl = mean_unc(sums.nll, sums.nll2);
    let log_ppl_base = mean_unc(sums.nll_base, sums.nll_base2);
    let ppl_q = (log_ppl.0.exp(), log_ppl.0.exp() * log_ppl.1);
    let ppl_base = (log_ppl_base.0.exp(), log_ppl_base.0.exp() * log_ppl_base.1);
    let ratio_val = log_ppl.0 - log_ppl_base.0;
    let ratio_unc = (log_ppl.1 * log_ppl.1 + log_ppl_base.1 * log_ppl_base.1 - 2.0 * cov).max(0.0).sqrt();
    let ppl_cov = ppl_q.0 * ppl_base.0 * cov;
    let diff_unc = (ppl_q.1 * ppl_q.1 + ppl_base.1 * ppl_base.1 - 2.0 * ppl_cov).max(0.0).sqrt();
    let mse = mean_unc(sums.p_diff2, sums.p_diff4);
    let rms = mse.0.sqrt();
    let same = sums.same_top as f64 / n as f64;
    kld_values.sort_by(|a, b| a.total_cmp(b));
    p_diff_values.sort_by(|a, b| a.total_cmp(b));
    KldReport {
        count: n,
        n_chunks,
        ppl_q,
        ppl_base,
        cor_ln_ppl: cov / (log_ppl.1 * log_ppl_base.1),
        ln_ppl_ratio: (ratio_val, ratio_unc),
        ppl_ratio: (ratio_val.exp(), ratio_val.exp() * ratio_unc),
        ppl_diff: (ppl_q.0 - ppl_base.0, diff_unc),
        kld: mean_unc(sums.kld, sums.kld2),
        kld_values,
        p_diff: mean_unc(sums.p_diff, sums.p_diff2),
        p_diff_values,
        rms_p_diff: (rms, if rms > 0.0 { 0.5 / rms * mse.1 } else { 0.0 }),
        same_top: (same, (same * (1.0 - same) / (n.max(2) - 1) as f64).sqrt()),
    }
}
