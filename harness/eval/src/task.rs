//! Tasks as data: the schema of `tasks/*.toml`, loading with errors that name the file, line
//! and field, and validation. See `docs/task-format.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::builtin::{self, Definition, Origin};
use crate::error::input_error;
use crate::labels::LabelSet;
use crate::run_folder::TaskRecord;

/// One task file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    /// Bumped whenever a change would change scores; runs of different versions are never compared.
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub dataset: DatasetSpec,
    #[serde(default)]
    pub labels: LabelSpec,
    pub question: QuestionSpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
    #[serde(default)]
    pub fairness: FairnessSpec,
}

fn default_version() -> String {
    "1".into()
}

/// Which reader turns files into items, and where the files are.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub reader: ReaderKind,
    /// The label file or folder, relative to `--data` (or absolute).
    pub path: PathBuf,
    /// Where image paths in the label file are rooted, relative to `--data`. Defaults to the
    /// folder that holds `path` (or `path` itself when it is a folder).
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// Reader-specific options; each reader rejects keys it does not know.
    #[serde(default)]
    pub options: toml::Table,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    /// FaceXBench `benchmark/*.json`.
    Facexbench,
    /// FairFace `fairface_label_{train,val}.csv`.
    Fairface,
    /// UTKFace `[age]_[gender]_[race]_[datetime].jpg` file names.
    Utkface,
    /// RAF-DB `list_patition_label.txt`.
    Rafdb,
    /// Generic CSV or JSONL manifest with image, label and group columns.
    Manifest,
    /// One folder per class.
    Folders,
    /// LFW-style verification `pairs.txt` (also CALFW, CPLFW, CFP and AgeDB exports).
    LfwPairs,
    /// RFW's `<race>_pairs.txt` verification lists.
    RfwPairs,
}

impl ReaderKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReaderKind::Facexbench => "facexbench",
            ReaderKind::Fairface => "fairface",
            ReaderKind::Utkface => "utkface",
            ReaderKind::Rafdb => "rafdb",
            ReaderKind::Manifest => "manifest",
            ReaderKind::Folders => "folders",
            ReaderKind::LfwPairs => "lfw_pairs",
            ReaderKind::RfwPairs => "rfw_pairs",
        }
    }
}

/// The target and its label set.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// The dataset field that holds the target (`age`, `expression`, `yaw`, ...). Readers with
    /// a fixed answer (FaceXBench) leave it empty.
    #[serde(default)]
    pub field: String,
    /// Canonical labels, in the order they are shown. Empty for numeric tasks.
    #[serde(default)]
    pub values: Vec<String>,
    /// Other spellings of each label: `happiness = ["happy", "joy"]`.
    #[serde(default)]
    pub synonyms: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuestionStyle {
    /// Lettered options (A), (B), ...; the answer is a letter or an option's text.
    MultipleChoice,
    /// A free answer mapped onto the label set.
    Open,
    /// A number (age in years, yaw in degrees).
    Numeric,
    /// Two faces and a same/different answer (`docs/verification.md`): answered like an open
    /// question over the two labels (the "same" answer first), and scored by the model's
    /// probability of "same".
    Verification,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// Generate, then extract the answer from the text.
    Generate,
    /// Compare the model's log-likelihood of each option; falls back to generation for
    /// models that cannot score.
    Likelihood,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExtractorKind {
    /// faceval's documented rules; the last explicit declaration wins.
    Strict,
    /// FaceXBench's `aggregate_results.py`, quirks included.
    Facexbench,
}

/// How the question is put and answered.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuestionSpec {
    pub style: QuestionStyle,
    /// A minijinja template for the user text. Variables: `question`, `options` (a list of
    /// `{letter, text}`), `labels`, `fields` (per-item fields such as `prepend_text`). Every
    /// model gets exactly these bytes; their sha256 is recorded per item.
    pub template: String,
    /// The question text when items carry none.
    #[serde(default)]
    pub text: String,
    /// Other phrasings of `text` (`docs/prompt-sensitivity.md`). Each is rendered as
    /// `question` by the same `template`; every item is asked once with `text` (variant 0,
    /// the headline) and once per entry here (variant 1, 2, ...).
    #[serde(default)]
    pub variants: Option<Vec<String>>,
    /// Options per multiple-choice question built from the label set; 0 shows every label.
    #[serde(default)]
    pub num_options: usize,
    /// Shuffle the options with `seed` (per item, so a resumed run shuffles identically).
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default)]
    pub seed: u64,
    /// Count a question right only when every rotation of its options is answered right.
    #[serde(default)]
    pub circular: bool,
    #[serde(default = "default_scoring")]
    pub scoring: Scoring,
    #[serde(default = "default_extractor")]
    pub extractor: ExtractorKind,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Numeric tasks: bin edges for bin accuracy, and for binned multiple choice.
    #[serde(default)]
    pub bins: Vec<f64>,
    /// Names of the bins (one more than `bins`).
    #[serde(default)]
    pub bin_labels: Vec<String>,
    /// Numeric tasks: the unit the answer is in, for the report.
    #[serde(default)]
    pub unit: String,
}

fn default_scoring() -> Scoring {
    Scoring::Generate
}
fn default_extractor() -> ExtractorKind {
    ExtractorKind::Strict
}
fn default_max_new_tokens() -> usize {
    32
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Accuracy,
    BalancedAccuracy,
    MacroF1,
    ConfusionMatrix,
    Mae,
    BinAccuracy,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    #[serde(default = "default_metrics")]
    pub report: Vec<MetricKind>,
    /// Per-item fields to break accuracy down by (FaceXBench: `category`, `subcategory`).
    #[serde(default)]
    pub breakdown: Vec<String>,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            report: default_metrics(),
            breakdown: vec![],
        }
    }
}

fn default_metrics() -> Vec<MetricKind> {
    vec![MetricKind::Accuracy]
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FairnessSpec {
    /// Group fields audited by default.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Items sharing this field's value form a cluster; `"image"` clusters by image.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Smaller groups are shown, flagged and left out of gap metrics.
    #[serde(default = "default_min_group")]
    pub min_group: usize,
}

impl Default for FairnessSpec {
    fn default() -> Self {
        Self {
            groups: vec![],
            cluster: None,
            min_group: default_min_group(),
        }
    }
}

fn default_min_group() -> usize {
    30
}

/// A task loaded from disk, with what a run records about it.
#[derive(Debug, Clone)]
pub struct Task {
    pub spec: TaskSpec,
    pub labels: LabelSet,
    /// Where messages say it is: the file read, or `tasks/<name>.toml` for a built-in.
    pub path: PathBuf,
    /// Built into the binary, or read from `path`.
    pub origin: Origin,
    /// The TOML text.
    pub source: String,
    /// sha256 of the TOML bytes.
    pub fingerprint: String,
}

impl Task {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Load and validate a task file.
    pub fn load(path: &Path) -> anyhow::Result<Task> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| input_error(format!("{}: cannot read task file: {e}", path.display())))?;
        Self::parse(&source, path)
    }

    /// Parse and validate a task definition, built-in or from a folder.
    pub fn from_definition(def: &Definition) -> anyhow::Result<Task> {
        let mut t = Self::parse(&def.text, &def.path)?;
        t.origin = def.origin.clone();
        Ok(t)
    }

    /// Parse and validate task TOML; `path` is used in messages.
    pub fn parse(source: &str, path: &Path) -> anyhow::Result<Task> {
        let spec: TaskSpec = toml::from_str(source).map_err(|e| {
            input_error(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let fingerprint = hex::encode(Sha256::digest(source.as_bytes()));
        let at = |section: &str, key: &str| locate(source, path, section, key);
        let labels = LabelSet::new(&spec.labels.values, &spec.labels.synonyms).map_err(|e| {
            input_error(format!(
                "{}: labels.synonyms: {e}",
                at("labels", "synonyms")
            ))
        })?;
        let q = &spec.question;
        match q.style {
            QuestionStyle::Numeric => {
                if !q.bins.is_empty() && q.bin_labels.len() != q.bins.len() + 1 {
                    return Err(input_error(format!(
                        "{}: question.bin_labels has {} names but question.bins has {} edges; give one name more than edges",
                        at("question", "bin_labels"),
                        q.bin_labels.len(),
                        q.bins.len()
                    )));
                }
                if q.bins.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(input_error(format!(
                        "{}: question.bins must be strictly increasing",
                        at("question", "bins")
                    )));
                }
                if q.scoring == Scoring::Likelihood {
                    return Err(input_error(format!(
                        "{}: question.scoring = \"likelihood\" needs options; numeric questions are generated",
                        at("question", "scoring")
                    )));
                }
            }
            QuestionStyle::Verification => {
                if labels.len() != 2 {
                    return Err(input_error(format!(
                        "{}: a verification question needs exactly two labels.values, the answer for the same person first (e.g. [\"same\", \"different\"] or [\"yes\", \"no\"]); found {}",
                        at("labels", "values"),
                        labels.len()
                    )));
                }
                if q.circular || !q.bins.is_empty() {
                    return Err(input_error(format!(
                        "{}: question.circular and question.bins do not apply to verification questions",
                        at("question", "style")
                    )));
                }
            }
            QuestionStyle::Open => {
                if labels.is_empty() {
                    return Err(input_error(format!(
                        "{}: an open question needs labels.values to map answers onto",
                        at("labels", "values")
                    )));
                }
            }
            QuestionStyle::MultipleChoice => {
                if labels.is_empty() && spec.dataset.reader != ReaderKind::Facexbench {
                    return Err(input_error(format!(
                        "{}: a multiple-choice question needs labels.values (or a reader that supplies options, such as facexbench)",
                        at("labels", "values")
                    )));
                }
                if q.num_options == 1 || (q.num_options > 26) {
                    return Err(input_error(format!(
                        "{}: question.num_options must be 0 (all labels) or 2..=26, not {}",
                        at("question", "num_options"),
                        q.num_options
                    )));
                }
            }
        }
        let wants_labels = spec.metrics.report.iter().any(|m| {
            matches!(
                m,
                MetricKind::BalancedAccuracy | MetricKind::MacroF1 | MetricKind::ConfusionMatrix
            )
        });
        if wants_labels && labels.is_empty() {
            return Err(input_error(format!(
                "{}: balanced_accuracy, macro_f1 and confusion_matrix need labels.values",
                at("metrics", "report")
            )));
        }
        let numeric_metric = spec
            .metrics
            .report
            .iter()
            .any(|m| matches!(m, MetricKind::Mae | MetricKind::BinAccuracy));
        if numeric_metric && q.style != QuestionStyle::Numeric {
            return Err(input_error(format!(
                "{}: mae and bin_accuracy apply to numeric questions only",
                at("metrics", "report")
            )));
        }
        if spec.metrics.report.contains(&MetricKind::BinAccuracy) && q.bins.is_empty() {
            return Err(input_error(format!(
                "{}: bin_accuracy needs question.bins",
                at("metrics", "report")
            )));
        }
        if let Some(variants) = &q.variants {
            let at = at("question", "variants");
            let bad = |why: String| input_error(format!("{at}: question.variants {why}"));
            if variants.is_empty() {
                return Err(bad(
                    "is empty; list at least one other phrasing of question.text, or leave the key out"
                        .into(),
                ));
            }
            if q.text.trim().is_empty() {
                return Err(bad(
                    "needs question.text: it is variant 0, the phrasing the headline scores use"
                        .into(),
                ));
            }
            if spec.dataset.reader == ReaderKind::Facexbench {
                return Err(bad(
                    "cannot apply: facexbench items bring their own question text".into(),
                ));
            }
            let mut seen = vec![q.text.trim()];
            for (i, v) in variants.iter().enumerate() {
                if v.trim().is_empty() {
                    return Err(bad(format!("[{i}] is empty")));
                }
                if seen.contains(&v.trim()) {
                    return Err(bad(format!(
                        "[{i}] repeats an earlier phrasing (question.text or a variant): {v:?}"
                    )));
                }
                seen.push(v.trim());
            }
        }
        faceval_models::chat_template::check_limits(&q.template)
            .map_err(|m| input_error(format!("{}: {m}", at("question", "template"))))?;
        let mut env = minijinja::Environment::new();
        env.add_template("prompt", &q.template).map_err(|e| {
            input_error(format!(
                "{}: question.template does not parse: {e}",
                at("question", "template")
            ))
        })?;
        Ok(Task {
            spec,
            labels,
            path: path.to_path_buf(),
            origin: Origin::File(path.to_path_buf()),
            source: source.to_string(),
            fingerprint,
        })
    }
}

/// `file:line` of `key` inside `[section]`, or of the section, or just `file`.
fn locate(source: &str, path: &Path, section: &str, key: &str) -> String {
    let mut in_section = false;
    let mut section_line = None;
    for (i, line) in source.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            in_section = name == section || name.starts_with(&format!("{section}."));
            if name == section {
                section_line = Some(i + 1);
            }
            if in_section && name == format!("{section}.{key}") {
                return format!("{}:{}", path.display(), i + 1);
            }
            continue;
        }
        if in_section && t.split('=').next().map(str::trim) == Some(key) {
            return format!("{}:{}", path.display(), i + 1);
        }
    }
    match section_line {
        Some(l) => format!("{}:{}", path.display(), l),
        None => path.display().to_string(),
    }
}

/// Find a task by file path, or by name: `<name>.toml` in `tasks_dir` (`--tasks-dir`) when it
/// has one, else the built-in task of that name.
pub fn resolve(name_or_path: &str, tasks_dir: Option<&Path>) -> anyhow::Result<Task> {
    let as_path = Path::new(name_or_path);
    if as_path.extension().is_some_and(|e| e == "toml") || as_path.is_file() {
        return Task::load(as_path);
    }
    if let Some(def) = builtin::find(&builtin::TASK_FILES, tasks_dir, name_or_path)? {
        return Task::from_definition(&def);
    }
    let known = builtin::known_names(&builtin::TASK_FILES, tasks_dir).join(", ");
    let searched = match tasks_dir {
        Some(d) => format!(
            "not a built-in task, no file {}",
            d.join(format!("{name_or_path}.toml")).display()
        ),
        None => "not a built-in task (--tasks-dir adds a folder of task files)".to_string(),
    };
    Err(input_error(format!(
        "unknown task \"{name_or_path}\": {searched}, and no such path. Known tasks: {known}"
    )))
}

/// Every task definition: the built-ins and the files of `tasks_dir` (which replace built-ins
/// of the same name), sorted by name.
pub fn all(tasks_dir: Option<&Path>) -> anyhow::Result<Vec<Definition>> {
    builtin::all(&builtin::TASK_FILES, tasks_dir, false)
}

/// The minimum group size of the task a run recorded, when its TOML is still where the run
/// recorded it and is the same file (same fingerprint); audits and the gate fall back to it.
pub fn recorded_min_group(record: &TaskRecord, run_dir: &Path) -> Option<usize> {
    if record.path.is_empty() {
        return None;
    }
    let recorded = Path::new(&record.path);
    let candidates = [recorded.to_path_buf(), run_dir.join(recorded)];
    candidates.iter().find_map(|p| {
        let t = Task::load(p).ok()?;
        (t.fingerprint == record.fingerprint).then_some(t.spec.fairness.min_group)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo-expression"
[dataset]
reader = "manifest"
path = "manifest.csv"
[labels]
field = "expression"
values = ["happiness", "sadness"]
[labels.synonyms]
happiness = ["happy"]
[question]
style = "multiple_choice"
template = "{{ question }}"
"#;

    #[test]
    fn parses_a_good_task() {
        let t = Task::parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(t.spec.version, "1");
        assert_eq!(t.labels.canonical("happy"), Some("happiness"));
        assert_eq!(t.fingerprint.len(), 64);
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let bad = GOOD.replace("style = ", "styel = \"x\"\nstyle = ");
        let err = Task::parse(&bad, Path::new("tasks/x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(crate::error::is_input_error(&err));
        assert!(msg.contains("tasks/x.toml"), "{msg}");
        assert!(msg.contains("line 12"), "{msg}");
        assert!(msg.contains("styel"), "{msg}");
    }

    #[test]
    fn semantic_error_names_line() {
        let bad = GOOD.replace("happiness = [\"happy\"]", "joy = [\"happy\"]");
        let msg = Task::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("x.toml:9"), "{msg}");
        assert!(msg.contains("joy"), "{msg}");
    }

    #[test]
    fn variants_parse_and_bad_variants_name_file_line_and_field() {
        let with = |v: &str| {
            GOOD.replace(
                "template = ",
                &format!("text = \"Which?\"\n{v}\ntemplate = "),
            )
        };
        let t = Task::parse(
            &with("variants = [\"Which one?\", \"Name it.\"]"),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(t.spec.question.variants.as_deref().unwrap().len(), 2);
        for (bad, why) in [
            ("variants = []", "is empty"),
            ("variants = [\"Which one?\", \" \"]", "[1] is empty"),
            ("variants = [\"Which?\"]", "[0] repeats"),
        ] {
            let err = Task::parse(&with(bad), Path::new("x.toml")).unwrap_err();
            assert!(crate::error::is_input_error(&err));
            let msg = err.to_string();
            assert!(msg.starts_with("x.toml:14: question.variants"), "{msg}");
            assert!(msg.contains(why), "{msg}");
        }
        // Not a list of strings: the TOML error names the line and the field.
        let msg = Task::parse(&with("variants = \"Which one?\""), Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 14") && msg.contains("variants"), "{msg}");
        // Without question.text there is no variant 0.
        let no_text = GOOD.replace("template = ", "variants = [\"Which one?\"]\ntemplate = ");
        let msg = Task::parse(&no_text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("needs question.text"), "{msg}");
    }

    #[test]
    fn broken_template_is_rejected() {
        let bad = GOOD.replace("{{ question }}", "{{ question ");
        let msg = Task::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("question.template"), "{msg}");
    }
}
