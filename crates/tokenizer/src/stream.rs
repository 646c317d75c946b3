//! Streaming detokenization: text out as soon as it is complete UTF-8.

use crate::Tokenizer;

/// Turns token ids pushed one at a time into text, never splitting a UTF-8 sequence.
///
/// A token's piece can end in the middle of a multi-byte character (byte-fallback tokens,
/// byte-level BPE pieces of emoji or CJK). Such a tail is held back until the bytes that
/// complete it arrive. Bytes that can never become valid UTF-8 (an invalid lead byte, a
/// sequence cut short by a new character) are emitted as U+FFFD, as
/// `String::from_utf8_lossy` would; [`StreamDecoder::finish`] flushes a held tail the same
/// way. The concatenated output equals [`Tokenizer::decode`] of all the ids.
///
/// ```no_run
/// # let tok: tokenizer::Tokenizer = unimplemented!();
/// let mut stream = tokenizer::StreamDecoder::new(false);
/// let mut text = String::new();
/// for id in [9259, 1902] {
///     text += &stream.push(&tok, id);
/// }
/// text += &stream.finish();
/// ```
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    special: bool,
    /// Bytes of an incomplete UTF-8 sequence at the end of what was pushed.
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// `special`: render control tokens as their text (see [`Tokenizer::token_to_piece`]).
    pub fn new(special: bool) -> Self {
        StreamDecoder { special, pending: Vec::new() }
    }

    /// Add one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.piece(id, self.special));
        self.take_complete()
    }

    /// Remove and return the longest prefix of `pending` that will not change with more
    /// bytes: valid UTF-8, with invalid bytes replaced; an incomplete tail stays.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            rest = after; // incomplete sequence at the end: wait
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                    }
                }
            }
        }
        let keep = self.pending.len() - rest.len();
        self.pending.drain(..keep);
        out
    }

    /// Flush what is held back (an unfinished sequence becomes U+FFFD) and reset.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed raw pieces through the UTF-8 logic of `push`.
    fn feed(pieces: &[&[u8]]) -> Vec<String> {
        let mut d = StreamDecoder::new(false);
        let mut out = Vec::new();
        for p in pieces {
            d.pending.extend_from_slice(p);
            out.push(d.take_complete());
        }
        out.push(d.finish());
        out
    }

    #[test]
    fn holds_split_characters() {
        let euro = "€".as_bytes();
        let out = feed(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(out, ["a", "", "", "€", "b", ""]);
    }

    #[test]
    fn invalid_bytes_are_replaced_at_once() {
        let out = feed(&[b"a\xFFb", &"é".as_bytes()[..1], b"c"]);
        assert_eq!(out, ["a\u{FFFD}b", "", "\u{FFFD}c", ""]);
    }

    #[test]
    fn finish_flushes_lossily() {
        let out = feed(&[b"x", &"€".as_bytes()[..2]]);
        assert_eq!(out, ["x", "", "\u{FFFD}"]);
    }
}
