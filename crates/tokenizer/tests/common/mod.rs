//! Shared helpers for the tests against the real models and llama.cpp's reference outputs.

#![allow(dead_code)]

use std::sync::OnceLock;

use tokenizer::Tokenizer;

/// `shared/reference` beside the workspace (`/work/shared/reference` for `/work/main`).
pub const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference");

pub const MODELS: [&str; 3] = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"];

/// The tokenizer of a test model, loaded once per test binary. A missing file fails the
/// test: these checks must never pass silently.
pub fn tokenizer(model: &str) -> &'static Tokenizer {
    static CELLS: [OnceLock<Tokenizer>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = MODELS.iter().position(|m| *m == model).expect("a known test model");
    CELLS[i].get_or_init(|| {
        let path = store::model_file(model).unwrap_or_else(|e| panic!("{e}: run `bantam pull` for the test models (scripts/test.sh does)"));
        let file = gguf::Gguf::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("loading the tokenizer of {}: {e}", path.display()))
    })
}

/// One entry of `<model>/tokenize.json`.
#[derive(Debug, Clone)]
pub struct Case {
    pub text: String,
    pub ids: Vec<u32>,
    pub add_bos: bool,
    pub parse_special: bool,
}

pub fn cases(model: &str) -> Vec<Case> {
    let path = format!("{REFERENCE}/{model}/tokenize.json");
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
    let list = json.as_array().unwrap_or_else(|| panic!("{path}: expected a list"));
    let cases: Vec<Case> = list
        .iter()
        .map(|e| Case {
            text: e["text"].as_str().expect("text").to_string(),
            ids: e["ids"].as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect(),
            add_bos: e["add_bos"].as_bool().expect("add_bos"),
            parse_special: e["parse_special"].as_bool().expect("parse_special"),
        })
        .collect();
    assert!(!cases.is_empty(), "{path}: no cases");
    cases
}
