//! Machine-readable encoding for differential tests (see `tools/llamacpp_difftest.py`).
//!
//! ```text
//! encode_json MODEL.gguf TEXTS.json PARSE_SPECIAL(0|1) ADD_SPECIAL(0|1)   # -> [[ids], ...]
//! encode_json MODEL.gguf --vocab                                          # -> pieces, EOG, ...
//! ```
//! TEXTS.json is a JSON list of strings; the output is one JSON value on stdout.

use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: encode_json MODEL.gguf (TEXTS.json PARSE_SPECIAL ADD_SPECIAL | --vocab)";
    let (model, what) = (args.get(1).ok_or(usage)?, args.get(2).ok_or(usage)?);
    let tok = tokenizer::Tokenizer::from_gguf(&gguf::Gguf::open(model)?)?;
    if what == "--vocab" {
        let n = tok.n_vocab() as u32;
        let hex = |v: Vec<u8>| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let out = json!({
            "pieces_special": (0..n).map(|i| hex(tok.token_to_piece(i, true))).collect::<Vec<_>>(),
            "pieces": (0..n).map(|i| hex(tok.token_to_piece(i, false))).collect::<Vec<_>>(),
            "eog": tok.eog_ids(),
            "control": (0..n).filter(|&i| tok.is_control(i)).collect::<Vec<_>>(),
            "bos": tok.bos(),
            "eos": tok.eos(),
            "add_bos": tok.add_bos(),
        });
        println!("{out}");
        return Ok(());
    }
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(what)?)?;
    let flag = |i: usize| args.get(i).is_some_and(|s| s == "1");
    let (parse_special, add_special) = (flag(3), flag(4));
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, add_special, parse_special)).collect();
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
