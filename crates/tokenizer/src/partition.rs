//! Splitting text on special tokens before tokenizing (llama.cpp's
//! `tokenizer_st_partition`).
//!
//! llama.cpp takes the special tokens longest first and, for each, splits every remaining
//! text fragment at all its non-overlapping occurrences (leftmost first). With special
//! parsing off, control and unknown tokens are skipped, but user-defined ones are still
//! split out. Tokens with the LSTRIP / RSTRIP attribute eat the whitespace beside them.
//!
//! Doing that for every special token costs one substring search per token (gemma3 has
//! 6,414), so we first find which special tokens occur in the text at all with one pass of
//! a trie, then run llama.cpp's procedure with only those. A token absent from the text is
//! absent from every fragment of it, so the result is the same.

use std::ops::Range;

use crate::vocab::{attr, Vocab};

/// A piece of the input: raw text still to tokenize, or a special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

#[derive(Debug, Default)]
struct Node {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    /// Index into `SpecialTokens::order` of the token ending here.
    token: Option<u32>,
}

/// The special tokens in priority order, with a byte trie over their texts.
#[derive(Debug)]
pub(crate) struct SpecialTokens {
    order: Vec<u32>,
    nodes: Vec<Node>,
}

impl SpecialTokens {
    pub fn new(vocab: &Vocab) -> SpecialTokens {
        let mut st = SpecialTokens { order: vocab.special.clone(), nodes: vec![Node::default()] };
        for (rank, &id) in vocab.special.iter().enumerate() {
            let mut node = 0usize;
            for &b in vocab.texts[id as usize].as_bytes() {
                node = match st.nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => st.nodes[node].children[i].1 as usize,
                    Err(i) => {
                        let new = st.nodes.len();
                        st.nodes.push(Node::default());
                        st.nodes[node].children.insert(i, (b, new as u32));
                        new
                    }
                };
            }
            // Texts are distinct, so each end node is claimed once.
            st.nodes[node].token.get_or_insert(rank as u32);
        }
        st
    }

    /// Ranks (positions in priority order) of the special tokens occurring in `text`.
    fn present(&self, text: &[u8], usable: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut seen = vec![false; self.order.len()];
        for start in 0..text.len() {
            let mut node = 0usize;
            for &b in &text[start..] {
                let children = &self.nodes[node].children;
                match children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => node = children[i].1 as usize,
                    Err(_) => break,
                }
                if let Some(rank) = self.nodes[node].token {
                    seen[rank as usize] = true;
                }
            }
        }
        (0..self.order.len() as u32).filter(|&r| seen[r as usize] && usable(self.order[r as usize])).collect()
    }

    /// Split `text` into raw fragments and special tokens.
    pub fn partition(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(0..text.len())];
        // With parse_special off, control and unknown tokens stay text; user-defined ones are
        // still split out (they are pre-tokenized before everything else in HF tokenizers).
        let usable = |id: u32| parse_special || vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) == 0;
        for rank in self.present(text.as_bytes(), usable) {
            let id = self.order[rank as usize];
            frags = split_on(text, &frags, &vocab.texts[id as usize], id, vocab.attr(id));
        }
        frags
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp uses for LSTRIP / RSTRIP.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Split every text fragment at the non-overlapping occurrences of one token.
fn split_on(text: &str, frags: &[Fragment], needle: &str, id: u32, attrs: u32) -> Vec<Fragment> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(frags.len() + 2);
    for frag in frags {
        let Fragment::Text(range) = frag else {
            out.push(frag.clone());
            continue;
        };
        let (mut base, end) = (range.start, range.end);
        loop {
            // Fragment bounds are always char boundaries (tokens are whole UTF-8 strings,
            // and stripping removes only ASCII), so `get` never fails in practice.
            let Some(found) = text.get(base..end).and_then(|s| s.find(needle)) else {
                if base < end {
                    out.push(Fragment::Text(base..end));
                }
                break;
            };
            let at = base + found;
            let mut left_end = at;
            if attrs & attr::LSTRIP != 0 {
                while left_end > base && is_c_space(bytes[left_end - 1]) {
                    left_end -= 1;
                }
            }
            if left_end > base {
                out.push(Fragment::Text(base..left_end));
            }
            out.push(Fragment::Token(id));
            base = at + needle.len();
            if attrs & attr::RSTRIP != 0 {
                while base < end && is_c_space(bytes[base]) {
                    base += 1;
                }
            }
            if base >= end {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::VocabKind;
    use gguf::{Array, Gguf, Value};

    /// Tokens: 0 "a", 1 "<ctl>" control, 2 "<u>" user-defined, 3 "<u>x" control, 4 "  " user-defined.
    fn vocab() -> Vocab {
        let mut w = gguf::GgufWriter::new();
        let texts = ["a", "<ctl>", "<u>", "<u>x", "  "].map(String::from).to_vec();
        w.meta("tokenizer.ggml.model", Value::Str("gpt2".into()));
        w.meta("tokenizer.ggml.tokens", Value::Array(Array::Str(texts)));
        w.meta("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![1, 3, 4, 3, 4])));
        let f = Gguf::from_vec("test.gguf", w.to_bytes()).unwrap();
        Vocab::load(&f, VocabKind::Bpe, false).unwrap()
    }

    fn show(text: &str, frags: &[Fragment]) -> Vec<String> {
        frags
            .iter()
            .map(|f| match f {
                Fragment::Text(r) => text[r.clone()].to_string(),
                Fragment::Token(id) => format!("#{id}"),
            })
            .collect()
    }

    #[test]
    fn control_tokens_only_with_parse_special() {
        let v = vocab();
        let st = SpecialTokens::new(&v);
        let text = "a<ctl>b<u>c";
        assert_eq!(show(text, &st.partition(&v, text, true)), ["a", "#1", "b", "#2", "c"]);
        assert_eq!(show(text, &st.partition(&v, text, false)), ["a<ctl>b", "#2", "c"]);
    }

    #[test]
    fn longest_first() {
        let v = vocab();
        let st = SpecialTokens::new(&v);
        let text = "<u>x<u>";
        assert_eq!(show(text, &st.partition(&v, text, true)), ["#3", "#2"]);
        assert_eq!(show(text, &st.partition(&v, text, false)), ["#2", "x", "#2"]);
    }

    #[test]
    fn non_overlapping_leftmost() {
        let v = vocab();
        let st = SpecialTokens::new(&v);
        let text = "     x";
        assert_eq!(show(text, &st.partition(&v, text, false)), ["#4", "#4", " x"]);
        assert!(st.partition(&v, "", true).is_empty());
    }

    #[test]
    fn strip_attributes() {
        let text = "a \n<u>\t b";
        let frags = vec![Fragment::Text(0..text.len())];
        let out = split_on(text, &frags, "<u>", 2, attr::LSTRIP | attr::RSTRIP);
        assert_eq!(show(text, &out), ["a", "#2", "b"]);
        let out = split_on(text, &frags, "<u>", 2, 0);
        assert_eq!(show(text, &out), ["a \n", "#2", "\t b"]);
    }
}
