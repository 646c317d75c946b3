//! `bantam eval DATA --models A,B --kind classify|exact|extract`: every item through every
//! model on the batching engine that `serve` uses (items in flight together), scored, with
//! latency, throughput, memory and cost per model, written as a table, a JSON summary and a
//! per-item JSON Lines file.

mod data;
mod score;
mod task;
mod upstream;

use anyhow::{bail, Context, Result};
use clap::Args;
use data::{Gold, Item, Kind};
use engine::template::ChatMessage;
use engine::{EngineHandle, EngineOptions, Event, Grammar, LoadedModel, Options, Request, SharedPool};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use task::Task;

#[derive(Args)]
pub struct EvalArgs {
    /// Labelled items, one JSON object per line (.jsonl, or .jsonl.gz), or a TOML task
    /// file that names them and the settings below
    data: PathBuf,
    /// Comma-separated models to compare (names or .gguf paths)
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// What is measured
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// The labels of a classification (comma-separated); answers are held to them
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// How a classification chooses its label: constrained decoding, or the labels'
    /// log-likelihood after the prompt
    /// [default: choice]
    #[arg(long, value_enum)]
    score: Option<Score>,
    /// JSON schema file the answers of an extraction are held to
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Prompt template with {input} and {labels} [default: per kind]
    #[arg(long)]
    prompt: Option<String>,
    /// System message
    #[arg(long)]
    system: Option<String>,
    /// Examples before each item: the first K items of --train, as earlier turns
    #[arg(long)]
    shots: Option<usize>,
    /// Items the shots are taken from
    #[arg(long)]
    train: Option<PathBuf>,
    /// Most tokens per answer [default: 64]
    #[arg(long)]
    max_tokens: Option<i64>,
    /// Sampling temperature (0: greedy, the default)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Seed of sampling and of the bootstrap
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Items in flight together
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Only the first N items
    #[arg(long)]
    limit: Option<usize>,
    /// An OpenAI-compatible model scored on the same items:
    /// NAME=URL,model=MODEL,key-env=VAR,price=IN/OUT ($ per million tokens); repeatable
    #[arg(long)]
    upstream: Vec<String>,
    /// What the hardware costs, in $ per hour [default: $BANTAM_HARDWARE_COST, else
    /// hardware_cost_per_hour in ~/.bantam/config.toml ($BANTAM_CONFIG), else 0]
    #[arg(long)]
    hardware_cost: Option<f64>,
    /// Write the summary as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every answer as JSON Lines here [default: beside --json, else none]
    #[arg(long)]
    items: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Context size of each sequence
    #[arg(short = 'c', long, default_value_t = 2048)]
    ctx_size: usize,
    /// Give the best local model this name in the store (most accurate, then cheapest per
    /// success)
    #[arg(long)]
    pin: Option<String>,
}

/// How a classification is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Score {
    /// The answer is decoded, held to the labels.
    Choice,
    /// The label whose tokens are most likely after the prompt (no decoding).
    Loglik,
}

/// `NAME: done/total` on stderr, redrawn in place; only on a terminal.
pub(crate) struct Progress {
    name: String,
    total: usize,
    done: usize,
    on: bool,
}

impl Progress {
    pub(crate) fn new(name: &str, total: usize) -> Progress {
        Progress { name: name.to_string(), total, done: 0, on: std::io::IsTerminal::is_terminal(&std::io::stderr()) }
    }

    pub(crate) fn tick(&mut self) {
        self.done += 1;
        if self.on {
            eprint!("\r{}: {}/{} answers", self.name, self.done, self.total);
            if self.done == self.total {
                eprintln!();
            }
        }
    }
}

/// One model's answer to one item.
pub(crate) struct Answer {
    prediction: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    /// From the start of its prompt's computation (queueing excluded).
    latency: Duration,
    ttft: Duration,
    error: Option<String>,
}

/// One answer scored.
struct Scored {
    correct: bool,
    /// Exact: the prediction contains an answer; extract: the field F1.
    partial: f64,
}

fn default_prompt(kind: Kind) -> &'static str {
    match kind {
        Kind::Classify => "Classify the text into one of these labels: {labels}.\n\nText: {input}\n\nAnswer with the label only.",
        Kind::Exact => "{input}\n\nAnswer with as few words as possible.",
        Kind::Extract => "Extract the information from the text as JSON.\n\nText: {input}",
    }
}

pub fn main(args: EvalArgs) -> Result<()> {
    let a = Task::resolve(args)?;
    if a.kind == Kind::Classify && a.labels.is_empty() {
        bail!("--kind classify needs --labels");
    }
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let grammar = match a.kind {
        Kind::Classify => Some(Grammar::Choice(a.labels.clone())),
        Kind::Extract => {
            let path = a.schema.as_ref().context("--kind extract needs --schema")?;
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(Grammar::JsonSchema(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?))
        }
        Kind::Exact => None,
    };
    let mut items = data::load(&a.data, a.kind, &a.labels)?;
    items.truncate(a.limit.unwrap_or(usize::MAX));
    let shots = match (&a.train, a.shots) {
        (_, 0) => Vec::new(),
        (Some(t), k) => data::load(t, a.kind, &a.labels)?.into_iter().take(k).collect(),
        (None, _) => bail!("--shots needs --train"),
    };
    let template = a.prompt.clone().unwrap_or_else(|| default_prompt(a.kind).to_string());
    let cost_per_hour = hardware_cost(a.hardware_cost)?;
    let upstreams = a.upstream.iter().map(|u| upstream::Upstream::parse(u)).collect::<Result<Vec<_>>>()?;
    let schema = match &grammar {
        Some(Grammar::JsonSchema(s)) => Some(s.clone()),
        _ => None,
    };
    let items_path = a.items.clone().or_else(|| a.json.as_ref().map(|j| j.with_extension("items.jsonl")));
    let mut items_out = items_path.as_ref().map(|p| std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))).transpose()?;
    let pool = SharedPool::new(crate::threads(a.threads));
    let store = store::Store::open_default();
    let mut summaries = Vec::new();
    let mut all_scores: Vec<Vec<bool>> = Vec::new();
    for name in &a.models {
        let name = crate::store::ensure_pulled(name, true)?;
        reset_peak_rss();
        let found = registry::find(&store, &name)?;
        let digest = found.record.as_ref().map(|r| r.id.hex().to_string());
        let lm = Arc::new(found.load()?);
        if let Some(g) = &grammar {
            let what = a.schema.as_ref().map_or_else(|| "the labels".to_string(), |p| format!("the schema in {}", p.display()));
            lm.constrain(g).with_context(|| format!("{what} cannot constrain {name}"))?;
        }
        let prompts = items.iter().map(|it| prompt(&lm, &a, &template, &shots, it)).collect::<Result<Vec<_>>>()?;
        let options = EngineOptions { max_parallel: a.parallel, max_queue: items.len() * a.labels.len().max(1), n_ctx: a.ctx_size, budget: Default::default() };
        let engine = EngineHandle::spawn(lm.clone(), options, pool.clone())?;
        let params = Options { temperature: Some(a.temperature), seed: Some(a.seed as i64), num_predict: Some(a.max_tokens), ..Options::default() }
            .over(&lm.defaults.options)
            .params()?
            .params;
        eprintln!("{name}: {} items, {} in flight", items.len(), a.parallel);
        let started = Instant::now();
        let answers = if a.kind == Kind::Classify && a.score == Score::Loglik {
            score_labels(&engine, &lm, prompts, &a.labels, params, &name)?
        } else {
            answer_all(&engine, &lm, prompts, params, grammar.as_ref(), &name)?
        };
        let wall = started.elapsed();
        let scores = record(&a, &name, &items, &answers, items_out.as_mut())?;
        summaries.push(summarise(&a, &name, digest, &items, &answers, &scores, wall, Pricing::Hardware(cost_per_hour)));
        all_scores.push(scores.iter().map(|s| s.correct).collect());
    }
    for u in &upstreams {
        eprintln!("{} ({}): {} items, {} in flight", u.name, u.url, items.len(), a.parallel);
        let conversations: Vec<Value> = items
            .iter()
            .map(|it| Value::Array(messages(&a, &template, &shots, it, None).iter().map(|m| json!({"role": m.role, "content": m.content})).collect()))
            .collect();
        let params = json!({"temperature": a.temperature, "max_tokens": a.max_tokens, "seed": a.seed});
        let started = Instant::now();
        let answers = upstream::answer_all(u, conversations, a.kind, &a.labels, schema.as_ref(), &params, a.parallel);

        let wall = started.elapsed();
        let scores = record(&a, &u.name, &items, &answers, items_out.as_mut())?;
        summaries.push(summarise(&a, &u.name, None, &items, &answers, &scores, wall, Pricing::Tokens(u)));
        all_scores.push(scores.iter().map(|s| s.correct).collect());
    }
    let names: Vec<String> = summaries.iter().map(|s| s["model"].as_str().unwrap_or_default().to_string()).collect();
    let comparisons = compare(&names, &all_scores);
    let break_even = break_even(&summaries, cost_per_hour);
    print_table(&summaries, &comparisons, &break_even);
    if let Some(pin) = &a.pin {
        let acc = |s: &Value| s["accuracy"].as_f64().unwrap_or(0.0);
        let cost = |s: &Value| s["cost_per_success_usd"].as_f64().unwrap_or(f64::INFINITY);
        let best = summaries.iter().filter(|s| s["upstream"].is_null()).max_by(|x, y| acc(x).total_cmp(&acc(y)).then(cost(y).total_cmp(&cost(x))));
        let Some(name) = best.and_then(|b| b["model"].as_str()) else { bail!("--pin: no local model was evaluated") };
        store.copy(name, pin).with_context(|| format!("--pin: cannot name {name} {pin}"))?;
        println!("pinned {name} as {pin}");
    }
    if let Some(path) = &a.json {
        let summary = json!({
            "bantam_version": env!("CARGO_PKG_VERSION"),
            "kind": a.kind.as_str(),
            "data": a.data.display().to_string(),
            "data_sha256": store::hash_file(&a.data)?.0.hex(),
            "prompt": template,
            "system": a.system,
            "shots": shots.len(),
            "temperature": a.temperature,
            "seed": a.seed,
            "max_tokens": a.max_tokens,
            "parallel": a.parallel,
            "hardware_cost_per_hour_usd": cost_per_hour,
            "items_file": items_path.as_ref().map(|p| p.display().to_string()),
            "models": summaries,
            "comparisons": comparisons,
            "break_even": break_even,
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// What the machine costs per hour: `--hardware-cost`, else `$BANTAM_HARDWARE_COST`, else
/// `hardware_cost_per_hour` in the config file (`$BANTAM_CONFIG`, default
/// `~/.bantam/config.toml`), else 0.
fn hardware_cost(flag: Option<f64>) -> Result<f64> {
    if let Some(c) = flag {
        return Ok(c);
    }
    if let Ok(v) = std::env::var("BANTAM_HARDWARE_COST") {
        return v.parse().with_context(|| format!("BANTAM_HARDWARE_COST={v:?} is not a number"));
    }
    let path = match std::env::var_os("BANTAM_CONFIG") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".bantam").join("config.toml"),
            None => return Ok(0.0),
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(0.0) };
    let config: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    match config.get("hardware_cost_per_hour") {
        None => Ok(0.0),
        Some(toml::Value::Float(f)) => Ok(*f),
        Some(toml::Value::Integer(i)) => Ok(*i as f64),
        Some(other) => bail!("{}: hardware_cost_per_hour = {other:?} is not a number", path.display()),
    }
}

/// Score one model's answers and write them to the per-item file.
fn record(a: &Task, name: &str, items: &[Item], answers: &[Answer], items_out: Option<&mut std::fs::File>) -> Result<Vec<Scored>> {
    let scores: Vec<Scored> = items.iter().zip(answers).map(|(it, ans)| score_one(a.kind, it, ans)).collect();
    {
        if let Some(f) = items_out {
            for ((it, ans), s) in items.iter().zip(answers).zip(&scores) {
                let mut row = json!({
                    "id": it.id, "model": name, "prediction": ans.prediction, "gold": it.gold.to_json(), "correct": s.correct,
                    "latency_ms": ms(ans.latency), "ttft_ms": ms(ans.ttft), "prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
                });
                match a.kind {
                    Kind::Exact => row["contains"] = json!(s.partial > 0.0),
                    Kind::Extract => row["field_f1"] = json!(s.partial),
                    Kind::Classify => {}
                }
                if let Some(e) = &ans.error {
                    row["error"] = json!(e);
                }
                writeln!(f, "{row}")?;
            }
        }
    }
    Ok(scores)
}

/// The prompt of one item: shots as earlier turns, then the item, through the chat
/// template (or as plain text for a model without one).
fn prompt(lm: &LoadedModel, a: &Task, template: &str, shots: &[Item], it: &Item) -> Result<Vec<u32>> {
    Ok(lm.chat_prompt(&messages(a, template, shots, it, Some(&lm.defaults)), None)?)
}

/// The conversation of one item: the system message (and a local model's Modelfile
/// messages), shots as earlier turns, then the item.
fn messages(a: &Task, template: &str, shots: &[Item], it: &Item, defaults: Option<&engine::Defaults>) -> Vec<ChatMessage> {
    let fill = |input: &str| template.replace("{labels}", &a.labels.join(", ")).replace("{input}", input);
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s.as_str()));
    }
    if let Some(d) = defaults {
        d.open_conversation(&mut messages);
    }
    for s in shots {
        let answer = match &s.gold {
            Gold::Label(l) => l.clone(),
            Gold::Answers(v) => v[0].clone(),
            Gold::Expected(e) => e.to_string(),
        };
        messages.push(ChatMessage::new("user", fill(&s.input)));
        messages.push(ChatMessage::new("assistant", answer));
    }
    messages.push(ChatMessage::new("user", fill(&it.input)));
    messages
}

/// Submit every prompt at once (the engine runs `parallel` of them together) and wait for
/// all the answers.
fn answer_all(
    engine: &EngineHandle,
    lm: &LoadedModel,
    prompts: Vec<Vec<u32>>,
    params: engine::GenerateParams,
    grammar: Option<&Grammar>,
    name: &str,
) -> Result<Vec<Answer>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let mut receivers = Vec::new();
    for p in prompts {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let n_prompt = p.len();
        let mut req = Request::new(p, params.clone(), tx);
        req.constraint = grammar.map(|g| lm.constrain(g)).transpose()?;
        engine.submit(req)?;
        receivers.push((rx, n_prompt, Instant::now()));
    }
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, (mut rx, n_prompt, submitted)) in receivers.into_iter().enumerate() {
            set.spawn(async move {
                let (mut text, mut first) = (String::new(), None);
                let mut answer = Answer {
                    prediction: String::new(),
                    prompt_tokens: n_prompt,
                    completion_tokens: 0,
                    latency: Duration::ZERO,
                    ttft: Duration::ZERO,
                    error: None,
                };
                while let Some(ev) = rx.recv().await {
                    match ev {
                        Event::Token { text: t, .. } => {
                            first.get_or_insert_with(|| submitted.elapsed());
                            text += &t;
                        }
                        Event::Done { text: t, usage } => {
                            text += &t;
                            answer.latency = submitted.elapsed().saturating_sub(usage.queue_duration);
                            answer.ttft = first.unwrap_or(answer.latency + usage.queue_duration).saturating_sub(usage.queue_duration);
                            answer.completion_tokens = usage.eval_count;
                            break;
                        }
                        Event::Error(e) => {
                            answer.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                answer.prediction = text.trim().to_string();
                (i, answer)
            });
        }
        let mut out: Vec<Option<Answer>> = Vec::new();
        out.resize_with(set.len(), || None);
        let mut progress = Progress::new(name, set.len());
        while let Some(r) = set.join_next().await {
            progress.tick();
            let (i, answer) = r?;
            out[i] = Some(answer);
        }
        Ok(out.into_iter().flatten().collect())
    })
}

/// Each label's log-likelihood after each prompt (`num_predict` 0, the prompt scored); the
/// answer is the likeliest label. An item's latency is until its last label is scored.
fn score_labels(
    engine: &EngineHandle,
    lm: &LoadedModel,
    prompts: Vec<Vec<u32>>,
    labels: &[String],
    mut params: engine::GenerateParams,
    name: &str,
) -> Result<Vec<Answer>> {
    params.num_predict = Some(0);
    let label_ids: Vec<Vec<u32>> = labels.iter().map(|l| lm.tokenizer.encode(l, false, true)).collect();
    let mut jobs = Vec::new();
    for p in &prompts {
        for ids in &label_ids {
            let mut full = p.clone();
            full.extend_from_slice(ids);
            jobs.push((full, p.len()));
        }
    }
    let n_labels = labels.len();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut receivers = Vec::new();
    for (full, from) in jobs {
        let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
        let mut req = Request::new(full, params.clone(), etx);
        // Only the label's tokens are scored; the prompt before them comes from the prefix
        // cache for every label but the first.
        req.prompt_logprobs = Some(0);
        req.score_from = from;
        engine.submit(req)?;
        receivers.push((erx, Instant::now()));
    }
    // (job, the label's log-likelihood or why it failed, latency)
    let scored: Vec<(usize, Result<f64, String>, Duration)> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (j, (mut erx, submitted)) in receivers.into_iter().enumerate() {
            let n = label_ids[j % n_labels].len();
            set.spawn(async move {
                while let Some(ev) = erx.recv().await {
                    match ev {
                        Event::Done { usage, .. } => {
                            let lp = &usage.prompt_logprobs;
                            let ll = lp[lp.len().saturating_sub(n)..].iter().map(|l| f64::from(l.token.logprob)).sum();
                            return (j, Ok(ll), submitted.elapsed().saturating_sub(usage.queue_duration));
                        }
                        Event::Error(e) => return (j, Err(e.to_string()), submitted.elapsed()),
                        Event::Token { .. } => {}
                    }
                }
                (j, Err("the engine stopped".to_string()), submitted.elapsed())
            });
        }
        let mut progress = Progress::new(name, set.len());
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            progress.tick();
            out.extend(r.ok());
        }
        out
    });
    let mut answers: Vec<Answer> = prompts
        .iter()
        .map(|p| Answer { prediction: String::new(), prompt_tokens: p.len(), completion_tokens: 0, latency: Duration::ZERO, ttft: Duration::ZERO, error: None })
        .collect();
    let mut best = vec![f64::NEG_INFINITY; prompts.len()];
    for (j, ll, latency) in scored {
        let (i, k) = (j / n_labels, j % n_labels);
        let a = &mut answers[i];
        a.latency = a.latency.max(latency);
        a.ttft = a.latency;
        match ll {
            Err(e) => a.error = Some(e),
            Ok(ll) if ll > best[i] => {
                best[i] = ll;
                a.prediction = labels[k].clone();
            }
            Ok(_) => {}
        }
    }
    Ok(answers)
}

fn score_one(kind: Kind, it: &Item, ans: &Answer) -> Scored {
    match (&it.gold, kind) {
        (Gold::Label(l), _) => Scored { correct: ans.error.is_none() && &ans.prediction == l, partial: 0.0 },
        (Gold::Answers(v), _) => {
            let (exact, contains) = score::exact(&ans.prediction, v);
            Scored { correct: exact, partial: f64::from(u8::from(contains)) }
        }
        (Gold::Expected(e), _) => {
            let (exact, f1) = score::extract(&ans.prediction, e);
            Scored { correct: exact, partial: f1 }
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One model's figures, as the JSON summary writes them.
#[allow(clippy::too_many_arguments)]
fn summarise(a: &Task, name: &str, digest: Option<String>, items: &[Item], answers: &[Answer], scores: &[Scored], wall: Duration, pricing: Pricing) -> Value {
    let n = items.len();
    let correct = scores.iter().filter(|s| s.correct).count();
    let flags: Vec<bool> = scores.iter().map(|s| s.correct).collect();
    let (lo, hi) = score::bootstrap_ci(&flags, a.seed ^ 0x5eed);
    let latencies: Vec<f64> = answers.iter().map(|x| ms(x.latency)).collect();
    let ttfts: Vec<f64> = answers.iter().map(|x| ms(x.ttft)).collect();
    let pct = |v: &[f64]| json!({"p50": score::percentile(v, 50.0), "p95": score::percentile(v, 95.0), "p99": score::percentile(v, 99.0)});
    let completion: usize = answers.iter().map(|x| x.completion_tokens).sum();
    let all_tokens: usize = completion + answers.iter().map(|x| x.prompt_tokens).sum::<usize>();
    let dollars = match pricing {
        Pricing::Hardware(per_hour) => per_hour * wall.as_secs_f64() / 3600.0,
        Pricing::Tokens(u) => answers.iter().map(|x| u.cost(x.prompt_tokens, x.completion_tokens)).sum(),
    };
    let mut s = json!({
        "model": name,
        "digest": digest,
        "n": n,
        "correct": correct,
        "accuracy": correct as f64 / n as f64,
        "accuracy_ci": [lo, hi],
        "latency_ms": pct(&latencies),
        "ttft_ms": pct(&ttfts),
        "tokens_per_s": completion as f64 / wall.as_secs_f64().max(1e-9),
        "items_per_s": n as f64 / wall.as_secs_f64().max(1e-9),
        "wall_s": wall.as_secs_f64(),
        "prompt_tokens": all_tokens - completion,
        "completion_tokens": completion,
        "errors": answers.iter().filter(|x| x.error.is_some()).count(),
        "peak_rss_mib": match pricing {
            Pricing::Hardware(_) => Value::from(peak_rss_mib()),
            Pricing::Tokens(_) => Value::Null,
        },
        "upstream": match pricing {
            Pricing::Hardware(_) => Value::Null,
            Pricing::Tokens(u) => json!({"url": u.url, "model": u.model, "price_per_1m_in_usd": u.price_in, "price_per_1m_out_usd": u.price_out}),
        },
        "cost_usd": dollars,
        "cost_per_1m_tokens_usd": if all_tokens > 0 { dollars / all_tokens as f64 * 1e6 } else { 0.0 },
        "cost_per_success_usd": if correct > 0 { Value::from(dollars / correct as f64) } else { Value::Null },
    });
    match a.kind {
        Kind::Classify => {
            let pairs: Vec<(&str, &str)> =
                items.iter().zip(answers).map(|(it, ans)| (if let Gold::Label(l) = &it.gold { l.as_str() } else { "" }, ans.prediction.as_str())).collect();
            s["macro_f1"] = json!(score::macro_f1(&pairs, &a.labels));
            s["confusion"] = json!(score::confusion(&pairs));
        }
        Kind::Exact => s["contains"] = json!(scores.iter().filter(|x| x.partial > 0.0).count() as f64 / n as f64),
        Kind::Extract => s["field_f1"] = json!(scores.iter().map(|x| x.partial).sum::<f64>() / n as f64),
    }
    s
}

/// How a model's answers are paid for.
#[derive(Clone, Copy)]
enum Pricing<'a> {
    /// The machine, $ per hour, while the model works.
    Hardware(f64),
    /// An endpoint's token prices.
    Tokens(&'a upstream::Upstream),
}

/// For each local model and each upstream one: the monthly volume above which running the
/// local model on a machine of `cost_per_hour` (730 hours a month) is cheaper than paying
/// the upstream per answer, and how many answers a month that machine can give.
fn break_even(summaries: &[Value], cost_per_hour: f64) -> Vec<Value> {
    let (locals, remotes): (Vec<&Value>, Vec<&Value>) = summaries.iter().partition(|s| s["upstream"].is_null());
    let mut out = Vec::new();
    for l in &locals {
        for r in &remotes {
            let per_answer = r["cost_usd"].as_f64().unwrap_or(0.0) / r["n"].as_f64().unwrap_or(1.0).max(1.0);
            if cost_per_hour <= 0.0 || per_answer <= 0.0 {
                continue;
            }
            let volume = cost_per_hour * 730.0 / per_answer;
            let capacity = l["items_per_s"].as_f64().unwrap_or(0.0) * 730.0 * 3600.0;
            out.push(json!({"local": l["model"], "upstream": r["model"], "requests_per_month": volume, "local_capacity_per_month": capacity}));
        }
    }
    out
}

/// McNemar's test of every pair of models.
fn compare(models: &[String], scores: &[Vec<bool>]) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..scores.len() {
        for j in i + 1..scores.len() {
            let a_only = scores[i].iter().zip(&scores[j]).filter(|(a, b)| **a && !**b).count();
            let b_only = scores[i].iter().zip(&scores[j]).filter(|(a, b)| !**a && **b).count();
            let p = score::mcnemar(a_only, b_only);
            out.push(json!({"a": models[i], "b": models[j], "a_only": a_only, "b_only": b_only, "p_value": p, "significant": p < 0.05}));
        }
    }
    out
}

fn print_table(summaries: &[Value], comparisons: &[Value], break_even: &[Value]) {
    println!("| model | n | accuracy (95% CI) | latency p50/p95 ms | ttft p50 ms | tokens/s | peak RSS MiB | $/success |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in summaries {
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!(
            "| {} | {} | {:.3} ({:.3}-{:.3}) | {:.0}/{:.0} | {:.0} | {:.1} | {} | {} |",
            s["model"].as_str().unwrap_or(""),
            s["n"],
            f(&s["accuracy"]),
            f(&s["accuracy_ci"][0]),
            f(&s["accuracy_ci"][1]),
            f(&s["latency_ms"]["p50"]),
            f(&s["latency_ms"]["p95"]),
            f(&s["ttft_ms"]["p50"]),
            f(&s["tokens_per_s"]),
            s["peak_rss_mib"].as_f64().map_or("-".to_string(), |v| format!("{v:.0}")),
            s["cost_per_success_usd"].as_f64().map_or("-".to_string(), |c| format!("{c:.2e}")),
        );
    }
    for c in comparisons {
        let verdict = if c["significant"].as_bool() == Some(true) { "significant" } else { "not significant" };
        println!(
            "{} vs {}: {} vs {} items right only by one (McNemar p = {:.3}, {verdict})",
            c["a"],
            c["b"],
            c["a_only"],
            c["b_only"],
            c["p_value"].as_f64().unwrap_or(1.0)
        );
    }
    for b in break_even {
        let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
        let fits = if f("requests_per_month") <= f("local_capacity_per_month") { "within" } else { "beyond" };
        println!(
            "{} is cheaper than {} above {:.0} requests a month ({fits} this machine's {:.0} a month)",
            b["local"].as_str().unwrap_or(""),
            b["upstream"].as_str().unwrap_or(""),
            f("requests_per_month"),
            f("local_capacity_per_month")
        );
    }
}

/// Forget the process's peak resident memory so far (Linux), so that each model's peak is
/// its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory in MiB (Linux `VmHWM`), 0 where unknown.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())))
        .map_or(0.0, |kb| kb / 1024.0)
}
