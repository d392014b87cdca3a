//! Mutations: byte-level for every input, structure-aware for JSON and TOML.
//!
//! Every random choice comes from an [`Unstructured`]; when its bytes run out the choices
//! fall back to their first option, so a case is always produced.

use arbitrary::Unstructured;

use crate::Kind;

/// Inputs are capped so that one case stays fast; parsers are still given multi-KB strings.
const MAX_LEN: usize = 1 << 20;

/// Tokens worth inserting: format syntax, boundary numbers, odd unicode, plus every JSON/TOML
/// key and string value found in the seeds (so mutations reach fields the seeds have).
pub struct Dictionary {
    tokens: Vec<Vec<u8>>,
    keys: Vec<String>,
}

const COMMON: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e309",
    "-1e309",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "NaN",
    "Infinity",
    "-inf",
    "nan",
    "0.0000000000000000000000000001",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "\u{10ffff}",
    "é",
    "😀",
    "\r\n",
    "\n",
    "\t",
    " ",
    "\\",
    "\\u0000",
    "\\ud800",
    "%",
    "../",
    "/",
    "..",
    "*",
    "?",
    "{{",
    "}}",
    "{%",
    "%}",
    "<image>",
    "<|im_start|>",
    "<IMG_CONTEXT>",
];
const JSON_TOKENS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "[]", "{}", "\"\"", "1.5",
];
const TOML_TOKENS: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "\"",
    "'''",
    "\"\"\"",
    "#",
    ".",
    "inf",
    "+inf",
    "nan",
    "true",
    "1979-05-27T07:32:00Z",
    "0x7fffffff",
    "0b1",
    "{ }",
    "[ ]",
];
const TEXT_TOKENS: &[&str] = &[
    ",", ";", "\"", "\"\"", ",,,,", "\n\n", ".jpg", ".png", "_", " 9",
];

impl Dictionary {
    pub fn new(kind: Kind, seeds: &[Vec<u8>]) -> Dictionary {
        let mut tokens: Vec<Vec<u8>> = COMMON.iter().map(|s| s.as_bytes().to_vec()).collect();
        let extra = match kind {
            Kind::Json => JSON_TOKENS,
            Kind::Toml => TOML_TOKENS,
            Kind::Text => TEXT_TOKENS,
            Kind::Bytes => &[][..],
        };
        tokens.extend(extra.iter().map(|s| s.as_bytes().to_vec()));
        let mut keys = Vec::new();
        for s in seeds {
            match kind {
                Kind::Json => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(s) {
                        json_strings(&v, &mut keys);
                    }
                }
                Kind::Toml => {
                    if let Ok(v) = std::str::from_utf8(s)
                        .map_err(|_| ())
                        .and_then(|t| t.parse::<toml::Table>().map_err(|_| ()))
                    {
                        toml_strings(&toml::Value::Table(v), &mut keys);
                    }
                }
                _ => {}
            }
        }
        keys.sort();
        keys.dedup();
        keys.retain(|k| k.len() <= 200);
        tokens.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
        Dictionary { tokens, keys }
    }
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                json_strings(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::String(s) => out.push(s.clone()),
        _ => {}
    }
}

fn toml_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(m) => {
            for (k, x) in m {
                out.push(k.clone());
                toml_strings(x, out);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|x| toml_strings(x, out)),
        toml::Value::String(s) => out.push(s.clone()),
        _ => {}
    }
}

/// One generated input: a seed, changed structurally (JSON/TOML, most of the time) and/or by
/// a stack of byte mutations.
pub fn case(u: &mut Unstructured, kind: Kind, seeds: &[Vec<u8>], dict: &Dictionary) -> Vec<u8> {
    let i = pick(u, seeds.len());
    let mut data = seeds[i].clone();
    let structural = match kind {
        Kind::Json => u.ratio(3, 4).unwrap_or(false) && json_case(u, &mut data, dict),
        Kind::Toml => u.ratio(3, 4).unwrap_or(false) && toml_case(u, &mut data, dict),
        _ => false,
    };
    // Structured cases sometimes get byte damage on top (NaN, duplicate keys, cut files).
    let byte_rounds = if structural {
        if u.ratio(1, 4).unwrap_or(false) {
            1 + pick(u, 2)
        } else {
            0
        }
    } else {
        1 + pick(u, 8)
    };
    for _ in 0..byte_rounds {
        bytes_once(u, &mut data, seeds, dict, kind);
    }
    data.truncate(MAX_LEN);
    data
}

fn pick(u: &mut Unstructured, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    u.choose_index(n).unwrap_or(0)
}

fn upto(u: &mut Unstructured, n: usize) -> usize {
    u.int_in_range(0..=n).unwrap_or(0)
}

/// A length biased towards small values: 1..=8 usually, sometimes up to 4096.
fn small_len(u: &mut Unstructured) -> usize {
    match pick(u, 8) {
        0 => 1 + upto(u, 4095),
        1 => 1 + upto(u, 255),
        _ => 1 + upto(u, 7),
    }
}

/// A position in `data` that is, most of the time, at a line or token boundary of text.
fn position(u: &mut Unstructured, data: &[u8]) -> usize {
    upto(u, data.len())
}

fn bytes_once(
    u: &mut Unstructured,
    data: &mut Vec<u8>,
    seeds: &[Vec<u8>],
    dict: &Dictionary,
    kind: Kind,
) {
    const INTERESTING: &[u8] = &[
        0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'\n', b'\r',
        b'=', b'#', b' ', b'\t', b';', b'.', b'-', b'9', 0xc3, 0xe2, 0xf0, 0xed,
    ];
    let ops = if kind == Kind::Text { 13 } else { 11 };
    match pick(u, ops) {
        0 if !data.is_empty() => {
            let i = pick(u, data.len());
            data[i] ^= 1 << pick(u, 8);
        }
        1 if !data.is_empty() => {
            let i = pick(u, data.len());
            data[i] = INTERESTING[pick(u, INTERESTING.len())];
        }
        2 if !data.is_empty() => {
            let i = pick(u, data.len());
            data[i] = u.arbitrary::<u8>().unwrap_or(0);
        }
        3 => {
            let at = position(u, data);
            let n = small_len(u).min(64);
            let ins: Vec<u8> = (0..n).map(|_| u.arbitrary::<u8>().unwrap_or(0)).collect();
            data.splice(at..at, ins);
        }
        4 if !data.is_empty() => {
            let at = pick(u, data.len());
            let n = small_len(u).min(data.len() - at);
            data.drain(at..at + n);
        }
        5 => {
            let at = position(u, data);
            data.truncate(at);
        }
        6 => {
            // Splice: this input's head with another seed's tail.
            let other = &seeds[pick(u, seeds.len())];
            let at = position(u, data);
            let from = upto(u, other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        7 if !data.is_empty() => {
            // Repeat a chunk many times: long fields, many rows, deep nesting by repetition.
            let at = pick(u, data.len());
            let n = small_len(u).min(data.len() - at).min(256);
            let chunk = data[at..at + n].to_vec();
            let times = match pick(u, 4) {
                0 => 1 + upto(u, 20_000),
                _ => 1 + upto(u, 64),
            };
            let times = times.min(MAX_LEN / chunk.len().max(1));
            let rep: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
            data.splice(at..at, rep);
        }
        8 => {
            let at = position(u, data);
            let tok = &dict.tokens[pick(u, dict.tokens.len())];
            data.splice(at..at, tok.iter().copied());
        }
        9 if !data.is_empty() => {
            let at = pick(u, data.len());
            let tok = &dict.tokens[pick(u, dict.tokens.len())];
            let end = (at + tok.len()).min(data.len());
            data.splice(at..end, tok.iter().copied());
        }
        10 => {
            // A long run of one token: very long strings and numbers.
            let at = position(u, data);
            let tok = &dict.tokens[pick(u, dict.tokens.len())];
            let times = 1 + upto(u, 10_000).min(MAX_LEN / tok.len().max(1));
            let rep: Vec<u8> = tok
                .iter()
                .copied()
                .cycle()
                .take(tok.len() * times)
                .collect();
            data.splice(at..at, rep);
        }
        11 | 12 => line_op(u, data),
        _ => {}
    }
}

/// Line-level edits for line-oriented text: duplicate, delete, swap, or move a line.
fn line_op(u: &mut Unstructured, data: &mut Vec<u8>) {
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    match pick(u, 4) {
        0 => {
            let i = pick(u, n);
            let l = lines[i].clone();
            let times = 1 + upto(u, 200);
            for _ in 0..times {
                lines.insert(i, l.clone());
            }
        }
        1 if n > 1 => {
            lines.remove(pick(u, n));
        }
        2 => {
            let (a, b) = (pick(u, n), pick(u, n));
            lines.swap(a, b);
        }
        _ => {
            // Fields: duplicate or drop one comma/space separated field of a line.
            let i = pick(u, n);
            let line = &lines[i];
            let sep = if line.contains(&b',') { b',' } else { b' ' };
            let mut fields: Vec<Vec<u8>> = line.split(|&b| b == sep).map(<[u8]>::to_vec).collect();
            let k = pick(u, fields.len());
            if u.ratio(1, 2).unwrap_or(false) {
                let f = fields[k].clone();
                fields.insert(k, f);
            } else if fields.len() > 1 {
                fields.remove(k);
            }
            lines[i] = fields.join(&sep);
        }
    }
    *data = lines.join(&b'\n');
}

// ------------------------------------------------------------------------------------ JSON

fn json_case(u: &mut Unstructured, data: &mut Vec<u8>, dict: &Dictionary) -> bool {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    for _ in 0..1 + pick(u, 4) {
        json_mutate(u, &mut v, dict);
    }
    let out = if u.ratio(1, 2).unwrap_or(false) {
        serde_json::to_vec_pretty(&v)
    } else {
        serde_json::to_vec(&v)
    };
    match out {
        Ok(out) => {
            *data = out;
            true
        }
        Err(_) => false,
    }
}

fn random_json(u: &mut Unstructured, dict: &Dictionary) -> serde_json::Value {
    use serde_json::{json, Value};
    match pick(u, 18) {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary().unwrap_or(false)),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(i64::MIN),
        5 => json!(u64::MAX),
        6 => json!(1e308),
        7 => json!(-1e-320),
        8 => json!(u
            .arbitrary::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .unwrap_or(0.5)),
        9 => json!(u.arbitrary::<i64>().unwrap_or(7)),
        10 => Value::String(u.arbitrary::<String>().unwrap_or_default()),
        11 => Value::String("a".repeat(1 + upto(u, 100_000))),
        12 => Value::String(
            dict.keys
                .get(pick(u, dict.keys.len().max(1)))
                .cloned()
                .unwrap_or_default(),
        ),
        13 => json!([]),
        14 => json!({}),
        15 => {
            // Deep nesting (past serde_json's recursion limit sometimes).
            let mut x = Value::Null;
            for _ in 0..1 + upto(u, 200) {
                x = if u.ratio(1, 2).unwrap_or(true) {
                    json!([x])
                } else {
                    json!({ "a": x })
                };
            }
            x
        }
        16 => Value::Array(vec![Value::Null; 1 + upto(u, 10_000)]),
        _ => Value::String("\u{0}\u{feff}\u{202e}é😀\u{10ffff}".into()),
    }
}

/// Walk to a random node and change it.
fn json_mutate(u: &mut Unstructured, root: &mut serde_json::Value, dict: &Dictionary) {
    use serde_json::Value;
    let mut node = root;
    // Descend: stop at a random depth or at a leaf.
    loop {
        let stop = u.ratio(1, 4).unwrap_or(true);
        let has_children = match node {
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => false,
        };
        if stop || !has_children {
            break;
        }
        node = match node {
            Value::Object(m) => {
                let i = pick(u, m.len());
                m.values_mut().nth(i).expect("index in range")
            }
            Value::Array(a) => {
                let i = pick(u, a.len());
                &mut a[i]
            }
            _ => unreachable!("has_children"),
        };
    }
    match node {
        Value::Object(m) if !m.is_empty() => match pick(u, 5) {
            0 => {
                let k = m.keys().nth(pick(u, m.len())).cloned().expect("in range");
                m.remove(&k);
            }
            1 => {
                // Rename a key (a near miss or another known key).
                let k = m.keys().nth(pick(u, m.len())).cloned().expect("in range");
                let x = m.remove(&k).expect("present");
                let new = match pick(u, 3) {
                    0 => k.to_uppercase(),
                    1 => format!("{k} "),
                    _ => dict
                        .keys
                        .get(pick(u, dict.keys.len().max(1)))
                        .cloned()
                        .unwrap_or_default(),
                };
                m.insert(new, x);
            }
            2 => {
                let k = dict
                    .keys
                    .get(pick(u, dict.keys.len().max(1)))
                    .cloned()
                    .unwrap_or_default();
                m.insert(k, random_json(u, dict));
            }
            3 => {
                let k = m.keys().nth(pick(u, m.len())).cloned().expect("in range");
                m.insert(k, random_json(u, dict));
            }
            _ => *node = random_json(u, dict),
        },
        Value::Array(a) if !a.is_empty() => match pick(u, 4) {
            0 => {
                a.remove(pick(u, a.len()));
            }
            1 => {
                let x = a[pick(u, a.len())].clone();
                let times = 1 + upto(u, 100);
                for _ in 0..times {
                    a.push(x.clone());
                }
            }
            2 => {
                let i = pick(u, a.len());
                a[i] = random_json(u, dict);
            }
            _ => *node = random_json(u, dict),
        },
        // Change a scalar's type or value.
        Value::Number(n) if u.ratio(1, 3).unwrap_or(false) => {
            *node = Value::String(n.to_string());
        }
        Value::String(s) if u.ratio(1, 3).unwrap_or(false) => {
            *node = match s.parse::<f64>() {
                Ok(f) if f.is_finite() => serde_json::json!(f),
                _ => Value::String(format!("{s}{s}")),
            };
        }
        _ => *node = random_json(u, dict),
    }
}

// ------------------------------------------------------------------------------------ TOML

fn toml_case(u: &mut Unstructured, data: &mut Vec<u8>, dict: &Dictionary) -> bool {
    let Some(mut t) = std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse::<toml::Table>().ok())
    else {
        return false;
    };
    for _ in 0..1 + pick(u, 4) {
        let mut v = toml::Value::Table(std::mem::take(&mut t));
        toml_mutate(u, &mut v, dict);
        t = match v {
            toml::Value::Table(t) => t,
            other => {
                let mut t = toml::Table::new();
                t.insert("value".into(), other);
                t
            }
        };
    }
    match toml::to_string(&t) {
        Ok(s) => {
            *data = s.into_bytes();
            true
        }
        Err(_) => false,
    }
}

fn random_toml(u: &mut Unstructured, dict: &Dictionary) -> toml::Value {
    use toml::Value;
    match pick(u, 16) {
        0 => Value::Boolean(u.arbitrary().unwrap_or(false)),
        1 => Value::Integer(0),
        2 => Value::Integer(-1),
        3 => Value::Integer(i64::MIN),
        4 => Value::Integer(i64::MAX),
        5 => Value::Float(f64::NAN),
        6 => Value::Float(f64::INFINITY),
        7 => Value::Float(-0.0),
        8 => Value::Float(u.arbitrary::<f64>().unwrap_or(0.5)),
        9 => Value::String(u.arbitrary::<String>().unwrap_or_default()),
        10 => Value::String("a".repeat(1 + upto(u, 100_000))),
        11 => Value::String(
            dict.keys
                .get(pick(u, dict.keys.len().max(1)))
                .cloned()
                .unwrap_or_default(),
        ),
        12 => Value::Array(vec![]),
        13 => Value::Table(toml::Table::new()),
        14 => {
            let mut x = Value::Integer(1);
            for _ in 0..1 + upto(u, 100) {
                x = Value::Array(vec![x]);
            }
            x
        }
        _ => Value::Datetime("1979-05-27T07:32:00Z".parse().expect("a valid datetime")),
    }
}

fn toml_mutate(u: &mut Unstructured, root: &mut toml::Value, dict: &Dictionary) {
    use toml::Value;
    let mut node = root;
    loop {
        let stop = u.ratio(1, 4).unwrap_or(true);
        let has_children = match node {
            Value::Table(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => false,
        };
        if stop || !has_children {
            break;
        }
        node = match node {
            Value::Table(m) => {
                let i = pick(u, m.len());
                m.iter_mut().nth(i).expect("index in range").1
            }
            Value::Array(a) => {
                let i = pick(u, a.len());
                &mut a[i]
            }
            _ => unreachable!("has_children"),
        };
    }
    match node {
        Value::Table(m) if !m.is_empty() => match pick(u, 5) {
            0 => {
                let k = m.keys().nth(pick(u, m.len())).cloned().expect("in range");
                m.remove(&k);
            }
            1 => {
                let k = m.keys().nth(pick(u, m.len())).cloned().expect("in range");
                let x = m.remove(&k).expect("present");
                let new = match pick(u, 3) {
                    0 => k.to_uppercase(),
                    1 => format!("{k}_"),
                    _ => dict
                        .keys
                        .get(pick(u, dict.keys.len().max(1)))
                        .cloned()
                        .unwrap_or_default(),
                };
                m.insert(new, x);
            }
            2 => {
                let k = dict
                    .keys
                    .get(pick(u, dict.keys.len().max(1)))
                    .cloned()
                    .unwrap_or_default();
                m.insert(k, random_toml(u, dict));
            }
            3 => {
                let k = m.keys().nth(pick(u, m.len())).cloned().expect("in range");
                m.insert(k, random_toml(u, dict));
            }
            _ => *node = random_toml(u, dict),
        },
        Value::Array(a) if !a.is_empty() => match pick(u, 4) {
            0 => {
                a.remove(pick(u, a.len()));
            }
            1 => {
                let x = a[pick(u, a.len())].clone();
                for _ in 0..1 + upto(u, 100) {
                    a.push(x.clone());
                }
            }
            2 => {
                let i = pick(u, a.len());
                a[i] = random_toml(u, dict);
            }
            _ => *node = random_toml(u, dict),
        },
        Value::String(s) if u.ratio(1, 3).unwrap_or(false) => {
            *node = match s.parse::<f64>() {
                Ok(f) => Value::Float(f),
                Err(_) => Value::String(format!("{s}{s}")),
            };
        }
        Value::Integer(i) if u.ratio(1, 3).unwrap_or(false) => {
            *node = Value::String(i.to_string());
        }
        _ => *node = random_toml(u, dict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mutator must make inputs that differ from the seed most of the time, or the
    /// fuzz targets test little beyond their seeds.
    #[test]
    fn cases_differ_from_their_seeds() {
        let seeds = vec![br#"{"a": [1, 2, {"b": "c"}], "d": null}"#.to_vec()];
        let dict = Dictionary::new(Kind::Json, &seeds);
        let mut changed = 0;
        for i in 0..200u32 {
            let entropy: Vec<u8> = (0..512u32)
                .map(|j| (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8)
                .collect();
            let mut u = Unstructured::new(&entropy);
            let out = case(&mut u, Kind::Json, &seeds, &dict);
            if out != seeds[0] {
                changed += 1;
            }
        }
        assert!(
            changed > 150,
            "only {changed} of 200 cases changed the seed"
        );
    }

    /// TOML mutation writes documents back that still parse most of the time (structure-aware
    /// cases reach the parser's semantic checks, not only its syntax errors).
    #[test]
    fn toml_cases_mostly_parse() {
        let seeds = vec![b"name = \"x\"\n[labels]\nvalues = [\"a\", \"b\"]\n".to_vec()];
        let dict = Dictionary::new(Kind::Toml, &seeds);
        let mut parsed = 0;
        for i in 0..200u32 {
            let entropy: Vec<u8> = (0..512u32)
                .map(|j| (i.wrapping_mul(2_246_822_519) ^ j.wrapping_mul(3_266_489_917)) as u8)
                .collect();
            let mut u = Unstructured::new(&entropy);
            let out = case(&mut u, Kind::Toml, &seeds, &dict);
            if std::str::from_utf8(&out)
                .ok()
                .and_then(|s| s.parse::<toml::Table>().ok())
                .is_some()
            {
                parsed += 1;
            }
        }
        assert!(parsed > 60, "only {parsed} of 200 TOML cases parse");
    }
}
