//! A model ready to serve: weights, tokenizer and chat template loaded from one GGUF file,
//! and model names resolved to files.

use crate::template::ChatTemplate;
use crate::EngineError;
use model::Model;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

/// The short names of the catalog and the file each resolves to in the models directory.
pub const CATALOG: &[(&str, &str)] = &[
    ("smollm2:135m", "smollm2-135m.gguf"),
    ("gemma3:270m", "gemma3-270m.gguf"),
    ("qwen2.5-coder:0.5b", "qwen2.5-coder-0.5b.gguf"),
];

pub use model::models_dir;

/// Resolve a model name: a path to an existing file, or a catalog short name (a `:latest`
/// tag and a missing tag resolve as Ollama does). Names are checked before any file system
/// access: a short name never contains a path separator or `..`.
pub fn resolve_model(name: &str) -> Result<PathBuf, EngineError> {
    let as_path = Path::new(name);
    let looks_like_path = name.ends_with(".gguf") || name.contains('/') || name.contains(std::path::MAIN_SEPARATOR);
    if looks_like_path {
        return if as_path.is_file() {
            Ok(as_path.to_path_buf())
        } else {
            Err(EngineError::ModelNotFound(format!("model file {name} does not exist")))
        };
    }
    if name.is_empty() || name.contains("..") || name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(EngineError::ModelNotFound(format!("{name:?} is not a valid model name")));
    }
    let key = name.strip_suffix(":latest").unwrap_or(name);
    let entry = CATALOG.iter().find(|(n, _)| *n == key || n.split(':').next() == Some(key));
    match entry {
        Some((short, file)) => {
            let p = models_dir().join(file);
            if p.is_file() {
                Ok(p)
            } else {
                Err(EngineError::ModelNotFound(format!(
                    "model '{short}' is not in {}; fetch it with scripts/fetch-models.sh",
                    models_dir().display()
                )))
            }
        }
        None => {
            let known: Vec<&str> = CATALOG.iter().map(|(n, _)| *n).collect();
            Err(EngineError::ModelNotFound(format!("model '{name}' not found (known: {})", known.join(", "))))
        }
    }
}

/// Model, tokenizer and chat template of one file.
pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template`, compiled; `None` for base models.
    pub template: Option<ChatTemplate>,
    pub load_duration: Duration,
}

impl LoadedModel {
    pub fn load(name: &str) -> Result<LoadedModel, EngineError> {
        let start = Instant::now();
        let path = resolve_model(name)?;
        let model = Model::open(&path)?;
        let tokenizer = Tokenizer::from_gguf(&model.file)?;
        let piece = |id: Option<u32>| id.map(|i| String::from_utf8_lossy(&tokenizer.token_to_piece(i, true)).into_owned()).unwrap_or_default();
        let template = match model.file.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(ChatTemplate::new(src, &piece(tokenizer.bos()), &piece(tokenizer.eos()))?),
            None => None,
        };
        Ok(LoadedModel { name: name.to_string(), path, model, tokenizer, template, load_duration: start.elapsed() })
    }
}
