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
const UBATCH: usize = 512;

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
    let nv = model.config.n_vocab;
    let mut cache = KvCache::with_types(&model.config, n_ctx, cache).map_err(|e| EngineError::BadRequest(e.to_string()))?;
    let mut batch = Batch::default();
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(n_chunks);
    let first = n_ctx / 2;
    // llama-imatrix asks for every token's logits, so output.weight sees every token
    let all_logits = scratch.stats.as_ref().is_some_and(|s| s.process_output);
    for c in 0..n_chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        cache.clear();
        // Batches of UBATCH tokens (llama-perplexity's n_ubatch), so logits are held for
        // one batch at a time.
        for start in (0..n_ctx).step_by(UBATCH) {
            let end = (start + UBATCH).min(n_ctx);
            batch.clear();
            for (j, &t) in chunk.iter().enumerate().take(end).skip(start) {
                let t = if j == 0 { bos.unwrap_or(t) } else { t };
                batch.push(t, 0, all_logits || (j >= first && j + 1 < n_ctx));
            }
            let logits = model.forward(pool, &batch, &mut [&mut cache], scratch)?;
            for (k, j) in (start.max(first)..end.min(n_ctx - 1)).enumerate() {
                let r = if all_logits { j - start } else { k };
                let row = &logits[r * nv..(r + 1) * nv];
                let nll = -log_softmax_at(row, chunk[j + 1] as usize);
                sum += nll;
                sum2 += nll * nll;
                count += 1;
            }
        }
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
