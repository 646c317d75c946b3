//! Structured output requests of each API, read into one `engine::Grammar`.

use crate::error::ApiError;
use engine::Grammar;
use protocol::ollama::Format;
use protocol::openai as oai;

/// Ollama `format`: `"json"` (any JSON object) or a JSON schema.
pub fn ollama_format(format: Option<&Format>) -> Option<Grammar> {
    match format? {
        Format::None => None,
        Format::Json => Some(Grammar::JsonObject),
        Format::Schema(schema) => Some(Grammar::JsonSchema(schema.clone())),
    }
}

/// OpenAI `response_format` and the `guided_*` extras; at most one may constrain a request.
pub fn openai_format(response_format: Option<&oai::ResponseFormat>, s: &oai::Sampling) -> Result<Option<Grammar>, ApiError> {
    let mut found: Vec<(&'static str, Grammar)> = Vec::new();
    match response_format {
        None | Some(oai::ResponseFormat::Text) => {}
        Some(oai::ResponseFormat::JsonObject) => found.push(("response_format", Grammar::JsonObject)),
        Some(oai::ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema.schema.clone().unwrap_or_else(|| serde_json::json!({}));
            if !schema.is_object() {
                return Err(ApiError::bad_request("invalid response_format: json_schema.schema must be an object").with_param("response_format"));
            }
            found.push(("response_format", Grammar::JsonSchema(schema)));
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
