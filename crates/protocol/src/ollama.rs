//! Ollama's API (github.com/ollama/ollama, `api/types.go` and `docs/api.md`).

use crate::OneOrMany;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `options` of a request: the model parameters a request may override.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Options {
    pub num_ctx: Option<i64>,
    /// -1: until the context is full (Ollama's "infinite"); -2: fill the context.
    pub num_predict: Option<i64>,
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<OneOrMany<String>>,
    pub num_thread: Option<i64>,
    pub num_keep: Option<i64>,
}

/// POST /api/generate
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerateRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub suffix: Option<String>,
    pub system: Option<String>,
    pub template: Option<String>,
    /// Token ids of an earlier exchange to continue (deprecated in Ollama, still honoured).
    pub context: Option<Vec<u32>>,
    #[serde(default)]
    pub raw: bool,
    pub stream: Option<bool>,
    pub keep_alive: Option<Value>,
    pub format: Option<Value>,
    pub options: Option<Options>,
    pub images: Option<Vec<String>>,
    pub truncate: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// The model's reasoning (thinking models, with `think`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
}

/// POST /api/chat
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    pub tools: Option<Value>,
    pub stream: Option<bool>,
    pub keep_alive: Option<Value>,
    pub format: Option<Value>,
    pub options: Option<Options>,
    pub truncate: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    /// `true`/`false`, or a level (`"low"`, `"medium"`, `"high"`) for templates that take one.
    pub think: Option<Value>,
}

/// One generated token's log-probability (Ollama's `logprobs` entries).
#[derive(Debug, Clone, Serialize)]
pub struct Logprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// The timing fields of a final response, in nanoseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: u64,
    pub eval_count: usize,
    pub eval_duration: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerateResponse {
    pub model: String,
    pub created_at: String,
    pub response: String,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<u32>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatResponse {
    pub model: String,
    pub created_at: String,
    pub message: Message,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
}

/// POST /api/embed
#[derive(Debug, Clone, Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    pub model: String,
    pub input: Option<OneOrMany<String>>,
    pub truncate: Option<bool>,
    pub keep_alive: Option<Value>,
    pub options: Option<Options>,
    pub dimensions: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
}

/// POST /api/embeddings (the older, single-prompt form)
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub keep_alive: Option<Value>,
    pub options: Option<Options>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingsResponse {
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelDetails {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

/// An entry of GET /api/tags.
#[derive(Debug, Clone, Serialize)]
pub struct ListModel {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListResponse {
    pub models: Vec<ListModel>,
}

/// An entry of GET /api/ps.
#[derive(Debug, Clone, Serialize)]
pub struct RunningModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
    pub expires_at: String,
    pub size_vram: u64,
    pub context_length: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessResponse {
    pub models: Vec<RunningModel>,
}

/// POST /api/show (`name` is the older spelling of `model`).
#[derive(Debug, Clone, Deserialize)]
pub struct ShowRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShowResponse {
    pub license: String,
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system: String,
    pub details: ModelDetails,
    pub model_info: serde_json::Map<String, Value>,
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// POST /api/pull
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PullRequest {
    #[serde(default)]
    pub model: String,
    /// The older spelling of `model`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub insecure: bool,
    pub stream: Option<bool>,
}

/// A status line of /api/pull and /api/create.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProgressResponse {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

/// DELETE /api/delete
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeleteRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub name: String,
}

/// POST /api/copy
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CopyRequest {
    pub source: String,
    pub destination: String,
}

/// POST /api/create: the fields of a Modelfile as JSON, or (older clients) the Modelfile
/// text itself.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub name: String,
    pub from: Option<String>,
    /// Blobs by file name: `{"model.gguf": "sha256:…"}`.
    pub files: Option<std::collections::BTreeMap<String, String>>,
    pub adapters: Option<std::collections::BTreeMap<String, String>>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Option<OneOrMany<String>>,
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub messages: Option<Vec<Message>>,
    pub modelfile: Option<String>,
    pub quantize: Option<String>,
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionResponse {
    pub version: String,
}

/// Every Ollama error: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorResponse {
    pub error: String,
}
