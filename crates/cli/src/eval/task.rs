//! What `bantam eval` runs: the command line, over a TOML task file when DATA is one.
//!
//! ```toml
//! kind = "classify"                 # classify | exact | extract | code
//! data = "tickets.jsonl"            # relative paths are the task file's
//! labels = ["billing", "refund", "other"]
//! models = ["smollm2:135m", "gemma3:270m"]
//! prompt = "Route this ticket: {input}\nOne of: {labels}."
//! system = "You sort support tickets."
//! score = "choice"                  # or "loglik"
//! schema = "ticket.schema.json"     # extract
//! shots = 3
//! train = "train.jsonl"
//! max_tokens = 16
//! samples = 1                       # answers per item (pass@k)
//! prompt_style = "evalplus"         # code: evalplus | complete
//! ```

use super::data::Kind;
use super::{EvalArgs, Score};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The settings of one evaluation, resolved.
pub struct Task {
    pub data: PathBuf,
    pub models: Vec<String>,
    pub kind: Kind,
    pub labels: Vec<String>,
    pub score: Score,
    pub schema: Option<PathBuf>,
    pub prompt: Option<String>,
    pub system: Option<String>,
    pub shots: usize,
    pub train: Option<PathBuf>,
    pub max_tokens: i64,
    pub temperature: f32,
    pub seed: u64,
    pub parallel: usize,
    pub limit: Option<usize>,
    pub upstream: Vec<String>,
    pub hardware_cost: Option<f64>,
    pub json: Option<PathBuf>,
    pub items: Option<PathBuf>,
    pub threads: Option<usize>,
    pub ctx_size: usize,
    pub pin: Option<String>,
    pub samples: usize,
    pub prompt_style: super::code::PromptStyle,
    pub test_timeout: f64,
    pub test_memory_mib: u64,
    pub completions: Vec<PathBuf>,
    pub html: Option<PathBuf>,
    pub signals: Option<usize>,
    /// Self-consistency samples per item, and their temperature.
    pub agreement: Option<usize>,
    pub agreement_temperature: f32,
}

/// A task file's fields; each is overridden by its command-line flag.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    kind: Option<String>,
    data: Option<PathBuf>,
    models: Option<Vec<String>>,
    labels: Option<Vec<String>>,
    score: Option<String>,
    schema: Option<PathBuf>,
    prompt: Option<String>,
    system: Option<String>,
    shots: Option<usize>,
    train: Option<PathBuf>,
    max_tokens: Option<i64>,
    samples: Option<usize>,
    prompt_style: Option<String>,
}

impl Task {
    pub fn resolve(a: EvalArgs) -> Result<Task> {
        let is_toml = a.data.extension().is_some_and(|e| e == "toml");
        let (f, dir) = if is_toml {
            let text = std::fs::read_to_string(&a.data).with_context(|| format!("cannot read {}", a.data.display()))?;
            let f: File = toml::from_str(&text).with_context(|| format!("{} is not a task file", a.data.display()))?;
            (f, a.data.parent().map(Path::to_path_buf).unwrap_or_default())
        } else {
            (File::default(), PathBuf::new())
        };
        let at = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
        let data = match (is_toml, f.data) {
            (false, _) => a.data,
            (true, Some(d)) => at(d),
            (true, None) => bail!("{}: `data` is missing", a.data.display()),
        };
        let kind = match (a.kind, f.kind.as_deref()) {
            (Some(k), _) => k,
            (None, Some(k)) => {
                <Kind as clap::ValueEnum>::from_str(k, true).map_err(|_| anyhow::anyhow!("kind {k:?}: expected classify, exact, extract or code"))?
            }
            (None, None) => bail!("--kind is required (classify, exact, extract or code)"),
        };
        let score = match (a.score, f.score.as_deref()) {
            (Some(s), _) => s,
            (None, Some(s)) => <Score as clap::ValueEnum>::from_str(s, true).map_err(|_| anyhow::anyhow!("score {s:?}: expected choice or loglik"))?,
            (None, None) => Score::Choice,
        };
        let prompt_style = match (a.prompt_style, f.prompt_style.as_deref()) {
            (Some(s), _) => s,
            (None, Some(s)) => <super::code::PromptStyle as clap::ValueEnum>::from_str(s, true)
                .map_err(|_| anyhow::anyhow!("prompt_style {s:?}: expected evalplus or complete"))?,
            (None, None) => super::code::PromptStyle::Evalplus,
        };
        let models = if a.models.is_empty() { f.models.unwrap_or_default() } else { a.models };
        if models.is_empty() && a.upstream.is_empty() && a.completions.is_empty() {
            bail!("--models is required");
        }
        if a.agreement.is_some() && !server::route::config::sample_temperature_ok(a.agreement_temperature) {
            bail!("--agreement-temperature must be above 0 and at most 2");
        }
        Ok(Task {
            data,
            models,
            kind,
            labels: if a.labels.is_empty() { f.labels.unwrap_or_default() } else { a.labels },
            score,
            schema: a.schema.or(f.schema.map(at)),
            prompt: a.prompt.or(f.prompt),
            system: a.system.or(f.system),
            shots: a.shots.or(f.shots).unwrap_or(0),
            train: a.train.or(f.train.map(at)),
            max_tokens: a.max_tokens.or(f.max_tokens).unwrap_or(if kind == Kind::Code { 512 } else { 64 }),
            temperature: a.temperature,
            seed: a.seed,
            parallel: a.parallel,
            limit: a.limit,
            upstream: a.upstream,
            hardware_cost: a.hardware_cost,
            json: a.json,
            items: a.items,
            threads: a.threads,
            ctx_size: a.ctx_size,
            pin: a.pin,
            samples: a.samples.or(f.samples).unwrap_or(1),
            prompt_style,
            test_timeout: a.test_timeout,
            test_memory_mib: a.test_memory,
            completions: a.completions,
            html: a.html,
            signals: a.signals,
            agreement: a.agreement.map(|k| k as usize),
            agreement_temperature: a.agreement_temperature,
        })
    }
}
