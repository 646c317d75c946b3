//! Small vocabularies written in the test: loading errors, defaults, and the two algorithms
//! end to end without a model file.

use gguf::{Array, Gguf, GgufWriter, Value};
use tokenizer::{Tokenizer, TokenizerError};

fn strs(v: &[&str]) -> Value {
    Value::Array(Array::Str(v.iter().map(|s| s.to_string()).collect()))
}

fn load(meta: Vec<(&str, Value)>) -> Result<Tokenizer, TokenizerError> {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.meta(k, v);
    }
    let f = Gguf::from_vec("test.gguf", w.to_bytes()).expect("valid GGUF");
    Tokenizer::from_gguf(&f)
}

/// A byte-level BPE vocabulary: all 256 byte symbols, a few merges, two control tokens.
fn bpe_meta(pre: &str) -> Vec<(&'static str, Value)> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| bpe_char(b).to_string()).collect();
    tokens.extend(["he", "ll", "llo", "hello", "Ġw", "Ġwo", "<|end|>", "<|user|>"].map(String::from));
    let mut types = vec![1; tokens.len()];
    let n = types.len();
    types[n - 2] = 3;
    types[n - 1] = 3;
    vec![
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Value::Str(pre.into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.merges", strs(&["h e", "l l", "ll o", "he llo", "Ġ w", "Ġw o"])),
        ("tokenizer.ggml.eos_token_id", Value::U32(n as u32 - 2)),
    ]
}

/// GPT-2's byte-to-unicode map, written out independently of the crate.
fn bpe_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

#[test]
fn bpe_end_to_end() {
    let tok = load(bpe_meta("gpt-2")).unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.encode("hello world", false, false), [id("hello"), id("Ġwo"), id("r"), id("l"), id("d")]);
    assert_eq!(tok.encode("<|user|>hello", false, true), [id("<|user|>"), id("hello")]);
    assert_eq!(tok.decode(&tok.encode("<|user|>hé\n", false, true), false), "hé\n");
    // BPE defaults: BOS id 11 ("," here), not added; the EOS text is an EOG control token.
    assert_eq!((tok.bos(), tok.add_bos()), (Some(11), false));
    assert!(tok.is_eog(id("<|end|>")) && tok.is_control(id("<|end|>")));
}

#[test]
fn llama3_pre_adds_bos_by_default() {
    let mut meta = bpe_meta("llama-bpe");
    meta.push(("tokenizer.ggml.bos_token_id", Value::U32(1)));
    let tok = load(meta).unwrap();
    assert!(tok.add_bos());
    assert_eq!(tok.encode("", true, false), [1]);
}

#[test]
fn spm_end_to_end() {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["▁", "▁h", "▁hi", "i", "h"].map(String::from));
    let mut types = vec![2, 3, 3];
    types.extend([6; 256]);
    types.extend([1; 5]);
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let tok = load(vec![
        ("tokenizer.ggml.model", Value::Str("llama".into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::Str(tokens))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
    ])
    .unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    // SentencePiece defaults: BOS 1 added, and a space prefix before the text.
    assert_eq!(tok.encode("hi", true, false), [1, id("▁hi")]);
    assert_eq!(tok.encode("hi\n", false, false), [id("▁hi"), id("<0x0A>")]);
    assert_eq!(tok.decode(&[id("▁hi"), id("<0x0A>")], false), " hi\n");
    // After a special token the prefix space is added again.
    assert_eq!(tok.encode("</s>hi", false, true), [2, id("▁hi")]);
    assert!(tok.is_eog(2));
    // The unknown token is special: its text shows only with `special`.
    assert!(tok.token_to_piece(0, false).is_empty());
    assert_eq!(tok.token_to_piece(0, true), b"<unk>");
}

#[test]
fn load_errors() {
    let err = |meta| load(meta).unwrap_err();
    assert!(matches!(err(vec![]), TokenizerError::MissingKey { .. }));
    assert!(matches!(err(vec![("tokenizer.ggml.model", Value::U32(1))]), TokenizerError::InvalidMetadata { .. }));
    assert!(matches!(
        err(vec![("tokenizer.ggml.model", Value::Str("bert".into())), ("tokenizer.ggml.tokens", strs(&["a"]))]),
        TokenizerError::UnsupportedModel(_)
    ));
    assert!(matches!(err(bpe_meta("no-such-pre")), TokenizerError::UnknownPreTokenizer { .. }));

    let mut no_merges = bpe_meta("gpt-2");
    no_merges.retain(|(k, _)| *k != "tokenizer.ggml.merges");
    assert!(matches!(err(no_merges), TokenizerError::MissingKey { .. }));

    let mut short_types = bpe_meta("gpt-2");
    short_types.retain(|(k, _)| *k != "tokenizer.ggml.token_type");
    short_types.push(("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![1; 3]))));
    assert!(matches!(err(short_types), TokenizerError::InvalidMetadata { .. }));

    let dup = vec![("tokenizer.ggml.model", Value::Str("llama".into())), ("tokenizer.ggml.tokens", strs(&["a", "b", "a"]))];
    assert!(matches!(err(dup), TokenizerError::DuplicateToken { first: 0, second: 2, .. }));

    // add_bos_token with no usable BOS id (the BPE default, 11, is outside this vocabulary).
    let tiny = vec![
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.tokens", strs(&["a", "b"])),
        ("tokenizer.ggml.merges", strs(&[])),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ];
    assert!(matches!(err(tiny), TokenizerError::MissingSpecialToken { .. }));
}

#[test]
fn odd_vocabularies_still_encode() {
    // Empty token texts are renamed as llama.cpp does; out-of-range special ids are ignored;
    // malformed merges are skipped.
    let tok = load(vec![
        ("tokenizer.ggml.model", Value::Str("gpt2".into())),
        ("tokenizer.ggml.tokens", strs(&["a", "", "b"])),
        ("tokenizer.ggml.merges", strs(&["a", "a b c", ""])),
        ("tokenizer.ggml.eos_token_id", Value::U32(99)),
    ])
    .unwrap();
    assert_eq!(tok.token_text(1), Some("[EMPTY_1]"));
    assert_eq!(tok.eos(), None);
    assert_eq!(tok.encode("abzé", true, true), [0, 2]);
    assert_eq!(tok.encode("", true, true), Vec::<u32>::new());
}
