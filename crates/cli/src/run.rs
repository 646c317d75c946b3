//! `bantam run MODEL [PROMPT]`: stream an answer, or chat on a terminal.

//!
//! `run` is a client of the same engine thread that `serve` uses, with one slot: the prompt
//! is checked, options merged, tokens sampled and stops detected in one place for both.

use anyhow::{bail, Result};
use clap::Args;
use engine::template::{ChatMessage, Think, ThinkLevel};
use engine::thinking::ThinkingSplitter;
use engine::{EngineHandle, EngineOptions, Event, GenerateParams, LoadedModel, Options, Request, SharedPool, Usage};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    #[command(flatten)]
    cache: crate::CacheArgs,
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
    /// Let a thinking model reason first (`--think=low|medium|high` for templates that take
    /// a level); its reasoning is shown apart from the answer, dimmed on a terminal
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "LEVEL")]
    think: Option<String>,
    /// Make a thinking model answer without reasoning (`--think=false`)
    #[arg(long, conflicts_with = "think")]
    no_think: bool,
    /// With --think, print only the answer
    #[arg(long)]
    hidethinking: bool,
    /// A LoRA adapter (GGUF, llama.cpp's format) applied over the model (repeatable;
    /// after the Modelfile's ADAPTER lines)
    #[arg(long, value_name = "FILE")]
    adapter: Vec<std::path::PathBuf>,
    /// The scale of each --adapter, in order (default 1)
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    adapter_scale: Vec<f32>,
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

    /// `--think[=LEVEL]` / `--no-think`.
    fn think(&self) -> Result<Option<Think>> {
        if self.no_think {
            return Ok(Some(Think::Off));
        }
        Ok(match self.think.as_deref() {
            None => None,
            Some("true") => Some(Think::On),
            Some("false") => Some(Think::Off),
            Some(level) => match ThinkLevel::parse(level) {
                Some(l) => Some(Think::Level(l)),
                None => bail!("--think takes true, false, low, medium or high, not {level:?}"),
            },
        })
    }

    /// The command line's options (unset where a flag is not given).
    fn options(&self) -> Options {
        Options {
            temperature: self.temperature,
            top_k: self.top_k.map(|k| k as i64),
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n.map(i64::from),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed.map(|s| s as i64),
            num_predict: self.num_predict,
            num_ctx: None,
            stop: (!self.stop.is_empty()).then(|| self.stop.clone()),
        }
    }
}

struct Session {
    lm: Arc<LoadedModel>,
    engine: EngineHandle,
    params: GenerateParams,
    verbose: bool,
    raw: bool,
    /// Compiled afresh for each answer.
    grammar: Option<engine::Grammar>,
    think: Option<Think>,
    /// Print a thinking model's reasoning (when it is split from the answer).
    show_thinking: bool,
    /// Whether the next answer starts inside a thinking block the prompt opened.
    starts_thinking: bool,
}

impl Session {
    /// Token ids for the conversation so far (templated) or the raw prompt.
    fn prompt_tokens(&mut self, messages: &[ChatMessage], raw_prompt: &str) -> Result<Vec<u32>> {
        self.starts_thinking = false;
        if self.raw || self.lm.template.is_none() {
            return Ok(self.lm.tokenizer.encode(raw_prompt, true, true));
        }
        let (tokens, starts_thinking) = self.lm.chat_prompt_thinking(messages, None, self.think)?;
        self.starts_thinking = starts_thinking;
        Ok(tokens)
    }

    /// Stream one answer to stdout; its text (without the reasoning) and figures.
    fn answer(&mut self, tokens: &[u32]) -> Result<(String, Usage)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut req = Request::new(tokens.to_vec(), self.params.clone(), tx);
        req.constraint = self.grammar.as_ref().map(|g| self.lm.constrain(g)).transpose()?;
        req.adapters = self.lm.adapters.clone();
        self.engine.submit(req)?;
        // With --think/--no-think a thinking model's reasoning is split from its answer.
        let split = self.think.is_some() && self.lm.thinks() && !self.raw;
        let mut splitter = split.then(|| ThinkingSplitter::new(self.starts_thinking));
        let mut out = Printer { out: std::io::stdout().lock(), show_thinking: self.show_thinking, thinking: false };
        let mut answer = String::new();
        let usage = loop {
            let (text, done) = match rx.blocking_recv() {
                Some(Event::Token { text, .. }) => (text, None),
                Some(Event::Done { text, usage }) => (text, Some(usage)),
                Some(Event::Error(e)) => {
                    out.end();
                    return Err(e.into());
                }
                None => bail!("the engine stopped before the answer was complete"),
            };
            match splitter.as_mut() {
                Some(sp) => {
                    let mut s = sp.push(&text);
                    if done.is_some() {
                        let rest = sp.finish();
                        s.thinking += &rest.thinking;
                        s.content += &rest.content;
                    }
                    out.thinking(&s.thinking);
                    out.content(&s.content);
                    answer += &s.content;
                }
                None => {
                    out.content(&text);
                    answer += &text;
                }
            }
            if let Some(usage) = done {
                break usage;
            }
        };
        out.end();
        if self.verbose {
            print_verbose(&self.lm, &usage);
        }
        Ok((answer, usage))
    }
}

/// Writes an answer as it streams: reasoning dimmed on a terminal (framed by
/// "Thinking..." and "...done thinking." elsewhere, as `ollama run` does), then the answer.
struct Printer<W: Write> {
    out: W,
    show_thinking: bool,
    /// Inside the reasoning.
    thinking: bool,
}

impl<W: Write> Printer<W> {
    fn thinking(&mut self, text: &str) {
        if text.is_empty() || !self.show_thinking {
            return;
        }
        if !self.thinking {
            let open = if std::io::stdout().is_terminal() { "\x1b[2m" } else { "Thinking...\n" };
            let _ = self.out.write_all(open.as_bytes());
            self.thinking = true;
        }
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn close_thinking(&mut self) {
        if self.thinking {
            let close = if std::io::stdout().is_terminal() { "\x1b[0m\n\n" } else { "\n...done thinking.\n\n" };
            let _ = self.out.write_all(close.as_bytes());
            self.thinking = false;
        }
    }

    fn content(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.close_thinking();
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn end(&mut self) {
        self.close_thinking();
        let _ = writeln!(self.out);
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    if d.as_secs_f64() > 0.0 {
        n as f64 / d.as_secs_f64()
    } else {
        0.0
    }
}

fn print_verbose(lm: &LoadedModel, u: &Usage) {
    let computed = u.prompt_tokens - u.cached_tokens;
    let total = lm.load_duration + u.queue_duration + u.prompt_eval_duration + u.eval_duration;
    eprintln!("total duration:       {total:?}");
    eprintln!("load duration:        {:?}", lm.load_duration);
    eprintln!("prompt eval count:    {computed} token(s)");
    eprintln!("prompt eval duration: {:?}", u.prompt_eval_duration);
    eprintln!("prompt eval rate:     {:.2} tokens/s", rate(computed, u.prompt_eval_duration));
    eprintln!("eval count:           {} token(s)", u.eval_count);
    eprintln!("eval duration:        {:?}", u.eval_duration);
    eprintln!("eval rate:            {:.2} tokens/s", rate(u.eval_count, u.eval_duration));
    eprintln!("done reason:          {}", u.finish.as_str());
}

pub fn main(a: RunArgs) -> Result<()> {
    let name = crate::store::ensure_pulled(&a.model, a.quiet)?;
    if a.adapter_scale.len() > a.adapter.len() {
        bail!("{} --adapter-scale for {} --adapter", a.adapter_scale.len(), a.adapter.len());
    }
    let mut found = registry::find(&store::Store::open_default(), &name)?;
    for (i, f) in a.adapter.iter().enumerate() {
        found.defaults.adapters.push((f.clone(), a.adapter_scale.get(i).copied().unwrap_or(1.0)));
    }
    let lm = Arc::new(found.load()?);
    let options = a.options().over(&lm.defaults.options);
    let params = options.params()?.params;
    let grammar = a.grammar()?;
    let think = a.think()?;
    let n_ctx = a.ctx_size.or(options.num_ctx.map(|v| v.max(0) as usize)).unwrap_or_else(|| lm.model.config.ctx_train.min(4096));
    if n_ctx < 2 {
        bail!("--ctx-size must be at least 2");
    }
    let engine = EngineHandle::spawn(
        lm.clone(),
        EngineOptions { max_parallel: 1, max_queue: 0, n_ctx, budget: Default::default(), cache: a.cache.types()? },
        SharedPool::new(crate::threads(a.threads)),
    )?;
    // Ctrl-C stops the current answer, not the program (a second one within a second exits).
    let cancel = engine.canceller();
    let last = std::sync::Mutex::new(None::<Instant>);
    ctrlc::set_handler(move || {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            std::process::exit(130);
        }
        *last = Some(Instant::now());
        cancel.cancel_all();
    })?;
    let mut s = Session {
        lm: lm.clone(),
        engine,
        params,
        verbose: a.verbose,
        raw: a.raw,
        grammar,
        think,
        show_thinking: !a.hidethinking && think.is_none_or(Think::enabled),
        starts_thinking: false,
    };
    let mut messages = Vec::new();
    if let Some(sys) = &a.system {
        messages.push(ChatMessage::new("system", sys.clone()));
    }
    // The model's SYSTEM (unless given) and MESSAGE lines open every conversation.
    lm.defaults.open_conversation(&mut messages);
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
