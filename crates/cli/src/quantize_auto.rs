//! `bantam quantize IN OUT --auto --max-kld X [--max-size S] --calibration TEXT [--task TASK
//! --max-accuracy-drop 1%]`: the smallest per-tensor type assignment whose KL divergence from
//! the input model, measured on held-out text, meets the bar (and whose accuracy on the
//! user's task, measured by `bantam eval`, is within the allowed drop of the input's).
//!
//! The search: the input's log-probabilities on the calibration text are computed once.
//! The llama.cpp mixes, ordered by size, are bisected for the smallest that meets the KL
//! divergence and size bars; with a task, the mixes from there up are scored on it one by
//! one until one keeps the accuracy. Then,
//! from the largest mix that fails, whole tensor groups (attention V, feed-forward down,
//! attention output, …) are raised to the passing mix's types, most KL divergence saved per
//! byte first (each group measured alone), until the bar is met. The smaller passing file
//! wins. Every candidate is a real file quantized by `quant::quantize` and decoded by the
//! engine, so what is measured is what is written.

use anyhow::{bail, Context, Result};
use engine::perplexity::{kl_divergence_against, BaseLogProbs};
use engine::{Defaults, LoadedModel};
use gguf::{GgmlType, Value};
use kernels::pool::Pool;
use quant::ftype::Category;
use quant::{FileType, Params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The mixes the search walks (sorted by their planned size for the model at hand: shape
/// fallbacks can make a "smaller" mix larger).
const LADDER: [FileType; 10] = [
    FileType::Q2_K,
    FileType::Q3_K_S,
    FileType::Q3_K_M,
    FileType::Q3_K_L,
    FileType::Q4_K_S,
    FileType::Q4_K_M,
    FileType::Q5_K_S,
    FileType::Q5_K_M,
    FileType::Q6_K,
    FileType::Q8_0,
];

pub struct AutoArgs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub max_kld: Option<f64>,
    pub max_size: Option<u64>,
    pub calibration: &'a Path,
    pub chunks: usize,
    pub ctx: usize,
    pub base: Params,
    pub task: Option<TaskBar<'a>>,
}

/// `--task TASK --max-accuracy-drop X [--task-args …]`.
pub struct TaskBar<'a> {
    pub task: &'a Path,
    pub args: Option<&'a str>,
    /// As a fraction: 0.01 is one point.
    pub max_drop: f64,
}

/// One measured candidate.
struct Candidate {
    /// The mix whose rules the assignment starts from (its `general.file_type`).
    ftype: FileType,
    label: String,
    types: BTreeMap<String, GgmlType>,
    bytes: u64,
    kld: f64,
    /// Accuracy on --task, measured for candidates that meet the other bars.
    accuracy: Option<f64>,
}

struct Search<'a> {
    a: &'a AutoArgs<'a>,
    pool: Pool,
    base_lp: BaseLogProbs,
    dir: PathBuf,
    n: usize,
    /// The input model's accuracy on --task.
    base_accuracy: Option<f64>,
    /// Whether candidates are scored on --task as they are measured (not while bisecting on
    /// the cheap bars).
    task_phase: bool,
}

impl Search<'_> {
    fn params(&self, ftype: FileType, types: Option<&BTreeMap<String, GgmlType>>) -> Params {
        let mut p = self.a.base.clone();
        p.ftype = ftype;
        p.assignment = types.cloned();
        p
    }

    fn plan(&self, p: &Params) -> Result<BTreeMap<String, GgmlType>> {
        let f = gguf::Gguf::open(self.a.input)?;
        let (plan, _) = quant::plan(&f, p)?;
        Ok(plan.into_iter().filter(|t| t.converts() || t.info.ggml_type.is_quantized()).map(|t| (t.info.name, t.to)).collect())
    }

    /// The tensor bytes `p` would write (the plan alone: nothing is quantized).
    fn planned_bytes(&self, p: &Params) -> Result<u64> {
        let f = gguf::Gguf::open(self.a.input)?;
        let (plan, _) = quant::plan(&f, p)?;
        Ok(plan.iter().map(|t| t.bytes_out as u64).sum())
    }

    /// Quantize with `p`, load, measure.
    fn measure(&mut self, label: String, p: &Params) -> Result<Candidate> {
        let ftype = p.ftype;
        self.n += 1;
        let path = self.dir.join(format!("candidate-{}.gguf", self.n));
        let s = quant::quantize(self.a.input, &path, p, |_| {})?;
        let lm = LoadedModel::load(&label, path.clone(), Defaults::default())?;
        let r = kl_divergence_against(&lm.model, &self.pool, &self.base_lp)?;
        drop(lm);
        // The bar is on the file a user gets: tensors and metadata (the vocabulary alone can
        // be megabytes), not llama-quantize's "quant size" of the tensors only.
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(s.bytes_out as u64);
        let mut c = Candidate { ftype, label, types: self.plan(p)?, bytes, kld: r.kld.0, accuracy: None };
        // The task costs the most: it is run only where the other bars are met.
        if let (Some(t), true) = (&self.a.task, self.task_phase && self.meets_kld_and_size(&c)) {
            let json = self.dir.join(format!("candidate-{}.eval.json", self.n));
            c.accuracy = Some(crate::eval::accuracies(t.task, t.args, &[path.display().to_string()], &json)?[0]);
        }
        let _ = std::fs::remove_file(&path);
        let acc = c.accuracy.map(|a| format!("  accuracy {:.1}%", 100.0 * a)).unwrap_or_default();
        eprintln!("  {:<44} {:>8.2} MiB  KLD {:.5}{acc}", c.label, c.bytes as f64 / 1048576.0, c.kld);
        Ok(c)
    }

    fn meets_kld_and_size(&self, c: &Candidate) -> bool {
        self.a.max_kld.is_none_or(|m| c.kld <= m) && self.a.max_size.is_none_or(|m| c.bytes <= m)
    }

    fn passes(&self, c: &Candidate) -> bool {
        let task_ok = match (&self.a.task, self.base_accuracy) {
            (Some(t), Some(base)) => c.accuracy.is_some_and(|a| base - a <= t.max_drop + 1e-12),
            _ => true,
        };
        self.meets_kld_and_size(c) && task_ok
    }
}

/// Tensor groups the refinement raises together.
fn group(name: &str) -> &'static str {
    match Category::of(name) {
        Category::AttnV | Category::AttnQkv | Category::AttnKvB => "attention V",
        Category::FfnDown => "feed-forward down",
        Category::AttnOutput => "attention output",
        Category::FfnUp | Category::FfnGate => "feed-forward up and gate",
        Category::AttnQ | Category::AttnK => "attention Q and K",
        Category::Output | Category::TokenEmbd => "embeddings and output",
        Category::Other => "other",
    }
}

pub fn run(mut a: AutoArgs<'_>) -> Result<()> {
    if a.max_kld.is_none() && a.max_size.is_none() && a.task.is_none() {
        bail!("--auto needs a bar: --max-kld, --max-size, --task with --max-accuracy-drop, or several");
    }
    let text = crate::perplexity::read_text(a.calibration)?;
    let base = LoadedModel::load("base", a.input.to_path_buf(), Defaults::default())?;
    let mut tokens = base.tokenizer.encode(&text, true, false);
    let need = a.chunks * a.ctx;
    if tokens.len() < need {
        bail!("{} has {} tokens; --auto measures {} chunks of {} and needs {need}", a.calibration.display(), tokens.len(), a.chunks, a.ctx);
    }
    tokens.truncate(need);
    let bos = if base.tokenizer.add_bos() { base.tokenizer.bos() } else { None };
    let pool = Pool::new(a.base.threads);
    // every candidate records the same source: hash it once
    a.base.source_sha256 = Some(quant::sha256_file(a.input)?);
    eprintln!("reference: {} on {} tokens of {}", a.input.display(), tokens.len(), a.calibration.display());
    let base_lp = BaseLogProbs::compute(&base.model, &pool, &tokens, a.ctx, bos)?;
    drop(base);
    let out_dir = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = out_dir.join(format!(".bantam-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut s = Search { a: &a, pool, base_lp, dir: dir.clone(), n: 0, base_accuracy: None, task_phase: false };
    let result = (|| {
        if let Some(t) = &a.task {
            let json = dir.join("input.eval.json");
            let acc = crate::eval::accuracies(t.task, t.args, &[a.input.display().to_string()], &json)?[0];
            eprintln!("input accuracy on {}: {:.1}% (a candidate may lose {:.1} points)", t.task.display(), 100.0 * acc, 100.0 * t.max_drop);
            s.base_accuracy = Some(acc);
        }
        search(&mut s)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let best = result?;
    // the winner, written for real with its measurements recorded
    let mut p = s.params(best.ftype, Some(&best.types));
    p.extra_metadata.push(("bantam.quantize.auto.kld".into(), Value::F32(best.kld as f32)));
    if let Some(m) = a.max_kld {
        p.extra_metadata.push(("bantam.quantize.auto.max_kld".into(), Value::F32(m as f32)));
    }
    p.extra_metadata.push(("bantam.quantize.auto.assignment".into(), Value::Str(best.label.clone())));
    if let (Some(t), Some(base), Some(acc)) = (&a.task, s.base_accuracy, best.accuracy) {
        p.extra_metadata.push(("bantam.quantize.auto.task".into(), Value::Str(t.task.display().to_string())));
        p.extra_metadata.push(("bantam.quantize.auto.task_sha256".into(), Value::Str(quant::sha256_file(t.task)?)));
        p.extra_metadata.push(("bantam.quantize.auto.task_accuracy".into(), Value::F32(acc as f32)));
        p.extra_metadata.push(("bantam.quantize.auto.input_accuracy".into(), Value::F32(base as f32)));
        p.extra_metadata.push(("bantam.quantize.auto.max_accuracy_drop".into(), Value::F32(t.max_drop as f32)));
    }
    p.extra_metadata.push(("bantam.quantize.auto.calibration_sha256".into(), Value::Str(quant::sha256_file(a.calibration)?)));
    p.extra_metadata.push(("bantam.quantize.auto.calibration_tokens".into(), Value::U32(tokens.len() as u32)));
    quant::quantize(a.input, a.output, &p, |_| {})?;
    let task = match (s.base_accuracy, best.accuracy) {
        (Some(base), Some(acc)) => format!("; accuracy {:.1}% (input {:.1}%)", 100.0 * acc, 100.0 * base),
        _ => String::new(),
    };
    println!(
        "wrote {}: {} ({:.2} MiB), KL divergence {:.5} on {} tokens of {}{task}",
        a.output.display(),
        best.label,
        best.bytes as f64 / 1048576.0,
        best.kld,
        tokens.len(),
        a.calibration.display()
    );
    Ok(())
}

fn search(s: &mut Search<'_>) -> Result<Candidate> {
    // the mixes by the bytes they would write for this model
    let f = gguf::Gguf::open(s.a.input)?;
    let mut ladder: Vec<(u64, FileType)> = Vec::new();
    for t in LADDER {
        let (plan, _) = quant::plan(&f, &s.params(t, None))?;
        ladder.push((plan.iter().map(|p| p.bytes_out as u64).sum(), t));
    }
    drop(f);
    ladder.sort_by_key(|(bytes, _)| *bytes);
    let ladder: Vec<FileType> = ladder.into_iter().map(|(_, t)| t).collect();
    // bisect on KL divergence and size for the smallest mix that meets them (KL divergence
    // falls as size grows)
    let (mut lo, mut hi) = (0usize, ladder.len()); // answer in [lo, hi]; hi = none passes
    let mut measured: BTreeMap<usize, Candidate> = BTreeMap::new();
    while lo < hi {
        let mid = (lo + hi) / 2;
        let p = s.params(ladder[mid], None);
        let c = s.measure(ladder[mid].name().to_string(), &p)?;
        let ok = s.meets_kld_and_size(&c);
        measured.insert(mid, c);
        if ok {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let no_mix = |measured: &BTreeMap<usize, Candidate>| {
        let best = measured.values().min_by(|a, b| a.kld.total_cmp(&b.kld)).expect("measured one");
        let acc = best.accuracy.map(|a| format!(", accuracy {:.1}%", 100.0 * a)).unwrap_or_default();
        anyhow::anyhow!("no mix meets the bar: the best measured is {} ({} bytes, KL divergence {:.5}{acc})", best.label, best.bytes, best.kld)
    };
    if lo == ladder.len() {
        return Err(no_mix(&measured));
    }
    // The task: a task's accuracy is noisy (a few points on a few hundred items) and need not
    // rise with size, so the mixes are walked up one by one from the smallest that meets the
    // other bars, each scored, until one keeps the accuracy.
    if s.a.task.is_some() {
        s.task_phase = true;
        loop {
            let c = s.measure(ladder[lo].name().to_string(), &s.params(ladder[lo], None))?;
            let ok = s.passes(&c);
            measured.insert(lo, c);
            if ok {
                break;
            }
            lo += 1;
            if lo == ladder.len() {
                return Err(no_mix(&measured));
            }
        }
    }
    let pass = measured.remove(&lo).expect("the passing mix was measured");
    if lo == 0 {
        return Ok(pass);
    }
    if let std::collections::btree_map::Entry::Vacant(e) = measured.entry(lo - 1) {
        e.insert(s.measure(ladder[lo - 1].name().to_string(), &s.params(ladder[lo - 1], None))?);
    }
    // refine from the failing mix closest to the bar among those smaller than the passing
    // one (KL divergence is not always monotonic in size: a mix's fallbacks for odd shapes
    // can cost more bytes than they save error)
    let Some((fail_i, fail)) = measured.into_iter().filter(|(_, c)| c.bytes < pass.bytes).min_by(|a, b| a.1.kld.total_cmp(&b.1.kld)) else {
        // the smaller mixes write as many bytes here (shape fallbacks): nothing to refine
        return Ok(pass);
    };
    // refine: raise whole groups of the failing mix to the passing mix's types
    let mut groups: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (name, t) in &pass.types {
        if fail.types.get(name) != Some(t) {
            groups.entry(group(name)).or_default().push(name.clone());
        }
    }
    let with = |base: &BTreeMap<String, GgmlType>, names: &[String]| {
        let mut t = base.clone();
        for n in names {
            t.insert(n.clone(), pass.types[n]);
        }
        t
    };
    // A candidate planned as large as the passing mix cannot beat it: not measured.
    let pass_planned = s.planned_bytes(&s.params(pass.ftype, Some(&pass.types)))?;
    let mut gains = Vec::new();
    for (g, names) in &groups {
        let types = with(&fail.types, names);
        if s.planned_bytes(&s.params(ladder[fail_i], Some(&types)))? >= pass_planned {
            continue;
        }
        let c = s.measure(format!("{} + {g} at {}", fail.label, pass.label), &s.params(ladder[fail_i], Some(&types)))?;
        if s.passes(&c) && c.bytes < pass.bytes {
            return Ok(c);
        }
        // KL divergence saved per byte added (groups that save bytes too come first)
        let saved = fail.kld - c.kld;
        if saved > 0.0 {
            gains.push((saved / (c.bytes.saturating_sub(fail.bytes).max(1)) as f64, *g));
        }
    }
    gains.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut raised: Vec<String> = Vec::new();
    let mut label = fail.label.clone();
    for (k, (_, g)) in gains.iter().enumerate() {
        raised.extend(groups[g].iter().cloned());
        label = format!("{label} + {g}");
        if k == 0 {
            continue; // measured alone above and it did not pass
        }
        let types = with(&fail.types, &raised);
        if s.planned_bytes(&s.params(ladder[fail_i], Some(&types)))? >= pass_planned {
            break;
        }
        let c = s.measure(format!("{label} at {}", pass.label), &s.params(ladder[fail_i], Some(&types)))?;
        if c.bytes >= pass.bytes {
            break;
        }
        if s.passes(&c) {
            return Ok(c);
        }
    }
    Ok(pass)
}
