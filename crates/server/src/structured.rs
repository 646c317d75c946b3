//! Structured output requests of each API, read into one `engine::Grammar`.

use crate::error::ApiError;
use engine::Grammar;
use protocol::openai as oai;
use serde_json::Value;

/// Ollama `format`: `"json"` (any JSON object) or a JSON schema.
pub fn ollama_format(format: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Grammar::JsonObject)),
        Some(Value::Object(_)) => Ok(Some(Grammar::JsonSchema(format.cloned().unwrap_or_default()))),
        Some(other) => Err(ApiError::bad_request(format!("invalid format {other}: expected \"json\" or a JSON schema object")).with_param("format")),
    }
}

/// OpenAI `response_format` ({"type": "text" | "json_object" | "json_schema"}) and the
/// `guided_*` extras; at most one may constrain a request.
pub fn openai_format(response_format: Option<&Value>, s: &oai::Sampling) -> Result<Option<Grammar>, ApiError> {
    let mut found: Vec<(&'static str, Grammar)> = Vec::new();
    if let Some(rf) = response_format.filter(|v| !v.is_null()) {
        let bad = |why: &str| ApiError::bad_request(format!("invalid response_format: {why}")).with_param("response_format");
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => found.push(("response_format", Grammar::JsonObject)),
            Some("json_schema") => {
                let js = rf.get("json_schema").ok_or_else(|| bad("json_schema is required with type json_schema"))?;
                let schema = js.get("schema").cloned().unwrap_or_else(|| serde_json::json!({}));
                if !schema.is_object() {
                    return Err(bad("json_schema.schema must be an object"));
                }
                found.push(("response_format", Grammar::JsonSchema(schema)));
            }
            Some(other) => return Err(bad(&format!("unknown type {other:?} (expected text, json_object or json_schema)"))),
            None => return Err(bad("type is required")),
        }
    }
    if let Some(schema) = &s.guided_json {
        found.push(("guided_json", Grammar::JsonSchema(schema.clone())));
    }
    if let Some(choices) = &s.guided_choice {
        found.push(("guided_choice", Grammar::Choice(choices.clone())));
    }
    if let Some(rx) = &s.guided_regex {
        found.push(("guided_regex", Grammar::Regex(rx.clone())));
    }
    if let Some(g) = &s.guided_grammar {
        found.push(("guided_grammar", Grammar::Lark(g.clone())));
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop().map(|(_, g)| g)),
        _ => {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            Err(ApiError::bad_request(format!("only one of {} may be given", names.join(", "))).with_param(names[1]))
        }
    }
}
