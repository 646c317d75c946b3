//! `bantam route calibrate`: picks a cascade's threshold from measurements. The route's
//! local model and its upstream answer a labelled set (`bantam eval`'s task format, with
//! the local answers' confidence recorded as the cascade reads it); the items are split
//! in two; the threshold that meets the target escalation share (or quality) on the first
//! half is written into the routes file, and the second half says how it holds: the
//! escalation share, the quality against random routing at the same share and against
//! the upstream alone, and the curve of quality against the share escalated with its APGR
//! (the area under the performance-gap-recovered curve, as RouteLLM defines it).

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use server::route::{RouteFile, StreamMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct RouteArgs {
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Pick a cascade route's threshold from a labelled set and write it into the routes file
    Calibrate(Box<CalibrateArgs>),
    /// Check a routes file (what `serve --routes` would refuse), naming key variables not set here
    Check {
        /// The routes file
        file: PathBuf,
    },
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Labelled items: a `bantam eval` task file (or JSON Lines, with --kind and the rest
    /// after `--`)
    #[arg(long)]
    task: PathBuf,
    /// The routes file
    #[arg(long, env = "BANTAM_ROUTES")]
    routes: PathBuf,
    /// The cascade route to calibrate
    #[arg(long)]
    route: String,
    /// Share of requests to escalate, e.g. 10%
    #[arg(long, value_parser = percent, conflicts_with = "target_quality")]
    target_escalation: Option<f64>,
    /// Quality to reach, as a share of the upstream's own, e.g. 95%
    #[arg(long, value_parser = percent)]
    target_quality: Option<f64>,
    /// The signal to threshold: mean-logprob, min-logprob, entropy, margin, agreement
    /// (self-consistency: the route's `samples` more answers per item are drawn), or auto
    /// (the one with the best APGR on the calibration half, among those measured)
    #[arg(long, default_value = "auto")]
    signal: String,
    /// Share of the items the threshold is picked on; the rest measure it
    #[arg(long, default_value_t = 0.5)]
    split: f64,
    /// Seed of the split
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The per-item answers (`bantam eval --items`): read when the file exists, written
    /// by the run otherwise [default: a temporary file]
    #[arg(long)]
    items: Option<PathBuf>,
    /// Write the report (thresholds, curves, APGR) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the curve as a self-contained HTML chart here
    #[arg(long)]
    html: Option<PathBuf>,
    /// Report without writing the routes file
    #[arg(long)]
    dry_run: bool,
    /// More `bantam eval` options (--limit, --parallel, --max-tokens, --kind, --labels …)
    #[arg(last = true)]
    eval: Vec<String>,
}

pub fn main(a: RouteArgs) -> Result<()> {
    match a.command {
        RouteCommand::Calibrate(c) => calibrate(*c),
        RouteCommand::Check { file } => check(&file),
    }
}

fn check(path: &Path) -> Result<()> {
    let f = RouteFile::load(path)?;
    let vars = f.upstreams.values().filter_map(|u| u.api_key_env.as_deref()).chain(f.keys.values().map(|k| k.key_env.as_str()));
    for v in vars {
        if std::env::var(v).map_or(true, |x| x.is_empty()) {
            eprintln!("note: {v} is not set here; `serve` needs it");
        }
    }
    println!("{}: {} upstreams, {} routes, {} keys", path.display(), f.upstreams.len(), f.routes.len(), f.keys.len());
    Ok(())
}

fn percent(s: &str) -> Result<f64, String> {
    let (v, scale) = match s.strip_suffix('%') {
        Some(v) => (v, 100.0),
        None => (s, 1.0),
    };
    let x: f64 = v.trim().parse().map_err(|_| format!("{s:?} is not a share (10% or 0.1)"))?;
    let x = x / scale;
    if !(0.0..=1.0).contains(&x) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(x)
}

/// The signals a cascade thresholds, as "doubt": the larger, the likelier to escalate.
pub const SIGNALS: [&str; 5] = ["mean-logprob", "min-logprob", "entropy", "margin", "agreement"];

/// The index of self-consistency's signal in [`SIGNALS`].
const AGREEMENT: usize = 4;

/// One labelled item: whether each model was right, and the local answer's doubt per signal.
#[derive(Debug, Clone)]
pub struct Scored {
    pub id: String,
    pub local: bool,
    pub upstream: bool,
    /// Per signal in [`SIGNALS`] order; +inf where the route escalates regardless (a parse
    /// failure, the length limit), -inf where the signal is absent.
    pub doubt: [f64; 5],
}

fn doubts(sig: &Value, forced: bool) -> [f64; 5] {
    if forced {
        return [f64::INFINITY; 5];
    }
    let get = |k: &str, sign: f64| sig.get(k).and_then(Value::as_f64).map_or(f64::NEG_INFINITY, |v| sign * v);
    [get("mean_logprob", -1.0), get("min_logprob", -1.0), get("mean_entropy", 1.0), get("min_margin", -1.0), get("agreement", -1.0)]
}

/// Quality after escalating the `k` most doubtful items.
fn quality_at(sorted: &[&Scored], k: usize) -> f64 {
    let n = sorted.len().max(1) as f64;
    sorted.iter().enumerate().map(|(i, s)| f64::from(u8::from(if i < k { s.upstream } else { s.local }))).sum::<f64>() / n
}

fn by_doubt(items: &[Scored], signal: usize) -> Vec<&Scored> {
    let mut v: Vec<&Scored> = items.iter().collect();
    v.sort_by(|a, b| b.doubt[signal].total_cmp(&a.doubt[signal]));
    v
}

/// (share escalated, quality) for k = 0..=n.
pub fn curve(items: &[Scored], signal: usize) -> Vec<(f64, f64)> {
    let sorted = by_doubt(items, signal);
    let n = items.len();
    (0..=n).map(|k| (k as f64 / n.max(1) as f64, quality_at(&sorted, k))).collect()
}

fn share(items: &[Scored], f: impl Fn(&Scored) -> bool) -> f64 {
    items.iter().filter(|s| f(s)).count() as f64 / items.len().max(1) as f64
}

/// RouteLLM's APGR: the mean, over the share escalated, of the share of the gap between the
/// local and the upstream quality recovered (trapezoids). `None` without a gap.
pub fn apgr(items: &[Scored], curve: &[(f64, f64)]) -> Option<f64> {
    let (weak, strong) = (share(items, |s| s.local), share(items, |s| s.upstream));
    if strong <= weak || curve.len() < 2 {
        return None;
    }
    let pgr = |q: f64| (q - weak) / (strong - weak);
    Some(curve.windows(2).map(|w| (w[1].0 - w[0].0) * (pgr(w[0].1) + pgr(w[1].1)) / 2.0).sum())
}

/// The oracle's curve: escalate the items only the upstream gets right first, the ones
/// only the local model gets right last.
fn oracle(items: &[Scored]) -> Vec<(f64, f64)> {
    let mut v: Vec<Scored> = items.to_vec();
    v.sort_by_key(|s| match (s.local, s.upstream) {
        (false, true) => 0,
        (true, false) => 2,
        _ => 1,
    });
    let order: Vec<&Scored> = v.iter().collect();
    (0..=v.len()).map(|k| (k as f64 / v.len().max(1) as f64, quality_at(&order, k))).collect()
}

/// The doubt above which exactly the `k` most doubtful items escalate (as far as ties and
/// forced items allow): escalate when doubt > threshold. Always a finite number, so that it
/// can be written into the routes file.
pub fn threshold_for(items: &[Scored], signal: usize, k: usize) -> f64 {
    let d: Vec<f64> = by_doubt(items, signal).iter().map(|s| s.doubt[signal]).collect();
    let finite: Vec<f64> = d.iter().copied().filter(|x| x.is_finite()).collect();
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let (hi, lo) = if finite.is_empty() { (0.0, 0.0) } else { (hi, lo) };
    if d.is_empty() || k == 0 {
        // Nothing escalates but what must (forced items are +inf).
        return hi.max(lo) + if d.first().is_some_and(|x| x.is_finite()) { 0.0 } else { 1.0 };
    }
    if k >= d.len() {
        return lo - 1.0;
    }
    let (a, b) = (d[k - 1], d[k]);
    match (a.is_finite(), b.is_finite()) {
        (true, true) => (a + b) / 2.0,
        (true, false) => a - 1.0,
        (false, true) => b,
        (false, false) if a > 0.0 => hi + 1.0,
        (false, false) => lo - 1.0,
    }
}

/// (share escalated, quality) of a threshold on these items.
pub fn apply(items: &[Scored], signal: usize, t: f64) -> (f64, f64) {
    let n = items.len().max(1) as f64;
    let esc = items.iter().filter(|s| s.doubt[signal] > t).count() as f64;
    let q = items.iter().map(|s| f64::from(u8::from(if s.doubt[signal] > t { s.upstream } else { s.local }))).sum::<f64>();
    (esc / n, q / n)
}

/// The `k` that meets a target: a share escalated, or a quality as a share of the upstream's.
fn k_for(items: &[Scored], signal: usize, escalation: Option<f64>, quality: Option<f64>) -> usize {
    let n = items.len();
    match (escalation, quality) {
        (Some(r), _) => ((r * n as f64).round() as usize).min(n),
        (None, Some(q)) => {
            let want = q * share(items, |s| s.upstream);
            let c = curve(items, signal);
            c.iter().position(|&(_, quality)| quality + 1e-12 >= want).unwrap_or(n)
        }
        (None, None) => 0,
    }
}

/// The routes file's threshold for a signal's doubt threshold.
fn threshold_line(signal: usize, t: f64) -> String {
    match signal {
        0 => format!("min_mean_logprob = {}", -t),
        1 => format!("min_token_logprob = {}", -t),
        2 => format!("max_entropy = {t}"),
        3 => format!("min_margin = {}", -t),
        _ => format!("min_agreement = {}", -t),
    }
}

/// Deterministic split of the items' ids: the first share for calibration.
fn split(items: Vec<Scored>, share: f64, seed: u64) -> (Vec<Scored>, Vec<Scored>) {
    use std::hash::{Hash, Hasher};
    let mut keyed: Vec<(u64, Scored)> = items
        .into_iter()
        .map(|s| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, &s.id).hash(&mut h);
            (h.finish(), s)
        })
        .collect();
    keyed.sort_by_key(|(h, _)| *h);
    let cut = ((keyed.len() as f64) * share).round() as usize;
    let held = keyed.split_off(cut.min(keyed.len()));
    (keyed.into_iter().map(|(_, s)| s).collect(), held.into_iter().map(|(_, s)| s).collect())
}

/// Read `bantam eval --signals` items: the local model's rows carry signals, the
/// upstream's are named after it.
fn read_items(path: &Path, upstream: &str, forced: impl Fn(&Value) -> bool) -> Result<Vec<Scored>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut local, mut up): (BTreeMap<String, (bool, Value)>, BTreeMap<String, bool>) = Default::default();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let id = match &v["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let key = format!("{id}#{}", v["sample"].as_u64().unwrap_or(0));
        let correct = v["correct"].as_bool().unwrap_or(false);
        if let Some(sig) = v.get("signals") {
            local.insert(key, (correct, sig.clone()));
        } else if v["model"] == upstream {
            up.insert(key, correct);
        }
    }
    if local.is_empty() {
        bail!("{}: no local answers with signals (run with `bantam eval --signals`)", path.display());
    }
    let items: Vec<Scored> = local
        .into_iter()
        .filter_map(|(id, (ok, sig))| up.get(&id).map(|&u| Scored { doubt: doubts(&sig, forced(&sig)), id, local: ok, upstream: u }))
        .collect();
    if items.is_empty() {
        bail!("{}: no item has both a local answer and the upstream {upstream:?}'s", path.display());
    }
    Ok(items)
}

/// Put `lines` as the route's `[routes.NAME.escalate]` table, replacing the thresholds the
/// calibration owns and keeping the rest; the result must read back as a routes file.
fn write_thresholds(path: &Path, route: &str, line: &str, keep: &[String]) -> Result<()> {
    let text = std::fs::read_to_string(path)?;
    let header = format!("[routes.{route}.escalate]");
    let owned = ["min_mean_logprob", "min_token_logprob", "max_entropy", "min_margin", "min_agreement"];
    let mut out: Vec<String> = Vec::new();
    let mut section = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        let in_route = section == format!("[routes.{route}]");
        if section == header || (in_route && t.starts_with("escalate")) {
            continue;
        }
        out.push(l.to_string());
    }
    let mut table = vec![String::new(), header, line.to_string()];
    table.extend(keep.iter().filter(|k| !owned.iter().any(|o| k.starts_with(o))).cloned());
    out.extend(table);
    let new = out.join("\n") + "\n";
    RouteFile::parse(&new, &path.display().to_string()).context("the routes file with the new thresholds does not read back")?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, new)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The route's escalate settings other than the thresholds, as TOML lines.
fn kept_settings(e: &server::route::config::Thresholds) -> Vec<String> {
    let mut v = vec![
        format!("on_parse_failure = {}", e.on_parse_failure),
        format!("on_length = {}", e.on_length),
        format!("samples = {}", e.samples),
        format!("sample_temperature = {}", e.sample_temperature),
    ];
    if let Some(m) = e.max_prompt_tokens {
        v.push(format!("max_prompt_tokens = {m}"));
    }
    if !e.patterns.is_empty() {
        v.push(format!("patterns = {}", serde_json::to_string(&e.patterns).unwrap_or_default()));
    }
    v
}

#[derive(Parser)]
struct EvalLine {
    #[command(flatten)]
    args: crate::eval::EvalArgs,
}

fn calibrate(a: CalibrateArgs) -> Result<()> {
    if !(a.split > 0.0 && a.split < 1.0) {
        bail!("--split must be between 0 and 1");
    }
    if a.target_escalation.is_none() && a.target_quality.is_none() {
        bail!("give --target-escalation or --target-quality");
    }
    let signal = match a.signal.as_str() {
        "auto" => None,
        s => Some(SIGNALS.iter().position(|x| *x == s).with_context(|| format!("--signal takes auto or one of {}", SIGNALS.join(", ")))?),
    };
    let file = RouteFile::load(&a.routes)?;
    let route = file.routes.get(&a.route).with_context(|| format!("{}: no route {:?}", a.routes.display(), a.route))?.clone();
    let up_name = route.upstream.clone().with_context(|| format!("route {:?} has no upstream to escalate to", a.route))?;
    let up = &file.upstreams[&up_name];
    if route.stream == StreamMode::Local {
        eprintln!("note: route {:?} streams locally; its thresholds apply to whole answers only", a.route);
    }
    let items_path = a.items.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("bantam-calibrate-{}.items.jsonl", std::process::id())));
    if !items_path.exists() {
        let base = up.urls()[0].to_string();
        let mut spec = format!("{up_name}={base},model={},price={}/{}", up.model, up.price_input, up.price_output);
        if let Some(k) = &up.api_key_env {
            spec += &format!(",key-env={k}");
        }
        let mut argv: Vec<String> = vec!["eval".into(), a.task.display().to_string(), "--models".into(), route.local.clone(), "--upstream".into(), spec];
        argv.extend(["--signals".into(), route.decide_tokens.to_string(), "--items".into(), items_path.display().to_string()]);
        let wants_agreement = signal == Some(AGREEMENT) || route.escalate.min_agreement.is_some();
        if wants_agreement && !a.eval.iter().any(|x| x == "--agreement" || x.starts_with("--agreement=")) {
            let e = &route.escalate;
            argv.extend(["--agreement".into(), e.samples.to_string(), "--agreement-temperature".into(), e.sample_temperature.to_string()]);
        }
        argv.extend(a.eval.iter().cloned());
        let line = EvalLine::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::eval::main(line.args)?;
    } else {
        eprintln!("reading the answers in {}", items_path.display());
    }
    let e = &route.escalate;
    let items = read_items(&items_path, &up_name, |sig| (e.on_parse_failure && sig["parse_failure"] == true) || (e.on_length && sig["length"] == true))?;
    let (cal, held) = split(items, a.split, a.seed);
    if cal.is_empty() || held.is_empty() {
        bail!("{} items cannot be split {:.0}% / {:.0}%", cal.len() + held.len(), 100.0 * a.split, 100.0 * (1.0 - a.split));
    }
    // A signal no item measured (agreement without samples) is not a choice, and has no APGR.
    let measured = |x: usize| cal.iter().any(|s| s.doubt[x].is_finite());
    let apgrs: Vec<Option<f64>> = (0..SIGNALS.len()).map(|s| if measured(s) { apgr(&cal, &curve(&cal, s)) } else { None }).collect();
    if let Some(x) = signal.filter(|&x| !measured(x)) {
        bail!("no calibration item measured {} (items from an earlier run without it?)", SIGNALS[x]);
    }
    let chosen = signal.unwrap_or_else(|| {
        (0..SIGNALS.len()).filter(|&x| measured(x)).max_by(|&x, &y| apgrs[x].unwrap_or(0.0).total_cmp(&apgrs[y].unwrap_or(0.0))).unwrap_or(0)
    });
    let k = k_for(&cal, chosen, a.target_escalation, a.target_quality);
    let t = threshold_for(&cal, chosen, k);
    let (rate, quality) = apply(&held, chosen, t);
    let (weak, strong) = (share(&held, |s| s.local), share(&held, |s| s.upstream));
    let random = weak + rate * (strong - weak);
    let held_curve = curve(&held, chosen);
    let points: Vec<Value> = [0.1, 0.2, 0.3]
        .iter()
        .map(|&r| {
            let t = threshold_for(&cal, chosen, k_for(&cal, chosen, Some(r), None));
            let (rate, q) = apply(&held, chosen, t);
            json!({"target": r, "threshold": t, "escalated": rate, "quality": q, "random": weak + rate * (strong - weak)})
        })
        .collect();
    let line = threshold_line(chosen, t);
    let report = json!({
        "route": a.route,
        "local": route.local,
        "upstream": up_name,
        "signal": SIGNALS[chosen],
        "apgr_calibration": SIGNALS.iter().zip(&apgrs).map(|(s, v)| (s.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "target": {"escalation": a.target_escalation, "quality": a.target_quality},
        "threshold": line,
        "calibration": {"items": cal.len(), "escalated": apply(&cal, chosen, t).0, "quality": apply(&cal, chosen, t).1},
        "held_out": {
            "items": held.len(),
            "escalated": rate,
            "quality": quality,
            "random_at_same_share": random,
            "local_alone": weak,
            "upstream_alone": strong,
            "apgr": apgr(&held, &held_curve),
            "apgr_random": if strong > weak { json!(0.5) } else { Value::Null },
            "apgr_oracle": apgr(&held, &oracle(&held)),
            "operating_points": points,
            "curve": held_curve.iter().map(|(x, q)| json!([x, q])).collect::<Vec<_>>(),
            "oracle": oracle(&held).iter().map(|(x, q)| json!([x, q])).collect::<Vec<_>>(),
        },
    });
    println!("signal {} (APGR on the calibration half: {})", SIGNALS[chosen], apgrs[chosen].map_or("n/a".into(), |v| format!("{v:.3}")));
    println!("threshold: {line}");
    println!(
        "held out ({} items): {:.1}% escalated, quality {:.3} (random at the same share {:.3}; local alone {:.3}; upstream alone {:.3}); APGR {}",
        held.len(),
        100.0 * rate,
        quality,
        random,
        weak,
        strong,
        report["held_out"]["apgr"].as_f64().map_or("n/a".into(), |v| format!("{v:.3} (random 0.5)"))
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, html(&report)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if a.dry_run {
        println!("--dry-run: {} left as it was", a.routes.display());
    } else {
        write_thresholds(&a.routes, &a.route, &line, &kept_settings(e))?;
        println!("wrote [routes.{}.escalate] {line} into {}", a.route, a.routes.display());
    }
    Ok(())
}

/// The held-out curve against random routing and the oracle, as one SVG in a page.
fn html(r: &Value) -> String {
    let (w, h, pad) = (640.0, 400.0, 50.0);
    let pts = |key: &str| -> Vec<(f64, f64)> {
        r["held_out"][key].as_array().map(|a| a.iter().filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?))).collect()).unwrap_or_default()
    };
    let (curve, oracle) = (pts("curve"), pts("oracle"));
    let ho = &r["held_out"];
    let (weak, strong) = (ho["local_alone"].as_f64().unwrap_or(0.0), ho["upstream_alone"].as_f64().unwrap_or(0.0));
    let qs = curve.iter().chain(&oracle).map(|p| p.1);
    let (lo, hi) = qs.fold((f64::MAX, f64::MIN), |(a, b), q| (a.min(q), b.max(q)));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
    let x = |v: f64| pad + v * (w - 2.0 * pad);
    let y = |q: f64| h - pad - (q - lo) / (hi - lo) * (h - 2.0 * pad);
    let path =
        |p: &[(f64, f64)]| p.iter().enumerate().map(|(i, (a, b))| format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(*a), y(*b))).collect::<String>();
    let dot = format!(
        r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="#d62728"/>"##,
        x(ho["escalated"].as_f64().unwrap_or(0.0)),
        y(ho["quality"].as_f64().unwrap_or(0.0))
    );
    let ticks: String = (0..=4)
        .map(|i| {
            let (fx, fq) = (i as f64 / 4.0, lo + (hi - lo) * i as f64 / 4.0);
            format!(
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{:.0}%</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{fq:.3}</text>"#,
                x(fx),
                h - pad + 16.0,
                100.0 * fx,
                pad - 6.0,
                y(fq) + 4.0
            )
        })
        .collect();
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><title>bantam route calibrate: {route}</title></head>
<body style="font-family: sans-serif; max-width: 720px">
<h1>Route {route}: {local} → {up}</h1>
<p>Signal <b>{signal}</b>, threshold <code>{threshold}</code>. Held out ({n} items): {esc_share:.1}% escalated, quality {q:.3}
(random routing at the same share {rand:.3}; local alone {weak:.3}; upstream alone {strong:.3}); APGR {apgr} (random 0.5, oracle {oracle_apgr}).</p>
<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">
<rect x="{pad}" y="{pad}" width="{iw}" height="{ih}" fill="none" stroke="#999"/>
<path d="M{x0:.1},{yw:.1}L{x1:.1},{ys:.1}" stroke="#7f7f7f" stroke-dasharray="5,4" fill="none"/>
<path d="{oracle_path}" stroke="#2ca02c" fill="none"/>
<path d="{curve_path}" stroke="#1f77b4" stroke-width="2" fill="none"/>
{dot}{ticks}
<text x="{cx:.1}" y="{xl:.1}" font-size="12" text-anchor="middle">share escalated</text>
<text x="{lx:.1}" y="{ly:.1}" font-size="12">— {signal}  - - random  — oracle  ● calibrated</text>
</svg></body></html>
"##,
        route = esc(r["route"].as_str().unwrap_or("")),
        local = esc(r["local"].as_str().unwrap_or("")),
        up = esc(r["upstream"].as_str().unwrap_or("")),
        signal = r["signal"].as_str().unwrap_or(""),
        threshold = esc(r["threshold"].as_str().unwrap_or("")),
        n = ho["items"],
        esc_share = 100.0 * ho["escalated"].as_f64().unwrap_or(0.0),
        q = ho["quality"].as_f64().unwrap_or(0.0),
        rand = ho["random_at_same_share"].as_f64().unwrap_or(0.0),
        apgr = ho["apgr"].as_f64().map_or("n/a".into(), |v| format!("{v:.3}")),
        oracle_apgr = ho["apgr_oracle"].as_f64().map_or("n/a".into(), |v| format!("{v:.3}")),
        iw = w - 2.0 * pad,
        ih = h - 2.0 * pad,
        x0 = x(0.0),
        x1 = x(1.0),
        yw = y(weak),
        ys = y(strong),
        oracle_path = path(&oracle),
        curve_path = path(&curve),
        cx = w / 2.0,
        xl = h - 12.0,
        lx = pad + 8.0,
        ly = pad + 16.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: usize, local: bool, upstream: bool, doubt: f64) -> Scored {
        Scored { id: id.to_string(), local, upstream, doubt: [doubt; 5] }
    }

    #[test]
    fn a_perfect_signal_recovers_the_gap_first_and_random_is_half() {
        // Local wrong on the 4 most doubtful items, which the upstream gets right.
        let items: Vec<Scored> = (0..10).map(|i| item(i, i >= 4, true, 10.0 - i as f64)).collect();
        let c = curve(&items, 0);
        assert_eq!((c[0].1, c[4].1, c[10].1), (0.6, 1.0, 1.0));
        let a = apgr(&items, &c).unwrap();
        // PGR climbs linearly to 1 over the first 40%, then stays: 1 - 0.4/2 = 0.8.
        assert!((a - 0.8).abs() < 1e-12, "{a}");
        // The reverse order is worse than random.
        let rev: Vec<Scored> = (0..10).map(|i| item(i, i >= 4, true, i as f64)).collect();
        assert!(apgr(&rev, &curve(&rev, 0)).unwrap() < 0.5);
        // A random order on average recovers half: the straight line's area.
        let line: Vec<(f64, f64)> = (0..=10).map(|k| (k as f64 / 10.0, 0.6 + 0.4 * k as f64 / 10.0)).collect();
        assert!((apgr(&items, &line).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(apgr(&[item(0, true, true, 1.0)], &[(0.0, 1.0), (1.0, 1.0)]), None, "no gap, no APGR");
    }

    #[test]
    fn thresholds_escalate_exactly_k_and_targets_pick_k() {
        let items: Vec<Scored> = (0..10).map(|i| item(i, i >= 3, i != 9, i as f64)).collect();
        for k in 0..=10 {
            let t = threshold_for(&items, 0, k);
            assert_eq!(apply(&items, 0, t).0, k as f64 / 10.0, "k {k} t {t}");
        }
        assert_eq!(k_for(&items, 0, Some(0.2), None), 2);
        // Upstream quality 0.9; 100% of it is 0.9: reached first when k = 3? The 3 most
        // doubtful (9, 8, 7) are locally right, so escalating them loses 9's answer.
        let k = k_for(&items, 0, None, Some(1.0));
        assert!(curve(&items, 0)[k].1 >= 0.9 - 1e-12 && (k == 0 || curve(&items, 0)[k - 1].1 < 0.9));
        // Absent signals never escalate; forced ones always do; thresholds stay finite.
        let odd = [item(0, true, true, f64::NEG_INFINITY), item(1, true, true, f64::INFINITY), item(2, true, true, 0.5)];
        assert_eq!(apply(&odd, 0, threshold_for(&odd, 0, 0)).0, 1.0 / 3.0);
        assert_eq!(apply(&odd, 0, threshold_for(&odd, 0, 3)).0, 2.0 / 3.0);
        let forced = [item(0, true, true, f64::INFINITY), item(1, true, true, f64::INFINITY), item(2, true, true, 0.5), item(3, true, true, 0.2)];
        for k in 0..=4 {
            let t = threshold_for(&forced, 0, k);
            assert!(t.is_finite() && t.abs() < 10.0, "k {k}: {t}");
            assert_eq!(apply(&forced, 0, t).0, k.max(2) as f64 / 4.0, "k {k}");
        }
        let none = [item(0, true, true, f64::NEG_INFINITY)];
        assert!(threshold_for(&none, 0, 0).is_finite() && threshold_for(&none, 0, 1).is_finite());
    }

    #[test]
    fn splits_are_deterministic_and_whole() {
        let items: Vec<Scored> = (0..100).map(|i| item(i, true, true, 0.0)).collect();
        let (a, b) = split(items.clone(), 0.5, 7);
        let (c, _) = split(items, 0.5, 7);
        assert_eq!((a.len(), b.len()), (50, 50));
        assert_eq!(a.iter().map(|s| &s.id).collect::<Vec<_>>(), c.iter().map(|s| &s.id).collect::<Vec<_>>());
        assert_eq!(percent("10%").unwrap(), 0.1);
        assert_eq!(percent("0.25").unwrap(), 0.25);
        assert!(percent("150%").is_err() && percent("x").is_err());
    }

    #[test]
    fn thresholds_are_written_into_the_routes_file_and_read_back() {
        let dir = std::env::temp_dir().join(format!("bantam-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("routes.toml");
        std::fs::write(
            &p,
            "[upstreams.big]\nurl = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\n[routes.a]\npolicy = \"cascade\"\nlocal = \"s\"\nupstream = \"big\"\nescalate = { max_entropy = 3.0, patterns = [\"x\"] }\n\n[routes.b]\npolicy = \"local\"\nlocal = \"s\"\n",
        )
        .unwrap();
        let f = RouteFile::load(&p).unwrap();
        write_thresholds(&p, "a", &threshold_line(0, 0.75), &kept_settings(&f.routes["a"].escalate)).unwrap();
        let f = RouteFile::load(&p).unwrap();
        let e = &f.routes["a"].escalate;
        assert_eq!((e.min_mean_logprob, e.max_entropy, e.patterns.clone()), (Some(-0.75), None, vec!["x".to_string()]));
        assert_eq!(f.routes["b"].local, "s");
        // Self-consistency: the share is written back as min_agreement, and the samples kept.
        std::fs::write(&p, std::fs::read_to_string(&p).unwrap().replace("samples = 4", "samples = 6")).unwrap();
        let f = RouteFile::load(&p).unwrap();
        write_thresholds(&p, "a", &threshold_line(AGREEMENT, -0.625), &kept_settings(&f.routes["a"].escalate)).unwrap();
        let e = RouteFile::load(&p).unwrap().routes["a"].escalate.clone();
        assert_eq!((e.min_agreement, e.min_mean_logprob, e.samples, e.sample_temperature), (Some(0.625), None, 6, 0.7));
        assert_eq!(doubts(&json!({"agreement": 0.75}), false)[AGREEMENT], -0.75);
        assert_eq!(doubts(&json!({"min_margin": 1.0}), false)[AGREEMENT], f64::NEG_INFINITY);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
