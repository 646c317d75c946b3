//! The routes file (`bantam serve --routes routes.toml`): upstreams, routes, API keys with
//! budgets, and the price of this machine. docs/ROUTING.md documents every field.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Why a routes file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    /// An API key's variable is not set (named; its value is never printed).
    #[error("{owner}: the environment variable {var} is not set")]
    MissingKey { owner: String, var: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Dollars per hour of this machine: the local cost of a request is its share of it.
    #[serde(default)]
    pub local_cost_per_hour: f64,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    #[serde(default)]
    pub keys: BTreeMap<String, KeyConfig>,
}

/// An OpenAI-compatible server (bantam, vLLM, llama-server, a hosted API), or a pool of
/// replicas of one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, up to and including `/v1` (`http://127.0.0.1:8000/v1`).
    #[serde(default)]
    pub url: Option<String>,
    /// Base URLs of a pool of replicas (instead of `url`).
    #[serde(default)]
    pub replicas: Vec<String>,
    /// The model name to send upstream.
    pub model: String,
    /// The environment variable that holds the API key (sent as `Authorization: Bearer`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Dollars per million prompt tokens.
    #[serde(default)]
    pub price_input: f64,
    /// Dollars per million generated tokens.
    #[serde(default)]
    pub price_output: f64,
    /// Seconds a whole answer may take (a stream: until its last chunk).
    #[serde(default = "defaults::timeout")]
    pub timeout: f64,
    /// Seconds to connect and to get the response's headers.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: f64,
    /// Further tries after a failure that happened before any answer was sent.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Milliseconds before the first retry; doubled for each next one (with jitter).
    #[serde(default = "defaults::backoff_ms")]
    pub backoff_ms: u64,
    /// Consecutive failures that open a replica's circuit breaker.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds an open breaker waits before letting one request probe the replica.
    #[serde(default = "defaults::breaker_cooldown")]
    pub breaker_cooldown: f64,
    /// Seconds between health checks of a pool's replicas (`GET /health` beside `/v1`);
    /// 0 turns them off.
    #[serde(default = "defaults::health_interval")]
    pub health_interval: f64,
}

/// How a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The local model only.
    Local,
    /// The upstream, with the local model as the fallback when it fails.
    Upstream,
    /// The local model first; the upstream when a signal crosses its threshold.
    Cascade,
}

/// What a cascade does with streaming requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// Decide within the first `decide_tokens` tokens, before anything reaches the client.
    #[default]
    Decide,
    /// Stream the local answer as it comes; no escalation.
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub policy: Policy,
    /// The local model (a name in the store); required by every policy, as the fallback.
    pub local: String,
    /// The upstream's name in `[upstreams]`; required by `upstream` and `cascade`.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub stream: StreamMode,
    /// Tokens a streaming cascade generates before it decides.
    #[serde(default = "defaults::decide_tokens")]
    pub decide_tokens: usize,
    #[serde(default)]
    pub escalate: Thresholds,
}

/// When a cascade escalates: any threshold crossed. Unset thresholds are off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Mean log-probability of the answer's tokens below this.
    #[serde(default)]
    pub min_mean_logprob: Option<f32>,
    /// Any token's log-probability below this.
    #[serde(default)]
    pub min_token_logprob: Option<f32>,
    /// Mean entropy (nats) over the first `decide_tokens` tokens above this.
    #[serde(default)]
    pub max_entropy: Option<f32>,
    /// Smallest margin (log p of the best minus the second best allowed token) over the
    /// first `decide_tokens` tokens below this: under a constraint, the margin between
    /// the choices it allows.
    #[serde(default)]
    pub min_margin: Option<f32>,
    /// An answer that must be JSON or a tool call and does not read as one.
    #[serde(default = "defaults::yes")]
    pub on_parse_failure: bool,
    /// An answer cut by the token limit.
    #[serde(default)]
    pub on_length: bool,
    /// Self-consistency: the share of `samples` more local answers, drawn at
    /// `sample_temperature`, that say the same as the answer (compared as
    /// [`answer_key`](super::signals::answer_key) reads them), below this. Off unless set;
    /// the samples run beside the answer and their tokens are not the client's.
    #[serde(default)]
    pub min_agreement: Option<f32>,
    /// How many answers self-consistency samples.
    #[serde(default = "defaults::samples")]
    pub samples: usize,
    /// The temperature they are drawn at.
    #[serde(default = "defaults::sample_temperature")]
    pub sample_temperature: f32,
    /// Prompts longer than this many tokens go upstream without a local try.
    #[serde(default)]
    pub max_prompt_tokens: Option<usize>,
    /// Regular expressions: a last user message that matches one goes upstream directly.
    #[serde(default)]
    pub patterns: Vec<String>,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            min_mean_logprob: None,
            min_token_logprob: None,
            max_entropy: None,
            min_margin: None,
            min_agreement: None,
            samples: defaults::samples(),
            sample_temperature: defaults::sample_temperature(),
            on_parse_failure: defaults::yes(),
            on_length: false,
            max_prompt_tokens: None,
            patterns: Vec::new(),
        }
    }
}

/// What happens to a key past its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverBudget {
    /// 429 with an error naming the budget.
    #[default]
    Reject,
    /// Local answers only: routes do not escalate or go upstream.
    Local,
}

/// An API key: its id (the table's name) is what the ledger records, never the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The environment variable holding the key.
    pub key_env: String,
    /// Dollars per UTC day this key may spend (local and upstream cost together).
    #[serde(default)]
    pub budget_per_day: Option<f64>,
    #[serde(default)]
    pub over_budget: OverBudget,
}

mod defaults {
    pub fn timeout() -> f64 {
        120.0
    }
    pub fn connect_timeout() -> f64 {
        5.0
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn backoff_ms() -> u64 {
        100
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_cooldown() -> f64 {
        30.0
    }
    pub fn health_interval() -> f64 {
        5.0
    }
    pub fn decide_tokens() -> usize {
        16
    }
    pub fn yes() -> bool {
        true
    }
    pub fn samples() -> usize {
        4
    }
    pub fn sample_temperature() -> f32 {
        0.7
    }
}

/// The most answers self-consistency may sample per request.
pub const MAX_SAMPLES: usize = 16;

/// Whether self-consistency may sample at this temperature: above 0 (greedy samples all
/// say the same) and at most 2.
pub fn sample_temperature_ok(t: f32) -> bool {
    t > 0.0 && t <= 2.0
}

impl RouteFile {
    pub fn load(path: &Path) -> Result<RouteFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        RouteFile::parse(&text, &path.display().to_string())
    }

    /// A routes file's text, checked; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RouteFile, ConfigError> {
        let file: RouteFile = toml::from_str(text).map_err(|e| ConfigError::Parse { path: origin.to_string(), detail: e.to_string() })?;
        file.check()?;
        Ok(file)
    }

    /// Every reference resolves and every number is usable.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(self.local_cost_per_hour >= 0.0 && self.local_cost_per_hour.is_finite()) {
            return bad("local_cost_per_hour must be a non-negative number".into());
        }
        for (name, u) in &self.upstreams {
            if u.url.is_some() != u.replicas.is_empty() {
                return bad(format!("upstream {name:?}: give either url or replicas"));
            }
            for url in u.urls() {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return bad(format!("upstream {name:?}: {url:?} is not an http(s) URL"));
                }
            }
            for (field, v) in [
                ("price_input", u.price_input),
                ("price_output", u.price_output),
                ("breaker_cooldown", u.breaker_cooldown),
                ("health_interval", u.health_interval),
            ] {
                if !(v >= 0.0 && v.is_finite()) {
                    return bad(format!("upstream {name:?}: {field} must be a non-negative number"));
                }
            }
            for (field, v) in [("timeout", u.timeout), ("connect_timeout", u.connect_timeout)] {
                if !(v > 0.0 && v.is_finite()) {
                    return bad(format!("upstream {name:?}: {field} must be a positive number of seconds"));
                }
            }
        }
        for (name, r) in &self.routes {
            match (&r.upstream, r.policy) {
                (None, Policy::Upstream | Policy::Cascade) => return bad(format!("route {name:?}: policy {:?} needs an upstream", r.policy)),
                (Some(u), _) if !self.upstreams.contains_key(u) => return bad(format!("route {name:?}: no upstream named {u:?}")),
                _ => {}
            }
            if r.decide_tokens == 0 {
                return bad(format!("route {name:?}: decide_tokens must be at least 1"));
            }
            let e = &r.escalate;
            if e.min_agreement.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
                return bad(format!("route {name:?}: min_agreement is a share between 0 and 1"));
            }
            if !(1..=MAX_SAMPLES).contains(&e.samples) {
                return bad(format!("route {name:?}: samples must be 1 to {MAX_SAMPLES}"));
            }
            if !sample_temperature_ok(e.sample_temperature) {
                return bad(format!("route {name:?}: sample_temperature must be above 0 and at most 2"));
            }
            for p in &r.escalate.patterns {
                if let Err(e) = fancy_regex::Regex::new(p) {
                    return bad(format!("route {name:?}: pattern {p:?}: {e}"));
                }
            }
        }
        for (id, k) in &self.keys {
            if k.budget_per_day.is_some_and(|b| !(b >= 0.0 && b.is_finite())) {
                return bad(format!("key {id:?}: budget_per_day must be a non-negative number"));
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    pub fn urls(&self) -> Vec<&str> {
        self.url.iter().map(String::as_str).chain(self.replicas.iter().map(String::as_str)).collect()
    }

    /// Dollars for this many tokens.
    pub fn cost(&self, prompt_tokens: usize, completion_tokens: usize) -> f64 {
        (prompt_tokens as f64 * self.price_input + completion_tokens as f64 * self.price_output) / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RouteFile, ConfigError> {
        RouteFile::parse(s, "t")
    }

    #[test]
    fn a_full_file_reads_with_defaults() {
        let f = parse(
            r#"
            local_cost_per_hour = 0.05
            [upstreams.big]
            url = "http://127.0.0.1:8000/v1"
            model = "qwen2.5-coder:1.5b"
            api_key_env = "BIG_KEY"
            price_input = 0.5
            price_output = 1.5
            [routes.assistant]
            policy = "cascade"
            local = "qwen2.5-coder:0.5b"
            upstream = "big"
            [routes.assistant.escalate]
            min_mean_logprob = -0.8
            patterns = ["(?i)prove"]
            [keys.team-a]
            key_env = "TEAM_A_KEY"
            budget_per_day = 2.0
            over_budget = "local"
            "#,
        )
        .unwrap();
        let u = &f.upstreams["big"];
        assert_eq!((u.retries, u.timeout, u.urls()), (2, 120.0, vec!["http://127.0.0.1:8000/v1"]));
        assert!((u.cost(1_000_000, 2_000_000) - 3.5).abs() < 1e-12);
        let r = &f.routes["assistant"];
        assert_eq!((r.policy, r.stream, r.decide_tokens, r.escalate.on_parse_failure), (Policy::Cascade, StreamMode::Decide, 16, true));
        assert_eq!(f.keys["team-a"].over_budget, OverBudget::Local);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[routes.a]\npolicy = \"cascade\"\nlocal = \"m\"", "needs an upstream"),
            ("[routes.a]\npolicy = \"upstream\"\nlocal = \"m\"\nupstream = \"x\"", "no upstream named"),
            ("[upstreams.x]\nmodel = \"m\"", "either url or replicas"),
            ("[upstreams.x]\nurl = \"ftp://h\"\nmodel = \"m\"", "not an http"),
            ("[upstreams.x]\nurl = \"http://h/v1\"\nmodel = \"m\"\ntimeout = 0", "positive number"),
            ("[routes.a]\npolicy = \"local\"\nlocal = \"m\"\n[routes.a.escalate]\npatterns = [\"(\"]", "pattern"),
            ("[routes.a]\npolicy = \"sometimes\"\nlocal = \"m\"", "unknown variant"),
            ("[routes.a]\npolicy = \"local\"\nlocal = \"m\"\nlocale = \"x\"", "unknown field"),
            ("[routes.a]\npolicy = \"local\"\nlocal = \"m\"\n[routes.a.escalate]\nmin_agreement = 1.5", "min_agreement"),
            ("[routes.a]\npolicy = \"local\"\nlocal = \"m\"\n[routes.a.escalate]\nmin_agreement = 0.5\nsamples = 0", "samples must be"),
            ("[routes.a]\npolicy = \"local\"\nlocal = \"m\"\n[routes.a.escalate]\nsample_temperature = 0", "sample_temperature"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
