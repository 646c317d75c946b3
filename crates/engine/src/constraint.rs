//! Constrained decoding: a grammar (JSON schema, any JSON object, regular expression, list
//! of choices, Lark grammar) compiled by llguidance into a per-sequence matcher that gives
//! the set of tokens allowed next. The sampler only ever sees logits of allowed tokens, so
//! the output cannot drift from the format.
//!
//! The vocabulary index (a token trie) is built once per model, on first use; compiling a
//! grammar and computing a mask are per request and per token.

use crate::loaded::LoadedModel;
use crate::EngineError;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::sync::Arc;
use toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie};

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON value valid against this JSON Schema.
    JsonSchema(Value),
    /// Any JSON object (Ollama `format: "json"`, OpenAI `json_object`).
    JsonObject,
    /// A regular expression matching the whole output.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark syntax (which can embed JSON schemas with `%json`).
    Lark(String),
}

/// Per-model compiler of grammars into matchers.
pub struct Guidance {
    factory: ParserFactory,
    /// Every end-of-generation token: each is allowed wherever the grammar allows EOS.
    eog: Vec<u32>,
}

impl Guidance {
    /// Index the model's vocabulary: each token's bytes, with control tokens marked by
    /// llguidance's 0xFF prefix so text never matches them by accident.
    pub fn new(lm: &LoadedModel) -> Result<Guidance, EngineError> {
        let tok = &lm.tokenizer;
        let n_vocab = lm.model.config.n_vocab; // the logits' width, >= the tokenizer's
        let words: Vec<Vec<u8>> = (0..n_vocab as u32)
            .map(|i| {
                if (i as usize) >= tok.n_vocab() {
                    let mut w = vec![0xFF];
                    w.extend_from_slice(format!("<[{i}]>").as_bytes());
                    return w;
                }
                let piece = tok.token_to_piece(i, false);
                if tok.is_control(i) || piece.is_empty() {
                    let mut w = vec![0xFF];
                    w.extend_from_slice(tok.token_text(i).unwrap_or("").as_bytes());
                    if w.len() == 1 {
                        w.extend_from_slice(format!("<[{i}]>").as_bytes());
                    }
                    w
                } else {
                    piece
                }
            })
            .collect();
        let eos = tok.eos().or_else(|| tok.eog_ids().first().copied()).unwrap_or(0);
        let info = TokRxInfo { vocab_size: n_vocab as u32, tok_eos: eos, tok_bos: tok.bos(), tok_pad: None, tok_unk: None, tok_end_of_turn: None };
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| EngineError::Grammar(e.to_string()))?;
        factory.quiet();
        Ok(Guidance { factory, eog: tok.eog_ids().to_vec() })
    }

    /// Compile `g`. Invalid or unsupported schemas, bad regular expressions and grammars
    /// that no output can satisfy are errors here, before any token is generated.
    pub fn compile(&self, g: &Grammar) -> Result<Constraint, EngineError> {
        let bad = |e: String| EngineError::Grammar(e);
        let top = match g {
            Grammar::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(bad("the JSON schema must be an object".into()));
                }
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(compact(json!({"type": "object"}))),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Grammar::Choice(options) => {
                if options.is_empty() || options.iter().any(String::is_empty) {
                    return Err(bad("choices must be a non-empty list of non-empty strings".into()));
                }
                let alts: Vec<String> = options.iter().map(|o| serde_json::to_string(o).expect("strings serialise")).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
            Grammar::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        };
        let parser = self.factory.create_parser(top).map_err(|e| bad(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        // A grammar no output satisfies shows as an error or an empty first mask.
        let first = matcher.compute_mask().map_err(|e| bad(e.to_string()))?;
        if first.num_set() == 0 {
            return Err(bad("no output can satisfy it".into()));
        }
        let eos = self.factory.tok_env().tok_trie().eos_token();
        Ok(Constraint { matcher, eos, eog: self.eog.clone(), mask: Some(first) })
    }
}

/// Whitespace between JSON tokens fixed (", " and ": "), so a small model cannot fill
/// its budget with newlines inside an object.
fn compact(mut schema: Value) -> Value {
    if let Value::Object(m) = &mut schema {
        let opts = m.entry("x-guidance").or_insert_with(|| json!({}));
        if let Value::Object(o) = opts {
            o.entry("whitespace_flexible").or_insert(Value::Bool(false));
        }
    }
    schema
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("done", &self.is_done()).finish_non_exhaustive()
    }
}

/// The state of one constrained sequence.
pub struct Constraint {
    matcher: Matcher,
    eos: u32,
    eog: Vec<u32>,
    /// The mask for the next token, once computed.
    mask: Option<SimpleVob>,
}

impl Constraint {
    /// Compute the mask of tokens allowed next (the expensive part: run it beside the
    /// forward pass). A finished grammar allows only end-of-sequence.
    pub fn prepare(&mut self) {
        if self.mask.is_none() {
            self.mask = self.matcher.compute_mask_or_eos().ok();
        }
    }

    /// Copy `logits` into `out` with every disallowed token at -inf.
    pub fn apply(&mut self, logits: &[f32], out: &mut Vec<f32>) -> Result<(), EngineError> {
        self.prepare();
        let mask = self.mask.as_ref().ok_or_else(|| EngineError::Grammar(self.matcher.get_error().unwrap_or_else(|| "the grammar failed".into())))?;
        out.clear();
        out.resize(logits.len(), f32::NEG_INFINITY);
        mask.iter_set_entries(|i| {
            if let (Some(o), Some(&l)) = (out.get_mut(i), logits.get(i)) {
                *o = l;
            }
        });
        if mask.num_set() == 0 {
            return Err(EngineError::Grammar("the grammar allows no token here".into()));
        }
        if mask.is_allowed(self.eos) {
            for &t in &self.eog {
                if let (Some(o), Some(&l)) = (out.get_mut(t as usize), logits.get(t as usize)) {
                    *o = l;
                }
            }
        }
        Ok(())
    }

    /// Advance past the sampled token.
    pub fn commit(&mut self, id: u32) -> Result<(), EngineError> {
        self.mask = None;
        if id == self.eos || self.eog.contains(&id) {
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(|e| EngineError::Grammar(e.to_string()))
    }

    /// Whether the output is complete: nothing can follow it.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// The token that ends a sequence whose grammar is satisfied.
    pub fn eos(&self) -> u32 {
        self.eos
    }
}
