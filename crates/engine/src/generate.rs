//! Generation for one sequence: prompt processing in batches, then one token at a time
//! through the sampler, until an end-of-generation token, a stop string, the token limit or
//! a cancel. A [`Sequence`] keeps its cache and the tokens in it, so the next prompt of a
//! chat reuses the common prefix instead of recomputing it.

use crate::loaded::LoadedModel;
use crate::sampler::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use crate::EngineError;
use kernels::pool::Pool;
use model::{Batch, KvCache, Scratch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokenizer::StreamDecoder;

/// Tokens per forward call while processing a prompt.
pub const PROMPT_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    /// Most tokens to generate; `None` runs until the context is full.
    pub num_predict: Option<usize>,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `num_predict` reached or the context full.
    Length,
    /// The caller cancelled.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest came from the reused prefix).
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: Duration,
    pub eval_count: usize,
    pub eval_duration: Duration,
    pub finish: FinishReason,
}

/// One sequence: its KV cache and the tokens it holds.
pub struct Sequence {
    pub cache: KvCache,
    pub tokens: Vec<u32>,
    scratch: Scratch,
    batch: Batch,
}

impl Sequence {
    pub fn new(lm: &LoadedModel, n_ctx: usize) -> Sequence {
        Sequence { cache: KvCache::new(&lm.model.config, n_ctx), tokens: Vec::new(), scratch: Scratch::default(), batch: Batch::default() }
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.capacity()
    }

    pub fn clear(&mut self) {
        self.cache.clear();
        self.tokens.clear();
    }

    /// Bring the cache to hold exactly `prompt` and return the logits of its last token.
    /// Reuses the longest common prefix with what the cache holds (at least the last token
    /// is always recomputed, since its logits are needed).
    fn prefill(&mut self, lm: &LoadedModel, pool: &Pool, prompt: &[u32]) -> Result<(usize, Vec<f32>), EngineError> {
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        self.cache.truncate(common);
        self.tokens.truncate(common);
        let mut last = Vec::new();
        for chunk in prompt[common..].chunks(PROMPT_BATCH) {
            self.batch.clear();
            for (i, &t) in chunk.iter().enumerate() {
                self.batch.push(t, 0, i + 1 == chunk.len());
            }
            let logits = lm.model.forward(pool, &self.batch, &mut [&mut self.cache], &mut self.scratch)?;
            last.clear();
            last.extend_from_slice(logits);
            self.tokens.extend_from_slice(chunk);
        }
        Ok((prompt.len() - common, last))
    }

    /// Generate after `prompt`, calling `on_text` with each piece of text as it becomes
    /// final (stop strings held back and removed; UTF-8 never split). `cancel` stops at the
    /// next token.
    pub fn generate(
        &mut self,
        lm: &LoadedModel,
        pool: &Pool,
        prompt: &[u32],
        params: &GenerateParams,
        mut constraint: Option<&mut crate::Constraint>,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenerateStats, EngineError> {
        params.sampling.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::BadRequest("the prompt is empty".into()));
        }
        if prompt.len() >= self.n_ctx() {
            return Err(EngineError::PromptTooLong { n_prompt: prompt.len(), n_ctx: self.n_ctx() });
        }
        let t0 = Instant::now();
        let (computed, mut logits) = self.prefill(lm, pool, prompt)?;
        let prompt_eval_duration = t0.elapsed();
        let mut sampler = Sampler::new(params.sampling.clone(), lm.model.config.n_vocab);
        let mut stop = StopMatcher::new(params.stop.clone());
        let mut decoder = StreamDecoder::new(false);
        let limit = params.num_predict.unwrap_or(usize::MAX);
        let t1 = Instant::now();
        let mut eval_count = 0;
        let mut masked = Vec::new();
        let finish = loop {
            if cancel.load(Ordering::Relaxed) {
                break FinishReason::Cancelled;
            }
            if eval_count >= limit {
                break FinishReason::Length;
            }
            let id = match constraint.as_deref_mut() {
                Some(c) => {
                    c.apply(&logits, &mut masked)?;
                    sampler.sample(&masked, &self.tokens)
                }
                None => sampler.sample(&logits, &self.tokens),
            };
            eval_count += 1;
            if lm.tokenizer.is_eog(id) {
                break FinishReason::Stop;
            }
            let grammar_done = match constraint.as_deref_mut() {
                Some(c) => {
                    c.commit(id)?;
                    c.is_done()
                }
                None => false,
            };
            let (text, hit) = stop.push(&decoder.push(&lm.tokenizer, id));
            if !text.is_empty() {
                on_text(&text);
            }
            if hit || grammar_done {
                break FinishReason::Stop;
            }
            if self.tokens.len() + 1 >= self.n_ctx() || eval_count >= limit {
                // `id` is not pushed: `tokens` lists exactly what the cache holds.
                break FinishReason::Length;
            }
            self.batch.clear();
            self.batch.push(id, 0, true);
            let l = lm.model.forward(pool, &self.batch, &mut [&mut self.cache], &mut self.scratch)?;
            logits.copy_from_slice(l);
            self.tokens.push(id);
        };
        if !stop.is_stopped() {
            // Flush what the decoder and the stop matcher still hold.
            let (mut text, _) = stop.push(&decoder.finish());
            if !stop.is_stopped() {
                text += &stop.finish();
            }
            if !text.is_empty() {
                on_text(&text);
            }
        }
        Ok(GenerateStats { prompt_tokens: prompt.len(), prompt_eval_count: computed, prompt_eval_duration, eval_count, eval_duration: t1.elapsed(), finish })
    }
}
