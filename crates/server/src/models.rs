//! The models a server holds loaded: each with its engine thread, kept for its keep-alive
//! after the last request, within a count and a memory budget (least recently used idle
//! model evicted first). A request for a model that is not loaded loads it.
//!
//! Names over the same weights file (a model created with a LoRA adapter, a SYSTEM prompt
//! or other defaults over a base already loaded) share the base's engine thread: their
//! requests run in the same batches, each with its own adapters, and the weights are held
//! once.

use crate::error::ApiError;
use axum::http::StatusCode;
use engine::{EngineHandle, EngineOptions, LoadedModel, SharedPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use protocol::ollama::KeepAlive;

/// Limits on what stays loaded.
#[derive(Debug, Clone)]
pub struct ModelLimits {
    pub max_loaded: usize,
    /// Bytes of weights plus slot caches all loaded models may take.
    pub max_memory: usize,
    pub default_keep_alive: KeepAlive,
    pub engine: EngineOptions,
}

/// A loaded model.
pub struct Resident {
    /// The engine of the weights file (shared by every name over that file).
    pub handle: Arc<EngineHandle>,
    /// This name's view: its defaults, template and adapters.
    pub model: Arc<LoadedModel>,
    /// `None` while requests run or for "forever".
    pub expires: Option<Instant>,
    pub keep_alive: KeepAlive,
    pub last_used: Instant,
    pub loaded_at: SystemTime,
}

/// The loaded models, by canonical name. They share one pool of worker threads.
pub struct ModelSet {
    pub limits: ModelLimits,
    pub store: store::Store,
    pool: SharedPool,
    resident: Mutex<HashMap<String, Resident>>,
    /// Serialises loads so two requests never load the same model twice.
    loading: tokio::sync::Mutex<()>,
}

/// A request's hold on a model: when dropped, the model's keep-alive starts counting.
pub struct Lease {
    pub handle: Arc<EngineHandle>,
    /// The model as this name defines it (defaults, template, adapters); the engine runs
    /// its weights.
    pub model: Arc<LoadedModel>,
    pub name: String,
    keep_alive: KeepAlive,
    set: Arc<ModelSet>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.set.release(&self.name, self.keep_alive);
    }
}

impl ModelSet {
    pub fn new(limits: ModelLimits, store: store::Store, pool: SharedPool) -> ModelSet {
        ModelSet { limits, store, pool, resident: Mutex::new(HashMap::new()), loading: tokio::sync::Mutex::new(()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resident>> {
        // A panic while holding this lock cannot leave the map half-updated (every update
        // is a single insert or remove), so a poisoned lock is still usable.
        self.resident.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model named `name`, loaded if it is not. `keep_alive` applies once the request
    /// ends.
    pub async fn acquire(self: &Arc<Self>, name: &str, keep_alive: Option<KeepAlive>) -> Result<Lease, ApiError> {
        if name.is_empty() {
            return Err(ApiError::bad_request("model is required").with_param("model"));
        }
        let keep_alive = match keep_alive {
            Some(k) => k,
            None => self.limits.default_keep_alive,
        };
        let canonical = registry::canonical_name(&self.store, name);
        if let Some((handle, model)) = self.touch(&canonical) {
            return Ok(Lease { handle, model, name: canonical, keep_alive, set: self.clone() });
        }
        let _guard = self.loading.lock().await;
        if let Some((handle, model)) = self.touch(&canonical) {
            return Ok(Lease { handle, model, name: canonical, keep_alive, set: self.clone() });
        }
        let lm = tokio::task::spawn_blocking({
            let (name, canonical, store) = (name.to_string(), canonical.clone(), self.store.clone());
            move || load(&store, &name, &canonical)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("loading failed: {e}")))??;
        let lm = Arc::new(lm);
        let shared = self.lock().values().find(|r| r.handle.model.path == lm.path).map(|r| r.handle.clone());
        let handle = match shared {
            Some(h) => {
                self.make_room(0, 0)?;
                h
            }
            None => {
                let e = &self.limits.engine;
                self.make_room(lm.model.file.file_size(), lm.kv_bytes(e.cache, e.n_ctx, e.budget.most()))?;
                Arc::new(
                    EngineHandle::spawn(lm.clone(), self.limits.engine.clone(), self.pool.clone())
                        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("engine thread: {e}")))?,
                )
            }
        };
        let now = Instant::now();
        let resident = Resident { handle: handle.clone(), model: lm.clone(), expires: None, keep_alive, last_used: now, loaded_at: SystemTime::now() };
        self.lock().insert(canonical.clone(), resident);
        Ok(Lease { handle, model: lm, name: canonical, keep_alive, set: self.clone() })
    }

    /// The engine and view of a loaded model, marked in use.
    fn touch(&self, name: &str) -> Option<(Arc<EngineHandle>, Arc<LoadedModel>)> {
        let mut map = self.lock();
        let r = map.get_mut(name)?;
        r.last_used = Instant::now();
        r.expires = None;
        Some((r.handle.clone(), r.model.clone()))
    }

    /// Evict idle models, least recently used first, until one more of `need` bytes fits.
    /// Evict idle models until one of `weights` bytes with KV caches of `kv_per_token`
    /// bytes a token fits; a model that can never fit is refused with what would fit.
    /// Room for an engine of `weights` bytes and slots of `kv_per_slot` bytes of cache each.
    fn make_room(&self, weights: usize, kv_per_slot: usize) -> Result<(), ApiError> {
        let mib = |b: usize| b / (1 << 20);
        let (slots, n_ctx, budget) = (self.limits.engine.max_parallel, self.limits.engine.n_ctx, self.limits.max_memory);
        let need = weights + slots * kv_per_slot;
        // For the advice: the cache's bytes per position on average.
        let kv_per_token = kv_per_slot.div_ceil(n_ctx.max(1));
        if need > budget {
            let fits = budget.saturating_sub(weights) / (kv_per_token * slots).max(1);
            let fits_slots = budget.saturating_sub(weights) / (kv_per_token * n_ctx).max(1);
            let advice = if fits >= 256 {
                format!("it would fit with --ctx-size {} (or --max-parallel {fits_slots})", fits / 256 * 256)
            } else {
                format!("the weights alone take {} MiB of it; raise --max-memory", mib(weights))
            };
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "model requires {} MiB (weights {} MiB and {slots} slots of {n_ctx} tokens) but the memory budget is {} MiB; {advice}",
                    mib(need),
                    mib(weights),
                    mib(budget)
                ),
            ));
        }
        let mut map = self.lock();
        loop {
            let (engines, used) = engines_and_bytes(&map);
            // A name over a weights file already loaded adds no engine (`need` is 0 then).
            if (need == 0 || engines < self.limits.max_loaded) && used + need <= self.limits.max_memory {
                return Ok(());
            }
            let victim = map.iter().filter(|(_, r)| r.handle.is_idle()).min_by_key(|(_, r)| r.last_used).map(|(n, _)| n.clone());
            match victim {
                Some(n) => {
                    map.remove(&n);
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("no room to load another model: {} loaded, {} MiB in use, all busy", engines, mib(used)),
                    )
                    .with_code("server_busy"))
                }
            }
        }
    }

    fn release(&self, name: &str, keep_alive: KeepAlive) {
        let mut map = self.lock();
        let Some(r) = map.get_mut(name) else { return };
        r.keep_alive = keep_alive;
        r.expires = match keep_alive {
            KeepAlive::Forever => None,
            KeepAlive::For(d) => Some(Instant::now() + d),
        };
        if keep_alive == KeepAlive::For(Duration::ZERO) && r.handle.is_idle() {
            map.remove(name);
        }
    }

    /// Unload models whose keep-alive has run out and that have nothing running.
    pub fn reap(&self) {
        let now = Instant::now();
        self.lock().retain(|_, r| !(r.expires.is_some_and(|t| t <= now) && r.handle.is_idle()));
    }

    /// Unload `name` now if it is loaded and idle; returns whether it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        let canonical = registry::canonical_name(&self.store, name);
        let mut map = self.lock();
        match map.get(&canonical) {
            Some(r) if r.handle.is_idle() => map.remove(&canonical).is_some(),
            Some(r) => {
                // A busy engine's requests are cancelled unless other names share it.
                let shared = map.iter().any(|(n, o)| *n != canonical && Arc::ptr_eq(&o.handle, &r.handle));
                if !shared {
                    r.handle.cancel_all();
                }
                map.remove(&canonical).is_some()
            }
            None => false,
        }
    }

    /// Snapshot of what is loaded: (name, handle, expiry as wall time or None, loaded at).
    pub fn snapshot(&self) -> Vec<(String, Arc<EngineHandle>, Option<SystemTime>, SystemTime)> {
        let now_i = Instant::now();
        let now_s = SystemTime::now();
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(n, r)| {
                let expires = match (r.expires, r.keep_alive) {
                    (Some(t), _) => Some(now_s + t.saturating_duration_since(now_i)),
                    (None, KeepAlive::For(d)) => Some(now_s + d),
                    (None, KeepAlive::Forever) => None,
                };
                (n.clone(), r.handle.clone(), expires, r.loaded_at)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn cancel_all(&self) {
        for r in self.lock().values() {
            r.handle.cancel_all();
        }
    }

    /// Whether any request is running or queued on any model.
    pub fn is_idle(&self) -> bool {
        self.lock().values().all(|r| r.handle.is_idle())
    }
}

/// The engines loaded and the bytes they take, each counted once however many names
/// share it.
fn engines_and_bytes(map: &HashMap<String, Resident>) -> (usize, usize) {
    let mut seen: Vec<&Arc<EngineHandle>> = Vec::new();
    for r in map.values() {
        if !seen.iter().any(|h| Arc::ptr_eq(h, &r.handle)) {
            seen.push(&r.handle);
        }
    }
    (seen.len(), seen.iter().map(|h| h.memory_bytes()).sum())
}

/// Load a model for the server: a catalog model not in the store yet is pulled first (its
/// progress goes to the server's log); any other name must already be in the store or be
/// a path inside the models directory.
fn load(store: &store::Store, name: &str, canonical: &str) -> Result<LoadedModel, ApiError> {
    let failed = |e: registry::RegistryError| match e {
        registry::RegistryError::NotFound(m) => ApiError::not_found(if m.contains(name) { m } else { format!("model '{name}' not found") }),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("model '{name}' could not be loaded: {other}")),
    };
    let found = match registry::find_served(store, canonical) {
        Err(registry::RegistryError::NotFound(_)) if store::catalog::lookup(name).is_some() => {
            eprintln!("pulling {name}");
            let mut last = std::time::Instant::now();
            store::pull(store, name, &store::PullOptions::default(), &mut |p| match p {
                store::Progress::Status(s) => eprintln!("pull {name}: {s}"),
                store::Progress::Bytes { part, total, completed, .. } if last.elapsed().as_secs() >= 5 || completed == total => {
                    last = std::time::Instant::now();
                    eprintln!("pull {name}: {part} {completed}/{total} bytes");
                }
                _ => {}
            })
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("pulling model '{name}' failed: {e}")))?;
            registry::find_served(store, canonical).map_err(failed)?
        }
        r => r.map_err(failed)?,
    };
    // The name a model is known by is the one it was asked for (canonical), also for paths.
    registry::Found { name: canonical.to_string(), ..found }.load().map_err(failed)
}
