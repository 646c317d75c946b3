//! The model: an architecture [`Config`] read from GGUF metadata, its weights bound in place
//! from the mapped file, per-sequence [`KvCache`]s, and ONE configured decoder block whose
//! [`Model::forward`] runs a flattened [`Batch`] of tokens from many sequences.
//!
//! ```no_run
//! use model::{Batch, KvCache, Model, Scratch};
//! let m = Model::open("smollm2-135m.gguf")?;
//! let pool = kernels::pool::Pool::new(2);
//! let mut cache = KvCache::new(&m.config, 512);
//! let mut batch = Batch::default();
//! for (i, t) in [1u32, 2, 3].iter().enumerate() {
//!     batch.push(*t, 0, i == 2);
//! }
//! let mut scratch = Scratch::default();
//! let logits = m.forward(&pool, &batch, &mut [&mut cache], &mut scratch)?; // [1, n_vocab]
//! # Ok::<(), model::ModelError>(())
//! ```

mod block;
pub mod config;
mod kv_cache;
pub mod lora;
pub mod tiny;
pub mod train;
mod weights;

pub use block::{ActivationStats, Batch, Scratch};
pub use config::{Arch, Config};
pub use kv_cache::{CacheType, CacheTypes, KvCache, DEFAULT_PASS};
pub use lora::{Adapter, Adapters, LoraError};
pub use weights::{GateUpProj, Mat, QkvProj, Weights};

use gguf::Gguf;
use kernels::dot::Isa;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("architecture {0:?} is not supported (llama, qwen2, qwen3, gemma3, phi3 and granite are)")]
    UnsupportedArch(String),
    #[error("tensor {0} is missing")]
    MissingTensor(String),
    #[error("tensor {name} has shape {got:?}, expected {want:?}")]
    BadShape { name: String, got: Vec<u64>, want: Vec<u64> },
    #[error("bad model configuration: {0}")]
    BadConfig(String),
    #[error("bad batch: {0}")]
    BadBatch(String),
    #[error("the context is full ({capacity} tokens)")]
    ContextFull { capacity: usize },
    #[error("unsupported cache type: {0}")]
    CacheType(String),
}

/// A loaded model: the mapped file, its config and bound weights.
pub struct Model {
    pub file: Gguf,
    pub config: Config,
    pub weights: Weights,
    isa: Isa,
}

impl Model {
    pub fn open(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        Self::from_gguf(Gguf::open(path)?)
    }

    pub fn from_gguf(file: Gguf) -> Result<Model, ModelError> {
        let wrap = |e: ModelError| match e {
            ModelError::Gguf(g) => ModelError::Gguf(g),
            other => ModelError::BadConfig(format!("{}: {other}", file.path().display())),
        };
        let config = Config::from_gguf(&file).map_err(wrap)?;
        let weights = Weights::bind(&file, &config).map_err(wrap)?;
        Ok(Model { file, config, weights, isa: Isa::detect_cached() })
    }

    /// Number of parameters (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.n_elements()).sum()
    }
}
