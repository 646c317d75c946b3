//! `bantam show MODEL`.

use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;

#[derive(Args)]
pub struct ShowArgs {
    /// Model name or path to a .gguf file
    model: String,
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

pub fn main(a: ShowArgs) -> Result<()> {
    let path = engine::resolve_model(&a.model)?;
    let m = model::Model::open(&path)?;
    let c = &m.config;
    let mut mix: BTreeMap<&str, usize> = BTreeMap::new();
    for t in m.file.tensors() {
        *mix.entry(t.ggml_type.name()).or_default() += 1;
    }
    let mix: Vec<String> = mix.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let params = m.n_params();
    let n_ctx = c.ctx_train.min(4096);
    let kv = (c.kv_bytes_per_token() * n_ctx) as u64;
    let template = m.file.get("tokenizer.chat_template").is_some();
    println!("  Model");
    println!("    file                {}", path.display());
    println!("    architecture        {}", c.arch.name());
    println!("    parameters          {:.1}M", params as f64 / 1e6);
    println!("    quantization        {}", mix.join(", "));
    println!("    context length      {}", c.ctx_train);
    println!("    embedding length    {}", c.n_embd);
    println!("    layers              {}", c.n_layer);
    println!("    heads (kv)          {} ({})", c.n_head, c.n_head_kv);
    if let Some(w) = c.sliding_window {
        println!("    sliding window      {w} on {} of {} layers", c.swa_layers.iter().filter(|&&b| b).count(), c.n_layer);
    }
    println!("    vocabulary          {}", c.n_vocab);
    println!("    chat template       {}", if template { "yes" } else { "no (base model: prompts run raw)" });
    println!("    file size           {}", human_bytes(m.file.file_size() as u64));
    println!("    memory at ctx {n_ctx:<5} {} (weights {} + KV cache {})", human_bytes(m.file.file_size() as u64 + kv), human_bytes(m.file.file_size() as u64), human_bytes(kv));
    Ok(())
}
