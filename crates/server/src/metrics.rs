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
