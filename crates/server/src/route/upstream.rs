//! A client of an OpenAI-compatible upstream (bantam, vLLM, llama-server, a hosted API),
//! or of a pool of its replicas: the edge where a [`Job`] becomes OpenAI's wire format and
//! the answer comes back as plain text, calls and token counts.
//!
//! Each call runs on a blocking thread (ureq, with TLS for hosted APIs). Failures before
//! any part of an answer arrived are retried with exponential backoff and jitter, on
//! another replica where there is one; each replica has a circuit breaker, and a pool's
//! replicas are health-checked. A conversation keeps to one replica (rendezvous hashing on
//! its start) while that replica is not much busier than the least busy one, so the
//! replica's prefix cache serves it again.

use super::config::UpstreamConfig;
use crate::generation::{Input, Job, Prompt};
use engine::template::ChatMessage;
use engine::tools::ToolCall;
use engine::{FinishReason, Grammar};
use serde_json::{json, Value};
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why an upstream gave no (whole) answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the upstream: {0}")]
    Connect(String),
    #[error("the upstream timed out")]
    Timeout,
    #[error("the upstream answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("the upstream's answer does not read: {0}")]
    Garbage(String),
    #[error("the upstream closed the stream before the end")]
    Broken,
    #[error("every replica's circuit breaker is open")]
    Open,
}

impl UpstreamError {
    /// Worth another try (elsewhere, or later).
    fn transient(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => true,
        }
    }

    /// Short form for the ledger's `reason` and the response's `bantam.reason`.
    pub fn label(&self) -> String {
        match self {
            UpstreamError::Connect(_) => "upstream unreachable".into(),
            UpstreamError::Timeout => "upstream timeout".into(),
            UpstreamError::Status { status, .. } => format!("upstream status {status}"),
            UpstreamError::Garbage(_) => "upstream garbage".into(),
            UpstreamError::Broken => "upstream closed mid-stream".into(),
            UpstreamError::Open => "upstream circuit open".into(),
        }
    }
}

/// One choice of an upstream answer.
#[derive(Debug, Clone, Default)]
pub struct UpAnswer {
    pub content: String,
    pub thinking: String,
    pub calls: Option<Vec<ToolCall>>,
    pub finish: Option<FinishReason>,
}

/// The token counts the upstream reported (0 where it reported none).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

/// What a streamed upstream answer sends.
#[derive(Debug)]
pub enum UpEvent {
    Delta {
        index: usize,
        content: String,
        thinking: String,
    },
    /// The end: every choice whole (its calls and finish), and the counts.
    Done {
        answers: Vec<UpAnswer>,
        usage: UpUsage,
    },
    /// The stream broke after some of it was sent.
    Broken(UpstreamError),
}

/// An upstream request in OpenAI's terms.
#[derive(Debug, Clone)]
pub struct UpRequest {
    /// `chat/completions` or `completions`.
    path: &'static str,
    body: Value,
    /// Choices asked for.
    n: usize,
    /// Which replica a conversation prefers.
    affinity: u64,
}

/// Closed, open until an instant, with consecutive failures counted.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

#[derive(Debug)]
struct Replica {
    base: String,
    healthy: AtomicBool,
    inflight: AtomicUsize,
    breaker: Mutex<Breaker>,
}

/// One request in flight to a replica, for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> InFlight<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A replica as `/metrics` reports it.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    pub url: String,
    pub inflight: usize,
    pub up: bool,
}

/// An upstream with its replicas. The API key is read from the environment once and is
/// never printed: this type's `Debug` leaves it out.
pub struct Upstream {
    pub name: String,
    pub config: UpstreamConfig,
    key: Option<String>,
    agent: ureq::Agent,
    replicas: Vec<Replica>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("urls", &self.config.urls()).field("has_key", &self.key.is_some()).finish()
    }
}

impl Upstream {
    /// The upstream as configured; `Err` names an API key variable that is not set.
    pub fn new(name: &str, config: UpstreamConfig) -> Result<Upstream, super::config::ConfigError> {
        let key = match &config.api_key_env {
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| super::config::ConfigError::MissingKey { owner: format!("upstream {name:?}"), var: var.clone() })?,
            ),
            None => None,
        };
        use ureq::tls::{RootCerts, TlsConfig};
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs_f64(config.connect_timeout)))
            .timeout_global(Some(Duration::from_secs_f64(config.timeout)))
            .max_idle_connections_per_host(64)
            .user_agent(format!("bantam/{}", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build())
            .build()
            .into();
        let replicas = config
            .urls()
            .into_iter()
            .map(|u| Replica {
                base: u.trim_end_matches('/').to_string(),
                healthy: AtomicBool::new(true),
                inflight: AtomicUsize::new(0),
                breaker: Mutex::default(),
            })
            .collect();
        Ok(Upstream { name: name.to_string(), key, agent, replicas, config })
    }

    /// Each replica's requests in flight, and whether it is up (health and breaker).
    pub fn replica_states(&self) -> Vec<ReplicaState> {
        self.replicas
            .iter()
            .map(|r| ReplicaState {
                url: r.base.clone(),
                inflight: r.inflight.load(Ordering::Relaxed),
                up: r.healthy.load(Ordering::Relaxed) && self.closed(r),
            })
            .collect()
    }

    fn closed(&self, r: &Replica) -> bool {
        let b = r.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.open_until.is_none_or(|t| Instant::now() >= t)
    }

    fn succeeded(&self, r: &Replica) {
        *r.breaker.lock().unwrap_or_else(|e| e.into_inner()) = Breaker::default();
    }

    fn failed(&self, r: &Replica) {
        let mut b = r.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.failures += 1;
        if b.failures >= self.config.breaker_failures.max(1) {
            b.open_until = Some(Instant::now() + Duration::from_secs_f64(self.config.breaker_cooldown));
        }
    }

    /// The replica for the next try: up, not tried yet where others remain; the
    /// conversation's own (highest rendezvous hash) unless it is busier than the least busy
    /// by more than a few requests.
    fn pick(&self, affinity: u64, tried: &[usize]) -> Option<usize> {
        let up: Vec<usize> = (0..self.replicas.len()).filter(|&i| self.replicas[i].healthy.load(Ordering::Relaxed) && self.closed(&self.replicas[i])).collect();
        let fresh: Vec<usize> = up.iter().copied().filter(|i| !tried.contains(i)).collect();
        let pool = if fresh.is_empty() { up } else { fresh };
        let load = |i: usize| self.replicas[i].inflight.load(Ordering::Relaxed);
        let least = pool.iter().map(|&i| load(i)).min()?;
        let score = |i: usize| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (affinity, &self.replicas[i].base).hash(&mut h);
            h.finish()
        };
        pool.iter().copied().filter(|&i| load(i) <= least + 4).max_by_key(|&i| score(i))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.backoff_ms.saturating_mul(1 << attempt.min(10)) as f64;
        let jitter = 0.5 + (crate::generation::random_seed() % 1000) as f64 / 1000.0;
        Duration::from_secs_f64(base * jitter / 1000.0)
    }

    fn post(&self, r: &Replica, req: &UpRequest) -> Result<ureq::http::Response<ureq::Body>, UpstreamError> {
        let url = format!("{}/{}", r.base, req.path);
        let mut b = self.agent.post(&url).header("content-type", "application/json");
        if let Some(k) = &self.key {
            b = b.header("authorization", &format!("Bearer {k}"));
        }
        let resp = b.send(req.body.to_string()).map_err(transport)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let mut resp = resp;
            let detail = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
            return Err(UpstreamError::Status { status, detail: error_message(&detail) });
        }
        Ok(resp)
    }

    /// Run `attempt` on replicas until one succeeds or the tries are spent.
    async fn with_retries<T: Send + 'static>(
        self: &Arc<Self>,
        req: &UpRequest,
        attempt: impl Fn(Arc<Upstream>, usize, UpRequest) -> Result<T, UpstreamError> + Send + Sync + Clone + 'static,
    ) -> Result<T, UpstreamError> {
        let mut tried = Vec::new();
        let mut last = UpstreamError::Open;
        for n in 0..=self.config.retries {
            if n > 0 {
                tokio::time::sleep(self.backoff(n - 1)).await;
            }
            let Some(i) = self.pick(req.affinity, &tried) else { return Err(last) };
            tried.push(i);
            let (me, req2, f) = (self.clone(), req.clone(), attempt.clone());
            let out = tokio::task::spawn_blocking(move || {
                // Counted on the blocking thread, so a caller that goes away mid-call does not
                // leave the count up.
                let _busy = InFlight::new(&me.replicas[i].inflight);
                f(me.clone(), i, req2)
            })
            .await
            .unwrap_or_else(|e| Err(UpstreamError::Connect(e.to_string())));
            match out {
                Ok(v) => {
                    self.succeeded(&self.replicas[i]);
                    return Ok(v);
                }
                Err(e) => {
                    let again = e.transient();
                    // A request the upstream refuses (4xx) says nothing of its health.
                    if again {
                        self.failed(&self.replicas[i]);
                    }
                    last = e;
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// The whole answer.
    pub async fn complete(self: &Arc<Self>, req: &UpRequest) -> Result<(Vec<UpAnswer>, UpUsage), UpstreamError> {
        self.with_retries(req, |me, i, req| {
            let mut resp = me.post(&me.replicas[i], &req)?;
            let text = resp.body_mut().with_config().limit(64 << 20).read_to_string().map_err(transport)?;
            let v: Value = serde_json::from_str(&text).map_err(|e| UpstreamError::Garbage(e.to_string()))?;
            read_answer(&v, req.path, req.n)
        })
        .await
    }

    /// The answer as it streams. Connecting, the response's status and the first chunk are
    /// retried like [`Upstream::complete`]; a stream that breaks later ends in
    /// [`UpEvent::Broken`] after what it sent.
    pub async fn stream(self: &Arc<Self>, req: &UpRequest) -> Result<mpsc::UnboundedReceiver<UpEvent>, UpstreamError> {
        // Each try reads the stream to its first chunk on the blocking thread and hands the
        // rest of the stream to a reader thread.
        self.with_retries(req, move |me, i, req| {
            let resp = me.post(&me.replicas[i], &req)?;
            let mut lines = std::io::BufReader::new(resp.into_body().into_reader());
            let mut reader = SseReader::new(req.path, req.n);
            let (tx, rx) = mpsc::unbounded_channel();
            // Up to the first event, failures are the try's.
            loop {
                match reader.next(&mut lines) {
                    Ok(Some(ev)) => {
                        let done = matches!(ev, UpEvent::Done { .. });
                        let _ = tx.send(ev);
                        if !done {
                            let me2 = me.clone();
                            std::thread::spawn(move || {
                                let _busy = InFlight::new(&me2.replicas[i].inflight);
                                reader.pump(&mut lines, &tx);
                            });
                        }
                        return Ok(rx);
                    }
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }

    /// Mark each replica healthy or not by its `/health`, every `health_interval`, for as
    /// long as the upstream lives (pools only).
    pub fn spawn_health_checks(self: &Arc<Self>) {
        if self.replicas.len() < 2 || self.config.health_interval <= 0.0 {
            return;
        }
        let me = Arc::downgrade(self);
        let every = Duration::from_secs_f64(self.config.health_interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(up) = me.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || {
                    for r in &up.replicas {
                        let url = format!("{}/health", r.base.strip_suffix("/v1").unwrap_or(&r.base));
                        let ok = up
                            .agent
                            .get(&url)
                            .config()
                            .timeout_global(Some(Duration::from_secs(2)))
                            .build()
                            .call()
                            .is_ok_and(|resp| resp.status().is_success());
                        r.healthy.store(ok, Ordering::Relaxed);
                    }
                })
                .await;
            }
        });
    }
}

fn transport(e: ureq::Error) -> UpstreamError {
    match e {
        ureq::Error::Timeout(_) => UpstreamError::Timeout,
        ureq::Error::Io(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => UpstreamError::Timeout,
        ureq::Error::Io(e)
            if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted) =>
        {
            UpstreamError::Broken
        }
        e => UpstreamError::Connect(e.to_string()),
    }
}

/// The `message` of an OpenAI error body, else the body's start.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("error")).and_then(|m| m.as_str().map(str::to_string)))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn finish_of(v: &Value) -> Option<FinishReason> {
    match v.as_str()? {
        "length" => Some(FinishReason::Length),
        _ => Some(FinishReason::Stop),
    }
}

/// A call's arguments: OpenAI sends a JSON string; a string that is not JSON is kept as
/// the text it is, in an object under `"arguments"`.
fn arguments(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object).unwrap_or_else(|| json!({ "arguments": s })),
        Value::Object(_) => v.clone(),
        _ => json!({}),
    }
}

fn read_calls(v: Option<&Value>) -> Option<Vec<ToolCall>> {
    let calls: Vec<ToolCall> = v?
        .as_array()?
        .iter()
        .filter_map(|c| {
            let f = c.get("function")?;
            Some(ToolCall { name: f.get("name")?.as_str()?.to_string(), arguments: arguments(f.get("arguments").unwrap_or(&Value::Null)) })
        })
        .collect();
    (!calls.is_empty()).then_some(calls)
}

fn read_usage(v: &Value) -> UpUsage {
    let n = |k: &str| v.pointer(&format!("/usage/{k}")).and_then(Value::as_u64).unwrap_or(0) as usize;
    UpUsage { prompt_tokens: n("prompt_tokens"), completion_tokens: n("completion_tokens") }
}

/// A whole (non-streamed) answer.
fn read_answer(v: &Value, path: &str, n: usize) -> Result<(Vec<UpAnswer>, UpUsage), UpstreamError> {
    let garbage = |m: &str| UpstreamError::Garbage(m.to_string());
    let choices = v.get("choices").and_then(Value::as_array).ok_or_else(|| garbage("no choices"))?;
    let mut answers = vec![UpAnswer::default(); n.max(1)];
    for (k, c) in choices.iter().enumerate() {
        let i = c.get("index").and_then(Value::as_u64).map_or(k, |i| i as usize);
        let a = answers.get_mut(i).ok_or_else(|| garbage("choice index out of range"))?;
        if path == "completions" {
            a.content = c.get("text").and_then(Value::as_str).ok_or_else(|| garbage("a choice without text"))?.to_string();
        } else {
            let m = c.get("message").ok_or_else(|| garbage("a choice without a message"))?;
            a.content = m.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
            a.thinking = m.get("reasoning_content").or_else(|| m.get("reasoning")).and_then(Value::as_str).unwrap_or_default().to_string();
            a.calls = read_calls(m.get("tool_calls"));
        }
        a.finish = finish_of(c.get("finish_reason").unwrap_or(&Value::Null)).or(Some(FinishReason::Stop));
    }
    if answers.iter().any(|a| a.finish.is_none()) {
        return Err(garbage("fewer choices than asked for"));
    }
    Ok((answers, read_usage(v)))
}

/// The longest event line read from an upstream.
const MAX_LINE: u64 = 8 << 20;
/// Tool calls per choice an upstream answer may stream.
const MAX_CALLS: u64 = 128;

/// Reads server-sent events into [`UpEvent`]s, keeping each choice's calls and finish.
struct SseReader {
    chat: bool,
    /// Deltas of a chunk that carried several choices, one event each.
    pending: std::collections::VecDeque<UpEvent>,
    answers: Vec<UpAnswer>,
    /// Per choice, the calls' (name, arguments text) by index, as they stream.
    calls: Vec<Vec<(String, String)>>,
    usage: UpUsage,
    ended: bool,
}

impl SseReader {
    fn new(path: &str, n: usize) -> SseReader {
        SseReader {
            chat: path != "completions",
            pending: Default::default(),
            answers: vec![UpAnswer::default(); n.max(1)],
            calls: vec![Vec::new(); n.max(1)],
            usage: UpUsage::default(),
            ended: false,
        }
    }

    /// The next event: `Ok(None)` for lines that carry none (comments, role-only chunks).
    fn next(&mut self, r: &mut impl BufRead) -> Result<Option<UpEvent>, UpstreamError> {
        if self.ended {
            return Err(UpstreamError::Broken);
        }
        if let Some(ev) = self.pending.pop_front() {
            return Ok(Some(ev));
        }
        let mut line = String::new();
        let n = std::io::Read::take(&mut *r, MAX_LINE).read_line(&mut line).map_err(|e| transport(ureq::Error::Io(e)))?;
        if n as u64 == MAX_LINE && !line.ends_with('\n') {
            return Err(UpstreamError::Garbage(format!("an event line over {MAX_LINE} bytes")));
        }
        if n == 0 {
            // The end of the body: a stream that stopped without `[DONE]` is whole only if
            // every choice finished.
            return if self.answers.iter().all(|a| a.finish.is_some()) { Ok(Some(self.done())) } else { Err(UpstreamError::Broken) };
        }
        let Some(data) = line.trim_end().strip_prefix("data:") else { return Ok(None) };
        let data = data.trim();
        if data == "[DONE]" {
            return if self.answers.iter().all(|a| a.finish.is_some()) { Ok(Some(self.done())) } else { Err(UpstreamError::Broken) };
        }
        let v: Value = serde_json::from_str(data).map_err(|e| UpstreamError::Garbage(e.to_string()))?;
        if let Some(e) = v.get("error") {
            return Err(UpstreamError::Status { status: 500, detail: error_message(&json!({ "error": e }).to_string()) });
        }
        if v.get("usage").is_some_and(Value::is_object) {
            self.usage = read_usage(&v);
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else { return Err(UpstreamError::Garbage("a chunk without choices".into())) };
        for c in choices {
            let i = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if i >= self.answers.len() {
                return Err(UpstreamError::Garbage("choice index out of range".into()));
            }
            let (text, think) = if self.chat {
                let d = c.get("delta").cloned().unwrap_or(Value::Null);
                for t in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let k = t.get("index").and_then(Value::as_u64).unwrap_or(0);
                    if k >= MAX_CALLS {
                        return Err(UpstreamError::Garbage(format!("tool call index {k}")));
                    }
                    let k = k as usize;
                    let calls = &mut self.calls[i];
                    if calls.len() <= k {
                        calls.resize(k + 1, (String::new(), String::new()));
                    }
                    if let Some(n) = t.pointer("/function/name").and_then(Value::as_str) {
                        calls[k].0 += n;
                    }
                    match t.pointer("/function/arguments") {
                        Some(Value::String(a)) => calls[k].1 += a,
                        Some(o @ Value::Object(_)) => calls[k].1 += &o.to_string(),
                        _ => {}
                    }
                }
                let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                (s("content"), if d.get("reasoning_content").is_some() { s("reasoning_content") } else { s("reasoning") })
            } else {
                (c.get("text").and_then(Value::as_str).unwrap_or_default().to_string(), String::new())
            };
            self.answers[i].content += &text;
            self.answers[i].thinking += &think;
            if let Some(f) = finish_of(c.get("finish_reason").unwrap_or(&Value::Null)) {
                self.answers[i].finish = Some(f);
            }
            if !text.is_empty() || !think.is_empty() {
                self.pending.push_back(UpEvent::Delta { index: i, content: text, thinking: think });
            }
        }
        Ok(self.pending.pop_front())
    }

    fn done(&mut self) -> UpEvent {
        self.ended = true;
        for (a, calls) in self.answers.iter_mut().zip(&self.calls) {
            let c: Vec<ToolCall> = calls
                .iter()
                .filter(|(n, _)| !n.is_empty())
                .map(|(n, args)| ToolCall { name: n.clone(), arguments: arguments(&Value::String(args.clone())) })
                .collect();
            a.calls = (!c.is_empty()).then_some(c);
        }
        UpEvent::Done { answers: std::mem::take(&mut self.answers), usage: self.usage }
    }

    /// Send the rest of the stream; stops when the receiver is gone.
    fn pump(&mut self, r: &mut impl BufRead, tx: &mpsc::UnboundedSender<UpEvent>) {
        loop {
            let ev = match self.next(r) {
                Ok(None) => continue,
                Ok(Some(ev)) => ev,
                Err(e) => UpEvent::Broken(e),
            };
            let end = !matches!(ev, UpEvent::Delta { .. });
            if tx.send(ev).is_err() || end {
                return;
            }
        }
    }
}

/// A chat message in OpenAI's shape: calls with string arguments and ids.
fn message(m: &ChatMessage) -> Value {
    let mut v = json!({ "role": m.role, "content": m.content });
    if let Some(calls) = m.tool_calls.as_ref().and_then(Value::as_array) {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let f = c.get("function").cloned().unwrap_or_else(|| c.clone());
                let args = match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(a) => a.to_string(),
                    None => "{}".into(),
                };
                json!({
                    "id": c.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{k}"), str::to_string),
                    "type": "function",
                    "function": { "name": f.get("name").cloned().unwrap_or(Value::Null), "arguments": args },
                })
            })
            .collect();
        v["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    if let Some(n) = &m.name {
        v["name"] = json!(n);
    }
    v
}

/// The job's conversation (Ollama's generate prompt as one user turn after its system).
pub fn conversation(prompt: &Prompt) -> Option<Vec<ChatMessage>> {
    match prompt {
        Prompt::Chat(m) => Some(m.clone()),
        Prompt::Generate { prompt, system, .. } => {
            let mut m = Vec::new();
            if let Some(s) = system.as_ref().filter(|s| !s.is_empty()) {
                m.push(ChatMessage::new("system", s.as_str()));
            }
            m.push(ChatMessage::new("user", prompt.as_str()));
            Some(m)
        }
        Prompt::Completion(_) => None,
    }
}

/// The job as an upstream request for `model` (`stream`: server-sent events with usage).
/// The conversation's start (system and first user turn) picks its replica.
pub fn request(job: &Job, model: &str, stream: bool) -> UpRequest {
    let o = &job.options;
    let mut body = json!({ "model": model, "stream": stream });
    let set = |body: &mut Value, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body[k] = v;
        }
    };
    set(&mut body, "temperature", o.temperature.map(|v| json!(v)));
    set(&mut body, "top_p", o.top_p.map(|v| json!(v)));
    set(&mut body, "presence_penalty", o.presence_penalty.map(|v| json!(v)));
    set(&mut body, "frequency_penalty", o.frequency_penalty.map(|v| json!(v)));
    set(&mut body, "seed", o.seed.filter(|s| *s >= 0).map(|v| json!(v)));
    set(&mut body, "max_tokens", o.num_predict.filter(|n| *n > 0).map(|v| json!(v)));
    set(&mut body, "stop", o.stop.clone().filter(|s| !s.is_empty()).map(|v| json!(v)));
    let n = job.n.max(1);
    if n > 1 {
        body["n"] = json!(n);
    }
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    match &job.grammar {
        Some(Grammar::JsonSchema(s)) => body["response_format"] = json!({ "type": "json_schema", "json_schema": { "name": "response", "schema": s } }),
        Some(Grammar::JsonObject) => body["response_format"] = json!({ "type": "json_object" }),
        _ => {}
    }
    if let Some(t) = &job.tools {
        let (tools, choice, parallel) = t.openai();
        body["tools"] = tools;
        body["tool_choice"] = choice;
        body["parallel_tool_calls"] = json!(parallel);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let path = match conversation(&job.prompt) {
        Some(messages) => {
            messages.iter().take(2).for_each(|m| (&m.role, &m.content).hash(&mut h));
            body["messages"] = Value::Array(messages.iter().map(message).collect());
            "chat/completions"
        }
        None => {
            let Prompt::Completion(inputs) = &job.prompt else { unreachable!("conversation() covers the other prompts") };
            let prompts: Vec<Value> = inputs
                .iter()
                .map(|i| match i {
                    Input::Text(s) => json!(s),
                    Input::Tokens(t) => json!(t),
                })
                .collect();
            prompts.first().map(|p| p.to_string().chars().take(256).collect::<String>()).hash(&mut h);
            body["prompt"] = if prompts.len() == 1 { prompts[0].clone() } else { Value::Array(prompts) };
            "completions"
        }
    };
    let n_prompts = match &job.prompt {
        Prompt::Completion(i) => i.len().max(1),
        _ => 1,
    };
    UpRequest { path, body, n: n * n_prompts, affinity: h.finish() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_read_into_deltas_calls_and_usage() {
        let sse = concat!(
            ": keep-alive\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut r = std::io::BufReader::new(sse.as_bytes());
        let mut s = SseReader::new("chat/completions", 1);
        let mut text = String::new();
        loop {
            match s.next(&mut r).unwrap() {
                None => {}
                Some(UpEvent::Delta { content, .. }) => text += &content,
                Some(UpEvent::Done { answers, usage }) => {
                    assert_eq!(text, "Hello");
                    assert_eq!(answers[0].content, "Hello");
                    let calls = answers[0].calls.as_ref().unwrap();
                    assert_eq!((calls[0].name.as_str(), &calls[0].arguments), ("f", &json!({"a": 1})));
                    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
                    break;
                }
                Some(UpEvent::Broken(e)) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_stream_cut_short_is_broken_and_garbage_is_garbage() {
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        let mut r = std::io::BufReader::new(cut.as_bytes());
        let mut s = SseReader::new("chat/completions", 1);
        assert!(matches!(s.next(&mut r), Ok(Some(UpEvent::Delta { .. }))));
        assert!(matches!(s.next(&mut r), Ok(None)));
        assert!(matches!(s.next(&mut r), Err(UpstreamError::Broken)));
        let mut r = std::io::BufReader::new("data: {not json\n\n".as_bytes());
        assert!(matches!(SseReader::new("completions", 1).next(&mut r), Err(UpstreamError::Garbage(_))));
        assert!(matches!(read_answer(&json!({"object": "x"}), "chat/completions", 1), Err(UpstreamError::Garbage(_))));
    }

    #[test]
    fn hostile_streams_are_garbage_and_choices_stay_apart() {
        let huge = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615,\"function\":{\"name\":\"f\"}}]}}]}\n";
        let mut r = std::io::BufReader::new(huge.as_bytes());
        assert!(matches!(SseReader::new("chat/completions", 1).next(&mut r), Err(UpstreamError::Garbage(_))));
        let long = format!("data: {}", "x".repeat(MAX_LINE as usize + 10));
        let mut r = std::io::BufReader::new(long.as_bytes());
        assert!(matches!(SseReader::new("chat/completions", 1).next(&mut r), Err(UpstreamError::Garbage(_))));
        let two = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}},{\"index\":1,\"delta\":{\"content\":\"B\"}}]}\n";
        let mut r = std::io::BufReader::new(two.as_bytes());
        let mut s = SseReader::new("chat/completions", 2);
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Ok(Some(UpEvent::Delta { index, content, .. })) = s.next(&mut r) {
                got.push((index, content));
            }
        }
        assert_eq!(got, vec![(0, "A".to_string()), (1, "B".to_string())]);
    }

    #[test]
    fn whole_answers_read_text_reasoning_and_calls() {
        let v = json!({"choices": [{"index": 0, "message": {"content": null, "reasoning_content": "hm", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "g", "arguments": "{\"x\":\"y\"}"}}]}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 5, "completion_tokens": 9}});
        let (a, u) = read_answer(&v, "chat/completions", 1).unwrap();
        assert_eq!((a[0].content.as_str(), a[0].thinking.as_str(), a[0].calls.as_ref().unwrap()[0].arguments.clone()), ("", "hm", json!({"x": "y"})));
        assert_eq!((u.prompt_tokens, u.completion_tokens, a[0].finish), (5, 9, Some(FinishReason::Stop)));
        let v = json!({"choices": [{"index": 0, "text": "abc", "finish_reason": "length"}]});
        let (a, _) = read_answer(&v, "completions", 1).unwrap();
        assert_eq!((a[0].content.as_str(), a[0].finish), ("abc", Some(FinishReason::Length)));
    }
}
