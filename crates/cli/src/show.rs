//! `bantam show MODEL`.

use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;

#[derive(Args)]
pub struct ShowArgs {
    /// Model name or path to a .gguf file
    model: String,
    /// Print the Modelfile that recreates the model
    #[arg(long, group = "part")]
    modelfile: bool,
    /// Print its PARAMETER defaults
    #[arg(long, group = "part")]
    parameters: bool,
    /// Print its prompt template (the Modelfile's TEMPLATE, else the GGUF chat template)
    #[arg(long, group = "part")]
    template: bool,
    /// Print its system prompt
    #[arg(long, group = "part")]
    system: bool,
    /// Print its licence
    #[arg(long, group = "part")]
    license: bool,
    /// Context size the memory plan assumes [default: the model's num_ctx, else 4096 or
    /// the training context if smaller]
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,
    #[command(flatten)]
    cache: crate::CacheArgs,
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
    let found = registry::find(&store::Store::open_default(), &a.model)?;
    let (path, stored) = (found.path, found.record);
    let m = model::Model::open(&path)?;
    let name = stored.as_ref().map_or_else(|| a.model.clone(), |r| r.name.to_string());
    let view = server::describe::modelfile_view(&name, &path, &m.file, stored.as_ref());
    let part = if a.modelfile {
        Some(view.modelfile.clone())
    } else if a.parameters {
        Some(view.parameters.clone())
    } else if a.template {
        Some(format!("{}\n", view.template))
    } else if a.system {
        Some(format!("{}\n", view.system))
    } else if a.license {
        Some(format!("{}\n", view.license))
    } else {
        None
    };
    if let Some(text) = part {
        print!("{text}");
        return Ok(());
    }
    let c = &m.config;
    let mut mix: BTreeMap<&str, usize> = BTreeMap::new();
    for t in m.file.tensors() {
        *mix.entry(t.ggml_type.name()).or_default() += 1;
    }
    let mix: Vec<String> = mix.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let n_params = m.n_params();
    let n_ctx = a.ctx_size.or(stored.as_ref().and_then(|r| r.params.get("num_ctx")?.as_u64()).map(|v| v as usize)).unwrap_or(c.ctx_train.min(4096));
    let types = a.cache.types()?;
    types.check(c)?;
    let per_token = types.bytes_per_token(c) as u64;
    let kv = types.cache_bytes(c, n_ctx, model::DEFAULT_PASS) as u64;
    let compute = model::Scratch::planned_bytes(c, n_ctx.min(512), n_ctx, crate::threads(None)) as u64;
    let template = m.file.get("tokenizer.chat_template").is_some();
    println!("  Model");
    println!("    file                {}", path.display());
    println!("    architecture        {}", c.arch.name());
    if let Some(r) = &stored {
        println!("    name                {}", r.name);
        println!("    id                  {}", &r.id.hex()[..12]);
    }
    println!("    parameters          {:.1}M", n_params as f64 / 1e6);
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
    println!();
    let kv_name = if types.k == types.v { types.k.to_string() } else { format!("K {} / V {}", types.k, types.v) };
    match c.sliding_window.filter(|_| kv < per_token * n_ctx as u64) {
        Some(w) => println!(
            "  Memory plan ({kv_name} KV cache, {} per token; the {} sliding-window layers keep the last {w} + {} positions)",
            human_bytes(per_token),
            c.swa_layers.iter().filter(|&&s| s).count(),
            model::DEFAULT_PASS
        ),
        None => println!("  Memory plan ({kv_name} KV cache, {} per token)", human_bytes(per_token)),
    }
    let weights = m.file.file_size() as u64;
    println!(
        "    one sequence of {n_ctx:<5} {} (weights {} + KV cache {} + compute {})",
        human_bytes(weights + kv + compute),
        human_bytes(weights),
        human_bytes(kv),
        human_bytes(compute)
    );
    println!("    bantam serve        {} (weights + 8 slots of {n_ctx} tokens, --max-parallel 8)", human_bytes(weights + 8 * kv + compute));
    if let Some(avail) = server::system_memory_bytes() {
        println!("    this machine        {} of RAM", human_bytes(avail as u64));
    }
    for (title, text) in [("Parameters", &view.parameters), ("System", &view.system)] {
        if !text.is_empty() {
            println!();
            println!("  {title}");
            text.lines().for_each(|line| println!("    {line}"));
        }
    }
    Ok(())
}
