//! Scoring and statistics of `bantam eval`: answer normalisation, per-field F1, macro-F1,
//! bootstrap intervals, percentiles and McNemar's exact test. Pure functions.

use serde_json::Value;
use std::collections::BTreeMap;

/// SQuAD's answer normalisation: lower case, punctuation and the articles a/an/the
/// removed, whitespace collapsed.
pub fn normalise(s: &str) -> String {
    let lower: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    lower.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

/// Normalised exact match against any of the answers, and whether the prediction contains one.
pub fn exact(prediction: &str, answers: &[String]) -> (bool, bool) {
    let p = normalise(prediction);
    let exact = answers.iter().any(|a| normalise(a) == p);
    let contains = answers.iter().any(|a| {
        let a = normalise(a);
        !a.is_empty() && format!(" {p} ").contains(&format!(" {a} "))
    });
    (exact, contains)
}

/// Fields of an extraction: whether the JSON equals the expected value, and the F1 of its
/// top-level fields (a field counts when its value equals the expected one).
pub fn extract(prediction: &str, expected: &Value) -> (bool, f64) {
    let Ok(got) = serde_json::from_str::<Value>(prediction) else { return (false, 0.0) };
    let (Some(g), Some(e)) = (got.as_object(), expected.as_object()) else { return (got == *expected, f64::from(u8::from(got == *expected))) };
    let matched = e.iter().filter(|(k, v)| g.get(*k) == Some(v)).count() as f64;
    let f1 = if g.is_empty() && e.is_empty() { 1.0 } else { 2.0 * matched / (g.len() + e.len()) as f64 };
    (got == *expected, f1)
}

/// Macro-averaged F1 over `labels` of (gold, predicted) pairs.
pub fn macro_f1(pairs: &[(&str, &str)], labels: &[String]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let f1s = labels.iter().map(|l| {
        let tp = pairs.iter().filter(|(g, p)| g == l && p == l).count() as f64;
        let fp = pairs.iter().filter(|(g, p)| g != l && p == l).count() as f64;
        let fn_ = pairs.iter().filter(|(g, p)| g == l && p != l).count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        }
    });
    f1s.sum::<f64>() / labels.len() as f64
}

/// Counts of (gold, predicted) label pairs.
pub fn confusion(pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut m: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (g, p) in pairs {
        *m.entry(g.to_string()).or_default().entry(p.to_string()).or_default() += 1;
    }
    m
}

/// A 95% percentile-bootstrap interval of the mean of `correct` (1000 resamples, seeded, so
/// a run is reproducible).
pub fn bootstrap_ci(correct: &[bool], seed: u64) -> (f64, f64) {
    let n = correct.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mut state = seed | 1;
    let mut next = || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut means: Vec<f64> = (0..1000)
        .map(|_| {
            let hits = (0..n).filter(|_| correct[(next() % n as u64) as usize]).count();
            hits as f64 / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    (means[24], means[974])
}

/// The `q`-th percentile (0..=100) of `v`, by linear interpolation between ranks.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = q / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
}

/// McNemar's exact test of two models on the same items: the two-sided binomial p-value of
/// the items only one of them got right (`a_only`, `b_only`).
pub fn mcnemar(a_only: usize, b_only: usize) -> f64 {
    let n = a_only + b_only;
    if n == 0 {
        return 1.0;
    }
    let k = a_only.min(b_only);
    // P(X <= k) for X ~ Binomial(n, 1/2), in logs to stay finite for large n.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_matching() {
        assert_eq!(normalise("  The Eiffel-Tower!  "), "eiffeltower");
        assert_eq!(normalise("A cat, an apple"), "cat apple");
        let answers = vec!["Paris".to_string(), "paris france".into()];
        assert_eq!(exact("paris.", &answers), (true, true));
        assert_eq!(exact("It is Paris", &answers), (false, true));
        assert_eq!(exact("Parisian", &answers), (false, false));
    }

    #[test]
    fn extraction_fields() {
        let e = serde_json::json!({"name": "Ada", "year": 1815});
        assert_eq!(extract(r#"{"name": "Ada", "year": 1815}"#, &e), (true, 1.0));
        assert_eq!(extract(r#"{"name": "Ada", "year": 1816}"#, &e), (false, 0.5));
        assert_eq!(extract(r#"{"name": "Ada"}"#, &e), (false, 2.0 / 3.0));
        assert_eq!(extract("not json", &e), (false, 0.0));
    }

    #[test]
    fn f1_and_confusion() {
        let labels = vec!["a".to_string(), "b".into()];
        let pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")];
        // a: tp 1, fn 1 -> 2/3; b: tp 2, fp 1 -> 4/5.
        assert!((macro_f1(&pairs, &labels) - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
        assert_eq!(confusion(&pairs)["a"]["b"], 1);
    }

    #[test]
    fn statistics() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 50.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0], 50.0), 1.5);
        let all: Vec<bool> = (0..50).map(|i| i % 2 == 0).collect();
        let (lo, hi) = bootstrap_ci(&all, 7);
        assert!(lo < 0.5 && hi > 0.5 && hi - lo < 0.4, "{lo} {hi}");
        assert_eq!(bootstrap_ci(&all, 7), (lo, hi));
        // Known values: 0 vs 6 discordant items gives p = 2/64.
        assert!((mcnemar(0, 6) - 2.0 / 64.0).abs() < 1e-12);
        assert_eq!(mcnemar(3, 3), 1.0);
        assert!(mcnemar(0, 2000) < 1e-100);
    }
}
