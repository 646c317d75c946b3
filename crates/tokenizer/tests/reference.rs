//! The tokenizers of the three test models against llama.cpp's outputs
//! (`shared/reference/<model>/tokenize.json`, llama.cpp commit 0c1e570).

mod common;

use common::{cases, tokenizer};
use tokenizer::StreamDecoder;

/// Every reference entry must give llama.cpp's ids; all mismatches are listed before failing.
fn check_ids(model: &str) {
    let tok = tokenizer(model);
    let cases = cases(model);
    let mut bad = Vec::new();
    for c in &cases {
        let ids = tok.encode(&c.text, c.add_bos, c.parse_special);
        if ids != c.ids {
            bad.push(format!(
                "  text {:?} add_bos={} parse_special={}\n    llama.cpp: {:?}\n    ours:      {:?}",
                c.text, c.add_bos, c.parse_special, c.ids, ids
            ));
        }
    }
    assert!(bad.is_empty(), "{model}: {} of {} entries differ from llama.cpp:\n{}", bad.len(), cases.len(), bad.join("\n"));
}

/// decode(encode(text)) gives the text back, for every reference text.
fn check_round_trip(model: &str) {
    let tok = tokenizer(model);
    let mut bad = Vec::new();
    for c in cases(model).iter().filter(|c| !c.add_bos) {
        let ids = tok.encode(&c.text, false, c.parse_special);
        let back = tok.decode(&ids, true);
        if back != c.text {
            bad.push(format!("  {:?} (parse_special={}) came back as {:?}", c.text, c.parse_special, back));
        }
        // Without special rendering, control tokens render as nothing.
        let bytes: Vec<u8> = ids.iter().filter(|&&id| !tok.is_control(id)).flat_map(|&id| tok.token_to_piece(id, true)).collect();
        assert_eq!(tok.decode(&ids, false), String::from_utf8_lossy(&bytes), "{model}: {:?}", c.text);
    }
    assert!(bad.is_empty(), "{model}: round trip failed:\n{}", bad.join("\n"));
}

/// Pushing the ids one by one never yields U+FFFD for valid text, and the pieces add up to
/// `decode`.
fn check_stream(model: &str) {
    let tok = tokenizer(model);
    let mut split_chars = 0;
    for c in cases(model).iter().filter(|c| !c.add_bos && !c.parse_special) {
        let mut stream = StreamDecoder::new(true);
        let mut text = String::new();
        for &id in &c.ids {
            let piece = tok.token_to_piece(id, true);
            if std::str::from_utf8(&piece).is_err() {
                split_chars += 1;
            }
            let out = stream.push(tok, id);
            assert!(!out.contains('\u{FFFD}'), "{model}: U+FFFD streaming {:?}", c.text);
            text += &out;
        }
        text += &stream.finish();
        assert_eq!(text, c.text, "{model}: streamed text");
        assert_eq!(text, tok.decode(&c.ids, true), "{model}: streamed vs decode");
    }
    // The reference texts (emoji, CJK, accents) must exercise characters split over tokens.
    assert!(split_chars > 0, "{model}: no token in the reference ends inside a character");
}

fn check_eog(model: &str, expected: &[u32]) {
    let tok = tokenizer(model);
    assert_eq!(tok.eog_ids(), expected, "{model}: end-of-generation ids");
    for &id in expected {
        assert!(tok.is_eog(id) && tok.is_control(id), "{model}: {id} should be an EOG control token");
    }
    assert!(!tok.is_eog(u32::MAX));
}

#[test]
fn smollm2_ids_match_llama_cpp() {
    check_ids("smollm2-135m");
}

#[test]
fn gemma3_ids_match_llama_cpp() {
    check_ids("gemma3-270m");
}

#[test]
fn qwen25_coder_ids_match_llama_cpp() {
    check_ids("qwen2.5-coder-0.5b");
}

#[test]
fn smollm2_round_trip() {
    check_round_trip("smollm2-135m");
}

#[test]
fn gemma3_round_trip() {
    check_round_trip("gemma3-270m");
}

#[test]
fn qwen25_coder_round_trip() {
    check_round_trip("qwen2.5-coder-0.5b");
}

#[test]
fn smollm2_stream_decode() {
    check_stream("smollm2-135m");
}

#[test]
fn gemma3_stream_decode() {
    check_stream("gemma3-270m");
}

#[test]
fn qwen25_coder_stream_decode() {
    check_stream("qwen2.5-coder-0.5b");
}

#[test]
fn smollm2_eog() {
    check_eog("smollm2-135m", &[0, 2, 4]);
}

#[test]
fn gemma3_eog() {
    check_eog("gemma3-270m", &[1, 106, 212]);
}

#[test]
fn qwen25_coder_eog() {
    check_eog("qwen2.5-coder-0.5b", &[128247, 151643, 151645, 151662, 151663, 151664]);
}

/// Only gemma3 adds BOS; smollm2's BOS is `<|im_start|>` but is never added.
#[test]
fn bos_rules() {
    let smol = tokenizer("smollm2-135m");
    assert_eq!((smol.bos(), smol.eos(), smol.add_bos()), (Some(1), Some(2), false));
    assert_eq!(smol.encode("Hello", true, true), smol.encode("Hello", false, true));

    let gemma = tokenizer("gemma3-270m");
    assert_eq!((gemma.bos(), gemma.eos(), gemma.add_bos()), (Some(2), Some(1), true));
    assert_eq!(gemma.encode("", true, false), [2]);
    assert_eq!(&gemma.encode("<bos>hi", true, true)[..2], [2, 2]);

    let qwen = tokenizer("qwen2.5-coder-0.5b");
    assert_eq!((qwen.bos(), qwen.eos(), qwen.add_bos()), (Some(151643), Some(151645), false));
}

#[test]
fn pieces_and_lookups() {
    let gemma = tokenizer("gemma3-270m");
    assert_eq!(gemma.token_to_piece(gemma.token_id("<0x0A>").unwrap(), false), b"\n");
    assert_eq!(gemma.token_to_piece(2, false), b"");
    assert_eq!(gemma.token_to_piece(2, true), b"<bos>");
    assert_eq!(gemma.token_text(106), Some("<end_of_turn>"));
    assert_eq!(gemma.token_to_piece(u32::MAX, true), b"");
    assert_eq!(gemma.n_vocab(), 262144);

    let qwen = tokenizer("qwen2.5-coder-0.5b");
    let hello = qwen.encode(" Hello", false, false);
    assert_eq!(hello.len(), 1);
    assert_eq!(qwen.token_text(hello[0]), Some("ĠHello"));
    assert_eq!(qwen.token_to_piece(hello[0], false), b" Hello");
    // User-defined tokens are split out even with special parsing off, and always render.
    let call = qwen.token_id("<tool_call>").unwrap();
    assert_eq!(qwen.encode("<tool_call>", false, false), [call]);
    assert_eq!(qwen.token_to_piece(call, false), b"<tool_call>");
}
