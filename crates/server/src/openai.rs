//! OpenAI's routes: /v1/chat/completions, /v1/completions (SSE streams ending with
//! `data: [DONE]`), /v1/embeddings, /v1/models and /v1/models/{id}.

use crate::error::{parse_json, ApiError, JsonBody, OpenAiError};
use crate::generation::{self, random_seed, unix_now, EmbedJob, Input, Job, Piece, Prompt, Reasoning, Run};
use crate::tool_calls::Tools;
use crate::{describe, AppState};
use axum::extract::{Extension, Path, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::generate::FinishReason;
use engine::request::TokenLogprob;
use engine::template::{ChatMessage, Think, ThinkLevel};
use engine::tools::ToolCall;
use engine::{Options, Usage};
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

/// The request's sampling fields over OpenAI's defaults, as an options layer, after
/// OpenAI's own range rules;
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
    Ok(o.over(&openai_defaults()))
}

fn logit_bias(s: &api::Sampling) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = &s.logit_bias else { return Ok(Vec::new()) };
    map.iter()
        .map(|(k, &v)| {
            let id: u32 = k.parse().map_err(|_| ApiError::bad_request(format!("logit_bias key {k:?} is not a token id")).with_param("logit_bias"))?;
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

/// The usage of all choices; `prompt_tokens` where the run knows them, else the answers'.
fn usage<'a>(prompt_tokens: Option<usize>, done: impl IntoIterator<Item = &'a Usage> + Clone) -> api::Usage {
    let prompt_tokens = prompt_tokens.unwrap_or_else(|| done.clone().into_iter().map(|u| u.prompt_tokens).sum());
    let completion_tokens = done.clone().into_iter().map(|u| u.eval_count).sum();
    let cached = done.into_iter().map(|u| u.cached_tokens).max().unwrap_or(0);
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

/// OpenAI's legacy logprobs of tokens whose text starts at `offset`, appended to `out`.
fn completion_logprobs(out: &mut api::CompletionLogprobs, v: &[TokenLogprob], mut offset: usize) {
    for l in v {
        let text = l.token.text();
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(Some(l.token.logprob));
        out.top_logprobs.push(Some(l.top.iter().map(|c| (c.text(), serde_json::Value::from(shortest(c.logprob)))).collect()));
    }
}

/// An f32 as the f64 its shortest decimal form reads as, so that a value written here and
/// the same value written as an f32 elsewhere in the response compare equal in a client.
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The logprobs of a choice: with `echo`, the prompt's tokens first (the first one, which
/// nothing predicts, with `null`s), then the generated ones after the echoed text.
fn choice_logprobs(first: Option<&str>, prompt: &[TokenLogprob], echoed: usize, generated: &[TokenLogprob]) -> api::CompletionLogprobs {
    let mut out = api::CompletionLogprobs::default();
    if let Some(first) = first {
        out.tokens.push(first.to_string());
        out.token_logprobs.push(None);
        out.top_logprobs.push(None);
        out.text_offset.push(0);
        completion_logprobs(&mut out, prompt, first.len());
    }
    completion_logprobs(&mut out, generated, echoed);
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

/// What every object of one response shares.
struct Head {
    id: String,
    created: u64,
    model: String,
}

impl Head {
    fn new(prefix: &str, model: &str) -> Head {
        Head { id: request_id(prefix), created: unix_now(), model: model.to_string() }
    }
}

/// The caller's key id, from the authorization layer.
type Caller = Option<Extension<crate::security::Caller>>;

fn caller_id(c: Caller) -> Option<String> {
    c.map(|Extension(c)| c.0)
}

/// The engine's `think` for `reasoning_effort`, or for vLLM's
/// `chat_template_kwargs.enable_thinking`; neither: the template's default.
fn think(req: &api::ChatCompletionRequest) -> Result<Option<Think>, ApiError> {
    if let Some(effort) = req.reasoning_effort.as_deref() {
        return match effort {
            "none" | "minimal" => Ok(Some(Think::Off)),
            "low" => Ok(Some(Think::Level(ThinkLevel::Low))),
            "medium" => Ok(Some(Think::Level(ThinkLevel::Medium))),
            "high" => Ok(Some(Think::Level(ThinkLevel::High))),
            other => Err(ApiError::bad_request(format!("reasoning_effort must be one of none, minimal, low, medium, high; got {other:?}"))
                .with_param("reasoning_effort")),
        };
    }
    match req.chat_template_kwargs.as_ref().and_then(|k| k.get("enable_thinking")) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(on)) => Ok(Some(if *on { Think::On } else { Think::Off })),
        Some(v) => Err(ApiError::bad_request(format!("chat_template_kwargs.enable_thinking must be a boolean, got {v}")).with_param("chat_template_kwargs")),
    }
}

fn chat_messages(messages: &[api::ChatMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty").with_param("messages"));
    }
    messages
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
        .collect()
}

/// A chat completion request as a job.
fn chat_job(req: &api::ChatCompletionRequest) -> Result<Job, ApiError> {
    let grammar = crate::structured::openai_format(req.response_format.as_ref(), &req.sampling)?;
    let max_field = if req.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), k) => Some(k.unwrap_or(0).min(20)),
        (_, Some(_)) => return Err(ApiError::bad_request("top_logprobs requires logprobs: true").with_param("top_logprobs")),
        _ => None,
    };
    Ok(Job {
        model: req.model.clone(),
        prompt: Prompt::Chat(chat_messages(&req.messages)?),
        options: options(&req.sampling, req.max_completion_tokens.or(req.max_tokens), max_field)?,
        n: choices_n(&req.sampling)?,
        logprobs,
        logit_bias: logit_bias(&req.sampling)?,
        tools: Tools::from_openai(req.tools.as_deref(), req.tool_choice.as_ref(), req.parallel_tool_calls, grammar.is_some())?,
        grammar,
        think: think(req)?,
        reasoning: Reasoning::Separate,
        ..Job::default()
    })
}

/// Calls as OpenAI writes them; streamed deltas number them.
fn tool_calls(calls: Vec<ToolCall>, streamed: bool) -> Vec<api::ToolCall> {
    calls
        .into_iter()
        .enumerate()
        .map(|(k, c)| api::ToolCall {
            index: streamed.then_some(k),
            id: format!("call_{:016x}", random_seed()),
            kind: "function",
            function: api::FunctionCall { name: c.name, arguments: c.arguments.to_string() },
        })
        .collect()
}

async fn chat_completions(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: api::ChatCompletionRequest = parse_json(body)?;
    let mut job = chat_job(&req)?;
    job.stream = req.sampling.stream == Some(true);
    job.caller = caller_id(caller);
    let with_logprobs = job.logprobs.is_some();
    let run = generation::start(&state, job).await?;
    let tag = run.tag.clone();
    let head = Head::new("chatcmpl", &req.model);
    if req.sampling.stream == Some(true) {
        let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(crate::route::with_header(sse(chat_stream(head, run, include_usage)), &tag));
    }
    let n_prompt = run.n_prompt();
    let answers = run.collect().await?;
    let usage = usage(n_prompt, answers.iter().map(|a| &a.usage));
    let choices = answers
        .into_iter()
        .enumerate()
        .map(|(index, a)| {
            let (content, finish) = match a.calls {
                Some(_) => ((!a.content.is_empty()).then_some(a.content), Some("tool_calls".to_string())),
                None => (Some(a.content), finish_reason(a.usage.finish)),
            };
            let message =
                api::AssistantMessage { role: "assistant".into(), content, reasoning_content: a.thinking, tool_calls: a.calls.map(|c| tool_calls(c, false)) };
            api::ChatChoice { index, message, logprobs: with_logprobs.then(|| chat_logprobs(&a.logprobs)), finish_reason: finish }
        })
        .collect();
    let Head { id, created, model } = head;
    let r = api::ChatCompletion { id, object: "chat.completion", created, model, system_fingerprint: FINGERPRINT.into(), choices, usage, bantam: tag.routed() };
    Ok(crate::route::with_header(Json(r).into_response(), &tag))
}

/// A chat completion's chunks: each choice opens with the assistant role, then its text
/// and reasoning deltas, its tool calls, and a last delta with the finish reason; with
/// `include_usage`, one more chunk with the usage of all choices.
fn chat_stream(head: Head, run: Run, include_usage: bool) -> impl futures_util::Stream<Item = String> + Send + 'static {
    let (n, n_prompt, tag) = (run.choices(), run.n_prompt(), run.tag.clone());
    let chunk = move |choices: Vec<api::ChunkChoice>, usage: Option<api::Usage>, last: bool| {
        let (id, model) = (head.id.clone(), head.model.clone());
        json(&api::ChatCompletionChunk {
            id,
            object: "chat.completion.chunk",
            created: head.created,
            model,
            system_fingerprint: FINGERPRINT.into(),
            choices,
            usage: include_usage.then_some(usage),
            bantam: if last { tag.routed() } else { None },
        })
    };
    let choice = |index, delta, logprobs, finish_reason| vec![api::ChunkChoice { index, delta, logprobs, finish_reason }];
    let text = |content: String, thinking: String| api::Delta {
        content: (!content.is_empty() || thinking.is_empty()).then_some(content),
        reasoning_content: (!thinking.is_empty()).then_some(thinking),
        ..Default::default()
    };
    let opening: Vec<String> = (0..n)
        .map(|i| chunk(choice(i, api::Delta { role: Some("assistant".into()), content: Some(String::new()), ..Default::default() }, None, None), None, false))
        .collect();
    let mut done: Vec<Usage> = Vec::new();
    let body = run.stream().flat_map(move |(i, piece)| {
        let mut out = Vec::new();
        match piece {
            Piece::Delta { content, thinking, logprob, .. } => {
                out.push(chunk(choice(i, text(content, thinking), logprob.map(|l| chat_logprobs(&[l])), None), None, false))
            }
            Piece::Done { content, thinking, calls, usage, .. } => {
                if !content.is_empty() || !thinking.is_empty() {
                    out.push(chunk(choice(i, text(content, thinking), None, None), None, false));
                }
                let mut finish = finish_reason(usage.finish);
                if let Some(calls) = calls {
                    out.push(chunk(choice(i, api::Delta { tool_calls: Some(tool_calls(calls, true)), ..Default::default() }, None, None), None, false));
                    finish = Some("tool_calls".into());
                }
                done.push(usage);
                let last = done.len() == n;
                out.push(chunk(choice(i, api::Delta::default(), None, finish), None, last && !include_usage));
                if include_usage && last {
                    out.push(chunk(Vec::new(), Some(self::usage(n_prompt, &done)), true));
                }
            }
            Piece::Error(e) => out.push(stream_error(e)),
        }
        futures_util::stream::iter(out)
    });
    futures_util::stream::iter(opening).chain(body)
}

/// A completion request as a job.
fn completion_job(req: &api::CompletionRequest) -> Result<Job, ApiError> {
    let grammar = crate::structured::openai_format(req.response_format.as_ref(), &req.sampling)?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix is not supported").with_param("suffix"));
    }
    let inputs = match req.prompt.clone() {
        None => return Err(ApiError::bad_request("prompt is required").with_param("prompt")),
        Some(api::Prompt::Text(s)) => vec![Input::Text(s)],
        Some(api::Prompt::Texts(v)) => v.into_iter().map(Input::Text).collect(),
        Some(api::Prompt::Tokens(t)) => vec![Input::Tokens(t)],
        Some(api::Prompt::TokenLists(v)) => v.into_iter().map(Input::Tokens).collect(),
    };
    let logprobs = req.logprobs.map(|k| k.min(20));
    Ok(Job {
        model: req.model.clone(),
        prompt: Prompt::Completion(inputs),
        // `echo` with `logprobs` scores the prompt too (how lm-evaluation-harness reads
        // log-likelihoods, with `max_tokens` 0 or 1).
        prompt_logprobs: logprobs.filter(|_| req.echo == Some(true)),
        // OpenAI's default for completions is 16 tokens.
        options: options(&req.sampling, Some(req.max_tokens.unwrap_or(16)), "max_tokens")?,
        n: choices_n(&req.sampling)?,
        logprobs,
        logit_bias: logit_bias(&req.sampling)?,
        grammar,
        ..Job::default()
    })
}

async fn completions(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, OpenAiError> {
    let req: api::CompletionRequest = parse_json(body)?;
    let mut job = completion_job(&req)?;
    job.stream = req.sampling.stream == Some(true);
    job.caller = caller_id(caller);
    let with_logprobs = job.logprobs.is_some();
    let run = generation::start(&state, job).await?;
    let tag = run.tag.clone();
    let prompts = run.prompts.len().max(1);
    // With `echo`, each prompt's text comes before its choices' text.
    let mut echo: Vec<String> = run.prompts.iter().map(|p| if req.echo == Some(true) { run.decode(p) } else { String::new() }).collect();
    let mut first: Vec<Option<String>> = run.prompts.iter().map(|p| (req.echo == Some(true)).then(|| run.decode(&p[..1]))).collect();
    // An upstream's answer: no local prompts to echo.
    echo.resize(prompts, String::new());
    first.resize(prompts, None);
    let head = Head::new("cmpl", &req.model);
    if req.sampling.stream == Some(true) {
        let include_usage = req.sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return Ok(crate::route::with_header(sse(completion_stream(head, run, echo, include_usage)), &tag));
    }
    let (n, n_prompt) = (run.n, run.n_prompt());
    let answers = run.collect().await?;
    let usage = usage(n_prompt, answers.iter().map(|a| &a.usage));
    let choices = answers
        .into_iter()
        .enumerate()
        .map(|(index, a)| {
            let echoed = &echo[index / n];
            let logprobs = with_logprobs.then(|| choice_logprobs(first[index / n].as_deref(), &a.usage.prompt_logprobs, echoed.len(), &a.logprobs));
            api::CompletionChoice { text: format!("{echoed}{}", a.content), index, logprobs, finish_reason: finish_reason(a.usage.finish) }
        })
        .collect();
    let Head { id, created, model } = head;
    let r = api::Completion {
        id,
        object: "text_completion",
        created,
        model,
        system_fingerprint: FINGERPRINT.into(),
        choices,
        usage: Some(usage),
        bantam: tag.routed(),
    };
    Ok(crate::route::with_header(Json(r).into_response(), &tag))
}

/// A completion's chunks: each choice's text (after its echoed prompt), a last chunk with
/// the finish reason, and with `include_usage` one more with the usage of all choices.
fn completion_stream(head: Head, run: Run, echo: Vec<String>, include_usage: bool) -> impl futures_util::Stream<Item = String> + Send + 'static {
    let (n, total, n_prompt, tag) = (run.n, run.choices(), run.n_prompt(), run.tag.clone());
    let chunk = move |choices: Vec<api::CompletionChoice>, usage: Option<api::Usage>, last: bool| {
        let (id, model) = (head.id.clone(), head.model.clone());
        let bantam = if last { tag.routed() } else { None };
        json(&api::Completion { id, object: "text_completion", created: head.created, model, system_fingerprint: FINGERPRINT.into(), choices, usage, bantam })
    };
    let mut echoed: Vec<bool> = (0..total).map(|i| echo[i / n].is_empty()).collect();
    let mut done: Vec<Usage> = Vec::new();
    run.stream().flat_map(move |(i, piece)| {
        let mut text_of = |t: String| if std::mem::replace(&mut echoed[i], true) { t } else { format!("{}{t}", echo[i / n]) };
        let choice = |text: String, logprobs, finish_reason| vec![api::CompletionChoice { text, index: i, logprobs, finish_reason }];
        let mut out = Vec::new();
        match piece {
            Piece::Delta { content, logprob, .. } => {
                out.push(chunk(choice(text_of(content), logprob.map(|l| choice_logprobs(None, &[], 0, &[l])), None), None, false))
            }
            Piece::Done { content, usage, .. } => {
                done.push(usage);
                let last = done.len() == total;
                out.push(chunk(choice(text_of(content), None, finish_reason(done[done.len() - 1].finish)), None, last && !include_usage));
                if include_usage && last {
                    out.push(chunk(Vec::new(), Some(self::usage(n_prompt, &done)), true));
                }
            }
            Piece::Error(e) => out.push(stream_error(e)),
        }
        futures_util::stream::iter(out)
    })
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
    let inputs = match req.input {
        None => return Err(ApiError::bad_request("input is required").with_param("input").into()),
        Some(api::EmbeddingInput::Text(s)) => vec![Input::Text(s)],
        Some(api::EmbeddingInput::Texts(v)) => v.into_iter().map(Input::Text).collect(),
        Some(api::EmbeddingInput::Tokens(t)) => vec![Input::Tokens(t)],
        Some(api::EmbeddingInput::TokenLists(v)) => v.into_iter().map(Input::Tokens).collect(),
    };
    if inputs.is_empty() {
        return Err(ApiError::bad_request("input must not be empty").with_param("input").into());
    }
    let e = generation::embed(&state, EmbedJob { model: req.model.clone(), inputs, dimensions: req.dimensions, ..EmbedJob::default() }).await?;
    let (vectors, n_tokens) = (e.vectors, e.n_tokens);
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
    for name in state.router.iter().flat_map(|r| r.names()) {
        v.push(api::Model { id: name.to_string(), object: "model", created: unix_now(), owned_by: "route".into() });
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
