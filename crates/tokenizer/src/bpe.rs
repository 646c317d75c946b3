//! Byte-level BPE: the merge table and the merge loop of llama.cpp's
//! `llm_tokenizer_bpe_session::tokenize`.
//!
//! A word (already byte-encoded, see [`crate::unicode::byte_encode`]) starts as one symbol
//! per codepoint. Candidate merges of neighbouring symbols wait in a priority queue keyed by
//! (rank, left position); the best one is applied if both symbols are still what they were
//! when it was queued, and the new neighbours are queued. That is O(n log n) per word.
//!
//! Symbols are compared through *piece ids* instead of strings: every string that can be
//! a symbol (a vocabulary token, or either side or the result of a merge rule) gets an id
//! once at load time, so the loop never allocates.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use gguf::{Array, Gguf, Value};

use crate::vocab::Vocab;
use crate::TokenizerError;

const KEY_MERGES: &str = "tokenizer.ggml.merges";
/// No piece: a codepoint that appears in no token and no merge rule.
const NO_PIECE: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct Merges {
    /// (left piece, right piece) -> (rank, merged piece). The first rule wins for
    /// duplicates, as with llama.cpp's `bpe_ranks.emplace`.
    rules: HashMap<(u32, u32), (u32, u32)>,
    /// Pieces that are not tokens; their ids start at the vocabulary size.
    extra: HashMap<String, u32>,
    n_vocab: u32,
}

impl Merges {
    pub fn load(f: &Gguf, vocab: &Vocab) -> Result<Merges, TokenizerError> {
        let list = match f.get(KEY_MERGES) {
            None => return Err(TokenizerError::MissingKey { key: KEY_MERGES.into() }),
            Some(Value::Array(Array::Str(v))) => v,
            Some(_) => return Err(TokenizerError::InvalidMetadata { key: KEY_MERGES.into(), problem: "expected an array of strings".into() }),
        };
        Ok(Merges::from_rules(list.iter().map(String::as_str), vocab))
    }

    /// Build the table from rules of the form "left right".
    pub fn from_rules<'a>(rules: impl Iterator<Item = &'a str>, vocab: &Vocab) -> Merges {
        let mut m = Merges { rules: HashMap::new(), extra: HashMap::new(), n_vocab: vocab.n_tokens() as u32 };
        let mut joined = String::new();
        for (rank, rule) in rules.enumerate() {
            // llama.cpp splits at the first space after the first byte; a rule without one
            // becomes ("", ""), which never matches a symbol, so we skip it.
            let Some(pos) = rule.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else { continue };
            let (left, right) = (&rule[..pos], &rule[pos + 1..]);
            if left.is_empty() || right.is_empty() {
                continue;
            }
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let key = (m.intern(left, vocab), m.intern(right, vocab));
            let merged = m.intern(&joined, vocab);
            m.rules.entry(key).or_insert((rank as u32, merged));
        }
        m
    }

    fn intern(&mut self, s: &str, vocab: &Vocab) -> u32 {
        if let Some(id) = vocab.id_of(s) {
            return id;
        }
        let next = self.n_vocab + self.extra.len() as u32;
        *self.extra.entry(s.to_string()).or_insert(next)
    }

    fn piece(&self, s: &str, vocab: &Vocab) -> u32 {
        vocab.id_of(s).or_else(|| self.extra.get(s).copied()).unwrap_or(NO_PIECE)
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    /// Byte range in the word.
    start: u32,
    len: u32,
    piece: u32,
    prev: Option<u32>,
    next: Option<u32>,
}

/// A queued merge: ordered by rank, then leftmost first (`llm_bigram_bpe::comparator`).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    rank: u32,
    left: u32,
    right: u32,
    left_piece: u32,
    right_piece: u32,
    merged: u32,
}

/// Reusable buffers for encoding many words.
#[derive(Default)]
pub(crate) struct BpeSession {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Bigram>>,
}

impl BpeSession {
    /// Encode one byte-encoded word, appending token ids to `out`.
    pub fn encode_word(&mut self, word: &str, vocab: &Vocab, merges: &Merges, ignore_merges: bool, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if ignore_merges {
            if let Some(id) = vocab.id_of(word) {
                out.push(id);
                return;
            }
        }
        self.symbols.clear();
        self.queue.clear();
        let mut buf = [0u8; 4];
        for (i, c) in word.char_indices() {
            let idx = self.symbols.len() as u32;
            self.symbols.push(Symbol {
                start: i as u32,
                len: c.len_utf8() as u32,
                piece: merges.piece(c.encode_utf8(&mut buf), vocab),
                prev: idx.checked_sub(1),
                next: Some(idx + 1),
            });
        }
        if let Some(last) = self.symbols.last_mut() {
            last.next = None;
        }
        for i in 1..self.symbols.len() as u32 {
            self.push_bigram(Some(i - 1), Some(i), merges);
        }

        while let Some(Reverse(b)) = self.queue.pop() {
            let (l, r) = (self.symbols[b.left as usize], self.symbols[b.right as usize]);
            // Skip a merge one of whose symbols has changed since it was queued.
            if l.len == 0 || r.len == 0 || l.piece != b.left_piece || r.piece != b.right_piece {
                continue;
            }
            let left = &mut self.symbols[b.left as usize];
            left.len += r.len;
            left.piece = b.merged;
            left.next = r.next;
            let prev = left.prev;
            self.symbols[b.right as usize].len = 0;
            if let Some(n) = r.next {
                self.symbols[n as usize].prev = Some(b.left);
            }
            self.push_bigram(prev, Some(b.left), merges);
            self.push_bigram(Some(b.left), r.next, merges);
        }

        let mut i = Some(0u32);
        while let Some(idx) = i {
            let s = self.symbols[idx as usize];
            i = s.next;
            if s.len == 0 {
                continue;
            }
            if s.piece < merges.n_vocab {
                out.push(s.piece);
                continue;
            }
            // Not a token: llama.cpp looks each byte up as a one-byte token, dropping misses.
            let bytes = &word.as_bytes()[s.start as usize..(s.start + s.len) as usize];
            for &b in bytes {
                if b.is_ascii() {
                    if let Some(id) = vocab.id_of(std::str::from_utf8(&[b]).unwrap_or_default()) {
                        out.push(id);
                    }
                }
            }
        }
    }

    fn push_bigram(&mut self, left: Option<u32>, right: Option<u32>, merges: &Merges) {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (lp, rp) = (self.symbols[left as usize].piece, self.symbols[right as usize].piece);
        if let Some(&(rank, merged)) = merges.rules.get(&(lp, rp)) {
            self.queue.push(Reverse(Bigram { rank, left, right, left_piece: lp, right_piece: rp, merged }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::VocabKind;

    fn vocab(tokens: &[&str]) -> Vocab {
        let mut w = gguf::GgufWriter::new();
        w.meta("tokenizer.ggml.model", Value::Str("gpt2".into()));
        w.meta("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens.iter().map(|s| s.to_string()).collect())));
        let f = Gguf::from_vec("test.gguf", w.to_bytes()).unwrap();
        Vocab::load(&f, VocabKind::Bpe, false).unwrap()
    }

    fn encode(tokens: &[&str], rules: &[&str], word: &str) -> Vec<u32> {
        let v = vocab(tokens);
        let m = Merges::from_rules(rules.iter().copied(), &v);
        let mut out = Vec::new();
        BpeSession::default().encode_word(word, &v, &m, false, &mut out);
        out
    }

    #[test]
    fn merges_apply_by_rank() {
        let toks = ["a", "b", "c", "ab", "bc", "abc"];
        // "b c" outranks "a b": a + bc, and no rule makes abc from (a, bc).
        assert_eq!(encode(&toks, &["b c", "a b", "ab c"], "abc"), [0, 4]);
        assert_eq!(encode(&toks, &["a b", "b c", "ab c"], "abc"), [5]);
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        let toks = ["a", "aa", "aaa"];
        assert_eq!(encode(&toks, &["a a"], "aaa"), [1, 0]);
        assert_eq!(encode(&toks, &["a a", "aa a"], "aaaaa"), [1, 2]);
    }

    #[test]
    fn unknown_symbols_fall_back_to_single_bytes() {
        let toks = ["x", "y"];
        // "é" is not a token and not ASCII: dropped, as in llama.cpp.
        assert_eq!(encode(&toks, &[], "xéy"), [0, 1]);
        // A merged piece that is not a token falls back to its bytes.
        assert_eq!(encode(&toks, &["x y"], "xy"), [0, 1]);
    }

    #[test]
    fn malformed_rules_are_skipped() {
        let toks = ["a", "b", "ab"];
        assert_eq!(encode(&toks, &["ab", "", " ", "a b"], "ab"), [2]);
    }
}
