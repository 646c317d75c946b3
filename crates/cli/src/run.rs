//! `bantam run MODEL [PROMPT]`: stream an answer, or chat on a terminal.

//!
//! `run` is a client of the same engine thread that `serve` uses, with one slot: the prompt
//! is checked, options merged, tokens sampled and stops detected in one place for both.

use anyhow::{bail, Result};
use clap::Args;
use engine::template::ChatMessage;
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
}

impl Session {
    /// Token ids for the conversation so far (templated) or the raw prompt.
    fn prompt_tokens(&self, messages: &[ChatMessage], raw_prompt: &str) -> Result<Vec<u32>> {
        if self.raw || self.lm.template.is_none() {
            return Ok(self.lm.tokenizer.encode(raw_prompt, true, true));
        }
        Ok(self.lm.chat_prompt(messages, None)?)
    }

    /// Stream one answer to stdout; its text and figures.
    fn answer(&mut self, tokens: &[u32]) -> Result<(String, Usage)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut req = Request::new(tokens.to_vec(), self.params.clone(), tx);
        req.constraint = self.grammar.as_ref().map(|g| self.lm.constrain(g)).transpose()?;
        self.engine.submit(req)?;
        let mut out = std::io::stdout().lock();
        let mut answer = String::new();
        let mut show = |piece: &str| {
            answer.push_str(piece);
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        };
        let usage = loop {
            match rx.blocking_recv() {
                Some(Event::Token { text, .. }) => show(&text),
                Some(Event::Done { text, usage }) => {
                    show(&text);
                    break usage;
                }
                Some(Event::Error(e)) => {
                    let _ = writeln!(out);
                    return Err(e.into());
                }
                None => bail!("the engine stopped before the answer was complete"),
            }
        };
        let _ = writeln!(out);
        if self.verbose {
            print_verbose(&self.lm, &usage);
        }
        Ok((answer, usage))
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
    let lm = Arc::new(registry::load(&store::Store::open_default(), &name)?);
    let options = a.options().over(&lm.defaults.options);
    let params = options.params()?.params;
    let grammar = a.grammar()?;
    let n_ctx = a.ctx_size.or(options.num_ctx.map(|v| v.max(0) as usize)).unwrap_or_else(|| lm.model.config.ctx_train.min(4096));
    if n_ctx < 2 {
        bail!("--ctx-size must be at least 2");
    }
    let engine = EngineHandle::spawn(
        lm.clone(),
        EngineOptions { max_parallel: 1, max_queue: 0, n_ctx, budget: Default::default() },
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
    let mut s = Session { lm: lm.clone(), engine, params, verbose: a.verbose, raw: a.raw, grammar };
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
