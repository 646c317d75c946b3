//! Ollama's Modelfile: parsing `FROM`, `ADAPTER`, `PARAMETER`, `TEMPLATE`, `SYSTEM`,
//! `MESSAGE` and `LICENSE`, and writing one back for `bantam show --modelfile`.

use crate::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Modelfile {
    pub from: Option<String>,
    /// `ADAPTER` lines: LoRA adapters in GGUF (a path, or a model of the store whose
    /// adapters are taken), applied in order over the base.
    pub adapters: Vec<String>,
    pub params: Map<String, Value>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub license: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The kind of value each parameter takes. Names are Ollama's.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Bool,
    /// Repeatable; collected into an array.
    Strings,
}

const PARAMETERS: &[(&str, Kind)] = &[
    ("num_ctx", Kind::Int),
    ("num_predict", Kind::Int),
    ("num_keep", Kind::Int),
    ("num_batch", Kind::Int),
    ("num_thread", Kind::Int),
    ("num_gpu", Kind::Int),
    ("seed", Kind::Int),
    ("top_k", Kind::Int),
    ("top_p", Kind::Float),
    ("min_p", Kind::Float),
    ("typical_p", Kind::Float),
    ("temperature", Kind::Float),
    ("repeat_last_n", Kind::Int),
    ("repeat_penalty", Kind::Float),
    ("presence_penalty", Kind::Float),
    ("frequency_penalty", Kind::Float),
    ("penalize_newline", Kind::Bool),
    ("stop", Kind::Strings),
];

impl Modelfile {
    pub fn parse(text: &str) -> Result<Modelfile, StoreError> {
        let mut mf = Modelfile::default();
        let mut lines = text.lines().enumerate().peekable();
        while let Some((i, raw)) = lines.next() {
            let line_no = i + 1;
            let err = |why: String| StoreError::Modelfile { line: line_no, why };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim_start();
            // A value may be """multi-line""", "quoted" or bare to the end of the line.
            let mut value = |rest: &str| -> Result<String, StoreError> {
                if let Some(body) = rest.strip_prefix("\"\"\"") {
                    if let Some(end) = body.find("\"\"\"") {
                        return Ok(body[..end].to_string());
                    }
                    let mut acc = body.to_string();
                    for (_, more) in lines.by_ref() {
                        acc.push('\n');
                        if let Some(end) = more.find("\"\"\"") {
                            acc.push_str(&more[..end]);
                            return Ok(acc);
                        }
                        acc.push_str(more);
                    }
                    return Err(err("unterminated \"\"\"".into()));
                }
                Ok(unquote(rest))
            };
            match cmd.to_ascii_uppercase().as_str() {
                "FROM" => mf.from = Some(value(rest)?).filter(|s| !s.is_empty()),
                "TEMPLATE" => mf.template = Some(value(rest)?),
                "SYSTEM" => mf.system = Some(value(rest)?),
                "LICENSE" => mf.license.push(value(rest)?),
                "ADAPTER" => {
                    let a = value(rest)?;
                    if a.is_empty() {
                        return Err(err("ADAPTER needs a path to a GGUF LoRA adapter".into()));
                    }
                    mf.adapters.push(a);
                }
                "PARAMETER" => {
                    let (name, v) = rest.split_once(char::is_whitespace).ok_or_else(|| err("PARAMETER needs a name and a value".into()))?;
                    let v = value(v.trim_start())?;
                    mf.set_param(&name.to_ascii_lowercase(), &v).map_err(err)?;
                }
                "MESSAGE" => {
                    let (role, v) = rest.split_once(char::is_whitespace).ok_or_else(|| err("MESSAGE needs a role and a message".into()))?;
                    let role = role.to_ascii_lowercase();
                    if !matches!(role.as_str(), "system" | "user" | "assistant") {
                        return Err(err(format!("MESSAGE role {role:?} is not one of system, user, assistant")));
                    }
                    mf.messages.push(Message { role, content: value(v.trim_start())? });
                }
                other => return Err(err(format!("unknown instruction {other:?} (expected FROM, PARAMETER, TEMPLATE, SYSTEM, MESSAGE, LICENSE or ADAPTER)"))),
            }
        }
        Ok(mf)
    }

    /// Set a parameter from its text, checking its name and type.
    pub fn set_param(&mut self, name: &str, text: &str) -> Result<(), String> {
        let kind = PARAMETERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| format!("unknown parameter {name:?}; known: {}", PARAMETERS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))?;
        let bad = |what: &str| format!("parameter {name} takes {what}, not {text:?}");
        let v = match kind {
            Kind::Int => Value::from(text.parse::<i64>().map_err(|_| bad("an integer"))?),
            Kind::Float => {
                serde_json::Number::from_f64(text.parse::<f64>().map_err(|_| bad("a number"))?).map(Value::Number).ok_or_else(|| bad("a finite number"))?
            }
            Kind::Bool => Value::from(text.parse::<bool>().map_err(|_| bad("true or false"))?),
            Kind::Strings => {
                let mut list = match self.params.remove(name) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                list.push(Value::from(text));
                Value::Array(list)
            }
        };
        self.params.insert(name.to_string(), v);
        Ok(())
    }

    /// Check parameters given as JSON (the /api/create `parameters` object) the same way.
    pub fn set_params_json(&mut self, params: &Map<String, Value>) -> Result<(), String> {
        for (k, v) in params {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                v => vec![v],
            };
            for item in items {
                let text = match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.set_param(k, &text)?;
            }
        }
        Ok(())
    }
}

fn unquote(s: &str) -> String {
    let s = s.trim_end();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"").replace("\\\\", "\\")
    } else {
        s.to_string()
    }
}

fn quote(s: &str) -> String {
    if s.contains('\n') || s.contains('"') {
        format!("\"\"\"{s}\"\"\"")
    } else {
        format!("\"{s}\"")
    }
}

/// `PARAMETER` lines' values, one `name value` per line, as `ollama show --parameters`.
pub fn render_parameters(params: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (k, v) in params {
        let values: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                Value::String(s) => quote(s),
                other => other.to_string(),
            };
            out.push_str(&format!("{k:<30} {text}\n"));
        }
    }
    out
}

/// A Modelfile that recreates a model: `from` is the model blob's path.
#[allow(clippy::too_many_arguments)] // one argument per Modelfile instruction
pub fn render(
    name: &str,
    from: &str,
    adapters: &[String],
    template: Option<&str>,
    system: Option<&str>,
    params: &Map<String, Value>,
    messages: &[Message],
    license: &[String],
) -> String {
    let mut out =
        format!("# Modelfile generated by \"bantam show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {name}\n\nFROM {from}\n");
    for a in adapters {
        out.push_str(&format!("ADAPTER {a}\n"));
    }
    if let Some(t) = template {
        out.push_str(&format!("TEMPLATE {}\n", quote(t)));
    }
    if let Some(s) = system {
        out.push_str(&format!("SYSTEM {}\n", quote(s)));
    }
    for line in render_parameters(params).lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        out.push_str(&format!("PARAMETER {k} {}\n", v.trim_start()));
    }
    for m in messages {
        out.push_str(&format!("MESSAGE {} {}\n", m.role, quote(&m.content)));
    }
    for l in license {
        out.push_str(&format!("LICENSE {}\n", quote(l)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_directive() {
        let mf = Modelfile::parse(
            "# a comment\nFROM smollm2:135m\nPARAMETER temperature 0.2\nPARAMETER stop \"<|im_end|>\"\nparameter stop END\nPARAMETER num_ctx 1024\n\
             SYSTEM \"\"\"You are terse.\nVery terse.\"\"\"\nTEMPLATE {{ .Prompt }}\nMESSAGE user hi\nMESSAGE assistant \"hello there\"\nLICENSE \"\"\"MIT\"\"\"\n",
        )
        .unwrap();
        assert_eq!(mf.from.as_deref(), Some("smollm2:135m"));
        assert_eq!(mf.params["temperature"], serde_json::json!(0.2));
        assert_eq!(mf.params["stop"], serde_json::json!(["<|im_end|>", "END"]));
        assert_eq!(mf.params["num_ctx"], serde_json::json!(1024));
        assert_eq!(mf.system.as_deref(), Some("You are terse.\nVery terse."));
        assert_eq!(mf.template.as_deref(), Some("{{ .Prompt }}"));
        assert_eq!(mf.messages.len(), 2);
        assert_eq!(mf.messages[1].content, "hello there");
        assert_eq!(mf.license, vec!["MIT".to_string()]);
        // What `render` writes parses back to the same settings.
        let text = render("x", "/blob", &mf.adapters, mf.template.as_deref(), mf.system.as_deref(), &mf.params, &mf.messages, &mf.license);
        let again = Modelfile::parse(&text).unwrap();
        assert_eq!(again.params, mf.params);
        assert_eq!(again.system, mf.system);
        assert_eq!(again.messages, mf.messages);
        assert_eq!(again.from.as_deref(), Some("/blob"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = |s: &str| Modelfile::parse(s).unwrap_err().to_string();
        assert_eq!(Modelfile::parse("FROM x\nADAPTER ./lora.gguf\nADAPTER \"b c.gguf\"").unwrap().adapters, ["./lora.gguf", "b c.gguf"]);
        assert!(e("FROM x\nADAPTER").contains("line 2: ADAPTER needs a path"));
        assert!(e("PARAMETER temprature 1").contains("unknown parameter \"temprature\""));
        assert!(e("PARAMETER num_ctx lots").contains("takes an integer"));
        assert!(e("FROBNICATE x").contains("unknown instruction"));
        assert!(e("SYSTEM \"\"\"open").contains("unterminated"));
        assert!(e("MESSAGE robot hi").contains("role"));
    }
}
