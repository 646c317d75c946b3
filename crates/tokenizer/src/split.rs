//! llama.cpp's hand-written scanners for the GPT-2 and Llama-3 split patterns.
//!
//! llama.cpp does not run these two patterns as regexes: `unicode_regex_split_custom_gpt2`
//! and `unicode_regex_split_custom_llama3` (src/unicode.cpp) walk the codepoints by hand.
//! They agree with the regexes on ordinary text but not everywhere (for example the GPT-2
//! scanner accepts a trailing lone whitespace with an implicit `\s+`, and the Llama-3
//! scanner's punctuation branch tests the flags of the *current* codepoint where the regex
//! would test the next one), so we port the scanners, quirks included, rather than use the
//! patterns. Positions are codepoint indices inside one segment; the output is byte ranges.

use std::ops::Range;

use crate::unicode::{flags, CptFlags};

/// Codepoints of one segment with their byte offsets (`offs[n]` is the segment length).
struct Cpts {
    chars: Vec<char>,
    offs: Vec<usize>,
}

impl Cpts {
    fn new(s: &str) -> Cpts {
        let mut chars = Vec::with_capacity(s.len());
        let mut offs = Vec::with_capacity(s.len() + 1);
        for (i, c) in s.char_indices() {
            chars.push(c);
            offs.push(i);
        }
        offs.push(s.len());
        Cpts { chars, offs }
    }
    fn len(&self) -> usize {
        self.chars.len()
    }
    /// llama.cpp's `_get_cpt`: `None` stands for `OUT_OF_RANGE`.
    fn cpt(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }
    /// llama.cpp's `_get_flags`: all-false past the end.
    fn flags(&self, pos: usize) -> CptFlags {
        self.chars.get(pos).map_or(CptFlags::NONE, |&c| flags(c))
    }
}

/// llama.cpp's `_add_token`: emit `[prev_end, end)` if non-empty, return its length.
struct Emitter<'a> {
    cpts: &'a Cpts,
    prev_end: usize,
    out: &'a mut Vec<Range<usize>>,
}

impl Emitter<'_> {
    fn add(&mut self, end: usize) -> usize {
        let len = end.saturating_sub(self.prev_end);
        if len > 0 {
            self.out.push(self.cpts.offs[self.prev_end]..self.cpts.offs[end]);
        }
        self.prev_end = end;
        len
    }
}

fn is_punct_like(f: CptFlags) -> bool {
    !(f.whitespace || f.letter || f.number) && f.defined
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` the way
/// `unicode_regex_split_custom_gpt2` scans it.
pub(crate) fn gpt2(s: &str, out: &mut Vec<Range<usize>>) {
    let cp = Cpts::new(s);
    let n = cp.len();
    let mut em = Emitter { cpts: &cp, prev_end: 0, out };
    let mut pos = 0;
    while pos < n {
        let c = cp.chars[pos];
        let f = cp.flags(pos);

        // 's|'t|'re|'ve|'m|'ll|'d
        if c == '\'' && pos + 1 < n {
            let next = cp.chars[pos + 1];
            if matches!(next, 's' | 't' | 'm' | 'd') {
                pos += em.add(pos + 2);
                continue;
            }
            if pos + 2 < n {
                let next2 = cp.chars[pos + 2];
                if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                    pos += em.add(pos + 3);
                    continue;
                }
            }
        }

        let mut f2 = if c == ' ' { cp.flags(pos + 1) } else { f };
        // <space>?\p{L}+
        if f2.letter {
            pos += usize::from(c == ' ');
            while f2.letter {
                pos += 1;
                f2 = cp.flags(pos);
            }
            em.add(pos);
            continue;
        }
        // <space>?\p{N}+
        if f2.number {
            pos += usize::from(c == ' ');
            while f2.number {
                pos += 1;
                f2 = cp.flags(pos);
            }
            em.add(pos);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+
        if is_punct_like(f2) {
            pos += usize::from(c == ' ');
            while is_punct_like(f2) {
                pos += 1;
                f2 = cp.flags(pos);
            }
            em.add(pos);
            continue;
        }

        let mut n_ws = 0;
        while cp.flags(pos + n_ws).whitespace {
            n_ws += 1;
        }
        // \s+(?!\S): leave the last whitespace for the next word
        if n_ws > 1 && cp.cpt(pos + n_ws).is_some() {
            pos += n_ws - 1;
            em.add(pos);
            continue;
        }
        // \s+ (not in the pattern, but the scanner has it)
        if n_ws > 0 {
            pos += n_ws;
            em.add(pos);
            continue;
        }
        // no match: the codepoint is a word by itself
        pos += 1;
        em.add(pos);
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// the way `unicode_regex_split_custom_llama3` scans it.
pub(crate) fn llama3(s: &str, out: &mut Vec<Range<usize>>) {
    let cp = Cpts::new(s);
    let n = cp.len();
    let mut em = Emitter { cpts: &cp, prev_end: 0, out };
    let lower = |c: Option<char>| c.map(|c| c.to_ascii_lowercase());
    let is_rn = |c: Option<char>| matches!(c, Some('\r' | '\n'));
    let mut pos = 0;
    while pos < n {
        let c = cp.chars[pos];
        let f = cp.flags(pos);

        // (?i:'s|'t|'re|'ve|'m|'ll|'d). llama.cpp lowercases with unicode_tolower; the only
        // non-ASCII codepoints that lowercase into ASCII (U+212A, U+0130) give k and i,
        // which no contraction uses, so ASCII lowercasing is the same.
        if c == '\'' && pos + 1 < n {
            let next = lower(cp.cpt(pos + 1));
            if matches!(next, Some('s' | 't' | 'm' | 'd')) {
                pos += em.add(pos + 2);
                continue;
            }
            if pos + 2 < n {
                let next2 = lower(cp.cpt(pos + 2));
                if matches!((next, next2), (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))) {
                    pos += em.add(pos + 3);
                    continue;
                }
            }
        }

        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(c == '\r' || c == '\n' || f.number) && (f.letter || cp.flags(pos + 1).letter) {
            pos += 1;
            while cp.flags(pos).letter {
                pos += 1;
            }
            em.add(pos);
            continue;
        }

        // \p{N}{1,3}
        if f.number {
            let mut ini = pos;
            while cp.flags(pos).number {
                pos += 1;
                if pos - ini >= 3 {
                    em.add(pos);
                    ini = pos;
                }
            }
            em.add(pos);
            continue;
        }

        // <space>?[^\s\p{L}\p{N}]+[\r\n]*  (llama.cpp tests `flags`, not `flags2`, for
        // "is a codepoint": a lone trailing space takes this branch)
        let mut f2 = if c == ' ' { cp.flags(pos + 1) } else { f };
        if !(f2.whitespace || f2.letter || f2.number) && f.defined {
            pos += usize::from(c == ' ');
            while is_punct_like(f2) {
                pos += 1;
                f2 = cp.flags(pos);
            }
            while is_rn(cp.cpt(pos)) {
                pos += 1;
            }
            em.add(pos);
            continue;
        }

        let mut n_ws = 0;
        let mut last_end_rn = None;
        while cp.flags(pos + n_ws).whitespace {
            if is_rn(cp.cpt(pos + n_ws)) {
                last_end_rn = Some(pos + n_ws + 1);
            }
            n_ws += 1;
        }
        // \s*[\r\n]+
        if let Some(end) = last_end_rn {
            pos = end;
            em.add(pos);
            continue;
        }
        // \s+(?!\S)
        if n_ws > 1 && cp.cpt(pos + n_ws).is_some() {
            pos += n_ws - 1;
            em.add(pos);
            continue;
        }
        // \s+
        if n_ws > 0 {
            pos += n_ws;
            em.add(pos);
            continue;
        }
        pos += 1;
        em.add(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: fn(&str, &mut Vec<Range<usize>>), s: &str) -> Vec<String> {
        let mut out = Vec::new();
        f(s, &mut out);
        out.into_iter().map(|r| s[r].to_string()).collect()
    }

    /// The same pattern run as a regex, for comparison on ordinary text.
    fn regex(pattern: &str, s: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(pattern).unwrap();
        let mut out = Vec::new();
        let mut last = 0;
        for m in re.find_iter(s) {
            let m = m.unwrap();
            if m.start() > last {
                out.push(s[last..m.start()].to_string());
            }
            out.push(m.as_str().to_string());
            last = m.end();
        }
        if last < s.len() {
            out.push(s[last..].to_string());
        }
        out
    }

    const SAMPLES: &[&str] = &[
        "Hello, world! How are you today?",
        "don't I'm you're we'll they've she'd it's",
        "   three leading spaces and trailing   ",
        "line one\nline two\n\n  line four\r\n",
        "def foo(x):\n    return x * 2\n",
        "The year 2024 had 366 days; 1,000,000 people paid $19.99 each.",
        "你好，世界！ Привет, мир! café ∑ x² ≤ √π",
        "\ttab\tseparated\tvalues\n",
    ];

    #[test]
    fn gpt2_scanner_agrees_with_regex_on_ordinary_text() {
        for s in SAMPLES {
            assert_eq!(run(gpt2, s), regex(crate::pretokenize::GPT2, s), "{s:?}");
        }
    }

    #[test]
    fn llama3_scanner_agrees_with_regex_on_ordinary_text() {
        for s in SAMPLES {
            assert_eq!(run(llama3, s), regex(crate::pretokenize::LLAMA3, s), "{s:?}");
        }
    }

    #[test]
    fn gpt2_examples() {
        assert_eq!(run(gpt2, "Hello  world's 42!"), ["Hello", " ", " world", "'s", " 42", "!"]);
        assert_eq!(run(gpt2, "a \n"), ["a", " \n"]);
        assert_eq!(run(gpt2, ""), Vec::<String>::new());
    }

    #[test]
    fn llama3_examples() {
        assert_eq!(run(llama3, "12345 DON'T\n\nx"), ["123", "45", " DON", "'T", "\n\n", "x"]);
        assert_eq!(run(llama3, "a ..\n b"), ["a", " ..\n", " b"]);
    }
}
