//! A model ready to serve: weights, tokenizer and chat template loaded from one GGUF file,
//! with the [`Defaults`] its Modelfile gives. Where model files come from (names, the
//! store, pulls) is decided above the engine.

use crate::options::Defaults;
use crate::template::{ChatMessage, ChatTemplate};
use crate::EngineError;
use model::Model;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokenizer::Tokenizer;

/// Model, tokenizer and chat template of one file.
pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// `tokenizer.chat_template`, compiled; `None` for base models.
    pub template: Option<ChatTemplate>,
    /// The Modelfile's settings (empty for a bare file).
    pub defaults: Defaults,
    /// The adapters of `defaults`, loaded and checked against the model: every request for
    /// this model runs with them (`Request::adapters`).
    pub adapters: Option<std::sync::Arc<model::Adapters>>,
    pub load_duration: Duration,
    /// The vocabulary index for constrained decoding, built on first use.
    guidance: std::sync::OnceLock<Result<crate::constraint::Guidance, String>>,
}

impl LoadedModel {
    /// Load the file `path`, known as `name`, with its Modelfile's `defaults`. A TEMPLATE
    /// written as a Jinja chat template (`{% … %}`) replaces the GGUF's; one in Ollama's Go
    /// syntax is kept in `defaults` for `/api/generate` to render.
    pub fn load(name: &str, path: PathBuf, defaults: Defaults) -> Result<LoadedModel, EngineError> {
        let start = Instant::now();
        // A token embedding that is not also the output projection is read a row per token:
        // it stays mapped, resident only where read.
        let sparse = |g: &gguf::Gguf| match g.tensor("output.weight") {
            Some(_) => vec!["token_embd.weight".to_string()],
            None => Vec::new(),
        };
        let model = Model::from_gguf(gguf::Gguf::open_resident(&path, sparse).map_err(model::ModelError::from)?)?;
        let tokenizer = Tokenizer::from_gguf(&model.file)?;
        let piece = |id: Option<u32>| id.map(|i| String::from_utf8_lossy(&tokenizer.token_to_piece(i, true)).into_owned()).unwrap_or_default();
        let jinja = defaults.template.as_deref().filter(|t| t.contains("{%"));
        let template = match jinja.or_else(|| model.file.get("tokenizer.chat_template").and_then(|v| v.as_str())) {
            Some(src) => Some(ChatTemplate::new(src, &piece(tokenizer.bos()), &piece(tokenizer.eos()))?),
            None => None,
        };
        let adapters = if defaults.adapters.is_empty() {
            None
        } else {
            let mut set = Vec::new();
            for (p, scale) in &defaults.adapters {
                set.push((std::sync::Arc::new(model::Adapter::load(p, &model)?), *scale));
            }
            Some(std::sync::Arc::new(model::Adapters(set)))
        };
        Ok(LoadedModel {
            name: name.to_string(),
            path,
            model,
            tokenizer,
            template,
            defaults,
            adapters,
            load_duration: start.elapsed(),
            guidance: Default::default(),
        })
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

    /// Token ids of a conversation whose last message, the assistant's, is begun and left
    /// open for the model to continue (as transformers' `continue_final_message`): the
    /// template renders the turn whole, and the text is cut where its content ends. `None`
    /// for a model without a chat template.
    pub fn continue_prompt(&self, messages: &[ChatMessage]) -> Result<Option<Vec<u32>>, EngineError> {
        const MARK: &str = "\u{1}bantam-continues-here\u{1}";
        let Some(t) = &self.template else { return Ok(None) };
        let mut with = messages.to_vec();
        match with.last_mut() {
            Some(last) if last.role == "assistant" => last.content.push_str(MARK),
            _ => return self.chat_prompt(messages, None).map(Some),
        }
        let text = t.render(&with, false, None)?;
        match text.find(MARK) {
            Some(at) => Ok(Some(self.tokenize_templated(&text[..at]))),
            None => Err(crate::template::TemplateError::Render("the chat template drops the last assistant message".into()).into()),
        }
    }

    /// Token ids of a conversation rendered with thinking controls, and whether the answer
    /// starts inside a `<think>` block the template opened.
    pub fn chat_prompt_thinking(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        think: Option<crate::template::Think>,
    ) -> Result<(Vec<u32>, bool), EngineError> {
        match &self.template {
            Some(t) => {
                let text = t.render_with(messages, true, tools, &crate::template::RenderOptions { think })?;
                Ok((self.tokenize_templated(&text), crate::thinking::starts_in_thinking(&text)))
            }
            None => Ok((self.chat_prompt(messages, tools)?, false)),
        }
    }

    /// Whether the chat template makes the model think before it answers.
    pub fn thinks(&self) -> bool {
        self.template.as_ref().is_some_and(|t| t.supports_thinking())
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

    /// Bytes of one sequence's KV cache of `n_ctx` positions (all layers, K and V, stored
    /// as `types`; sliding-window layers hold rings for passes of up to `pass` tokens).
    pub fn kv_bytes(&self, types: model::CacheTypes, n_ctx: usize, pass: usize) -> usize {
        types.cache_bytes(&self.model.config, n_ctx, pass)
    }
}
