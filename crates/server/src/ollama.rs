//! Ollama's routes: /api/generate, /api/chat (NDJSON streams by default), /api/embed,
//! /api/embeddings, /api/tags, /api/show, /api/ps, /api/version, and `/` for health.

use crate::error::{parse_json, ApiError, JsonBody, OllamaError};
use crate::generation::{self, rfc3339, EmbedJob, Input, Job, Piece, Prompt};
use crate::tool_calls::Tools;
use crate::{describe, AppState};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::request::TokenLogprob;
use engine::template::ChatMessage;
use engine::template::{Think, ThinkLevel};
use engine::tools::ToolCall;
use engine::Usage;
use futures_util::StreamExt;
use protocol::ollama as api;
use std::time::{Duration, Instant, SystemTime};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { "bantam is running" }).head(|| async {}))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
        .route("/api/tags", get(tags))
        .route("/api/show", post(show))
        .route("/api/ps", get(ps))
        .route("/api/version", get(|| async { Json(api::VersionResponse { version: env!("CARGO_PKG_VERSION").into() }) }))
}

/// The engine's `think` for Ollama's.
fn think(t: api::Think) -> Think {
    match t {
        api::Think::On => Think::On,
        api::Think::Off => Think::Off,
        api::Think::Low => Think::Level(ThinkLevel::Low),
        api::Think::Medium => Think::Level(ThinkLevel::Medium),
        api::Think::High => Think::Level(ThinkLevel::High),
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn logprobs(v: &[TokenLogprob]) -> Vec<api::Logprob> {
    v.iter()
        .map(|l| api::Logprob {
            token: l.token.text(),
            logprob: l.token.logprob,
            bytes: l.token.bytes.clone(),
            top_logprobs: l.top.iter().map(|c| api::TopLogprob { token: c.text(), logprob: c.logprob, bytes: c.bytes.clone() }).collect(),
        })
        .collect()
}

fn want_logprobs(logprobs: Option<bool>, top: Option<usize>) -> Option<usize> {
    (logprobs == Some(true)).then(|| top.unwrap_or(0).min(20))
}

fn ndjson(lines: impl futures_util::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(|mut l| {
        l.push('\n');
        Ok::<_, std::convert::Infallible>(l)
    }));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn line<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// What every response line of one request shares.
#[derive(Clone)]
struct Reply {
    model: String,
    started: Instant,
    load: Duration,
}

impl Reply {
    fn metrics(&self, u: &Usage) -> api::Metrics {
        api::Metrics {
            total_duration: ns(self.started.elapsed()),
            load_duration: ns(self.load),
            prompt_eval_count: u.prompt_tokens,
            prompt_eval_duration: ns(u.prompt_eval_duration),
            eval_count: u.eval_count,
            eval_duration: ns(u.eval_duration),
        }
    }

    fn generated(&self, response: String, logprobs: Option<Vec<api::Logprob>>) -> api::GenerateResponse {
        api::GenerateResponse { model: self.model.clone(), created_at: rfc3339(SystemTime::now()), response, logprobs, ..Default::default() }
    }

    fn chatted(&self, message: api::Message, logprobs: Option<Vec<api::Logprob>>) -> api::ChatResponse {
        api::ChatResponse { model: self.model.clone(), created_at: rfc3339(SystemTime::now()), message, logprobs, ..Default::default() }
    }

    /// The last line of a chat.
    fn finished(&self, u: &Usage, message: api::Message) -> api::ChatResponse {
        api::ChatResponse { done: true, done_reason: Some(u.finish.as_str().into()), metrics: Some(self.metrics(u)), ..self.chatted(message, None) }
    }
}

/// The assistant's message: content, reasoning, and calls as Ollama writes them
/// (`{"function": {"name", "arguments": {…}}}`).
fn message(content: String, thinking: Option<String>, calls: Option<Vec<ToolCall>>) -> api::Message {
    let tool_calls =
        calls.map(|c| serde_json::Value::Array(c.into_iter().map(|c| serde_json::json!({"function": {"name": c.name, "arguments": c.arguments}})).collect()));
    api::Message { role: "assistant".into(), content, thinking: thinking.filter(|t| !t.is_empty()), tool_calls, ..Default::default() }
}

/// A generate request as a job (the request keeps what the response needs), and whether
/// it only loads the model (no prompt).
fn generate_job(req: &mut api::GenerateRequest) -> Result<(Job, bool), ApiError> {
    if req.images.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request("this model does not accept images"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(format!("{} does not support insert", req.model)));
    }
    let context = req.context.take().unwrap_or_default();
    let load_only = req.prompt.is_empty() && context.is_empty();
    let job = Job {
        model: req.model.clone(),
        keep_alive: req.keep_alive,
        prompt: Prompt::Generate { prompt: std::mem::take(&mut req.prompt), system: req.system.take(), template: req.template.take(), raw: req.raw, context },
        options: generation::ollama_options(req.options.as_ref()),
        logprobs: want_logprobs(req.logprobs, req.top_logprobs),
        truncate: req.truncate == Some(true),
        grammar: crate::structured::ollama_format(req.format.as_ref()),
        ..Job::default()
    };
    Ok((job, load_only))
}

/// The caller's key id, from the authorization layer.
type Caller = Option<Extension<crate::security::Caller>>;

async fn generate(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let mut req: api::GenerateRequest = parse_json(body)?;
    let (mut job, load_only) = generate_job(&mut req)?;
    job.stream = req.stream != Some(false);
    job.caller = caller.map(|Extension(c)| c.0);
    let base = api::GenerateResponse { model: req.model.clone(), created_at: rfc3339(SystemTime::now()), done: true, ..Default::default() };
    if load_only {
        let reason = generation::load_only(&state, &job).await?;
        return Ok(Json(api::GenerateResponse { done_reason: Some(reason.into()), ..base }).into_response());
    }
    let run = generation::start(&state, job).await?;
    let tag = run.tag.clone();
    let reply = Reply { model: req.model, started, load: run.load };
    // `context`: the prompt and the answer, to continue from (not for raw prompts, nor for
    // an upstream's answer, whose tokens are not the local model's).
    let prompt = (!req.raw).then(|| run.prompts.first().cloned()).flatten().filter(|_| run.n_prompt().is_some());
    let finished = {
        let (reply, tag) = (reply.clone(), tag.clone());
        move |ids: &[u32], u: &Usage, response: String| api::GenerateResponse {
            response,
            created_at: rfc3339(SystemTime::now()),
            done_reason: Some(u.finish.as_str().into()),
            context: prompt.as_ref().map(|p| p.iter().chain(ids).copied().collect()),
            metrics: Some(reply.metrics(u)),
            bantam: tag.routed(),
            ..base.clone()
        }
    };
    if req.stream == Some(false) {
        let a = run.answer().await?;
        let r = api::GenerateResponse { logprobs: (!a.logprobs.is_empty()).then(|| logprobs(&a.logprobs)), ..finished(&a.ids, &a.usage, a.content) };
        return Ok(crate::route::with_header(Json(r).into_response(), &tag));
    }
    let lines = ndjson(run.stream().map(move |(_, piece)| match piece {
        Piece::Delta { content, logprob, .. } => line(&reply.generated(content, logprob.map(|l| logprobs(&[l])))),
        Piece::Done { content, ids, usage, .. } => line(&finished(&ids, &usage, content)),
        Piece::Error(e) => line(&api::ErrorResponse { error: e.to_string() }),
    }));
    Ok(crate::route::with_header(lines, &tag))
}

fn chat_messages(msgs: &[api::Message]) -> Result<Vec<ChatMessage>, ApiError> {
    msgs.iter()
        .map(|m| {
            if m.images.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request("this model does not accept images"));
            }
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(ApiError::bad_request(format!("invalid message role {:?}", m.role)));
            }
            let mut c = ChatMessage::new(m.role.as_str(), m.content.as_str());
            c.tool_calls = m.tool_calls.clone();
            c.name = m.tool_name.clone();
            Ok(c)
        })
        .collect()
}

async fn chat(State(state): State<AppState>, caller: Caller, body: JsonBody) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let req: api::ChatRequest = parse_json(body)?;
    let job = Job {
        model: req.model.clone(),
        keep_alive: req.keep_alive,
        prompt: Prompt::Chat(chat_messages(&req.messages)?),
        options: generation::ollama_options(req.options.as_ref()),
        logprobs: want_logprobs(req.logprobs, req.top_logprobs),
        truncate: req.truncate == Some(true),
        grammar: crate::structured::ollama_format(req.format.as_ref()),
        tools: Tools::from_ollama(req.tools.as_deref())?,
        think: req.think.map(think),
        stream: req.stream != Some(false),
        caller: caller.map(|Extension(c)| c.0),
        ..Job::default()
    };
    let reply = Reply { model: req.model, started, load: Duration::ZERO };
    if req.messages.is_empty() {
        // As Ollama: no messages loads (or unloads) the model.
        let reason = generation::load_only(&state, &job).await?;
        let r = api::ChatResponse { done: true, done_reason: Some(reason.into()), ..reply.chatted(message(String::new(), None, None), None) };
        return Ok(Json(r).into_response());
    }
    let run = generation::start(&state, job).await?;
    let tag = run.tag.clone();
    let reply = Reply { load: run.load, ..reply };
    if req.stream == Some(false) {
        let a = run.answer().await?;
        let lp = (!a.logprobs.is_empty()).then(|| logprobs(&a.logprobs));
        let r = api::ChatResponse { logprobs: lp, bantam: tag.routed(), ..reply.finished(&a.usage, message(a.content, a.thinking, a.calls)) };
        return Ok(crate::route::with_header(Json(r).into_response(), &tag));
    }
    Ok(crate::route::with_header(chat_lines(reply, run), &tag))
}

/// A streamed chat: a line per piece; text still held at the end goes in its own line
/// before the final one, which has the calls and the figures.
fn chat_lines(reply: Reply, run: generation::Run) -> Response {
    let tag = run.tag.clone();
    ndjson(run.stream().map(move |(_, piece)| match piece {
        Piece::Delta { content, thinking, logprob, .. } => line(&reply.chatted(message(content, Some(thinking), None), logprob.map(|l| logprobs(&[l])))),
        Piece::Done { content, thinking, calls, usage, .. } => {
            let mut out = String::new();
            if !content.is_empty() || !thinking.is_empty() {
                out = line(&reply.chatted(message(content, Some(thinking), None), None)) + "\n";
            }
            out + &line(&api::ChatResponse { bantam: tag.routed(), ..reply.finished(&usage, message(String::new(), None, calls)) })
        }
        Piece::Error(e) => line(&api::ErrorResponse { error: e.to_string() }),
    }))
}

async fn embed(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let req: api::EmbedRequest = parse_json(body)?;
    let inputs = req.input.map(|i| i.into_vec()).unwrap_or_default().into_iter().map(Input::Text).collect();
    let job = EmbedJob { model: req.model.clone(), keep_alive: req.keep_alive, inputs, truncate: req.truncate != Some(false), dimensions: req.dimensions };
    let e = generation::embed(&state, job).await?;
    let r = api::EmbedResponse {
        model: req.model,
        embeddings: e.vectors,
        total_duration: ns(started.elapsed()),
        load_duration: ns(e.load),
        prompt_eval_count: e.n_tokens,
    };
    Ok(Json(r).into_response())
}

async fn embeddings(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::EmbeddingsRequest = parse_json(body)?;
    let inputs = if req.prompt.is_empty() { Vec::new() } else { vec![Input::Text(req.prompt)] };
    let e = generation::embed(&state, EmbedJob { model: req.model, keep_alive: req.keep_alive, inputs, truncate: true, dimensions: None }).await?;
    Ok(Json(api::EmbeddingsResponse { embedding: e.vectors.into_iter().next().unwrap_or_default() }).into_response())
}

async fn tags(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let models = tokio::task::spawn_blocking(move || {
        describe::installed(&state.store)
            .into_iter()
            .filter_map(|m| {
                let file = gguf::Gguf::open(&m.path).ok()?;
                Some(api::ListModel {
                    model: m.name.clone(),
                    name: m.name,
                    modified_at: rfc3339(m.modified),
                    size: m.size,
                    digest: m.digest,
                    details: describe::details(&file),
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Ok(Json(api::ListResponse { models }).into_response())
}

async fn show(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::ShowRequest = parse_json(body)?;
    let name = if req.model.is_empty() { req.name } else { req.model };
    if name.is_empty() {
        return Err(ApiError::bad_request("model is required").into());
    }
    let canonical = registry::canonical_name(&state.store, &name);
    let found = registry::find_served(&state.store, &canonical).map_err(|_| ApiError::not_found(format!("model '{name}' not found")))?;
    let (path, stored) = (found.path, found.record);
    let r = tokio::task::spawn_blocking(move || -> Result<api::ShowResponse, ApiError> {
        let file = gguf::Gguf::open(&path).map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let view = describe::modelfile_view(&canonical, &path, &file, stored.as_ref());
        let mut capabilities = vec!["completion".to_string()];
        if view.template.contains("tools") {
            capabilities.push("tools".into());
        }
        if engine::thinking::template_supports_thinking(&view.template) {
            capabilities.push("thinking".into());
        }
        Ok(api::ShowResponse {
            modelfile: view.modelfile,
            license: view.license,
            parameters: view.parameters,
            template: view.template,
            system: view.system,
            details: describe::details(&file),
            model_info: describe::model_info(&file),
            capabilities,
            modified_at: rfc3339(
                stored.as_ref().map_or_else(|| std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), |r| r.modified),
            ),
        })
    })
    .await
    .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(r).into_response())
}

async fn ps(State(state): State<AppState>) -> Result<Response, OllamaError> {
    let models = state
        .models
        .snapshot()
        .into_iter()
        .map(|(name, h, expires, _)| api::RunningModel {
            digest: registry::find(&state.store, &name).ok().and_then(|f| f.record).map(|r| r.id.hex().to_string()).unwrap_or_default(),
            model: name.clone(),
            name,
            size: h.memory_bytes() as u64,
            details: describe::details(&h.model.model.file),
            // "forever" shows as a far-future date, as Ollama does.
            expires_at: rfc3339(expires.unwrap_or(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799))),
            size_vram: 0,
            context_length: h.options.n_ctx,
        })
        .collect();
    Ok(Json(api::ProcessResponse { models }).into_response())
}
