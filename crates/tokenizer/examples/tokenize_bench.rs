//! Encode / decode speed on a text file, as one JSON line.
//!
//! ```text
//! cargo run --release -p tokenizer --example tokenize_bench -- MODEL.gguf [TEXT_FILE] [REPEAT]
//! ```
//! TEXT_FILE defaults to `shared/reference/ppl-text.txt`; the text is repeated REPEAT times
//! (default 100) to make one long input. Also times a few pathological inputs.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).ok_or("usage: tokenize_bench MODEL.gguf [TEXT_FILE] [REPEAT]")?;
    let default_text = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/ppl-text.txt");
    let text_path = args.get(2).map(String::as_str).unwrap_or(default_text);
    let repeat: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(100);

    let t = Instant::now();
    let file = gguf::Gguf::open(model)?;
    let tok = tokenizer::Tokenizer::from_gguf(&file)?;
    let load_s = t.elapsed().as_secs_f64();

    let text = std::fs::read_to_string(text_path)?.repeat(repeat);
    let t = Instant::now();
    let ids = tok.encode(&text, false, false);
    let encode_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = tok.decode(&ids, true);
    let decode_s = t.elapsed().as_secs_f64();

    let mut pathological = Vec::new();
    for (name, input) in [
        ("spaces_1m", " ".repeat(1 << 20)),
        ("newlines_1m", "\n".repeat(1 << 20)),
        ("digits_1m", "7".repeat(1 << 20)),
        ("letters_1m", "a".repeat(1 << 20)),
        ("mixed_ws_1m", " \t\n\u{a0}".repeat(1 << 18)),
    ] {
        let t = Instant::now();
        let n = tok.encode(&input, false, false).len();
        pathological.push(format!("\"{name}\":{{\"tokens\":{n},\"s\":{:.3}}}", t.elapsed().as_secs_f64()));
    }

    println!(
        "{{\"model\":{:?},\"load_s\":{load_s:.3},\"text_bytes\":{},\"tokens\":{},\"encode_s\":{encode_s:.3},\"encode_mb_per_s\":{:.2},\"decode_s\":{decode_s:.3},\"round_trip\":{},{}}}",
        model,
        text.len(),
        ids.len(),
        text.len() as f64 / 1e6 / encode_s,
        back == text,
        pathological.join(",")
    );
    Ok(())
}
