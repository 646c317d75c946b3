//! The part of Go's text/template that Ollama prompt templates use for /api/generate's
//! `template` field: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`,
//! `{{ if .X }}…{{ else }}…{{ end }}`, and the `{{-` / `-}}` whitespace trims. Anything
//! else is refused with a message rather than rendered wrongly.

use crate::error::ApiError;

pub struct Vars<'a> {
    pub system: &'a str,
    pub prompt: &'a str,
    pub response: &'a str,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Result<&str, ApiError> {
        match name {
            ".System" => Ok(self.system),
            ".Prompt" => Ok(self.prompt),
            ".Response" => Ok(self.response),
            other => Err(unsupported(other)),
        }
    }
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("template: {{{{ {what} }}}} is not supported (only .System, .Prompt, .Response, if/else/end)"))
}

enum Piece<'t> {
    Text(&'t str),
    Action(&'t str),
}

/// Split into text and actions, applying trim markers.
fn lex(src: &str) -> Result<Vec<Piece<'_>>, ApiError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| ApiError::bad_request("template: unclosed {{"))?;
        let mut inner = &after[..close];
        if let Some(s) = inner.strip_prefix('-') {
            text = text.trim_end();
            inner = s;
        }
        trim_next = false;
        if let Some(s) = inner.strip_suffix('-') {
            trim_next = true;
            inner = s;
        }
        out.push(Piece::Text(text));
        out.push(Piece::Action(inner.trim()));
        rest = &after[close + 2..];
    }
    out.push(Piece::Text(if trim_next { rest.trim_start() } else { rest }));
    Ok(out)
}

pub fn render(src: &str, vars: &Vars) -> Result<String, ApiError> {
    let pieces = lex(src)?;
    let mut out = String::new();
    // Each open `if`: (the branch being rendered is live, the enclosing context is live).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let live = |stack: &Vec<(bool, bool)>| stack.last().is_none_or(|&(branch, outer)| branch && outer);
    for p in pieces {
        match p {
            Piece::Text(t) => {
                if live(&stack) {
                    out.push_str(t);
                }
            }
            Piece::Action(a) => {
                if let Some(cond) = a.strip_prefix("if ") {
                    let outer = live(&stack);
                    stack.push((!vars.get(cond.trim())?.is_empty(), outer));
                } else if a == "else" {
                    let top = stack.last_mut().ok_or_else(|| ApiError::bad_request("template: else without if"))?;
                    top.0 = !top.0;
                } else if a == "end" {
                    stack.pop().ok_or_else(|| ApiError::bad_request("template: end without if"))?;
                } else if a.starts_with('.') {
                    if live(&stack) {
                        out.push_str(vars.get(a)?);
                    }
                } else {
                    return Err(unsupported(a));
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(ApiError::bad_request("template: if without end"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Vars = Vars { system: "be brief", prompt: "hi", response: "" };

    #[test]
    fn chatml_style_template() {
        let t = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(render(t, &V).unwrap(), "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let no_system = Vars { system: "", ..V };
        assert_eq!(render(t, &no_system).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn else_and_trims() {
        assert_eq!(render("a {{- if .Response }}R{{ else }}none{{ end -}}  b", &V).unwrap(), "anoneb");
    }

    #[test]
    fn unsupported_actions_are_refused() {
        assert!(render("{{ range .Messages }}x{{ end }}", &V).is_err());
        assert!(render("{{ .Tools }}", &V).is_err());
        assert!(render("{{ if .Prompt }}", &V).is_err());
        assert!(render("{{ .Prompt ", &V).is_err());
    }
}
