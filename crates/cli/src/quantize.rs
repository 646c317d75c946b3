//! `bantam quantize IN OUT TYPE [THREADS]`: llama-quantize's command, bytes and options.

use anyhow::{bail, Context, Result};
use clap::Args;
use gguf::GgmlType;
use quant::{FileType, Imatrix, Params};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
#[command(after_help = type_list())]
pub struct QuantizeArgs {
    /// Model to quantize: a .gguf file or a model name in the store
    input: String,
    /// Output .gguf file
    output: PathBuf,
    /// Quantization type or mix (see the list below), as llama-quantize names them; not
    /// with --auto, which chooses
    #[arg(value_name = "TYPE", required_unless_present = "auto")]
    ftype: Option<String>,
    /// Worker threads (default: all cores); also --threads
    #[arg(value_name = "THREADS")]
    nthreads: Option<usize>,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Importance matrix (GGUF, as written by `bantam imatrix` or llama-imatrix)
    #[arg(long)]
    imatrix: Option<PathBuf>,
    /// Give tensors whose name matches PATTERN (a regular expression) this type; repeatable
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    tensor_type: Vec<String>,
    /// Type of output.weight
    #[arg(long)]
    output_tensor_type: Option<String>,
    /// Type of token_embd.weight
    #[arg(long)]
    token_embedding_type: Option<String>,
    /// Every quantizable tensor gets TYPE's default type: no k-quant mix
    #[arg(long)]
    pure: bool,
    /// Allow quantizing tensors that are already quantized (quality suffers)
    #[arg(long)]
    allow_requantize: bool,
    /// Leave output.weight as it is
    #[arg(long)]
    leave_output_tensor: bool,
    /// Print the plan (type and size per tensor) without writing anything
    #[arg(long)]
    dry_run: bool,
    /// Search for the smallest per-tensor assignment that meets --max-kld / --max-size,
    /// measured on --calibration text
    #[arg(long, requires = "calibration")]
    auto: bool,
    /// With --auto: the largest mean KL divergence from the input model allowed
    #[arg(long, requires = "auto")]
    max_kld: Option<f64>,
    /// With --auto: the largest file allowed (300MB, 1.5GB, 800MiB, or bytes)
    #[arg(long, requires = "auto", value_parser = parse_size)]
    max_size: Option<u64>,
    /// With --auto: held-out text the KL divergence is measured on (not the imatrix's text)
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// With --auto: chunks of 512 tokens of the calibration text to measure on
    #[arg(long, default_value_t = 2)]
    auto_chunks: usize,
    /// With --auto: also hold each candidate to this task (a `bantam eval` TOML task file,
    /// or items with --task-args): its accuracy may fall at most --max-accuracy-drop below
    /// the input model's
    #[arg(long, requires_all = ["auto", "max_accuracy_drop"])]
    task: Option<PathBuf>,
    /// With --task: the largest accuracy drop allowed, in points (1%) or as a fraction (0.01)
    #[arg(long, requires = "task", value_parser = parse_drop)]
    max_accuracy_drop: Option<f64>,
    /// With --task: more arguments for its `bantam eval` runs (e.g. "--kind classify --labels a,b")
    #[arg(long, requires = "task", allow_hyphen_values = true)]
    task_args: Option<String>,
}

/// "1%" or "0.01": an accuracy drop as a fraction.
fn parse_drop(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("bad accuracy drop {s:?}: expected e.g. 1% or 0.01"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("accuracy drop {s:?} is not between 0% and 100%"));
    }
    Ok(v)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}: expected e.g. 300MB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1048576.0,
        "gib" => 1073741824.0,
        u => return Err(format!("bad size unit {u:?} in {s:?}: use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    Ok((n * mult) as u64)
}

fn type_list() -> String {
    let names: Vec<&str> = quant::ftype::ALL.iter().map(|(_, n)| *n).collect();
    format!("Types: {} (Q3_K, Q4_K, Q5_K mean the _M mixes)", names.join(", "))
}

fn parse_type(s: &str, what: &str) -> Result<GgmlType> {
    match GgmlType::parse(s) {
        Some(t) if kernels::weights::can_quantize(t) => Ok(t),
        _ => bail!("{what}: unknown or unsupported tensor type {s:?}"),
    }
}

pub fn params(a: &QuantizeArgs) -> Result<Params> {
    let name = a.ftype.as_deref().unwrap_or("Q8_0");
    let ftype = FileType::parse(name).with_context(|| format!("unknown quantization type {name:?}. {}", type_list()))?;
    let mut p = Params::new(ftype);
    p.threads = crate::threads(a.threads.or(a.nthreads));
    p.pure = a.pure;
    p.allow_requantize = a.allow_requantize;
    p.leave_output_tensor = a.leave_output_tensor;
    p.output_tensor_type = a.output_tensor_type.as_deref().map(|s| parse_type(s, "--output-tensor-type")).transpose()?;
    p.token_embedding_type = a.token_embedding_type.as_deref().map(|s| parse_type(s, "--token-embedding-type")).transpose()?;
    for tt in &a.tensor_type {
        let Some((pat, ty)) = tt.split_once('=') else { bail!("--tensor-type {tt:?}: expected PATTERN=TYPE") };
        if pat.is_empty() {
            bail!("--tensor-type {tt:?}: missing tensor name");
        }
        p.tensor_types.push((pat.to_ascii_lowercase(), parse_type(ty, "--tensor-type")?));
    }
    if let Some(path) = &a.imatrix {
        p.imatrix = Some(Imatrix::load(path)?);
        p.imatrix_file = Some(path.display().to_string());
    }
    Ok(p)
}

pub fn main(a: QuantizeArgs) -> Result<()> {
    let p = params(&a)?;
    let input = registry::find(&store::Store::open_default(), &a.input)?.path;
    if a.auto {
        if a.ftype.is_some() {
            bail!("--auto chooses the types: give no TYPE");
        }
        return crate::quantize_auto::run(crate::quantize_auto::AutoArgs {
            input: &input,
            output: &a.output,
            max_kld: a.max_kld,
            max_size: a.max_size,
            calibration: a.calibration.as_deref().expect("clap requires it"),
            chunks: a.auto_chunks.max(1),
            ctx: 512,
            task: a.task.as_deref().map(|t| crate::quantize_auto::TaskBar {
                task: t,
                args: a.task_args.as_deref(),
                max_drop: a.max_accuracy_drop.unwrap_or(0.0),
            }),
            base: p,
        });
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    if a.dry_run {
        let f = gguf::Gguf::open(&input)?;
        let (plan, _) = quant::plan(&f, &p)?;
        let (mut before, mut after) = (0, 0);
        for t in &plan {
            println!("{:<40} {:>6} -> {:<6} {:>9.2} MiB -> {:>9.2} MiB", t.info.name, t.info.ggml_type.name(), t.to.name(), mib(t.info.size), mib(t.bytes_out));
            before += t.info.size;
            after += t.bytes_out;
        }
        println!("model size {:.2} MiB -> {:.2} MiB", mib(before), mib(after));
        return Ok(());
    }
    let tty = std::io::stderr().is_terminal();
    eprintln!("quantizing {} to {} as {} using {} threads", input.display(), a.output.display(), p.ftype, p.threads);
    let t0 = Instant::now();
    let s = quant::quantize(&input, &a.output, &p, |pr| {
        let t = pr.tensor;
        let shape: Vec<String> = t.info.dims.iter().map(|d| d.to_string()).collect();
        let line = format!(
            "[{:>4}/{:>4}] {:<36} [{}] {} -> {}  {:.2} MiB -> {:.2} MiB",
            pr.index + 1,
            pr.count,
            t.info.name,
            shape.join(", "),
            t.info.ggml_type.name(),
            t.to.name(),
            mib(t.info.size),
            mib(t.bytes_out)
        );
        if tty {
            let filled = (pr.index + 1) * 30 / pr.count;
            eprint!("\r\x1b[2K[{}{}] {line}", "#".repeat(filled), " ".repeat(30 - filled));
        } else {
            eprintln!("{line}");
        }
    })?;
    if tty {
        eprintln!();
    }
    let bpw = |b: usize| b as f64 * 8.0 / s.n_elements.max(1) as f64;
    println!("model size  = {:8.2} MiB ({:.2} BPW)", mib(s.bytes_in), bpw(s.bytes_in));
    println!("quant size  = {:8.2} MiB ({:.2} BPW)", mib(s.bytes_out), bpw(s.bytes_out));
    println!("tensors: {} ({} converted), file {} bytes, source sha256 {}", s.n_tensors, s.n_quantized, s.file_bytes, s.source_sha256);
    if s.n_fallback > 0 {
        println!("{} of {} tensors fell back to another type for their shape", s.n_fallback, s.n_tensors);
    }
    println!("quantize time = {:.2} s", t0.elapsed().as_secs_f64());
    Ok(())
}
