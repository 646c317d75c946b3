//! OpenAI's API (platform.openai.com/docs/api-reference): chat completions, completions,
//! embeddings, models, and the error shape.

use crate::{OneOrMany, Tool};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by chat completions and completions, with the llama-server
/// extensions (`top_k`, `min_p`, `repeat_penalty`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<OneOrMany<String>>,
    /// Token id (as a string) → bias added to its logit, -100..100.
    pub logit_bias: Option<HashMap<String, f32>>,
    pub n: Option<usize>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// vLLM's structured-output extras: a JSON schema, a list of choices, a regular
    /// expression, or a grammar (Lark syntax).
    pub guided_json: Option<Value>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_regex: Option<String>,
    pub guided_grammar: Option<String>,
}

/// Message content: a string or a list of parts (only text parts are understood).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    pub name: Option<String>,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<String>,
}

/// POST /v1/chat/completions
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    #[serde(flatten)]
    pub sampling: Sampling,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub response_format: Option<ResponseFormat>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    /// `"low"`, `"medium"` or `"high"` (`"none"`, `"minimal"`: off) for thinking models.
    pub reasoning_effort: Option<String>,
    /// vLLM's extra template variables; `enable_thinking` switches a thinking model's reasoning.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    pub parallel_tool_calls: Option<bool>,
}

/// `response_format`: free text, any JSON object, or JSON matching a schema.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct JsonSchemaFormat {
    #[serde(default)]
    pub name: Option<String>,
    /// Absent: any JSON object.
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type": "function", "function": {"name": …}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

impl<'de> serde::Deserialize<'de> for ToolChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "invalid tool_choice {v}: expected \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"
            ))
        };
        match &v {
            Value::String(s) => match s.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                _ => Err(bad()),
            },
            _ => v.pointer("/function/name").and_then(Value::as_str).map(|n| ToolChoice::Function(n.to_string())).ok_or_else(bad),
        }
    }
}

/// `prompt` of a completion: text, texts, token ids, or lists of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// POST /v1/completions
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: String,
    pub prompt: Option<Prompt>,
    /// OpenAI's default is 16.
    pub max_tokens: Option<i64>,
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Number of most likely alternatives to report per token (0..=5 in OpenAI).
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub response_format: Option<ResponseFormat>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChoiceLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
    /// A thinking model's reasoning, apart from its answer (as vLLM and DeepSeek return it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A call the model made: `arguments` is the JSON text of the arguments object.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCall {
    /// Set on streamed deltas: which call of the choice this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// How a routed request was served (on the last chunk of a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantam: Option<crate::Routed>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChoiceLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChunkChoice>,
    /// Present (as null until the last chunk) when `stream_options.include_usage` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// How a routed request was served (on the last chunk of a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantam: Option<crate::Routed>,
}

/// Legacy completion log-probabilities.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// `null` for an echoed prompt's first token, which nothing predicts.
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<serde_json::Map<String, Value>>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// How a routed request was served (on the last chunk of a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bantam: Option<crate::Routed>,
}

/// `input` of an embeddings request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// POST /v1/embeddings
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default)]
    pub model: String,
    pub input: Option<EmbeddingInput>,
    /// "float" (default) or "base64" (little-endian f32, what the Python SDK asks for).
    pub encoding_format: Option<String>,
    pub dimensions: Option<usize>,
}

/// A vector as floats, or as base64 of its little-endian f32 bytes.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Embedding {
    pub object: &'static str,
    pub embedding: EmbeddingVector,
    pub index: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// Every OpenAI error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_format_and_tool_choice_forms() {
        let req = |body: &str| serde_json::from_str::<ChatCompletionRequest>(body);
        let r = req(r#"{"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": true}}, "tool_choice": "required"}"#).unwrap();
        let Some(ResponseFormat::JsonSchema { json_schema }) = r.response_format else { panic!("{:?}", r.response_format) };
        assert_eq!((json_schema.strict, json_schema.schema), (Some(true), Some(serde_json::json!({"type": "object"}))));
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        let r = req(r#"{"response_format": {"type": "json_object"}, "tool_choice": {"type": "function", "function": {"name": "f"}}}"#).unwrap();
        assert_eq!((r.response_format, r.tool_choice), (Some(ResponseFormat::JsonObject), Some(ToolChoice::Function("f".into()))));
        assert_eq!(req(r#"{"response_format": {"type": "text"}, "tool_choice": "none"}"#).unwrap().tool_choice, Some(ToolChoice::None));
        for bad in [
            r#"{"response_format": {"type": "yaml"}}"#,
            r#"{"response_format": {}}"#,
            r#"{"tool_choice": "always"}"#,
            r#"{"tool_choice": {"type": "function"}}"#,
        ] {
            assert!(req(bad).is_err(), "{bad}");
        }
    }
}
