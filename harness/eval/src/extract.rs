//! Answer extraction: turning a model's free text into an option index, a label index or a
//! number, deterministically and with the rule that decided recorded for audit.
//!
//! Two families of rules live here (both documented with examples in `docs/extraction.md`):
//!
//! * [`extract_facexbench`] reproduces FaceXBench's `extract_option_label`
//!   (`aggregate_results.py`, Kartik-3004/facexbench) exactly, quirks included, so scores are
//!   comparable with published FaceXBench numbers. Python `re` semantics (`\b`, `\s`,
//!   `re.match`, `re.findall`, `str.strip`) are emulated by hand because Rust's `regex` crate
//!   defines word characters and whitespace slightly differently (see [`py_is_word`]).
//! * faceval's strict rules ([`extract_strict_choice`], [`extract_label`], [`extract_number`]):
//!   explicit declarations, the last one wins, ambiguity is `Unparseable`, never a guess.

use std::sync::LazyLock;

use regex::Regex;

use crate::labels::LabelSet;
use crate::task::{ExtractorKind, QuestionStyle};

/// What an answer was read as.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extracted {
    /// Index into the question's options (multiple choice).
    Choice(usize),
    /// Index into the task's [`LabelSet`] (open questions).
    Label(usize),
    /// A number (numeric questions).
    Number(f64),
    /// Nothing could be read without guessing.
    Unparseable,
}

/// An extracted answer with the name of the rule that decided it (names are listed in
/// `docs/extraction.md`), so every score can be traced back to a rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extraction {
    pub answer: Extracted,
    pub rule: &'static str,
}

/// Extract with the task's extractor and question style. `letters` are the option keys shown
/// (A, B, ...), `options` their texts; both are empty for numeric questions.
pub fn extract_answer(
    kind: ExtractorKind,
    style: QuestionStyle,
    output: &str,
    letters: &[String],
    options: &[String],
    labels: &LabelSet,
) -> Extraction {
    match style {
        QuestionStyle::MultipleChoice => match kind {
            ExtractorKind::Facexbench => {
                let (i, rule) = facexbench_explained(output, options);
                Extraction {
                    answer: i.map_or(Extracted::Unparseable, Extracted::Choice),
                    rule,
                }
            }
            ExtractorKind::Strict => {
                let labels = (!labels.is_empty()).then_some(labels);
                let (i, rule) = strict_choice_explained(output, letters, options, labels);
                Extraction {
                    answer: i.map_or(Extracted::Unparseable, Extracted::Choice),
                    rule,
                }
            }
        },
        // FaceXBench only defines extraction for lettered options; other styles always use
        // the strict rules.
        QuestionStyle::Open | QuestionStyle::Verification => {
            let (i, rule) = label_explained(output, labels);
            Extraction {
                answer: i.map_or(Extracted::Unparseable, Extracted::Label),
                rule,
            }
        }
        QuestionStyle::Numeric => {
            let (x, rule) = number_explained(output);
            Extraction {
                answer: x.map_or(Extracted::Unparseable, Extracted::Number),
                rule,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FaceXBench compatibility
// ---------------------------------------------------------------------------------------------

/// Python's `str.isspace()`, which is also what `\s` and `str.strip()` use for `str`:
/// characters with bidirectional class WS, B or S, or category Zs. Unlike Rust's
/// `char::is_whitespace`, it includes U+001C..U+001F.
pub fn py_is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0b}'
            | '\u{0c}'
            | '\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

static NON_ASCII_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[\p{L}\p{N}]$").expect("static pattern"));

/// Python's `\w` for `str` patterns: `str.isalnum()` or `_`, i.e. letters (L*), numbers
/// (N*, which covers Python's decimal/digit/numeric) and underscore. Rust's `regex` `\w`
/// differs: it also counts combining marks (M*) and connector punctuation, and misses No
/// characters such as `²`, so `\b` is evaluated with this function instead.
pub fn py_is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let mut buf = [0u8; 4];
    NON_ASCII_WORD.is_match(c.encode_utf8(&mut buf))
}

/// Python's `str.strip()` with no arguments.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

/// Python's `\b` at char index `i`.
fn py_boundary(s: &[char], i: usize) -> bool {
    let before = i > 0 && py_is_word(s[i - 1]);
    let after = i < s.len() && py_is_word(s[i]);
    before != after
}

fn letter_at(s: &[char], i: usize) -> Option<char> {
    s.get(i).copied().filter(char::is_ascii_alphabetic)
}

/// One of FaceXBench's six label patterns, tried at char index `p` with Python's
/// backtracking order. Returns (end, captured letter).
type PyPattern = fn(&[char], usize) -> Option<(usize, char)>;

/// `\b\(?([A-Za-z])\)?\b` — the optional parentheses are greedy, so `(` and `)` are tried
/// before their absence.
fn pat_bare(s: &[char], p: usize) -> Option<(usize, char)> {
    if !py_boundary(s, p) {
        return None;
    }
    for open in [true, false] {
        let q = if open {
            if s.get(p) != Some(&'(') {
                continue;
            }
            p + 1
        } else {
            p
        };
        let Some(c) = letter_at(s, q) else { continue };
        for close in [true, false] {
            let e = if close {
                if s.get(q + 1) != Some(&')') {
                    continue;
                }
                q + 2
            } else {
                q + 1
            };
            if py_boundary(s, e) {
                return Some((e, c));
            }
        }
    }
    None
}

/// `\bOption\s+([A-Za-z])\b` — `\s+` can only succeed at its longest run, since a letter is
/// never whitespace.
fn pat_option(s: &[char], p: usize) -> Option<(usize, char)> {
    if !py_boundary(s, p) {
        return None;
    }
    let word: Vec<char> = "Option".chars().collect();
    if s.len() < p + word.len() || s[p..p + word.len()] != word[..] {
        return None;
    }
    let mut q = p + word.len();
    let start = q;
    while q < s.len() && py_is_space(s[q]) {
        q += 1;
    }
    if q == start {
        return None;
    }
    let c = letter_at(s, q)?;
    py_boundary(s, q + 1).then_some((q + 1, c))
}

/// `\b([A-Za-z])` followed by one literal char (`.` or `:`).
fn pat_then(s: &[char], p: usize, next: char) -> Option<(usize, char)> {
    if !py_boundary(s, p) {
        return None;
    }
    let c = letter_at(s, p)?;
    (s.get(p + 1) == Some(&next)).then_some((p + 2, c))
}

fn pat_dot(s: &[char], p: usize) -> Option<(usize, char)> {
    pat_then(s, p, '.')
}

fn pat_colon(s: &[char], p: usize) -> Option<(usize, char)> {
    pat_then(s, p, ':')
}

/// `\b([A-Za-z])\s+-`
fn pat_dash(s: &[char], p: usize) -> Option<(usize, char)> {
    if !py_boundary(s, p) {
        return None;
    }
    let c = letter_at(s, p)?;
    let mut q = p + 1;
    while q < s.len() && py_is_space(s[q]) {
        q += 1;
    }
    (q > p + 1 && s.get(q) == Some(&'-')).then_some((q + 1, c))
}

/// `\b\(([A-Za-z])\)`
fn pat_paren(s: &[char], p: usize) -> Option<(usize, char)> {
    if !py_boundary(s, p) || s.get(p) != Some(&'(') {
        return None;
    }
    let c = letter_at(s, p + 1)?;
    (s.get(p + 2) == Some(&')')).then_some((p + 3, c))
}

/// The patterns in FaceXBench's order.
const PY_PATTERNS: [PyPattern; 6] = [
    pat_bare, pat_option, pat_dot, pat_colon, pat_dash, pat_paren,
];

/// Python's `label in option_labels` with `option_labels = [chr(ord('A') + i) for i in
/// range(len(options))]`: the index the letter stands for, if any. Lowercase letters are not
/// labels unless there are 33 or more options (`chr(65 + 32) == 'a'`).
fn py_label_index(c: char, n: usize) -> Option<usize> {
    let i = (c as u32).checked_sub('A' as u32)? as usize;
    (i < n).then_some(i)
}

/// FaceXBench's `extract_option_label`, reproduced exactly. `options` must be Python's
/// `str()` of each JSON option (the facexbench reader produces that). Returns the option
/// index, or `None` (which FaceXBench counts as wrong).
pub fn extract_facexbench(output: &str, options: &[String]) -> Option<usize> {
    facexbench_explained(output, options).0
}

/// [`extract_facexbench`] with the name of the step that decided.
pub fn facexbench_explained(output: &str, options: &[String]) -> (Option<usize>, &'static str) {
    let clean = py_strip(output);
    let s: Vec<char> = clean.chars().collect();
    let n = options.len();
    // Step 1: `re.match` (anchored at the start only), pattern by pattern.
    for pat in PY_PATTERNS {
        if let Some((_, c)) = pat(&s, 0) {
            if let Some(i) = py_label_index(c, n) {
                return (Some(i), "facexbench-start");
            }
        }
    }
    // Step 2: `re.findall` over the whole text, pattern by pattern, matches in text order;
    // findall resumes after each match's end, so matches never overlap.
    for pat in PY_PATTERNS {
        let mut p = 0;
        while p <= s.len() {
            match pat(&s, p) {
                Some((e, c)) => {
                    if let Some(i) = py_label_index(c, n) {
                        return (Some(i), "facexbench-anywhere");
                    }
                    p = if e > p { e } else { p + 1 };
                }
                None => p += 1,
            }
        }
    }
    // Step 3: option texts in list order; per option, equality then substring (an empty
    // option text is a substring of everything, as in Python).
    for (i, opt) in options.iter().enumerate() {
        let o = py_strip(opt);
        if o == clean {
            return (Some(i), "facexbench-text-equal");
        }
        if clean.contains(o) {
            return (Some(i), "facexbench-text-contains");
        }
    }
    (None, "facexbench-none")
}

// ---------------------------------------------------------------------------------------------
// Strict rules
// ---------------------------------------------------------------------------------------------

/// The part of the output that holds the answer: after the last `</think>`, inside the last
/// `<answer>...</answer>`, with markdown emphasis (`*`, `` ` ``) removed and line ends unified.
/// `None` when a `<think>` block never closed (the answer was cut off).
fn answer_region(output: &str) -> Option<String> {
    let mut text = output;
    if let Some(k) = text.rfind("</think>") {
        text = &text[k + "</think>".len()..];
    } else if text.contains("<think>") {
        return None;
    }
    if let Some(k) = text.rfind("<answer>") {
        let rest = &text[k + "<answer>".len()..];
        text = rest.find("</answer>").map_or(rest, |e| &rest[..e]);
    }
    Some(
        text.replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace(['*', '`'], ""),
    )
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A bare letter may be read as an option letter only when it stands alone, and a lowercase
/// `a` or `i` followed by a word is the English article or pronoun, not a letter.
fn bare_letter_ok(text: &str, end: usize, letter: char) -> bool {
    let rest = &text[end..];
    let mut chars = rest.chars();
    match chars.next() {
        None => true,
        Some(c) if is_word_char(c) => false,
        Some(c) if c.is_whitespace() && (letter == 'a' || letter == 'i') => {
            let after = rest.trim_start();
            !after.chars().next().is_some_and(is_word_char)
        }
        Some(_) => true,
    }
}

/// Index of `c` among `letters`, ignoring case.
fn letter_index(letters: &[String], c: char) -> Option<usize> {
    letters.iter().position(|l| {
        let mut it = l.chars();
        matches!((it.next(), it.next()), (Some(x), None) if x.eq_ignore_ascii_case(&c))
    })
}

/// One explicit letter declaration.
#[derive(Debug, Clone, Copy)]
struct Declaration {
    start: usize,
    end: usize,
    index: usize,
    /// 1: a declared answer ("the answer is C", "correct option: C"); 2: any other explicit
    /// letter ("(C)", "Option C", "C) text" at a line start).
    tier: u8,
}

/// `answer`/`option`/`choice`, an optional copula, an optional `:`/`=`/`-`, an optional
/// repeated `option`, then a letter, bare or bracketed.
static KEYWORD_DECL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?P<kw>answer|option|choice)\b(?P<cop>\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be|appears\s+to\s+be))?\s*(?P<sep>[:=]|-\s)?\s*(?:(?:option|choice)\s+)?(?:\((?P<pl>[a-z])\)|\[(?P<bl>[a-z])\]|(?P<l>[a-z]))",
    )
    .expect("static pattern")
});

/// `(C)` or `[C]`, not glued to a word ("person(s)").
static BRACKET_DECL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[\(\[][ \t]*(?P<l>[A-Za-z])[ \t]*[\)\]]").expect("static pattern")
});

/// A letter opening a line and closed by `.`, `)`, `:`, `]`, ` - ` or the line end:
/// "B", "B) Female", "C. 20-29", "- D: Male".
static LINE_DECL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^[ \t]*(?:[-•>][ \t]*)?(?P<l>[A-Za-z])(?:[.):\]]|[ \t]+-[ \t]|[ \t]*$)")
        .expect("static pattern")
});

/// A capital letter opening a line and followed by a word: "B because ...", "C is correct".
/// A, I and O are left out: they are English words ("A young man", "I think").
static LINE_WORD_DECL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^[ \t]*(?P<l>[B-HJ-NP-Z])[ \t]+\S").expect("static pattern"));

/// What may join two letters into one ambiguous declaration: "A or B", "(A)/(C)", "A, B".
static CONTINUATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(?:,|/|&|\bor\b|\band\b)\s*(?:\((?P<pl>[a-z])\)|\[(?P<bl>[a-z])\]|(?P<l>[a-z]))",
    )
    .expect("static pattern")
});

fn declarations(text: &str, letters: &[String]) -> Vec<Declaration> {
    let mut out = Vec::new();
    for caps in KEYWORD_DECL.captures_iter(text) {
        let whole = caps.get(0).expect("group 0");
        let (m, bare) = match (caps.name("pl"), caps.name("bl"), caps.name("l")) {
            (Some(m), _, _) | (_, Some(m), _) => (m, false),
            (_, _, Some(m)) => (m, true),
            _ => continue,
        };
        let c = m.as_str().chars().next().expect("one letter");
        if bare && !bare_letter_ok(text, m.end(), c) {
            continue;
        }
        let Some(index) = letter_index(letters, c) else {
            continue;
        };
        let kw = caps["kw"].to_ascii_lowercase();
        let tier = if kw == "answer" || caps.name("cop").is_some() || caps.name("sep").is_some() {
            1
        } else {
            2
        };
        out.push(Declaration {
            start: whole.start(),
            end: whole.end(),
            index,
            tier,
        });
    }
    for caps in BRACKET_DECL.captures_iter(text) {
        let whole = caps.get(0).expect("group 0");
        if text[..whole.start()]
            .chars()
            .next_back()
            .is_some_and(is_word_char)
        {
            continue;
        }
        let c = caps["l"].chars().next().expect("one letter");
        if let Some(index) = letter_index(letters, c) {
            out.push(Declaration {
                start: whole.start(),
                end: whole.end(),
                index,
                tier: 2,
            });
        }
    }
    for caps in LINE_DECL.captures_iter(text) {
        let m = caps.name("l").expect("letter group");
        let end = caps.get(0).expect("group 0").end();
        let c = m.as_str().chars().next().expect("one letter");
        if let Some(index) = letter_index(letters, c) {
            out.push(Declaration {
                start: m.start(),
                end,
                index,
                tier: 2,
            });
        }
    }
    for caps in LINE_WORD_DECL.captures_iter(text) {
        let m = caps.name("l").expect("letter group");
        let c = m.as_str().chars().next().expect("one letter");
        if let Some(index) = letter_index(letters, c) {
            out.push(Declaration {
                start: m.start(),
                end: m.end(),
                index,
                tier: 2,
            });
        }
    }
    out.sort_by_key(|d| (d.start, d.tier));
    out
}

/// A letter joined to a declaration by "or", "and", "/", "," or "&": its index and end.
fn continuation(text: &str, from: usize, letters: &[String]) -> Option<(usize, usize)> {
    let caps = CONTINUATION.captures(&text[from..])?;
    let (m, bare) = match (caps.name("pl"), caps.name("bl"), caps.name("l")) {
        (Some(m), _, _) | (_, Some(m), _) => (m, false),
        (_, _, Some(m)) => (m, true),
        _ => return None,
    };
    let c = m.as_str().chars().next()?;
    if bare && !bare_letter_ok(text, from + m.end(), c) {
        return None;
    }
    let whole_end = from + caps.get(0)?.end();
    letter_index(letters, c).map(|i| (i, whole_end))
}

/// A run of declarations that overlap or are joined by conjunctions.
#[derive(Debug, Clone)]
struct Group {
    end: usize,
    indices: Vec<usize>,
    tier: u8,
}

fn letter_groups(text: &str, letters: &[String]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for d in declarations(text, letters) {
        match groups.last_mut() {
            Some(g) if d.start < g.end => {
                g.end = g.end.max(d.end);
                g.tier = g.tier.min(d.tier);
                if !g.indices.contains(&d.index) {
                    g.indices.push(d.index);
                }
            }
            _ => groups.push(Group {
                end: d.end,
                indices: vec![d.index],
                tier: d.tier,
            }),
        }
        // Extend the group over "or B", "and (C)", ... that follow it.
        let g = groups.last_mut().expect("just pushed");
        while let Some((i, e)) = continuation(text, g.end, letters) {
            g.end = e;
            if !g.indices.contains(&i) {
                g.indices.push(i);
            }
        }
    }
    groups
}

/// Lowercase, `_` as space, whitespace runs as one space. Punctuation stays, so phrase
/// boundaries can be checked.
fn normalize_text(s: &str) -> String {
    s.to_lowercase()
        .replace('_', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalise an option or label spelling: like [`normalize_text`], then trailing sentence
/// punctuation dropped.
fn normalize_spelling(s: &str) -> String {
    normalize_text(s)
        .trim_end_matches(['.', '!', ',', ';', ':'])
        .trim()
        .to_string()
}

/// Whether `hay[start..end]` stands as a whole phrase: no letter or digit glued to either
/// side, and a number is not part of a longer number, range or signed value
/// ("2" is not in "20-29", "10" is not in "-10" or "1.5").
fn whole_phrase(hay: &str, start: usize, end: usize) -> bool {
    let phrase = &hay[start..end];
    let before = hay[..start].chars().next_back();
    let mut after_it = hay[end..].chars();
    let after = after_it.next();
    let after2 = after_it.next();
    if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric) {
        return false;
    }
    let starts_digit = phrase.chars().next().is_some_and(|c| c.is_ascii_digit());
    let ends_digit = phrase
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_digit());
    if starts_digit && before.is_some_and(|c| matches!(c, '-' | '+' | '.' | '\u{2212}')) {
        return false;
    }
    if ends_digit
        && matches!(after, Some('.' | ',' | '-' | '\u{2013}'))
        && after2.is_some_and(|c| c.is_ascii_digit())
    {
        return false;
    }
    true
}

/// Find spellings (normalised, each with the index it stands for) in `hay` as whole phrases;
/// longer spellings claim their span first, so "more than 70" beats "70". Returns the
/// distinct indices found, in order of first appearance.
fn phrase_matches(hay: &str, spellings: &[(String, usize)]) -> Vec<usize> {
    let mut sorted: Vec<&(String, usize)> =
        spellings.iter().filter(|(s, _)| !s.is_empty()).collect();
    sorted.sort_by(|a, b| {
        b.0.chars()
            .count()
            .cmp(&a.0.chars().count())
            .then(a.0.cmp(&b.0))
    });
    let mut taken: Vec<(usize, usize, usize)> = Vec::new();
    for (sp, idx) in sorted {
        for (start, m) in hay.match_indices(sp.as_str()) {
            let end = start + m.len();
            if !whole_phrase(hay, start, end) {
                continue;
            }
            if taken.iter().any(|&(s, e, _)| start < e && s < end) {
                continue;
            }
            taken.push((start, end, *idx));
        }
    }
    taken.sort_by_key(|t| t.0);
    let mut out = Vec::new();
    for (_, _, i) in taken {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The word "answer" in any case (texts are lowercased before text matching anyway).
static ANSWER_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\banswer\b").expect("static pattern"));

/// Text matching with the "answer" narrowing: if several spellings match, only the text
/// after the last word "answer" is considered.
fn match_text(region: &str, spellings: &[(String, usize)]) -> (Option<usize>, &'static str) {
    let hay = normalize_text(region);
    let found = phrase_matches(&hay, spellings);
    match found.len() {
        0 => (None, "no-match"),
        1 => (Some(found[0]), "text"),
        _ => {
            if let Some(m) = ANSWER_WORD.find_iter(&hay).last() {
                let tail = phrase_matches(&hay[m.end()..], spellings);
                if tail.len() == 1 {
                    return (Some(tail[0]), "text-after-answer");
                }
            }
            (None, "ambiguous-text")
        }
    }
}

/// faceval's strict multiple-choice rules. `letters` are the keys shown (A, B, ...),
/// `options` their texts. See `docs/extraction.md`.
pub fn extract_strict_choice(
    output: &str,
    letters: &[String],
    options: &[String],
) -> Option<usize> {
    strict_choice_explained(output, letters, options, None).0
}

/// [`extract_strict_choice`] that also accepts the synonyms of a label set: an option whose
/// text is a label may be named by any of that label's spellings.
pub fn extract_strict_choice_with_labels(
    output: &str,
    letters: &[String],
    options: &[String],
    labels: Option<&LabelSet>,
) -> Option<usize> {
    strict_choice_explained(output, letters, options, labels).0
}

/// The strict choice with the name of the rule that decided.
pub fn strict_choice_explained(
    output: &str,
    letters: &[String],
    options: &[String],
    labels: Option<&LabelSet>,
) -> (Option<usize>, &'static str) {
    let Some(region) = answer_region(output) else {
        return (None, "unfinished-think");
    };
    let groups = letter_groups(&region, letters);
    let chosen = groups
        .iter()
        .rev()
        .find(|g| g.tier == 1)
        .or_else(|| groups.last());
    if let Some(g) = chosen {
        return match g.indices.as_slice() {
            [i] if *i < options.len() || options.is_empty() => (
                Some(*i),
                if g.tier == 1 {
                    "declared-answer"
                } else {
                    "letter"
                },
            ),
            [_] => (None, "letter-out-of-range"),
            _ => (None, "ambiguous-letters"),
        };
    }
    let mut spellings: Vec<(String, usize)> = options
        .iter()
        .enumerate()
        .map(|(i, o)| (normalize_spelling(o), i))
        .collect();
    if let Some(labels) = labels {
        for (i, o) in options.iter().enumerate() {
            if let Some(l) = labels.index_of(o) {
                spellings.extend(
                    labels
                        .spellings_longest_first()
                        .into_iter()
                        .filter(|(_, k)| *k == l)
                        .map(|(s, _)| (s, i)),
                );
            }
        }
    }
    match_text(&region, &spellings)
}

/// Map an open answer onto the label set (canonical labels and synonyms, whole phrases,
/// longest first). Returns the label index.
pub fn extract_label(output: &str, labels: &LabelSet) -> Option<usize> {
    label_explained(output, labels).0
}

/// [`extract_label`] with the name of the rule that decided.
pub fn label_explained(output: &str, labels: &LabelSet) -> (Option<usize>, &'static str) {
    let Some(region) = answer_region(output) else {
        return (None, "unfinished-think");
    };
    // LabelSet spellings are normalised with labels::normalize, which agrees with
    // normalize_spelling on everything but trailing punctuation, already dropped there.
    let spellings = labels.spellings_longest_first();
    match_text(&region, &spellings)
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

/// An unsigned number: digits with optional `,ddd` thousands groups and a decimal part.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?").expect("static pattern")
});

/// What may stand between the two ends of a range: "25-30", "25 to 30", "-10° to 0°",
/// "25 - 30 years".
static RANGE_JOIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:°|degrees?|years?(?:\s+old)?|yrs?)?\s*(?:-|–|—|to)\s*$")
        .expect("static pattern")
});

#[derive(Debug, Clone, Copy)]
struct NumToken {
    start: usize,
    end: usize,
    value: f64,
    /// The text joins to a following "s" ("20s"): a decade.
    decade: bool,
}

fn number_tokens(text: &str) -> Vec<NumToken> {
    let mut out = Vec::new();
    for m in NUMBER.find_iter(text) {
        let before = text[..m.start()].chars().next_back();
        // Part of a word or a version ("InternVL3", "v1.2"): not an answer.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let rest = &text[m.end()..];
        let lower_rest = rest.to_ascii_lowercase();
        // Ordinals ("2nd image") and percentages ("90% sure") are not answers.
        if ["st", "nd", "rd", "th"].iter().any(|s| {
            lower_rest.starts_with(s)
                && !lower_rest[s.len()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric)
        }) || rest.starts_with('%')
        {
            continue;
        }
        let Ok(mut value) = m.as_str().replace(',', "").parse::<f64>() else {
            continue;
        };
        let mut start = m.start();
        // A sign counts only when it is not glued to a preceding number ("25-30" is a range).
        if let Some(sign) = before.filter(|c| matches!(c, '-' | '+' | '\u{2212}')) {
            let sign_start = m.start() - sign.len_utf8();
            let before_sign = text[..sign_start].chars().next_back();
            if !before_sign.is_some_and(|c| c.is_alphanumeric()) {
                if sign != '+' {
                    value = -value;
                }
                start = sign_start;
            }
        }
        let decade = value >= 10.0
            && value.fract() == 0.0
            && value % 10.0 == 0.0
            && lower_rest.starts_with('s')
            && !lower_rest[1..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
        out.push(NumToken {
            start,
            end: m.end() + usize::from(decade),
            value,
            decade,
        });
    }
    out
}

/// Numbers with ranges merged into their midpoints: (start, value).
fn number_values(text: &str) -> Vec<(usize, f64)> {
    let toks = number_tokens(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let one = |t: NumToken| if t.decade { t.value + 5.0 } else { t.value };
        if let Some(u) = toks.get(i + 1) {
            let between = &text[t.end..u.start];
            let is_between_and = between.trim().eq_ignore_ascii_case("and")
                && text[..t.start]
                    .trim_end()
                    .to_ascii_lowercase()
                    .ends_with("between");
            if !t.decade && !u.decade && (RANGE_JOIN.is_match(between) || is_between_and) {
                out.push((t.start, (t.value + u.value) / 2.0));
                i += 2;
                continue;
            }
        }
        out.push((t.start, one(t)));
        i += 1;
    }
    out
}

/// Read a number (age in years, an angle in degrees). Ranges give their midpoint
/// ("25-30" → 27.5), decades their middle ("in his 30s" → 35); the first number after the
/// last word "answer" wins, otherwise the text must hold one value (repeats allowed).
pub fn extract_number(output: &str) -> Option<f64> {
    number_explained(output).0
}

/// [`extract_number`] with the name of the rule that decided.
pub fn number_explained(output: &str) -> (Option<f64>, &'static str) {
    let Some(region) = answer_region(output) else {
        return (None, "unfinished-think");
    };
    let text = region.replace(['\u{2212}'], "-");
    let values = number_values(&text);
    if let Some(m) = ANSWER_WORD.find_iter(&text).last() {
        if let Some((_, v)) = values.iter().find(|(s, _)| *s >= m.end()) {
            return (Some(*v), "declared-number");
        }
    }
    match values.split_first() {
        None => (None, "no-number"),
        Some(((_, first), rest)) if rest.iter().all(|(_, v)| (v - first).abs() < 1e-9) => {
            (Some(*first), "number")
        }
        Some(_) => (None, "ambiguous-numbers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn python_word_chars() {
        assert!(py_is_word('é'));
        assert!(py_is_word('²'));
        assert!(!py_is_word('\u{301}'));
        assert!(py_is_word('_'));
        assert!(!py_is_word('-'));
        assert!(py_is_space('\u{1c}'));
        assert!(!'\u{1c}'.is_whitespace());
    }

    #[test]
    fn facexbench_basic_quirks() {
        let opts = strs(&["20-29", "2", "30-39", "40-49"]);
        assert_eq!(extract_facexbench("A young man", &opts), Some(0));
        assert_eq!(extract_facexbench("(C) 30-39", &opts), Some(2));
        // Lowercase letters are not labels with four options.
        assert_eq!(extract_facexbench("b", &opts), None);
        // The text fallback takes the first option contained in the answer: "2" is in "20-29".
        assert_eq!(extract_facexbench("20-29", &strs(&["2", "20-29"])), Some(0));
    }

    #[test]
    fn numbers() {
        assert_eq!(extract_number("about 25 years old"), Some(25.0));
        assert_eq!(extract_number("-12.5°"), Some(-12.5));
        assert_eq!(extract_number("25-30"), Some(27.5));
        assert_eq!(extract_number("in their 30s"), Some(35.0));
        assert_eq!(extract_number("-10 to -20 degrees"), Some(-15.0));
        assert_eq!(extract_number("20 or 40"), None);
    }
}
