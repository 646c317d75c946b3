//! Routes: a model name that answers locally, upstream, or locally first and upstream when
//! the local answer is not confident enough (a cascade). The routes file is read once
//! (`bantam serve --routes`); a request names a route as its `model` on either API.
//!
//! A route's run is an ordinary [`Run`]: the dialects render it the same way whoever
//! answered, and read its [`Tag`] for the `x-bantam-route` header and the `bantam` field.
//! Upstream faults never reach the client: after the upstream's retries, the local model
//! answers (served `fallback`); a stream the upstream breaks off is finished by the local
//! model from where it stopped.

pub mod config;
pub mod signals;
pub mod upstream;

pub use config::{OverBudget, Policy, RouteFile, StreamMode};

use crate::error::ApiError;
use crate::generation::{start_local, Input, Job, Piece, Pieces, Prompt, Run};
use crate::ledger::Ledger;
use crate::AppState;
use config::{ConfigError, KeyConfig, RouteConfig};
use engine::template::ChatMessage;
use engine::{FinishReason, Grammar, Usage};
use futures_util::StreamExt;
use signals::{agreement, answer_key, Signals};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use upstream::{UpAnswer, UpEvent, UpUsage, Upstream, UpstreamError};

/// A route, with its upstream and compiled patterns.
pub struct Route {
    pub name: String,
    pub config: RouteConfig,
    upstream: Option<Arc<Upstream>>,
    patterns: Vec<fancy_regex::Regex>,
}

/// Every route, upstream and API key of a routes file.
pub struct Router {
    pub local_cost_per_hour: f64,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    routes: BTreeMap<String, Route>,
    /// (id, key, its budget).
    keys: Vec<(String, String, KeyConfig)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|(id, ..)| id.as_str()).collect();
        f.debug_struct("Router").field("routes", &self.routes.keys().collect::<Vec<_>>()).field("upstreams", &self.upstreams).field("keys", &keys).finish()
    }
}

impl Router {
    /// The routes of a checked file; API keys are read from the environment here (a
    /// variable that is not set is an error naming it, never its value).
    pub fn new(file: RouteFile) -> Result<Router, ConfigError> {
        file.check()?;
        let mut upstreams = BTreeMap::new();
        for (name, u) in &file.upstreams {
            upstreams.insert(name.clone(), Arc::new(Upstream::new(name, u.clone())?));
        }
        let routes = file
            .routes
            .iter()
            .map(|(name, r)| {
                let patterns = r.escalate.patterns.iter().filter_map(|p| fancy_regex::Regex::new(p).ok()).collect();
                let route = Route { name: name.clone(), config: r.clone(), upstream: r.upstream.as_ref().map(|u| upstreams[u].clone()), patterns };
                (name.clone(), route)
            })
            .collect();
        let mut keys = Vec::new();
        for (id, k) in &file.keys {
            let key = std::env::var(&k.key_env)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::MissingKey { owner: format!("key {id:?}"), var: k.key_env.clone() })?;
            keys.push((id.clone(), key, k.clone()));
        }
        Ok(Router { local_cost_per_hour: file.local_cost_per_hour, upstreams, routes, keys })
    }

    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// Route names, for the model listings.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Some key has a daily budget (which the ledger keeps the books of).
    pub fn has_budgets(&self) -> bool {
        self.keys.iter().any(|(_, _, k)| k.budget_per_day.is_some())
    }

    /// The id of the key a caller gave (compared in constant time).
    pub fn key_id(&self, given: &str) -> Option<&str> {
        let mut found = None;
        for (id, key, _) in &self.keys {
            if crate::security::same(given.as_bytes(), key.as_bytes()) {
                found = Some(id.as_str());
            }
        }
        found
    }

    /// What a key past its budget for today gets; `None` within it (or without one).
    pub fn over_budget(&self, id: &str, ledger: Option<&Ledger>) -> Option<OverBudget> {
        let (_, _, k) = self.keys.iter().find(|(i, ..)| i == id)?;
        let budget = k.budget_per_day?;
        (ledger?.spent_today(id) >= budget).then_some(k.over_budget)
    }

    /// Health checks of every pool of replicas.
    pub fn spawn_health_checks(&self) {
        self.upstreams.values().for_each(Upstream::spawn_health_checks);
    }

    /// Each upstream's replicas.
    pub fn replica_states(&self) -> Vec<(String, Vec<upstream::ReplicaState>)> {
        self.upstreams.iter().map(|(n, u)| (n.clone(), u.replica_states())).collect()
    }
}

/// How a run is served, shared between the route that may change it (a fallback in the
/// middle of a stream) and the dialect and ledger that report it.
#[derive(Clone)]
pub struct Tag(Arc<Mutex<Served>>);

#[derive(Clone, Default)]
pub struct Served {
    /// The route's report; `None` for a request that named a model.
    pub routed: Option<protocol::Routed>,
    /// The model that answers.
    pub model: String,
    /// The upstream that answered, for its prices.
    pub upstream: Option<Arc<Upstream>>,
    /// The route's upstream, for what sending everything upstream would have cost.
    pub counterfactual: Option<Arc<Upstream>>,
    /// Wall time of a local answer that was computed and not sent (an escalation).
    pub local_spent: Duration,
}

impl Tag {
    /// A request that named a local model.
    pub fn local(model: &str) -> Tag {
        Tag(Arc::new(Mutex::new(Served { model: model.to_string(), ..Served::default() })))
    }

    fn of_route(route: &Route, served: &str, model: &str, escalated: bool, reason: Option<String>) -> Tag {
        let routed = protocol::Routed { route: route.name.clone(), served: served.into(), model: model.into(), escalated, reason };
        let upstream = if served == "upstream" { route.upstream.clone() } else { None };
        Tag(Arc::new(Mutex::new(Served {
            routed: Some(routed),
            model: model.into(),
            upstream,
            counterfactual: route.upstream.clone(),
            local_spent: Duration::ZERO,
        })))
    }

    pub fn get(&self) -> Served {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The `bantam` field of a response.
    pub fn routed(&self) -> Option<protocol::Routed> {
        self.get().routed
    }

    /// The `x-bantam-route` header: `local`, `upstream` or `fallback`.
    pub fn header(&self) -> String {
        self.get().routed.map_or_else(|| "local".into(), |r| r.served)
    }

    fn update(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// A response with the `x-bantam-route` header.
pub fn with_header(mut r: axum::response::Response, tag: &Tag) -> axum::response::Response {
    if let Ok(v) = axum::http::HeaderValue::from_str(&tag.header()) {
        r.headers_mut().insert("x-bantam-route", v);
    }
    r
}

/// Start a job on its route. `local_only`: the caller is past its budget and its key
/// allows local answers only.
pub async fn start(state: &AppState, route: &Route, mut job: Job, local_only: bool) -> Result<Run, ApiError> {
    let policy = if local_only { Policy::Local } else { route.config.policy };
    job.model = route.config.local.clone();
    match (policy, route.upstream.clone()) {
        (Policy::Upstream, Some(up)) => upstream_or_fallback(state, route, up, job, None, None).await,
        (Policy::Cascade, Some(up)) => cascade(state, route, up, job).await,
        _ => {
            let mut run = start_local(state, job).await?;
            run.tag = Tag::of_route(route, "local", &route.config.local, false, None);
            Ok(run)
        }
    }
}

/// A local answer held back while the route decided.
struct Held {
    lease: Option<crate::models::Lease>,
    pieces: Pieces,
    prompts: Vec<Vec<u32>>,
    n: usize,
    load: Duration,
}

impl Held {
    fn into_run(self, tag: Tag) -> Run {
        let mut run = Run::from_pieces(self.lease, without_confidence(self.pieces), self.prompts, self.n, tag);
        run.load = self.load;
        run
    }
}

/// Pieces that carried only a confidence are dropped: the dialects never see them.
fn without_confidence(p: Pieces) -> Pieces {
    Box::pin(p.filter_map(|(i, p)| async move {
        match p {
            Piece::Delta { content, thinking, logprob, .. } if content.is_empty() && thinking.is_empty() && logprob.is_none() => None,
            Piece::Delta { content, thinking, logprob, .. } => Some((i, Piece::Delta { content, thinking, logprob, confidence: None })),
            p => Some((i, p)),
        }
    }))
}

/// The upstream's answer; on failure the held local answer, or a fresh one, as `fallback`.
/// `escalated`: why a cascade sent it here.
async fn upstream_or_fallback(
    state: &AppState,
    route: &Route,
    up: Arc<Upstream>,
    job: Job,
    escalated: Option<String>,
    held: Option<Held>,
) -> Result<Run, ApiError> {
    let req = upstream::request(&job, &up.config.model, job.stream);
    let total = match &job.prompt {
        Prompt::Completion(i) => i.len().max(1),
        _ => 1,
    } * job.n.max(1);
    let tag = Tag::of_route(route, "upstream", &up.config.model, escalated.is_some(), escalated.clone());
    let failure = if job.stream {
        match up.stream(&req).await {
            Ok(rx) => return Ok(Run::from_pieces(None, upstream_stream(state.clone(), rx, job, tag.clone()), Vec::new(), total, tag)),
            Err(e) => e,
        }
    } else {
        match up.complete(&req).await {
            Ok((answers, usage)) => return Ok(Run::from_pieces(None, whole(answers, usage), Vec::new(), total, tag)),
            Err(e) => e,
        }
    };
    fallback(state, route, job, escalated, held, failure).await
}

/// The local answer after an upstream failed.
async fn fallback(state: &AppState, route: &Route, job: Job, escalated: Option<String>, held: Option<Held>, failure: UpstreamError) -> Result<Run, ApiError> {
    // The label only: an upstream's own error text may quote what it was sent.
    eprintln!("route {}: {}; the local model answers", route.name, failure.label());
    let reason = Some(match &escalated {
        Some(r) => format!("{r}; {}", failure.label()),
        None => failure.label(),
    });
    let tag = Tag::of_route(route, "fallback", &route.config.local, escalated.is_some(), reason);
    Ok(match held {
        Some(h) => h.into_run(tag),
        None => {
            let mut run = start_local(state, Job { confidence: false, ..job }).await?;
            run.tag = tag;
            run
        }
    })
}

fn usage(prompt_tokens: usize, eval_count: usize, finish: FinishReason) -> Usage {
    Usage {
        prompt_tokens,
        cached_tokens: 0,
        queue_duration: Duration::ZERO,
        prompt_eval_duration: Duration::ZERO,
        eval_count,
        eval_duration: Duration::ZERO,
        finish,
        prompt_logprobs: Vec::new(),
    }
}

/// The end of every choice of an upstream answer: the counts go with the first choice.
fn ends(answers: Vec<UpAnswer>, u: UpUsage, sent: bool) -> Vec<(usize, Piece)> {
    answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let (p, c) = if i == 0 { (u.prompt_tokens, u.completion_tokens) } else { (0, 0) };
            let (content, thinking) = if sent { (String::new(), String::new()) } else { (a.content, a.thinking) };
            (i, Piece::Done { content, thinking, calls: a.calls, ids: Vec::new(), usage: usage(p, c, a.finish.unwrap_or(FinishReason::Stop)) })
        })
        .collect()
}

/// A whole upstream answer as pieces.
fn whole(answers: Vec<UpAnswer>, u: UpUsage) -> Pieces {
    Box::pin(futures_util::stream::iter(ends(answers, u, false)))
}

/// An upstream stream as pieces. If it breaks off, the local model finishes the answer from
/// where it stopped (one choice; several choices end in an error) and the run is marked
/// `fallback`.
fn upstream_stream(state: AppState, mut rx: mpsc::UnboundedReceiver<UpEvent>, job: Job, tag: Tag) -> Pieces {
    let (tx, out) = mpsc::unbounded_channel::<(usize, Piece)>();
    tokio::spawn(async move {
        let mut sent = String::new();
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = tx.closed() => return,
            };
            match ev {
                Some(UpEvent::Delta { index, content, thinking }) => {
                    if index == 0 {
                        sent += &content;
                    }
                    if tx.send((index, Piece::Delta { content, thinking, logprob: None, confidence: None })).is_err() {
                        return;
                    }
                }
                Some(UpEvent::Done { answers, usage }) => {
                    for p in ends(answers, usage, true) {
                        let _ = tx.send(p);
                    }
                    return;
                }
                Some(UpEvent::Broken(e)) => return finish_locally(&state, job, sent, e, &tag, &tx).await,
                None => return finish_locally(&state, job, sent, UpstreamError::Broken, &tag, &tx).await,
            }
        }
    });
    Box::pin(futures_util::stream::unfold(out, |mut out| async move { out.recv().await.map(|p| (p, out)) }))
}

/// The local model continues an answer the upstream broke off after `sent`.
async fn finish_locally(state: &AppState, job: Job, sent: String, e: UpstreamError, tag: &Tag, tx: &mpsc::UnboundedSender<(usize, Piece)>) {
    let model = job.model.clone();
    tag.update(|s| {
        s.upstream = None;
        s.model = model.clone();
        if let Some(r) = s.routed.as_mut() {
            r.served = "fallback".into();
            r.model = model.clone();
            r.reason = Some(e.label());
        }
    });
    let n = match &job.prompt {
        Prompt::Completion(i) => i.len(),
        _ => 1,
    } * job.n.max(1);
    if n > 1 {
        let _ = tx.send((0, Piece::Error(engine::EngineError::Unavailable(e.label()))));
        return;
    }
    let prompt = match &job.prompt {
        Prompt::Completion(inputs) => match inputs.first() {
            Some(Input::Text(t)) => Prompt::Completion(vec![Input::Text(format!("{t}{sent}"))]),
            _ => {
                let _ = tx.send((0, Piece::Error(engine::EngineError::Unavailable(e.label()))));
                return;
            }
        },
        p => {
            let mut messages = upstream::conversation(p).unwrap_or_default();
            messages.push(ChatMessage::new("assistant", sent.as_str()));
            Prompt::Chat(messages)
        }
    };
    let run = match start_local(state, Job { prompt, confidence: false, tools: None, ..job }).await {
        Ok(run) => run,
        Err(err) => {
            let _ = tx.send((0, Piece::Error(engine::EngineError::Unavailable(err.message))));
            return;
        }
    };
    let mut pieces = run.stream();
    while let Some(p) = pieces.next().await {
        if tx.send(p).is_err() {
            return;
        }
    }
}

/// Whether an answer must read as JSON or as a call.
#[derive(Clone, Copy)]
struct MustParse {
    json: bool,
    call: bool,
}

impl MustParse {
    fn of(job: &Job) -> MustParse {
        MustParse {
            json: matches!(job.grammar, Some(Grammar::JsonSchema(_) | Grammar::JsonObject)),
            call: job.tools.as_ref().is_some_and(|t| t.requires_call()),
        }
    }

    fn fails(self, text: &str, calls: bool) -> bool {
        (self.json && serde_json::from_str::<serde_json::Value>(text.trim()).is_err()) || (self.call && !calls)
    }
}

/// The last user message (or completion prompt), for the route's patterns.
fn last_user_text(p: &Prompt) -> Option<String> {
    match p {
        Prompt::Chat(m) => m.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone()),
        Prompt::Generate { prompt, .. } => Some(prompt.clone()),
        Prompt::Completion(i) => i.iter().find_map(|i| match i {
            Input::Text(t) => Some(t.clone()),
            Input::Tokens(_) => None,
        }),
    }
}

/// Self-consistency's samples of a job: `samples` choices per prompt at the route's
/// temperature, with no log-probabilities, seeded apart from the answer's own: from the
/// request's seed, or else from its prompt, so that the same request is judged the same
/// way and different prompts draw independently.
fn sample_job(job: &Job, t: &config::Thresholds) -> Job {
    let mut j = job.clone();
    j.n = t.samples;
    j.stream = false;
    j.confidence = false;
    j.logprobs = None;
    j.prompt_logprobs = None;
    j.options.temperature = Some(t.sample_temperature);
    let base = job.options.seed.filter(|s| *s >= 0).unwrap_or_else(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        format!("{:?}", job.prompt).hash(&mut h);
        (h.finish() >> 2) as i64
    });
    j.options.seed = Some(base.wrapping_add(SAMPLE_SEED) & i64::MAX);
    j
}

/// Added to a request's seed for its self-consistency samples.
pub const SAMPLE_SEED: i64 = 1 << 20;

/// The local model first; the upstream when the answer's signals cross a threshold.
async fn cascade(state: &AppState, route: &Route, up: Arc<Upstream>, mut job: Job) -> Result<Run, ApiError> {
    let cfg = &route.config;
    if let Some(text) = last_user_text(&job.prompt) {
        if let Some(p) = route.patterns.iter().find(|p| p.is_match(&text).unwrap_or(false)) {
            let why = format!("pattern {}", p.as_str());
            return upstream_or_fallback(state, route, up, job, Some(why), None).await;
        }
    }
    if job.stream && cfg.stream == StreamMode::Local {
        let mut run = start_local(state, job).await?;
        run.tag = Tag::of_route(route, "local", &cfg.local, false, None);
        return Ok(run);
    }
    let must = MustParse::of(&job);
    let t0 = Instant::now();
    job.confidence = true;
    let local = start_local(state, job.clone()).await;
    job.confidence = false;
    // What the local model cannot take (a prompt past its context, a full queue) goes up.
    let local = match local {
        Ok(run) => run,
        Err(e) => return upstream_or_fallback(state, route, up, job, Some(format!("local: {}", e.message)), None).await,
    };
    if let (Some(max), Some(n)) = (cfg.escalate.max_prompt_tokens, local.n_prompt()) {
        if n > max {
            drop(local);
            return upstream_or_fallback(state, route, up, job, Some(format!("prompt_tokens {n} > {max}")), None).await;
        }
    }
    // Self-consistency: more answers, sampled beside this one.
    let consistency = cfg.escalate.min_agreement.is_some();
    let samples = if consistency { start_local(state, sample_job(&job, &cfg.escalate)).await.ok() } else { None };
    let (lease, mut pieces, prompts, n, load) = local.into_parts();
    let total = prompts.len() * n;
    let mut signals = vec![Signals::new(cfg.decide_tokens); total];
    let mut texts = vec![String::new(); total];
    let mut done = vec![false; total];
    let mut calls = vec![None; total];
    let mut held = Vec::new();
    // Self-consistency compares whole answers, so a stream then decides at their end.
    let decided = |signals: &[Signals], done: &[bool]| job.stream && !consistency && (0..total).all(|i| done[i] || signals[i].tokens() >= cfg.decide_tokens);
    while !decided(&signals, &done) {
        let Some((i, p)) = pieces.next().await else { break };
        if i < total {
            match &p {
                Piece::Delta { content, confidence, .. } => {
                    texts[i] += content;
                    if let Some(c) = confidence {
                        signals[i].push(*c);
                    }
                }
                Piece::Done { content, calls: c, usage, .. } => {
                    texts[i] += content;
                    signals[i].length = usage.finish == FinishReason::Length;
                    signals[i].parse_failure = must.fails(&texts[i], c.is_some());
                    calls[i].clone_from(c);
                    done[i] = true;
                }
                Piece::Error(_) => done[i] = true,
            }
        }
        held.push((i, p));
    }
    if let Some(run) = samples {
        // The samples of prompt p are p·k … p·k + k − 1, as the answer's choices are p·n + c.
        let k = run.n;
        if let Ok(answers) = run.collect().await {
            let keys: Vec<String> = answers.iter().map(|a| answer_key(&a.content, a.calls.as_deref())).collect();
            for (i, s) in signals.iter_mut().enumerate() {
                let p = i / n;
                if done[i] && keys.len() >= (p + 1) * k {
                    s.agreement = agreement(&answer_key(&texts[i], calls[i].as_deref()), &keys[p * k..(p + 1) * k]);
                }
            }
        }
    }
    let rest = if done.iter().all(|d| *d) { None } else { Some(pieces) };
    let replay: Pieces = Box::pin(futures_util::stream::iter(held));
    let pieces = match rest {
        Some(rest) => Box::pin(replay.chain(rest)),
        None => replay,
    };
    let held = Held { lease, pieces, prompts, n, load };
    match signals.iter().find_map(|s| s.crossed(&cfg.escalate)) {
        None => Ok(held.into_run(Tag::of_route(route, "local", &cfg.local, false, None))),
        Some(reason) => {
            let spent = t0.elapsed();
            let run = upstream_or_fallback(state, route, up, job, Some(reason), Some(held)).await?;
            // The local answer's compute is booked with it when it is the one sent.
            run.tag.update(|s| {
                if s.upstream.is_some() {
                    s.local_spent = spent;
                }
            });
            Ok(run)
        }
    }
}
