//! OpenAI's routes: /v1/chat/completions, /v1/completions (SSE streams ending with
//! `data: [DONE]`), /v1/embeddings, /v1/models and /v1/models/{id}.

use crate::error::{parse_json, ApiError, JsonBody, OpenAiError};
use crate::generation::{self, collect, events, random_seed, unix_now, Collected, Job};
use crate::models::Lease;
use crate::{describe, AppState};
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::generate::{FinishReason, GenerateParams};
use engine::request::TokenLogprob;
use engine::template::ChatMessage;
use engine::{Event, Options, Usage};
use futures_util::StreamExt;
use protocol::openai as api;
use std::convert::Infallible;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
}

const FINGERPRINT: &str = concat!("bantam-", env!("CARGO_PKG_VERSION"));

/// OpenAI's own sampling defaults: temperature and top_p 1, no top-k, min-p or repeat
/// penalty. They are part of its API, so they lie over a model's Modelfile defaults; the
/// Modelfile still gives what OpenAI leaves open (stop strings, a token limit, a seed).
fn openai_defaults() -> Options {
    Options {
        temperature: Some(1.0),
        top_k: Some(0),
        top_p: Some(1.0),
        min_p: Some(0.0),
        repeat_penalty: Some(1.0),
        presence_penalty: Some(0.0),
        frequency_penalty: Some(0.0),
        ..Options::default()
    }
}

/// The request's sampling fields as an options layer, after OpenAI's own range rules;
/// llama-server's `top_k`, `min_p` and `repeat_penalty` extensions honoured.
fn options(s: &api::Sampling, max_tokens: Option<i64>, field: &'static str) -> Result<Options, ApiError> {
    if let Some(t) = s.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(ApiError::bad_request(format!("temperature must be between 0 and 2, got {t}")).with_param("temperature"));
    }
    for (name, v) in [("presence_penalty", s.presence_penalty), ("frequency_penalty", s.frequency_penalty)] {
        if let Some(v) = v.filter(|v| !(-2.0..=2.0).contains(v)) {
            return Err(ApiError::bad_request(format!("{name} must be between -2 and 2, got {v}")).with_param(name));
        }
    }
    if let Some(n) = max_tokens.filter(|&n| n < 0) {
        return Err(ApiError::bad_request(format!("{field} must be >= 0, got {n}")).with_param(field));
    }
    if let Some(k) = s.top_k.filter(|&k| k < 0) {
        return Err(ApiError::bad_request(format!("top_k must be >= 0, got {k}")).with_param("top_k"));
    }
    let o = Options {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        // OpenAI's seed is any integer; the engine's layer reads a negative one as random,
        // so a negative seed keeps its low 63 bits.
        seed: s.seed.map(|v| v & i64::MAX),
        num_predict: max_tokens,
        stop: s.stop.clone().map(|s| s.into_vec()),
        ..Options::default()
    };
    // Checked now, so a bad request is refused before a model loads for it.
    o.over(&openai_defaults()).params().map_err(engine::EngineError::from)?;
    Ok(o)
}

/// The request's options over OpenAI's defaults over the model's, resolved.
fn resolve(o: &Options, lm: &engine::LoadedModel) -> Result<GenerateParams, ApiError> {
    Ok(o.over(&openai_defaults()).over(&lm.defaults.options).params().map_err(engine::EngineError::from)?.params)
}

fn logit_bias(s: &api::Sampling, n_vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = &s.logit_bias else { return Ok(Vec::new()) };
    map.iter()
        .map(|(k, &v)| {
            let id: u32 = k.parse().map_err(|_| ApiError::bad_request(format!("logit_bias key {k:?} is not a token id")).with_param("logit_bias"))?;
            if id as usize >= n_vocab {
                return Err(ApiError::bad_request(format!("logit_bias token {id} is outside the vocabulary ({n_vocab})")).with_param("logit_bias"));
            }
            if !(-100.0..=100.0).contains(&v) {
                return Err(ApiError::bad_request(format!("logit_bias value {v} is outside [-100, 100]")).with_param("logit_bias"));
            }
            Ok((id, v))
        })
        .collect()
}

fn choices_n(s: &api::Sampling) -> Result<usize, ApiError> {
    match s.n.unwrap_or(1) {
        n @ 1..=16 => Ok(n),
        n => Err(ApiError::bad_request(format!("n must be between 1 and 16, got {n}")).with_param("n")),
    }
}

fn finish_reason(f: FinishReason) -> Option<String> {
    match f {
        FinishReason::Stop => Some("stop".into()),
        FinishReason::Length => Some("length".into()),
        FinishReason::Cancelled => None,
    }
}

fn usage(prompt_tokens: usize, done: &[&Usage]) -> api::Usage {
    let completion_tokens = done.iter().map(|u| u.eval_count).sum();
    let cached = done.iter().map(|u| u.cached_tokens).max().unwrap_or(0);
    api::Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        prompt_tokens_details: Some(api::PromptTokensDetails { cached_tokens: cached }),
    }
}

fn chat_logprobs(v: &[TokenLogprob]) -> api::ChoiceLogprobs {
    api::ChoiceLogprobs {
        content: v
            .iter()
            .map(|l| api::TokenLogprob {
                token: l.token.text(),
                logprob: l.token.logprob,
                bytes: l.token.bytes.clone(),
                top_logprobs: l.top.iter().map(|c| api::TopLogprob { token: c.text(), logprob: c.logprob, bytes: c.bytes.clone() }).collect(),
            })
            .collect(),
    }
}

fn completion_logprobs(v: &[TokenLogprob], mut offset: usize) -> api::CompletionLogprobs {
    let mut out = api::CompletionLogprobs::default();
    for l in v {
        let text = l.token.text();
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(l.token.logprob);
        out.top_logprobs.push(l.top.iter().map(|c| (c.text(), serde_json::Value::from(c.logprob))).collect());
    }
    out
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", random_seed())
}

fn message_text(m: &api::ChatMessage) -> Result<String, ApiError> {
    match &m.content {
        None => Ok(String::new()),
        Some(api::Content::Text(s)) => Ok(s.clone()),
        Some(api::Content::Parts(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => s += t,
                    (kind, _) => return Err(ApiError::bad_request(format!("message content of type {kind:?} is not supported")).with_param("messages")),
                }
            }
            Ok(s)
        }
    }
}

/// Start `n` generations of one prompt (seeds `seed`, `seed + 1`, …).
fn start_n(
    lease: &Lease,
    prompt: &[u32],
    params: &GenerateParams,
    n: usize,
    logprobs: Option<usize>,
    bias: &[(u32, f32)],
    grammar: Option<&engine::Grammar>,
) -> Result<Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>, ApiError> {
    (0..n)
        .map(|i| {
            let mut p = params.clone();
            p.sampling.seed = p.sampling.seed.wrapping_add(i as u64);
            generation::start(
                lease,
                Job { prompt: prompt.to_vec(), params: p, logprobs, logit_bias: bias.to_vec(), num_ctx: None, truncate: false, grammar: grammar.cloned() },
            )
        })
        .collect()
}

async fn collect_all(rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>) -> Result<Vec<Collected>, ApiError> {
    futures_util::future::join_all(rxs.into_iter().map(collect)).await.into_iter().collect()
}

/// Events of several generations, tagged with their choice index.
fn merged(rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<Event>>, first_index: usize) -> impl futures_util::Stream<Item = (usize, Event)> + Send + Unpin {
    futures_util::stream::select_all(rxs.into_iter().enumerate().map(move |(i, rx)| events(rx).map(move |e| (first_index + i, e)).boxed()))
}

fn sse(data: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    let events =
        data.map(|d| Ok::<_, Infallible>(SseEvent::default().data(d))).chain(futures_util::stream::once(async { Ok(SseEvent::default().data("[DONE]")) }));
    Sse::new(events).into_response()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn stream_error(e: engine::EngineError) -> String {
    let e = ApiError::from(e);
    json(&serde_json::json!({"error": {"message": e.message, "type": "server_error", "param": null, "code": e.code}}))
}

async fn chat_completions(State(state): State<AppState>, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: api::ChatCompletionRequest = parse_json(body)?;
    let grammar = crate::structured::openai_format(req.response_format.as_ref(), &req.sampling)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty").with_param("messages").into());
    }
    let messages = req
        .messages
        .iter()
        .map(|m| {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::bad_request(format!("invalid message role {:?}", m.role)).with_param("messages"));
            }
            let role = if m.role == "developer" { "system" } else { m.role.as_str() };
            let mut c = ChatMessage::new(role, message_text(m)?);
            c.tool_calls = m.tool_calls.clone();
            c.name = m.name.clone();
            c.tool_call_id = m.tool_call_id.clone();
            Ok(c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_field = if req.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
    let options = options(&req.sampling, req.max_completion_tokens.or(req.max_tokens), max_field)?;
    let n = choices_n(&req.sampling)?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), k) => Some(k.unwrap_or(0).min(20)),
        (_, Some(_)) => return Err(ApiError::bad_request("top_logprobs requires logprobs: true").with_param("top_logprobs").into()),
        _ => None,
    };
    let tools = crate::tool_calls::Tools::from_openai(req.tools.as_ref(), req.tool_choice.as_ref(), req.parallel_tool_calls, grammar.is_some())?;
    let lease = state.models.acquire(&req.model, None).await?;
    let mut messages = messages;
    lease.handle.model.defaults.open_conversation(&mut messages);
    let params = resolve(&options, &lease.handle.model)?;
    let bias = logit_bias(&req.sampling, lease.handle.model.model.config.n_vocab)?;
    let lm = &lease.handle.model;
    let (prompt, grammar) = match &tools {
        Some(t) => (t.prompt(lm, &messages)?, t.grammar(lm).or(grammar)),
        None => (lm.chat_prompt(&messages, None)?, grammar),
    };
    let format = lm.tool_format();
    let rxs = start_n(&lease, &prompt, &params, n, logprobs, &bias, grammar.as_ref())?;
    let (id, created, model) = (request_id("chatcmpl"), unix_now(), req.model.clone());
    if req.sampling.stream != Some(true) {
        let all = collect_all(rxs).await?;
        let usages: Vec<&Usage> = all.iter().filter_map(|c| c.usage.as_ref()).collect();
        let usage = usage(prompt.len(), &usages);
        let choices = all
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let finish = c.usage.and_then(|u| finish_reason(u.finish));
                let (content, tool_calls, finish) = match tools.as_ref().and_then(|t| t.parse(format, &c.text)) {
                    Some((content, calls)) => ((!content.is_empty()).then_some(content), Some(calls), Some("tool_calls".to_string())),
                    None => (Some(c.text), None, finish),
                };
                api::ChatChoice {
                    index,
                    message: api::AssistantMessage { role: "assistant".into(), content, tool_calls },
                    logprobs: logprobs.map(|_| chat_logprobs(&c.logprobs)),
                    finish_reason: finish,
                }
            })
            .collect();
        let r = api::ChatCompletion { id, object: "chat.completion", created, model, system_fingerprint: FINGERPRINT.into(), choices, usage };
        return Ok(Json(r).into_response());
    }
    let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let chunk = move |choices: Vec<api::ChunkChoice>, usage: Option<api::Usage>| api::ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model.clone(),
        system_fingerprint: FINGERPRINT.into(),
        choices,
        usage: include_usage.then_some(usage),
    };
    let choice = |index: usize, delta: api::Delta, logprobs: Option<api::ChoiceLogprobs>, finish: Option<String>| api::ChunkChoice {
        index,
        delta,
        logprobs,
        finish_reason: finish,
    };
    // Each choice opens with the assistant role, as OpenAI's streams do.
    let opening: Vec<String> = (0..n)
        .map(|i| {
            json(&chunk(vec![choice(i, api::Delta { role: Some("assistant".into()), content: Some(String::new()), ..Default::default() }, None, None)], None))
        })
        .collect();
    let n_prompt = prompt.len();
    let mut done: Vec<Usage> = Vec::new();
    // With tools on offer, text streams as content until it may be a call; a call is held
    // to the end of the choice and goes out as `tool_calls` deltas.
    let mut sniffers: Option<Vec<crate::tool_calls::CallSniffer>> = tools.is_some().then(|| (0..n).map(|_| Default::default()).collect());
    let text_delta = |text: String| api::Delta { content: Some(text), ..Default::default() };
    let body = merged(rxs, 0).filter_map(move |(i, ev)| {
        let _hold = &lease;
        let mut out = Vec::new();
        match ev {
            Event::Token { text, logprob, .. } => {
                // With tools, the sniffer says what may go out yet (held text has no logprobs).
                let (text, lp) = match sniffers.as_mut() {
                    Some(s) => (s[i].push(&text), None),
                    None => (text, logprob.map(|l| chat_logprobs(&[l]))),
                };
                if !text.is_empty() || lp.is_some() {
                    out.push(json(&chunk(vec![choice(i, text_delta(text), lp, None)], None)));
                }
            }
            Event::Done { text, usage } => {
                let (text, calls) = match (sniffers.as_mut(), tools.as_ref()) {
                    (Some(s), Some(t)) => {
                        let held = s[i].push(&text);
                        let (rest, calls) = std::mem::take(&mut s[i]).finish(t, format);
                        (held + &rest, calls)
                    }
                    _ => (text, None),
                };
                if !text.is_empty() {
                    out.push(json(&chunk(vec![choice(i, text_delta(text), None, None)], None)));
                }
                let mut finish = finish_reason(usage.finish);
                if let Some(calls) = calls {
                    let deltas = calls.into_iter().enumerate().map(|(k, c)| api::ToolCall { index: Some(k), ..c }).collect();
                    out.push(json(&chunk(vec![choice(i, api::Delta { tool_calls: Some(deltas), ..Default::default() }, None, None)], None)));
                    finish = Some("tool_calls".into());
                }
                out.push(json(&chunk(vec![choice(i, api::Delta::default(), None, finish)], None)));
                done.push(usage);
                if include_usage && done.len() == n {
                    let refs: Vec<&Usage> = done.iter().collect();
                    out.push(json(&chunk(Vec::new(), Some(self::usage(n_prompt, &refs)))));
                }
            }
            Event::Error(e) => out.push(stream_error(e)),
        }
        async move { (!out.is_empty()).then(|| futures_util::stream::iter(out)) }
    });
    Ok(sse(futures_util::stream::iter(opening).chain(body.flatten())))
}

/// The prompts of a completion request, as token ids (text gets BOS as the model asks).
fn completion_prompts(lease: &Lease, p: Option<api::Prompt>) -> Result<Vec<Vec<u32>>, ApiError> {
    let tok = &lease.handle.model.tokenizer;
    let prompts = match p {
        None => return Err(ApiError::bad_request("prompt is required").with_param("prompt")),
        Some(api::Prompt::Text(s)) => vec![tok.encode(&s, true, true)],
        Some(api::Prompt::Texts(v)) => v.iter().map(|s| tok.encode(s, true, true)).collect(),
        Some(api::Prompt::Tokens(t)) => vec![t],
        Some(api::Prompt::TokenLists(v)) => v,
    };
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::bad_request("prompt must not be empty").with_param("prompt"));
    }
    let n_vocab = lease.handle.model.model.config.n_vocab;
    if let Some(&t) = prompts.iter().flatten().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::bad_request(format!("token id {t} is outside the vocabulary ({n_vocab})")).with_param("prompt"));
    }
    Ok(prompts)
}

async fn completions(State(state): State<AppState>, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: api::CompletionRequest = parse_json(body)?;
    let grammar = crate::structured::openai_format(req.response_format.as_ref(), &req.sampling)?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix is not supported").with_param("suffix").into());
    }
    // OpenAI's default for completions is 16 tokens.
    let options = options(&req.sampling, Some(req.max_tokens.unwrap_or(16)), "max_tokens")?;
    let n = choices_n(&req.sampling)?;
    let logprobs = req.logprobs.map(|k| k.min(20));
    let lease = state.models.acquire(&req.model, None).await?;
    let params = resolve(&options, &lease.handle.model)?;
    let bias = logit_bias(&req.sampling, lease.handle.model.model.config.n_vocab)?;
    let prompts = completion_prompts(&lease, req.prompt)?;
    let echo = req.echo == Some(true);
    let prompt_text: Vec<String> = prompts.iter().map(|p| if echo { lease.handle.model.tokenizer.decode(p, false) } else { String::new() }).collect();
    let mut rxs = Vec::new();
    for p in &prompts {
        rxs.extend(start_n(&lease, p, &params, n, logprobs, &bias, grammar.as_ref())?);
    }
    let n_prompt: usize = prompts.iter().map(Vec::len).sum();
    let (id, created, model) = (request_id("cmpl"), unix_now(), req.model.clone());
    if req.sampling.stream != Some(true) {
        let all = collect_all(rxs).await?;
        let usages: Vec<&Usage> = all.iter().filter_map(|c| c.usage.as_ref()).collect();
        let usage = usage(n_prompt, &usages);
        let choices = all
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let echoed = &prompt_text[index / n];
                api::CompletionChoice {
                    text: format!("{echoed}{}", c.text),
                    index,
                    logprobs: logprobs.map(|_| completion_logprobs(&c.logprobs, echoed.len())),
                    finish_reason: c.usage.and_then(|u| finish_reason(u.finish)),
                }
            })
            .collect();
        let r = api::Completion { id, object: "text_completion", created, model, system_fingerprint: FINGERPRINT.into(), choices, usage: Some(usage) };
        return Ok(Json(r).into_response());
    }
    let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let total = rxs.len();
    let chunk = move |choices: Vec<api::CompletionChoice>, usage: Option<api::Usage>| api::Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        system_fingerprint: FINGERPRINT.into(),
        choices,
        usage,
    };
    let mut done: Vec<Usage> = Vec::new();
    let mut echoed = vec![!echo; total];
    let body = merged(rxs, 0).filter_map(move |(i, ev)| {
        let _hold = &lease;
        let mut out = Vec::new();
        let mut text_of = |t: String| {
            if echoed[i] {
                t
            } else {
                echoed[i] = true;
                format!("{}{t}", prompt_text[i / n])
            }
        };
        let choice = |text: String, logprobs, finish| api::CompletionChoice { text, index: i, logprobs, finish_reason: finish };
        match ev {
            Event::Token { text, logprob, .. } => {
                if !text.is_empty() || logprob.is_some() {
                    let lp = logprob.map(|l| completion_logprobs(&[l], 0));
                    out.push(json(&chunk(vec![choice(text_of(text), lp, None)], None)));
                }
            }
            Event::Done { text, usage } => {
                out.push(json(&chunk(vec![choice(text_of(text), None, finish_reason(usage.finish))], None)));
                done.push(usage);
                if include_usage && done.len() == total {
                    let refs: Vec<&Usage> = done.iter().collect();
                    out.push(json(&chunk(Vec::new(), Some(self::usage(n_prompt, &refs)))));
                }
            }
            Event::Error(e) => out.push(stream_error(e)),
        }
        async move { (!out.is_empty()).then(|| futures_util::stream::iter(out)) }
    });
    Ok(sse(body.flatten()))
}

/// Little-endian f32 bytes in base64, as the OpenAI SDKs decode `encoding_format: base64`.
fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

async fn embeddings(State(state): State<AppState>, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: api::EmbeddingRequest = parse_json(body)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::bad_request(format!("encoding_format must be \"float\" or \"base64\", got {f:?}")).with_param("encoding_format").into())
        }
    };
    let lease = state.models.acquire(&req.model, None).await?;
    let tok = &lease.handle.model.tokenizer;
    let inputs: Vec<Vec<u32>> = match req.input {
        None => return Err(ApiError::bad_request("input is required").with_param("input").into()),
        Some(api::EmbeddingInput::Text(s)) => vec![tok.encode(&s, true, true)],
        Some(api::EmbeddingInput::Texts(v)) => v.iter().map(|s| tok.encode(s, true, true)).collect(),
        Some(api::EmbeddingInput::Tokens(t)) => vec![t],
        Some(api::EmbeddingInput::TokenLists(v)) => v,
    };
    if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
        return Err(ApiError::bad_request("input must not be empty").with_param("input").into());
    }
    let n_ctx = lease.handle.options.n_ctx;
    if let Some(long) = inputs.iter().find(|i| i.len() > n_ctx) {
        return Err(ApiError::from(engine::EngineError::PromptTooLong { n_prompt: long.len(), n_ctx }).with_param("input").into());
    }
    let n_tokens = inputs.iter().map(Vec::len).sum();
    let mut vectors = generation::embed(&lease, inputs).await?;
    if let Some(d) = req.dimensions {
        generation::truncate_dims(&mut vectors, d)?;
    }
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| api::Embedding {
            object: "embedding",
            embedding: if base64 { api::EmbeddingVector::Base64(base64_f32(&v)) } else { api::EmbeddingVector::Float(v) },
            index,
        })
        .collect();
    Ok(Json(api::EmbeddingResponse { object: "list", data, model: req.model, usage: api::EmbeddingUsage { prompt_tokens: n_tokens, total_tokens: n_tokens } })
        .into_response())
}

/// Installed catalog models and whatever else is loaded.
fn known_models(state: &AppState) -> Vec<api::Model> {
    let mut v: Vec<api::Model> = describe::installed(&state.store)
        .into_iter()
        .map(|m| api::Model {
            id: m.name,
            object: "model",
            created: m.modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            owned_by: "library".into(),
        })
        .collect();
    for (name, ..) in state.models.snapshot() {
        if !v.iter().any(|m| m.id == name) {
            v.push(api::Model { id: name, object: "model", created: unix_now(), owned_by: "local".into() });
        }
    }
    v
}

async fn list_models(State(state): State<AppState>) -> Response {
    Json(api::ModelList { object: "list", data: known_models(&state) }).into_response()
}

async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, OpenAiError> {
    let canonical = registry::canonical_name(&state.store, &id);
    match known_models(&state).into_iter().find(|m| m.id == canonical || m.id == id) {
        Some(m) => Ok(Json(api::Model { id, ..m }).into_response()),
        None => Err(ApiError::not_found(format!("model '{id}' not found")).with_param("model").into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_floats() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[]), "");
        assert_eq!(super::base64_f32(&[1.0, -2.0, 0.5]), "AACAPwAAAMAAAAA/");
    }
}
