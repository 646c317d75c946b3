//! Tokenizers built from a GGUF file's `tokenizer.ggml.*` metadata, matching llama.cpp.
//!
//! Two vocabulary families are implemented, each following llama.cpp's
//! `src/llama-vocab.cpp` and `src/unicode.cpp` step for step so that token ids are the same:
//!
//! - **`gpt2`**: byte-level BPE. Text is split into words by the pre-tokenizer named in
//!   `tokenizer.ggml.pre` (smollm, qwen2, llama-bpe, default, gpt-2 and relatives; module
//!   `pretokenize`), each word is byte-encoded and merged by rank (`bpe`).
//! - **`llama`**: SentencePiece with scores and `<0xAB>` byte fallback (Llama 2, Gemma;
//!   module `spm`).
//!
//! Before either, special tokens are split out of the text (module `partition`): control
//! tokens such as `<|im_start|>` only when `parse_special` is true, user-defined tokens
//! always. Decoding maps ids back to bytes ([`Tokenizer::token_to_piece`]), and
//! [`StreamDecoder`] turns a stream of ids into text without ever splitting a character.
//!
//! Beyond the reference tests, `tools/llamacpp_difftest.py` compares ids, pieces and
//! end-of-generation sets with llama.cpp (through llama-cpp-python) on random text, for
//! the three test models and for their vocabularies re-labelled with other pre-tokenizers.
//!
//! ```no_run
//! let file = gguf::Gguf::open("qwen2.5-coder-0.5b.gguf")?;
//! let tok = tokenizer::Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("<|im_start|>user\nHello<|im_end|>", true, true);
//! assert_eq!(tok.decode(&ids, true), "<|im_start|>user\nHello<|im_end|>");
//! let stop = tok.eog_ids(); // ids that end generation
//! # let _ = stop;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bpe;
mod error;
mod partition;
mod pretokenize;
mod split;
mod spm;
mod stream;
mod unicode;
mod vocab;

pub use error::TokenizerError;
pub use pretokenize::names as pre_tokenizer_names;
pub use stream::StreamDecoder;

use bpe::{BpeSession, Merges};
use partition::{Fragment, SpecialTokens};
use pretokenize::PreTokenizer;
use spm::ByteTokens;
use vocab::{attr, Vocab, VocabKind};

/// A vocabulary and its tokenization algorithm, ready to encode and decode.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    special_tokens: SpecialTokens,
    /// `token_to_piece(id, special = true)` for every id (llama.cpp's `cache_token_to_piece`).
    pieces: Vec<Box<[u8]>>,
}

enum Model {
    Spm(Box<ByteTokens>),
    Bpe { pre: PreTokenizer, merges: Merges },
}

impl Tokenizer {
    /// Build the tokenizer described by `tokenizer.ggml.*` metadata: model, tokens, scores,
    /// token types, merges, pre-tokenizer, special ids and the add-BOS/EOS flags.
    pub fn from_gguf(f: &gguf::Gguf) -> Result<Tokenizer, TokenizerError> {
        const KEY_MODEL: &str = "tokenizer.ggml.model";
        let model = match f.get(KEY_MODEL) {
            None => return Err(TokenizerError::MissingKey { key: KEY_MODEL.into() }),
            Some(v) => v.as_str().ok_or_else(|| TokenizerError::InvalidMetadata { key: KEY_MODEL.into(), problem: "expected a string".into() })?,
        };
        let (vocab, model) = match model {
            "llama" => {
                let vocab = Vocab::load(f, VocabKind::Spm, false)?;
                let bytes = Box::new(ByteTokens::new(&vocab));
                (vocab, Model::Spm(bytes))
            }
            "gpt2" => {
                let pre = PreTokenizer::from_name(vocab::str_key(f, "tokenizer.ggml.pre"))?;
                let vocab = Vocab::load(f, VocabKind::Bpe, pre.add_bos)?;
                let merges = Merges::load(f, &vocab)?;
                (vocab, Model::Bpe { pre, merges })
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let special_tokens = SpecialTokens::new(&vocab);
        let pieces = (0..vocab.n_tokens() as u32).map(|id| piece(&vocab, id).into_boxed_slice()).collect();
        Ok(Tokenizer { vocab, model, special_tokens, pieces })
    }

    /// Token ids for `text`.
    ///
    /// `add_special`: add BOS / EOS where the model's metadata says to
    /// (`tokenizer.ggml.add_bos_token` / `add_eos_token`, with llama.cpp's defaults per
    /// vocabulary type). `parse_special`: control tokens written in the text (such as
    /// `<|im_start|>`) become single tokens; otherwise they are tokenized as plain text.
    /// User-defined tokens are split out either way, as llama.cpp does.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let v = &self.vocab;
        let frags = self.special_tokens.partition(v, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.bos);
        }
        match &self.model {
            Model::Spm(bytes) => {
                // A text fragment at the start or after a special token gets a leading space
                // when add_space_prefix is set (llama.cpp's `is_prev_special`).
                let mut prev_special = true;
                let mut buf = String::new();
                for frag in frags {
                    match frag {
                        Fragment::Text(r) => {
                            buf.clear();
                            if v.add_space_prefix && prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(&text[r]);
                            spm::encode(&buf.replace(' ', "\u{2581}"), v, bytes, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe { pre, merges } => {
                let mut session = BpeSession::default();
                let mut word = String::new();
                for frag in frags {
                    match frag {
                        Fragment::Text(r) => {
                            let fragment = &text[r];
                            for w in pre.split(fragment) {
                                unicode::byte_encode(&fragment[w], &mut word);
                                session.encode_word(&word, v, merges, pre.ignore_merges, &mut out);
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.eos);
        }
        out
    }

    /// The bytes one token stands for: byte tokens give their byte, SentencePiece "▁"
    /// becomes a space, byte-level BPE text is mapped back to bytes. Control and unknown
    /// tokens give their text only when `special` is true, else nothing. Unused tokens and
    /// ids outside the vocabulary give nothing.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        self.piece(id, special).to_vec()
    }

    /// The bytes of a token's piece, borrowed (empty for control and unknown tokens unless
    /// `special`, and for ids outside the vocabulary).
    pub fn piece(&self, id: u32, special: bool) -> &[u8] {
        if !special && self.vocab.attr(id) & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        self.pieces.get(id as usize).map_or(&[][..], |p| &p[..])
    }

    /// The text of a sequence of tokens: their pieces concatenated, invalid UTF-8 replaced
    /// by U+FFFD. Unlike `llama_detokenize`, no leading space is removed for
    /// `add_space_prefix` vocabularies and no `clean_spaces` pass is made, so the result is
    /// exactly what a [`StreamDecoder`] emits for the same ids.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if special || self.vocab.attr(id) & (attr::UNKNOWN | attr::CONTROL) == 0 {
                bytes.extend_from_slice(self.pieces.get(id as usize).map_or(&[][..], |p| &p[..]));
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// Beginning-of-sequence id (metadata, else llama.cpp's default for the vocabulary type).
    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos && self.vocab.bos.is_some()
    }

    /// Whether `id` ends generation (EOS, end-of-turn and the other tokens llama.cpp puts
    /// in its `special_eog_ids`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// The id of the token whose text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id_of(text)
    }

    /// The stored text of a token (byte-level or "▁"-escaped form, not decoded).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize)
    }

    /// Whether `id` is a control token (after llama.cpp's load-time adjustments, which make
    /// end-of-generation and fill-in-the-middle tokens control tokens).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.model {
            Model::Spm(_) => "llama (SentencePiece)".to_string(),
            Model::Bpe { pre, .. } => format!("gpt2 (byte-level BPE, pre {})", pre.name),
        };
        f.debug_struct("Tokenizer")
            .field("model", &kind)
            .field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos())
            .field("eos", &self.eos())
            .field("add_bos", &self.add_bos())
            .field("eog", &self.eog_ids())
            .finish()
    }
}

/// A token's bytes with `special = true` (llama.cpp's `token_to_piece`, the cache path).
fn piece(v: &Vocab, id: u32) -> Vec<u8> {
    let a = v.attr(id);
    let text = &v.texts[id as usize];
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        return text.as_bytes().to_vec();
    }
    if a & attr::NORMAL != 0 {
        return match v.kind {
            VocabKind::Spm => text.replace('\u{2581}', " ").into_bytes(),
            VocabKind::Bpe => byte_decode(text),
        };
    }
    if a & attr::BYTE != 0 {
        return vec![byte_of_token(text)];
    }
    Vec::new()
}

/// Byte-level BPE text back to bytes (`llama_decode_text`), including its marker for
/// codepoints outside the byte map.
fn byte_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// The byte of a `<0xAB>` token: `strtol` of the two characters after "<0x" (0 if none).
fn byte_of_token(text: &str) -> u8 {
    let hex: String = text.chars().skip(3).take(2).take_while(char::is_ascii_hexdigit).collect();
    u8::from_str_radix(&hex, 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_across_threads() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<StreamDecoder>();
    }

    #[test]
    fn byte_token_text() {
        assert_eq!(byte_of_token("<0x0A>"), 10);
        assert_eq!(byte_of_token("<0xFF>"), 255);
        assert_eq!(byte_of_token("<0xF>"), 15);
        assert_eq!(byte_of_token("<0x>"), 0);
        assert_eq!(byte_of_token("x"), 0);
    }

    #[test]
    fn byte_level_decode() {
        assert_eq!(byte_decode("ĠHello"), b" Hello");
        assert_eq!(byte_decode("Ċ"), b"\n");
        assert_eq!(byte_decode("中"), b"[UNK_BYTE_0xe4b8ad\xe4\xb8\xad]");
    }
}
