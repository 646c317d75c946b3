//! Tokenizer files → `tokenizer.ggml.*`, as llama.cpp's converter builds them:
//! `_set_vocab_gpt2` (byte-level BPE from `tokenizer.json`), `_set_vocab_sentencepiece`
//! (`tokenizer.model`), and `gguf.SpecialVocab` (merges, special token ids, `add_*_token`,
//! chat template from `tokenizer_config.json`, `chat_template.jinja` and `config.json`).

use crate::arch::{Arch, Hparams};
use crate::{read_json, sentencepiece, ConvertError};
use gguf::{Array, Value};
use serde_json::Value as Json;
use std::path::Path;

pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// The special token kinds `SpecialVocab` looks for, in its order.
const SPECIAL: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// The pre-tokenizers `tokenizer.json` spells and the `tokenizer.ggml.pre` name of their
/// regexes: `(name, Split regex or "", digits split individually, ByteLevel runs the GPT-2
/// regex)`. llama.cpp names a tokenizer by the hash of a test text's tokens instead, and has
/// several names for one set of regexes (`smollm`, `starcoder` and `refact`); see
/// `Vocab::load`.
pub const PRE_TOKENIZERS: &[(&str, &str, bool, bool)] = &[
    ("smollm", "", true, true),
    ("gpt-2", "", false, true),
    ("qwen2", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", false, false),
    ("llama-bpe", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", false, false),
];

/// The pre-tokenizer JSON `tokenizer.json` carries for a `tokenizer.ggml.pre` name.
pub fn pre_tokenizer_json(pre: &str) -> Option<Json> {
    let &(_, regex, digits, byte_regex) = PRE_TOKENIZERS.iter().find(|p| p.0 == pre)?;
    let mut seq = Vec::new();
    if !regex.is_empty() {
        seq.push(serde_json::json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false}));
    }
    if digits {
        seq.push(serde_json::json!({"type": "Digits", "individual_digits": true}));
    }
    seq.push(serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": byte_regex}));
    Some(if seq.len() == 1 { seq.remove(0) } else { serde_json::json!({"type": "Sequence", "pretokenizers": seq}) })
}

/// The `tokenizer.ggml.pre` name for a `tokenizer.json` pre-tokenizer.
fn detect_pre(pre: &Json) -> Option<&'static str> {
    let parts: Vec<&Json> = match pre.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => pre.get("pretokenizers")?.as_array()?.iter().collect(),
        Some(_) => vec![pre],
        None => return None,
    };
    let (mut regex, mut digits, mut byte_regex) = ("", false, None);
    for p in parts {
        match p.get("type").and_then(|t| t.as_str())? {
            "Split" => {
                if !regex.is_empty() {
                    return None;
                }
                regex = p.get("pattern")?.get("Regex")?.as_str()?;
            }
            "Digits" => digits = p.get("individual_digits").and_then(|v| v.as_bool()) == Some(true),
            "ByteLevel" => byte_regex = Some(p.get("use_regex").and_then(|v| v.as_bool()).unwrap_or(true)),
            _ => return None,
        }
    }
    let byte_regex = byte_regex?;
    PRE_TOKENIZERS.iter().find(|&&(_, r, d, b)| r == regex && d == digits && b == byte_regex).map(|p| p.0)
}

/// Everything the converter writes under `tokenizer.ggml.*`.
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    /// `gpt2` or `llama`.
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    /// `(kind, id)` in the order SpecialVocab sets them.
    pub special: Vec<(String, u32)>,
    /// `(kind, add)` for `add_{kind}_token`.
    pub add: Vec<(String, bool)>,
    pub chat_template: Option<String>,
    /// Written before the vocabulary (llama's `add_prefix_space`) or after it (gemma3).
    pub add_space_prefix: Option<(bool, bool)>,
}

fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn opt_json(path: &Path) -> Result<Option<Json>, ConvertError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

impl Vocab {
    pub fn load(dir: &Path, hp: &Hparams, pre_override: Option<&str>) -> Result<Vocab, ConvertError> {
        let tok_config = opt_json(&dir.join("tokenizer_config.json"))?;
        let has_spm = dir.join("tokenizer.model").is_file();
        let has_json = dir.join("tokenizer.json").is_file();
        let mut prefix_before = None;
        let gpt2_class = tok_config.as_ref().and_then(|c| c.get("tokenizer_class")).and_then(|c| c.as_str()) == Some("GPT2Tokenizer");
        let use_spm = match hp.arch {
            Arch::Phi3 => !gpt2_class,
            _ => has_spm,
        };
        if matches!(hp.arch, Arch::Llama | Arch::Granite) {
            if let Some(p) = tok_config.as_ref().and_then(|c| c.get("add_prefix_space")).and_then(|v| v.as_bool()) {
                prefix_before = Some((p, true));
            }
        }
        let mut v = if use_spm {
            if !has_spm {
                return Err(ConvertError::Missing { dir: dir.display().to_string(), what: "tokenizer.model (this tokenizer is SentencePiece)".into() });
            }
            Vocab::sentencepiece(dir, hp, tok_config.as_ref())?
        } else {
            if !has_json {
                return Err(ConvertError::Missing { dir: dir.display().to_string(), what: "tokenizer.json or tokenizer.model".into() });
            }
            Vocab::gpt2(dir, hp, pre_override)?
        };
        v.add_space_prefix = prefix_before;
        if hp.arch == Arch::Gemma3 && use_spm {
            v.add_space_prefix = Some((false, false));
        }
        v.special_vocab(dir, tok_config.as_ref(), use_spm)?;
        if matches!(hp.arch, Arch::Llama | Arch::Granite) && hp.vocab_size.unwrap_or(32000) == 49152 {
            set(&mut v.add, "bos", false);
        }
        if !use_spm && pre_override.is_none() {
            v.pre = Some(v.name_pre().ok_or_else(|| {
                ConvertError::Tokenizer(format!(
                    "the pre-tokenizer in {} is not one bantam recognises ({}, or one llama.cpp knows by its test-text hash); name llama.cpp's equivalent with --pre",
                    dir.join("tokenizer.json").display(),
                    PRE_TOKENIZERS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ))
            })?);
        }
        Ok(v)
    }

    /// The `tokenizer.ggml.pre` llama.cpp writes: its converter tokenizes a test text with
    /// the Hugging Face tokenizer and looks the sha256 of the ids up in a table of known
    /// tokenizers (`get_vocab_base_pre`). bantam tokenizes the same text with its own
    /// tokenizer under the pre-tokenizer the structure of `tokenizer.json` names (or, when
    /// it names none, under each pre-tokenizer bantam implements) and looks the hash up in
    /// the same table; a hash found there is llama.cpp's name. Without one, the structure's
    /// name stands.
    fn name_pre(&self) -> Option<String> {
        let table: Vec<(&str, &str)> = include_str!("chkhsh.txt").lines().filter_map(|l| l.split_once(' ')).collect();
        let lookup = |hash: &str| table.iter().rev().find(|(h, _)| *h == hash).map(|(_, n)| n.to_string());
        if let Some(p) = &self.pre {
            return Some(self.chkhsh(p).and_then(|h| lookup(&h)).unwrap_or_else(|| p.clone()));
        }
        tokenizer::pre_tokenizer_names().find_map(|p| self.chkhsh(p).and_then(|h| lookup(&h)))
    }

    /// The hash llama.cpp's converter computes: sha256 of Python's `str()` of the ids of its
    /// test text, tokenized with BOS/EOS as the tokenizer adds them.
    pub fn chkhsh(&self, pre: &str) -> Option<String> {
        use sha2::{Digest, Sha256};
        let mut v = self.clone();
        v.pre = Some(pre.to_string());
        v.chat_template = None;
        let mut meta = Vec::new();
        v.metadata(&mut meta);
        let mut w = gguf::GgufWriter::new();
        for (k, val) in meta {
            w.meta(&k, val);
        }
        let f = gguf::Gguf::from_vec("vocab", w.to_bytes()).ok()?;
        let t = tokenizer::Tokenizer::from_gguf(&f).ok()?;
        let ids = t.encode(include_str!("chktxt.txt"), true, true);
        let text = format!("[{}]", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
        Some(Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect())
    }

    /// `_set_vocab_gpt2` over `get_vocab_base`.
    fn gpt2(dir: &Path, hp: &Hparams, pre_override: Option<&str>) -> Result<Vocab, ConvertError> {
        let path = dir.join("tokenizer.json");
        let tj = read_json(&path)?;
        let model = tj.get("model").ok_or_else(|| ConvertError::bad(&path, "no \"model\""))?;
        if model.get("type").and_then(|t| t.as_str()).is_some_and(|t| t != "BPE") {
            return Err(ConvertError::Tokenizer(format!("{}: model type {} is not supported (BPE is)", path.display(), model["type"])));
        }
        let vocab = model.get("vocab").and_then(|v| v.as_object()).ok_or_else(|| ConvertError::bad(&path, "no model.vocab object"))?;
        let mut by_id: std::collections::HashMap<usize, (String, bool)> = std::collections::HashMap::new();
        for (t, id) in vocab {
            let id = id.as_u64().ok_or_else(|| ConvertError::bad(&path, format!("token {t:?} has no integer id")))? as usize;
            by_id.insert(id, (t.clone(), false));
        }
        let mut added_special = std::collections::HashMap::new();
        for a in tj.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
            let (Some(id), Some(content)) = (a.get("id").and_then(|v| v.as_u64()), a.get("content").and_then(|v| v.as_str())) else {
                return Err(ConvertError::bad(&path, "an added token has no id or content"));
            };
            by_id.insert(id as usize, (content.to_string(), true));
            added_special.insert(id as usize, a.get("special").and_then(|v| v.as_bool()).unwrap_or(false));
        }
        let max = by_id.keys().max().copied().unwrap_or(0);
        let n = hp.vocab_size.unwrap_or(by_id.len());
        if max >= n {
            return Err(ConvertError::Tokenizer(format!("token id {max} is past config.json's vocab_size {n}")));
        }
        let mut tokens = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for i in 0..n {
            match by_id.remove(&i) {
                None => {
                    tokens.push(format!("[PAD{i}]"));
                    types.push(UNUSED);
                }
                Some((t, true)) => {
                    if added_special.get(&i).copied().unwrap_or(false) || looks_special(&t) {
                        tokens.push(t);
                        types.push(CONTROL);
                    } else {
                        tokens.push(t.replace('\u{2581}', " "));
                        types.push(USER_DEFINED);
                    }
                }
                Some((t, false)) => {
                    tokens.push(t);
                    types.push(NORMAL);
                }
            }
        }
        // The name is settled in `load`, once the special tokens are known (llama.cpp's
        // name comes from tokenizing a test text, BOS included).
        let pt = tj.get("pre_tokenizer").cloned().unwrap_or(Json::Null);
        let pre = pre_override.map(str::to_string).or_else(|| detect_pre(&pt).map(str::to_string));
        let mut merges = Vec::new();
        match model.get("merges").and_then(|m| m.as_array()) {
            Some(list) => {
                for m in list {
                    match m {
                        Json::String(s) => merges.push(s.clone()),
                        Json::Array(pair) if pair.len() == 2 => {
                            let enc = |s: &Json| s.as_str().unwrap_or("").chars().map(|c| if c == ' ' { '\u{120}' } else { c }).collect::<String>();
                            merges.push(format!("{} {}", enc(&pair[0]), enc(&pair[1])));
                        }
                        _ => return Err(ConvertError::bad(&path, "a merge is neither \"a b\" nor [a, b]")),
                    }
                }
            }
            None => return Err(ConvertError::bad(&path, "no model.merges")),
        }
        Ok(Vocab { model: "gpt2".into(), pre, tokens, scores: None, types, merges, ..Default::default() })
    }

    /// `_create_vocab_sentencepiece` (and Phi3MiniModel's variant of it).
    fn sentencepiece(dir: &Path, hp: &Hparams, tok_config: Option<&Json>) -> Result<Vocab, ConvertError> {
        let path = dir.join("tokenizer.model");
        let bytes = std::fs::read(&path).map_err(|e| ConvertError::io(&path, e))?;
        let sp = sentencepiece::parse(&bytes).map_err(|e| ConvertError::bad(&path, e))?;
        let n = hp.vocab_size.unwrap_or(sp.pieces.len());
        let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
        let mut scores = vec![-10000.0f32; n];
        let mut types = vec![UNUSED; n];
        for (i, p) in sp.pieces.iter().enumerate().take(n) {
            tokens[i] = p.text.clone();
            scores[i] = p.score;
            types[i] = match p.kind {
                UNKNOWN | CONTROL | UNUSED | BYTE => p.kind,
                _ => NORMAL,
            };
        }
        if let Some(added) = opt_json(&dir.join("added_tokens.json"))?.as_ref().and_then(|a| a.as_object()) {
            for (t, id) in added {
                if let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < n) {
                    tokens[id] = t.clone();
                    scores[id] = -1000.0;
                    types[id] = USER_DEFINED;
                }
            }
        }
        let phi3 = hp.arch == Arch::Phi3;
        if let Some(dec) = tok_config.and_then(|c| c.get("added_tokens_decoder")).and_then(|d| d.as_object()) {
            for (id, data) in dec {
                let (Ok(id), Some(content)) = (id.parse::<usize>(), data.get("content").and_then(|c| c.as_str())) else { continue };
                if id >= n {
                    continue;
                }
                let special = data.get("special").and_then(|v| v.as_bool()).unwrap_or(false);
                if special || (!phi3 && looks_special(content)) {
                    types[id] = CONTROL;
                    tokens[id] = content.to_string();
                } else {
                    types[id] = USER_DEFINED;
                    tokens[id] = if phi3 { content.to_string() } else { content.replace('\u{2581}', " ") };
                }
                scores[id] = -1000.0;
            }
        }
        if phi3 {
            if let Some(tj) = opt_json(&dir.join("tokenizer.json"))? {
                for a in tj.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
                    let (Some(id), Some(content)) = (a.get("id").and_then(|v| v.as_u64()).map(|i| i as usize), a.get("content").and_then(|v| v.as_str()))
                    else {
                        continue;
                    };
                    if id < n {
                        tokens[id] = content.to_string();
                        scores[id] = -1000.0;
                        types[id] = if a.get("special").and_then(|v| v.as_bool()).unwrap_or(false) { CONTROL } else { USER_DEFINED };
                    }
                }
            }
        }
        Ok(Vocab { model: "llama".into(), pre: Some("default".into()), tokens, scores: Some(scores), types, ..Default::default() })
    }

    /// `gguf.SpecialVocab`: merges are already read; special ids, `add_*_token` and the
    /// chat template.
    fn special_vocab(&mut self, dir: &Path, tok_config: Option<&Json>, spm: bool) -> Result<(), ConvertError> {
        // The SentencePiece paths bound special ids by the vocabulary (`n_vocab=len(tokens)`).
        let n_vocab = spm.then_some(self.tokens.len());
        let tj = opt_json(&dir.join("tokenizer.json"))?;
        let added: Vec<(u64, String)> = tj
            .as_ref()
            .and_then(|t| t.get("added_tokens"))
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a.get("id")?.as_u64()?, a.get("content")?.as_str()?.to_string())))
            .collect();
        let set_special = |special: &mut Vec<(String, u32)>, kind: &str, id: Option<u64>| {
            let Some(id) = id else { return };
            if n_vocab.is_some_and(|n| id as usize >= n) || special.iter().any(|(k, _)| k == kind) {
                return;
            }
            special.push((kind.to_string(), id as u32));
        };
        if let Some(tj) = tj.as_ref() {
            if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
                let list: Vec<&Json> = match pp.get("processors").and_then(|p| p.as_array()) {
                    Some(a) => a.iter().collect(),
                    None => vec![pp],
                };
                for p in list {
                    match p.get("type").and_then(|t| t.as_str()) {
                        Some("ByteLevel") => {
                            set_default(&mut self.add, "bos", false);
                            set_default(&mut self.add, "eos", false);
                        }
                        Some("TemplateProcessing") => {
                            let single = p.get("single").and_then(|s| s.as_array()).cloned().unwrap_or_default();
                            let cfg_tok = |k: &str| tok_config.and_then(|c| c.get(k)).and_then(token_content);
                            if single.len() > 1 {
                                let first = single[0].get("SpecialToken").and_then(|s| s.get("id")).and_then(|s| s.as_str());
                                if let Some(f) = first {
                                    let is_bos =
                                        cfg_tok("bos_token").as_deref() == Some(f) || cfg_tok("cls_token").as_deref() == Some(f) || tok_config.is_none();
                                    set(&mut self.add, "bos", is_bos);
                                }
                                let last = single[single.len() - 1].get("SpecialToken").and_then(|s| s.get("id")).and_then(|s| s.as_str());
                                if let Some(l) = last {
                                    let is_eos = cfg_tok("eos_token").as_deref() == Some(l) || tok_config.is_none();
                                    set(&mut self.add, "eos", is_eos);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(tc) = tok_config {
            let template = match tc.get("chat_template") {
                Some(Json::String(s)) => Some(s.clone()),
                _ => {
                    let jinja = dir.join("chat_template.jinja");
                    if jinja.is_file() {
                        Some(std::fs::read_to_string(&jinja).map_err(|e| ConvertError::io(&jinja, e))?)
                    } else {
                        opt_json(&dir.join("chat_template.json"))?.and_then(|c| c.get("chat_template").and_then(|t| t.as_str()).map(str::to_string))
                    }
                }
            };
            self.chat_template = template;
            for kind in SPECIAL {
                if let Some(b) = tc.get(format!("add_{kind}_token")).and_then(|v| v.as_bool()) {
                    set_default(&mut self.add, kind, b);
                }
                let Some(content) = tc.get(format!("{kind}_token")).and_then(token_content) else { continue };
                let id = added.iter().find(|(_, c)| *c == content).map(|(id, _)| *id);
                set_special(&mut self.special, kind, id);
            }
        }
        if let Some(cfg) = opt_json(&dir.join("config.json"))? {
            for kind in SPECIAL {
                let id = cfg.get(format!("{kind}_token_id")).or_else(|| cfg.get("text_config").and_then(|t| t.get(format!("{kind}_token_id"))));
                set_special(&mut self.special, kind, id.and_then(|v| v.as_u64()));
            }
        }
        Ok(())
    }

    /// Append the `tokenizer.ggml.*` keys in llama.cpp's order.
    pub fn metadata(&self, meta: &mut Vec<(String, Value)>) {
        let mut put = |k: &str, v: Value| match meta.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v,
            None => meta.push((k.to_string(), v)),
        };
        if let Some((p, true)) = self.add_space_prefix {
            put("tokenizer.ggml.add_space_prefix", Value::Bool(p));
        }
        put("tokenizer.ggml.model", Value::Str(self.model.clone()));
        if let Some(p) = &self.pre {
            put("tokenizer.ggml.pre", Value::Str(p.clone()));
        }
        put("tokenizer.ggml.tokens", Value::Array(Array::Str(self.tokens.clone())));
        if let Some(s) = &self.scores {
            put("tokenizer.ggml.scores", Value::Array(Array::F32(s.clone())));
        }
        put("tokenizer.ggml.token_type", Value::Array(Array::I32(self.types.clone())));
        if !self.merges.is_empty() {
            put("tokenizer.ggml.merges", Value::Array(Array::Str(self.merges.clone())));
        }
        for (kind, id) in &self.special {
            let k = match kind.as_str() {
                "unk" => "tokenizer.ggml.unknown_token_id".to_string(),
                "sep" => "tokenizer.ggml.seperator_token_id".to_string(),
                "pad" => "tokenizer.ggml.padding_token_id".to_string(),
                k => format!("tokenizer.ggml.{k}_token_id"),
            };
            put(&k, Value::U32(*id));
        }
        for (kind, b) in &self.add {
            put(&format!("tokenizer.ggml.add_{kind}_token"), Value::Bool(*b));
        }
        if let Some(t) = &self.chat_template {
            put("tokenizer.chat_template", Value::Str(t.clone()));
        }
        if let Some((p, false)) = self.add_space_prefix {
            put("tokenizer.ggml.add_space_prefix", Value::Bool(p));
        }
    }
}

fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

fn set(list: &mut Vec<(String, bool)>, kind: &str, v: bool) {
    match list.iter_mut().find(|(k, _)| k == kind) {
        Some(slot) => slot.1 = v,
        None => list.push((kind.to_string(), v)),
    }
}

fn set_default(list: &mut Vec<(String, bool)>, kind: &str, v: bool) {
    if !list.iter().any(|(k, _)| k == kind) {
        list.push((kind.to_string(), v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_pre_tokenizer_is_recognised_from_its_json() {
        for (name, ..) in PRE_TOKENIZERS {
            assert_eq!(detect_pre(&pre_tokenizer_json(name).unwrap()), Some(*name));
        }
        assert_eq!(detect_pre(&serde_json::json!({"type": "Whitespace"})), None);
    }
}
