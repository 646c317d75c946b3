//! `bantam tokenize` and `bantam detokenize`: the tokenizer alone, without loading weights.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Read;
use tokenizer::Tokenizer;

#[derive(Args)]
pub struct TokenizeArgs {
    /// Model name or path to a .gguf file
    model: String,
    /// Text to tokenize; "-" reads the exact bytes of stdin
    text: String,
    /// Do not add BOS even when the model adds it
    #[arg(long)]
    no_bos: bool,
    /// Parse special tokens written in the text (e.g. <|im_start|>) as single tokens
    #[arg(long)]
    special: bool,
}

#[derive(Args)]
pub struct DetokenizeArgs {
    /// Model name or path to a .gguf file
    model: String,
    /// Token ids
    #[arg(required = true, allow_negative_numbers = true)]
    ids: Vec<i64>,
}

fn load(model: &str) -> Result<Tokenizer> {
    let path = registry::find(&store::Store::open_default(), model)?.path;
    let f = gguf::Gguf::open(&path)?;
    Ok(Tokenizer::from_gguf(&f)?)
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let text = if a.text == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
        String::from_utf8(buf).map_err(|e| anyhow::anyhow!("stdin is not valid UTF-8 (first bad byte at offset {})", e.utf8_error().valid_up_to()))?
    } else {
        a.text
    };
    let tok = load(&a.model)?;
    let ids = tok.encode(&text, !a.no_bos, a.special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

pub fn detokenize(a: DetokenizeArgs) -> Result<()> {
    let tok = load(&a.model)?;
    let n = tok.n_vocab();
    let ids = a
        .ids
        .iter()
        .map(|&i| u32::try_from(i).ok().filter(|&u| (u as usize) < n).ok_or_else(|| anyhow::anyhow!("token id {i} is outside the vocabulary (0..{n})")))
        .collect::<Result<Vec<u32>>>()?;
    println!("{}", tok.decode(&ids, true));
    Ok(())
}
