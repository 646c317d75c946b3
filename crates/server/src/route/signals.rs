//! What a cascade decides from: the local answer's own confidence, read off the
//! distributions the engine sampled from (no extra model call), and how the answer ended.

use super::config::Thresholds;
use engine::tools::ToolCall;
use engine::Confidence;
use serde_json::Value;

/// Confidence of one answer so far.
#[derive(Debug, Clone)]
pub struct Signals {
    /// Tokens over which entropy and margin are read (the route's `decide_tokens`).
    first: usize,
    n: usize,
    sum_logprob: f64,
    min_logprob: f32,
    sum_entropy_first: f64,
    n_first: usize,
    min_margin_first: f32,
    /// Cut by the token limit.
    pub length: bool,
    /// Must be JSON or a tool call, and is not.
    pub parse_failure: bool,
    /// Self-consistency: the share of sampled answers that say the same.
    pub agreement: Option<f32>,
}

impl Signals {
    pub fn new(first: usize) -> Signals {
        Signals {
            first,
            n: 0,
            sum_logprob: 0.0,
            min_logprob: 0.0,
            sum_entropy_first: 0.0,
            n_first: 0,
            min_margin_first: f32::INFINITY,
            length: false,
            parse_failure: false,
            agreement: None,
        }
    }

    pub fn push(&mut self, c: Confidence) {
        self.sum_logprob += c.logprob as f64;
        self.min_logprob = if self.n == 0 { c.logprob } else { self.min_logprob.min(c.logprob) };
        self.n += 1;
        if self.n_first < self.first {
            self.sum_entropy_first += c.entropy as f64;
            self.min_margin_first = self.min_margin_first.min(c.margin);
            self.n_first += 1;
        }
    }

    /// Tokens seen.
    pub fn tokens(&self) -> usize {
        self.n
    }

    pub fn mean_logprob(&self) -> Option<f32> {
        (self.n > 0).then(|| (self.sum_logprob / self.n as f64) as f32)
    }

    pub fn mean_entropy(&self) -> Option<f32> {
        (self.n_first > 0).then(|| (self.sum_entropy_first / self.n_first as f64) as f32)
    }

    /// The first threshold crossed, as the reason the ledger and the response give.
    pub fn crossed(&self, t: &Thresholds) -> Option<String> {
        if t.on_parse_failure && self.parse_failure {
            return Some("parse_failure".into());
        }
        if t.on_length && self.length {
            return Some("length".into());
        }
        if let (Some(min), Some(v)) = (t.min_mean_logprob, self.mean_logprob()) {
            if v < min {
                return Some(format!("mean_logprob {v:.3} < {min}"));
            }
        }
        if let Some(min) = t.min_token_logprob.filter(|_| self.n > 0) {
            if self.min_logprob < min {
                return Some(format!("min_token_logprob {:.3} < {min}", self.min_logprob));
            }
        }
        if let (Some(max), Some(v)) = (t.max_entropy, self.mean_entropy()) {
            if v > max {
                return Some(format!("entropy {v:.3} > {max}"));
            }
        }
        if let Some(min) = t.min_margin.filter(|_| self.n_first > 0) {
            if self.min_margin_first < min {
                return Some(format!("margin {:.3} < {min}", self.min_margin_first));
            }
        }
        if let (Some(min), Some(a)) = (t.min_agreement, self.agreement) {
            if a < min {
                return Some(format!("agreement {a:.2} < {min}"));
            }
        }
        None
    }

    /// The figures, for the calibration's records.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tokens": self.n,
            "mean_logprob": self.mean_logprob(),
            "min_logprob": (self.n > 0).then_some(self.min_logprob),
            "mean_entropy": self.mean_entropy(),
            "min_margin": (self.n_first > 0 && self.min_margin_first.is_finite()).then_some(self.min_margin_first),
            "length": self.length,
            "parse_failure": self.parse_failure,
            "agreement": self.agreement,
        })
    }
}

/// What self-consistency compares: a tool call by its names and arguments, JSON as a value
/// (key order and spacing do not count), other text with its whitespace collapsed, case
/// folded and a final full stop dropped.
pub fn answer_key(text: &str, calls: Option<&[ToolCall]>) -> String {
    if let Some(calls) = calls {
        let calls: Vec<String> = calls.iter().map(|c| format!("{}({})", c.name, canonical(&c.arguments))).collect();
        return format!("calls:{}", calls.join(";"));
    }
    let t = text.trim();
    if t.starts_with(['{', '[']) {
        if let Ok(v) = serde_json::from_str::<Value>(t) {
            return format!("json:{}", canonical(&v));
        }
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    let s = words.join(" ").to_lowercase();
    s.strip_suffix('.').unwrap_or(&s).to_string()
}

/// JSON with every object's keys in order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[k.as_str()]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        v => v.to_string(),
    }
}

/// The share of `samples` whose key is `answer`'s; `None` without samples.
pub fn agreement(answer: &str, samples: &[String]) -> Option<f32> {
    (!samples.is_empty()).then(|| samples.iter().filter(|s| *s == answer).count() as f32 / samples.len() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(logprob: f32, entropy: f32, margin: f32) -> Confidence {
        Confidence { logprob, entropy, margin }
    }

    #[test]
    fn thresholds_cross_in_order_and_only_when_set() {
        let mut s = Signals::new(2);
        for x in [c(-0.1, 0.5, 3.0), c(-0.3, 1.5, 0.2), c(-4.0, 9.0, 0.0)] {
            s.push(x);
        }
        // Entropy and margin read the first two tokens only.
        assert_eq!(s.mean_entropy(), Some(1.0));
        assert!((s.mean_logprob().unwrap() + 4.4 / 3.0).abs() < 1e-6);
        let off = Thresholds::default();
        assert_eq!(s.crossed(&off), None);
        let t = |f: fn(&mut Thresholds)| {
            let mut t = Thresholds::default();
            f(&mut t);
            s.crossed(&t)
        };
        assert!(t(|t| t.min_mean_logprob = Some(-1.0)).unwrap().starts_with("mean_logprob"));
        assert_eq!(t(|t| t.min_mean_logprob = Some(-2.0)), None);
        assert!(t(|t| t.min_token_logprob = Some(-3.0)).unwrap().starts_with("min_token_logprob"));
        assert!(t(|t| t.max_entropy = Some(0.9)).unwrap().starts_with("entropy"));
        assert_eq!(t(|t| t.max_entropy = Some(1.1)), None);
        assert!(t(|t| t.min_margin = Some(0.5)).unwrap().starts_with("margin"));
        let mut s = Signals::new(4);
        s.parse_failure = true;
        s.length = true;
        assert_eq!(s.crossed(&Thresholds { on_parse_failure: true, ..Thresholds::default() }).as_deref(), Some("parse_failure"));
        s.agreement = Some(0.25);
        assert_eq!(s.crossed(&Thresholds { on_parse_failure: false, on_length: true, ..Thresholds::default() }).as_deref(), Some("length"));
    }

    #[test]
    fn agreement_compares_what_answers_say() {
        let t = Thresholds { on_parse_failure: false, min_agreement: Some(0.5), ..Thresholds::default() };
        let mut s = Signals::new(4);
        s.agreement = Some(0.25);
        assert_eq!(s.crossed(&t).as_deref(), Some("agreement 0.25 < 0.5"));
        s.agreement = Some(0.5);
        assert_eq!(s.crossed(&t), None);
        // Off unless set.
        s.agreement = Some(0.0);
        assert_eq!(s.crossed(&Thresholds { on_parse_failure: false, ..Thresholds::default() }), None);

        assert_eq!(answer_key("  The  answer is\n42. ", None), answer_key("the answer is 42", None));
        assert_ne!(answer_key("41", None), answer_key("42", None));
        assert_eq!(answer_key("{\"b\": [1, {\"y\":2,\"x\":1}], \"a\": \"X\"}", None), answer_key("{\"a\":\"X\",\"b\":[1,{\"x\":1,\"y\":2}]}", None));
        assert_ne!(answer_key("{\"a\": \"X\"}", None), answer_key("{\"a\": \"x\"}", None));
        let call = |n: &str, a: Value| vec![ToolCall { name: n.into(), arguments: a }];
        let (c1, c2) = (call("f", serde_json::json!({"a": 1, "b": 2})), call("f", serde_json::json!({"b": 2, "a": 1})));
        assert_eq!(answer_key("", Some(&c1)), answer_key("ignored", Some(&c2)));
        assert_ne!(answer_key("", Some(&c1)), answer_key("", Some(&call("g", serde_json::json!({"a": 1, "b": 2})))));
        let samples: Vec<String> = ["yes", "no", "yes", "yes"].iter().map(|s| answer_key(s, None)).collect();
        assert_eq!(agreement(&answer_key("Yes.", None), &samples), Some(0.75));
        assert_eq!(agreement("x", &[]), None);
    }
}
