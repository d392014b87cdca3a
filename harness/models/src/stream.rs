//! [`TextStream`]: turns "the whole answer decoded so far", step after step, into the pieces
//! of text that are safe to hand out while generation is still running.
//!
//! A piece, once handed out, cannot be taken back, so the stream only releases text that later
//! tokens cannot change:
//!
//! - up to three trailing U+FFFD replacement characters are held back: a tokenizer decodes an
//!   incomplete UTF-8 sequence (the first token of a multi-byte character) as U+FFFD — one for
//!   byte-level BPE, which decodes all bytes with `from_utf8_lossy`, one per byte token for
//!   SentencePiece byte fallback — and the next token may turn it into the real character. An
//!   incomplete sequence is at most three bytes, so replacement characters before the last
//!   three are final (a model that emits invalid bytes still streams);
//! - text from the first stop string on is never released (the answer is cut there), and a
//!   tail that could be the start of a stop string waits until the next step shows whether it is;
//! - a step whose text does not extend what was already released releases nothing.
//!
//! [`TextStream::finish`] then releases the rest of the final answer, so that the pieces joined
//! equal the answer byte for byte — or says that they cannot (a tokenizer whose decoding of a
//! prefix is not a prefix of the decoding of the whole, which byte-level BPE and SentencePiece
//! decoders never do).

/// Longest incomplete UTF-8 sequence: trailing U+FFFD beyond this many are final.
const MAX_INCOMPLETE: usize = 3;

/// Incremental release of a generated answer's text; see the module documentation.
#[derive(Debug, Clone)]
pub struct TextStream {
    stops: Vec<String>,
    sent: String,
}

impl TextStream {
    /// A stream for an answer cut at the first of `stop` (empty strings are ignored, as
    /// generation ignores them).
    pub fn new(stop: &[String]) -> Self {
        Self {
            stops: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            sent: String::new(),
        }
    }

    /// Text released so far.
    pub fn sent(&self) -> &str {
        &self.sent
    }

    /// Whether `decoded` contains one of the stop strings (generation should end).
    pub fn hits_stop(&self, decoded: &str) -> bool {
        self.stops.iter().any(|s| decoded.contains(s.as_str()))
    }

    /// Given the decoding of every token generated so far, the new text that is safe to hand
    /// out (often empty).
    pub fn update(&mut self, decoded: &str) -> String {
        let mut end = decoded.len()
            - decoded
                .chars()
                .rev()
                .take(MAX_INCOMPLETE)
                .take_while(|&c| c == '\u{FFFD}')
                .count()
                * '\u{FFFD}'.len_utf8();
        match self
            .stops
            .iter()
            .filter_map(|s| decoded.find(s.as_str()))
            .min()
        {
            Some(cut) => end = end.min(cut),
            None => {
                // The longest tail of the text that is a proper prefix of a stop string.
                let held = self
                    .stops
                    .iter()
                    .filter_map(|s| {
                        (1..s.len())
                            .rev()
                            .filter(|&k| s.is_char_boundary(k))
                            .find(|&k| decoded[..end].ends_with(&s[..k]))
                    })
                    .max()
                    .unwrap_or(0);
                end -= held;
            }
        }
        let ready = &decoded[..end];
        if ready.len() > self.sent.len() && ready.starts_with(self.sent.as_str()) {
            let piece = ready[self.sent.len()..].to_string();
            self.sent.push_str(&piece);
            piece
        } else {
            String::new()
        }
    }

    /// The rest of the final answer `text` after what was released, or an error when the
    /// released text is not a prefix of it.
    pub fn finish(&mut self, text: &str) -> anyhow::Result<String> {
        match text.strip_prefix(self.sent.as_str()) {
            Some(rest) => {
                let rest = rest.to_string();
                self.sent.push_str(&rest);
                Ok(rest)
            }
            None => anyhow::bail!(
                "the streamed text ({} bytes) is not a prefix of the final answer ({} bytes): \
                 this tokenizer's decoding is not prefix-stable",
                self.sent.len(),
                text.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams `steps` (the decoded text after each step), then finishes with `fin`.
    fn run(stop: &[&str], steps: &[&str], fin: &str) -> Vec<String> {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut s = TextStream::new(&stop);
        let mut pieces: Vec<String> = steps.iter().map(|d| s.update(d)).collect();
        pieces.push(s.finish(fin).unwrap());
        assert_eq!(pieces.concat(), fin);
        pieces
    }

    #[test]
    fn an_incomplete_character_waits_for_its_next_byte() {
        let p = run(&[], &["a", "a\u{FFFD}", "a\u{FFFD}", "a中", "a中b"], "a中b");
        assert_eq!(p, ["a", "", "", "中", "b", ""]);
        // A replacement character that stays (invalid bytes) comes out once it is followed.
        let p = run(&[], &["x\u{FFFD}", "x\u{FFFD}y"], "x\u{FFFD}y");
        assert_eq!(p, ["x", "\u{FFFD}y", ""]);
        // ... or at the end.
        let p = run(&[], &["x\u{FFFD}"], "x\u{FFFD}");
        assert_eq!(p, ["x", "\u{FFFD}"]);
        // Byte fallback: one U+FFFD per byte token until the character is complete.
        let p = run(
            &[],
            &["a\u{FFFD}", "a\u{FFFD}\u{FFFD}", "a\u{1F600}"],
            "a\u{1F600}",
        );
        assert_eq!(p, ["a", "", "\u{1F600}", ""]);
        // Invalid bytes (a random model): all but the last three come out as they arrive.
        let r = "\u{FFFD}";
        let p = run(
            &[],
            &[&r.repeat(2), &r.repeat(5), &r.repeat(6)],
            &r.repeat(6),
        );
        assert_eq!(p, ["".to_string(), r.repeat(2), r.to_string(), r.repeat(3)]);
    }

    #[test]
    fn text_from_a_stop_string_on_never_comes_out() {
        let p = run(&["END"], &["ab", "abE", "abEN", "abENx"], "abENx");
        assert_eq!(p, ["ab", "", "", "ENx", ""]);
        let p = run(&["END"], &["ab", "abE", "abEND", "abENDzz"], "ab");
        assert_eq!(p, ["ab", "", "", "", ""]);
        // Several stop strings: the earliest occurrence cuts.
        let p = run(&["\n", "ENDé"], &["a", "aEND", "aENDé\nb"], "a");
        assert_eq!(p, ["a", "", "", ""]);
    }

    #[test]
    fn a_step_that_changes_released_text_releases_nothing_and_finish_says_so() {
        let mut s = TextStream::new(&[]);
        assert_eq!(s.update("Hello"), "Hello");
        assert_eq!(s.update("Help"), "");
        assert!(s.finish("Help me").is_err());
    }
}
