//! Stop strings on streamed text.
//!
//! Generated text arrives in pieces (one detokenized token at a time), and a stop string
//! can straddle any number of them. [`StopMatcher`] holds back the tail that could still
//! grow into a stop string and releases everything before it.
//!
//! ```
//! use engine::stop::StopMatcher;
//! let mut stops = StopMatcher::new(vec!["</end>".into()]);
//! assert_eq!(stops.push("Hello </e"), ("Hello ".to_string(), false));
//! assert_eq!(stops.push("nd> ignored"), ("".to_string(), true));
//! ```
//!
//! Semantics follow llama.cpp's server (`find_stopping_strings`): the earliest complete
//! stop string in the text wins, and the text before it is the last text emitted.

/// Watches a stream of text for any of a set of stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted: always a possible start of some stop string,
    /// so never longer than the longest stop string minus one byte.
    held: String,
    /// A stop string was found; nothing more is emitted.
    stopped: bool,
}

impl StopMatcher {
    /// Empty strings are ignored (they would match everywhere).
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self { stops, held: String::new(), stopped: false }
    }

    /// Whether a stop string has been hit.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feed newly decoded text; returns (text safe to emit now, whether a stop string was
    /// hit). Text that could still be the start of a stop string is held back; on a hit,
    /// the text before the stop string is returned and the stop string itself is not.
    /// After a hit every push returns `("", true)`.
    pub fn push(&mut self, text: impl Into<String>) -> (String, bool) {
        let text = text.into();
        if self.stopped {
            return (String::new(), true);
        }
        if self.stops.is_empty() && self.held.is_empty() {
            // Nothing to watch for: the text passes through as it is.
            return (text, false);
        }
        self.held.push_str(&text);

        if let Some(start) = self.earliest_match() {
            self.held.truncate(start);
            self.stopped = true;
            return (std::mem::take(&mut self.held), true);
        }

        let keep_from = self.partial_match_start();
        let tail = self.held.split_off(keep_from);
        (std::mem::replace(&mut self.held, tail), false)
    }

    /// At the end of generation: whatever is held back (empty after a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Byte offset in `held` of the earliest complete stop string.
    fn earliest_match(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min()
    }

    /// Byte offset in `held` where the longest suffix that is a proper prefix of some stop
    /// string begins; `held.len()` if there is none. Only char boundaries are tried, so the
    /// split never cuts a multi-byte character.
    fn partial_match_start(&self) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let earliest = self.held.len().saturating_sub(longest.saturating_sub(1));
        (earliest..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(suffix))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    /// Feeds `pieces` one by one; returns everything emitted (finish included) and whether
    /// and at which push the stop was hit.
    fn run(m: &mut StopMatcher, pieces: &[&str]) -> (String, Option<usize>) {
        let mut out = String::new();
        for (i, p) in pieces.iter().enumerate() {
            let (text, hit) = m.push(*p);
            out.push_str(&text);
            if hit {
                out.push_str(&m.finish());
                return (out, Some(i));
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn without_stops_everything_passes_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc"), ("abc".into(), false));
        let mut m = matcher(&["", ""]);
        assert_eq!(m.push("abc"), ("abc".into(), false));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_inside_one_push() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("hello STOP world"), ("hello ".into(), true));
        assert!(m.is_stopped());
        assert_eq!(m.push("more"), ("".into(), true));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_split_across_many_pushes() {
        let mut m = matcher(&["<|im_end|>"]);
        assert_eq!(m.push("Hi"), ("Hi".into(), false));
        assert_eq!(m.push(" there<"), (" there".into(), false));
        assert_eq!(m.push("|im"), ("".into(), false));
        assert_eq!(m.push("_"), ("".into(), false));
        assert_eq!(m.push("end|"), ("".into(), false));
        assert_eq!(m.push(">tail"), ("".into(), true));

        let pieces: Vec<String> = "one <|im_end|> two".chars().map(String::from).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        assert_eq!(run(&mut matcher(&["<|im_end|>"]), &pieces), ("one ".into(), Some(13)));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = matcher(&["</s>"]);
        assert_eq!(m.push("a </"), ("a ".into(), false));
        assert_eq!(m.push("b>"), ("</b>".into(), false));
        assert_eq!(m.push("<"), ("".into(), false));
        assert_eq!(m.finish(), "<", "held text comes out at the end");
    }

    #[test]
    fn repeated_prefix_characters() {
        // "aab" inside "aaab": the held "aa" must slide by one, not be dropped.
        let mut m = matcher(&["aab"]);
        assert_eq!(m.push("a"), ("".into(), false));
        assert_eq!(m.push("a"), ("".into(), false));
        assert_eq!(m.push("a"), ("a".into(), false));
        assert_eq!(m.push("b!"), ("".into(), true));
    }

    #[test]
    fn overlapping_candidates() {
        // The earliest complete stop wins, even if a longer one started before it.
        assert_eq!(run(&mut matcher(&["abcd", "bc"]), &["xa", "b", "c", "d"]), ("xa".into(), Some(2)));
        // Both complete in one push: the one that starts first wins.
        assert_eq!(run(&mut matcher(&["cd", "bcd"]), &["abcde"]), ("a".into(), Some(0)));
        // Held back for the longer candidate, then released when neither can match.
        let mut m = matcher(&["ab", "abcd"]);
        assert_eq!(m.push("xa"), ("x".into(), false));
        assert_eq!(m.push("z"), ("az".into(), false));
        // A prefix of one stop that completes another.
        let mut m = matcher(&["END", "ENOUGH"]);
        assert_eq!(m.push("EN"), ("".into(), false));
        assert_eq!(m.push("OU"), ("".into(), false));
        assert_eq!(m.push("GH."), ("".into(), true));
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        // The stop shares its first byte (0xE2) with the emitted "…" (E2 80 A6).
        let mut m = matcher(&["→stop"]);
        let (text, hit) = m.push("wait…");
        assert_eq!((text.as_str(), hit), ("wait…", false));
        assert_eq!(m.push("→"), ("".into(), false));
        assert_eq!(m.push("st"), ("".into(), false));
        assert_eq!(m.push("art"), ("→start".into(), false));
        assert_eq!(m.push("日本→stop語"), ("日本".into(), true));

        let mut m = matcher(&["😀😀"]);
        assert_eq!(m.push("é😀"), ("é".into(), false));
        assert_eq!(m.push("é"), ("😀é".into(), false));
        assert_eq!(run(&mut m, &["😀", "😀", "x"]), ("".into(), Some(1)));
    }

    #[test]
    fn finish_without_stop_returns_the_held_tail() {
        let pieces = ["Answer: 4", "2\n\n", "User"];
        let (text, hit) = run(&mut matcher(&["\n\nUser:"]), &pieces);
        assert_eq!((text.as_str(), hit), ("Answer: 42\n\nUser", None));
    }
}
