//! `bantam eval --html FILE`: one self-contained page (inline CSS and SVG, no scripts, no
//! fetches) with the figures table and the charts a choice is made from: accuracy against
//! cost per success and against latency (the Pareto front marked), latency distributions,
//! and each classifier's confusion matrix.

use serde_json::Value;
use std::fmt::Write;

/// The page for `summary` (the JSON summary) and each model's per-answer latencies (ms).
pub fn html(summary: &Value, latencies: &[(String, Vec<f64>)]) -> String {
    let models = summary["models"].as_array().cloned().unwrap_or_default();
    let mut page = String::new();
    let title = format!("bantam eval: {} on {}", summary["kind"].as_str().unwrap_or(""), summary["data"].as_str().unwrap_or(""));
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        page,
        "<p class=\"meta\">bantam {} · data sha256 <code>{}</code> · seed {} · temperature {} · {} items per model{}</p>",
        esc(summary["bantam_version"].as_str().unwrap_or("")),
        esc(summary["data_sha256"].as_str().unwrap_or("")),
        summary["seed"],
        summary["temperature"],
        models.first().map_or(0, |m| m["n"].as_u64().unwrap_or(0)),
        summary["sandbox"].as_str().map_or(String::new(), |s| format!(" · code ran in a sandbox: {}", esc(s)))
    );
    page += &table(&models);
    let point = |m: &Value, x: &Value| Some((m["model"].as_str()?.to_string(), x.as_f64().filter(|v| *v > 0.0)?, m["accuracy"].as_f64()?));
    let by_cost: Vec<_> = models.iter().filter_map(|m| point(m, &m["cost_per_success_usd"])).collect();
    let by_latency: Vec<_> = models.iter().filter_map(|m| point(m, &m["latency_ms"]["p50"])).collect();
    page += "<section class=\"charts\">\n";
    page += &figure(
        "Accuracy against cost per successful answer",
        "accuracy-cost",
        &scatter(&by_cost, "$ per successful answer", "accuracy"),
        by_cost.is_empty().then_some("No model has a cost: give --hardware-cost (or upstream prices)."),
    );
    page += &figure(
        "Accuracy against latency",
        "accuracy-latency",
        &scatter(&by_latency, "latency p50 (ms)", "accuracy"),
        by_latency.is_empty().then_some("No latencies were measured."),
    );
    page += &figure(
        "Latency distribution",
        "latency",
        &distributions(latencies),
        latencies.iter().all(|(_, v)| v.is_empty()).then_some("No latencies were measured."),
    );
    page += "</section>\n";
    for m in &models {
        if let Some(c) = m["confusion"].as_object().filter(|c| !c.is_empty()) {
            let name = m["model"].as_str().unwrap_or("");
            page += &figure(&format!("Confusion matrix: {name}"), "confusion", &confusion(c), None);
        }
    }
    page += &verdicts(summary);
    page += "</body></html>\n";
    page
}

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1d2228;padding:0 1em}\
h1{font-size:1.4em}h2{font-size:1.1em;margin:0 0 .4em}.meta{color:#5b6570}code{font-size:.9em}\
table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .7em;border-bottom:1px solid #dde1e5;text-align:right}\
th:first-child,td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1.5em}\
figure{margin:1em 0}figcaption{color:#5b6570}svg{background:#fbfcfd;border:1px solid #e3e6ea}\
svg text{font:11px system-ui,sans-serif;fill:#1d2228}.axis{stroke:#8a939c}.grid{stroke:#e8ebee}\
.point{fill:#3b6fb6}.pareto{fill:#d9480f}.front{fill:none;stroke:#d9480f;stroke-dasharray:4 3}\
.box{fill:#cfe0f5;stroke:#3b6fb6}.tick{stroke:#3b6fb6;stroke-opacity:.35}.p99{stroke:#d9480f}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("–".to_string(), |x| format!("{x:.digits$}"))
}

fn table(models: &[Value]) -> String {
    let mut t = String::from(
        "<table id=\"figures\"><tr><th>model</th><th>n</th><th>accuracy (95% CI)</th><th>other</th><th>latency p50 / p95 / p99 ms</th>\
         <th>TTFT p50 ms</th><th>tokens/s</th><th>peak RSS MiB</th><th>$ / 1M tokens</th><th>$ / success</th></tr>\n",
    );
    for m in models {
        let other = if let Some(f) = m["macro_f1"].as_f64() {
            format!("macro-F1 {f:.3}")
        } else if let Some(c) = m["contains"].as_f64() {
            format!("contains {c:.3}")
        } else if let Some(f) = m["field_f1"].as_f64() {
            format!("field F1 {f:.3}")
        } else if let Some(p) = m["pass_at_k"].as_object() {
            p.iter().map(|(k, v)| format!("pass@{k} {}", num(v, 3))).collect::<Vec<_>>().join(", ")
        } else {
            String::new()
        };
        let sci = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.2e}"));
        let _ = writeln!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{} ({}–{})</td><td>{}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(m["model"].as_str().unwrap_or("")),
            m["n"],
            num(&m["accuracy"], 3),
            num(&m["accuracy_ci"][0], 3),
            num(&m["accuracy_ci"][1], 3),
            esc(&other),
            num(&m["latency_ms"]["p50"], 0),
            num(&m["latency_ms"]["p95"], 0),
            num(&m["latency_ms"]["p99"], 0),
            num(&m["ttft_ms"]["p50"], 0),
            num(&m["tokens_per_s"], 1),
            num(&m["peak_rss_mib"], 0),
            sci(&m["cost_per_1m_tokens_usd"]),
            sci(&m["cost_per_success_usd"]),
        );
    }
    t + "</table>\n"
}

fn figure(caption: &str, class: &str, svg: &str, empty: Option<&str>) -> String {
    match empty {
        Some(why) => format!("<figure class=\"{class}\"><h2>{}</h2><p>{}</p></figure>\n", esc(caption), esc(why)),
        None => format!("<figure class=\"{class}\"><h2>{}</h2>{svg}</figure>\n", esc(caption)),
    }
}

/// Plot area of every chart, in SVG units.
const W: f64 = 460.0;
const H: f64 = 300.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 16.0;
const RIGHT: f64 = 24.0;

/// A linear or (when the values span more than 20x) logarithmic axis over `values`.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    fn over(values: impl Iterator<Item = f64>, from_zero: bool) -> Axis {
        let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        let log = lo > 0.0 && hi / lo > 20.0;
        if log {
            return Axis { lo: lo.log10().floor(), hi: hi.log10().ceil(), log };
        }
        if from_zero {
            lo = lo.min(0.0);
        }
        if hi - lo < 1e-12 {
            hi = lo + if lo == 0.0 { 1.0 } else { lo.abs() };
        }
        // Round the ends out to a whole number of steps.
        let step = nice_step((hi - lo) / 4.0);
        Axis { lo: (lo / step).floor() * step, hi: (hi * 1.04 / step).ceil() * step, log }
    }

    /// Accuracy: 0 to 1.
    fn unit() -> Axis {
        Axis { lo: 0.0, hi: 1.0, log: false }
    }

    /// Where `v` falls, 0 to 1.
    fn at(&self, v: f64) -> f64 {
        let v = if self.log { v.max(1e-300).log10() } else { v };
        ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            return (self.lo as i32..=self.hi as i32).map(|e| 10f64.powi(e)).collect();
        }
        let step = nice_step((self.hi - self.lo) / 4.0);
        let n = ((self.hi - self.lo) / step).round() as i32;
        (0..=n).map(|i| self.lo + step * f64::from(i)).collect()
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-300).log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|s| *s >= raw * 0.999).unwrap_or(10.0 * p)
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 0.01 || v.abs() >= 1e5) {
        format!("{v:.1e}").replace(".0e", "e")
    } else if v.abs() >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn frame(x: &Axis, y: &Axis, xlabel: &str, ylabel: &str, y_ticks: bool) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">");
    for t in x.ticks() {
        let px = LEFT + x.at(t) * pw;
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 14.0,
            label(t)
        );
    }
    for t in y.ticks().into_iter().filter(|_| y_ticks) {
        let py = TOP + (1.0 - y.at(t)) * ph;
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            label(t)
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        TOP + ph,
        LEFT + pw,
        TOP + ph,
        TOP + ph,
        LEFT + pw / 2.0,
        H - 6.0,
        esc(xlabel),
        TOP + ph / 2.0,
        esc(ylabel)
    );
    s
}

/// The points no other point beats on both counts (lower x, higher y), by x.
pub fn pareto(points: &[(String, f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| points[a].1.total_cmp(&points[b].1).then(points[b].2.total_cmp(&points[a].2)));
    let mut best = f64::NEG_INFINITY;
    order
        .into_iter()
        .filter(|&i| {
            let above = points[i].2 > best;
            best = best.max(points[i].2);
            above
        })
        .collect()
}

/// (name, x, accuracy) points, lower x better; the Pareto front drawn and marked.
fn scatter(points: &[(String, f64, f64)], xlabel: &str, ylabel: &str) -> String {
    let x = Axis::over(points.iter().map(|p| p.1), true);
    let y = Axis::unit();
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let at = |p: &(String, f64, f64)| (LEFT + x.at(p.1) * pw, TOP + (1.0 - y.at(p.2)) * ph);
    let mut s = frame(&x, &y, xlabel, ylabel, true);
    let front = pareto(points);
    let line: Vec<String> = front.iter().map(|&i| at(&points[i])).map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
    let _ = write!(s, "<polyline class=\"front\" points=\"{}\"/>", line.join(" "));
    for (i, p) in points.iter().enumerate() {
        let (px, py) = at(p);
        let on = front.contains(&i);
        let (tx, anchor) = if px > LEFT + (W - LEFT - RIGHT) * 0.6 { (px - 7.0, "end") } else { (px + 7.0, "start") };
        let _ = write!(
            s,
            "<circle class=\"{}\" data-model=\"{}\" cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\"><title>{}: {} at {}</title></circle><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}{}</text>",
            if on { "point pareto" } else { "point" },
            esc(&p.0),
            esc(&p.0),
            label(p.2),
            label(p.1),
            py - 6.0,
            esc(&p.0),
            if on { " ★" } else { "" }
        );
    }
    s + "</svg>"
}

/// Per model, a box from p50 to p95, a p99 mark, and every answer as a tick.
fn distributions(latencies: &[(String, Vec<f64>)]) -> String {
    let x = Axis::over(latencies.iter().flat_map(|(_, v)| v.iter().copied()), true);
    let rows = latencies.len().max(1) as f64;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let band = ph / rows;
    let y = Axis::unit();
    // Rows are named, not scaled: no y ticks.
    let mut s = frame(&x, &y, "latency (ms)", "", false);
    for (r, (name, v)) in latencies.iter().enumerate() {
        let mid = TOP + band * (r as f64 + 0.5);
        let px = |t: f64| LEFT + x.at(t) * pw;
        for t in v {
            let _ = write!(s, "<line class=\"tick\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>", px(*t), mid - band * 0.3, px(*t), mid + band * 0.3);
        }
        let p = |q| super::score::percentile(v, q);
        let (p50, p95, p99) = (p(50.0), p(95.0), p(99.0));
        let _ = write!(
            s,
            "<rect class=\"box\" data-model=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: p50 {} ms, p95 {} ms, p99 {} ms</title></rect>\
             <line class=\"p99\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            esc(name),
            px(p50),
            mid - band * 0.18,
            (px(p95) - px(p50)).max(1.5),
            band * 0.36,
            esc(name),
            label(p50),
            label(p95),
            label(p99),
            px(p99),
            mid - band * 0.3,
            px(p99),
            mid + band * 0.3,
            LEFT + 4.0,
            mid - band * 0.32,
            esc(name)
        );
    }
    s + "</svg>"
}

/// A confusion matrix, `{gold: {predicted: count}}`: gold labels down, predictions across,
/// each cell shaded by its share of its row.
fn confusion(c: &serde_json::Map<String, Value>) -> String {
    let mut labels: Vec<&str> = c.keys().map(String::as_str).collect();
    for row in c.values().filter_map(Value::as_object) {
        for k in row.keys() {
            if !labels.contains(&k.as_str()) {
                labels.push(k);
            }
        }
    }
    let n = labels.len() as f64;
    let cell = (320.0 / n).clamp(18.0, 60.0);
    let (left, top) = (110.0, 90.0);
    let (w, h) = (left + cell * n + 10.0, top + cell * n + 10.0);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\">");
    let _ =
        write!(s, "<text x=\"{:.1}\" y=\"12\" text-anchor=\"middle\">predicted</text><text x=\"4\" y=\"{:.1}\">gold</text>", left + cell * n / 2.0, top - 6.0);
    for (j, l) in labels.iter().enumerate() {
        let x = left + cell * (j as f64 + 0.5);
        let _ = write!(s, "<text transform=\"translate({x:.1} {:.1}) rotate(-45)\">{}</text>", top - 8.0, esc(&short(l)));
    }
    for (i, gold) in labels.iter().enumerate() {
        let y = top + cell * i as f64;
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", left - 6.0, y + cell / 2.0 + 4.0, esc(&short(gold)));
        let row = c.get(*gold).and_then(Value::as_object);
        let total: f64 = row.map_or(0.0, |r| r.values().filter_map(Value::as_f64).sum());
        for (j, pred) in labels.iter().enumerate() {
            let count = row.and_then(|r| r.get(*pred)).and_then(Value::as_f64).unwrap_or(0.0);
            let share = if total > 0.0 { count / total } else { 0.0 };
            let x = left + cell * j as f64;
            let hue = if i == j { "59,111,182" } else { "217,72,15" };
            let _ = write!(
                s,
                "<rect class=\"cell\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"rgba({hue},{:.2})\" stroke=\"#dde1e5\"><title>gold {}, predicted {}: {count}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{count}</text>",
                0.08 + 0.8 * share,
                esc(gold),
                esc(pred),
                x + cell / 2.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    s + "</svg>"
}

/// A label cut to fit its axis.
fn short(l: &str) -> String {
    let mut out: String = l.chars().take(14).collect();
    if l.chars().count() > 14 {
        out.push('…');
    }
    if out.is_empty() {
        "(empty)".to_string()
    } else {
        out
    }
}

/// McNemar's verdicts and the break-even volumes, as sentences.
fn verdicts(summary: &Value) -> String {
    let mut out = String::new();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let comparisons = list(&summary["comparisons"]);
    let break_even = list(&summary["break_even"]);
    if comparisons.is_empty() && break_even.is_empty() {
        return out;
    }
    out += "<h2>Differences</h2><ul>\n";
    for c in comparisons {
        let verdict = if c["significant"].as_bool() == Some(true) { "significant" } else { "not significant" };
        let _ = writeln!(
            out,
            "<li>{} against {}: {} answers right only for the first, {} only for the second (McNemar p = {}, {verdict})</li>",
            esc(c["a"].as_str().unwrap_or("")),
            esc(c["b"].as_str().unwrap_or("")),
            c["a_only"],
            c["b_only"],
            num(&c["p_value"], 3)
        );
    }
    for b in break_even {
        let _ = writeln!(
            out,
            "<li>{} is cheaper than {} above {} requests a month (this machine answers {} a month)</li>",
            esc(b["local"].as_str().unwrap_or("")),
            esc(b["upstream"].as_str().unwrap_or("")),
            num(&b["requests_per_month"], 0),
            num(&b["local_capacity_per_month"], 0)
        );
    }
    out + "</ul>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pareto_front_keeps_what_nothing_beats() {
        let p = |n: &str, x: f64, y: f64| (n.to_string(), x, y);
        let points = [p("cheap", 1.0, 0.5), p("dear-better", 5.0, 0.9), p("dominated", 6.0, 0.6), p("dear-same", 7.0, 0.9), p("best", 2.0, 0.8)];
        let front: Vec<&str> = pareto(&points).into_iter().map(|i| points[i].0.as_str()).collect();
        assert_eq!(front, ["cheap", "best", "dear-better"]);
    }

    #[test]
    fn the_page_escapes_names_and_draws_every_model() {
        let summary = serde_json::json!({
            "kind": "classify", "data": "<x>.jsonl", "bantam_version": "0", "data_sha256": "ab", "seed": 0, "temperature": 0.0,
            "models": [
                {"model": "a<b>", "n": 2, "accuracy": 0.5, "accuracy_ci": [0.0, 1.0], "latency_ms": {"p50": 10.0}, "cost_per_success_usd": 0.001, "confusion": {"x": {"x": 1, "y": 1}}},
                {"model": "c", "n": 2, "accuracy": 1.0, "accuracy_ci": [1.0, 1.0], "latency_ms": {"p50": 20.0}, "cost_per_success_usd": 0.002}
            ],
            "comparisons": [], "break_even": []
        });
        let page = html(&summary, &[("a<b>".into(), vec![9.0, 11.0]), ("c".into(), vec![20.0, 21.0])]);
        assert!(!page.contains("a<b>") && page.contains("a&lt;b&gt;"));
        assert_eq!(page.matches("<circle").count(), 4, "two models on two scatter charts");
        assert_eq!(page.matches("class=\"box\"").count(), 2);
        assert_eq!(page.matches("class=\"cell\"").count(), 4);
        assert!(!page.contains("<script"));
    }
}
