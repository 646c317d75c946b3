//! `bantam finetune BASE DATA.jsonl -o adapter.gguf`: a LoRA adapter trained on the CPU
//! over the frozen, quantized base (`model::train`), written in llama.cpp's GGUF format.
//!
//! Data: one JSON object per line, either a chat (`{"messages": [...]}`: rendered through
//! the model's chat template, loss on the assistant turns only) or a completion
//! (`{"prompt": ..., "completion": ...}`: loss on the completion and the end-of-sequence
//! token). Examples are shuffled per epoch (by `--seed`) and packed into sequences of up to
//! `--ctx` tokens; `--batch` sequences make one optimizer step (their gradients summed and
//! divided by their loss tokens). A share of the examples (`--val-split`) is held out and
//! its loss reported.

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::template::ChatMessage;
use engine::LoadedModel;
use kernels::pool::Pool;
use model::train::{AdamW, LoraParams, Rng, Trainer};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct FinetuneArgs {
    /// The base model: a name in the store or a GGUF file
    base: String,
    /// Training data, JSON Lines: {"messages": [...]} or {"prompt": ..., "completion": ...}
    data: PathBuf,
    /// Where to write the adapter (GGUF)
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// LoRA rank
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank)
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Projections to adapt, comma-separated: q, k, v, o, gate, up, down (qkv for fused models
    /// follows q)
    #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
    targets: Vec<String>,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Peak learning rate (AdamW; linear warm-up, cosine decay to a tenth)
    #[arg(long, default_value_t = 2e-4)]
    lr: f32,
    /// Share of the steps spent warming up
    #[arg(long, default_value_t = 0.05)]
    warmup: f32,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Packed sequences per optimizer step (gradient accumulation)
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Most tokens per packed sequence
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Train on one example per sequence instead of packing several
    #[arg(long)]
    no_pack: bool,
    /// Share of the examples held out for the validation loss
    #[arg(long, default_value_t = 0.1)]
    val_split: f32,
    /// Same seed, same data order, same adapter
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start from this adapter (its rank, alpha and matrices) instead of a fresh one
    #[arg(long, value_name = "ADAPTER")]
    init: Option<PathBuf>,
    /// LoRA dropout on the adapters' inputs while training (PEFT's lora_dropout)
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Keep only each layer's input and recompute the layer when going back (less memory,
    /// about a third more time)
    #[arg(long)]
    grad_checkpoint: bool,
    /// Write the adapter, and a checkpoint to resume from (OUTPUT.ckpt), every N steps
    #[arg(long)]
    save_every: Option<usize>,
    /// After training, score the base and the adapter on this task (a `bantam eval` TOML task
    /// file, or items with --eval-args) and print the gain
    #[arg(long, value_name = "TASK")]
    eval: Option<PathBuf>,
    /// More arguments for that `bantam eval` run (e.g. "--kind classify --labels a,b")
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    eval_args: Option<String>,
    /// Go on from a checkpoint (OUTPUT.ckpt of an earlier run with the same data and flags)
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

/// One training example: its tokens and which of them are predicted with loss.
struct Example {
    tokens: Vec<u32>,
    /// `loss[t]`: the loss includes predicting `tokens[t]` (from the tokens before it).
    loss: Vec<bool>,
}

fn layer_target(model: &model::Model, short: &str) -> Result<&'static str> {
    let fused = model.file.tensor("blk.0.attn_qkv.weight").is_some();
    Ok(match short {
        "q" | "k" | "v" if fused => "attn_qkv",
        "q" => "attn_q",
        "k" => "attn_k",
        "v" => "attn_v",
        "o" => "attn_output",
        "gate" => "ffn_gate",
        "up" => "ffn_up",
        "down" => "ffn_down",
        other => bail!("unknown target {other:?} (q, k, v, o, gate, up, down)"),
    })
}

/// Read the examples of `path`, rendered for `lm`.
fn read_examples(lm: &LoadedModel, path: &PathBuf) -> Result<Vec<Example>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let ex = example(lm, &v).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        if !ex.loss.iter().any(|&l| l) {
            bail!("{}:{}: nothing to learn (a conversation without an assistant turn, or an empty completion)", path.display(), i + 1);
        }
        out.push(ex);
    }
    if out.is_empty() {
        bail!("{} has no examples with something to learn", path.display());
    }
    Ok(out)
}

fn example(lm: &LoadedModel, v: &serde_json::Value) -> Result<Example> {
    if let Some(msgs) = v.get("messages").and_then(|m| m.as_array()) {
        let msgs: Vec<ChatMessage> = msgs
            .iter()
            .map(|m| {
                let role = m.get("role").and_then(|r| r.as_str()).context("a message without a role")?;
                let content = m.get("content").and_then(|r| r.as_str()).context("a message without text content")?;
                Ok(ChatMessage::new(role, content))
            })
            .collect::<Result<_>>()?;
        let template = lm.template.as_ref().context("the model has no chat template; use {\"prompt\", \"completion\"} lines")?;
        let full = lm.tokenize_templated(&template.render(&msgs, false, None)?);
        let mut loss = vec![false; full.len()];
        // Each assistant turn: the tokens past the conversation before it (with the
        // generation prompt) carry loss.
        for (k, m) in msgs.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let before = lm.tokenize_templated(&template.render(&msgs[..k], true, None)?);
            let upto = lm.tokenize_templated(&template.render(&msgs[..=k], false, None)?);
            if !full.starts_with(&before) || !full.starts_with(&upto) || upto.len() < before.len() {
                bail!("the chat template does not render turn {} ({}) as a prefix of the conversation", k + 1, m.role);
            }
            loss[before.len()..upto.len()].iter_mut().for_each(|l| *l = true);
        }
        return Ok(Example { tokens: full, loss });
    }
    let prompt = v.get("prompt").and_then(|p| p.as_str());
    let completion = v.get("completion").and_then(|p| p.as_str());
    let (Some(prompt), Some(completion)) = (prompt, completion) else {
        bail!("a line needs \"messages\", or \"prompt\" and \"completion\"");
    };
    let mut tokens = lm.tokenizer.encode(prompt, true, false);
    let n_prompt = tokens.len();
    tokens.extend(lm.tokenizer.encode(completion, false, false));
    tokens.extend(lm.tokenizer.eos());
    let loss = (0..tokens.len()).map(|t| t >= n_prompt).collect();
    Ok(Example { tokens, loss })
}

/// Examples (in `order`) packed into sequences of at most `ctx` tokens: `(tokens, mask)`
/// with `mask[t]` true where `tokens[t + 1]` carries loss.
fn pack(examples: &[Example], order: &[usize], ctx: usize, one_each: bool) -> Vec<(Vec<u32>, Vec<bool>)> {
    let mut out: Vec<(Vec<u32>, Vec<bool>)> = Vec::new();
    let (mut toks, mut loss): (Vec<u32>, Vec<bool>) = (Vec::new(), Vec::new());
    let flush = |toks: &mut Vec<u32>, loss: &mut Vec<bool>, out: &mut Vec<(Vec<u32>, Vec<bool>)>| {
        if toks.len() >= 2 {
            let mut mask: Vec<bool> = loss[1..].to_vec();
            mask.push(false);
            out.push((std::mem::take(toks), mask));
        }
        toks.clear();
        loss.clear();
    };
    for &i in order {
        let e = &examples[i];
        let n = e.tokens.len().min(ctx);
        if !toks.is_empty() && (one_each || toks.len() + n > ctx) {
            flush(&mut toks, &mut loss, &mut out);
        }
        toks.extend_from_slice(&e.tokens[..n]);
        loss.extend_from_slice(&e.loss[..n]);
    }
    flush(&mut toks, &mut loss, &mut out);
    out
}

fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn checkpoint_path(output: &std::path::Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".ckpt");
    PathBuf::from(p)
}

/// The optimizer's state and the adapter's parameters, to resume from: a GGUF file with
/// `params`, `adam.m` and `adam.v` (flat F32) and the step.
fn save_checkpoint(path: &std::path::Path, params: &LoraParams, opt: &AdamW) -> Result<()> {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut w = gguf::GgufWriter::new();
    w.meta("general.type", gguf::Value::Str("bantam-finetune-checkpoint".into()));
    w.meta("bantam.finetune.step", gguf::Value::U64(opt.step as u64));
    let flat = params.flat();
    for (name, v) in [("params", &flat), ("adam.m", &opt.m), ("adam.v", &opt.v)] {
        w.tensor(name, gguf::GgmlType::F32, &[v.len() as u64], f32s(v));
    }
    let tmp = path.with_extension("ckpt.partial");
    std::fs::write(&tmp, w.to_bytes()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Restore what [`save_checkpoint`] wrote; returns the step to go on from.
fn load_checkpoint(path: &std::path::Path, params: &mut LoraParams, opt: &mut AdamW) -> Result<usize> {
    let f = gguf::Gguf::open(path).with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    if f.get("general.type").and_then(|v| v.as_str()) != Some("bantam-finetune-checkpoint") {
        bail!("{} is not a finetune checkpoint", path.display());
    }
    let n = params.n_params();
    let read = |name: &str| -> Result<Vec<f32>> {
        let t = f.tensor(name).with_context(|| format!("{}: no {name}", path.display()))?;
        if t.ggml_type != gguf::GgmlType::F32 || t.n_elements() as usize != n {
            bail!("{}: {name} holds {} values; this run trains {n} (another rank, targets or model?)", path.display(), t.n_elements());
        }
        Ok(f.tensor_data(t).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    params.set_flat(&read("params")?);
    opt.m = read("adam.m")?;
    opt.v = read("adam.v")?;
    opt.step = f.get("bantam.finetune.step").and_then(|v| v.as_u64()).context("the checkpoint has no step")? as usize;
    Ok(opt.step)
}

/// Mean loss per token over `seqs` (no gradients).
fn mean_loss(trainer: &mut Trainer<'_>, pool: &Pool, p: &LoraParams, seqs: &[(Vec<u32>, Vec<bool>)]) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for (t, m) in seqs {
        let (l, k) = trainer.step(pool, p, t, m, 1.0, false)?;
        sum += l;
        n += k;
    }
    Ok(if n == 0 { f64::NAN } else { sum / n as f64 })
}

pub fn main(a: FinetuneArgs) -> Result<()> {
    if a.rank == 0 || a.batch == 0 || a.epochs == 0 || a.ctx < 2 {
        bail!("--rank, --batch and --epochs must be at least 1 and --ctx at least 2");
    }
    if !(a.alpha.is_finite() && a.alpha > 0.0 && a.lr.is_finite() && a.lr > 0.0 && (0.0..=1.0).contains(&a.warmup) && a.weight_decay >= 0.0) {
        bail!("--alpha and --lr must be positive, --warmup in [0, 1] and --weight-decay not negative");
    }
    if !(0.0..1.0).contains(&a.val_split) || !(0.0..1.0).contains(&a.dropout) {
        bail!("--val-split and --dropout must be in [0, 1)");
    }
    let name = crate::store::ensure_pulled(&a.base, true)?;
    let lm = registry::load(&store::Store::open_default(), &name)?;
    let m = &lm.model;
    let targets: Vec<&str> = a.targets.iter().map(|t| layer_target(m, t.trim())).collect::<Result<_>>()?;
    let mut targets_unique: Vec<&str> = Vec::new();
    for t in targets {
        if !targets_unique.contains(&t) {
            targets_unique.push(t);
        }
    }
    let mut examples = read_examples(&lm, &a.data)?;
    let long = examples.iter().filter(|e| e.tokens.len() > a.ctx).count();
    if long > 0 {
        eprintln!("{long} of {} examples are longer than --ctx {} tokens: their ends are cut", examples.len(), a.ctx);
    }
    let mut rng = Rng(a.seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    shuffle(&mut order, &mut rng);
    let n_val = ((examples.len() as f32 * a.val_split).round() as usize).min(examples.len().saturating_sub(1));
    let val_idx: Vec<usize> = order[..n_val].to_vec();
    let train_idx: Vec<usize> = order[n_val..].to_vec();
    let val_seqs = pack(&examples, &val_idx, a.ctx, a.no_pack);
    let mut params = match &a.init {
        Some(p) => LoraParams::from_adapter(&model::Adapter::load(p, m)?)?,
        None => LoraParams::init(m, a.rank, a.alpha, &targets_unique, a.seed)?,
    };
    let pool = Pool::new(crate::threads(a.threads));
    let mut trainer = Trainer::new(m, &params);
    trainer.checkpoint = a.grad_checkpoint;
    trainer.dropout = a.dropout;
    trainer.seed = a.seed;
    // Steps: packing depends on the order, so count the first epoch's sequences.
    let first = pack(&examples, &train_idx, a.ctx, a.no_pack);
    let steps_per_epoch = first.len().div_ceil(a.batch);
    let total = steps_per_epoch * a.epochs;
    let mut opt = AdamW::new(params.n_params(), a.lr, a.weight_decay, (total as f32 * a.warmup).round() as usize, total);
    let resume_at = match &a.resume {
        Some(p) => {
            let at = load_checkpoint(p, &mut params, &mut opt)?;
            eprintln!("resuming from {} at step {at}", p.display());
            at
        }
        None => 0,
    };
    let arch = m.file.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("llama").to_string();
    eprintln!(
        "finetune {name}: {} examples ({} held out), {} sequences per epoch, {total} steps; LoRA rank {} alpha {} on {} ({} parameters)",
        examples.len(),
        val_idx.len(),
        first.len(),
        params.rank,
        params.alpha,
        {
            let mut names: Vec<&str> = Vec::new();
            for mt in &params.mats {
                if !names.contains(&mt.target.1) {
                    names.push(mt.target.1);
                }
            }
            names.join(",")
        },
        params.n_params()
    );
    let val0 = if val_seqs.is_empty() { f64::NAN } else { mean_loss(&mut trainer, &pool, &params, &val_seqs)? };
    if !val0.is_nan() {
        eprintln!("validation loss before training: {val0:.4}");
    }
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let (mut step, mut tokens_done) = (0usize, 0usize);
    let mut last_val = val0;
    let mut train_order = train_idx.clone();
    let write = |params: &LoraParams, path: &PathBuf, step: usize, val: f64| -> Result<()> {
        let extra = [
            ("general.name", gguf::Value::Str(format!("{name} LoRA"))),
            ("bantam.finetune.base", gguf::Value::Str(name.clone())),
            ("bantam.finetune.steps", gguf::Value::U32(step as u32)),
            ("bantam.finetune.seed", gguf::Value::U64(a.seed)),
            ("bantam.finetune.val_loss", gguf::Value::F32(val as f32)),
        ];
        let bytes = params.to_adapter("finetune").to_gguf(&arch, gguf::GgmlType::F32, &extra);
        let tmp = path.with_extension("gguf.partial");
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    };
    for epoch in 0..a.epochs {
        let seqs = if epoch == 0 {
            first.clone()
        } else {
            shuffle(&mut train_order, &mut rng);
            pack(&examples, &train_order, a.ctx, a.no_pack)
        };
        for batch in seqs.chunks(a.batch) {
            if step < resume_at {
                // Replayed, not run: the data order and the dropout masks stay in step.
                trainer.skip(batch.len());
                step += 1;
                continue;
            }
            let n_loss: usize = batch.iter().map(|(_, m)| m.iter().filter(|&&x| x).count()).sum();
            let mut loss_sum = 0f64;
            for (t, mk) in batch {
                let (l, _) = trainer.step(&pool, &params, t, mk, 1.0 / n_loss.max(1) as f32, true)?;
                if !l.is_finite() {
                    bail!("the loss diverged at step {} ({l}); {} keeps the last adapter written (try a lower --lr)", step + 1, a.output.display());
                }
                loss_sum += l;
                tokens_done += t.len();
            }
            let grads = trainer.take_grads();
            if grads.iter().any(|g| !g.is_finite()) {
                bail!("the gradients diverged at step {} ({} keeps the last adapter written; try a lower --lr)", step + 1, a.output.display());
            }
            let mut flat = params.flat();
            let rate = opt.rate();
            opt.update(&mut flat, &grads);
            params.set_flat(&flat);
            step += 1;
            if a.save_every.is_some_and(|n| step % n == 0) {
                write(&params, &a.output, step, last_val)?;
                save_checkpoint(&checkpoint_path(&a.output), &params, &opt)?;
            }
            let el = t0.elapsed().as_secs_f64();
            let run_steps = step - resume_at;
            // Without a validation split there is no validation loss to show.
            let val = if last_val.is_nan() { String::new() } else { format!(" val {last_val:.4}") };
            let line = format!(
                "step {step}/{total} epoch {} loss {:.4}{val} lr {rate:.1e} {:.0} tok/s eta {}",
                epoch + 1,
                loss_sum / n_loss.max(1) as f64,
                tokens_done as f64 / el,
                fmt_secs(el / run_steps as f64 * (total - step) as f64)
            );
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        }
        if !val_seqs.is_empty() && step > resume_at {
            last_val = mean_loss(&mut trainer, &pool, &params, &val_seqs)?;
            if tty {
                eprintln!();
            }
            eprintln!("epoch {} validation loss {last_val:.4}", epoch + 1);
        }
    }
    if tty {
        eprintln!();
    }
    write(&params, &a.output, step, last_val)?;
    examples.clear();
    let val = if val0.is_nan() { String::new() } else { format!("; validation loss {val0:.4} → {last_val:.4}") };
    eprintln!("wrote {} ({step} steps, {tokens_done} tokens in {}{val})", a.output.display(), fmt_secs(t0.elapsed().as_secs_f64()));
    let _ = std::io::stderr().flush();
    if let Some(task) = &a.eval {
        eval_gain(task, a.eval_args.as_deref(), &name, &a.output)?;
    }
    Ok(())
}

/// `bantam eval TASK --models BASE,BASE+ADAPTER`, then the accuracy gained.
fn eval_gain(task: &std::path::Path, extra: Option<&str>, base: &str, adapter: &std::path::Path) -> Result<()> {
    let json = adapter.with_extension("eval.json");
    let acc = crate::eval::accuracies(task, extra, &[base.to_string(), format!("{base}+{}", adapter.display())], &json)?;
    eprintln!("accuracy {:.1}% → {:.1}% ({:+.1} points); the summary is in {}", 100.0 * acc[0], 100.0 * acc[1], 100.0 * (acc[1] - acc[0]), json.display());
    Ok(())
}
