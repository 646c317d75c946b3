//! Arbitrary bytes, as lossy UTF-8 text, through the tokenizers we can build in memory (the
//! first byte picks one): encode (with and without BOS/EOS, with and without special-token
//! parsing), decode, and stream-decode; the same bytes also as raw token ids (valid or not)
//! to decode.
//!
//! Tokenizers, built once: the tiny test model's byte-level BPE (288 tokens: the 256 bytes,
//! 5 merges, ChatML specials), the same vocabulary under several other pre-tokenizers (the
//! hand-written GPT-2 and Llama-3 scanners and a few regex ones), and a small SentencePiece
//! vocabulary with byte fallback, user-defined and control tokens.
//!
//! Besides "never panics", this checks what the tokenizer documents: ids are inside the
//! vocabulary, decoding what was encoded gives the text back (byte-level BPE, and
//! SentencePiece without the space prefix, where a literal "▁" decodes as a space), and a
//! [`tokenizer::StreamDecoder`] emits exactly what `decode` returns.
//!
//! Run: `cargo fuzz run tokenizer_bytes` (see `fuzz/README.md`).
#![no_main]

use std::sync::OnceLock;

use gguf::{Array, Gguf, GgufWriter, Value};
use libfuzzer_sys::fuzz_target;
use model::tiny::{tiny_model, TinySpec};
use tokenizer::{StreamDecoder, Tokenizer};

/// How decoding an encoding relates to the text.
#[derive(Clone, Copy)]
enum RoundTrip {
    /// `decode(encode(text))` is the text.
    Exact,
    /// SentencePiece: the same, with every "▁" read back as a space.
    EscapedSpaces,
}

struct Case {
    name: String,
    tok: Tokenizer,
    /// `None`: no simple relation (the SentencePiece space prefix adds a "▁").
    round_trip: Option<RoundTrip>,
}

/// Pre-tokenizers run over the tiny vocabulary besides its own ("default"): llama.cpp's
/// hand-written GPT-2 and Llama-3 scanners, and regex ones with lookahead, whitespace
/// folding, case classes and literal sentinels.
const PRE_TOKENIZERS: &[&str] = &["gpt-2", "llama3", "qwen2", "deepseek-coder", "tekken", "seed-coder", "poro-chat", "chameleon", "falcon", "smollm"];

/// A GGUF holding only the tokenizer metadata of `from`, with `tokenizer.ggml.pre` set to `pre`.
fn with_pre_tokenizer(from: &Gguf, pre: &str) -> Gguf {
    let mut w = GgufWriter::new();
    for (key, value) in from.metadata() {
        if key.starts_with("tokenizer.") && key != "tokenizer.ggml.pre" {
            w.meta(key, value.clone());
        }
    }
    w.meta("tokenizer.ggml.pre", Value::Str(pre.into()));
    Gguf::from_vec(format!("tiny-{pre}.gguf"), w.to_bytes()).expect("tokenizer-only GGUF")
}

/// A small SentencePiece vocabulary: unknown, BOS, EOS, the 256 byte tokens, some pieces
/// (with "▁" for a space, multi-byte characters), control and user-defined tokens.
fn spm(add_space_prefix: bool) -> Gguf {
    // (text, token type): 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
    let mut tokens: Vec<(String, i32)> = vec![("<unk>".into(), 2), ("<s>".into(), 3), ("</s>".into(), 3)];
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
    for piece in ["▁", "▁t", "▁th", "▁the", "he", "e", "t", "h", "a", "▁a", "in", "er", "▁▁", "é", "日", "日本", "語", "\n", "<0x0A>x"] {
        tokens.push((piece.into(), 1));
    }
    for control in ["<start_of_turn>", "<end_of_turn>", "<pad>"] {
        tokens.push((control.into(), 3));
    }
    for user in ["<b>", "</b>", "  ", "\t\t"] {
        tokens.push((user.into(), 4));
    }
    let n = tokens.len();
    let scores: Vec<f32> = (0..n).map(|i| -(i as f32) / 8.0).collect();
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("llama".into()))
        .meta("tokenizer.ggml.model", Value::Str("llama".into()))
        .meta("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens.iter().map(|t| t.0.clone()).collect())))
        .meta("tokenizer.ggml.scores", Value::Array(Array::F32(scores)))
        .meta("tokenizer.ggml.token_type", Value::Array(Array::I32(tokens.iter().map(|t| t.1).collect())))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_eos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_space_prefix", Value::Bool(add_space_prefix));
    Gguf::from_vec("spm.gguf", w.to_bytes()).expect("SentencePiece GGUF")
}

fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let tiny = Gguf::from_vec("tiny.gguf", tiny_model(&TinySpec::default())).expect("tiny model parses");
        let mut cases = vec![Case { name: "tiny".into(), tok: Tokenizer::from_gguf(&tiny).expect("tiny tokenizer"), round_trip: Some(RoundTrip::Exact) }];
        for pre in PRE_TOKENIZERS {
            let tok = Tokenizer::from_gguf(&with_pre_tokenizer(&tiny, pre)).unwrap_or_else(|e| panic!("tiny vocabulary with pre-tokenizer {pre}: {e}"));
            cases.push(Case { name: format!("tiny/{pre}"), tok, round_trip: Some(RoundTrip::Exact) });
        }
        for (name, add_space_prefix, round_trip) in [("spm", false, Some(RoundTrip::EscapedSpaces)), ("spm+space-prefix", true, None)] {
            let tok = Tokenizer::from_gguf(&spm(add_space_prefix)).expect("SentencePiece tokenizer");
            cases.push(Case { name: name.into(), tok, round_trip });
        }
        cases
    })
}

fn check(case: &Case, text: &str, raw_ids: &[u32]) {
    let tok = &case.tok;
    let n_vocab = tok.n_vocab();
    for parse_special in [false, true] {
        for add_special in [false, true] {
            let ids = tok.encode(text, add_special, parse_special);
            assert!(ids.iter().all(|&id| (id as usize) < n_vocab), "{}: id outside the vocabulary of {n_vocab}: {ids:?}", case.name);

            for special in [false, true] {
                let decoded = tok.decode(&ids, special);
                let mut stream = StreamDecoder::new(special);
                let mut streamed: String = ids.iter().map(|&id| stream.push(tok, id)).collect();
                streamed += &stream.finish();
                assert_eq!(streamed, decoded, "{}: streamed and whole decodes differ", case.name);
            }

            if let (false, Some(round_trip)) = (add_special, case.round_trip) {
                let back = tok.decode(&ids, true);
                let want = match round_trip {
                    RoundTrip::Exact => text.to_string(),
                    RoundTrip::EscapedSpaces => text.replace('▁', " "),
                };
                assert_eq!(back, want, "{}: decode(encode(text)) is not the text (parse_special={parse_special}, ids {ids:?})", case.name);
            }
        }
    }

    // Arbitrary ids, inside the vocabulary or not: decoding gives text, never a panic.
    for special in [false, true] {
        let decoded = tok.decode(raw_ids, special);
        let mut stream = StreamDecoder::new(special);
        let mut streamed: String = raw_ids.iter().map(|&id| stream.push(tok, id)).collect();
        streamed += &stream.finish();
        assert_eq!(streamed, decoded, "{}: streamed and whole decodes of raw ids differ", case.name);
    }
    for &id in raw_ids.iter().take(16) {
        let _ = tok.token_to_piece(id, true);
        let _ = tok.token_text(id);
        let _ = tok.is_eog(id);
        let _ = tok.is_control(id);
    }
    let _ = tok.token_id(text);
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the tokenizer (one per input keeps each run fast and its coverage
    // its own); the rest is the text, and also read as token ids.
    let Some((&pick, rest)) = data.split_first() else { return };
    let cases = cases();
    let case = &cases[pick as usize % cases.len()];
    let text = String::from_utf8_lossy(rest);
    // Ids mostly near the vocabulary (so they hit real tokens), sometimes far outside it.
    let raw_ids: Vec<u32> =
        rest.chunks(2).map(|c| if c.len() == 2 { u16::from_le_bytes([c[0], c[1]]) as u32 % 1024 } else { u32::MAX - c[0] as u32 }).collect();
    check(case, &text, &raw_ids);
});
