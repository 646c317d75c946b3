//! Chat templates: a model's Jinja template (GGUF `tokenizer.chat_template`) rendered the
//! way transformers' `apply_chat_template` renders it.
//!
//! transformers (utils/chat_template_utils.py, `_compile_jinja_template`) compiles with
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[AssistantTracker, loopcontrols])`, overrides `tojson` with `json.dumps(x,
//! ensure_ascii=False, ...)`, adds the globals `raise_exception` and `strftime_now`, and
//! renders with `messages`, `tools` (None when absent), `documents`,
//! `add_generation_prompt` and the special tokens. This module mirrors each of those on
//! minijinja, plus Python's str/dict methods (minijinja-contrib's pycompat) and Python's
//! way of printing `None`, booleans, lists and dicts.
//!
//! ```
//! use engine::template::{ChatMessage, ChatTemplate};
//! let source = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{% endfor %}";
//! let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
//! let text = template.render(&[ChatMessage::new("user", " hi ")], false, None).unwrap();
//! assert_eq!(text, "<user>hi");
//! ```

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`: usually the conversation breaks
    /// its rules (roles not alternating, a system message where none is allowed).
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// One message of a conversation, as transformers passes it to the template.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// `[{"type": "function", "function": {"name", "arguments": {...}}}]` on assistant turns.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<serde_json::Value>,
    /// The tool's name on `tool` turns (some templates print it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Which call a `tool` turn answers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_call_id: Option<String>,
    /// The reasoning of an earlier assistant turn (the text between `<think>` and
    /// `</think>`, without the tags), as Ollama's `message.thinking` and OpenAI-style
    /// `reasoning_content` carry it. Templates see it as both `message.thinking` and
    /// `message.reasoning_content` (Qwen3 reads the latter and writes it back inside
    /// `<think>` for the turns after the last user query).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub thinking: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into(), tool_calls: None, name: None, tool_call_id: None, thinking: None }
    }
}

/// A message as the template sees it: its fields, plus `reasoning_content` (the name
/// Qwen3's and other HF templates read) when it carries thinking.
#[derive(serde::Serialize)]
struct TemplateMessage<'a> {
    #[serde(flatten)]
    message: &'a ChatMessage,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

/// Whether, and how hard, a thinking model should reason before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Think {
    /// Think (`enable_thinking = true`).
    On,
    /// Answer without thinking (`enable_thinking = false`: Qwen3 then writes an empty
    /// `<think>\n\n</think>\n\n` into the generation prompt). Templates that ignore
    /// `enable_thinking` (DeepSeek-R1-Distill always opens `<think>`) still make the
    /// model think; the caller then drops the thinking that
    /// [`ThinkingSplitter`](crate::thinking::ThinkingSplitter) separates out.
    Off,
    /// Think with this effort (`reasoning_effort = "low" | "medium" | "high"`, as
    /// gpt-oss templates read it, and `enable_thinking = true`).
    Level(ThinkLevel),
}

impl Think {
    /// False only for [`Think::Off`].
    pub fn enabled(self) -> bool {
        self != Think::Off
    }
}

/// A reasoning effort, for templates that read `reasoning_effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ThinkLevel {
    Low,
    Medium,
    High,
}

impl ThinkLevel {
    /// `"low"`, `"medium"` or `"high"`: the value templates compare `reasoning_effort` with.
    pub fn as_str(self) -> &'static str {
        match self {
            ThinkLevel::Low => "low",
            ThinkLevel::Medium => "medium",
            ThinkLevel::High => "high",
        }
    }

    /// `"low"`, `"medium"` or `"high"` in any case; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Some(ThinkLevel::Low),
            "medium" => Some(ThinkLevel::Medium),
            "high" => Some(ThinkLevel::High),
            _ => None,
        }
    }
}

/// Options of [`ChatTemplate::render_with`] beyond messages, generation prompt and tools.
/// The default renders exactly as [`ChatTemplate::render`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// `None` sets no thinking variable, so the template's own default applies (Qwen3
    /// and R1-Distill think, gpt-oss uses medium effort). `Some` sets:
    ///
    /// | `think`        | `enable_thinking` | `thinking` | `reasoning_effort` |
    /// |----------------|-------------------|------------|--------------------|
    /// | `On`           | `true`            | `true`     | unset              |
    /// | `Off`          | `false`           | `false`    | unset              |
    /// | `Level(level)` | `true`            | `true`     | `level.as_str()`   |
    ///
    /// `enable_thinking` is what Qwen3 (and llama.cpp's `--reasoning-budget 0`) use;
    /// `thinking` is the name DeepSeek-V3.1 and Granite 3.x templates read;
    /// `reasoning_effort` is gpt-oss's.
    pub think: Option<Think>,
}

/// A compiled chat template with the special tokens it is rendered with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, without_generation_tags(source)).map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(Self { env, source: source.to_owned(), bos_token: bos_token.to_owned(), eos_token: eos_token.to_owned() })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template makes the model think before answering (see
    /// [`template_supports_thinking`](crate::thinking::template_supports_thinking)).
    pub fn supports_thinking(&self) -> bool {
        crate::thinking::template_supports_thinking(&self.source)
    }

    /// Whether the template reads a reasoning effort (see
    /// [`template_thinking_levels`](crate::thinking::template_thinking_levels)).
    pub fn thinking_levels(&self) -> bool {
        crate::thinking::template_thinking_levels(&self.source)
    }

    /// `tools`: the JSON array of tool schemas, passed as given; `None` renders with
    /// `tools = none`, as transformers does. The same as [`render_with`](Self::render_with)
    /// with default options.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool, tools: Option<&serde_json::Value>) -> Result<String, TemplateError> {
        self.render_with(messages, add_generation_prompt, tools, &RenderOptions::default())
    }

    /// [`render`](Self::render) with thinking controls: `options.think` becomes the
    /// template variables listed at [`RenderOptions::think`], as transformers passes
    /// `apply_chat_template(..., enable_thinking=False)` keyword arguments to the template.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| TemplateError::Render(describe(&e)))?;
        let messages: Vec<TemplateMessage> = messages.iter().map(|m| TemplateMessage { message: m, reasoning_content: m.thinking.as_deref() }).collect();
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from_serialize(&messages)),
            ("tools", tools.map_or(Value::from(()), Value::from_serialize)),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
        ];
        if let Some(think) = options.think {
            ctx.push(("enable_thinking", Value::from(think.enabled())));
            ctx.push(("thinking", Value::from(think.enabled())));
            if let Think::Level(level) = think {
                ctx.push(("reasoning_effort", Value::from(level.as_str())));
            }
        }
        template.render(Value::from_iter(ctx)).map_err(|e| match raised_message(&e) {
            Some(message) => TemplateError::Raised(message),
            None => TemplateError::Render(describe(&e)),
        })
    }
}

/// The error's message with the template line it points at.
fn describe(e: &Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e.detail().unwrap_or(&e.kind().to_string())),
        None => e.to_string(),
    }
}

/// The marker `raise_exception` attaches, to tell the template's own refusal from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Raised(String);

fn raised_message(e: &Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(Raised(message)) = err.downcast_ref::<Raised>() {
            return Some(message.clone());
        }
        source = err.source();
    }
    None
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// `{% generation %}...{% endgeneration %}` marks assistant text for transformers'
/// AssistantTracker and renders its body unchanged. minijinja has no such tag, so each
/// becomes `{% if true %}` / `{% endif %}` with the same whitespace-control dashes.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else { break };
        let inner = &tag[2..end];
        let (open_dash, inner) = inner.strip_prefix('-').map_or(("", inner), |i| ("-", i));
        let (close_dash, inner) = inner.strip_suffix('-').map_or(("", inner), |i| ("-", i));
        match inner.trim() {
            "generation" => write!(out, "{{%{open_dash} if true {close_dash}%}}"),
            "endgeneration" => write!(out, "{{%{open_dash} endif {close_dash}%}}"),
            _ => write!(out, "{}", &tag[..end + 2]),
        }
        .expect("writing to a String cannot fail");
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Prints `{{ value }}` as Python's `str()` would: `None`, `True`/`False`, and lists and
/// dicts in repr form. Strings and undefined go through minijinja's own formatter.
fn python_formatter(out: &mut minijinja::Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map => {
            let mut text = String::new();
            python_repr(value, &mut text);
            out.write_str(&text).map_err(|_| Error::new(ErrorKind::WriteFailure, "output"))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python `repr()` of a value: `{'a': [1, 2.0, None, True]}`.
fn python_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::None | ValueKind::Undefined => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&python_number(value, false)),
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            out.push(quote);
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, out);
                out.push_str(": ");
                python_repr(&value.get_item(&key).unwrap_or_default(), out);
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
}

/// A number as Python prints it: integers as is, floats in `repr` form (`1.0`, `1e-05`,
/// `1e+16`); with `json`, non-finite floats as json.dumps writes them (`NaN`, `Infinity`).
fn python_number(value: &Value, json: bool) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    let Ok(x) = f64::try_from(value.clone()) else {
        return value.to_string();
    };
    if x.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if x.is_infinite() {
        let sign = if x < 0.0 { "-" } else { "" };
        return format!("{sign}{}", if json { "Infinity" } else { "inf" });
    }
    // Rust's Debug and Python's repr both print the shortest round-trip digits and switch
    // to exponent form outside 1e-4 <= |x| < 1e16; only the exponent is written differently.
    let debug = format!("{x:?}");
    match debug.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => debug,
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`. Unlike minijinja's own it escapes no HTML and puts
/// Python's spaces after `,` and `:`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let format = JsonFormat {
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        indent: match indent {
            Some(v) if v.is_none() => None,
            Some(v) => Some(match v.as_str() {
                Some(s) => s.to_owned(),
                None => " ".repeat(i64::try_from(v)?.max(0) as usize),
            }),
            None => None,
        },
        separators: (String::new(), String::new()),
    };
    kwargs.assert_all_used()?;
    let separators = match separators.filter(|v| !v.is_none()) {
        Some(pair) => {
            let item = pair.get_item(&Value::from(0))?;
            let key = pair.get_item(&Value::from(1))?;
            (item.as_str().unwrap_or(",").to_owned(), key.as_str().unwrap_or(":").to_owned())
        }
        None if format.indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let format = JsonFormat { separators, ..format };
    let mut out = String::new();
    format.write(value, 0, &mut out)?;
    Ok(out)
}

/// The options of Python's `json.dumps` that `tojson` exposes.
struct JsonFormat {
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<String>,
    /// (between items, between key and value)
    separators: (String, String),
}

impl JsonFormat {
    fn write(&self, value: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&python_number(value, true)),
            ValueKind::String => self.write_str(value.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(out, depth, ('[', ']'), &items, |item, out| self.write(item, depth + 1, out))?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    let name = match key.as_str() {
                        Some(s) => s.to_owned(),
                        None => {
                            let mut s = String::new();
                            self.write(&key, depth, &mut s)?;
                            s
                        }
                    };
                    entries.push((name, value.get_item(&key)?));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.write_container(out, depth, ('{', '}'), &entries, |(key, item), out| {
                    self.write_str(key, out);
                    out.push_str(&self.separators.1);
                    self.write(item, depth + 1, out)
                })?;
            }
            kind => return Err(Error::new(ErrorKind::InvalidOperation, format!("Object of type {kind} is not JSON serializable"))),
        }
        Ok(())
    }

    /// `[a, b]`, or with an indent one item per line at `depth + 1` levels.
    fn write_container<T>(
        &self,
        out: &mut String,
        depth: usize,
        (open, close): (char, char),
        items: &[T],
        mut write_item: impl FnMut(&T, &mut String) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &self.indent {
                out.push('\n');
                (0..level).for_each(|_| out.push_str(indent));
            }
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.separators.0);
            }
            newline(out, depth + 1);
            write_item(item, out)?;
        }
        newline(out, depth);
        out.push(close);
        Ok(())
    }

    fn write_str(&self, s: &str, out: &mut String) {
        out.push('"');
        for ch in s.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// transformers' `strftime_now(format)`: `datetime.now().strftime(format)`. bantam has
/// no time zone database, so "now" is UTC.
fn strftime_now(format: &str) -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    strftime(format, secs)
}

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// C `strftime` for UTC seconds since the epoch: the directives chat templates use, with
/// glibc's `-` flag (no padding). Unknown directives are copied through, as glibc does.
fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (index 3)
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let is_leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const CUMULATIVE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUMULATIVE[month as usize - 1] + day + i64::from(is_leap && month > 2);

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let pad = spec != Some('-');
        if !pad {
            spec = chars.next();
        }
        let num = |n: i64, width: usize| {
            if pad {
                format!("{n:0width$}")
            } else {
                n.to_string()
            }
        };
        let text = match spec {
            Some('Y') => year.to_string(),
            Some('y') => num(year.rem_euclid(100), 2),
            Some('m') => num(month, 2),
            Some('d') => num(day, 2),
            Some('e') => {
                if pad {
                    format!("{day:2}")
                } else {
                    day.to_string()
                }
            }
            Some('j') => num(yday, 3),
            Some('H') => num(hour, 2),
            Some('I') => num((hour + 11) % 12 + 1, 2),
            Some('M') => num(minute, 2),
            Some('S') => num(second, 2),
            Some('p') => if hour < 12 { "AM" } else { "PM" }.to_string(),
            Some('B') => MONTHS[month as usize - 1].to_string(),
            Some('b') | Some('h') => MONTHS[month as usize - 1][..3].to_string(),
            Some('A') => WEEKDAYS[weekday].to_string(),
            Some('a') => WEEKDAYS[weekday][..3].to_string(),
            Some('F') => format!("{year}-{month:02}-{day:02}"),
            Some('T') => format!("{hour:02}:{minute:02}:{second:02}"),
            Some('Z') => "UTC".to_string(),
            Some('z') => "+0000".to_string(),
            Some('%') => "%".to_string(),
            Some(other) => format!("%{}{other}", if pad { "" } else { "-" }),
            None => "%".to_string(),
        };
        out.push_str(&text);
    }
    out
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01, by Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `tokenizer.chat_template` of a real test model. Fails (never skips) when missing.
    fn real_template(model: &str) -> String {
        let path = store::model_file(model).unwrap_or_else(|e| panic!("{e}: run `bantam pull` for the test models (scripts/test.sh does)"));
        let gguf = gguf::Gguf::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        gguf.metadata_str("tokenizer.chat_template").expect("model has a chat template").to_owned()
    }

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    fn conversation() -> Vec<ChatMessage> {
        vec![msg("system", "Sys"), msg("user", "  hi there  "), msg("assistant", "Hello"), msg("user", "Bye")]
    }

    /// Renders an inline template over `conversation()`; `<s>`/`</s>` as BOS/EOS.
    fn render(source: &str, tools: Option<&serde_json::Value>) -> Result<String, TemplateError> {
        ChatTemplate::new(source, "<s>", "</s>")?.render(&conversation(), false, tools)
    }

    fn weather_tools() -> serde_json::Value {
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich <or> Paris"}
            }, "required": ["city"]}
        }}])
    }

    const QWEN_TOOLS_SYSTEM_TAIL: &str = "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name, e.g. Zürich <or> Paris\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";

    // Expected strings below were produced by transformers' environment (jinja2 with the
    // settings of `_compile_jinja_template`) on the same templates and inputs.

    #[test]
    fn smollm2_system_user_generation_prompt() {
        let t = ChatTemplate::new(&real_template("smollm2-135m"), "<|im_start|>", "<|im_end|>").unwrap();
        let messages = [msg("system", "You are a pirate."), msg("user", "Hello!")];
        assert_eq!(
            t.render(&messages, true, None).unwrap(),
            "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_inserts_its_default_system_prompt() {
        let t = ChatTemplate::new(&real_template("smollm2-135m"), "<|im_start|>", "<|im_end|>").unwrap();
        let messages = [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke.")];
        assert_eq!(
            t.render(&messages, false, None).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n\
             <|im_start|>user\nTell me a joke.<|im_end|>\n"
        );
    }

    #[test]
    fn qwen25_inserts_its_default_system_prompt() {
        let t = ChatTemplate::new(&real_template("qwen2.5-coder-0.5b"), "", "<|im_end|>").unwrap();
        let messages = [msg("user", "Write a hello world in Rust.")];
        assert_eq!(
            t.render(&messages, true, None).unwrap(),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nWrite a hello world in Rust.<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn qwen25_keeps_a_given_system_prompt() {
        let t = ChatTemplate::new(&real_template("qwen2.5-coder-0.5b"), "", "<|im_end|>").unwrap();
        let messages = [msg("system", "Be terse."), msg("user", "2+2?"), msg("assistant", "4")];
        assert_eq!(
            t.render(&messages, false, None).unwrap(),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        );
    }

    #[test]
    fn qwen25_renders_the_tools_block() {
        let t = ChatTemplate::new(&real_template("qwen2.5-coder-0.5b"), "", "<|im_end|>").unwrap();
        let tools = weather_tools();
        let got = t.render(&[msg("user", "Weather in Paris?")], true, Some(&tools)).unwrap();
        let want = format!(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.{QWEN_TOOLS_SYSTEM_TAIL}\
             <|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn qwen25_renders_tool_calls_and_grouped_tool_responses() {
        let t = ChatTemplate::new(&real_template("qwen2.5-coder-0.5b"), "", "<|im_end|>").unwrap();
        let tools = weather_tools();
        let call = |city: &str| json!({"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}});
        let mut assistant = msg("assistant", "");
        assistant.tool_calls = Some(json!([call("Paris"), call("Rome")]));
        let tool = |content: &str| ChatMessage { name: Some("get_weather".into()), ..msg("tool", content) };
        let messages =
            [msg("system", "You check the weather."), msg("user", "Weather in Paris and Rome?"), assistant, tool("{\"temp\": 21}"), tool("{\"temp\": 25}")];
        let got = t.render(&messages, true, Some(&tools)).unwrap();
        let want = format!(
            "<|im_start|>system\nYou check the weather.{QWEN_TOOLS_SYSTEM_TAIL}\
             <|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n<|im_start|>assistant\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}\n</tool_call>\n\
             <tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Rome\"}}}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n{{\"temp\": 21}}\n</tool_response>\n\
             <tool_response>\n{{\"temp\": 25}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn blocks_are_trimmed_and_left_stripped_like_transformers() {
        let source =
            "{% for m in messages %}\n    {% if m.role == 'user' %}\nU: {{ m.content }}\n    {% else %}\nA: {{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(render(source, None).unwrap(), "A: Sys\nU:   hi there  \nA: Hello\nU: Bye\n");
    }

    #[test]
    fn python_methods_and_printing() {
        let tools = json!([{"n": 3, "x": 1.0, "small": 1e-5, "big": 1e20, "flag": true, "nothing": null,
                            "list": [1, 2.5, {"k": "v"}]}]);
        let source = "{{ messages[1].content.strip().upper() }}|{{ messages[1].content.startswith('  hi') }}|\
            {{ messages[1].content.split() }}|{% for k, v in tools[0]['list'][2].items() %}{{ k }}={{ v }};{% endfor %}|\
            {{ tools[0].get('missing', 'dflt') }}|{{ tools[0].get('n') }}|{{ tools[0].nothing }}|\
            {{ messages[1].name is defined }}|{{ messages[1].content.lstrip() }}|{{ tools[0]['list'] }}|\
            {{ tools[0].x }}|{{ tools[0].small }}|{{ tools[0].big }}|{{ tools[0].flag }}|\
            {{ messages[1].content.split(' ')|length }}";
        assert_eq!(
            render(source, Some(&tools)).unwrap(),
            "HI THERE|True|['hi', 'there']|k=v;|dflt|3|None|False|hi there  |[1, 2.5, {'k': 'v'}]|1.0|1e-05|1e+20|True|6"
        );
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let tools = json!([{"name": "f", "n": 3, "x": 1.0, "small": 1e-5, "big": 1e20, "flag": true,
            "nothing": null, "s": "Zürich <b> & 'q' \"dq\"\n\ttab\u{1}", "empty": [], "obj": {},
            "list": [1, 2.5, {"k": "v"}]}]);
        let source = "{{ tools | tojson }}\n{{ tools | tojson(indent=2) }}\n\
            {{ tools[0].list | tojson(sort_keys=true, separators=(',', ':')) }}\n\
            {{ tools[0].s | tojson(ensure_ascii=true) }}\n{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}";
        let s = r#""s": "Zürich <b> & 'q' \"dq\"\n\ttab\u0001""#;
        let want = [
            format!(r#"[{{"name": "f", "n": 3, "x": 1.0, "small": 1e-05, "big": 1e+20, "flag": true, "nothing": null, {s}, "empty": [], "obj": {{}}, "list": [1, 2.5, {{"k": "v"}}]}}]"#),
            format!("[\n  {{\n    \"name\": \"f\",\n    \"n\": 3,\n    \"x\": 1.0,\n    \"small\": 1e-05,\n    \"big\": 1e+20,\n    \"flag\": true,\n    \"nothing\": null,\n    {s},\n    \"empty\": [],\n    \"obj\": {{}},\n    \"list\": [\n      1,\n      2.5,\n      {{\n        \"k\": \"v\"\n      }}\n    ]\n  }}\n]"),
            r#"[1,2.5,{"k":"v"}]"#.to_string(),
            r#""Z\u00fcrich <b> & 'q' \"dq\"\n\ttab\u0001""#.to_string(),
            r#"{"a": 2, "b": 1}"#.to_string(),
        ]
        .join("\n");
        assert_eq!(render(source, Some(&tools)).unwrap(), want);
        assert!(matches!(render("{{ foo | tojson }}", None), Err(TemplateError::Render(_))));
    }

    #[test]
    fn loop_controls() {
        let source = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
            {% if loop.index > 3 %}{% break %}{% endif %}{{ m.content }},{% endfor %}";
        assert_eq!(render(source, None).unwrap(), "  hi there  ,Hello,");
    }

    #[test]
    fn generation_tags_render_their_body() {
        let source = "{% for m in messages %}\n{% if m.role == 'assistant' %}\n[{% generation %}{{ m.content }}{% endgeneration %}]\n\
            {%- generation -%}\n   ({{ m.content }})   \n{%- endgeneration %}\n{% else %}\n{{ m.content }}\n{% endif %}\n{% endfor %}";
        assert_eq!(render(source, None).unwrap(), "Sys\n  hi there  \n[Hello](Hello)Bye\n");
    }

    #[test]
    fn absent_tools_are_none_as_in_transformers() {
        let source = "{{ tools is none }}|{{ tools is defined }}|{% if tools %}T{% else %}F{% endif %}|{{ documents is none }}";
        assert_eq!(render(source, None).unwrap(), "True|True|F|True");
        assert_eq!(render(source, Some(&json!([{"name": "f"}]))).unwrap(), "False|True|T|True");
    }

    #[test]
    fn namespaces_filters_and_slices() {
        let source = "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'system' %}\
            {% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }}";
        assert_eq!(render(source, None).unwrap(), "True 4");
        let source = "{% for m in messages[1:][::-1] %}{{ loop.index0 }}{{ m.role[0] }}{% endfor %}|{{ messages[-1].content }}|\
            {{ (messages | selectattr('role', 'equalto', 'user') | list | length) }}|{{ messages | map(attribute='role') | join(',') }}";
        assert_eq!(render(source, None).unwrap(), "0u1a2u|Bye|2|system,user,assistant,user");
    }

    #[test]
    fn undefined_is_lenient_like_jinja2() {
        let source = "[{{ messages[0].nonexistent }}]|{% if messages[0].tool_calls %}y{% else %}n{% endif %}|\
            [{{ foo }}]|{{ messages[0].tool_calls is defined }}";
        assert_eq!(render(source, None).unwrap(), "[]|n|[]|False");
        // As in jinja2, an attribute of an undefined value is an error.
        assert!(matches!(render("{{ foo.bar }}", None), Err(TemplateError::Render(_))));
    }

    #[test]
    fn special_tokens() {
        let source = "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}";
        assert_eq!(render(source, None).unwrap(), "<s>Sys</s>  hi there  </s>Hello</s>Bye</s>");
    }

    #[test]
    fn raise_exception_is_a_raised_error() {
        let source = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok";
        match render(source, None) {
            Err(TemplateError::Raised(message)) => assert_eq!(message, "System role not supported"),
            other => panic!("expected Raised, got {other:?}"),
        }
        let t = ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(t.render(&[msg("user", "x")], false, None).unwrap(), "ok");
    }

    /// The shape of Gemma 3's template (system text folded into the first user turn,
    /// alternation enforced with raise_exception); gemma3-270m's GGUF carries none.
    const GEMMA_STYLE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

    #[test]
    fn gemma_style_template() {
        let t = ChatTemplate::new(GEMMA_STYLE, "<bos>", "<eos>").unwrap();
        let messages = [msg("system", "Be brief."), msg("user", " Hi "), msg("assistant", "Hello."), msg("user", "Bye")];
        assert_eq!(
            t.render(&messages, true, None).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        match t.render(&[msg("user", "a"), msg("user", "b")], false, None) {
            Err(TemplateError::Raised(m)) => {
                assert_eq!(m, "Conversation roles must alternate user/assistant/user/assistant/...")
            }
            other => panic!("expected Raised, got {other:?}"),
        }
    }

    #[test]
    fn bad_templates_are_errors() {
        assert!(matches!(ChatTemplate::new("{% for m in messages %}", "", ""), Err(TemplateError::Syntax(_))));
        assert!(matches!(ChatTemplate::new("{{ ", "", ""), Err(TemplateError::Syntax(_))));
        assert!(matches!(render("{{ messages + 1 }}", None), Err(TemplateError::Render(_))));
        assert!(matches!(render("{{ 'a'.nosuchmethod() }}", None), Err(TemplateError::Render(_))));
    }

    #[test]
    fn strftime_formats_utc() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-07-26 13:05:09");
        assert_eq!(strftime("%d %b %Y|%B %-d, %Y|%a %A|%j|%I %p|%y|%%|%Q", t), "26 Jul 2024|July 26, 2024|Fri Friday|208|01 PM|24|%|%Q");
        assert_eq!(strftime("%Y-%m-%d %a", 0), "1970-01-01 Thu");
        assert_eq!(strftime("%Y-%m-%d %j", 951_782_400), "2000-02-29 060");
        assert_eq!(strftime("%Y-%m-%d", -86_400), "1969-12-31");
        let year = render("{{ strftime_now('%Y') }}", None).unwrap();
        assert!(year.len() == 4 && year.as_str() >= "2025", "{year}");
    }

    #[test]
    fn chat_message_serde_skips_absent_fields() {
        let m = msg("user", "hi");
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"role": "user", "content": "hi"}));
        let back: ChatMessage = serde_json::from_value(json!({"role": "tool", "content": "1", "tool_call_id": "c1"})).unwrap();
        assert_eq!(back.tool_call_id.as_deref(), Some("c1"));
        assert_eq!(back.name, None);
    }
}
