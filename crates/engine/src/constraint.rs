//! Constrained decoding: a grammar (JSON schema, any JSON object, regular expression, list
//! of choices, Lark grammar) compiled by llguidance into a per-sequence matcher that gives
//! the set of tokens allowed next. The sampler only ever sees logits of allowed tokens, so
//! the output cannot drift from the format.
//!
//! The vocabulary index (a token trie) is built once per model, on first use; compiling a
//! grammar and computing a mask are per request and per token.
//!
//! A JSON schema's objects are closed to undeclared keys unless it says otherwise (see
//! `close_objects`), as OpenAI's strict mode and llama.cpp do: left open, a small model
//! invents keys until it runs out of tokens.

use crate::loaded::LoadedModel;
use crate::EngineError;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
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
        Guidance::for_vocabulary(&lm.tokenizer, lm.model.config.n_vocab)
    }

    /// [`Guidance::new`] from a tokenizer and the logits' width (>= the tokenizer's).
    pub(crate) fn for_vocabulary(tok: &tokenizer::Tokenizer, n_vocab: usize) -> Result<Guidance, EngineError> {
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
                TopLevelGrammar::from_json_schema(compact(close_objects(schema.clone())))
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

/// No whitespace between JSON tokens (separators are "," and ":"), so a small model cannot
/// fill its budget with newlines inside an object.
fn compact(mut schema: Value) -> Value {
    if let Value::Object(m) = &mut schema {
        let opts = m.entry("x-guidance").or_insert_with(|| json!({}));
        if let Value::Object(o) = opts {
            o.entry("whitespace_flexible").or_insert(Value::Bool(false));
        }
    }
    schema
}

/// `schema` with every object schema that declares its keys (`properties`, or keys its
/// `allOf`/`anyOf`/`oneOf`/`$ref` parts declare) and says nothing of others given
/// `"additionalProperties": false`, at every depth: properties, items, prefixItems,
/// additionalProperties and patternProperties schemas, `$defs`/`definitions`, applicators.
///
/// Left open: `additionalProperties` `true` or a schema, `patternProperties` or
/// `unevaluatedProperties` (keys beyond a list are meant), and an object that declares no
/// keys at all (`{"type": "object"}`: any object, as in llama.cpp).
///
/// Schemas that are combined (an `allOf` member and its siblings, an `anyOf`/`oneOf` branch
/// and the properties beside it, a `$ref` and its siblings) must each allow the keys the
/// others declare, or the intersection would forbid them: each is closed with those keys
/// added to its `properties` as `{}` (no constraint of its own; the declaring part
/// constrains the value). `required` keys without a `properties` entry are allowed the same
/// way. A `$ref`'s target is closed with the keys of every place that refers to it.
/// Anything unresolvable (a remote `$ref`) leaves the objects combined with it open.
pub(crate) fn close_objects(schema: Value) -> Value {
    let mut closer = Closer { root: &schema, ref_ctx: HashMap::new(), ref_names: Default::default(), changed: false, visited: HashSet::new() };
    // The keys a `$ref` target must allow depend on where it is referred to, and those places
    // may be inside other targets: repeat until they settle (they only grow).
    let mut edits = Vec::new();
    let mut settled = false;
    for _ in 0..16 {
        closer.changed = false;
        closer.visited.clear();
        edits.clear();
        closer.walk(&schema, String::new(), Some(BTreeSet::new()), 0, &mut edits);
        // Targets outside the places walked (`#/components/...`).
        loop {
            let pending: Vec<String> = closer.ref_ctx.keys().filter(|p| !closer.visited.contains(*p)).cloned().collect();
            if pending.is_empty() {
                break;
            }
            for p in pending {
                closer.visited.insert(p.clone());
                if let Some(target) = schema.pointer(&p) {
                    closer.walk(target, p, Some(BTreeSet::new()), 0, &mut edits);
                }
            }
        }
        if !closer.changed {
            settled = true;
            break;
        }
    }
    if !settled {
        return schema;
    }
    let mut out = schema.clone();
    for (ptr, add) in edits {
        let Some(Value::Object(m)) = out.pointer_mut(&ptr) else { continue };
        if let Value::Object(props) = m.entry("properties").or_insert_with(|| json!({})) {
            for name in add {
                props.entry(name).or_insert_with(|| json!({}));
            }
        }
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    out
}

/// Keys an object may have, or `None` when it may have keys beyond any list.
type Names = Option<BTreeSet<String>>;

fn union(a: Names, b: Names) -> Names {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.extend(b);
            Some(a)
        }
        _ => None,
    }
}

/// Whether an object schema says its objects may have keys it does not list.
fn opens(m: &Map<String, Value>) -> bool {
    m.get("additionalProperties").is_some_and(|a| *a != Value::Bool(false)) || m.contains_key("patternProperties") || m.contains_key("unevaluatedProperties")
}

/// The keys an object schema lists itself: `properties` and `required`.
fn own_names(m: &Map<String, Value>) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = m.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default();
    names.extend(m.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)));
    names
}

fn members<'v>(m: &'v Map<String, Value>, key: &str) -> impl Iterator<Item = &'v Value> {
    m.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

struct Closer<'a> {
    root: &'a Value,
    /// Keys each `$ref` target (by JSON pointer) must allow besides its own.
    ref_ctx: HashMap<String, Names>,
    /// [`Closer::names`] of each `$ref` target, once known (`None` while being worked out:
    /// met again, it is a cycle, taken as open).
    ref_names: std::cell::RefCell<HashMap<String, Option<Names>>>,
    changed: bool,
    visited: HashSet<String>,
}

impl<'a> Closer<'a> {
    /// A local `$ref`'s JSON pointer and target.
    fn resolve(&self, r: &Value) -> Option<(String, &'a Value)> {
        let ptr = r.as_str()?.strip_prefix('#')?;
        if !(ptr.is_empty() || ptr.starts_with('/')) || ptr.contains('%') {
            return None;
        }
        Some((ptr.to_string(), self.root.pointer(ptr)?))
    }

    /// The keys an object valid against `s` may have by what `s` and the parts combined
    /// into it declare.
    fn names(&self, s: &Value, depth: usize) -> Names {
        let Value::Object(m) = s else { return Some(BTreeSet::new()) };
        if depth > 64 || opens(m) {
            return None;
        }
        let mut names = Some(own_names(m));
        if let Some(r) = m.get("$ref") {
            names = union(names, self.ref_target_names(r, depth + 1));
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for sub in members(m, key) {
                names = union(names, self.names(sub, depth + 1));
            }
        }
        names
    }

    fn ref_target_names(&self, r: &Value, depth: usize) -> Names {
        let (ptr, target) = self.resolve(r)?;
        if let Some(known) = self.ref_names.borrow().get(&ptr) {
            return known.clone().flatten();
        }
        self.ref_names.borrow_mut().insert(ptr.clone(), None);
        let names = self.names(target, depth);
        self.ref_names.borrow_mut().insert(ptr, Some(names.clone()));
        names
    }

    /// Record the closings of `s` (at JSON pointer `ptr`) and below, `ctx` being the keys
    /// the schemas combined with it declare.
    fn walk(&mut self, s: &Value, ptr: String, ctx: Names, depth: usize, edits: &mut Vec<(String, Vec<String>)>) {
        let Value::Object(m) = s else { return };
        if depth > 128 {
            return;
        }
        self.visited.insert(ptr.clone());
        let ctx = match self.ref_ctx.get(&ptr) {
            Some(extra) => union(ctx, extra.clone()),
            None => ctx,
        };
        let own = own_names(m);
        // `base`: what every object valid here is combined with; `all`: with the branches.
        let mut base = if opens(m) { None } else { union(ctx, Some(own.clone())) };
        let target = m.get("$ref").map(|r| self.resolve(r));
        if let Some(r) = m.get("$ref") {
            base = union(base, self.ref_target_names(r, 0));
        }
        for sub in members(m, "allOf") {
            base = union(base, self.names(sub, 0));
        }
        let mut all = base.clone();
        for sub in members(m, "anyOf").chain(members(m, "oneOf")) {
            all = union(all, self.names(sub, 0));
        }
        if let Some(Some((tptr, _))) = &target {
            let entry = self.ref_ctx.entry(tptr.clone()).or_insert_with(|| Some(BTreeSet::new()));
            let grown = union(entry.clone(), all.clone());
            if grown != *entry {
                *entry = grown;
                self.changed = true;
            }
        }
        let closable = !m.contains_key("additionalProperties")
            && !m.contains_key("unevaluatedProperties")
            && !m.contains_key("$ref")
            && m.get("properties").is_none_or(Value::is_object);
        if let (true, Some(names)) = (closable, &all) {
            if m.contains_key("properties") || !names.is_empty() {
                let props = m.get("properties").and_then(Value::as_object);
                edits.push((ptr.clone(), names.iter().filter(|n| !props.is_some_and(|p| p.contains_key(*n))).cloned().collect()));
            }
        }
        let at = |path: &[&str]| -> String {
            let mut p = ptr.clone();
            for part in path {
                p.push('/');
                p.push_str(&pointer_escape(part));
            }
            p
        };
        let fresh = || Some(BTreeSet::new());
        for key in ["properties", "patternProperties", "$defs", "definitions"] {
            if let Some(Value::Object(children)) = m.get(key) {
                for (k, v) in children {
                    self.walk(v, at(&[key, k]), fresh(), depth + 1, edits);
                }
            }
        }
        for key in ["additionalProperties", "additionalItems", "items"] {
            match m.get(key) {
                Some(v @ Value::Object(_)) => self.walk(v, at(&[key]), fresh(), depth + 1, edits),
                // `items` as an array: draft 4's tuple form.
                Some(Value::Array(items)) => {
                    for (i, v) in items.iter().enumerate() {
                        self.walk(v, at(&[key, &i.to_string()]), fresh(), depth + 1, edits);
                    }
                }
                _ => {}
            }
        }
        for (key, combined) in [("prefixItems", fresh()), ("allOf", all.clone()), ("anyOf", base.clone()), ("oneOf", base.clone())] {
            for (i, v) in members(m, key).enumerate() {
                self.walk(v, at(&[key, &i.to_string()]), combined.clone(), depth + 1, edits);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    #[test]
    fn objects_with_properties_are_closed_at_every_depth() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "pos": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                "tags": {"type": "array", "items": {"properties": {"k": {"type": "string"}}}},
                "pair": {"type": "array", "prefixItems": [{"properties": {"a": {}}}, {"type": "string"}]},
                "old_tuple": {"type": "array", "items": [{"properties": {"b": {}}}]},
                "map": {"type": "object", "additionalProperties": {"properties": {"v": {}}}},
                "pat": {"patternProperties": {"^x": {"properties": {"w": {}}}}}
            },
            "required": ["name"]
        });
        let expected = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "pos": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false},
                "tags": {"type": "array", "items": {"properties": {"k": {"type": "string"}}, "additionalProperties": false}},
                "pair": {"type": "array", "prefixItems": [{"properties": {"a": {}}, "additionalProperties": false}, {"type": "string"}]},
                "old_tuple": {"type": "array", "items": [{"properties": {"b": {}}, "additionalProperties": false}]},
                // Open by its own word; the schema of its values is closed.
                "map": {"type": "object", "additionalProperties": {"properties": {"v": {}}, "additionalProperties": false}},
                // Keys matching a pattern are meant: left open; its value schemas are closed.
                "pat": {"patternProperties": {"^x": {"properties": {"w": {}}, "additionalProperties": false}}}
            },
            "required": ["name"],
            "additionalProperties": false
        });
        assert_eq!(close_objects(schema), expected);
    }

    #[test]
    fn objects_that_say_they_are_open_or_list_no_keys_stay_open() {
        for open in [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true}),
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}}),
            json!({"type": "object", "properties": {"a": {}}, "unevaluatedProperties": false}),
            json!({"type": "string"}),
            json!({"type": "array", "items": {"type": "object"}}),
            json!(true),
            // A remote reference: what it allows is unknown, so what is combined with it stays open.
            json!({"allOf": [{"$ref": "https://example.com/s.json"}, {"properties": {"a": {}}}]}),
            // `const`, `enum` and `default` values are data, not schemas.
            json!({"type": "object", "default": {"properties": {"x": 1}}, "enum": [{"properties": {}}], "additionalProperties": true}),
        ] {
            assert_eq!(close_objects(open.clone()), open);
        }
        // Already closed: nothing to add.
        let closed = json!({"properties": {"a": {}}, "additionalProperties": false});
        assert_eq!(close_objects(closed.clone()), closed);
        // Declared keys with no properties left: only `{}`.
        assert_eq!(close_objects(json!({"type": "object", "properties": {}})), json!({"type": "object", "properties": {}, "additionalProperties": false}));
        // A required key with no schema stays allowed (else the schema would be unsatisfiable).
        assert_eq!(
            close_objects(json!({"properties": {"a": {}}, "required": ["a", "b"]})),
            json!({"properties": {"a": {}, "b": {}}, "required": ["a", "b"], "additionalProperties": false})
        );
    }

    #[test]
    fn definitions_and_references_are_closed() {
        let schema = json!({
            "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}}},
            "definitions": {"Old": {"properties": {"o": {}}}},
            "type": "object",
            "properties": {"points": {"type": "array", "items": {"$ref": "#/$defs/Point"}}, "old": {"$ref": "#/definitions/Old"}}
        });
        let out = close_objects(schema);
        assert_eq!(out["additionalProperties"], json!(false));
        assert_eq!(out["$defs"]["Point"]["additionalProperties"], json!(false));
        assert_eq!(out["$defs"]["Point"]["properties"], json!({"x": {"type": "number"}, "y": {"type": "number"}}));
        assert_eq!(out["definitions"]["Old"]["additionalProperties"], json!(false));
        // A `$ref` gets no siblings: its target is closed.
        assert_eq!(out["properties"]["points"]["items"], json!({"$ref": "#/$defs/Point"}));
        // A reference cycle through applicators ends (and is taken as open).
        let cyclic = json!({"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"properties": {"a": {}}}]}}, "$ref": "#/$defs/A"});
        let out = close_objects(cyclic);
        assert!(out["$defs"]["A"].get("additionalProperties").is_none());
        // A target outside the usual places, and a recursive one.
        let out = close_objects(json!({
            "components": {"Node": {"properties": {"v": {}, "next": {"$ref": "#/components/Node"}}}},
            "$ref": "#/components/Node"
        }));
        assert_eq!(out["components"]["Node"]["additionalProperties"], json!(false));
        assert!(out.get("additionalProperties").is_none());
    }

    #[test]
    fn combined_schemas_allow_each_others_keys() {
        // allOf: every part allows the keys of all; the whole allows no others.
        let out = close_objects(json!({
            "$defs": {"A": {"properties": {"a": {"type": "integer"}}, "required": ["a"]}},
            "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"b": {"type": "string"}}, "required": ["b"]}]
        }));
        assert_eq!(out["$defs"]["A"]["properties"], json!({"a": {"type": "integer"}, "b": {}}));
        assert_eq!(out["$defs"]["A"]["additionalProperties"], json!(false));
        assert_eq!(out["allOf"][1]["properties"], json!({"a": {}, "b": {"type": "string"}}));
        assert_eq!(out["properties"], json!({"a": {}, "b": {}}));
        assert_eq!(out["additionalProperties"], json!(false));
        // anyOf beside properties: a branch allows its keys and the shared ones.
        let out = close_objects(json!({
            "properties": {"kind": {"type": "string"}},
            "anyOf": [{"properties": {"x": {}}}, {"properties": {"y": {}}}]
        }));
        assert_eq!(out["properties"], json!({"kind": {"type": "string"}, "x": {}, "y": {}}));
        assert_eq!(out["anyOf"][0], json!({"properties": {"x": {}, "kind": {}}, "additionalProperties": false}));
        assert_eq!(out["anyOf"][1], json!({"properties": {"y": {}, "kind": {}}, "additionalProperties": false}));
        // A branch that is open by its own word keeps the whole open.
        let out =
            close_objects(json!({"properties": {"kind": {}}, "oneOf": [{"properties": {"x": {}}, "additionalProperties": true}, {"properties": {"y": {}}}]}));
        assert!(out.get("additionalProperties").is_none());
        assert_eq!(out["oneOf"][1]["additionalProperties"], json!(false));
    }

    /// The tiny synthetic model's tokenizer (byte-level BPE) and its guidance, built once.
    fn tiny() -> &'static (tokenizer::Tokenizer, Guidance) {
        static TINY: OnceLock<(tokenizer::Tokenizer, Guidance)> = OnceLock::new();
        TINY.get_or_init(|| {
            let file = gguf::Gguf::from_vec("tiny.gguf", model::tiny::tiny_model(&model::tiny::TinySpec::default())).unwrap();
            let tok = tokenizer::Tokenizer::from_gguf(&file).unwrap();
            let guidance = Guidance::for_vocabulary(&tok, tok.n_vocab()).unwrap();
            (tok, guidance)
        })
    }

    /// The texts of the tokens a schema allows after `prefix` (which it must allow).
    fn allowed_after(schema: Value, prefix: &str) -> Vec<String> {
        let (tok, guidance) = tiny();
        let mut c = guidance.compile(&Grammar::JsonSchema(schema)).unwrap();
        for t in tok.encode(prefix, false, false) {
            c.commit(t).unwrap_or_else(|e| panic!("{prefix:?} is refused at token {t}: {e}"));
        }
        let n = tok.n_vocab();
        let mut out = Vec::new();
        c.apply(&vec![0.0; n], &mut out).unwrap();
        (0..n as u32).filter(|&i| out[i as usize].is_finite()).map(|i| tok.decode(&[i], true)).collect()
    }

    #[test]
    fn undeclared_keys_are_not_allowed_in_nested_objects() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "pos": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}
            },
            "required": ["name", "pos"]
        });
        let inner = allowed_after(schema.clone(), r#"{"name":"a","pos":{"x":1,"y":2"#);
        assert!(inner.iter().any(|t| t.starts_with('}')), "{inner:?}");
        assert!(!inner.iter().any(|t| t.starts_with(',')), "another key is allowed after the last declared one: {inner:?}");
        let outer = allowed_after(schema.clone(), r#"{"name":"a","pos":{"x":1,"y":2}"#);
        assert!(outer.iter().any(|t| t.starts_with('}')), "{outer:?}");
        assert!(!outer.iter().any(|t| t.starts_with(',')), "another key is allowed after the last declared one: {outer:?}");
        // A recursive definition.
        let tree = json!({
            "$defs": {"N": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/N"}}}, "required": ["v"]}},
            "$ref": "#/$defs/N"
        });
        let mid = allowed_after(tree.clone(), r#"{"v":1,"kids":[{"v":2"#);
        assert!(mid.iter().any(|t| t.starts_with(',')), "kids must still be allowed: {mid:?}");
        let end = allowed_after(tree, r#"{"v":1,"kids":[{"v":2,"kids":[]"#);
        assert!(!end.iter().any(|t| t.starts_with(',')), "{end:?}");
        // Saying so keeps an object open.
        let mut open = schema;
        open["properties"]["pos"]["additionalProperties"] = json!(true);
        let inner = allowed_after(open, r#"{"name":"a","pos":{"x":1,"y":2"#);
        assert!(inner.iter().any(|t| t.starts_with(',')), "{inner:?}");
    }

    #[test]
    fn combined_objects_still_compile_and_take_every_declared_key() {
        let schema = json!({
            "$defs": {"A": {"properties": {"a": {"type": "integer"}}, "required": ["a"]}},
            "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]
        });
        let mid = allowed_after(schema.clone(), r#"{"a":1"#);
        assert!(mid.iter().any(|t| t.starts_with(',')), "b must still be allowed: {mid:?}");
        let end = allowed_after(schema, r#"{"a":1,"b":2"#);
        assert!(end.iter().any(|t| t.starts_with('}')), "{end:?}");
        assert!(!end.iter().any(|t| t.starts_with(',')), "{end:?}");
        // anyOf branches beside shared properties.
        let schema = json!({
            "properties": {"kind": {"type": "string"}},
            "required": ["kind"],
            "anyOf": [{"properties": {"x": {"type": "integer"}}, "required": ["x"]}, {"properties": {"y": {"type": "integer"}}, "required": ["y"]}]
        });
        let mid = allowed_after(schema.clone(), r#"{"kind":"p""#);
        assert!(mid.iter().any(|t| t.starts_with(',')), "x or y must still be allowed: {mid:?}");
        for prefix in [r#"{"kind":"p","x":1"#, r#"{"kind":"p","y":1"#] {
            let end = allowed_after(schema.clone(), prefix);
            assert!(end.iter().any(|t| t.starts_with('}')), "{end:?}");
            assert!(!end.iter().any(|t| t.starts_with(',')), "{prefix}: {end:?}");
        }
    }
}
