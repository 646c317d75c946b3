//! What callers send to an engine ([`EngineHandle`](crate::EngineHandle)) and the domain
//! events it sends back. Wire formats (Ollama, OpenAI) are built from these at the edge.

use crate::generate::{FinishReason, GenerateParams};
use crate::EngineError;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A generation request. [`Request::new`] gives the defaults for everything but the prompt
/// and the parameters. Dropping the receiver of `events` cancels it: the engine frees its
/// sequence at the next step.
#[derive(Debug)]
pub struct Request {
    /// Prompt token ids; not empty, shorter than the context.
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// `Some(k)`: report each chosen token's log-probability and the `k` most likely
    /// alternatives (k may be 0).
    pub logprobs: Option<usize>,
    /// Added to the logits of these tokens before sampling (OpenAI `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// The grammar the output must follow, compiled (`LoadedModel::constrain`).
    pub constraint: Option<crate::Constraint>,
    /// The request's own context limit (Ollama `num_ctx`), at most the slot's: it bounds
    /// the prompt and the generation.
    pub num_ctx: Option<usize>,
    /// Drop the start of a prompt that does not fit (keeping its BOS) instead of refusing it.
    pub truncate: bool,
    /// `Some(k)`: score the prompt too: the log-probability of every prompt token after the
    /// first, with the `k` most likely alternatives, returned in [`Usage::prompt_logprobs`]
    /// (OpenAI's legacy `echo` with `logprobs`). The prompt is then computed from its start.
    pub prompt_logprobs: Option<usize>,
    /// With `prompt_logprobs`: score only the prompt tokens from this position on (the
    /// ones before may come from the prefix cache); 0 scores all after the first.
    pub score_from: usize,
    /// Report how sure the model was of each sampled token ([`Confidence`]), for routing.
    pub confidence: bool,
    /// LoRA adapters over the base model for this request (its own batch rows use them;
    /// its neighbours in the batch are unaffected).
    pub adapters: Option<std::sync::Arc<model::Adapters>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub submitted: Instant,
}

impl Request {
    /// A request for `prompt` with `params`, its events sent to `events`.
    pub fn new(prompt: Vec<u32>, params: GenerateParams, events: mpsc::UnboundedSender<Event>) -> Request {
        Request {
            prompt,
            params,
            logprobs: None,
            logit_bias: Vec::new(),
            constraint: None,
            num_ctx: None,
            truncate: false,
            prompt_logprobs: None,
            score_from: 0,
            confidence: false,
            adapters: None,
            events,
            submitted: Instant::now(),
        }
    }
}

/// What happens to a request, in order: `Token`s, then one `Done` or one `Error`.
#[derive(Debug)]
pub enum Event {
    /// One sampled token. `text` is the text that became final with it: empty while a
    /// possible stop string or a split UTF-8 character is held back.
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
        /// With [`Request::confidence`].
        confidence: Option<Confidence>,
    },
    /// The end: the text still held back (if not a stop string), and the figures.
    Done {
        text: String,
        usage: Usage,
    },
    Error(EngineError),
}

/// Log-probability of one chosen token and of the most likely alternatives, from the raw
/// logits (before penalties and sampling filters), as OpenAI reports them.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: Candidate,
    pub top: Vec<Candidate>,
}

/// How sure the model was of one sampled token, over the distribution it was drawn from
/// (the logits after a constraint's mask and `logit_bias`, before penalties and sampling
/// filters). Computed in one pass over the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    /// log p of the sampled token.
    pub logprob: f32,
    /// Entropy of the distribution, in nats.
    pub entropy: f32,
    /// log p(best) − log p(second best) over the tokens still allowed; infinite when only
    /// one token was allowed.
    pub margin: f32,
}

impl Confidence {
    /// The confidence of `id` under `logits` (-inf and NaN logits are excluded tokens).
    pub fn of(logits: &[f32], id: u32) -> Confidence {
        let (mut best, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &l in logits {
            if l > best {
                second = best;
                best = l;
            } else if l > second {
                second = l;
            }
        }
        if !best.is_finite() {
            return Confidence { logprob: 0.0, entropy: 0.0, margin: f32::INFINITY };
        }
        // sum e^(l - best) and sum e^(l - best) (l - best), in f64.
        let (mut z, mut zl) = (0f64, 0f64);
        for &l in logits {
            if l.is_finite() {
                let d = (l - best) as f64;
                let e = d.exp();
                z += e;
                zl += e * d;
            }
        }
        let ln_z = z.ln();
        // H = -sum p (d - ln z) = ln z - (sum e d) / z
        let entropy = (ln_z - zl / z).max(0.0) as f32;
        let logprob = logits.get(id as usize).filter(|l| l.is_finite()).map_or(f32::NEG_INFINITY, |&l| ((l - best) as f64 - ln_z) as f32);
        Confidence { logprob, entropy, margin: best - second }
    }
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: u32,
    /// The token's bytes (a token may hold part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

impl Candidate {
    /// The token's text, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Figures of one finished request.
#[derive(Debug, Clone)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache (not recomputed).
    pub cached_tokens: usize,
    /// From submission until the first prompt chunk ran (queueing).
    pub queue_duration: Duration,
    pub prompt_eval_duration: Duration,
    pub eval_count: usize,
    pub eval_duration: Duration,
    pub finish: FinishReason,
    /// With [`Request::prompt_logprobs`]: the prompt tokens from `score_from` (at least 1) on,
    /// each scored by the tokens before it.
    pub prompt_logprobs: Vec<TokenLogprob>,
}

/// An embedding request: one vector per input, mean-pooled over the final hidden states and
/// L2-normalised.
#[derive(Debug)]
pub struct EmbedRequest {
    pub inputs: Vec<Vec<u32>>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("server busy: {running} requests running and {queued} queued for this model; retry later")]
    Overloaded { running: usize, queued: usize },
    #[error("the model is shutting down")]
    Closed,
    /// The request itself is wrong (an empty or too long prompt, a bad parameter).
    #[error(transparent)]
    Invalid(#[from] EngineError),
}

#[cfg(test)]
mod tests {
    use super::Confidence;

    #[test]
    fn confidence_of_known_distributions() {
        // Uniform over 4: entropy ln 4, log p = -ln 4, no margin.
        let c = Confidence::of(&[1.0; 4], 2);
        assert!((c.entropy - 4f32.ln()).abs() < 1e-6 && (c.logprob + 4f32.ln()).abs() < 1e-6 && c.margin == 0.0, "{c:?}");
        // p = (0.5, 0.25, 0.25): H = 1.5 ln 2, margin ln 2.
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()];
        let c = Confidence::of(&l, 1);
        assert!((c.entropy - 1.5 * 2f32.ln()).abs() < 1e-6, "{c:?}");
        assert!((c.margin - 2f32.ln()).abs() < 1e-6 && (c.logprob - 0.25f32.ln()).abs() < 1e-6, "{c:?}");
        // A grammar's mask leaves one token: certain, infinite margin.
        let c = Confidence::of(&[f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY], 1);
        assert_eq!((c.logprob, c.entropy, c.margin), (0.0, 0.0, f32::INFINITY));
    }
}
