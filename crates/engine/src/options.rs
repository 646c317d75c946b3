//! Generation options in layers. A request, a Modelfile's `PARAMETER` lines and the
//! command line each give some options; [`Options::over`] lays one over another (the upper
//! layer's set values win) and [`Options::params`] fills what is still unset from the
//! built-in defaults (Ollama's) and checks every field. This is the only place where
//! options merge, so `run`, the Ollama routes and the OpenAI routes agree on what a
//! request means.

use crate::generate::GenerateParams;
use crate::sampler::{SamplerError, SamplingParams};
use crate::template::ChatMessage;
use serde_json::Value;

/// Generation options, each possibly unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// -1: the whole history; 0: penalties off.
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// A negative seed means "random", as in Ollama.
    pub seed: Option<i64>,
    /// -1 (and Ollama's -2): until the context is full.
    pub num_predict: Option<i64>,
    /// The request's own context limit, at most the slot's.
    pub num_ctx: Option<i64>,
    pub stop: Option<Vec<String>>,
}

/// What the layers resolve to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub params: GenerateParams,
    /// The request's own context limit (`None`: the slot's).
    pub num_ctx: Option<usize>,
}

impl Options {
    /// `self` over `lower`: each field set here wins, the rest come from `lower`.
    pub fn over(&self, lower: &Options) -> Options {
        Options {
            temperature: self.temperature.or(lower.temperature),
            top_k: self.top_k.or(lower.top_k),
            top_p: self.top_p.or(lower.top_p),
            min_p: self.min_p.or(lower.min_p),
            repeat_penalty: self.repeat_penalty.or(lower.repeat_penalty),
            repeat_last_n: self.repeat_last_n.or(lower.repeat_last_n),
            presence_penalty: self.presence_penalty.or(lower.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(lower.frequency_penalty),
            seed: self.seed.or(lower.seed),
            num_predict: self.num_predict.or(lower.num_predict),
            num_ctx: self.num_ctx.or(lower.num_ctx),
            stop: self.stop.clone().filter(|s| !s.is_empty()).or_else(|| lower.stop.clone()),
        }
    }

    /// Options from a Modelfile's PARAMETER lines (a JSON object; a repeated parameter such
    /// as `stop` is an array). Unknown keys and values of the wrong type are ignored.
    pub fn from_parameters(map: &serde_json::Map<String, Value>) -> Options {
        let f = |k: &str| map.get(k).and_then(Value::as_f64).map(|v| v as f32);
        let i = |k: &str| map.get(k).and_then(|v| v.as_i64().or_else(|| v.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64)));
        let stop = match map.get("stop") {
            Some(Value::Array(a)) => Some(a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()),
            Some(Value::String(s)) => Some(vec![s.clone()]),
            _ => None,
        };
        Options {
            temperature: f("temperature"),
            top_k: i("top_k"),
            top_p: f("top_p"),
            min_p: f("min_p"),
            repeat_penalty: f("repeat_penalty"),
            repeat_last_n: i("repeat_last_n"),
            presence_penalty: f("presence_penalty"),
            frequency_penalty: f("frequency_penalty"),
            seed: i("seed"),
            num_predict: i("num_predict"),
            num_ctx: i("num_ctx"),
            stop,
        }
    }

    /// Fill what is unset from the built-in defaults (Ollama's; a random seed) and check
    /// every field. The error names the first bad field.
    pub fn params(&self) -> Result<Resolved, SamplerError> {
        fn bad(field: &'static str, value: impl ToString, expected: &'static str) -> SamplerError {
            SamplerError::InvalidParam { field, value: value.to_string(), expected }
        }
        let d = SamplingParams::default();
        let top_k = match self.top_k {
            None => d.top_k,
            Some(k) => usize::try_from(k).map_err(|_| bad("top_k", k, "a number >= 0"))?,
        };
        let repeat_last_n = match self.repeat_last_n {
            None => d.repeat_last_n,
            Some(n) => i32::try_from(n).ok().filter(|&n| n >= -1).ok_or_else(|| bad("repeat_last_n", n, "-1 (whole context), 0 (off) or a window size"))?,
        };
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            repeat_last_n,
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: self.seed.filter(|&s| s >= 0).map_or(d.seed, |s| s as u64),
        };
        sampling.validate()?;
        let num_predict = match self.num_predict {
            None | Some(-1) | Some(-2) => None,
            Some(n) if n >= 0 => Some(n as usize),
            Some(n) => return Err(bad("num_predict", n, "a number >= 0, or -1 for no limit")),
        };
        let num_ctx = match self.num_ctx {
            None => None,
            Some(n) if n > 0 => Some(n as usize),
            Some(n) => return Err(bad("num_ctx", n, "a number > 0")),
        };
        Ok(Resolved { params: GenerateParams { sampling, num_predict, stop: self.stop.clone().unwrap_or_default() }, num_ctx })
    }
}

/// What a model brings besides its weights: its Modelfile's settings, given to the engine
/// when the model loads. Whoever resolves model names (the store) makes it; the engine only
/// applies it.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub options: Options,
    /// The SYSTEM message used when a conversation has none.
    pub system: Option<String>,
    /// MESSAGE lines: they open every conversation.
    pub messages: Vec<ChatMessage>,
    /// A TEMPLATE: Jinja syntax (`{% … %}`) replaces the GGUF's chat template; Ollama's Go
    /// syntax is kept for `/api/generate` to render.
    pub template: Option<String>,
    /// ADAPTER lines (and `run --adapter`): LoRA files with their scales, in order.
    pub adapters: Vec<(std::path::PathBuf, f32)>,
}

impl Defaults {
    /// The TEMPLATE when it is in Ollama's Go syntax.
    pub fn go_template(&self) -> Option<&str> {
        self.template.as_deref().filter(|t| !t.contains("{%"))
    }

    /// A conversation with the model's SYSTEM (unless it has its own) and MESSAGE lines first.
    pub fn open_conversation(&self, messages: &mut Vec<ChatMessage>) {
        let mut head: Vec<ChatMessage> = Vec::new();
        if let Some(s) = self.system.as_deref().filter(|_| !messages.iter().any(|m| m.role == "system")) {
            head.push(ChatMessage::new("system", s));
        }
        head.extend(self.messages.iter().cloned());
        messages.splice(0..0, head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_over_modelfile_over_builtin() {
        let mut map = serde_json::Map::new();
        map.insert("temperature".into(), Value::from(0.2));
        map.insert("top_k".into(), Value::from(7));
        map.insert("stop".into(), serde_json::json!(["<|end|>", "###"]));
        let modelfile = Options::from_parameters(&map);
        let request = Options { temperature: Some(0.5), seed: Some(11), ..Options::default() };
        let r = request.over(&modelfile).params().unwrap();
        assert_eq!(r.params.sampling.temperature, 0.5);
        assert_eq!(r.params.sampling.top_k, 7);
        assert_eq!(r.params.sampling.top_p, 0.9);
        assert_eq!(r.params.sampling.seed, 11);
        assert_eq!(r.params.stop, ["<|end|>", "###"]);
        // An empty stop list in a request does not hide the model's.
        let r = Options { stop: Some(Vec::new()), ..Options::default() }.over(&modelfile).params().unwrap();
        assert_eq!(r.params.stop.len(), 2);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = Options { top_k: Some(-1), ..Options::default() }.params().unwrap_err();
        assert!(matches!(e, SamplerError::InvalidParam { field: "top_k", .. }), "{e:?}");
        let e = Options { num_predict: Some(-3), ..Options::default() }.params().unwrap_err();
        assert!(matches!(e, SamplerError::InvalidParam { field: "num_predict", .. }), "{e:?}");
        let e = Options { num_ctx: Some(0), ..Options::default() }.params().unwrap_err();
        assert!(matches!(e, SamplerError::InvalidParam { field: "num_ctx", .. }), "{e:?}");
        assert_eq!(Options { num_predict: Some(-1), ..Options::default() }.params().unwrap().params.num_predict, None);
    }
}
