//! `bantam run MODEL [PROMPT]`: stream an answer, or chat on a terminal.

use anyhow::{bail, Result};
use clap::Args;
use engine::sampler::SamplingParams;
use engine::template::ChatMessage;
use engine::{GenerateParams, GenerateStats, LoadedModel, Sequence};
use kernels::pool::Pool;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    /// Model name (smollm2:135m, gemma3:270m, qwen2.5-coder:0.5b) or path to a .gguf file
    model: String,
    /// The prompt; without it, a chat on a terminal, or the prompt read from stdin
    prompt: Option<String>,
    /// System message for the chat template
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as it is, without the chat template
    #[arg(long)]
    raw: bool,
    /// Sampling temperature; 0 means greedy [default: the model's, else 0.8]
    #[arg(long)]
    temperature: Option<f32>,
    /// [default: the model's, else 40]
    #[arg(long)]
    top_k: Option<usize>,
    /// [default: the model's, else 0.9]
    #[arg(long)]
    top_p: Option<f32>,
    /// [default: the model's, else 0]
    #[arg(long)]
    min_p: Option<f32>,
    /// [default: the model's, else 1.1]
    #[arg(long)]
    repeat_penalty: Option<f32>,
    /// Tokens considered by the penalties (-1: the whole context, 0: off) [default: 64]
    #[arg(long, allow_negative_numbers = true)]
    repeat_last_n: Option<i32>,
    #[arg(long)]
    presence_penalty: Option<f32>,
    #[arg(long)]
    frequency_penalty: Option<f32>,
    /// Random seed (same seed, same output)
    #[arg(long)]
    seed: Option<u64>,
    /// Most tokens to generate (-1: until the context is full)
    #[arg(short = 'n', long = "num-predict", allow_negative_numbers = true)]
    num_predict: Option<i64>,
    /// Stop at this string (repeatable; not printed) [default: the model's stop parameters]
    #[arg(long)]
    stop: Vec<String>,
    /// Context size in tokens (default: the model's num_ctx, else 4096 or the model's
    /// training context if smaller)
    #[arg(short = 'c', long)]
    ctx_size: Option<usize>,
    /// Print nothing while pulling a model that is not in the store yet
    #[arg(long)]
    quiet: bool,
    /// Constrain the answer to JSON: "json" for any object, or a file holding a JSON schema
    #[arg(long, group = "constrain")]
    format: Option<String>,
    /// Constrain the answer to one of these comma-separated choices
    #[arg(long, value_delimiter = ',', group = "constrain")]
    choice: Option<Vec<String>>,
    /// Constrain the answer to match this regular expression
    #[arg(long, group = "constrain")]
    regex: Option<String>,
    /// Constrain the answer to a grammar in Lark syntax (a file)
    #[arg(long, group = "constrain")]
    grammar: Option<std::path::PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Print timings to stderr, as `ollama run --verbose`
    #[arg(long)]
    verbose: bool,
}

/// A model's PARAMETER defaults (from its Modelfile), read as the command line's types.
struct Defaults<'a>(Option<&'a serde_json::Map<String, serde_json::Value>>);

impl Defaults<'_> {
    fn f32(&self, k: &str) -> Option<f32> {
        self.0?.get(k)?.as_f64().map(|v| v as f32)
    }
    fn i64(&self, k: &str) -> Option<i64> {
        self.0?.get(k)?.as_i64()
    }
    fn strings(&self, k: &str) -> Vec<String> {
        self.0.and_then(|m| m.get(k)).and_then(|v| v.as_array()).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
    }
}

impl RunArgs {
    /// The grammar the answer must follow, if any.
    fn grammar(&self) -> Result<Option<engine::Grammar>> {
        use anyhow::Context;
        Ok(if let Some(f) = &self.format {
            if f == "json" {
                Some(engine::Grammar::JsonObject)
            } else {
                let text = std::fs::read_to_string(f).with_context(|| format!("cannot read the schema file {f}"))?;
                let schema: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{f} is not JSON"))?;
                Some(engine::Grammar::JsonSchema(schema))
            }
        } else if let Some(c) = &self.choice {
            Some(engine::Grammar::Choice(c.clone()))
        } else if let Some(r) = &self.regex {
            Some(engine::Grammar::Regex(r.clone()))
        } else if let Some(g) = &self.grammar {
            Some(engine::Grammar::Lark(std::fs::read_to_string(g).with_context(|| format!("cannot read {}", g.display()))?))
        } else {
            None
        })
    }

    /// Sampling settings: the command line's, else the model's defaults, else bantam's.
    fn params(&self, d: &Defaults<'_>) -> Result<GenerateParams> {
        let mut sampling = SamplingParams {
            temperature: self.temperature.or(d.f32("temperature")).unwrap_or(0.8),
            top_k: self.top_k.or(d.i64("top_k").map(|v| v.max(0) as usize)).unwrap_or(40),
            top_p: self.top_p.or(d.f32("top_p")).unwrap_or(0.9),
            min_p: self.min_p.or(d.f32("min_p")).unwrap_or(0.0),
            repeat_penalty: self.repeat_penalty.or(d.f32("repeat_penalty")).unwrap_or(1.1),
            repeat_last_n: self.repeat_last_n.or(d.i64("repeat_last_n").map(|v| v as i32)).unwrap_or(64),
            presence_penalty: self.presence_penalty.or(d.f32("presence_penalty")).unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.or(d.f32("frequency_penalty")).unwrap_or(0.0),
            ..SamplingParams::default()
        };
        if let Some(s) = self.seed.or(d.i64("seed").map(|v| v as u64)) {
            sampling.seed = s;
        }
        sampling.validate()?;
        let num_predict = match self.num_predict.or(d.i64("num_predict")).unwrap_or(-1) {
            n if n < -1 => bail!("--num-predict must be -1 or more, got {n}"),
            -1 => None,
            n => Some(n as usize),
        };
        let stop = if self.stop.is_empty() { d.strings("stop") } else { self.stop.clone() };
        Ok(GenerateParams { sampling, num_predict, stop })
    }
}

struct Session {
    lm: LoadedModel,
    pool: Pool,
    seq: Sequence,
    params: GenerateParams,
    cancel: Arc<AtomicBool>,
    verbose: bool,
    raw: bool,
    /// Compiled afresh for each answer.
    grammar: Option<engine::Grammar>,
}

impl Session {
    /// Token ids for the conversation so far (templated) or the raw prompt.
    fn prompt_tokens(&self, messages: &[ChatMessage], raw_prompt: &str) -> Result<Vec<u32>> {
        if self.raw || self.lm.template.is_none() {
            return Ok(self.lm.tokenizer.encode(raw_prompt, true, true));
        }
        Ok(self.lm.chat_prompt(messages, None)?)
    }

    fn answer(&mut self, tokens: &[u32]) -> Result<(String, GenerateStats)> {
        self.cancel.store(false, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let mut answer = String::new();
        let mut constraint = self.grammar.as_ref().map(|g| self.lm.constrain(g)).transpose()?;
        let stats = self.seq.generate(&self.lm, &self.pool, tokens, &self.params, constraint.as_mut(), &self.cancel, |piece| {
            answer.push_str(piece);
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
        if self.verbose {
            print_verbose(&self.lm, &stats);
        }
        Ok((answer, stats))
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.as_secs_f64() > 0.0 {
        n as f64 / d.as_secs_f64()
    } else {
        0.0
    }
}

fn print_verbose(lm: &LoadedModel, s: &GenerateStats) {
    let total = lm.load_duration + s.prompt_eval_duration + s.eval_duration;
    eprintln!("total duration:       {total:?}");
    eprintln!("load duration:        {:?}", lm.load_duration);
    eprintln!("prompt eval count:    {} token(s)", s.prompt_eval_count);
    eprintln!("prompt eval duration: {:?}", s.prompt_eval_duration);
    eprintln!("prompt eval rate:     {:.2} tokens/s", rate(s.prompt_eval_count, s.prompt_eval_duration));
    eprintln!("eval count:           {} token(s)", s.eval_count);
    eprintln!("eval duration:        {:?}", s.eval_duration);
    eprintln!("eval rate:            {:.2} tokens/s", rate(s.eval_count, s.eval_duration));
}

pub fn main(a: RunArgs) -> Result<()> {
    let name = crate::store::ensure_pulled(&a.model, a.quiet)?;
    let lm = LoadedModel::load(&name)?;
    let stored = lm.stored.clone();
    let stored = stored.as_ref();
    let defaults = Defaults(stored.map(|r| &r.params));
    let params = a.params(&defaults)?;
    let grammar = a.grammar()?;
    let n_ctx = a.ctx_size.or(defaults.i64("num_ctx").map(|v| v.max(0) as usize)).unwrap_or_else(|| lm.model.config.ctx_train.min(4096));
    if n_ctx < 2 {
        bail!("--ctx-size must be at least 2");
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    // Ctrl-C stops the current answer, not the program (a second one exits).
    ctrlc::set_handler(move || {
        if c.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    })?;
    let seq = Sequence::new(&lm, n_ctx);
    let mut s = Session { lm, pool: Pool::new(crate::threads(a.threads)), seq, params, cancel, verbose: a.verbose, raw: a.raw, grammar };
    let mut messages = Vec::new();
    if let Some(sys) = a.system.as_ref().or(stored.and_then(|r| r.system.as_ref())) {
        messages.push(ChatMessage::new("system", sys.clone()));
    }
    // A Modelfile's MESSAGE lines open every conversation.
    for m in stored.map(|r| r.messages.as_slice()).unwrap_or_default() {
        messages.push(ChatMessage::new(&m.role, m.content.clone()));
    }
    let prompt = match a.prompt {
        Some(p) => Some(p),
        None if !std::io::stdin().is_terminal() => {
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p)?;
            Some(p)
        }
        None => None,
    };
    if let Some(p) = prompt {
        messages.push(ChatMessage::new("user", p.clone()));
        let tokens = s.prompt_tokens(&messages, &p)?;
        s.answer(&tokens)?;
        return Ok(());
    }
    chat(&mut s, messages)
}

/// The interactive chat: history kept, `/bye` leaves, `/clear` resets.
fn chat(s: &mut Session, base: Vec<ChatMessage>) -> Result<()> {
    let mut messages = base.clone();
    let stdin = std::io::stdin();
    eprintln!("Chat with {} (/bye to leave, /clear to reset, Ctrl-C stops an answer)", s.lm.name);
    loop {
        eprint!(">>> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/bye" => return Ok(()),
            "/clear" => {
                messages = base.clone();
                s.seq.clear();
                eprintln!("Cleared the conversation.");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", line));
        let tokens = s.prompt_tokens(&messages, line)?;
        if s.raw || s.lm.template.is_none() {
            // Without a template each line is its own raw prompt.
            messages.clear();
        }
        match s.answer(&tokens) {
            Ok((answer, _)) => {
                if s.lm.template.is_some() && !s.raw {
                    messages.push(ChatMessage::new("assistant", answer));
                }
            }
            Err(e) => {
                messages.pop();
                eprintln!("Error: {e}");
            }
        }
    }
}
