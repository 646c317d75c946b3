//! Ollama's API (github.com/ollama/ollama, `api/types.go` and `docs/api.md`).

use crate::{OneOrMany, Tool};
use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::time::Duration;

/// `keep_alive`: how long a model stays loaded after a request. Ollama takes a duration
/// string ("5m", "1h30m", "300ms", "0"), a number of seconds, or a negative value for
/// "forever".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    pub fn from_value(v: &Value) -> Result<KeepAlive, String> {
        let bad = || format!("invalid keep_alive {v}: use a duration like \"5m\", seconds, or -1");
        match v {
            Value::Number(n) => Ok(KeepAlive::from_secs(n.as_f64().ok_or_else(bad)?)),
            Value::String(s) => KeepAlive::parse(s.trim()).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn from_secs(secs: f64) -> KeepAlive {
        if secs < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs.min(1e9)))
        }
    }

    /// Go's time.ParseDuration subset Ollama accepts: "300ms", "1.5h", "2h45m", "-1m", or a
    /// bare number of seconds.
    pub fn parse(s: &str) -> Option<KeepAlive> {
        if let Ok(secs) = s.parse::<f64>() {
            return Some(KeepAlive::from_secs(secs));
        }
        let (neg, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest.is_empty() {
            return None;
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            let n: f64 = rest[..num_end].parse().ok()?;
            rest = &rest[num_end..];
            let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            total += n * scale;
            rest = &rest[unit_end..];
        }
        Some(if neg { KeepAlive::Forever } else { KeepAlive::from_secs(total) })
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        KeepAlive::from_value(&Value::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// `format`: `"json"` (any JSON value) or a JSON schema. `""` means none.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    None,
    Json,
    Schema(Value),
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Format::None),
            Value::String(s) if s.is_empty() => Ok(Format::None),
            Value::String(s) if s == "json" => Ok(Format::Json),
            v @ Value::Object(_) => Ok(Format::Schema(v)),
            other => Err(de::Error::custom(format!("invalid format {other}: expected \"json\" or a JSON schema object"))),
        }
    }
}

/// `think`: on or off, or a reasoning level for templates that take one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    On,
    Off,
    Low,
    Medium,
    High,
}

impl<'de> Deserialize<'de> for Think {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Bool(true) => Ok(Think::On),
            Value::Bool(false) => Ok(Think::Off),
            Value::String(s) if s == "low" => Ok(Think::Low),
            Value::String(s) if s == "medium" => Ok(Think::Medium),
            Value::String(s) if s == "high" => Ok(Think::High),
            _ => Err(de::Error::custom(format!("invalid think value {v}: expected true, false, \"low\", \"medium\" or \"high\""))),
        }
    }
}

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
    pub keep_alive: Option<KeepAlive>,
    pub format: Option<Format>,
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
    pub tools: Option<Vec<Tool>>,
    pub stream: Option<bool>,
    pub keep_alive: Option<KeepAlive>,
    pub format: Option<Format>,
    pub options: Option<Options>,
    pub truncate: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    /// `true`/`false`, or a level (`"low"`, `"medium"`, `"high"`) for templates that take one.
    pub think: Option<Think>,
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
    /// How a routed request was served (on the last line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantam: Option<crate::Routed>,
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
    /// How a routed request was served (on the last line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantam: Option<crate::Routed>,
}

/// POST /api/embed
#[derive(Debug, Clone, Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    pub model: String,
    pub input: Option<OneOrMany<String>>,
    pub truncate: Option<bool>,
    pub keep_alive: Option<KeepAlive>,
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
    pub keep_alive: Option<KeepAlive>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keep_alive_forms() {
        let p = |v: Value| KeepAlive::from_value(&v);
        assert_eq!(p(serde_json::json!("5m")), Ok(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(p(serde_json::json!("1h30m")), Ok(KeepAlive::For(Duration::from_secs(5400))));
        assert_eq!(p(serde_json::json!("250ms")), Ok(KeepAlive::For(Duration::from_millis(250))));
        assert_eq!(p(serde_json::json!(0)), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(p(serde_json::json!("0")), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(p(serde_json::json!(-1)), Ok(KeepAlive::Forever));
        assert_eq!(p(serde_json::json!("-1m")), Ok(KeepAlive::Forever));
        assert_eq!(p(serde_json::json!(30)), Ok(KeepAlive::For(Duration::from_secs(30))));
        assert!(p(serde_json::json!("5 minutes")).is_err());
        assert!(p(serde_json::json!("m")).is_err());
        assert!(p(serde_json::json!([1])).is_err());
    }

    #[test]
    fn format_and_think_forms() {
        let req = |body: &str| serde_json::from_str::<ChatRequest>(body);
        let r = req(r#"{"model": "m", "format": "json", "think": "high", "keep_alive": "1m"}"#).unwrap();
        assert_eq!((r.format, r.think, r.keep_alive), (Some(Format::Json), Some(Think::High), Some(KeepAlive::For(Duration::from_secs(60)))));
        let r = req(r#"{"model": "m", "format": {"type": "object"}, "think": false}"#).unwrap();
        assert_eq!((r.format, r.think), (Some(Format::Schema(serde_json::json!({"type": "object"}))), Some(Think::Off)));
        let r = req(r#"{"model": "m", "format": "", "think": null, "keep_alive": null}"#).unwrap();
        assert_eq!((r.format, r.think, r.keep_alive), (Some(Format::None), None, None));
        for bad in [r#"{"format": "xml"}"#, r#"{"format": 3}"#, r#"{"think": "max"}"#, r#"{"think": 1}"#, r#"{"keep_alive": "soon"}"#] {
            let e = req(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid "), "{bad}: {e}");
        }
        let r = req(r#"{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}]}"#).unwrap();
        let t = &r.tools.unwrap()[0];
        assert_eq!((t.kind.as_str(), t.function.name.as_str()), ("function", "f"));
        // Fields bantam does not read are kept for the chat template.
        assert_eq!(serde_json::to_value(t).unwrap()["function"]["strict"], true);
    }
}
