//! What a generation is asked to do ([`GenerateParams`]) and why it ended
//! ([`FinishReason`]). Generation itself runs on the engine thread ([`crate::worker`]),
//! for `bantam run` (one slot) and `serve` alike.

use crate::sampler::SamplingParams;

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
