//! The vocabulary read from `tokenizer.ggml.*` metadata: token texts, scores, attributes,
//! special ids, the end-of-generation set and the special-token list used to partition text.
//!
//! The order of the steps follows `llama_vocab::impl::load` in llama.cpp's
//! `src/llama-vocab.cpp`, because later steps read attributes that earlier ones change (for
//! example `</s>` becomes a control token when it is put in the end-of-generation set, and
//! so is split out of text with special parsing on).

use gguf::{Array, Gguf, Value};

use crate::TokenizerError;

/// Token attributes (llama.cpp's `llama_token_attr` bits).
pub(crate) mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// The two vocabulary families we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VocabKind {
    /// `tokenizer.ggml.model = "llama"`: SentencePiece with scores and byte fallback.
    Spm,
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with merges.
    Bpe,
}

#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: VocabKind,
    pub texts: Texts,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    ids: Ids,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// End-of-generation ids, ascending.
    pub eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first (`cache_special_tokens`).
    pub special: Vec<u32>,
}

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";

/// Token texts that mark an end-of-turn token when `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// Texts of fill-in-the-middle tokens, found when their ids are not in the metadata:
/// (metadata key suffix, texts). Only pad, repo and sep end generation; all are made control.
const FIM_TEXTS: &[(&str, &[&str])] = &[
    ("fim_pre", &["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"]),
    ("fim_suf", &["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"]),
    ("fim_mid", &["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"]),
    ("fim_pad", &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]),
    ("fim_rep", &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]),
    ("fim_sep", &["<|file_sep|>"]),
];
/// Token texts that always end generation (the `special_eog_ids` text list in `load`).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

impl Vocab {
    /// Read the vocabulary. `bpe_add_bos` is the pre-tokenizer's default for `add_bos`.
    pub fn load(f: &Gguf, kind: VocabKind, bpe_add_bos: bool) -> Result<Vocab, TokenizerError> {
        let texts = read_tokens(f)?;
        let n = texts.len();
        let scores = match f.get(KEY_SCORES) {
            None => vec![0.0; n],
            Some(v) => read_array(v, KEY_SCORES, n, Array::to_f32s)?,
        };
        let attrs = match f.get(KEY_TYPES) {
            None => vec![attr::NORMAL; n],
            Some(v) => read_array(v, KEY_TYPES, n, Array::to_i64s)?.into_iter().map(type_to_attr).collect(),
        };
        let ids = Ids::index(&texts)?;

        // Defaults per vocabulary type, then the metadata (`load`, "special tokens").
        let (bos, eos, unk) = match kind {
            VocabKind::Spm => (Some(1), Some(2), Some(0)),
            VocabKind::Bpe => (Some(11), Some(11), None),
        };
        let id = |key: &str, default: Option<u32>| special_id(f, key, default, n);
        let bos = id("bos_token_id", bos);
        let eos = id("eos_token_id", eos);
        let unk = id("unknown_token_id", unk);
        let eot = id("eot_token_id", None);
        let eom = id("eom_token_id", None);
        let mut fim: Vec<Option<u32>> = FIM_TEXTS.iter().map(|(k, _)| id(&format!("{k}_token_id"), None)).collect();
        for (slot, old) in [(0, "prefix_token_id"), (1, "suffix_token_id"), (2, "middle_token_id")] {
            fim[slot] = id(old, fim[slot]); // deprecated keys, read last as llama.cpp does
        }

        let (add_bos_default, add_space_default) = match kind {
            VocabKind::Spm => (true, true),
            VocabKind::Bpe => (bpe_add_bos, false),
        };
        let add_bos = f.metadata_bool("tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default);
        let add_eos = f.metadata_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);
        let add_space_prefix = f.metadata_bool("tokenizer.ggml.add_space_prefix").unwrap_or(add_space_default);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::MissingSpecialToken { flag: "tokenizer.ggml.add_bos_token", id_key: "tokenizer.ggml.bos_token_id" });
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::MissingSpecialToken { flag: "tokenizer.ggml.add_eos_token", id_key: "tokenizer.ggml.eos_token_id" });
        }

        let mut v = Vocab { kind, texts, scores, attrs, ids, bos, eos, unk, add_bos, add_eos, add_space_prefix, eog: Vec::new(), special: Vec::new() };
        let (eot, eom) = (v.detect(eot, EOT_TEXTS), v.detect(eom, &["<|eom_id|>"]));
        for (slot, (_, texts)) in fim.iter_mut().zip(FIM_TEXTS) {
            *slot = v.detect(*slot, texts);
        }
        v.mark_unused();
        v.build_eog(eot, eom, &fim[3..]);
        v.build_special();
        v.apply_name_fixups(f);
        Ok(v)
    }

    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    pub fn attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// The first token (lowest id) whose text is in `texts`, when `current` is unset; the
    /// token is made a control token. llama.cpp walks an unordered map here, so with several
    /// candidates its pick is arbitrary; ours is the lowest id.
    fn detect(&mut self, current: Option<u32>, texts: &[&str]) -> Option<u32> {
        if current.is_some() {
            return current;
        }
        let found = (0..self.texts.len()).find(|&i| texts.contains(&&self.texts[i]))?;
        self.attrs[found] |= attr::CONTROL;
        Some(found as u32)
    }

    /// Control tokens with "unused" in their text are also marked unused.
    fn mark_unused(&mut self) {
        for (t, a) in self.texts.iter().zip(self.attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
    }

    /// The end-of-generation set, with llama.cpp's text list and workarounds.
    fn build_eog(&mut self, eot: Option<u32>, eom: Option<u32>, fim_eog: &[Option<u32>]) {
        let mut eog: Vec<u32> = fim_eog.iter().flatten().copied().collect();
        for (i, t) in self.texts.iter().enumerate() {
            if EOG_TEXTS.contains(&t) {
                eog.push(i as u32);
                self.attrs[i] |= attr::CONTROL;
            }
        }
        // gpt-oss: these are always rendered (`@ngxson : quick hack for gpt-oss`).
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(i) = self.id_of(t) {
                self.attrs[i as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([self.eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let find = |eog: &[u32], texts: &[&str]| eog.iter().copied().find(|&i| texts.contains(&&self.texts[i as usize]));
        // o200k_harmony and solar-open: "<|end|>" is not end-of-generation there.
        let end = find(&eog, &["<|end|>"]);
        let has_return = find(&eog, &["<|return|>"]).is_some();
        let has_call = find(&eog, &["<|call|>", "<|calls|>"]).is_some();
        let has_flush = find(&eog, &["<|flush|>"]).is_some();
        if let Some(end) = end.filter(|_| has_call && (has_return || has_flush)) {
            eog.retain(|&i| i != end);
            self.attrs[end as usize] = attr::USER_DEFINED;
        }
        // gemma4 and paddleocr: "</s>" is not end-of-generation where "<|tool_response>" is.
        if find(&eog, &["<|tool_response>"]).is_some() {
            if let Some(s) = find(&eog, &["</s>"]) {
                eog.retain(|&i| i != s);
                self.attrs[s as usize] = attr::NORMAL;
            }
        }
        self.eog = eog;
    }

    /// Tokens split out of text before tokenizing, longest first. llama.cpp sorts with
    /// `std::sort` (not stable); we break ties by id so the order is reproducible.
    fn build_special(&mut self) {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut special: Vec<u32> = (0..self.texts.len() as u32).filter(|&i| self.attrs[i as usize] & mask != 0).collect();
        special.sort_by_key(|&i| (std::cmp::Reverse(self.texts[i as usize].len()), i));
        self.special = special;
    }

    /// Per-model attribute fix-ups keyed on names (end of `load`).
    fn apply_name_fixups(&mut self, f: &Gguf) {
        let name = str_key(f, "general.name").unwrap_or("").to_lowercase();
        let pre = str_key(f, "tokenizer.ggml.pre").unwrap_or("");
        let arch = str_key(f, "general.architecture").unwrap_or("");
        let set = |v: &mut Vocab, text: &str, bit: u32, on: bool| {
            // llama.cpp throws (`unordered_map::at`) when the token is missing; we skip it.
            if let Some(i) = v.id_of(text) {
                let a = &mut v.attrs[i as usize];
                *a = if on { *a | bit } else { *a & !bit };
            }
        };
        let has = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        if has(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"]) || has(arch, &["nomic-bert-moe", "jina-bert-v3"]) {
            set(self, "<mask>", attr::LSTRIP, true);
        } else if has(&name, &["phi-3", "phi3"]) {
            for i in self.special.clone() {
                self.attrs[i as usize] |= attr::RSTRIP;
            }
            set(self, "</s>", attr::RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(self, t, attr::RSTRIP, false);
            }
        }
    }
}

/// llama.cpp's `LLAMA_TOKEN_TYPE_*` to attribute bits.
fn type_to_attr(t: i64) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // undefined
    }
}

/// Every token's text in one buffer (a vocabulary of 262,144 short strings as separate
/// `String`s costs ~15 MiB per copy): text `i` is `buf[offsets[i]..offsets[i + 1]]`.
#[derive(Debug)]
pub(crate) struct Texts {
    buf: String,
    offsets: Vec<u32>,
}

impl Texts {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let (a, b) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        Some(&self.buf[a as usize..b as usize])
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.offsets.windows(2).map(|w| &self.buf[w[0] as usize..w[1] as usize])
    }
}

impl std::ops::Index<usize> for Texts {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        self.get(i).unwrap_or_else(|| panic!("token {i} of {}", self.len()))
    }
}

/// Text to id: a hash table of ids whose keys are the texts in [`Texts`], so no text is
/// stored twice.
#[derive(Debug)]
struct Ids {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl Ids {
    /// Every text's id; two tokens with one text are an error.
    fn index(texts: &Texts) -> Result<Ids, TokenizerError> {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        let mut table = hashbrown::HashTable::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            match table.entry(hasher.hash_one(t), |&id: &u32| &texts[id as usize] == t, |&id| hasher.hash_one(&texts[id as usize])) {
                hashbrown::hash_table::Entry::Occupied(e) => {
                    return Err(TokenizerError::DuplicateToken { text: t.to_string(), first: *e.get(), second: i as u32 });
                }
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert(i as u32);
                }
            }
        }
        Ok(Ids { table, hasher })
    }

    fn get(&self, texts: &Texts, s: &str) -> Option<u32> {
        use std::hash::BuildHasher;
        self.table.find(self.hasher.hash_one(s), |&id| &texts[id as usize] == s).copied()
    }
}

impl Vocab {
    /// The id of the token whose text is `s`.
    pub fn id_of(&self, s: &str) -> Option<u32> {
        self.ids.get(&self.texts, s)
    }
}

fn read_tokens(f: &Gguf) -> Result<Texts, TokenizerError> {
    let invalid = |problem: &str| TokenizerError::InvalidMetadata { key: KEY_TOKENS.into(), problem: problem.into() };
    let texts = match f.get(KEY_TOKENS) {
        None => return Err(TokenizerError::MissingKey { key: KEY_TOKENS.into() }),
        Some(Value::Array(Array::Str(v))) => v,
        Some(_) => return Err(invalid("expected an array of strings")),
    };
    if texts.is_empty() || texts.len() > u32::MAX as usize / 2 {
        return Err(invalid("the vocabulary is empty or too large"));
    }
    // llama.cpp renames empty tokens so that every text is distinct.
    let mut out = Texts { buf: String::with_capacity(texts.iter().map(String::len).sum()), offsets: Vec::with_capacity(texts.len() + 1) };
    out.offsets.push(0);
    for (i, t) in texts.iter().enumerate() {
        if t.is_empty() {
            out.buf.push_str(&format!("[EMPTY_{i}]"));
        } else {
            out.buf.push_str(t);
        }
        out.offsets.push(u32::try_from(out.buf.len()).map_err(|_| invalid("the token texts exceed 4 GiB"))?);
    }
    Ok(out)
}

fn read_array<T>(v: &Value, key: &str, n: usize, conv: fn(&Array) -> Option<Vec<T>>) -> Result<Vec<T>, TokenizerError> {
    let invalid = |problem: String| TokenizerError::InvalidMetadata { key: key.into(), problem };
    let mut out = v.as_array().and_then(conv).ok_or_else(|| invalid("expected a numeric array".into()))?;
    if out.len() < n {
        return Err(invalid(format!("{} entries for {n} tokens", out.len())));
    }
    out.truncate(n);
    Ok(out)
}

/// `tokenizer.ggml.<key>` if present and inside the vocabulary, else `default` (itself
/// dropped when out of range), as llama.cpp does.
fn special_id(f: &Gguf, key: &str, default: Option<u32>, n: usize) -> Option<u32> {
    let default = default.filter(|&d| (d as usize) < n);
    match f.get(&format!("tokenizer.ggml.{key}")).and_then(Value::as_u64) {
        Some(id) if (id as usize) < n => Some(id as u32),
        _ => default,
    }
}

pub(crate) fn str_key<'a>(f: &'a Gguf, key: &str) -> Option<&'a str> {
    f.get(key).and_then(Value::as_str)
}
