//! The one path from a route's typed job to its answer, shared by the Ollama and OpenAI
//! dialects: load the model, merge the request's options over its Modelfile defaults,
//! build the prompts (chat template, tools, thinking controls), start every choice on the
//! engine, and hand back whole answers or a stream of pieces, with a thinking model's
//! reasoning split from its answer and tool calls read from the text, for the dialect to
//! render in its own wire format.

use crate::error::ApiError;
use crate::ledger::Books;
use crate::models::Lease;
use crate::route::Tag;
use crate::tool_calls::{CallSniffer, Tools};
use crate::{gotemplate, AppState};
use engine::request::TokenLogprob;
use engine::template::{ChatMessage, Think};
use engine::thinking::{split_thinking, ThinkingSplitter};
use engine::tools::{ToolCall, ToolFormat};
use engine::{Confidence, EngineError, Event, Grammar, LoadedModel, Options, Request, Usage};
use futures_util::{Stream, StreamExt};
use protocol::ollama::KeepAlive;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What a request generates from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation through the model's chat template, after the Modelfile's system
    /// prompt and messages; one that ends with an assistant message is continued from it.
    Chat(Vec<ChatMessage>),
    /// Ollama's `/api/generate`: `prompt` through the request's or the Modelfile's Go
    /// template (else the chat template, as one user turn), or as it is when `raw`; after
    /// the token ids of an earlier exchange (`context`).
    Generate { prompt: String, system: Option<String>, template: Option<String>, raw: bool, context: Vec<u32> },
    /// OpenAI's `/v1/completions`: one or more prompts, each text (with BOS as the model
    /// asks) or token ids.
    Completion(Vec<Input>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Chat(Vec::new())
    }
}

/// One completion prompt.
#[derive(Debug, Clone)]
pub enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

/// When a thinking model's reasoning comes back apart from its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reasoning {
    /// Only when the request says `think` (Ollama): kept when on, dropped when off;
    /// without `think` the reasoning stays in the text.
    #[default]
    WhenAsked,
    /// Always (OpenAI's `reasoning_content`); dropped when thinking is turned off.
    Separate,
}

/// A request in the engine's terms, as a dialect's handler builds it from its wire request.
#[derive(Default, Clone)]
pub struct Job {
    pub model: String,
    pub keep_alive: Option<KeepAlive>,
    pub prompt: Prompt,
    /// The request's options (over the dialect's own defaults): a layer over the
    /// Modelfile's defaults, which lie over the built-in ones.
    pub options: Options,
    /// Choices per prompt (seeds `seed`, `seed + 1`, …); 0 is read as 1.
    pub n: usize,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<usize>,
    /// Score the prompt's tokens too, with this many alternatives (in `Usage`).
    pub prompt_logprobs: Option<usize>,
    /// Token id → bias; checked against the vocabulary once the model is loaded.
    pub logit_bias: Vec<(u32, f32)>,
    /// Drop the start of a prompt that does not fit instead of refusing it.
    pub truncate: bool,
    /// What the output must match (a forced tool call's grammar takes its place).
    pub grammar: Option<Grammar>,
    pub tools: Option<Tools>,
    pub think: Option<Think>,
    pub reasoning: Reasoning,
    /// The answer is streamed (a cascade decides before the first piece goes out).
    pub stream: bool,
    /// Report each token's [`engine::Confidence`] in the pieces (for a cascade).
    pub confidence: bool,
    /// The caller's API key id, for the ledger and budgets.
    pub caller: Option<String>,
}

impl Job {
    /// The request's own options, checked before a model is loaded for it.
    fn check(&self) -> Result<(), ApiError> {
        self.options.params().map_err(EngineError::from)?;
        Ok(())
    }
}

/// Load (or, with `keep_alive` 0, unload) the job's model without generating, as Ollama
/// does for a request without a prompt; returns Ollama's `done_reason`.
pub async fn load_only(state: &AppState, job: &Job) -> Result<&'static str, ApiError> {
    job.check()?;
    // A route loads its local model.
    let model = state.router.as_ref().and_then(|r| r.get(&job.model)).map_or(job.model.as_str(), |r| r.config.local.as_str());
    drop(state.models.acquire(model, job.keep_alive).await?);
    Ok(if job.keep_alive == Some(KeepAlive::For(Duration::ZERO)) { "unload" } else { "load" })
}

/// Start the job: on its route when the model names one, else on the model; the request
/// goes into the ledger when the run ends (or here, when it cannot start).
pub async fn start(state: &AppState, job: Job) -> Result<Run, ApiError> {
    let books = Books::new(state.metrics.clone(), state.ledger.clone(), &job, state.local_cost_per_hour());
    let mut local_only = false;
    if let (Some(key), Some(router)) = (job.caller.as_deref(), state.router.as_ref()) {
        match router.over_budget(key, state.ledger.as_deref()) {
            Some(crate::route::OverBudget::Reject) => {
                books.failed();
                return Err(ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, format!("the API key {key:?} has spent its budget for today"))
                    .with_code("budget_exceeded"));
            }
            Some(crate::route::OverBudget::Local) => local_only = true,
            None => {}
        }
    }
    let started = match state.router.as_ref().and_then(|r| r.get(&job.model)) {
        Some(route) => crate::route::start(state, route, job, local_only).await,
        None => start_local(state, job).await,
    };
    match started {
        Ok(mut run) => {
            let mut books = books;
            books.started(&run.tag, run.choices());
            run.books = Some(books);
            Ok(run)
        }
        Err(e) => {
            books.failed();
            Err(e)
        }
    }
}

/// Load the model and start every choice of the job.
pub async fn start_local(state: &AppState, job: Job) -> Result<Run, ApiError> {
    job.check()?;
    let t = Instant::now();
    let lease = state.models.acquire(&job.model, job.keep_alive).await?;
    let load = t.elapsed();
    let lm = &lease.model;
    let resolved = job.options.over(&lm.defaults.options).params().map_err(EngineError::from)?;
    let n_vocab = lm.model.config.n_vocab;
    if let Some((id, _)) = job.logit_bias.iter().find(|(id, _)| *id as usize >= n_vocab) {
        return Err(ApiError::bad_request(format!("logit_bias token {id} is outside the vocabulary ({n_vocab})")).with_param("logit_bias"));
    }
    let (prompts, starts_thinking) = prompts(lm, job.prompt, job.tools.as_ref(), job.think)?;
    let grammar = job.tools.as_ref().and_then(|t| t.grammar(lm)).or(job.grammar);
    let mut rxs = Vec::new();
    for prompt in &prompts {
        for i in 0..job.n.max(1) {
            let mut params = resolved.params.clone();
            params.sampling.seed = params.sampling.seed.wrapping_add(i as u64);
            let (tx, rx) = mpsc::unbounded_channel();
            let mut req = Request::new(prompt.clone(), params, tx);
            req.logprobs = job.logprobs;
            req.prompt_logprobs = job.prompt_logprobs;
            req.logit_bias = job.logit_bias.clone();
            req.constraint = grammar.as_ref().map(|g| lm.constrain(g)).transpose()?;
            req.num_ctx = resolved.num_ctx;
            req.truncate = job.truncate;
            req.confidence = job.confidence;
            req.adapters = lm.adapters.clone();
            lease.handle.submit(req)?;
            rxs.push(rx);
        }
    }
    let split = lm.thinks() && (job.reasoning == Reasoning::Separate || job.think.is_some());
    let shape = Shape {
        split,
        keep_thinking: split && job.think.is_none_or(Think::enabled),
        starts_thinking,
        format: lm.tool_format(),
        tools: job.tools.map(Arc::new),
    };
    let tag = Tag::local(&job.model);
    Ok(Run { source: Source::Engine { lease, rxs, shape }, load, prompts, n: job.n.max(1), prompts_answered: true, tag, books: None })
}

/// The token ids of the job's prompts, and whether the output starts inside a thinking
/// block the template opened.
fn prompts(lm: &LoadedModel, prompt: Prompt, tools: Option<&Tools>, think: Option<Think>) -> Result<(Vec<Vec<u32>>, bool), ApiError> {
    match prompt {
        Prompt::Chat(mut messages) => {
            lm.defaults.open_conversation(&mut messages);
            match tools {
                Some(t) => Ok((vec![t.prompt(lm, &messages)?], false)),
                // A conversation that ends with the assistant's words is continued from them
                // (prefill), as Ollama and llama-server do.
                None if messages.last().is_some_and(|m| m.role == "assistant" && m.tool_calls.is_none()) => match lm.continue_prompt(&messages)? {
                    Some(ids) => Ok((vec![ids], false)),
                    // No chat template: the contents, joined, as for any conversation.
                    None => Ok((vec![lm.chat_prompt(&messages, None)?], false)),
                },
                None => {
                    let (ids, starts_thinking) = lm.chat_prompt_thinking(&messages, None, think)?;
                    Ok((vec![ids], starts_thinking))
                }
            }
        }
        Prompt::Generate { prompt, system, template, raw, context } => Ok((vec![generate_prompt(lm, &prompt, system, template, raw, context)?], false)),
        Prompt::Completion(inputs) => Ok((completion_prompts(lm, inputs)?, false)),
    }
}

/// Ollama's `/api/generate` prompt: see [`Prompt::Generate`].
fn generate_prompt(lm: &LoadedModel, text: &str, system: Option<String>, template: Option<String>, raw: bool, mut ids: Vec<u32>) -> Result<Vec<u32>, ApiError> {
    let defaults = &lm.defaults;
    let system = system.filter(|s| !s.is_empty()).or_else(|| defaults.system.clone());
    if raw {
        ids.extend(lm.tokenizer.encode(text, ids.is_empty(), true));
    } else if let Some(t) = template.as_deref().filter(|t| !t.is_empty()).or(defaults.go_template()) {
        let rendered = gotemplate::render(t, &gotemplate::Vars { system: system.as_deref().unwrap_or(""), prompt: text, response: "" })?;
        if ids.is_empty() {
            ids = lm.tokenize_templated(&rendered);
        } else {
            ids.extend(lm.tokenizer.encode(&rendered, false, true));
        }
    } else {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", text));
        let turn = lm.chat_prompt(&messages, None)?;
        // Continuing an earlier exchange: its tokens, then this turn without a second BOS.
        let skip = usize::from(!ids.is_empty() && lm.tokenizer.bos().is_some_and(|b| turn.first() == Some(&b)));
        ids.extend_from_slice(&turn[skip..]);
    }
    Ok(ids)
}

/// OpenAI's completion prompts as token ids.
fn completion_prompts(lm: &LoadedModel, inputs: Vec<Input>) -> Result<Vec<Vec<u32>>, ApiError> {
    let prompts: Vec<Vec<u32>> = inputs
        .into_iter()
        .map(|i| match i {
            Input::Text(s) => lm.tokenizer.encode(&s, true, true),
            Input::Tokens(t) => t,
        })
        .collect();
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(ApiError::bad_request("prompt must not be empty").with_param("prompt"));
    }
    let n_vocab = lm.model.config.n_vocab;
    if let Some(&t) = prompts.iter().flatten().find(|&&t| t as usize >= n_vocab) {
        return Err(ApiError::bad_request(format!("token id {t} is outside the vocabulary ({n_vocab})")).with_param("prompt"));
    }
    Ok(prompts)
}

/// How a choice's text becomes an answer: reasoning split off, tool calls read.
#[derive(Clone)]
struct Shape {
    split: bool,
    keep_thinking: bool,
    starts_thinking: bool,
    format: ToolFormat,
    tools: Option<Arc<Tools>>,
}

impl Shape {
    /// Calls in `text`, with the text before them; else the text as it is.
    fn calls(&self, text: String) -> (String, Option<Vec<ToolCall>>) {
        match self.tools.as_ref().and_then(|t| t.parsed(self.format, &text)) {
            Some((content, calls)) => (content, Some(calls)),
            None => (text, None),
        }
    }
}

/// One choice's whole answer.
#[derive(Debug)]
pub struct Answer {
    pub content: String,
    /// The reasoning, when split off and kept.
    pub thinking: Option<String>,
    /// Calls of the offered tools, when the answer is one.
    pub calls: Option<Vec<ToolCall>>,
    pub ids: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub usage: Usage,
}

/// A piece of one choice's stream.
#[derive(Debug)]
pub enum Piece {
    /// Text and reasoning that may go out now (either may be empty; a piece with neither
    /// carries a log-probability). Text that may begin a tool call is held, without
    /// log-probabilities, until the end.
    Delta {
        content: String,
        thinking: String,
        logprob: Option<TokenLogprob>,
        /// With [`Job::confidence`]: how sure the model was of the token (a piece may carry
        /// only this; the route takes such pieces out before a dialect sees them).
        confidence: Option<Confidence>,
    },
    /// The end of the choice: what was still held, the calls read from it, every token
    /// id of the choice, and the figures.
    Done {
        content: String,
        thinking: String,
        calls: Option<Vec<ToolCall>>,
        ids: Vec<u32>,
        usage: Usage,
    },
    Error(EngineError),
}

/// A stream of pieces tagged with their choice's index.
pub type Pieces = std::pin::Pin<Box<dyn Stream<Item = (usize, Piece)> + Send + 'static>>;

/// Where a run's pieces come from.
enum Source {
    /// The engine's events, shaped here.
    Engine { lease: Lease, rxs: Vec<mpsc::UnboundedReceiver<Event>>, shape: Shape },
    /// Pieces already shaped (by a route: an upstream's answer, or a local one it held);
    /// the lease, when there is one, keeps the local model loaded.
    Pieces { lease: Option<Lease>, pieces: Pieces },
}

/// The running choices of a job: `n` per prompt, prompt by prompt.
pub struct Run {
    source: Source,
    /// How long loading the model took (zero if it was loaded already).
    pub load: Duration,
    /// The local prompts' token ids (none when an upstream answers).
    pub prompts: Vec<Vec<u32>>,
    pub n: usize,
    /// `prompts` are what was answered: false when an upstream answered.
    prompts_answered: bool,
    /// How the request is served.
    pub tag: Tag,
    books: Option<Books>,
}

impl Run {
    /// A run over shaped pieces.
    pub(crate) fn from_pieces(lease: Option<Lease>, pieces: Pieces, prompts: Vec<Vec<u32>>, n: usize, tag: Tag) -> Run {
        let prompts_answered = !prompts.is_empty();
        Run { source: Source::Pieces { lease, pieces }, load: Duration::ZERO, prompts, n, prompts_answered, tag, books: None }
    }

    /// Take the run apart into its pieces, its lease and its prompts (for a route).
    pub(crate) fn into_parts(self) -> (Option<Lease>, Pieces, Vec<Vec<u32>>, usize, Duration) {
        let Run { source, prompts, n, load, .. } = self;
        match source {
            Source::Engine { lease, rxs, shape } => {
                let pieces = shaped(rxs, shape);
                (Some(lease), pieces, prompts, n, load)
            }
            Source::Pieces { lease, pieces } => (lease, pieces, prompts, n, load),
        }
    }

    fn lease(&self) -> Option<&Lease> {
        match &self.source {
            Source::Engine { lease, .. } => Some(lease),
            Source::Pieces { lease, .. } => lease.as_ref(),
        }
    }

    /// A prompt's text (empty when no local model holds the run).
    pub fn decode(&self, prompt: &[u32]) -> String {
        self.lease().map(|l| l.model.tokenizer.decode(prompt, false)).unwrap_or_default()
    }

    /// Prompt tokens of all prompts, when the local prompts are what was answered (else the
    /// answers' usage has them).
    pub fn n_prompt(&self) -> Option<usize> {
        self.prompts_answered.then(|| self.prompts.iter().map(Vec::len).sum())
    }

    /// Choices in all.
    pub fn choices(&self) -> usize {
        self.prompts.len().max(1) * self.n
    }

    /// Wait for every choice's whole answer.
    pub async fn collect(self) -> Result<Vec<Answer>, ApiError> {
        let total = self.choices();
        let Run { source, mut books, .. } = self;
        let out = match source {
            Source::Engine { lease, rxs, shape } => {
                let all = futures_util::future::join_all(rxs.into_iter().map(collect)).await;
                drop(lease);
                all.into_iter()
                    .map(|c| {
                        let (text, ids, logprobs, usage) = c?;
                        let (thinking, content) = if shape.split { split_thinking(&text, shape.starts_thinking) } else { (None, text) };
                        let (content, calls) = shape.calls(content);
                        Ok(Answer { content, thinking: thinking.filter(|_| shape.keep_thinking), calls, ids, logprobs, usage })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            }
            Source::Pieces { lease, pieces } => {
                let out = gather(pieces, total).await;
                drop(lease);
                out
            }
        };
        if let Some(b) = books.as_mut() {
            match &out {
                Ok(answers) => answers.iter().for_each(|a| b.done(&a.usage, !a.content.is_empty() || a.calls.is_some())),
                Err(_) => b.error(),
            }
        }
        out
    }

    /// Wait for the whole answer of a job with one choice.
    pub async fn answer(self) -> Result<Answer, ApiError> {
        self.collect().await?.pop().ok_or_else(|| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no answer"))
    }

    /// The choices' pieces as they come, tagged with the choice's index; the stream holds
    /// the model loaded, and dropping it cancels the choices.
    pub fn stream(self) -> impl Stream<Item = (usize, Piece)> + Send + Unpin + 'static {
        let Run { source, mut books, .. } = self;
        let (lease, pieces) = match source {
            Source::Engine { lease, rxs, shape } => (Some(lease), shaped(rxs, shape)),
            Source::Pieces { lease, pieces } => (lease, pieces),
        };
        pieces.map(move |(i, p)| {
            let _hold = &lease;
            if let Some(b) = books.as_mut() {
                b.observe(&p);
            }
            (i, p)
        })
    }
}

/// The engine's events of every choice, shaped into pieces.
fn shaped(rxs: Vec<mpsc::UnboundedReceiver<Event>>, shape: Shape) -> Pieces {
    let mut shapers: Vec<Shaper> = rxs.iter().map(|_| Shaper::new(shape.clone())).collect();
    let merged = futures_util::stream::select_all(rxs.into_iter().enumerate().map(|(i, rx)| events(rx).map(move |e| (i, e)).boxed()));
    Box::pin(merged.filter_map(move |(i, ev)| {
        let out = shapers[i].push(ev).map(|p| (i, p));
        async move { out }
    }))
}

/// Every choice's whole answer from its pieces.
async fn gather(mut pieces: Pieces, total: usize) -> Result<Vec<Answer>, ApiError> {
    let mut parts: Vec<(String, String, Vec<TokenLogprob>)> = vec![Default::default(); total];
    let mut answers: Vec<Option<Answer>> = (0..total).map(|_| None).collect();
    while let Some((i, p)) = pieces.next().await {
        if i >= total {
            continue;
        }
        match p {
            Piece::Delta { content, thinking, logprob, .. } => {
                parts[i].0 += &content;
                parts[i].1 += &thinking;
                parts[i].2.extend(logprob);
            }
            Piece::Done { content, thinking, calls, ids, usage } => {
                let (mut c, mut t, logprobs) = std::mem::take(&mut parts[i]);
                c += &content;
                t += &thinking;
                answers[i] = Some(Answer { content: c, thinking: (!t.is_empty()).then_some(t), calls, ids, logprobs, usage });
            }
            Piece::Error(e) => return Err(e.into()),
        }
    }
    answers.into_iter().map(|a| a.ok_or_else(|| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the answer ended early"))).collect()
}

/// Shapes one choice's events into pieces as they stream.
struct Shaper {
    shape: Shape,
    splitter: Option<ThinkingSplitter>,
    sniffer: Option<CallSniffer>,
    ids: Vec<u32>,
}

impl Shaper {
    fn new(shape: Shape) -> Shaper {
        Shaper {
            splitter: shape.split.then(|| ThinkingSplitter::new(shape.starts_thinking)),
            sniffer: shape.tools.is_some().then(CallSniffer::default),
            ids: Vec::new(),
            shape,
        }
    }

    /// `(content, thinking)` of a piece of text; thinking that is not kept is dropped.
    fn split(&mut self, text: String, end: bool) -> (String, String) {
        let Some(sp) = self.splitter.as_mut() else { return (text, String::new()) };
        let mut s = sp.push(&text);
        if end {
            let rest = sp.finish();
            s.content += &rest.content;
            s.thinking += &rest.thinking;
        }
        if !self.shape.keep_thinking {
            s.thinking.clear();
        }
        (s.content, s.thinking)
    }

    fn push(&mut self, ev: Event) -> Option<Piece> {
        match ev {
            Event::Token { id, text, logprob, confidence } => {
                self.ids.push(id);
                let (content, thinking) = self.split(text, false);
                let (content, logprob) = match self.sniffer.as_mut() {
                    Some(s) => (s.push(&content), None),
                    None => (content, logprob),
                };
                (!content.is_empty() || !thinking.is_empty() || logprob.is_some() || confidence.is_some()).then_some(Piece::Delta {
                    content,
                    thinking,
                    logprob,
                    confidence,
                })
            }
            Event::Done { text, usage } => {
                let (content, thinking) = self.split(text, true);
                let (content, calls) = match self.sniffer.take() {
                    Some(mut s) => {
                        let free = s.push(&content);
                        let (held, calls) = self.shape.calls(s.held_text());
                        (free + &held, calls)
                    }
                    None => (content, None),
                };
                Some(Piece::Done { content, thinking, calls, ids: std::mem::take(&mut self.ids), usage })
            }
            Event::Error(e) => Some(Piece::Error(e)),
        }
    }
}

/// Wait for one choice's text, token ids, log-probabilities and figures.
async fn collect(mut rx: mpsc::UnboundedReceiver<Event>) -> Result<(String, Vec<u32>, Vec<TokenLogprob>, Usage), ApiError> {
    let (mut text, mut ids, mut logprobs) = (String::new(), Vec::new(), Vec::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { id, text: t, logprob, .. } => {
                ids.push(id);
                text += &t;
                logprobs.extend(logprob);
            }
            Event::Done { text: t, usage } => return Ok((text + &t, ids, logprobs, usage)),
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the engine stopped before the answer was complete"))
}

/// The events as a stream (ends after `Done` or `Error`).
fn events(rx: mpsc::UnboundedReceiver<Event>) -> impl Stream<Item = Event> + Send + Unpin + 'static {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }))
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

/// An embedding request in the engine's terms.
#[derive(Default)]
pub struct EmbedJob {
    pub model: String,
    pub keep_alive: Option<KeepAlive>,
    pub inputs: Vec<Input>,
    /// Cut an input longer than the context to fit instead of refusing it.
    pub truncate: bool,
    /// Keep this many leading dimensions (renormalised).
    pub dimensions: Option<usize>,
}

/// The vectors of an embedding request, in input order.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens embedded.
    pub n_tokens: usize,
    /// How long loading the model took (zero if it was loaded already).
    pub load: Duration,
}

/// Load the model and embed every input: mean-pooled final hidden states, L2-normalised,
/// computed on the model's engine beside its streams. An empty input is refused; no
/// inputs give no vectors.
pub async fn embed(state: &AppState, job: EmbedJob) -> Result<Embedded, ApiError> {
    if job.dimensions == Some(0) {
        return Err(ApiError::bad_request("dimensions must be > 0").with_param("dimensions"));
    }
    let t = Instant::now();
    let lease = state.models.acquire(&job.model, job.keep_alive).await?;
    let load = t.elapsed();
    let (tok, n_ctx) = (&lease.model.tokenizer, lease.handle.options.n_ctx);
    let mut ids = Vec::with_capacity(job.inputs.len());
    for input in job.inputs {
        let mut t = match input {
            Input::Text(s) => tok.encode(&s, true, true),
            Input::Tokens(t) => t,
        };
        if t.is_empty() {
            return Err(ApiError::bad_request("an input to embed is empty").with_param("input"));
        }
        if t.len() > n_ctx {
            if !job.truncate {
                return Err(ApiError::from(EngineError::PromptTooLong { n_prompt: t.len(), n_ctx }).with_param("input"));
            }
            t.truncate(n_ctx);
        }
        ids.push(t);
    }
    let n_tokens = ids.iter().map(Vec::len).sum();
    let mut vectors = Vec::new();
    if !ids.is_empty() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lease.handle.embed(engine::request::EmbedRequest { inputs: ids, reply: tx })?;
        vectors = rx.await.map_err(|_| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "the engine stopped"))??;
    }
    if let Some(d) = job.dimensions {
        truncate_dims(&mut vectors, d);
    }
    Ok(Embedded { vectors, n_tokens, load })
}

/// Keep the first `d` dimensions and renormalise (Matryoshka-style, as Ollama does).
fn truncate_dims(v: &mut [Vec<f32>], d: usize) {
    for e in v.iter_mut() {
        if d < e.len() {
            e.truncate(d);
            let n = e.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            e.iter_mut().for_each(|x| *x /= n);
        }
    }
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
