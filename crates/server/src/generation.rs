//! What the Ollama and OpenAI routes share: turning a prompt and parameters into an engine
//! request, streaming its events, and collecting them into one answer.

use crate::error::ApiError;
use crate::models::Lease;
use engine::generate::GenerateParams;
use engine::request::TokenLogprob;
use engine::{Event, Options, Request, Usage};
use futures_util::Stream;
use tokio::sync::mpsc;

/// A request to start.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub logprobs: Option<usize>,
    pub logit_bias: Vec<(u32, f32)>,
    /// The request's own context limit (Ollama `num_ctx`), at most the slot's.
    pub num_ctx: Option<usize>,
    /// Drop the start of a prompt that does not fit instead of refusing it.
    pub truncate: bool,
    /// What the output must match (compiled per sequence when it starts).
    pub grammar: Option<engine::Grammar>,
}

/// Queue the job on the lease's engine, which checks it against the model and its context.
/// The receiver's events end with `Done` or `Error`; dropping it cancels the request.
pub fn start(lease: &Lease, job: Job) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    let constraint = job.grammar.as_ref().map(|g| lease.handle.model.constrain(g)).transpose()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut req = Request::new(job.prompt, job.params, tx);
    req.logprobs = job.logprobs;
    req.logit_bias = job.logit_bias;
    req.constraint = constraint;
    req.num_ctx = job.num_ctx;
    req.truncate = job.truncate;
    lease.handle.submit(req)?;
    Ok(rx)
}

/// Ollama's `options` as the engine's options layer.
pub fn ollama_options(o: Option<&protocol::ollama::Options>) -> Options {
    let Some(o) = o else { return Options::default() };
    Options {
        temperature: o.temperature,
        top_k: o.top_k,
        top_p: o.top_p,
        min_p: o.min_p,
        repeat_penalty: o.repeat_penalty,
        repeat_last_n: o.repeat_last_n,
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        seed: o.seed,
        num_predict: o.num_predict,
        num_ctx: o.num_ctx,
        stop: o.stop.clone().map(|s| s.into_vec()),
    }
}

/// Everything a request produced.
#[derive(Debug, Default)]
pub struct Collected {
    pub text: String,
    pub ids: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub usage: Option<Usage>,
}

/// Wait for the whole answer.
pub async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> Result<Collected, ApiError> {
    let mut c = Collected::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { id, text, logprob } => {
                c.ids.push(id);
                c.text += &text;
                c.logprobs.extend(logprob);
            }
            Event::Done { text, usage } => {
                c.text += &text;
                c.usage = Some(usage);
                return Ok(c);
            }
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the engine stopped before the answer was complete"))
}

/// The events as a stream (ends after `Done` or `Error`).
pub fn events(rx: mpsc::UnboundedReceiver<Event>) -> impl Stream<Item = Event> + Send + Unpin + 'static {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }))
}

/// Embed on the model's engine thread.
pub async fn embed(lease: &Lease, inputs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    lease.handle.embed(engine::request::EmbedRequest { inputs, reply: tx })?;
    rx.await.map_err(|_| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the engine stopped"))?.map_err(Into::into)
}

/// Keep the first `d` dimensions and renormalise (Matryoshka-style, as Ollama does).
pub fn truncate_dims(v: &mut [Vec<f32>], d: usize) -> Result<(), ApiError> {
    if d == 0 {
        return Err(ApiError::bad_request("dimensions must be > 0").with_param("dimensions"));
    }
    for e in v.iter_mut() {
        if d < e.len() {
            e.truncate(d);
            let n = e.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            e.iter_mut().for_each(|x| *x /= n);
        }
    }
    Ok(())
}

/// A seed when the request gives none.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// `2024-05-01T12:34:56.789012345Z`, as Go formats time.Time in JSON.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_nanos())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5); // leap year, end of Feb
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000000Z");
    }
}
