//! Tool calling for both APIs: which tools a request offers, whether it must call one,
//! the prompt and grammar that follow, and the calls read back from the answer.

use crate::error::ApiError;
use engine::template::ChatMessage;
use engine::tools::{tool_specs, ToolFormat, ToolSpec};
use engine::{Grammar, LoadedModel};
use protocol::openai::ToolChoice;
use protocol::Tool;
use serde_json::Value;

/// What the request asks of tools.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    /// The model decides; a call in its answer is returned as a call.
    Auto,
    /// The answer must be at least one call.
    Required,
    /// The answer must be a call of this function.
    Named(String),
}

/// The tools a request offers (none when `tool_choice` is "none").
#[derive(Clone)]
pub struct Tools {
    raw: Value,
    specs: Vec<ToolSpec>,
    choice: Choice,
    parallel: bool,
}

impl Tools {
    /// OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`. `constrained`: the request
    /// already has a response format, which cannot be combined with a forced call.
    pub fn from_openai(tools: Option<&[Tool]>, tool_choice: Option<&ToolChoice>, parallel: Option<bool>, constrained: bool) -> Result<Option<Tools>, ApiError> {
        let bad = |m: String, p: &'static str| ApiError::bad_request(m).with_param(p);
        let choice = match tool_choice {
            None | Some(ToolChoice::Auto) => Some(Choice::Auto),
            Some(ToolChoice::None) => None,
            Some(ToolChoice::Required) => Some(Choice::Required),
            Some(ToolChoice::Function(name)) => Some(Choice::Named(name.clone())),
        };
        let Some(offered) = tools.filter(|t| !t.is_empty()) else {
            return match choice {
                Some(Choice::Required) | Some(Choice::Named(_)) => Err(bad("tool_choice requires tools".into(), "tool_choice")),
                _ => Ok(None),
            };
        };
        let Some(choice) = choice else { return Ok(None) };
        let raw = serde_json::to_value(offered).map_err(|e| bad(e.to_string(), "tools"))?;
        let specs = tool_specs(&raw).map_err(|e| bad(e, "tools"))?;
        if let Choice::Named(n) = &choice {
            if !specs.iter().any(|s| &s.name == n) {
                return Err(bad(format!("tool_choice names {n:?}, which is not among the tools"), "tool_choice"));
            }
        }
        if constrained && choice != Choice::Auto {
            return Err(bad("a forced tool call cannot be combined with response_format or guided_* constraints".into(), "tool_choice"));
        }
        Ok(Some(Tools { raw, specs, choice, parallel: parallel.unwrap_or(true) }))
    }

    /// Ollama's `tools` (the model decides, as Ollama does).
    pub fn from_ollama(tools: Option<&[Tool]>) -> Result<Option<Tools>, ApiError> {
        Tools::from_openai(tools, None, None, false)
    }

    pub fn prompt(&self, lm: &LoadedModel, messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
        Ok(lm.chat_prompt_with_tools(messages, &self.specs, &self.raw)?)
    }

    /// The grammar that forces a valid call, when the request requires one.
    pub fn grammar(&self, lm: &LoadedModel) -> Option<Grammar> {
        let format = lm.tool_format();
        match &self.choice {
            Choice::Auto => None,
            Choice::Required => Some(format.call_grammar(&self.specs, self.parallel)),
            Choice::Named(n) => {
                let one: Vec<ToolSpec> = self.specs.iter().filter(|s| &s.name == n).cloned().collect();
                Some(format.call_grammar(&one, self.parallel))
            }
        }
    }

    /// `tools`, `tool_choice` and `parallel_tool_calls` as OpenAI takes them, for an upstream.
    pub fn openai(&self) -> (Value, Value, bool) {
        let choice = match &self.choice {
            Choice::Auto => serde_json::json!("auto"),
            Choice::Required => serde_json::json!("required"),
            Choice::Named(n) => serde_json::json!({"type": "function", "function": {"name": n}}),
        };
        (self.raw.clone(), choice, self.parallel)
    }

    /// The answer must be a call.
    pub fn requires_call(&self) -> bool {
        self.choice != Choice::Auto
    }

    /// The calls as the engine reads them, at most one unless parallel calls are allowed.
    pub fn parsed(&self, format: ToolFormat, text: &str) -> Option<(String, Vec<engine::tools::ToolCall>)> {
        let (content, mut calls) = format.parse(text, &self.specs)?;
        if !self.parallel {
            calls.truncate(1);
        }
        Some((content, calls))
    }
}

/// Streams an answer that may hold tool calls: text is passed on as content as soon as it
/// cannot be the start of a call, and held from the first sign of one (a call opener at
/// the start, or `<tool_call>` later) to the end, where it is read as calls or, if it
/// does not read, released as content.
#[derive(Default)]
pub struct CallSniffer {
    held: String,
    /// Deciding: nothing but whitespace and what may open a call so far.
    streaming: bool,
    /// A call has begun; everything from here is held.
    in_call: bool,
}

const OPENERS: [&str; 5] = ["<tool_call>", "{", "[", "<|python_tag|>", "```"];
const TAG: &str = "<tool_call>";

impl CallSniffer {
    /// Take the next piece of text; returns what may go out as content now.
    pub fn push(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.in_call {
            return String::new();
        }
        if !self.streaming {
            let t = self.held.trim_start();
            if t.is_empty() || OPENERS.iter().any(|o| t.starts_with(o) || o.starts_with(t)) {
                if OPENERS.iter().any(|o| t.starts_with(o)) {
                    self.in_call = true;
                }
                return String::new();
            }
            self.streaming = true;
        }
        if let Some(i) = self.held.find(TAG) {
            self.in_call = true;
            let out = self.held[..i].to_string();
            self.held.drain(..i);
            return out;
        }
        // Keep a tail that could still grow into the tag.
        let keep = (1..TAG.len())
            .rev()
            .find(|&k| self.held.len() >= k && self.held.is_char_boundary(self.held.len() - k) && TAG.starts_with(&self.held[self.held.len() - k..]))
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// What is held, for a caller that reads the calls itself.
    pub fn held_text(self) -> String {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Tools {
        let raw: Vec<Tool> =
            serde_json::from_value(serde_json::json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])).unwrap();
        Tools::from_openai(Some(&raw), None, None, false).unwrap().unwrap()
    }

    fn run(pieces: &[&str]) -> (String, Option<usize>) {
        let mut s = CallSniffer::default();
        let mut out: String = pieces.iter().map(|p| s.push(p)).collect();
        let held = s.held_text();
        let (rest, calls) = match tools().parsed(ToolFormat::Hermes, &held) {
            Some((content, calls)) => (content, Some(calls)),
            None => (held, None),
        };
        out += &rest;
        (out, calls.map(|c| c.len()))
    }

    #[test]
    fn plain_answers_stream_and_calls_are_held() {
        let mut s = CallSniffer::default();
        assert_eq!(s.push("  Hel"), "  Hel");
        assert_eq!(s.push("lo <tool"), "lo ");
        assert_eq!(s.push(" box>"), "<tool box>");
        assert_eq!(run(&["Sure.", " <tool_", "call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"]), ("Sure. ".to_string(), Some(1)));
        assert_eq!(run(&["{\"na", "me\": \"f\", \"arguments\": {}}"]), (String::new(), Some(1)));
        // Held text that is not a call is released at the end.
        assert_eq!(run(&["{\"answer\": ", "42}"]), ("{\"answer\": 42}".to_string(), None));
        assert_eq!(run(&["[1, 2]"]), ("[1, 2]".to_string(), None));
    }
}
