//! FaceXBench (Kartik-3004/facexbench): `benchmark/*.json`, one object per file with shared
//! metadata and a `questions` map; each question has its own images, text, options and
//! lettered answer.
//!
//! Image paths: the JSON files say `images/<file>/question_<n>.png`, and the repository keeps
//! those files at `benchmark/images/...`, so the paths are relative to the folder that holds
//! the JSON files. Upstream `evaluate.py` passes the paths to the model unjoined (relative to
//! its working directory), so a copy laid out as `<root>/images` beside `<root>/benchmark` is
//! also found: the reader tries the JSON folder first, then its parent. `dataset.images`
//! overrides both.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common::{check_image, resolve, Collector, Opts};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::task::DatasetSpec;

const KEYS: &[&str] = &["files", "groups"];

/// Top-level keys copied into `Item::fields` (JSON key → field name).
const FILE_FIELDS: &[(&str, &str)] = &[
    ("category", "category"),
    ("sub-category", "subcategory"),
    ("dataset", "dataset"),
    ("question_type", "question_type"),
    ("num_images", "num_images"),
    ("prepend_text", "prepend_text"),
    ("postpend_text", "postpend_text"),
    ("context", "context"),
];

pub(super) fn read(
    spec: &DatasetSpec,
    _ctx: &Ctx,
    data_root: &Path,
) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("facexbench", &spec.options, KEYS)?;
    let patterns = opts.list("files")?;
    let group_fields = opts.list("groups")?.unwrap_or_default();
    let path = resolve(data_root, &spec.path);
    let (json_dir, mut files) = list_json(&path)?;
    if let Some(patterns) = &patterns {
        for p in patterns {
            if !files.iter().any(|f| glob_match(p, &file_name(f))) {
                return Err(input_error(format!(
                    "dataset.options.files: \"{p}\" matches no JSON file in {}",
                    json_dir.display()
                )));
            }
        }
        files.retain(|f| patterns.iter().any(|p| glob_match(p, &file_name(f))));
    }
    let roots: Vec<PathBuf> = match &spec.images {
        Some(images) => {
            let root = resolve(data_root, images);
            if !root.is_dir() {
                return Err(input_error(format!(
                    "dataset.images = {}: folder not found; expected the folder that holds FaceXBench's images/ folder",
                    root.display()
                )));
            }
            vec![root]
        }
        None => {
            let mut v = vec![json_dir.clone()];
            v.extend(json_dir.parent().map(Path::to_path_buf));
            v
        }
    };
    let mut out = Collector::default();
    for file in &files {
        read_file(file, &roots, &group_fields, &mut out);
    }
    Ok(out.finish())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The folder holding the JSON files and the files themselves, sorted by name.
fn list_json(path: &Path) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let expected = "expected FaceXBench's benchmark/ folder (48 *.json files with images/ beside them) or one of its JSON files";
    if path.is_file() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok((dir, vec![path.to_path_buf()]));
    }
    if !path.is_dir() {
        return Err(input_error(format!(
            "dataset.path = {}: not found; {expected}",
            path.display()
        )));
    }
    let list = |dir: &Path| -> anyhow::Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| input_error(format!("{}: cannot list folder: {e}", dir.display())))?;
        let mut v: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            })
            .collect();
        v.sort();
        Ok(v)
    };
    let files = list(path)?;
    if !files.is_empty() {
        return Ok((path.to_path_buf(), files));
    }
    // Pointing at a checkout of the repository (which holds benchmark/) works too.
    let nested = path.join("benchmark");
    if nested.is_dir() {
        let files = list(&nested)?;
        if !files.is_empty() {
            return Ok((nested, files));
        }
    }
    Err(input_error(format!(
        "dataset.path = {}: no *.json files; {expected}",
        path.display()
    )))
}

/// Shell-style matching of a file name: `*` any run of characters, `?` one character.
/// Hand-written because the `files` option needs only these two and a glob crate would walk
/// the file system itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn read_file(path: &Path, roots: &[PathBuf], group_fields: &[String], out: &mut Collector) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file_id = format!("facexbench:{stem}");
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return out.error(file_id, shown, format!("cannot read file: {e}")),
    };
    let root: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return out.error(
                file_id,
                format!("{shown}:{}", e.line()),
                format!("not valid JSON: {e}"),
            );
        }
    };
    let Some(obj) = root.as_object() else {
        return out.error(
            file_id,
            format!("{shown}:1"),
            "expected a JSON object with a \"questions\" map",
        );
    };
    let Some(questions) = obj.get("questions").and_then(Value::as_object) else {
        return out.error(
            file_id,
            format!("{shown}:1"),
            "expected a \"questions\" object mapping keys to questions",
        );
    };
    let mut fields = BTreeMap::new();
    for (key, name) in FILE_FIELDS {
        if let Some(v) = obj.get(*key).and_then(scalar_str) {
            fields.insert(name.to_string(), v);
        }
    }
    fields.insert("file".to_string(), stem.clone());
    let lines = question_key_lines(&text);
    let mut keys: Vec<&String> = questions.keys().collect();
    keys.sort_by(|a, b| key_order(a, b));
    for key in keys {
        let id = format!("facexbench:{stem}:{key}");
        let location = match lines.get(key.as_str()) {
            Some(l) => format!("{shown}:{l}"),
            None => shown.clone(),
        };
        match question(&questions[key], roots, &fields, group_fields) {
            Ok(mut item) => {
                item.id = id;
                out.item(item, location);
            }
            Err(message) => out.error(id, location, message),
        }
    }
}

/// Numeric keys ("1", "2", ..., "10") in numeric order, any others after them by text.
/// serde_json's map sorts keys as text, which would put "10" before "2".
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then(a.cmp(b)),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn question(
    q: &Value,
    roots: &[PathBuf],
    file_fields: &BTreeMap<String, String>,
    group_fields: &[String],
) -> Result<Item, String> {
    let q = q.as_object().ok_or("question is not a JSON object")?;
    let question_text = match q.get("question_text") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("\"question_text\" is not a string".into()),
        None => return Err("missing \"question_text\"".into()),
    };
    let options: Vec<String> = match q.get("options") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(python_str(n)),
                other => Err(format!(
                    "option {} is {}, not a string or number",
                    i + 1,
                    kind(other)
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"options\" is not a list".into()),
        None => return Err("missing \"options\"".into()),
    };
    if options.len() < 2 {
        return Err(format!(
            "{} option(s); a multiple-choice question needs at least 2",
            options.len()
        ));
    }
    if options.len() > 26 {
        return Err(format!(
            "{} options; at most 26 can be lettered",
            options.len()
        ));
    }
    let letter = match q.get("correct_answer_option") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err("\"correct_answer_option\" is not a string".into()),
        None => return Err("missing \"correct_answer_option\"".into()),
    };
    let index = match letter.as_bytes() {
        [c @ b'A'..=b'Z'] => (c - b'A') as usize,
        _ => {
            return Err(format!(
                "\"correct_answer_option\" is \"{letter}\"; expected a capital letter A-Z"
            ))
        }
    };
    if index >= options.len() {
        return Err(format!(
            "\"correct_answer_option\" is \"{letter}\" but there are only {} options",
            options.len()
        ));
    }
    let raw_paths: Vec<String> = match q.get("image_paths") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or("an entry of \"image_paths\" is not a string")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"image_paths\" is not a list".into()),
    };
    let mut images = Vec::with_capacity(raw_paths.len());
    let mut missing = Vec::new();
    for raw in &raw_paths {
        match find_image(raw, roots) {
            Some(p) => images.push(p),
            None => missing.push(raw.as_str()),
        }
    }
    if !missing.is_empty() {
        let tried: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(format!(
            "image file(s) not found: {} (looked in {})",
            missing.join(", "),
            tried.join(" and ")
        ));
    }
    let mut fields = file_fields.clone();
    if let Some(answer) = q.get("answer").and_then(scalar_str) {
        fields.insert("answer".to_string(), answer);
    }
    let mut groups = BTreeMap::new();
    for g in group_fields {
        if let Some(v) = fields.get(g) {
            groups.insert(g.clone(), v.clone());
        }
    }
    Ok(Item {
        id: String::new(),
        images,
        question: Some(question_text),
        options,
        target: Target::Choice(index),
        groups,
        cluster: None,
        fields,
    })
}

fn find_image(raw: &str, roots: &[PathBuf]) -> Option<PathBuf> {
    let p = Path::new(raw);
    if p.is_absolute() {
        return check_image(p).ok().map(|_| p.to_path_buf());
    }
    roots
        .iter()
        .map(|r| r.join(p))
        .find(|c| check_image(c).is_ok())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Strings as they are; numbers and booleans as Python's `str()` writes them.
fn scalar_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(python_str(n)),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// A JSON number as Python's `str()` prints what `json.load` made of it: integers as they
/// are, floats in their shortest round-trip form with at least one decimal (`3.0`), switching
/// to exponent form (`1e+16`, `1e-05`) outside `1e-4 <= |x| < 1e16`. Option texts must match
/// FaceXBench's own prompt bytes, which come from Python.
pub fn python_str(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    python_float(n.as_f64().unwrap_or(f64::NAN))
}

fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest digits that round-trip, as Python's repr does: "2.5e0".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let e = exp as usize;
            let (int, frac) = if digits.len() > e + 1 {
                (digits[..=e].to_string(), digits[e + 1..].to_string())
            } else {
                (
                    format!("{digits}{}", "0".repeat(e + 1 - digits.len())),
                    String::new(),
                )
            };
            format!("{int}.{}", if frac.is_empty() { "0" } else { &frac })
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}

/// 1-based line of each key of the top-level `questions` object, found by a small scan of the
/// JSON text (serde_json does not report positions of map entries).
fn question_key_lines(text: &str) -> HashMap<String, usize> {
    let bytes = text.as_bytes();
    let mut lines = HashMap::new();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    let mut questions_depth: Option<usize> = None;
    let mut next_object_is_questions = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' | b'[' => {
                depth += 1;
                if next_object_is_questions && bytes[i] == b'{' && depth == 2 {
                    questions_depth = Some(2);
                }
                next_object_is_questions = false;
            }
            b'}' | b']' => {
                if questions_depth == Some(depth) {
                    return lines;
                }
                depth = depth.saturating_sub(1);
            }
            b'"' => {
                let start = i;
                let start_line = line;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    } else if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                let end = (i + 1).min(bytes.len());
                let mut j = end;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                let is_key = j < bytes.len() && bytes[j] == b':';
                if is_key {
                    let key: Option<String> = serde_json::from_str(&text[start..end]).ok();
                    if depth == 1 {
                        next_object_is_questions = key.as_deref() == Some("questions");
                    } else if questions_depth == Some(depth) {
                        if let Some(k) = key {
                            lines.entry(k).or_insert(start_line);
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_formatting() {
        let f = |s: &str| python_str(&serde_json::from_str::<serde_json::Number>(s).unwrap());
        assert_eq!(f("3"), "3");
        assert_eq!(f("-7"), "-7");
        assert_eq!(f("2.5"), "2.5");
        assert_eq!(f("3.0"), "3.0");
        assert_eq!(f("0.1"), "0.1");
        assert_eq!(f("0.0001"), "0.0001");
        assert_eq!(f("0.00001"), "1e-05");
        assert_eq!(f("1e16"), "1e+16");
        assert_eq!(f("1.5e16"), "1.5e+16");
        assert_eq!(f("123456789.25"), "123456789.25");
        assert_eq!(f("-12.75"), "-12.75");
        assert_eq!(f("1e15"), "1000000000000000.0");
        assert_eq!(f("0.0"), "0.0");
    }

    #[test]
    fn globbing() {
        assert!(glob_match(
            "fairface_*",
            "fairface_single_mcq_age_test.json"
        ));
        assert!(glob_match("*.json", "a.json"));
        assert!(glob_match("a?c.json", "abc.json"));
        assert!(!glob_match("utk*", "fairface.json"));
        assert!(glob_match("tools_retrieval.json", "tools_retrieval.json"));
    }

    #[test]
    fn finds_question_lines() {
        let text = "{\n \"a\": {\"1\": 2},\n \"questions\": {\n  \"1\": {\"x\": {\"2\": 1}},\n  \"10\": {}\n }\n}";
        let l = question_key_lines(text);
        assert_eq!(l.get("1"), Some(&4));
        assert_eq!(l.get("10"), Some(&5));
        assert_eq!(l.get("2"), None);
    }
}
