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
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Classify => "classify",
            Kind::Exact => "exact",
            Kind::Extract => "extract",
        }
    }
}

/// What a correct answer is.
#[derive(Clone, Debug)]
pub enum Gold {
    Label(String),
    Answers(Vec<String>),
    Expected(Value),
}

impl Gold {
    pub fn to_json(&self) -> Value {
        match self {
            Gold::Label(l) => Value::from(l.as_str()),
            Gold::Answers(a) => Value::from(a.clone()),
            Gold::Expected(v) => v.clone(),
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
