//! SentencePiece-style tokenization: llama.cpp's `llm_tokenizer_spm_session`.
//!
//! The text (spaces already escaped to "▁") starts as one symbol per codepoint. Every pair
//! of neighbours whose concatenation is a vocabulary token is queued with that token's
//! score; the best (highest score, then leftmost) is merged if neither side changed since,
//! and the new neighbours are queued. Symbols that are not tokens at the end are emitted as
//! byte tokens (`<0xAB>`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::vocab::Vocab;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: Option<u32>,
    next: Option<u32>,
}

/// A queued merge (`llm_bigram_spm`): a max-heap on score, ties to the leftmost.
#[derive(Debug)]
struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// Token ids for the 256 bytes, found once at load time (`llama_vocab::byte_to_token`).
#[derive(Debug)]
pub(crate) struct ByteTokens([Option<u32>; 256]);

impl ByteTokens {
    /// `<0xAB>` tokens; failing that the one-character token for an ASCII byte; failing
    /// that the unknown token (llama.cpp throws there instead).
    pub fn new(vocab: &Vocab) -> ByteTokens {
        let mut t = [None; 256];
        for (b, slot) in t.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            let plain = char::from_u32(b as u32).filter(|c| c.is_ascii()).map(String::from);
            *slot = vocab.id_of(&hex).or_else(|| plain.and_then(|p| vocab.id_of(&p))).or(vocab.unk);
        }
        ByteTokens(t)
    }
}

/// Encode escaped text, appending token ids to `out`.
pub(crate) fn encode(text: &str, vocab: &Vocab, bytes: &ByteTokens, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let idx = symbols.len() as u32;
        symbols.push(Symbol { start: i as u32, len: c.len_utf8() as u32, prev: idx.checked_sub(1), next: Some(idx + 1) });
    }
    let Some(last) = symbols.last_mut() else { return };
    last.next = None;

    let mut queue = BinaryHeap::new();
    let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: Option<u32>, right: Option<u32>| {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let piece = &text[l.start as usize..(r.start + r.len) as usize];
        if let Some(id) = vocab.id_of(piece) {
            queue.push(Bigram { score: vocab.scores[id as usize], left, right, size: l.len + r.len });
        }
    };
    for i in 1..symbols.len() as u32 {
        try_add(&symbols, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left as usize], symbols[b.right as usize]);
        // Symbols only grow, so unchanged sizes mean unchanged symbols.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left as usize].len += r.len;
        symbols[b.left as usize].next = r.next;
        symbols[b.right as usize].len = 0;
        if let Some(n) = r.next {
            symbols[n as usize].prev = Some(b.left);
        }
        try_add(&symbols, &mut queue, l.prev, Some(b.left));
        try_add(&symbols, &mut queue, Some(b.left), r.next);
    }

    // `resegment`: a merged symbol is always a token (merges only make tokens), so the
    // reverse-merge walk of llama.cpp reduces to "token, else its bytes".
    let mut i = Some(0u32);
    while let Some(idx) = i {
        let s = symbols[idx as usize];
        i = s.next;
        let piece = &text[s.start as usize..(s.start + s.len) as usize];
        match vocab.id_of(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| bytes.0[b as usize])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::VocabKind;
    use gguf::{Array, Gguf, Value};

    fn vocab(tokens: &[(&str, f32)]) -> Vocab {
        let mut w = gguf::GgufWriter::new();
        let mut texts: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut scores = vec![0.0, 0.0, 0.0];
        texts.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        scores.extend([0.0; 256]);
        for (t, s) in tokens {
            texts.push(t.to_string());
            scores.push(*s);
        }
        w.meta("tokenizer.ggml.model", Value::Str("llama".into()));
        w.meta("tokenizer.ggml.tokens", Value::Array(Array::Str(texts)));
        w.meta("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
        let f = Gguf::from_vec("test.gguf", w.to_bytes()).unwrap();
        Vocab::load(&f, VocabKind::Spm, false).unwrap()
    }

    fn run(v: &Vocab, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        encode(text, v, &ByteTokens::new(v), &mut out);
        out.into_iter().map(|id| v.texts[id as usize].to_string()).collect()
    }

    #[test]
    fn highest_score_merges_first() {
        let v = vocab(&[("a", -1.0), ("b", -1.0), ("c", -1.0), ("ab", -3.0), ("bc", -2.0)]);
        assert_eq!(run(&v, "abc"), ["a", "bc"]);
        // Any neighbouring pair that forms a token merges, whatever its parts were.
        let v = vocab(&[("a", -1.0), ("b", -1.0), ("c", -1.0), ("ab", -3.0), ("bc", -2.0), ("abc", -5.0)]);
        assert_eq!(run(&v, "abc"), ["abc"]);
        let v = vocab(&[("a", -1.0), ("b", -1.0), ("c", -1.0), ("ab", -2.0), ("bc", -3.0), ("abc", -5.0)]);
        assert_eq!(run(&v, "abc"), ["abc"]);
    }

    #[test]
    fn byte_fallback_for_unknown_codepoints() {
        let v = vocab(&[("▁", -1.0), ("x", -1.0)]);
        assert_eq!(run(&v, "x▁é"), ["x", "▁", "<0xC3>", "<0xA9>"]);
        assert!(run(&v, "").is_empty());
    }
}
