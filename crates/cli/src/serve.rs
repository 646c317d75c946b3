//! `bantam serve`: the Ollama- and OpenAI-compatible server. Loopback by default; any other
//! address needs an API key or an explicit `--no-auth`. SIGINT / SIGTERM stop accepting,
//! let running requests finish within the grace period, then cancel them.

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::scheduler::Budget;
use server::models::KeepAlive;
use server::{app, AppState, ServeConfig};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; "HOST:PORT" also sets the port (like OLLAMA_HOST)
    #[arg(long, env = "BANTAM_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 11434)]
    port: u16,
    /// Bearer token every route but / and /health requires
    #[arg(long, env = "BANTAM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Serve a non-loopback address without an API key
    #[arg(long)]
    no_auth: bool,
    /// Extra allowed CORS origins, comma-separated ("*" for any, "https://x.*" prefixes)
    #[arg(long, env = "BANTAM_ORIGINS", value_delimiter = ',')]
    origins: Vec<String>,
    /// Sequences of one model decoded together
    #[arg(long, env = "BANTAM_NUM_PARALLEL", default_value_t = 8)]
    max_parallel: usize,
    /// Requests waiting per model before new ones get 503
    #[arg(long, env = "BANTAM_MAX_QUEUE", default_value_t = 64)]
    max_queue: usize,
    /// Weights files loaded at once (names over one file — adapters, Modelfile defaults —
    /// share it and count once)
    #[arg(long, env = "BANTAM_MAX_LOADED_MODELS", default_value_t = 3)]
    max_loaded_models: usize,
    /// Memory for weights and caches of all loaded models, e.g. 6GiB (default: 3/4 of RAM)
    #[arg(long)]
    max_memory: Option<String>,
    /// Context of each sequence, in tokens
    #[arg(long, env = "BANTAM_CONTEXT_LENGTH", default_value_t = 4096)]
    ctx_size: usize,
    #[command(flatten)]
    cache: crate::CacheArgs,
    /// How long a model stays loaded after its last request ("5m", "1h", "0", "-1")
    #[arg(long, env = "BANTAM_KEEP_ALIVE", default_value = "5m")]
    keep_alive: String,
    /// Tokens per step while streams are decoding (smaller: steadier streams)
    #[arg(long, default_value_t = 128)]
    step_tokens: usize,
    /// Tokens per step while only prompts are being read
    #[arg(long, default_value_t = 512)]
    prompt_step_tokens: usize,
    /// Worker threads per model (default: all cores)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Largest request body in MiB
    #[arg(long, default_value_t = 16)]
    max_body_mib: usize,
    /// Load this model at start, keep it loaded, and use it where a route names none
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Seconds running requests get to finish after SIGINT / SIGTERM
    #[arg(long, default_value_t = 10)]
    shutdown_grace: u64,
    /// Routes file: upstreams, routes (local, upstream, cascade) and API keys with budgets
    #[arg(long, env = "BANTAM_ROUTES")]
    routes: Option<std::path::PathBuf>,
    /// SQLite file where every generation request is written down (`bantam ledger` reads it)
    #[arg(long, env = "BANTAM_LEDGER")]
    ledger: Option<std::path::PathBuf>,
}

/// "6GiB", "512MiB", "2G", "1000000": bytes.
fn parse_size(s: &str) -> Result<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let n: f64 = s[..split].parse().with_context(|| format!("bad size {s:?}"))?;
    let scale = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        u => bail!("bad size unit {u:?} in {s:?}"),
    };
    Ok((n * scale) as usize)
}

fn listen_addr(a: &ServeArgs) -> Result<SocketAddr> {
    let host = a.host.trim_start_matches("http://").trim_end_matches('/');
    let with_port = if host.parse::<IpAddr>().is_ok() || !host.contains(':') { format!("{host}:{}", a.port) } else { host.to_string() };
    let with_port = if host.contains("::") && !host.starts_with('[') { format!("[{host}]:{}", a.port) } else { with_port };
    with_port.to_socket_addrs()?.next().with_context(|| format!("cannot resolve {}", a.host))
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub fn main(a: ServeArgs) -> Result<()> {
    let addr = listen_addr(&a)?;
    let router = match &a.routes {
        Some(path) => {
            let file = server::route::RouteFile::load(path)?;
            Some(server::route::Router::new(file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    let keyed = router.as_ref().is_some_and(|r| r.has_keys());
    if router.as_ref().is_some_and(|r| r.has_budgets()) && a.ledger.is_none() {
        bail!("the routes file gives keys daily budgets: pass --ledger FILE, where their spending is kept");
    }
    if !addr.ip().is_loopback() && a.api_key.is_none() && !keyed && !a.no_auth {
        bail!("refusing to serve {addr} without authentication: set --api-key (or BANTAM_API_KEY), or pass --no-auth");
    }
    if a.max_parallel == 0 || a.ctx_size < 16 {
        bail!("--max-parallel must be > 0 and --ctx-size at least 16");
    }
    let keep_alive = KeepAlive::from_value(&serde_json::Value::from(a.keep_alive.as_str())).map_err(|e| anyhow::anyhow!(e))?;
    let mut cfg = ServeConfig::default();
    cfg.limits.max_loaded = a.max_loaded_models.max(1);
    if let Some(m) = &a.max_memory {
        cfg.limits.max_memory = parse_size(m)?;
    }
    cfg.limits.default_keep_alive = keep_alive;
    cfg.limits.engine.max_parallel = a.max_parallel;
    cfg.limits.engine.max_queue = a.max_queue;
    cfg.limits.engine.n_ctx = a.ctx_size;
    cfg.limits.engine.cache = a.cache.types()?;
    cfg.limits.engine.budget = Budget { busy: a.step_tokens.max(1), idle: a.prompt_step_tokens.max(1) };
    cfg.threads = crate::threads(a.threads);
    cfg.api_key = a.api_key.clone().filter(|k| !k.is_empty());
    cfg.origins = a.origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
    cfg.max_body = a.max_body_mib.max(1) << 20;
    cfg.default_model = a.model.clone();
    let grace = Duration::from_secs(a.shutdown_grace);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let mut state = AppState::new(cfg);
        if let Some(router) = router {
            router.spawn_health_checks();
            state = state.with_router(router);
        }
        if let Some(path) = &a.ledger {
            state = state.with_ledger(server::ledger::Ledger::open(path)?);
        }
        state.spawn_reaper();
        if let Some(m) = &a.model {
            let lease = state.models.acquire(m, Some(KeepAlive::Forever)).await.map_err(|e| anyhow::anyhow!(e.message))?;
            eprintln!("loaded {} in {:.2?}", lease.name, lease.handle.model.load_duration);
        }
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!("bantam {} listening on http://{}", env!("CARGO_PKG_VERSION"), listener.local_addr()?);
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            let _ = tx.send(true);
        });
        let mut stop = rx.clone();
        let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        let mut stop = rx;
        let deadline = async move {
            let _ = stop.wait_for(|s| *s).await;
            eprintln!("shutting down: running requests have {}s to finish", grace.as_secs());
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = server => r?,
            _ = deadline => {
                eprintln!("grace period over: cancelling running requests");
                state.models.cancel_all();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if let Some(l) = &state.ledger {
            l.close();
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("6GiB").unwrap(), 6 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("6 parsecs").is_err());
    }
}
