//! Odd and large inputs: encoding never panics and byte-exact round trips hold.

mod common;

use common::{tokenizer, MODELS};

fn awkward_inputs() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "\0",
        "\u{FFFD}",
        "e\u{301}\u{301}\u{301}",
        "\u{200B}\u{200D}\u{FE0F}",
        "<|im_",
        "<|im_start|",
        "<|im_start|><|im_start|>",
        "<bo",
        "<0x41>",
        "Ġ Ċ ĉ",
        "'s'S'''t 'll",
        "\r\n\r\n\r",
        "\t \u{a0}\u{3000} \u{85}x",
        "1\u{661}\u{0BE7}²Ⅻ",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 🏳️‍🌈",
        "\u{10FFFF}\u{E000}\u{F8FF}",
        "</s></s><s>",
        "<start_of_turn><end_of_turn>",
    ]
    .map(String::from)
    .to_vec();
    v.push(" ".repeat(100_000));
    v.push("\n".repeat(50_000) + "x");
    v.push(" \t\n\u{a0}".repeat(20_000));
    v.push("9".repeat(30_000));
    v.push("ab".repeat(50_000));
    v.push("é".repeat(30_000));
    v.push("<|im_end|>".repeat(2_000));
    v
}

#[test]
fn awkward_inputs_round_trip() {
    for model in MODELS {
        let tok = tokenizer(model);
        for text in awkward_inputs() {
            for parse_special in [false, true] {
                let ids = tok.encode(&text, false, parse_special);
                assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
                let back = tok.decode(&ids, true);
                let shown: String = text.chars().take(40).collect();
                assert_eq!(back, text, "{model}: {shown:?}… (parse_special={parse_special})");
                let _ = tok.encode(&text, true, parse_special);
            }
        }
    }
}

/// A literal "▁" in SentencePiece input is the escaped-space symbol: it decodes as a space
/// (as in llama.cpp). Encoding must still work.
#[test]
fn literal_escape_symbol() {
    let gemma = tokenizer("gemma3-270m");
    assert_eq!(gemma.decode(&gemma.encode("a▁b", false, false), true), "a b");
}

#[test]
fn stream_decoder_on_awkward_inputs() {
    for model in MODELS {
        let tok = tokenizer(model);
        for text in awkward_inputs().iter().filter(|t| t.len() < 1000) {
            let ids = tok.encode(text, false, true);
            let mut stream = tokenizer::StreamDecoder::new(true);
            let mut out: String = ids.iter().map(|&id| stream.push(tok, id)).collect();
            out += &stream.finish();
            assert_eq!(&out, text, "{model}");
        }
    }
}
