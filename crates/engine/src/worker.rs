//! The engine thread of one loaded model. It alone owns the KV caches and the sequences;
//! callers talk to it through an [`EngineHandle`]. Each loop turn it takes new requests,
//! drops the cancelled ones, plans a step with [`scheduler::plan`], runs ONE forward pass
//! over every running sequence's tokens, and samples for those that produced logits.
//!
//! Requests are checked in the caller's thread when they are submitted ([`prepare`]): the
//! one place where a prompt meets the context. Embedding requests ride in the same forward
//! passes as generation: while streams decode, a few tokens ride in a step (as many as keep
//! it within 2x of a plain decode step) and only as often as a time credit allows, so that
//! embedding adds at most [`EMBED_SHARE`] of the streams' own step time on average; when
//! nothing decodes, embeddings run in full batches. A large embed request never stalls a
//! stream.
//!
//! Every engine of a process borrows its worker threads from one [`SharedPool`] for the
//! length of a forward pass, so two busy models share the cores instead of
//! oversubscribing them.
//!
//! Slots keep their cache after a request ends, and a new request starts from the longest
//! prefix of its prompt found in any slot (copied if it sits in another one), so a repeated
//! system prompt or a growing chat is not recomputed.

use crate::generate::FinishReason;
use crate::loaded::LoadedModel;
use crate::request::{Candidate, Confidence, EmbedRequest, Event, Request, SubmitError, TokenLogprob, Usage};
use crate::sampler::Sampler;
use crate::scheduler::{self, Budget, SeqView, StepPlan};
use crate::stop::StopMatcher;
use crate::{Constraint, EngineError};
use kernels::pool::Pool;
use model::{Batch, CacheTypes, KvCache, Scratch};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokenizer::StreamDecoder;

/// How an engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Sequences decoded together (slots, each with its own cache).
    pub max_parallel: usize,
    /// Requests waiting for a slot before new ones are refused.
    pub max_queue: usize,
    /// Context of each slot, in tokens.
    pub n_ctx: usize,
    pub budget: Budget,
    /// How the slots' caches store K and V.
    pub cache: CacheTypes,
}

/// The worker threads every engine of a process shares: an engine holds the lock for one
/// forward pass, so the CPU budget (`--threads`) is one for all loaded models.
#[derive(Clone)]
pub struct SharedPool(Arc<Mutex<Pool>>);

impl SharedPool {
    /// A pool of `threads` threads in all.
    pub fn new(threads: usize) -> SharedPool {
        SharedPool(Arc::new(Mutex::new(Pool::new(threads.max(1)))))
    }

    /// The pool, for one forward pass.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counters the engine keeps for metrics and /api/ps; read without locking.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests accepted and not yet finished (running + queued).
    pub outstanding: AtomicUsize,
    pub running: AtomicUsize,
    pub queued: AtomicUsize,
    /// Tokens held in all slot caches.
    pub kv_tokens: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens served from the prefix cache.
    pub prefix_hit_tokens: AtomicU64,
    /// Requests that found a non-empty prefix in the cache.
    pub prefix_hits: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub steps: AtomicU64,
    /// Nanoseconds spent in forward steps.
    pub busy_ns: AtomicU64,
}

enum Command {
    Generate(Box<Request>),
    Embed(EmbedRequest),
    CancelAll,
}

/// The caller's side of an engine. Dropping it lets the thread finish what runs and exit.
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    pub model: Arc<LoadedModel>,
    pub stats: Arc<EngineStats>,
    pub options: EngineOptions,
}

impl EngineHandle {
    /// Start the engine thread for `model`, computing on `pool`.
    pub fn spawn(model: Arc<LoadedModel>, options: EngineOptions, pool: SharedPool) -> std::io::Result<EngineHandle> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let engine = Engine::new(model.clone(), &options, stats.clone(), rx, pool)?;
        std::thread::Builder::new().name(format!("engine {}", model.name)).spawn(move || engine.run())?;
        Ok(EngineHandle { tx, model, stats, options })
    }

    /// Check the request ([`prepare`]) and queue it, or refuse it when it is invalid or
    /// `max_parallel + max_queue` are outstanding.
    pub fn submit(&self, mut req: Request) -> Result<(), SubmitError> {
        prepare(&self.model, self.options.n_ctx, &mut req)?;
        let limit = self.options.max_parallel + self.options.max_queue;
        let taken = self.stats.outstanding.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1));
        if taken.is_err() {
            return Err(SubmitError::Overloaded { running: self.stats.running.load(Ordering::Relaxed), queued: self.stats.queued.load(Ordering::Relaxed) });
        }
        self.tx.send(Command::Generate(Box::new(req))).map_err(|_| {
            self.stats.outstanding.fetch_sub(1, Ordering::SeqCst);
            SubmitError::Closed
        })
    }

    pub fn embed(&self, req: EmbedRequest) -> Result<(), SubmitError> {
        self.tx.send(Command::Embed(req)).map_err(|_| SubmitError::Closed)
    }

    /// Finish every running and queued request now (as cancelled).
    pub fn cancel_all(&self) {
        let _ = self.tx.send(Command::CancelAll);
    }

    /// A cheap handle that can only cancel, for a signal handler.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.tx.clone())
    }

    /// Whether no request is running or queued.
    pub fn is_idle(&self) -> bool {
        self.stats.outstanding.load(Ordering::SeqCst) == 0
    }

    /// Bytes the weights and the slot caches may take.
    pub fn memory_bytes(&self) -> usize {
        let o = &self.options;
        self.model.model.file.file_size() + o.max_parallel * self.model.kv_bytes(o.cache, o.n_ctx, o.budget.most())
    }
}

/// Cancels everything an engine runs (see [`EngineHandle::canceller`]).
pub struct Canceller(mpsc::Sender<Command>);

impl Canceller {
    pub fn cancel_all(&self) {
        let _ = self.0.send(Command::CancelAll);
    }
}

/// Check a request against the model and the slot's context before it is queued: the one
/// place where a prompt meets the context. A prompt that does not fit is refused, or with
/// `truncate` cut to its last three quarters of the context (keeping its BOS); the request's
/// own `num_ctx` bounds it further, and bounds the generation.
pub fn prepare(lm: &LoadedModel, slot_ctx: usize, req: &mut Request) -> Result<(), EngineError> {
    req.params.sampling.validate()?;
    if req.prompt.is_empty() {
        return Err(EngineError::BadRequest("the prompt is empty".into()));
    }
    let n_vocab = lm.model.config.n_vocab;
    if let Some(&t) = req.prompt.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(EngineError::BadRequest(format!("token id {t} is outside the vocabulary ({n_vocab})")));
    }
    let n_ctx = req.num_ctx.map_or(slot_ctx, |n| n.clamp(1, slot_ctx));
    if req.prompt.len() >= n_ctx {
        if !req.truncate || n_ctx < 2 {
            return Err(EngineError::PromptTooLong { n_prompt: req.prompt.len(), n_ctx });
        }
        // Keep the end of the prompt and room for a quarter of the context to answer.
        let keep = (n_ctx - n_ctx / 4).clamp(1, n_ctx - 1);
        let bos = lm.tokenizer.bos().filter(|&b| req.prompt[0] == b);
        req.prompt.drain(..req.prompt.len() - keep);
        if let Some(b) = bos {
            req.prompt[0] = b;
        }
    }
    if req.num_ctx.is_some() {
        // A smaller per-request context bounds generation; the slot's own is the engine's.
        let room = n_ctx - req.prompt.len();
        req.params.num_predict = Some(req.params.num_predict.map_or(room, |n| n.min(room)));
    }
    Ok(())
}

/// The most extra step time embedding may add beside decoding streams, as a share of
/// their own step time, on average: at 0.5 a stream's mean inter-token time grows at most
/// 1.5x while an embedding runs.
pub const EMBED_SHARE: f64 = 0.5;

/// Inputs of one embedding request computed side by side in a step, each in a cache of
/// its own (short inputs are the common case, so a step packs several).
const EMBED_LANES: usize = 8;

/// An embedding request being computed, a chunk per engine turn.
struct EmbedJob {
    req: EmbedRequest,
    /// The vectors, by input (empty until computed).
    out: Vec<Vec<f32>>,
    /// Inputs finished.
    done: usize,
    /// The next input to start.
    next: usize,
    /// Inputs under way.
    lanes: Vec<Lane>,
}

/// One input under way.
struct Lane {
    input: usize,
    /// Tokens already computed.
    pos: usize,
    /// Tokens in this step's batch.
    taking: usize,
    /// [n_embd] running sum of the final hidden states.
    sum: Vec<f64>,
    cache: KvCache,
}

impl EmbedJob {
    fn new(req: EmbedRequest) -> EmbedJob {
        EmbedJob { out: vec![Vec::new(); req.inputs.len()], req, done: 0, next: 0, lanes: Vec::new() }
    }

    /// Plan up to `room` tokens for this step, starting inputs while lanes are free; the
    /// number planned.
    fn plan(&mut self, room: usize, c: &model::Config, pass: usize) -> usize {
        let mut left = room;
        for lane in &mut self.lanes {
            lane.taking = (self.req.inputs[lane.input].len() - lane.pos).min(left);
            left -= lane.taking;
        }
        while left > 0 && self.lanes.len() < EMBED_LANES && self.next < self.req.inputs.len() {
            let n = self.req.inputs[self.next].len();
            let taking = n.min(left);
            self.lanes.push(Lane {
                input: self.next,
                pos: 0,
                taking,
                sum: vec![0.0; c.n_embd],
                cache: KvCache::with_pass(c, n, Default::default(), pass).expect("f16 fits every head"),
            });
            self.next += 1;
            left -= taking;
        }
        room - left
    }

    /// Add this step's final hidden states (`[planned, n_embd]`, lane by lane) and finish
    /// the inputs that are complete: mean-pooled (the norm divides the count out) and
    /// L2-normalised. True when every input is done.
    fn absorb(&mut self, hidden: &[f32], n_embd: usize) -> bool {
        let mut rows = hidden.chunks_exact(n_embd);
        for lane in &mut self.lanes {
            for row in rows.by_ref().take(lane.taking) {
                lane.sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
            }
            lane.pos += lane.taking;
            lane.taking = 0;
        }
        let inputs = &self.req.inputs;
        for lane in self.lanes.iter().filter(|l| l.pos == inputs[l.input].len()) {
            let norm = lane.sum.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            self.out[lane.input] = lane.sum.iter().map(|v| (v / norm) as f32).collect();
            self.done += 1;
        }
        self.lanes.retain(|l| l.pos < inputs[l.input].len());
        self.done == inputs.len()
    }
}

/// A request that holds a slot.
struct Active {
    req: Request,
    sampler: Sampler,
    stop: StopMatcher,
    decoder: StreamDecoder,
    /// Prompt tokens already in the cache.
    n_done: usize,
    cached: usize,
    /// The sampled token not yet in the cache (decoding sequences).
    next: Option<u32>,
    eval_count: usize,
    admitted: Instant,
    first_token: Option<Instant>,
    /// Admission order, for first-come-first-served prompt chunks.
    order: u64,
    /// Scores of the prompt's tokens so far (`Request::prompt_logprobs`).
    prompt_logprobs: Vec<TokenLogprob>,
}

struct Slot {
    cache: KvCache,
    /// Exactly the tokens the cache holds.
    tokens: Vec<u32>,
    /// How many of them were read from prompts: the rest were generated, and where the
    /// model computes the two kinds differently (`Model::prompt_tokens_differ`) they serve
    /// no later prompt, so a request's output does not depend on what the cache held.
    prompt_len: usize,
    /// The adapters the cache was computed under: a prefix serves only requests with the
    /// same ones.
    adapters: Option<Arc<model::Adapters>>,
    active: Option<Active>,
    /// When the slot last finished a request (least recently used is reused first).
    last_used: u64,
}

struct Engine {
    lm: Arc<LoadedModel>,
    /// `Model::prompt_tokens_differ`, computed once: whether generated positions may serve
    /// a later prompt from the prefix cache.
    prompt_tokens_differ: bool,
    pool: SharedPool,
    rx: mpsc::Receiver<Command>,
    stats: Arc<EngineStats>,
    budget: Budget,
    slots: Vec<Slot>,
    waiting: VecDeque<Request>,
    embeds: VecDeque<EmbedJob>,
    /// Recent duration of a decode step without embedding tokens (moving average).
    step_time: Duration,
    /// Embedding tokens a step with decoding sequences takes (adapted to `step_time`).
    embed_rows: usize,
    /// Seconds of extra step time embedding may still take beside decoding streams; below
    /// zero, embedding waits while plain steps pay the debt back.
    embed_credit: f64,
    batch: Batch,
    scratch: Scratch,
    plan: StepPlan,
    views: Vec<SeqView>,
    /// [n_vocab] logits with `logit_bias` applied.
    biased: Vec<f32>,
    /// [n_vocab] token ids, partially sorted for top log-probabilities.
    order: Vec<u32>,
    /// Slots whose request ended in this step, and how.
    ended: Vec<(usize, Result<FinishReason, EngineError>)>,
    clock: u64,
    closed: bool,
}

impl Engine {
    fn new(lm: Arc<LoadedModel>, o: &EngineOptions, stats: Arc<EngineStats>, rx: mpsc::Receiver<Command>, pool: SharedPool) -> std::io::Result<Engine> {
        let slots = (0..o.max_parallel.max(1))
            .map(|_| {
                let cache = KvCache::with_pass(&lm.model.config, o.n_ctx, o.cache, o.budget.most())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
                Ok(Slot { cache, tokens: Vec::new(), prompt_len: 0, adapters: None, active: None, last_used: 0 })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Engine {
            pool,
            prompt_tokens_differ: lm.model.prompt_tokens_differ(),
            lm,
            rx,
            stats,
            budget: o.budget,
            slots,
            waiting: VecDeque::new(),
            embeds: VecDeque::new(),
            step_time: Duration::ZERO,
            embed_rows: 4,
            embed_credit: 0.0,
            batch: Batch::default(),
            scratch: Scratch::default(),
            plan: StepPlan::default(),
            views: Vec::new(),
            biased: Vec::new(),
            order: Vec::new(),
            ended: Vec::new(),
            clock: 0,
            closed: false,
        })
    }

    fn run(mut self) {
        loop {
            let busy = self.slots.iter().any(|s| s.active.is_some()) || !self.waiting.is_empty() || !self.embeds.is_empty();
            if !busy {
                if self.closed {
                    return;
                }
                match self.rx.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(c) => self.command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.closed = true;
                        break;
                    }
                }
            }
            self.drop_cancelled();
            self.admit();
            self.publish();
            if let Err(e) = self.step() {
                // A failed step (it should not happen: inputs are checked on admission)
                // fails the requests in it, never the engine.
                for slot in &mut self.slots {
                    if let Some(a) = slot.active.take() {
                        self.stats.outstanding.fetch_sub(1, Ordering::SeqCst);
                        let _ = a.req.events.send(Event::Error(EngineError::BadRequest(format!("generation failed: {e}"))));
                    }
                    slot.cache.clear();
                    slot.tokens.clear();
                }
            }
            self.publish();
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Generate(r) => self.waiting.push_back(*r),
            Command::Embed(req) => {
                let c = &self.lm.model.config;
                let bad = req.inputs.iter().find_map(|input| {
                    if input.is_empty() {
                        return Some(EngineError::BadRequest("an input to embed is empty".into()));
                    }
                    let t = *input.iter().find(|&&t| t as usize >= c.n_vocab)?;
                    Some(EngineError::BadRequest(format!("token id {t} is outside the vocabulary ({})", c.n_vocab)))
                });
                match bad {
                    Some(e) => {
                        let _ = req.reply.send(Err(e));
                    }
                    None => {
                        self.embeds.push_back(EmbedJob::new(req));
                    }
                }
            }
            Command::CancelAll => {
                for r in self.waiting.drain(..) {
                    self.stats.outstanding.fetch_sub(1, Ordering::SeqCst);
                    let _ = r.events.send(Event::Error(EngineError::Cancelled));
                }
                for i in 0..self.slots.len() {
                    if self.slots[i].active.is_some() {
                        self.finish(i, Ok(FinishReason::Cancelled));
                    }
                }
                for job in self.embeds.drain(..) {
                    let _ = job.req.reply.send(Err(EngineError::Cancelled));
                }
            }
        }
    }

    fn publish(&self) {
        let running = self.slots.iter().filter(|s| s.active.is_some()).count();
        self.stats.running.store(running, Ordering::Relaxed);
        self.stats.queued.store(self.waiting.len(), Ordering::Relaxed);
        self.stats.kv_tokens.store(self.slots.iter().map(|s| s.cache.len()).sum(), Ordering::Relaxed);
    }

    /// A request whose receiver is gone (the client left) frees its slot now.
    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|r| !r.events.is_closed());
        self.stats.outstanding.fetch_sub(before - self.waiting.len(), Ordering::SeqCst);
        for i in 0..self.slots.len() {
            if self.slots[i].active.as_ref().is_some_and(|a| a.req.events.is_closed()) {
                self.finish(i, Ok(FinishReason::Cancelled));
            }
        }
        self.embeds.retain(|j| !j.req.reply.is_closed());
    }

    /// Move waiting requests into free slots. The longest cached prefix of a prompt may sit
    /// in any slot, running or free; the request takes the free slot that loses the fewest
    /// cached tokens by being reused (then the least recently used), and the prefix is copied
    /// in from wherever it is longest. So a shared system prompt is computed once, and a
    /// slot's cached conversation survives other requests for as long as there is room.
    fn admit(&mut self) {
        while !self.waiting.is_empty() {
            let prompt = &self.waiting[0].prompt;
            // The last prompt token is always recomputed: its logits are needed. A prompt
            // that is scored is computed from the token before the first one scored.
            let scored_from = self.waiting[0].prompt_logprobs.map(|_| self.waiting[0].score_from.max(1));
            let usable = scored_from.unwrap_or(prompt.len()).min(prompt.len()).saturating_sub(1);
            let adapters = self.waiting[0].adapters.as_deref();
            let common: Vec<usize> = self
                .slots
                .iter()
                .map(|s| {
                    let read = if self.prompt_tokens_differ { s.prompt_len } else { usize::MAX };
                    if model::Adapters::same(s.adapters.as_deref(), adapters) {
                        // A sliding-window ring keeps a prefix only while it holds the
                        // window before its end.
                        s.cache.keepable(common_prefix(&s.tokens, prompt).min(usable).min(read))
                    } else {
                        0
                    }
                })
                .collect();
            let dest = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_none())
                .min_by_key(|&i| (self.slots[i].tokens.len() - common[i], std::cmp::Reverse(common[i]), self.slots[i].last_used));
            let Some(d) = dest else { break };
            let req = self.waiting.pop_front().expect("not empty");
            let (src, best) = common.iter().copied().enumerate().max_by_key(|&(i, c)| (c, i == d)).unwrap_or((d, 0));
            let slot_d = &mut self.slots[d];
            let kept = slot_d.cache.truncate(common[d]);
            debug_assert_eq!(kept, common[d]);
            slot_d.tokens.truncate(common[d]);
            slot_d.adapters = req.adapters.clone();
            slot_d.prompt_len = req.prompt.len();
            if best > common[d] {
                let (a, b) = (d.min(src), d.max(src));
                let (lo, hi) = self.slots.split_at_mut(b);
                let (dst, from) = if d < src { (&mut lo[a], &hi[0]) } else { (&mut hi[0], &lo[a]) };
                dst.cache.copy_prefix_from(&from.cache, best);
                dst.tokens.clear();
                dst.tokens.extend_from_slice(&from.tokens[..best]);
            }
            let reuse = best;
            self.stats.prompt_tokens.fetch_add(req.prompt.len() as u64, Ordering::Relaxed);
            if reuse > 0 {
                self.stats.prefix_hits.fetch_add(1, Ordering::Relaxed);
                self.stats.prefix_hit_tokens.fetch_add(reuse as u64, Ordering::Relaxed);
            }
            self.clock += 1;
            self.slots[d].active = Some(Active {
                sampler: Sampler::new(req.params.sampling.clone(), self.lm.model.config.n_vocab),
                stop: StopMatcher::new(req.params.stop.clone()),
                decoder: StreamDecoder::new(false),
                n_done: reuse,
                cached: reuse,
                next: None,
                eval_count: 0,
                admitted: Instant::now(),
                first_token: None,
                order: self.clock,
                prompt_logprobs: Vec::new(),
                req,
            });
        }
    }

    /// One forward pass over the planned tokens of every running sequence, then sampling.
    fn step(&mut self) -> Result<(), EngineError> {
        // Running sequences in arrival order.
        self.views.clear();
        self.views
            .extend(self.slots.iter().enumerate().filter_map(|(i, s)| s.active.as_ref().map(|a| SeqView { slot: i, pending: a.req.prompt.len() - a.n_done })));
        let slots = &self.slots;
        self.views.sort_unstable_by_key(|v| slots[v.slot].active.as_ref().map_or(0, |a| a.order));
        scheduler::plan(&self.views, self.budget, &mut self.plan);
        let decoding = self.views.iter().any(|v| v.pending == 0);
        let room = if decoding { self.embed_rows } else { self.budget.idle.saturating_sub(self.plan.n_tokens()).max(1) };
        let embed_tokens = match self.embeds.front_mut() {
            None => 0,
            Some(_) if decoding && self.embed_credit < 0.0 => 0,
            Some(job) => job.plan(room, &self.lm.model.config, self.budget.most()),
        };
        if self.plan.items.is_empty() && embed_tokens == 0 {
            return Ok(());
        }
        // The batch: each planned slot's tokens; logits for a decode token and for the
        // last token of a prompt.
        self.batch.clear();
        if self.slots.iter().any(|s| s.adapters.is_some()) {
            self.batch.adapters.extend(self.slots.iter().map(|s| s.adapters.clone()));
        }
        for item in &self.plan.items {
            let a = self.slots[item.slot].active.as_ref().expect("planned slots run");
            match a.next {
                Some(t) => self.batch.push_generated(t, item.slot, true),
                None => {
                    let chunk = &a.req.prompt[a.n_done..a.n_done + item.n_tokens];
                    let ends = a.n_done + item.n_tokens == a.req.prompt.len();
                    for (j, &t) in chunk.iter().enumerate() {
                        self.batch.push(t, item.slot, scores_next(&a.req, a.n_done + j) || (ends && j + 1 == chunk.len()));
                    }
                }
            }
        }
        // Grammar masks of the constrained sequences that sample in this step are computed
        // on a second thread while the forward pass runs, so they delay no one.
        let n_logits = self.batch.logits.iter().filter(|&&l| l).count();
        // The embedding chunk goes last, each input in a cache of its own (sequences
        // `slots.len()` and on).
        if let Some(job) = self.embeds.front().filter(|_| embed_tokens > 0) {
            for (k, lane) in job.lanes.iter().enumerate() {
                let input = &job.req.inputs[lane.input][lane.pos..lane.pos + lane.taking];
                input.iter().for_each(|&t| self.batch.push(t, self.slots.len() + k, true));
            }
        }
        let mut constrained: Vec<(usize, Constraint)> = Vec::new();
        for item in &self.plan.items {
            let a = self.slots[item.slot].active.as_mut().expect("planned slots run");
            let samples = a.next.is_some() || a.n_done + item.n_tokens == a.req.prompt.len();
            if samples {
                if let Some(c) = a.req.constraint.take() {
                    constrained.push((item.slot, c));
                }
            }
        }
        let t0 = Instant::now();
        let mut caches: Vec<&mut KvCache> = self.slots.iter_mut().map(|s| &mut s.cache).collect();
        if let Some(job) = self.embeds.front_mut().filter(|_| embed_tokens > 0) {
            caches.extend(job.lanes.iter_mut().map(|l| &mut l.cache));
        }
        let guard = self.pool.lock();
        let (lm, pool, batch, scratch) = (&self.lm, &*guard, &self.batch, &mut self.scratch);
        let out = if constrained.is_empty() {
            lm.model.forward_split(pool, batch, &mut caches, scratch, n_logits)
        } else {
            std::thread::scope(|s| {
                let masks = s.spawn(|| constrained.iter_mut().for_each(|(_, c)| c.prepare()));
                let out = lm.model.forward_split(pool, batch, &mut caches, scratch, n_logits);
                let _ = masks.join();
                out
            })
        };
        drop(guard);
        let elapsed = t0.elapsed();
        if decoding {
            // Plain decode steps set the pace and earn embedding credit; steps with
            // embedding tokens spend it and adapt their count to stay within 2x of the pace.
            let (took, pace) = (elapsed.as_secs_f64(), self.step_time.as_secs_f64());
            if embed_tokens == 0 {
                self.step_time = average(self.step_time, elapsed);
                if !self.embeds.is_empty() {
                    self.embed_credit = (self.embed_credit + EMBED_SHARE * pace).min(0.0);
                }
            } else {
                self.embed_credit -= (took - pace).max(0.0);
                if took > 2.0 * pace {
                    self.embed_rows = (self.embed_rows / 2).max(1);
                } else if took < 1.6 * pace {
                    self.embed_rows = (self.embed_rows + 1).min(self.budget.busy.max(1));
                }
            }
        }
        for (i, c) in constrained {
            if let Some(a) = self.slots[i].active.as_mut() {
                a.req.constraint = Some(c);
            }
        }
        let (logits, hidden) = match out {
            Ok(o) => o,
            Err(e) => {
                if let Some(job) = self.embeds.pop_front().filter(|_| embed_tokens > 0) {
                    let _ = job.req.reply.send(Err(EngineError::BadRequest(format!("embedding failed: {e}"))));
                }
                return Err(e.into());
            }
        };
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.busy_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if embed_tokens > 0 {
            let job = self.embeds.front_mut().expect("the chunk's job");
            if job.absorb(hidden, self.lm.model.config.n_embd) {
                let job = self.embeds.pop_front().expect("front exists");
                let _ = job.req.reply.send(Ok(job.out));
            }
        }
        // Record what the caches now hold, then sample in plan order (the logits' order).
        let n_vocab = self.lm.model.config.n_vocab;
        let mut row = 0;
        for k in 0..self.plan.items.len() {
            let item = self.plan.items[k];
            let slot = &mut self.slots[item.slot];
            let a = slot.active.as_mut().expect("planned slots run");
            let wants_logits = match a.next.take() {
                Some(t) => {
                    slot.tokens.push(t);
                    true
                }
                None => {
                    slot.tokens.extend_from_slice(&a.req.prompt[a.n_done..a.n_done + item.n_tokens]);
                    if let Some(k) = a.req.prompt_logprobs {
                        // Each scored row gives the next prompt token's log-probability;
                        // the prompt's last row is sampled from below.
                        for p in (a.n_done..a.n_done + item.n_tokens).filter(|&p| scores_next(&a.req, p)) {
                            let l = &logits[row * n_vocab..(row + 1) * n_vocab];
                            a.prompt_logprobs.push(token_logprob(&self.lm, l, a.req.prompt[p + 1], k, &mut self.order));
                            row += 1;
                        }
                    }
                    a.n_done += item.n_tokens;
                    a.n_done == a.req.prompt.len()
                }
            };
            if wants_logits {
                let l = &logits[row * n_vocab..(row + 1) * n_vocab];
                row += 1;
                self.stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
                match sample(&self.lm, slot, l, &mut self.biased, &mut self.order) {
                    Ok(None) => {}
                    Ok(Some(reason)) => self.ended.push((item.slot, Ok(reason))),
                    Err(e) => self.ended.push((item.slot, Err(e))),
                }
            }
        }
        let mut ended = std::mem::take(&mut self.ended);
        for (i, reason) in ended.drain(..) {
            self.finish(i, reason);
        }
        self.ended = ended;
        Ok(())
    }

    /// End the slot's request: flush held-back text and send `Done`, or send the error that
    /// ended it. The slot keeps its cache for prefix reuse.
    fn finish(&mut self, i: usize, end: Result<FinishReason, EngineError>) {
        self.clock += 1;
        let slot = &mut self.slots[i];
        slot.last_used = self.clock;
        let Some(mut a) = slot.active.take() else { return };
        let reason = match end {
            Ok(r) => r,
            Err(e) => {
                self.stats.outstanding.fetch_sub(1, Ordering::SeqCst);
                self.publish();
                let _ = a.req.events.send(Event::Error(e));
                return;
            }
        };
        let mut text = String::new();
        if !a.stop.is_stopped() {
            let (t, _) = a.stop.push(a.decoder.finish());
            text = t;
            if !a.stop.is_stopped() {
                text += &a.stop.finish();
            }
        }
        let now = Instant::now();
        let first = a.first_token.unwrap_or(now);
        let usage = Usage {
            prompt_tokens: a.req.prompt.len(),
            cached_tokens: a.cached,
            queue_duration: a.admitted.saturating_duration_since(a.req.submitted),
            prompt_eval_duration: first.saturating_duration_since(a.admitted),
            eval_count: a.eval_count,
            eval_duration: now.saturating_duration_since(first),
            finish: reason,
            prompt_logprobs: std::mem::take(&mut a.prompt_logprobs),
        };
        // Counted out before the caller hears of it, so an idle check right after sees it.
        self.stats.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.publish();
        let _ = a.req.events.send(Event::Done { text, usage });
    }
}

/// Whether the logits at prompt position `p` score the next prompt token.
fn scores_next(req: &Request, p: usize) -> bool {
    req.prompt_logprobs.is_some() && p + 1 < req.prompt.len() && p + 1 >= req.score_from.max(1)
}

/// A moving average that follows recent values (weight 1/4 on the newest).
fn average(old: Duration, new: Duration) -> Duration {
    if old.is_zero() {
        new
    } else {
        (old * 3 + new) / 4
    }
}

/// Sample the slot's next token from `logits` [n_vocab], report it, and say whether the
/// request ends (and why). A grammar that cannot go on is an error of the request.
fn sample(lm: &LoadedModel, slot: &mut Slot, logits: &[f32], biased: &mut Vec<f32>, order: &mut Vec<u32>) -> Result<Option<FinishReason>, EngineError> {
    let n_ctx = slot.cache.capacity();
    let a = slot.active.as_mut().expect("sampling a running slot");
    let now = Instant::now();
    a.first_token.get_or_insert(now);
    if a.req.params.num_predict == Some(0) {
        return Ok(Some(FinishReason::Length));
    }
    let input: &[f32] = if a.req.constraint.is_none() && a.req.logit_bias.is_empty() {
        logits
    } else {
        match a.req.constraint.as_mut() {
            // Only the tokens the grammar allows keep their logits.
            Some(c) => c.apply(logits, biased)?,
            None => {
                biased.clear();
                biased.extend_from_slice(logits);
            }
        }
        for &(id, bias) in &a.req.logit_bias {
            if let Some(l) = biased.get_mut(id as usize).filter(|l| l.is_finite()) {
                *l += bias;
            }
        }
        &biased[..]
    };
    let id = a.sampler.sample(input, &slot.tokens);
    if lm.tokenizer.is_eog(id) {
        // The end-of-generation token is not part of the answer: not in its text, its
        // logprobs or its token count.
        return Ok(Some(FinishReason::Stop));
    }
    let grammar_done = match a.req.constraint.as_mut() {
        Some(c) => {
            c.commit(id)?;
            c.is_done()
        }
        None => false,
    };
    a.eval_count += 1;
    let dist = if a.req.constraint.is_some() { input } else { logits };
    let logprob = a.req.logprobs.map(|k| token_logprob(lm, dist, id, k, order));
    let confidence = a.req.confidence.then(|| Confidence::of(input, id));
    let (text, hit) = a.stop.push(a.decoder.push(&lm.tokenizer, id));
    let _ = a.req.events.send(Event::Token { id, text, logprob, confidence });
    if hit || grammar_done {
        return Ok(Some(FinishReason::Stop));
    }
    let limit = a.req.params.num_predict.unwrap_or(usize::MAX);
    if slot.tokens.len() + 1 >= n_ctx || a.eval_count >= limit {
        return Ok(Some(FinishReason::Length));
    }
    a.next = Some(id);
    Ok(None)
}

/// log-softmax of `logits` at `id`, and the `k` most likely tokens.
fn token_logprob(lm: &LoadedModel, logits: &[f32], id: u32, k: usize, order: &mut Vec<u32>) -> TokenLogprob {
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().filter(|v| !v.is_nan()).map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln() as f32;
    let lp = |i: u32| logits.get(i as usize).map_or(f32::NEG_INFINITY, |&v| if v.is_nan() { f32::NEG_INFINITY } else { v - lse });
    let cand = |i: u32| Candidate { id: i, bytes: lm.tokenizer.token_to_piece(i, true), logprob: lp(i) };
    let k = k.min(logits.len());
    let mut top = Vec::with_capacity(k);
    if k > 0 {
        order.clear();
        order.extend(0..logits.len() as u32);
        // Most likely first.
        let by = |a: &u32, b: &u32| lp(*b).total_cmp(&lp(*a));
        order.select_nth_unstable_by(k - 1, by);
        order[..k].sort_unstable_by(by);
        // Tokens a grammar rules out (-inf) are not alternatives.
        top.extend(order[..k].iter().filter(|&&i| lp(i).is_finite()).map(|&i| cand(i)));
    }
    TokenLogprob { token: cand(id), top }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
