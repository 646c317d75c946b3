//! A model ready to serve: weights, tokenizer and chat template loaded from one GGUF file,
//! and model names resolved to files.

use crate::template::{ChatMessage, ChatTemplate};
use crate::EngineError;
use model::Model;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

pub use model::models_dir;

/// Resolve a model name to its GGUF file: a path to an existing file, or a name in the
/// store (`smollm2`, `smollm2:latest` and `smollm2:135m` all mean the catalog model).
pub fn resolve_model(name: &str) -> Result<PathBuf, EngineError> {
    resolve(name).map(|(path, _)| path)
}

/// Like [`resolve_model`], with the store's record of the model (its Modelfile settings)
/// when the name is not a path.
pub fn resolve(name: &str) -> Result<(PathBuf, Option<store::Resolved>), EngineError> {
    if looks_like_path(name) {
        let as_path = Path::new(name);
        return if as_path.is_file() {
            Ok((as_path.to_path_buf(), None))
        } else {
            Err(EngineError::ModelNotFound(format!("model file {name} does not exist")))
        };
    }
    let r = store::Store::open_default().resolve(name)?;
    Ok((r.model.clone(), Some(r)))
}

pub use store::looks_like_path;

/// Resolve a name as a server does: like [`resolve`], but a path must lie inside the
/// models directory (after resolving `..` and links), so a request cannot make the server
/// open arbitrary files.
pub fn resolve_served_model(name: &str) -> Result<(PathBuf, Option<store::Resolved>), EngineError> {
    let not_found = || EngineError::ModelNotFound(format!("model '{name}' not found"));
    if !looks_like_path(name) {
        return resolve(name);
    }
    let dir = models_dir().canonicalize().map_err(|_| not_found())?;
    let path = Path::new(name);
    let full = if path.is_absolute() { path.to_path_buf() } else { dir.join(path) };
    match full.canonicalize() {
        Ok(p) if p.starts_with(&dir) && p.is_file() => Ok((p, None)),
        _ => Err(not_found()),
    }
}

/// The name a model is known by once loaded: its name in the store with the tag
/// (`smollm2` and `smollm2:latest` are `smollm2:135m` when that is what the store has),
/// or the name as given.
pub fn canonical_name(name: &str) -> String {
    if looks_like_path(name) {
        return name.to_string();
    }
    match store::Store::open_default().locate(name) {
        Some(n) => n.to_string(),
        None => match store::catalog::lookup(name) {
            Some(e) => e.name.to_string(),
            None => store::ModelName::parse(name).map_or_else(|_| name.to_string(), |n| n.to_string()),
        },
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
    /// What the store records of the model (Modelfile settings); `None` for a path.
    pub stored: Option<store::Resolved>,
    pub load_duration: Duration,
    /// The vocabulary index for constrained decoding, built on first use.
    guidance: std::sync::OnceLock<Result<crate::constraint::Guidance, String>>,
}

impl LoadedModel {
    pub fn load(name: &str) -> Result<LoadedModel, EngineError> {
        let (path, stored) = resolve(name)?;
        let mut lm = Self::load_path(&canonical_name(name), path)?;
        lm.apply_stored(stored)?;
        Ok(lm)
    }

    /// Take the store's record of the model: a Modelfile TEMPLATE written as a Jinja chat
    /// template (`{% … %}`) replaces the GGUF's; one in Ollama's Go syntax is kept in
    /// `stored` for /api/generate to render.
    pub fn apply_stored(&mut self, stored: Option<store::Resolved>) -> Result<(), EngineError> {
        if let Some(t) = stored.as_ref().and_then(|r| r.template.as_deref()).filter(|t| t.contains("{%")) {
            let tok = &self.tokenizer;
            let piece = |id: Option<u32>| id.map(|i| String::from_utf8_lossy(&tok.token_to_piece(i, true)).into_owned()).unwrap_or_default();
            self.template = Some(ChatTemplate::new(t, &piece(tok.bos()), &piece(tok.eos()))?);
        }
        self.stored = stored;
        Ok(())
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
        Ok(LoadedModel { name: name.to_string(), path, model, tokenizer, template, stored: None, load_duration: start.elapsed(), guidance: Default::default() })
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

    /// How this model writes tool calls (from its chat template).
    pub fn tool_format(&self) -> crate::tools::ToolFormat {
        crate::tools::ToolFormat::detect(self.template.as_ref().map(|t| t.source()))
    }

    /// Token ids of a conversation that offers `tools`: through the template when it
    /// renders them, else with the tools described in the system message.
    pub fn chat_prompt_with_tools(
        &self,
        messages: &[ChatMessage],
        specs: &[crate::tools::ToolSpec],
        tools: &serde_json::Value,
    ) -> Result<Vec<u32>, EngineError> {
        let source = self.template.as_ref().map(|t| t.source());
        if crate::tools::ToolFormat::template_renders_tools(source) {
            return self.chat_prompt(messages, Some(tools));
        }
        let describe = crate::tools::generic_system_prompt(specs);
        let mut with = messages.to_vec();
        match with.first_mut().filter(|m| m.role == "system") {
            Some(sys) => sys.content = format!("{}\n\n{describe}", sys.content),
            None => with.insert(0, ChatMessage::new("system", describe)),
        }
        self.chat_prompt(&with, None)
    }

    /// Token ids of text that already went through a template: BOS is added unless the
    /// text starts with it (a template that writes BOS must not get a second one).
    pub fn tokenize_templated(&self, text: &str) -> Vec<u32> {
        let tok = &self.tokenizer;
        let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
        let add_bos = bos_text.is_empty() || !text.starts_with(bos_text);
        tok.encode(text, add_bos, true)
    }

    /// Compile a grammar for one request against this model's vocabulary.
    pub fn constrain(&self, g: &crate::Grammar) -> Result<crate::Constraint, EngineError> {
        let guidance = self.guidance.get_or_init(|| crate::constraint::Guidance::new(self).map_err(|e| e.to_string()));
        match guidance {
            Ok(gd) => gd.compile(g),
            Err(e) => Err(EngineError::Grammar(e.clone())),
        }
    }

    /// Bytes of the KV cache per token of context (all layers, K and V, f16).
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.model.config;
        c.n_layer * (c.kv_dim() + c.v_dim()) * 2
    }
}
