//! Codepoint classes for the pre-tokenizers, and the GPT-2 byte-to-unicode map.
//!
//! llama.cpp classifies codepoints with its own table (`unicode-data.cpp`, generated from
//! UnicodeData.txt by `scripts/gen-unicode-data.py`): `\p{L}` is the general category L*,
//! `\p{N}` is N*, and whitespace is the Unicode `White_Space` property. We get the same
//! classes from Rust: `char::is_numeric` is exactly N*, `char::is_whitespace` is exactly
//! `White_Space`, and the letter ranges come from the regex engine's `\p{L}` table, built
//! once per process.

use std::sync::OnceLock;

/// The classes llama.cpp's hand-written splitters look at (`unicode_cpt_flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CptFlags {
    pub letter: bool,
    pub number: bool,
    pub whitespace: bool,
    /// False only for "no codepoint" (a position past the end of the current segment). In
    /// llama.cpp every real codepoint has a non-zero flag word, unassigned ones included
    /// (`flags.as_uint() != 0`).
    pub defined: bool,
}

impl CptFlags {
    /// The flags of a position outside the segment (llama.cpp's `unicode_cpt_flags{}`).
    pub const NONE: CptFlags = CptFlags { letter: false, number: false, whitespace: false, defined: false };
}

/// The classes of one codepoint.
pub(crate) fn flags(c: char) -> CptFlags {
    if c.is_ascii() {
        return CptFlags {
            letter: c.is_ascii_alphabetic(),
            number: c.is_ascii_digit(),
            // White_Space in ASCII: \t \n \v \f \r and space (not 0x1C..0x1F).
            whitespace: matches!(c, '\t' | '\n' | '\x0B' | '\x0C' | '\r' | ' '),
            defined: true,
        };
    }
    CptFlags { letter: is_letter(c), number: c.is_numeric(), whitespace: c.is_whitespace(), defined: true }
}

/// `\p{L}` for a non-ASCII codepoint: binary search in the letter ranges.
fn is_letter(c: char) -> bool {
    let ranges = letter_ranges();
    let cp = c as u32;
    // Index of the first range whose start is > cp; the candidate is the one before it.
    let i = ranges.partition_point(|&(start, _)| start <= cp);
    i > 0 && cp <= ranges[i - 1].1
}

/// Inclusive ranges of non-ASCII codepoints in general category L, ascending.
fn letter_ranges() -> &'static [(u32, u32)] {
    static RANGES: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    RANGES.get_or_init(|| {
        // Every non-ASCII scalar value in order; the regex engine finds the letter runs.
        let all: String = (0x80u32..=0x10FFFF).filter_map(char::from_u32).collect();
        let re = fancy_regex::Regex::new(r"\p{L}+").expect("constant regex compiles");
        let mut ranges = Vec::new();
        for m in re.find_iter(&all).flatten() {
            let s = m.as_str();
            if let (Some(first), Some(last)) = (s.chars().next(), s.chars().next_back()) {
                ranges.push((first as u32, last as u32));
            }
        }
        ranges
    })
}

/// GPT-2's reversible map from bytes to printable codepoints (`bytes_to_unicode` in
/// OpenAI's encoder.py; `unicode_byte_to_utf8_map` in llama.cpp): printable Latin-1 bytes
/// map to themselves, the other 68 to U+0100.. in byte order.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_MAP.get_or_init(build_byte_map).0[b as usize]
}

/// The inverse of [`byte_to_char`]; `None` for codepoints outside the map.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let inv = &BYTE_MAP.get_or_init(build_byte_map).1;
    inv.get(c as usize).copied().flatten()
}

type ByteMap = ([char; 256], Vec<Option<u8>>);
static BYTE_MAP: OnceLock<ByteMap> = OnceLock::new();

fn build_byte_map() -> ByteMap {
    let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut fwd = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let cp = if printable(b) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        fwd[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    let mut inv = vec![None; 256 + 68];
    for (b, c) in fwd.iter().enumerate() {
        if let Some(slot) = inv.get_mut(*c as usize) {
            *slot = Some(b as u8);
        }
    }
    (fwd, inv)
}

/// Byte-level encoding of one pre-tokenized word: every UTF-8 byte becomes its mapped
/// codepoint (`unicode_byte_encoding_process` in llama.cpp).
pub(crate) fn byte_encode(word: &str, out: &mut String) {
    out.clear();
    for &b in word.as_bytes() {
        out.push(byte_to_char(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(b' '), 'Ġ'); // U+0120: space is the 33rd unprintable byte
        assert_eq!(byte_to_char(b'\n'), 'Ċ'); // U+010A
        assert_eq!(byte_to_char(0x00), '\u{100}');
        assert_eq!(byte_to_char(0xAD), '\u{143}'); // soft hyphen is the last one mapped
        assert_eq!(byte_to_char(0xE4), 'ä');
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('中'), None);
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn classes() {
        assert!(flags('é').letter && flags('中').letter && flags('ー').letter && flags('Я').letter);
        assert!(!flags('\u{301}').letter); // combining acute: a mark, not a letter
        assert!(!flags('\u{93E}').letter); // Devanagari vowel sign AA: Mc (is_alphabetic says yes)
        assert!(flags('²').number && flags('٣').number && flags('Ⅻ').number);
        assert!(flags('\u{A0}').whitespace && flags('\u{3000}').whitespace && flags('\u{85}').whitespace);
        assert!(!flags('\u{200B}').whitespace && !flags('\x1C').whitespace);
        assert!(flags('😀').defined && !flags('😀').letter);
    }
}
