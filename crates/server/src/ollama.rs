//! Ollama's routes: /api/generate, /api/chat (NDJSON streams by default), /api/embed,
//! /api/embeddings, /api/tags, /api/show, /api/ps, /api/version, and `/` for health.

use crate::error::{parse_json, ApiError, JsonBody, OllamaError};
use crate::generation::{self, collect, events, rfc3339, Job};
use crate::models::Lease;
use crate::{describe, gotemplate, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::request::TokenLogprob;
use engine::template::ChatMessage;
use engine::thinking::{split_thinking, Think, ThinkLevel, ThinkingSplitter};
use engine::{Event, Usage};
use futures_util::StreamExt;
use protocol::ollama as api;
use std::time::{Instant, SystemTime};

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

/// The request's options over the model's defaults, resolved.
fn resolve(o: Option<&api::Options>, lm: &engine::LoadedModel) -> Result<engine::options::Resolved, ApiError> {
    Ok(generation::ollama_options(o).over(&lm.defaults.options).params().map_err(engine::EngineError::from)?)
}

/// Check a request's own options before a model is loaded for it.
fn check_options(o: Option<&api::Options>) -> Result<(), ApiError> {
    generation::ollama_options(o).params().map_err(engine::EngineError::from)?;
    Ok(())
}

/// Ollama's `think`: `true`/`false`, or a level.
fn parse_think(v: Option<&serde_json::Value>) -> Result<Option<Think>, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(true)) => Ok(Some(Think::On)),
        Some(serde_json::Value::Bool(false)) => Ok(Some(Think::Off)),
        Some(serde_json::Value::String(s)) => match ThinkLevel::parse(s) {
            Some(l) => Ok(Some(Think::Level(l))),
            None => Err(ApiError::bad_request(format!("invalid think value {s:?}: expected true, false, \"low\", \"medium\" or \"high\"")).with_param("think")),
        },
        Some(other) => {
            Err(ApiError::bad_request(format!("invalid think value {other}: expected true, false, \"low\", \"medium\" or \"high\"")).with_param("think"))
        }
    }
}

fn ns(d: std::time::Duration) -> u64 {
    d.as_nanos() as u64
}

fn metrics(started: Instant, load: std::time::Duration, u: &Usage) -> api::Metrics {
    api::Metrics {
        total_duration: ns(started.elapsed()),
        load_duration: ns(load),
        prompt_eval_count: u.prompt_tokens,
        prompt_eval_duration: ns(u.prompt_eval_duration),
        eval_count: u.eval_count,
        eval_duration: ns(u.eval_duration),
    }
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

/// `done_reason` of a request that only loads a model: "unload" when `keep_alive` is 0
/// (the lease's release then unloads it), else "load".
fn load_reason(keep_alive: Option<&serde_json::Value>) -> &'static str {
    let zero = crate::models::KeepAlive::For(std::time::Duration::ZERO);
    match keep_alive.map(crate::models::KeepAlive::parse) {
        Some(Ok(k)) if k == zero => "unload",
        _ => "load",
    }
}

/// A loaded model, and how long loading it took (zero if it was loaded already).
async fn acquire(state: &AppState, model: &str, keep_alive: Option<&serde_json::Value>) -> Result<(Lease, std::time::Duration), ApiError> {
    let t = Instant::now();
    let lease = state.models.acquire(model, keep_alive).await?;
    Ok((lease, t.elapsed()))
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

async fn generate(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let req: api::GenerateRequest = parse_json(body)?;
    let grammar = crate::structured::ollama_format(req.format.as_ref())?;
    if req.images.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request("this model does not accept images").into());
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(format!("{} does not support insert", req.model)).into());
    }
    check_options(req.options.as_ref())?;
    let (lease, load) = acquire(&state, &req.model, req.keep_alive.as_ref()).await?;
    let defaults = &lease.handle.model.defaults;
    let options = resolve(req.options.as_ref(), &lease.handle.model)?;
    let model = req.model.clone();
    if req.prompt.is_empty() && req.context.as_ref().is_none_or(|c| c.is_empty()) {
        // An empty prompt loads (or, with keep_alive 0, unloads) the model.
        let r = api::GenerateResponse {
            model,
            created_at: rfc3339(SystemTime::now()),
            done: true,
            done_reason: Some(load_reason(req.keep_alive.as_ref()).into()),
            ..Default::default()
        };
        drop(lease);
        return Ok(Json(r).into_response());
    }
    let lm = &lease.handle.model;
    let mut prompt = req.context.clone().unwrap_or_default();
    if req.raw {
        prompt.extend(lm.tokenizer.encode(&req.prompt, prompt.is_empty(), true));
    } else if let Some(t) = req.template.as_deref().filter(|t| !t.is_empty()).or(defaults.go_template()) {
        let system = req.system.as_deref().or(defaults.system.as_deref()).unwrap_or("");
        let text = gotemplate::render(t, &gotemplate::Vars { system, prompt: &req.prompt, response: "" })?;
        if prompt.is_empty() {
            prompt = lm.tokenize_templated(&text);
        } else {
            prompt.extend(lm.tokenizer.encode(&text, false, true));
        }
    } else {
        let mut messages = Vec::new();
        if let Some(s) = req.system.as_deref().filter(|s| !s.is_empty()).or(defaults.system.as_deref()) {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", req.prompt.as_str()));
        let turn = lm.chat_prompt(&messages, None)?;
        if prompt.is_empty() {
            prompt = turn;
        } else {
            // Continue an earlier exchange: its tokens, then this turn without a second BOS.
            let skip = usize::from(lm.tokenizer.bos().is_some_and(|b| turn.first() == Some(&b)));
            prompt.extend_from_slice(&turn[skip..]);
        }
    }
    let job = Job {
        prompt: prompt.clone(),
        params: options.params,
        logprobs: want_logprobs(req.logprobs, req.top_logprobs),
        logit_bias: Vec::new(),
        num_ctx: options.num_ctx,
        truncate: req.truncate == Some(true),
        grammar,
    };
    let rx = generation::start(&lease, job)?;
    let with_context = !req.raw;
    let done = move |ids: &[u32], u: &Usage, text: String| api::GenerateResponse {
        model: model.clone(),
        created_at: rfc3339(SystemTime::now()),
        response: text,
        done: true,
        done_reason: Some(u.finish.as_str().into()),
        context: with_context.then(|| prompt.iter().chain(ids).copied().collect()),
        metrics: Some(metrics(started, load, u)),
        logprobs: None,
    };
    if req.stream == Some(false) {
        let c = collect(rx).await?;
        let u = c.usage.clone().expect("collect returns usage");
        let mut r = done(&c.ids, &u, c.text.clone());
        r.logprobs = (!c.logprobs.is_empty()).then(|| logprobs(&c.logprobs));
        return Ok(Json(r).into_response());
    }
    let model = req.model.clone();
    let mut ids: Vec<u32> = Vec::new();
    let lines = events(rx).filter_map(move |ev| {
        let _hold = &lease;
        let out = match ev {
            Event::Token { id, text, logprob } => {
                ids.push(id);
                // A token whose text is held back (and without logprobs) makes no line.
                (!text.is_empty() || logprob.is_some()).then(|| {
                    line(&api::GenerateResponse {
                        model: model.clone(),
                        created_at: rfc3339(SystemTime::now()),
                        response: text,
                        logprobs: logprob.map(|l| logprobs(&[l])),
                        ..Default::default()
                    })
                })
            }
            Event::Done { text, usage } => Some(line(&done(&ids, &usage, text))),
            Event::Error(e) => Some(line(&api::ErrorResponse { error: e.to_string() })),
        };
        async move { out }
    });
    Ok(ndjson(lines))
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

async fn chat(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let req: api::ChatRequest = parse_json(body)?;
    let grammar = crate::structured::ollama_format(req.format.as_ref())?;
    check_options(req.options.as_ref())?;
    let mut messages = chat_messages(&req.messages)?;
    let (lease, load) = acquire(&state, &req.model, req.keep_alive.as_ref()).await?;
    let options = resolve(req.options.as_ref(), &lease.handle.model)?;
    if !messages.is_empty() {
        lease.handle.model.defaults.open_conversation(&mut messages);
    }
    let model = req.model.clone();
    if messages.is_empty() {
        // As Ollama: no messages loads (or unloads) the model.
        let r = api::ChatResponse {
            model,
            created_at: rfc3339(SystemTime::now()),
            message: api::Message { role: "assistant".into(), ..Default::default() },
            done: true,
            done_reason: Some(load_reason(req.keep_alive.as_ref()).into()),
            ..Default::default()
        };
        drop(lease);
        return Ok(Json(r).into_response());
    }
    let tools = crate::tool_calls::Tools::from_ollama(req.tools.as_ref())?;
    let lm = &lease.handle.model;
    let think = parse_think(req.think.as_ref())?;
    let (prompt, starts_thinking) = match &tools {
        Some(t) => (t.prompt(lm, &messages)?, false),
        None => lm.chat_prompt_thinking(&messages, None, think)?,
    };
    // With `think` given, a thinking model's reasoning is split from its answer: returned
    // as `message.thinking` when asked for, dropped when `think` is false.
    let split = think.is_some() && lm.thinks();
    let keep_thinking = split && think.is_some_and(Think::enabled);
    let format = lm.tool_format();
    let job = Job {
        prompt,
        params: options.params,
        logprobs: want_logprobs(req.logprobs, req.top_logprobs),
        logit_bias: Vec::new(),
        num_ctx: options.num_ctx,
        truncate: req.truncate == Some(true),
        grammar,
    };
    let rx = generation::start(&lease, job)?;
    let message = |content: String| api::Message { role: "assistant".into(), content, ..Default::default() };
    // An answer that holds calls of the offered tools comes back as `message.tool_calls`
    // ({"function": {"name", "arguments": {…}}}), with any text before them as content.
    let tools = std::sync::Arc::new(tools);
    let answer = {
        let tools = tools.clone();
        move |text: String| match tools.as_ref().as_ref().and_then(|t| t.parsed(format, &text)) {
            Some((content, calls)) => api::Message {
                role: "assistant".into(),
                content,
                tool_calls: Some(serde_json::Value::Array(
                    calls.into_iter().map(|c| serde_json::json!({"function": {"name": c.name, "arguments": c.arguments}})).collect(),
                )),
                ..Default::default()
            },
            None => message(text),
        }
    };
    let done = move |u: &Usage, text: String| api::ChatResponse {
        model: model.clone(),
        created_at: rfc3339(SystemTime::now()),
        message: answer(text),
        done: true,
        done_reason: Some(u.finish.as_str().into()),
        metrics: Some(metrics(started, load, u)),
        logprobs: None,
    };
    if req.stream == Some(false) {
        let c = collect(rx).await?;
        let u = c.usage.clone().expect("collect returns usage");
        let (thinking, content) = if split { split_thinking(&c.text, starts_thinking) } else { (None, c.text.clone()) };
        let mut r = done(&u, content);
        r.message.thinking = thinking.filter(|_| keep_thinking);
        r.logprobs = (!c.logprobs.is_empty()).then(|| logprobs(&c.logprobs));
        return Ok(Json(r).into_response());
    }
    let mut splitter = split.then(|| ThinkingSplitter::new(starts_thinking));
    let model = req.model.clone();
    // With tools on offer, text streams until it may be a call; a call is held to the end.
    let mut sniffer = tools.is_some().then(crate::tool_calls::CallSniffer::default);
    let chunk = move |text: String, thinking: String, lp: Option<Vec<api::Logprob>>| {
        let mut message = message(text);
        message.thinking = (!thinking.is_empty() && keep_thinking).then_some(thinking);
        line(&api::ChatResponse { model: model.clone(), created_at: rfc3339(SystemTime::now()), message, logprobs: lp, ..Default::default() })
    };
    let lines = events(rx).filter_map(move |ev| {
        let _hold = &lease;
        let out = match ev {
            Event::Token { text, logprob, .. } => {
                // Thinking is split off first; with tools, the sniffer says what may go out
                // yet (held text has no logprobs).
                let (text, thinking) = match splitter.as_mut() {
                    Some(sp) => {
                        let s = sp.push(&text);
                        (s.content, s.thinking)
                    }
                    None => (text, String::new()),
                };
                let (text, lp) = match sniffer.as_mut() {
                    Some(s) => (s.push(&text), None),
                    None => (text, logprob.map(|l| logprobs(&[l]))),
                };
                (!text.is_empty() || lp.is_some() || (keep_thinking && !thinking.is_empty())).then(|| chunk(text, thinking, lp))
            }
            Event::Done { text, usage } => {
                let (text, thinking) = match splitter.take() {
                    Some(mut sp) => {
                        let (a, b) = (sp.push(&text), sp.finish());
                        (a.content + &b.content, a.thinking + &b.thinking)
                    }
                    None => (text, String::new()),
                };
                // Text that may go out goes in its own chunk; what a sniffer held is read
                // as calls (or released as content) in the final one.
                let (text, held) = match sniffer.take() {
                    Some(mut s) => (s.push(&text), s.held_text()),
                    None => (text, String::new()),
                };
                let mut s = String::new();
                if !text.is_empty() || (keep_thinking && !thinking.is_empty()) {
                    s = chunk(text, thinking, None);
                    s.push('\n');
                }
                s += &line(&done(&usage, held));
                Some(s)
            }
            Event::Error(e) => Some(line(&api::ErrorResponse { error: e.to_string() })),
        };
        async move { out }
    });
    Ok(ndjson(lines))
}

/// Token ids of each input, truncated to the context when `truncate` (the default) is on.
fn embed_inputs(lease: &Lease, inputs: Vec<String>, truncate: bool) -> Result<Vec<Vec<u32>>, ApiError> {
    let n_ctx = lease.handle.options.n_ctx;
    inputs
        .iter()
        .map(|text| {
            let mut ids = lease.handle.model.tokenizer.encode(text, true, true);
            if ids.len() > n_ctx {
                if !truncate {
                    return Err(engine::EngineError::PromptTooLong { n_prompt: ids.len(), n_ctx }.into());
                }
                ids.truncate(n_ctx);
            }
            if ids.is_empty() {
                return Err(ApiError::bad_request("an input to embed is empty"));
            }
            Ok(ids)
        })
        .collect()
}

async fn embed(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let req: api::EmbedRequest = parse_json(body)?;
    let (lease, load) = acquire(&state, &req.model, req.keep_alive.as_ref()).await?;
    let inputs = req.input.map(|i| i.into_vec()).unwrap_or_default();
    let ids = embed_inputs(&lease, inputs, req.truncate != Some(false))?;
    let n_tokens = ids.iter().map(Vec::len).sum();
    let mut embeddings = if ids.is_empty() { Vec::new() } else { generation::embed(&lease, ids).await? };
    if let Some(d) = req.dimensions {
        generation::truncate_dims(&mut embeddings, d)?;
    }
    Ok(Json(api::EmbedResponse { model: req.model, embeddings, total_duration: ns(started.elapsed()), load_duration: ns(load), prompt_eval_count: n_tokens })
        .into_response())
}

async fn embeddings(State(state): State<AppState>, body: JsonBody) -> Result<Response, OllamaError> {
    let req: api::EmbeddingsRequest = parse_json(body)?;
    let (lease, _) = acquire(&state, &req.model, req.keep_alive.as_ref()).await?;
    if req.prompt.is_empty() {
        return Ok(Json(api::EmbeddingsResponse { embedding: Vec::new() }).into_response());
    }
    let ids = embed_inputs(&lease, vec![req.prompt], true)?;
    let mut v = generation::embed(&lease, ids).await?;
    Ok(Json(api::EmbeddingsResponse { embedding: v.pop().unwrap_or_default() }).into_response())
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
