//! bantam's HTTP server: Ollama's `/api/*`, OpenAI's `/v1/*` and llama-server's
//! `/tokenize`, `/detokenize`, `/health` and `/metrics`, over one engine thread per loaded
//! model. [`app`] builds the whole router from a state, so tests drive it without a socket:
//!
//! ```no_run
//! # async fn f() {
//! let state = server::AppState::new(server::ServeConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:11434").await.unwrap();
//! axum::serve(listener, server::app(state)).await.unwrap();
//! # }
//! ```

pub mod describe;
pub mod error;
pub mod generation;
pub mod gotemplate;
pub mod ledger;
mod llama;
mod manage;
pub mod metrics;
pub mod models;
pub(crate) mod ollama;
mod openai;
pub mod route;
pub mod security;
mod structured;
mod tool_calls;

use axum::Router;
use engine::scheduler::Budget;
use engine::EngineOptions;
use models::{KeepAlive, ModelLimits, ModelSet};
use std::sync::Arc;
use std::time::Duration;

/// Everything `bantam serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub limits: ModelLimits,
    /// Bearer token required on every route but the health checks; `None`: no auth.
    pub api_key: Option<String>,
    /// Extra allowed CORS origins (`*` allows any), beside the loopback ones.
    pub origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Model used by routes that name none (/tokenize, /detokenize).
    pub default_model: Option<String>,
    /// Worker threads shared by every loaded model.
    pub threads: usize,
    /// Where models are found and pulled to.
    pub store: store::Store,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            limits: ModelLimits {
                max_loaded: 3,
                max_memory: default_memory_budget(),
                default_keep_alive: KeepAlive::For(Duration::from_secs(300)),
                engine: EngineOptions { max_parallel: 8, max_queue: 64, n_ctx: 4096, budget: Budget::default(), cache: Default::default() },
            },
            api_key: None,
            origins: Vec::new(),
            max_body: 16 << 20,
            default_model: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            store: store::Store::open_default(),
        }
    }
}

/// The machine's memory, from /proc/meminfo.
pub fn system_memory_bytes() -> Option<usize> {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<usize>().ok())).map(|kb| kb * 1024)
    })
}

/// Three quarters of the machine's memory (8 GiB where unknown).
pub fn default_memory_budget() -> usize {
    system_memory_bytes().unwrap_or(8 << 30) / 4 * 3
}

/// The state every route shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    /// The model store (also `config.store`), for the routes that list, show and manage models.
    pub store: store::Store,
    pub models: Arc<ModelSet>,
    pub metrics: Arc<metrics::Metrics>,
    /// The routes file's routes, upstreams and keys (`--routes`).
    pub router: Option<Arc<route::Router>>,
    /// Where every generation request is written down (`--ledger`).
    pub ledger: Option<Arc<ledger::Ledger>>,
}

impl AppState {
    pub fn new(config: ServeConfig) -> AppState {
        let pool = engine::SharedPool::new(config.threads);
        AppState {
            models: Arc::new(ModelSet::new(config.limits.clone(), config.store.clone(), pool)),
            store: config.store.clone(),
            config: Arc::new(config),
            metrics: Arc::new(metrics::Metrics::default()),
            router: None,
            ledger: None,
        }
    }

    /// Serve these routes too (the router's pools start their health checks when served).
    pub fn with_router(mut self, router: route::Router) -> AppState {
        self.router = Some(Arc::new(router));
        self
    }

    /// Write every generation request into this ledger.
    pub fn with_ledger(mut self, ledger: ledger::Ledger) -> AppState {
        self.ledger = Some(Arc::new(ledger));
        self
    }

    /// Dollars per hour of this machine, from the routes file (0 without one).
    pub fn local_cost_per_hour(&self) -> f64 {
        self.router.as_ref().map_or(0.0, |r| r.local_cost_per_hour)
    }

    /// Unload expired models once a second, for as long as the state lives.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let models = Arc::downgrade(&self.models);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match models.upgrade() {
                    Some(m) => m.reap(),
                    None => return,
                }
            }
        })
    }
}

/// The whole server as a router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(ollama::routes())
        .merge(manage::routes())
        .merge(openai::routes())
        .merge(llama::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), security::authorize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body))
        .layer(security::cors(&state.config.origins))
        .with_state(state)
}
