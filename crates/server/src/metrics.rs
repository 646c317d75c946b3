//! /metrics in Prometheus' text format: requests by route and status, and per loaded model
//! the token counters, throughput, queue depth, running sequences, KV-cache use, prefix-cache
//! hits and load time.

use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// (route, status) → count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Generation requests as the ledger books them, by (model or route, served, status).
    served: Mutex<BTreeMap<(String, String, String), Served>>,
}

/// Totals of one (model or route, served, status) group.
#[derive(Debug, Default, Clone, Copy)]
struct Served {
    requests: u64,
    escalated: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost: f64,
}

/// The routes requests are counted under; anything else is "other", so a scan of random
/// paths cannot grow the label set.
const ROUTES: &[&str] = &[
    "/",
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/version",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
];

fn route_of(path: &str) -> &'static str {
    if let Some(r) = ROUTES.iter().find(|r| **r == path) {
        return r;
    }
    if path.starts_with("/v1/models/") {
        return "/v1/models/{id}";
    }
    "other"
}

impl Metrics {
    /// A generation request as it ended (the ledger's row).
    pub fn account(&self, e: &crate::ledger::Entry) {
        let key = (e.route.clone().unwrap_or_else(|| e.model.clone()), e.served.clone(), e.status.clone());
        let mut m = self.served.lock().unwrap_or_else(|p| p.into_inner());
        let t = m.entry(key).or_default();
        t.requests += 1;
        t.escalated += u64::from(e.escalated);
        t.prompt_tokens += e.prompt_tokens as u64;
        t.completion_tokens += e.completion_tokens as u64;
        t.cost += e.cost;
    }

    pub fn count(&self, route: &'static str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route, status)).or_insert(0) += 1;
    }
}

/// Middleware: count every request by route and final status.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_of(req.uri().path());
    let resp = next.run(req).await;
    state.metrics.count(route, resp.status().as_u16());
    resp
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(state: &AppState) -> String {
    let mut out = String::from("# HELP bantam_requests_total HTTP requests by route and status.\n# TYPE bantam_requests_total counter\n");
    for ((route, status), count) in state.metrics.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "bantam_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}");
    }
    type Field = fn(&Served) -> f64;
    let served: &[(&str, &str, Field)] = &[
        ("bantam_generation_requests_total", "Generation requests by model or route, how they were served, and status.", |t| t.requests as f64),
        ("bantam_escalations_total", "Requests a cascade sent upstream.", |t| t.escalated as f64),
        ("bantam_request_prompt_tokens_total", "Prompt tokens the answers reported.", |t| t.prompt_tokens as f64),
        ("bantam_request_completion_tokens_total", "Generated tokens the answers reported.", |t| t.completion_tokens as f64),
        ("bantam_cost_dollars_total", "Dollars spent: the machine's share and upstream prices.", |t| t.cost),
    ];
    let groups = state.metrics.served.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (name, help, get) in served {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for ((model, how, status), t) in &groups {
            let _ = writeln!(out, "{name}{{model=\"{}\",served=\"{how}\",status=\"{status}\"}} {}", escape(model), get(t));
        }
    }
    if let Some(r) = &state.router {
        let _ =
            writeln!(out, "# HELP bantam_upstream_replica_up Whether a replica is healthy with its breaker closed.\n# TYPE bantam_upstream_replica_up gauge");
        let states = r.replica_states();
        for (up, replicas) in &states {
            for s in replicas {
                let _ = writeln!(out, "bantam_upstream_replica_up{{upstream=\"{}\",url=\"{}\"}} {}", escape(up), escape(&s.url), u8::from(s.up));
            }
        }
        let _ = writeln!(out, "# HELP bantam_upstream_inflight Requests in flight to a replica.\n# TYPE bantam_upstream_inflight gauge");
        for (up, replicas) in &states {
            for s in replicas {
                let _ = writeln!(out, "bantam_upstream_inflight{{upstream=\"{}\",url=\"{}\"}} {}", escape(up), escape(&s.url), s.inflight);
            }
        }
    }
    let models = state.models.snapshot();
    let _ = writeln!(out, "# HELP bantam_models_loaded Models loaded.\n# TYPE bantam_models_loaded gauge\nbantam_models_loaded {}", models.len());
    type Get = fn(&engine::EngineHandle) -> f64;
    let per_model: &[(&str, &str, &str, Get)] = &[
        ("bantam_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", |h| h.stats.prompt_tokens.load(Ordering::Relaxed) as f64),
        ("bantam_generated_tokens_total", "counter", "Tokens generated.", |h| h.stats.generated_tokens.load(Ordering::Relaxed) as f64),
        ("bantam_prefix_cache_hits_total", "counter", "Requests that reused a cached prompt prefix.", |h| h.stats.prefix_hits.load(Ordering::Relaxed) as f64),
        ("bantam_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.", |h| {
            h.stats.prefix_hit_tokens.load(Ordering::Relaxed) as f64
        }),
        ("bantam_prefix_cache_hit_ratio", "gauge", "Share of prompt tokens served from the prefix cache.", |h| {
            let p = h.stats.prompt_tokens.load(Ordering::Relaxed);
            if p == 0 {
                0.0
            } else {
                h.stats.prefix_hit_tokens.load(Ordering::Relaxed) as f64 / p as f64
            }
        }),
        ("bantam_tokens_per_second", "gauge", "Tokens (prompt and generated) computed per second of forward steps.", |h| {
            let busy = h.stats.busy_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let done = (h.stats.generated_tokens.load(Ordering::Relaxed) + h.stats.prompt_tokens.load(Ordering::Relaxed)
                - h.stats.prefix_hit_tokens.load(Ordering::Relaxed)) as f64;
            if busy == 0.0 {
                0.0
            } else {
                done / busy
            }
        }),
        ("bantam_steps_total", "counter", "Forward steps run.", |h| h.stats.steps.load(Ordering::Relaxed) as f64),
        ("bantam_queue_depth", "gauge", "Requests waiting for a slot.", |h| h.stats.queued.load(Ordering::Relaxed) as f64),
        ("bantam_running_sequences", "gauge", "Sequences holding a slot.", |h| h.stats.running.load(Ordering::Relaxed) as f64),
        ("bantam_kv_cache_tokens", "gauge", "Tokens held in the slot caches.", |h| h.stats.kv_tokens.load(Ordering::Relaxed) as f64),
        ("bantam_kv_cache_capacity_tokens", "gauge", "Tokens the slot caches can hold.", |h| (h.options.max_parallel * h.options.n_ctx) as f64),
        ("bantam_kv_cache_usage_ratio", "gauge", "Share of the slot caches in use.", |h| {
            h.stats.kv_tokens.load(Ordering::Relaxed) as f64 / (h.options.max_parallel * h.options.n_ctx).max(1) as f64
        }),
        ("bantam_model_load_seconds", "gauge", "Time taken to load the model.", |h| h.model.load_duration.as_secs_f64()),
        ("bantam_model_memory_bytes", "gauge", "Weights plus slot caches, at most.", |h| h.memory_bytes() as f64),
    ];
    for (name, kind, help, get) in per_model {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (model, h, ..) in &models {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(model), get(h));
        }
    }
    out
}
