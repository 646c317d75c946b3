//! Tool calls: how a model family writes them, reading them back out of its text, and the
//! grammar that forces a valid call when one is required.
//!
//! Formats:
//! - Hermes / Qwen 2.5 (a template that mentions `<tool_call>`): `<tool_call>\n{"name": …,
//!   "arguments": {…}}\n</tool_call>`, once per call; SmolLM2's variant puts a JSON list of
//!   calls between the tags.
//! - Llama 3.x (a template with `<|python_tag|>` or `ipython`): `{"name": …, "parameters":
//!   {…}}`, calls separated by `;`.
//! - Generic, for templates that know no tools: the tools are described in the system
//!   message, and the model answers with `{"name": …, "arguments": {…}}` (or a list).

use crate::Grammar;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Generic,
}

/// A function the model may call: its name and the JSON schema of its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A call read from the model's output.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

impl ToolFormat {
    /// The format a chat template's source implies.
    pub fn detect(template: Option<&str>) -> ToolFormat {
        match template {
            Some(t) if t.contains("<tool_call>") => ToolFormat::Hermes,
            Some(t) if t.contains("<|python_tag|>") || t.contains("ipython") => ToolFormat::Llama3,
            _ => ToolFormat::Generic,
        }
    }

    /// Whether the template renders `tools` itself; otherwise they go into the system
    /// message ([`generic_system_prompt`]).
    pub fn template_renders_tools(template: Option<&str>) -> bool {
        template.is_some_and(|t| t.contains("tools"))
    }

    /// The key this format writes the arguments under.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// A grammar that admits only valid calls of `tools` (at least one; several when
    /// `parallel`), each with arguments that match the function's schema.
    pub fn call_grammar(self, tools: &[ToolSpec], parallel: bool) -> Grammar {
        let key = self.arguments_key();
        let variants: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut params = if t.parameters.is_object() { t.parameters.clone() } else { json!({"type": "object"}) };
                strict(&mut params);
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, key: params},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut schema = if variants.len() == 1 { variants.into_iter().next().expect("one variant") } else { json!({"anyOf": variants}) };
        schema["x-guidance"] = json!({"whitespace_flexible": false, "key_separator": ": ", "item_separator": ", "});
        let call = match self {
            ToolFormat::Hermes => format!("\"<tool_call>\\n\" %json {schema} \"\\n</tool_call>\""),
            ToolFormat::Llama3 | ToolFormat::Generic => format!("%json {schema}"),
        };
        let sep = match self {
            ToolFormat::Llama3 => "\"; \"",
            _ => "\"\\n\"",
        };
        let start = if parallel { format!("start: call ({sep} call)*") } else { "start: call".to_string() };
        Grammar::Lark(format!("{start}\ncall: {call}\n"))
    }

    /// Read calls out of the model's text. `Some((content, calls))` when the text holds
    /// well-formed calls of known functions (content is any text before them); `None`
    /// when it is an ordinary answer or the calls are malformed.
    pub fn parse(self, text: &str, tools: &[ToolSpec]) -> Option<(String, Vec<ToolCall>)> {
        let known = |c: &ToolCall| tools.iter().any(|t| t.name == c.name);
        let (content, calls) = match self {
            ToolFormat::Hermes => {
                // Without tags, small models often write the bare JSON of a call.
                let Some(start) = text.find("<tool_call>") else { return ToolFormat::Generic.parse(text, tools) };
                let mut calls = Vec::new();
                let mut rest = &text[start..];
                while let Some(body) = rest.strip_prefix("<tool_call>") {
                    let (inner, after) = match body.find("</tool_call>") {
                        Some(end) => (&body[..end], &body[end + "</tool_call>".len()..]),
                        None => (body, ""),
                    };
                    match calls_in(inner.trim()) {
                        Some(c) => calls.extend(c),
                        // A last call cut off by the token limit is dropped if others are whole.
                        None if after.is_empty() && !calls.is_empty() => {}
                        None => return None,
                    }
                    rest = after.trim_start();
                }
                if !rest.trim().is_empty() {
                    return None;
                }
                (text[..start].trim().to_string(), calls)
            }
            ToolFormat::Llama3 | ToolFormat::Generic => {
                let t = text.trim().trim_start_matches("<|python_tag|>").trim();
                let t = t.strip_prefix("```json").or_else(|| t.strip_prefix("```")).map_or(t, |s| s.trim_end().trim_end_matches("```")).trim();
                if !t.starts_with('{') && !t.starts_with('[') {
                    return None;
                }
                let calls = match calls_in(t) {
                    Some(c) => c,
                    None => {
                        // Several calls, one per line or separated by ';'.
                        let parts: Vec<&str> = t.split(['\n', ';']).map(str::trim).filter(|p| !p.is_empty()).collect();
                        let mut calls = Vec::new();
                        for (k, part) in parts.iter().enumerate() {
                            match calls_in(part) {
                                Some(c) => calls.extend(c),
                                None if k + 1 == parts.len() && !calls.is_empty() => {}
                                None => return None,
                            }
                        }
                        calls
                    }
                };
                (String::new(), calls)
            }
        };
        let mut calls = calls;
        // A small model may repeat a call word for word; once is enough.
        calls.dedup();
        (!calls.is_empty() && calls.iter().all(known)).then_some((content, calls))
    }
}

/// Close every object that lists its properties to other keys (what OpenAI's strict
/// function calling does), so a forced call holds exactly the declared arguments.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            m.values_mut().for_each(strict);
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

/// The calls in one JSON text: an object, a list of objects, or `{"tool_call(s)": …}`.
fn calls_in(s: &str) -> Option<Vec<ToolCall>> {
    let v: Value = serde_json::from_str(s).ok()?;
    let one = |v: &Value| -> Option<ToolCall> {
        let o = v.as_object()?;
        let o = o.get("function").and_then(Value::as_object).unwrap_or(o);
        let name = o.get("name")?.as_str()?.to_string();
        let args = o.get("arguments").or_else(|| o.get("parameters")).cloned().unwrap_or_else(|| json!({}));
        // Some models write the arguments as a JSON string.
        let args = match args {
            Value::String(s) => serde_json::from_str(&s).ok()?,
            a => a,
        };
        args.is_object().then_some(ToolCall { name, arguments: args })
    };
    match &v {
        Value::Array(items) => items.iter().map(one).collect(),
        Value::Object(o) if o.contains_key("tool_calls") => o["tool_calls"].as_array()?.iter().map(one).collect(),
        Value::Object(o) if o.contains_key("tool_call") => one(&o["tool_call"]).map(|c| vec![c]),
        _ => one(&v).map(|c| vec![c]),
    }
}

/// The system-message text that describes `tools` to a model whose template does not.
pub fn generic_system_prompt(tools: &[ToolSpec]) -> String {
    let mut s = String::from("You can call these functions:\n");
    for t in tools {
        let mut f = Map::new();
        f.insert("name".into(), Value::from(t.name.clone()));
        if !t.description.is_empty() {
            f.insert("description".into(), Value::from(t.description.clone()));
        }
        f.insert("parameters".into(), t.parameters.clone());
        s.push_str(&Value::Object(f).to_string());
        s.push('\n');
    }
    s.push_str(
        "To call a function, answer with only a JSON object: {\"name\": <function name>, \"arguments\": <arguments object>}. Otherwise answer normally.",
    );
    s
}

/// Tools as OpenAI and Ollama send them: `[{"type": "function", "function": {"name",
/// "description", "parameters"}}]`.
pub fn tool_specs(tools: &Value) -> Result<Vec<ToolSpec>, String> {
    let list = tools.as_array().ok_or("tools must be an array")?;
    list.iter()
        .map(|t| {
            let f = t.get("function").unwrap_or(t);
            let name = f.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or("each tool needs function.name")?;
            Ok(ToolSpec {
                name: name.to_string(),
                description: f.get("description").and_then(Value::as_str).unwrap_or("").to_string(),
                parameters: f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolSpec> {
        tool_specs(&json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])).unwrap()
    }

    #[test]
    fn hermes_calls_parse_with_content_before_them() {
        let t = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]\n</tool_call>";
        let (content, calls) = ToolFormat::Hermes.parse(t, &tools()).unwrap();
        assert_eq!(content, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments, json!({"city": "Rome"}));
        // An unterminated final tag still reads; malformed JSON or unknown names do not.
        assert!(ToolFormat::Hermes.parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}", &tools()).is_some());
        assert!(ToolFormat::Hermes.parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {", &tools()).is_none());
        assert!(ToolFormat::Hermes.parse("<tool_call>{\"name\": \"nope\", \"arguments\": {}}</tool_call>", &tools()).is_none());
        assert!(ToolFormat::Hermes.parse("It is sunny.", &tools()).is_none());
    }

    #[test]
    fn llama3_and_generic_calls_parse() {
        let l = "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Bergen\"}}";
        assert_eq!(ToolFormat::Llama3.parse(l, &tools()).unwrap().1.len(), 2);
        let g = "```json\n{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Lima\\\"}\"}}\n```";
        assert_eq!(ToolFormat::Generic.parse(g, &tools()).unwrap().1[0].arguments, json!({"city": "Lima"}));
        assert!(ToolFormat::Generic.parse("{\"answer\": 42}", &tools()).is_none());
        // One call per line, a repeated call once, a call cut off at the end dropped.
        let lines = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}\n{\"name\": \"get_weather\", \"argu";
        assert_eq!(ToolFormat::Generic.parse(lines, &tools()).unwrap().1.len(), 1);
        // Hermes models that leave out the tags still read.
        assert!(ToolFormat::Hermes.parse("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}", &tools()).is_some());
    }

    #[test]
    fn formats_are_detected_from_templates() {
        assert_eq!(ToolFormat::detect(Some("... <tool_call> ...")), ToolFormat::Hermes);
        assert_eq!(ToolFormat::detect(Some("... <|python_tag|> ...")), ToolFormat::Llama3);
        assert_eq!(ToolFormat::detect(None), ToolFormat::Generic);
    }
}
