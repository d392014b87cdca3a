//! `faceval import facexbench`: results that FaceXBench's `evaluate.py` (or VLMEvalKit) wrote —
//! the benchmark JSON files with a `prediction` on each question — become a run folder, so
//! that audit, gate and report work on results users already have.
//!
//! Answers are extracted with the FaceXBench extractor, so the imported run scores exactly as
//! `aggregate_results.py` would.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::input_error;
use crate::extract;
use crate::merge::write_predictions_atomic;
use crate::metrics::{self, RunMetrics};
use crate::prompt::LETTERS;
use crate::run_folder::{self, Manifest, Outcome, Prediction};
use crate::runner::task_record;
use crate::task::Task;

fn option_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => crate::datasets::python_str(n),
        other => other.to_string(),
    }
}

/// Import every `*.json` in `results_dir` (recursively) into the run folder `out`.
pub fn import_facexbench(
    results_dir: &Path,
    out: &Path,
    task: &Task,
    mut manifest: Manifest,
) -> anyhow::Result<RunMetrics> {
    let mut files = Vec::new();
    collect_json(results_dir, &mut files).map_err(|e| {
        input_error(format!(
            "{}: cannot list results: {e}",
            results_dir.display()
        ))
    })?;
    files.sort();
    if files.is_empty() {
        return Err(input_error(format!(
            "{}: no .json result files found",
            results_dir.display()
        )));
    }
    let mut predictions = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| input_error(format!("{}: {e}", file.display())))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| input_error(format!("{}: {e}", file.display())))?;
        let Some(questions) = doc.get("questions").and_then(Value::as_object) else {
            return Err(input_error(format!(
                "{}: no \"questions\" object; not a FaceXBench result file",
                file.display()
            )));
        };
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let mut fields = BTreeMap::new();
        for (field, key) in [("category", "category"), ("subcategory", "sub-category")] {
            if let Some(v) = meta(key) {
                if task.spec.metrics.breakdown.iter().any(|b| b == field) {
                    fields.insert(field.to_string(), v);
                }
            }
        }
        // Keys in numeric order ("1", "2", ..., "10"), as the benchmark numbers them.
        let mut keys: Vec<&String> = questions.keys().collect();
        keys.sort_by_key(|k| (k.parse::<u64>().unwrap_or(u64::MAX), k.to_string()));
        for key in keys {
            let q = &questions[key];
            let id = format!("facexbench:{stem}:{key}");
            let location = format!("{}: question {key}", file.display());
            let options: Vec<String> = q
                .get("options")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(option_text).collect())
                .unwrap_or_default();
            let target = q
                .get("correct_answer_option")
                .and_then(Value::as_str)
                .map(str::to_string);
            let mut p = Prediction {
                id,
                task: task.name().to_string(),
                rotation: 0,
                variant: 0,
                prompt_sha256: String::new(),
                image_sha256: vec![],
                raw_output: String::new(),
                parsed: None,
                target: target.clone(),
                parsed_label: None,
                target_label: None,
                parsed_value: None,
                target_value: None,
                correct: None,
                outcome: Outcome::Error,
                groups: BTreeMap::new(),
                cluster: None,
                fields: fields.clone(),
                timings: Default::default(),
                prompt_tokens: 0,
                output_tokens: 0,
                error: None,
                option_logprobs: None,
                score: None,
            };
            let Some(raw) = q.get("prediction") else {
                p.error = Some(format!("{location}: no \"prediction\" field"));
                predictions.push(p);
                continue;
            };
            let raw = match raw {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            if target.is_none() || options.is_empty() {
                p.error = Some(format!(
                    "{location}: needs \"options\" and \"correct_answer_option\""
                ));
                predictions.push(p);
                continue;
            }
            let chosen = extract::extract_facexbench(&raw, &options);
            let answer = target
                .as_deref()
                .and_then(|t| LETTERS.iter().position(|l| *l == t));
            p.raw_output = raw;
            p.parsed = chosen.map(|c| LETTERS[c].to_string());
            p.parsed_label = chosen.and_then(|c| options.get(c).cloned());
            p.target_label = answer.and_then(|a| options.get(a).cloned());
            p.correct = Some(chosen.is_some() && chosen == answer);
            p.outcome = match (chosen, p.correct) {
                (None, _) => Outcome::Unparseable,
                (_, Some(true)) => Outcome::Correct,
                _ => Outcome::Wrong,
            };
            predictions.push(p);
        }
    }
    manifest.tasks = vec![task_record(task)];
    std::fs::create_dir_all(out)
        .map_err(|e| input_error(format!("{}: cannot create: {e}", out.display())))?;
    write_predictions_atomic(&out.join(run_folder::PREDICTIONS), &predictions)?;
    manifest.finished = Some(chrono::Utc::now().to_rfc3339());
    run_folder::write_json_atomic(&out.join(run_folder::MANIFEST), &manifest)?;
    metrics::write_metrics(out)
}

fn collect_json(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
