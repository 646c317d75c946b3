//! The labelled items of `bantam eval`: one JSON object per line, checked as it is read;
//! an error names the file and line.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// What is being measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `{"input", "label"}`: the answer is held to the labels.
    Classify,
    /// `{"input", "answer"}` (a string or a list of them): normalised exact match.
    Exact,
    /// `{"input", "expected": {…}}`: JSON held to `--schema`; exact match and field F1.
    Extract,
    /// HumanEval / MBPP items: the completion runs against the item's tests in a sandbox.
    Code,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Classify => "classify",
            Kind::Exact => "exact",
            Kind::Extract => "extract",
            Kind::Code => "code",
        }
    }
}

/// What a correct answer is.
#[derive(Clone, Debug)]
pub enum Gold {
    Label(String),
    Answers(Vec<String>),
    Expected(Value),
    Tests(CodeTests),
}

/// What a code item's completion must pass.
#[derive(Clone, Debug)]
pub struct CodeTests {
    /// Python run after the solution: HumanEval's `def check(candidate)` or MBPP's asserts.
    pub test: String,
    /// The function under test.
    pub entry_point: String,
}

impl Gold {
    pub fn to_json(&self) -> Value {
        match self {
            Gold::Label(l) => Value::from(l.as_str()),
            Gold::Answers(a) => Value::from(a.clone()),
            Gold::Expected(v) => v.clone(),
            Gold::Tests(t) => Value::from(t.entry_point.as_str()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Item {
    /// The item's `id`, else its line number.
    pub id: String,
    pub input: String,
    pub gold: Gold,
}

/// The prompt and tests of a code item, HumanEval's shape (`prompt`, `test`, `entry_point`)
/// or MBPP's (`text`, `test_list`, `test_setup_code`; the prompt is the description and the
/// first assert in a docstring, as EvalPlus writes it).
fn code_item(v: &Value) -> Result<(String, CodeTests), String> {
    let text = |name: &str| v.get(name).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    if let Some(prompt) = text("prompt") {
        let test = text("test").ok_or("\"test\" (the code that checks a completion) is missing")?;
        let entry_point = text("entry_point").ok_or("\"entry_point\" (the function under test) is missing")?;
        return Ok((prompt.to_string(), CodeTests { test: test.to_string(), entry_point: entry_point.to_string() }));
    }
    let description = text("text").ok_or("neither \"prompt\" (HumanEval) nor \"text\" (MBPP) is there")?;
    let asserts: Vec<&str> = v.get("test_list").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let first = asserts.first().ok_or("\"test_list\" (the asserts that check a completion) is missing")?;
    let entry_point = called(first).ok_or_else(|| format!("cannot tell the function under test from {first:?}"))?;
    let setup = text("test_setup_code").unwrap_or("");
    let prompt = format!("\"\"\"\n{description}\n{first}\n\"\"\"\n");
    Ok((prompt, CodeTests { test: format!("{setup}\n{}\n", asserts.join("\n")), entry_point }))
}

/// The first function an MBPP assert calls that is not a builtin it is checked with
/// (`assert set(similar(a, b)) == …` tests `similar`).
fn called(assert: &str) -> Option<String> {
    const WRAPPERS: &[&str] = &["assert", "not", "set", "sorted", "list", "tuple", "abs", "round", "len", "str", "int", "float", "math.isclose", "isclose"];
    let mut name = String::new();
    for c in assert.chars() {
        if c.is_alphanumeric() || c == '_' || c == '.' {
            name.push(c);
        } else {
            if c == '(' && !name.is_empty() && !WRAPPERS.contains(&name.as_str()) {
                return Some(name);
            }
            name.clear();
        }
    }
    None
}

/// A text file, gunzipped when its name ends in `.gz`.
fn read(path: &Path) -> std::io::Result<String> {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(path)?), &mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Read a JSON Lines file of `kind` items. `labels`: the allowed labels of a classification
/// (a label outside them is an error).
pub fn load(path: &Path, kind: Kind, labels: &[String]) -> Result<Vec<Item>> {
    let text = read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let field = |name: &str| v.get(name).filter(|x| !x.is_null());
        if kind == Kind::Code {
            let (input, tests) = code_item(&v).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
            let id = field("task_id").or(field("id")).map_or_else(|| (i + 1).to_string(), |s| s.as_str().map_or_else(|| s.to_string(), str::to_string));
            items.push(Item { id, input, gold: Gold::Tests(tests) });
            continue;
        }
        let input = match field("input") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => bail!("{}: \"input\" must be a string", at()),
            None => bail!("{}: \"input\" is missing", at()),
        };
        let gold = match kind {
            Kind::Classify => match field("label") {
                Some(Value::String(l)) if labels.contains(l) => Gold::Label(l.clone()),
                Some(Value::String(l)) => bail!("{}: label {l:?} is not one of --labels ({})", at(), labels.join(", ")),
                _ => bail!("{}: \"label\" (a string) is missing", at()),
            },
            Kind::Exact => match field("answer") {
                Some(Value::String(a)) => Gold::Answers(vec![a.clone()]),
                Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
                    Gold::Answers(a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                }
                _ => bail!("{}: \"answer\" (a string or a list of strings) is missing", at()),
            },
            Kind::Extract => match field("expected") {
                Some(e) => Gold::Expected(e.clone()),
                None => bail!("{}: \"expected\" is missing", at()),
            },
            Kind::Code => unreachable!("code items are read above"),
        };
        let id = match field("id").or(field("task_id")) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => (i + 1).to_string(),
        };
        items.push(Item { id, input, gold });
    }
    if items.is_empty() {
        bail!("{} holds no items", path.display());
    }
    Ok(items)
}
