//! A model ready to serve: weights, tokenizer and chat template loaded from one GGUF file,
//! and model names resolved to files.

use crate::template::{ChatMessage, ChatTemplate};
use crate::EngineError;
use model::Model;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

/// The short names of the catalog, the file each resolves to in the models directory, and
/// that file's sha256.
pub const CATALOG: &[(&str, &str, &str)] = &[
    ("smollm2:135m", "smollm2-135m.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    ("gemma3:270m", "gemma3-270m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
    ("qwen2.5-coder:0.5b", "qwen2.5-coder-0.5b.gguf", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
];

pub use model::models_dir;

/// Resolve a model name: a path to an existing file, or a catalog short name (a `:latest`
/// tag and a missing tag resolve as Ollama does). Names are checked before any file system
/// access: a short name never contains a path separator or `..`.
pub fn resolve_model(name: &str) -> Result<PathBuf, EngineError> {
    let as_path = Path::new(name);
    if looks_like_path(name) {
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
    let entry = CATALOG.iter().find(|(n, _, _)| *n == key || n.split(':').next() == Some(key));
    match entry {
        Some((short, file, _)) => {
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
            let known: Vec<&str> = CATALOG.iter().map(|(n, _, _)| *n).collect();
            Err(EngineError::ModelNotFound(format!("model '{name}' not found (known: {})", known.join(", "))))
        }
    }
}

/// Whether a model name is a file path rather than a short name.
pub fn looks_like_path(name: &str) -> bool {
    name.ends_with(".gguf") || name.contains('/') || name.contains(std::path::MAIN_SEPARATOR)
}

/// Resolve a name as a server does: like [`resolve_model`], but a path must lie inside the
/// models directory (after resolving `..` and links), so a request cannot make the server
/// open arbitrary files.
pub fn resolve_served_model(name: &str) -> Result<PathBuf, EngineError> {
    let not_found = || EngineError::ModelNotFound(format!("model '{name}' not found"));
    if !looks_like_path(name) {
        return resolve_model(name);
    }
    let dir = models_dir().canonicalize().map_err(|_| not_found())?;
    let path = Path::new(name);
    let full = if path.is_absolute() { path.to_path_buf() } else { dir.join(path) };
    match full.canonicalize() {
        Ok(p) if p.starts_with(&dir) && p.is_file() => Ok(p),
        _ => Err(not_found()),
    }
}

/// The name a model is known by once loaded: the catalog short name with its tag
/// (`smollm2` and `smollm2:latest` are `smollm2:135m`), or the path as given.
pub fn canonical_name(name: &str) -> String {
    let key = name.strip_suffix(":latest").unwrap_or(name);
    CATALOG
        .iter()
        .find(|(n, _, _)| *n == key || n.split(':').next() == Some(key))
        .map_or_else(|| name.to_string(), |(n, _, _)| n.to_string())
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
        Self::load_path(name, resolve_model(name)?)
    }

    /// Load the file `path`, known as `name`.
    pub fn load_path(name: &str, path: PathBuf) -> Result<LoadedModel, EngineError> {
        let start = Instant::now();
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

impl LoadedModel {
    /// Token ids of a conversation rendered through the chat template (with the generation
    /// prompt), or of the contents joined by newlines for a model without one.
    pub fn chat_prompt(&self, messages: &[ChatMessage], tools: Option<&serde_json::Value>) -> Result<Vec<u32>, EngineError> {
        match &self.template {
            Some(t) => {
                let text = t.render(messages, true, tools)?;
                Ok(self.tokenize_templated(&text))
            }
            None => {
                let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                Ok(self.tokenizer.encode(&text.join("\n"), true, true))
            }
        }
    }

    /// Token ids of text that already went through a template: BOS is added unless the
    /// text starts with it (a template that writes BOS must not get a second one).
    pub fn tokenize_templated(&self, text: &str) -> Vec<u32> {
        let tok = &self.tokenizer;
        let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
        let add_bos = bos_text.is_empty() || !text.starts_with(bos_text);
        tok.encode(text, add_bos, true)
    }

    /// Bytes of the KV cache per token of context (all layers, K and V, f16).
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.model.config;
        c.n_layer * (c.kv_dim() + c.v_dim()) * 2
    }
}
