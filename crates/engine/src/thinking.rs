//! Thinking models: separating the reasoning a model writes between `<think>` and
//! `</think>` from its answer, and telling from a chat template whether a model thinks.
//!
//! Qwen3, QwQ, DeepSeek-R1 and its distills (and others) answer as
//! `<think>\nreasoning\n</think>\n\nanswer`. Some templates open the block themselves:
//! DeepSeek-R1-Distill's generation prompt ends with `<｜Assistant｜><think>\n`, so the
//! output starts inside the block and only `</think>` appears in it;
//! [`starts_in_thinking`] tells which case a rendered prompt is.
//!
//! The rules follow Ollama's thinking parser and vLLM's `deepseek_r1` / `qwen3` reasoning
//! parsers:
//!
//! - Only a `<think>` at the start of the output (after optional whitespace) opens a
//!   thinking block. A `<think>` later in the answer is answer text, and so is a
//!   `</think>` when no block is open.
//! - The tags themselves are dropped. Whitespace at both ends of the thinking is trimmed,
//!   and so is the whitespace between `</think>` and the answer (`"</think>\n\nAnswer"`
//!   gives the answer `"Answer"`).
//! - When the output starts inside the block (the prompt opened it), a redundant
//!   `<think>` at its start is dropped too (some R1 quantizations repeat it).
//! - A block that never closes is all thinking; the answer is then empty.
//!
//! ```
//! use engine::thinking::{split_thinking, ThinkingSplitter};
//! let output = "<think>\nThe user greets me.\n</think>\n\nHello!";
//! assert_eq!(split_thinking(output, false), (Some("The user greets me.".to_string()), "Hello!".to_string()));
//!
//! // The same, streamed in pieces that cut the tags.
//! let mut splitter = ThinkingSplitter::new(false);
//! let (mut thinking, mut content) = (String::new(), String::new());
//! for piece in ["<thi", "nk>\nThe user greets me.\n</", "think>\n", "\nHello", "!"] {
//!     let split = splitter.push(piece);
//!     thinking += &split.thinking;
//!     content += &split.content;
//! }
//! let rest = splitter.finish();
//! thinking += &rest.thinking;
//! content += &rest.content;
//! assert_eq!((thinking.as_str(), content.as_str()), ("The user greets me.", "Hello!"));
//! ```

pub use crate::template::{RenderOptions, Think, ThinkLevel};

/// The tag that opens a thinking block.
pub const THINK_OPEN: &str = "<think>";
/// The tag that closes a thinking block.
pub const THINK_CLOSE: &str = "</think>";

/// Text routed by [`ThinkingSplitter`]: the part of a piece that is thinking and the part
/// that is the answer. Either may be empty. Within one piece thinking always comes before
/// content (a piece never holds content followed by thinking).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub thinking: String,
    pub content: String,
}

impl Split {
    /// True when the piece produced no text at all (all of it is held back or dropped).
    pub fn is_empty(&self) -> bool {
        self.thinking.is_empty() && self.content.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of the output: a `<think>` here (after whitespace) opens a block.
    Start,
    /// Just inside a block: its leading whitespace is dropped. `opened` is whether the
    /// output itself wrote `<think>`; while false, one `<think>` here is dropped too.
    ThinkingStart { opened: bool },
    /// Inside a block, looking for `</think>`.
    Thinking,
    /// Just after `</think>`: the whitespace before the answer is dropped.
    AfterThinking,
    /// The answer: everything passes through.
    Content,
}

/// Splits a model's streamed output into thinking and answer.
///
/// Feed each decoded piece to [`push`](Self::push) and send on what it returns; at the
/// end of generation call [`finish`](Self::finish) once for the text it still holds. Text
/// that could be the start of a tag (`"</thi"`), whitespace that may turn out to be the
/// end of the thinking, and whitespace at the start of the output (which may precede
/// `<think>`) are held back until the next pieces resolve them, so a piece may produce
/// nothing. See the [module docs](self) for the rules.
///
/// Stop sequences should be applied to the raw output before it reaches the splitter.
#[derive(Debug, Clone)]
pub struct ThinkingSplitter {
    state: State,
    /// Text received but not yet routed.
    held: String,
}

impl ThinkingSplitter {
    /// `starts_in_thinking`: whether the prompt left a thinking block open, so that the
    /// output begins inside it; use [`starts_in_thinking`] on the rendered prompt.
    pub fn new(starts_in_thinking: bool) -> Self {
        let state = if starts_in_thinking { State::ThinkingStart { opened: false } } else { State::Start };
        Self { state, held: String::new() }
    }

    /// Routes the next piece of output. Tags are dropped; text that cannot be routed yet
    /// is kept for a later call.
    pub fn push(&mut self, piece: &str) -> Split {
        self.held.push_str(piece);
        self.advance(false)
    }

    /// The end of the output: routes everything still held. A partial tag at the end is
    /// plain text; an unclosed block ends its thinking here.
    pub fn finish(&mut self) -> Split {
        self.advance(true)
    }

    /// Whether the output is (so far) inside a thinking block: true from the start of the
    /// block until its `</think>` is seen. A server may use it to tell when the model has
    /// finished reasoning.
    pub fn is_thinking(&self) -> bool {
        matches!(self.state, State::ThinkingStart { .. } | State::Thinking)
    }

    /// Runs the state machine over `held` as far as it can decide.
    fn advance(&mut self, at_end: bool) -> Split {
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                        self.held = rest.to_owned();
                        self.state = State::ThinkingStart { opened: true };
                    } else if !at_end && THINK_OPEN.starts_with(trimmed) {
                        return out; // only whitespace, or a prefix of `<think>`, so far
                    } else {
                        self.state = State::Content; // the held whitespace is the answer's
                    }
                }
                State::ThinkingStart { opened } => {
                    let trimmed = self.held.trim_start();
                    if !opened {
                        if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                            self.held = rest.to_owned();
                            self.state = State::ThinkingStart { opened: true };
                            continue;
                        }
                        if !at_end && !trimmed.is_empty() && THINK_OPEN.starts_with(trimmed) {
                            return out;
                        }
                    }
                    if trimmed.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = trimmed.to_owned();
                    self.state = State::Thinking;
                }
                State::Thinking => {
                    if let Some(at) = self.held.find(THINK_CLOSE) {
                        self.emit_thinking(&mut out, at, self.held[..at].trim_end().len());
                        self.held.drain(..THINK_CLOSE.len());
                        self.state = State::AfterThinking;
                        continue;
                    }
                    if at_end {
                        let len = self.held.len();
                        self.emit_thinking(&mut out, len, self.held.trim_end().len());
                        return out;
                    }
                    // Hold back a possible start of `</think>` and the whitespace before it.
                    let partial = partial_tag_len(&self.held, THINK_CLOSE);
                    let before = self.held.len() - partial;
                    let keep_from = self.held[..before].trim_end().len();
                    let route: String = self.held.drain(..keep_from).collect();
                    out.thinking.push_str(&route);
                    return out;
                }
                State::AfterThinking => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = trimmed.to_owned();
                    self.state = State::Content;
                }
                State::Content => {
                    out.content.push_str(&self.held);
                    self.held.clear();
                    return out;
                }
            }
        }
    }

    /// Moves `held[..route]` to the thinking output (of which `held[..keep]` is kept, the
    /// rest being trailing whitespace) and removes it from `held`.
    fn emit_thinking(&mut self, out: &mut Split, route: usize, keep: usize) {
        out.thinking.push_str(&self.held[..keep]);
        self.held.drain(..route);
    }
}

/// The length of the longest proper prefix of `tag` that `text` ends with (0 if none).
/// `tag` is ASCII, so the split point is a char boundary of `text`.
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len()).rev().find(|&k| text.as_bytes().ends_with(&tag.as_bytes()[..k])).unwrap_or(0)
}

/// A whole output split at once: `(thinking, answer)`, by the same rules as
/// [`ThinkingSplitter`]. The thinking is `None` when there was none (no block, or an
/// empty one such as `<think>\n\n</think>`).
pub fn split_thinking(text: &str, starts_in_thinking: bool) -> (Option<String>, String) {
    let mut splitter = ThinkingSplitter::new(starts_in_thinking);
    let mut split = splitter.push(text);
    let rest = splitter.finish();
    split.thinking.push_str(&rest.thinking);
    split.content.push_str(&rest.content);
    let thinking = Some(split.thinking).filter(|t| !t.is_empty());
    (thinking, split.content)
}

/// Whether a rendered prompt leaves a thinking block open for the output, as
/// DeepSeek-R1-Distill's generation prompt `<｜Assistant｜><think>\n` does: its last
/// `<think>` is not closed and only whitespace follows it. Qwen3's prompt (which closes an
/// empty block when thinking is off) and prompts that merely quote `<think>` in a message
/// give false.
pub fn starts_in_thinking(rendered_prompt: &str) -> bool {
    rendered_prompt.trim_end().ends_with(THINK_OPEN)
}

/// Whether a chat template (Jinja source) is a thinking model's: it writes `<think>` (Qwen3,
/// QwQ, DeepSeek-R1 and its distills), reads `enable_thinking` or `reasoning_content`
/// (Qwen3), or reads a reasoning effort (gpt-oss; see [`template_thinking_levels`]).
///
/// gpt-oss writes its reasoning in harmony channels (`<|channel|>analysis`), not in
/// `<think>` tags, so [`ThinkingSplitter`] does not separate it.
pub fn template_supports_thinking(template_source: &str) -> bool {
    ["<think>", "</think>", "enable_thinking", "reasoning_content"].iter().any(|m| template_source.contains(m)) || template_thinking_levels(template_source)
}

/// Whether a chat template reads a reasoning effort level (`reasoning_effort`, as gpt-oss
/// templates do), so that [`Think::Level`] changes the prompt.
pub fn template_thinking_levels(template_source: &str) -> bool {
    template_source.contains("reasoning_effort")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tags() {
        assert_eq!(partial_tag_len("abc</thi", THINK_CLOSE), 5);
        assert_eq!(partial_tag_len("abc<", THINK_CLOSE), 1);
        assert_eq!(partial_tag_len("abc</think>", THINK_CLOSE), 0);
        assert_eq!(partial_tag_len("é", THINK_CLOSE), 0);
        assert_eq!(partial_tag_len("", THINK_CLOSE), 0);
    }

    #[test]
    fn whitespace_only_output_is_content() {
        assert_eq!(split_thinking("  \n", false), (None, "  \n".to_string()));
        assert_eq!(split_thinking("<thi", false), (None, "<thi".to_string()));
    }

    #[test]
    fn empty_block_has_no_thinking() {
        assert_eq!(split_thinking("<think>\n\n</think>\n\nHi", false), (None, "Hi".to_string()));
        assert_eq!(split_thinking("\n</think>\n\nHi", true), (None, "Hi".to_string()));
    }

    #[test]
    fn is_thinking_follows_the_block() {
        let mut s = ThinkingSplitter::new(false);
        assert!(!s.is_thinking());
        s.push("<think>a");
        assert!(s.is_thinking());
        s.push("</think>b");
        assert!(!s.is_thinking());
    }
}
