//! Pre-tokenizers for byte-level BPE: split text into words before merging.
//!
//! As in llama.cpp (`llm_tokenizer_bpe` constructor in `llama-vocab.cpp`, and
//! `unicode_regex_split` in `unicode.cpp`), a pre-tokenizer is a *list* of regexes applied in
//! sequence: each one splits every segment left by the previous one into its matches and
//! the text between matches (which also becomes a word). Two patterns are not run as
//! regexes but by llama.cpp's hand-written scanners, whose results we copy exactly
//! (see [`crate::split`]): the GPT-2 pattern and the Llama-3 pattern.
//!
//! llama.cpp runs the other patterns with `std::regex` over a "collapsed" copy of the text
//! in which every non-ASCII codepoint is replaced by one byte standing for its class. With
//! the class tables of [`crate::unicode`] that is the same as running the pattern with a
//! Unicode-aware engine, which is what we do (fancy-regex, for the `(?!\S)` lookahead).
//! The collapse only distinguishes the classes N, L, P, M and S, so `\p{Lu}` and friends
//! mean `\p{L}` there; we rewrite them the same way. Patterns without `\p{..}` run in
//! llama.cpp with `std::wregex` on the codepoints, after replacing every non-ASCII
//! whitespace codepoint with U+000B (its `\s` only knows ASCII); a class such as
//! deepseek-coder's `[ࠀ-一]` then cannot match U+2028 or U+3000. We fold the text the same
//! way for those patterns.

use std::ops::Range;

use crate::split;
use crate::TokenizerError;

/// GPT-2's pattern, the one llama.cpp runs with `unicode_regex_split_custom_gpt2`.
pub(crate) const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama-3's pattern (case-insensitive contractions spelled out), run by llama.cpp with
/// `unicode_regex_split_custom_llama3`.
pub(crate) const LLAMA3: &str =
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The same with the original `(?i:...)` group; llama.cpp maps it to the same scanner.
const LLAMA3_ORIG: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str =
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// One step of a pre-tokenizer.
#[derive(Debug)]
enum Splitter {
    Gpt2,
    Llama3,
    /// `fold_ws`: match against the text with non-ASCII whitespace folded to U+000B.
    Regex {
        re: Box<fancy_regex::Regex>,
        fold_ws: bool,
    },
}

/// A named pre-tokenizer with the vocabulary flags llama.cpp ties to the name.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    pub name: String,
    steps: Vec<Splitter>,
    /// A word that is already a token is emitted whole, without merging (Llama 3 style).
    pub ignore_merges: bool,
    /// The default for `add_bos` before `tokenizer.ggml.add_bos_token` is read.
    pub add_bos: bool,
}

/// Pre-tokenizer names we accept, grouped by regex list: (names, patterns, ignore_merges,
/// add_bos). Taken from the `tokenizer_pre == ...` chain in `llama_vocab::impl::load` and the
/// `LLAMA_VOCAB_PRE_TYPE_*` cases of the `llm_tokenizer_bpe` constructor. Types whose
/// patterns use `\p{S}` or need other scanners (kimi-k2, afmoe, ...) are left out.
const TABLE: &[(&[&str], &[&str], bool, bool)] = &[
    (&["default"], &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"], false, false),
    (&["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"], &[LLAMA3], true, true),
    (&["dbrx", "smaug-bpe"], &[LLAMA3], false, false),
    (
        &["tekken"],
        &[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        true,
        true,
    ),
    (&["deepseek-coder"], &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"], false, false),
    (&["falcon"], &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"], false, false),
    (&["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"], &[r"\p{N}", GPT2], false, false),
    (
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        &[GPT2],
        false,
        false,
    ),
    (&["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"], &[QWEN2], false, false),
    (&["poro-chat", "bloom", "gpt3-finnish"], &[PORO], false, false),
    (&["viking"], &[PORO, r"\p{N}"], false, false),
    (
        &["seed-coder"],
        &[r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"],
        false,
        false,
    ),
    (&["grok-2"], &[QWEN2], false, false),
    (
        &["chameleon"],
        &[r"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", GPT2],
        false,
        true,
    ),
];

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value. A missing value means `default`
    /// (llama.cpp warns that quality will suffer); an unknown one is an error, as in
    /// llama.cpp.
    pub fn from_name(name: Option<&str>) -> Result<PreTokenizer, TokenizerError> {
        let name = name.filter(|n| !n.is_empty()).unwrap_or("default");
        let Some(&(_, patterns, ignore_merges, add_bos)) = TABLE.iter().find(|row| row.0.contains(&name)) else {
            return Err(TokenizerError::UnknownPreTokenizer { name: name.to_string(), known: known_names() });
        };
        let steps = patterns.iter().map(|p| compile(p)).collect::<Result<_, _>>()?;
        Ok(PreTokenizer { name: name.to_string(), steps, ignore_merges, add_bos })
    }

    /// Split `text` into words (byte ranges, in order, covering the whole text).
    pub fn split(&self, text: &str) -> Vec<Range<usize>> {
        let mut segments: Vec<Range<usize>> = Vec::new();
        if !text.is_empty() {
            segments.push(0..text.len());
        }
        let mut next = Vec::new();
        for step in &self.steps {
            next.clear();
            for seg in &segments {
                let s = &text[seg.clone()];
                let before = next.len();
                match step {
                    Splitter::Gpt2 => split::gpt2(s, &mut next),
                    Splitter::Llama3 => split::llama3(s, &mut next),
                    Splitter::Regex { re, fold_ws } => split_regex(re, *fold_ws, s, &mut next),
                }
                for r in &mut next[before..] {
                    *r = r.start + seg.start..r.end + seg.start;
                }
            }
            std::mem::swap(&mut segments, &mut next);
        }
        segments
    }
}

fn known_names() -> String {
    names().collect::<Vec<_>>().join(", ")
}

/// Every `tokenizer.ggml.pre` name this crate implements.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().flat_map(|row| row.0.iter().copied())
}

fn compile(pattern: &str) -> Result<Splitter, TokenizerError> {
    if pattern == GPT2 {
        return Ok(Splitter::Gpt2);
    }
    if pattern == LLAMA3 || pattern == LLAMA3_ORIG {
        return Ok(Splitter::Llama3);
    }
    // llama.cpp's collapsed text has one class byte for all letters (see module docs).
    let mut p = pattern.to_string();
    for sub in [r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}"] {
        p = p.replace(sub, r"\p{L}");
    }
    fancy_regex::RegexBuilder::new(&p)
        .backtrack_limit(10_000_000)
        .build()
        .map(|re| Splitter::Regex { re: Box::new(re), fold_ws: !pattern.contains(r"\p{") })
        .map_err(|e| TokenizerError::Regex { pattern: pattern.to_string(), message: e.to_string() })
}

/// Matches and the gaps between them, as `unicode_regex_split_stl` emits them. Empty
/// matches are dropped. If the engine gives up (backtracking limit on pathological input),
/// the rest of the segment becomes one word rather than failing the whole encode.
fn split_regex(re: &fancy_regex::Regex, fold_ws: bool, s: &str, out: &mut Vec<Range<usize>>) {
    let folded = if fold_ws { fold_whitespace(s) } else { None };
    let (hay, map) = match &folded {
        Some((f, map)) => (f.as_str(), Some(map)),
        None => (s, None),
    };
    let orig = |i: usize| map.map_or(i, |m| m[i]);
    let mut last = 0;
    for m in re.find_iter(hay) {
        let Ok(m) = m else { break };
        if m.start() > last {
            out.push(orig(last)..orig(m.start()));
        }
        if m.end() > m.start() {
            out.push(orig(m.start())..orig(m.end()));
        }
        last = m.end();
    }
    if last < hay.len() {
        out.push(orig(last)..s.len());
    }
}

/// `s` with every non-ASCII whitespace codepoint replaced by U+000B, and for each byte
/// offset of the result (end included) the offset in `s`; `None` if nothing changes.
fn fold_whitespace(s: &str) -> Option<(String, Vec<usize>)> {
    if !s.chars().any(|c| !c.is_ascii() && c.is_whitespace()) {
        return None;
    }
    let mut folded = String::with_capacity(s.len());
    let mut map = Vec::with_capacity(s.len() + 1);
    for (i, c) in s.char_indices() {
        let c = if !c.is_ascii() && c.is_whitespace() { '\x0B' } else { c };
        folded.push(c);
        map.resize(folded.len(), i);
    }
    map.push(s.len());
    Some((folded, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'a>(pre: &PreTokenizer, text: &'a str) -> Vec<&'a str> {
        pre.split(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn every_listed_pattern_compiles() {
        for row in TABLE {
            for name in row.0 {
                PreTokenizer::from_name(Some(name)).unwrap();
            }
        }
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = PreTokenizer::from_name(Some("no-such-pre")).unwrap_err();
        assert!(err.to_string().contains("no-such-pre"));
        assert_eq!(PreTokenizer::from_name(None).unwrap().name, "default");
    }

    #[test]
    fn smollm_splits_every_digit() {
        let pre = PreTokenizer::from_name(Some("smollm")).unwrap();
        assert_eq!(words(&pre, "year 2024, ok"), ["year", " ", "2", "0", "2", "4", ",", " ok"]);
    }

    #[test]
    fn qwen2_pattern() {
        let pre = PreTokenizer::from_name(Some("qwen2")).unwrap();
        assert_eq!(words(&pre, "Hello  world\n\n  x 12"), ["Hello", " ", " world", "\n\n", " ", " x", " ", "1", "2"]);
        assert_eq!(words(&pre, "don't STOP'S"), ["don", "'t", " STOP", "'S"]);
    }

    #[test]
    fn default_pattern_chain() {
        let pre = PreTokenizer::from_name(Some("default")).unwrap();
        assert_eq!(words(&pre, "a+b=12345!"), ["a", "+", "b", "=", "123", "45", "!"]);
    }

    #[test]
    fn literal_classes_do_not_match_unicode_whitespace() {
        // llama.cpp's std::wregex sees U+2028 as U+000B, outside deepseek-coder's [ࠀ-一].
        let pre = PreTokenizer::from_name(Some("deepseek-coder")).unwrap();
        assert_eq!(words(&pre, " \u{2028}"), [" \u{2028}"]);
        assert_eq!(words(&pre, "x\u{2028}中"), ["x", "\u{2028}", "中"]);
    }

    #[test]
    fn words_cover_the_text() {
        let text = "Mixed: English, 中文, 123 ✓ \u{a0}x\t\t\n  end  ";
        for row in TABLE {
            let pre = PreTokenizer::from_name(Some(row.0[0])).unwrap();
            assert_eq!(words(&pre, text).concat(), text, "{}", row.0[0]);
        }
    }
}
