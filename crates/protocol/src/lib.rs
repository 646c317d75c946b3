//! Wire types of the APIs bantam speaks, and nothing else: Ollama's `/api/*` and OpenAI's
//! `/v1/*` requests and responses as serde structs. Requests ignore unknown fields, as the
//! reference servers do; responses leave out absent optional fields as they do.
//!
//! ```
//! let req: protocol::ollama::ChatRequest =
//!     serde_json::from_str(r#"{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
//! assert_eq!(req.messages[0].content, "hi");
//! ```

pub mod ollama;
pub mod openai;

use serde::{Deserialize, Serialize};

/// How a request on a route was served: bantam's extension field `bantam` in both APIs'
/// responses (the last chunk or line of a stream), beside the `x-bantam-route` header.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Routed {
    /// The route the request named as its model.
    pub route: String,
    /// `local`, `upstream` or `fallback` (the local model, after the upstream failed).
    pub served: String,
    /// The model that answered.
    pub model: String,
    /// The local answer was not confident enough and the upstream answered instead.
    pub escalated: bool,
    /// Why it escalated, or why it fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A field that takes one string or a list of them (`stop`, `input`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

/// One tool a request offers (`{"type": "function", "function": {…}}`), the same shape in
/// both APIs. Fields beyond these are kept, since chat templates render the tool as given.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: ToolFunction,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolFunction {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}
