//! Dataset readers against small datasets written into a temporary folder: good rows, every
//! kind of bad row with its `path:line`, missing folders (input errors), unknown options and
//! stable ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faceval_eval::datasets::{read, read_with_field};
use faceval_eval::item::{ReadOutcome, Target};
use faceval_eval::labels::LabelSet;
use faceval_eval::task::{DatasetSpec, ReaderKind};
use faceval_eval::{is_input_error, Task};

/// A real 4x4 PNG.
fn png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(4, 4, |x, y| {
        image::Rgb([(x * 60) as u8, (y * 60) as u8, 128])
    });
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn spec(reader: ReaderKind, path: &str, options: &str) -> DatasetSpec {
    DatasetSpec {
        reader,
        path: PathBuf::from(path),
        images: None,
        options: toml::from_str(options).unwrap(),
    }
}

fn labels(values: &[&str], synonyms: &[(&str, &[&str])]) -> LabelSet {
    let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    let syn: BTreeMap<String, Vec<String>> = synonyms
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    LabelSet::new(&values, &syn).unwrap()
}

fn ids(o: &ReadOutcome) -> Vec<String> {
    o.items.iter().map(|i| i.id.clone()).collect()
}

/// The error whose message contains `needle`, with its location.
fn error_with<'a>(o: &'a ReadOutcome, needle: &str) -> &'a faceval_eval::ItemError {
    o.errors
        .iter()
        .find(|e| e.message.contains(needle))
        .unwrap_or_else(|| panic!("no error containing {needle:?} in {:#?}", o.errors))
}

fn input_err(r: anyhow::Result<ReadOutcome>) -> String {
    let e = r.expect_err("expected an input error");
    assert!(is_input_error(&e), "not an input error: {e:#}");
    e.to_string()
}

// ---------------------------------------------------------------- facexbench

const FXB_SINGLE: &str = r#"{
    "category": "bias_fairness",
    "sub-category": "age",
    "dataset": "fairface",
    "question_type": "MCQ",
    "num_images": "single",
    "prepend_text": "Age estimation involves predicting the age.",
    "postpend_text": "Please answer the question and provide only the correct option letter, e.g., A, B, C, D.",
    "questions": {
        "1": {
            "image_paths": ["images/fx_single/question_1.png"],
            "question_text": "Estimate the age group of the person in this image.",
            "options": ["30-39", "20-29", "40-49", "10-19"],
            "correct_answer_option": "A",
            "answer": "30-39"
        },
        "2": {
            "image_paths": ["images/fx_single/question_2.png"],
            "question_text": "How old?",
            "options": ["0-2", "3-9", "10-19", "20-29"],
            "correct_answer_option": "E",
            "answer": "0-2"
        },
        "3": {
            "image_paths": ["images/fx_single/missing.png"],
            "question_text": "How old?",
            "options": ["0-2", "3-9", "10-19", "20-29"],
            "correct_answer_option": "B",
            "answer": "3-9"
        },
        "10": {
            "image_paths": ["images/fx_single/question_10.png"],
            "question_text": "How many people?",
            "options": [8, 4, 2.5, 3.0],
            "correct_answer_option": "C",
            "answer": 2.5
        }
    }
}"#;

const FXB_MULTI: &str = r#"{
    "category": "face_recognition", "sub-category": "hr_fr", "dataset": "agedb30",
    "question_type": "MCQ", "num_images": "multiple",
    "prepend_text": "Face recognition.", "postpend_text": "Answer with a letter.",
    "questions": {
        "1": {
            "image_paths": ["images/fx_multi/question_1_1.png", "images/fx_multi/question_1_2.png", "images/fx_multi/question_1_3.png"],
            "question_text": "Which two images show the same person?",
            "options": ["Images 1 and 2", "Images 2 and 3", "Images 1 and 3", "None"],
            "correct_answer_option": "B",
            "answer": "Images 2 and 3"
        }
    }
}"#;

const FXB_ZERO: &str = r#"{
    "category": "tools_use", "sub-category": "tools_retrieval", "dataset": "gpt4o",
    "question_type": "MCQ", "num_images": "zero",
    "prepend_text": "Pick the API calls.", "context": "1. Age Estimation: api_1",
    "postpend_text": "Answer with a letter.",
    "questions": {
        "1": {
            "image_paths": [],
            "question_text": "Which calls?",
            "options": ["api_1", "api_2", "api_3", "api_4"],
            "correct_answer_option": "D",
            "answer": "api_4"
        }
    }
}"#;

fn facexbench_tree(dir: &Path) -> PathBuf {
    let bench = dir.join("facexbench/benchmark");
    write(&bench.join("fx_single.json"), FXB_SINGLE);
    write(&bench.join("fx_multi.json"), FXB_MULTI);
    write(&bench.join("tools_retrieval.json"), FXB_ZERO);
    write(
        &bench.join("broken.json"),
        "{\n  \"questions\": {\n    \"1\": [\n",
    );
    for p in [
        "fx_single/question_1.png",
        "fx_single/question_2.png",
        "fx_single/question_10.png",
    ] {
        png(&bench.join("images").join(p));
    }
    for i in 1..=3 {
        png(&bench.join(format!("images/fx_multi/question_1_{i}.png")));
    }
    bench
}

#[test]
fn facexbench_reads_single_multi_zero_and_numeric_questions() {
    let dir = tempfile::tempdir().unwrap();
    let bench = facexbench_tree(dir.path());
    let s = spec(ReaderKind::Facexbench, "facexbench/benchmark", "");
    let out = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "facexbench:fx_multi:1",
            "facexbench:fx_single:1",
            "facexbench:fx_single:10",
            "facexbench:tools_retrieval:1",
        ]
    );

    let multi = &out.items[0];
    assert_eq!(multi.images.len(), 3);
    assert_eq!(
        multi.images[2],
        bench.join("images/fx_multi/question_1_3.png")
    );
    assert_eq!(multi.target, Target::Choice(1));
    assert_eq!(multi.fields["num_images"], "multiple");

    let single = &out.items[1];
    assert_eq!(
        single.question.as_deref(),
        Some("Estimate the age group of the person in this image.")
    );
    assert_eq!(single.options, vec!["30-39", "20-29", "40-49", "10-19"]);
    assert_eq!(single.target, Target::Choice(0));
    assert_eq!(single.fields["category"], "bias_fairness");
    assert_eq!(single.fields["subcategory"], "age");
    assert_eq!(single.fields["dataset"], "fairface");
    assert_eq!(single.fields["question_type"], "MCQ");
    assert_eq!(
        single.fields["prepend_text"],
        "Age estimation involves predicting the age."
    );
    assert!(single.fields["postpend_text"].starts_with("Please answer"));
    assert_eq!(single.fields["answer"], "30-39");
    assert!(!single.fields.contains_key("context"));
    assert!(single.groups.is_empty());

    // Numbers become the text Python's str() gives; numeric keys sort as numbers ("10" after "1").
    let numeric = &out.items[2];
    assert_eq!(numeric.options, vec!["8", "4", "2.5", "3.0"]);
    assert_eq!(numeric.target, Target::Choice(2));
    assert_eq!(numeric.fields["answer"], "2.5");

    let zero = &out.items[3];
    assert!(zero.images.is_empty());
    assert_eq!(zero.fields["context"], "1. Age Estimation: api_1");
    assert_eq!(zero.target, Target::Choice(3));

    // Bad questions: answer letter out of range, missing image, unparsable file.
    assert_eq!(out.errors.len(), 3, "{:#?}", out.errors);
    let single_path = bench.join("fx_single.json").display().to_string();
    let e = error_with(&out, "correct_answer_option");
    assert_eq!(e.id, "facexbench:fx_single:2");
    assert_eq!(e.location, format!("{single_path}:17"));
    let e = error_with(&out, "not found");
    assert_eq!(e.id, "facexbench:fx_single:3");
    assert_eq!(e.location, format!("{single_path}:24"));
    assert!(
        e.message.contains("images/fx_single/missing.png"),
        "{}",
        e.message
    );
    let e = error_with(&out, "not valid JSON");
    assert_eq!(e.id, "facexbench:broken");
    assert!(
        e.location
            .starts_with(&bench.join("broken.json").display().to_string()),
        "{}",
        e.location
    );

    // Reading twice gives the same ids in the same order.
    let again = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(ids(&again), ids(&out));
    assert_eq!(again, out);
}

#[test]
fn facexbench_files_option_single_file_and_repo_root() {
    let dir = tempfile::tempdir().unwrap();
    facexbench_tree(dir.path());
    let s = spec(
        ReaderKind::Facexbench,
        "facexbench/benchmark",
        r#"files = ["fx_*"]"#,
    );
    let out = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "facexbench:fx_multi:1",
            "facexbench:fx_single:1",
            "facexbench:fx_single:10"
        ]
    );

    let s = spec(
        ReaderKind::Facexbench,
        "facexbench/benchmark/tools_retrieval.json",
        "",
    );
    let out = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(ids(&out), vec!["facexbench:tools_retrieval:1"]);
    assert!(out.errors.is_empty());

    // The repository checkout (holding benchmark/) works as the path too.
    let s = spec(
        ReaderKind::Facexbench,
        "facexbench",
        r#"files = "tools_retrieval.json""#,
    );
    assert_eq!(
        read(&s, &LabelSet::default(), dir.path())
            .unwrap()
            .items
            .len(),
        1
    );

    let s = spec(
        ReaderKind::Facexbench,
        "facexbench/benchmark",
        r#"files = ["nope_*"]"#,
    );
    assert!(input_err(read(&s, &LabelSet::default(), dir.path())).contains("nope_*"));

    // Groups copied from fields when asked.
    let s = spec(
        ReaderKind::Facexbench,
        "facexbench/benchmark",
        r#"groups = ["category"]"#,
    );
    let out = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(out.items[0].groups["category"], "face_recognition");
}

#[test]
fn facexbench_missing_folder_and_unknown_option() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::Facexbench, "nowhere/benchmark", "");
    let msg = input_err(read(&s, &LabelSet::default(), dir.path()));
    assert!(
        msg.contains("nowhere/benchmark") && msg.contains("benchmark/"),
        "{msg}"
    );

    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let s = spec(ReaderKind::Facexbench, "empty", "");
    assert!(input_err(read(&s, &LabelSet::default(), dir.path())).contains("no *.json"));

    facexbench_tree(dir.path());
    let s = spec(
        ReaderKind::Facexbench,
        "facexbench/benchmark",
        "file = [\"x\"]",
    );
    let msg = input_err(read(&s, &LabelSet::default(), dir.path()));
    assert!(
        msg.contains("\"file\"") && msg.contains("files") && msg.contains("groups"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- fairface

const FAIRFACE_CSV: &str = "\
file,age,gender,race,service_test
val/1.jpg,3-9,Male,East Asian,False
val/2.jpg,50-59,Female,East Asian,True
val/3.jpg,30-39,Male,White,True
val/4.jpg,20-29,Female,Latino_Hispanic,True
val/5.jpg,more than 70,Male,Martian,False
val/6.jpg,20-29,Female
val/7.png,10-19,Male,Black,True
";

fn fairface_tree(dir: &Path) {
    write(&dir.join("fairface/fairface_label_val.csv"), FAIRFACE_CSV);
    for i in [1, 2, 3, 4, 5, 6] {
        png(&dir.join(format!("fairface/val/{i}.jpg")));
    }
}

fn fairface_race() -> LabelSet {
    labels(
        &[
            "East Asian",
            "Indian",
            "Black",
            "White",
            "Middle Eastern",
            "Latino_Hispanic",
            "Southeast Asian",
        ],
        &[],
    )
}

#[test]
fn fairface_reads_rows_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    fairface_tree(dir.path());
    let s = spec(ReaderKind::Fairface, "fairface/fairface_label_val.csv", "");
    let out = read_with_field(&s, &fairface_race(), "race", dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "fairface:val/1.jpg",
            "fairface:val/2.jpg",
            "fairface:val/3.jpg",
            "fairface:val/4.jpg"
        ]
    );
    let first = &out.items[0];
    assert_eq!(first.target, Target::Label("East Asian".into()));
    assert_eq!(first.images, vec![dir.path().join("fairface/val/1.jpg")]);
    assert_eq!(first.groups["age"], "3-9");
    assert_eq!(first.groups["age_bin"], "3-9");
    assert_eq!(first.groups["gender"], "Male");
    assert_eq!(first.groups["race"], "East Asian");
    assert_eq!(first.fields["service_test"], "False");
    assert_eq!(out.items[3].target, Target::Label("Latino_Hispanic".into()));

    let csv = dir
        .path()
        .join("fairface/fairface_label_val.csv")
        .display()
        .to_string();
    assert_eq!(out.errors.len(), 3, "{:#?}", out.errors);
    let e = error_with(&out, "Martian");
    assert_eq!(
        (e.id.as_str(), e.location.clone()),
        ("fairface:val/5.jpg", format!("{csv}:6"))
    );
    let e = error_with(&out, "expected 5 columns");
    assert_eq!(e.location, format!("{csv}:7"));
    let e = error_with(&out, "image file not found");
    assert_eq!(
        (e.id.as_str(), e.location.clone()),
        ("fairface:val/7.png", format!("{csv}:8"))
    );

    // The same task through a Task, which carries labels.field; and inference without it.
    let task = Task::parse(
        r#"
name = "ff-gender"
[dataset]
reader = "fairface"
path = "fairface/fairface_label_val.csv"
[dataset.options]
service_test_only = true
[labels]
field = "gender"
values = ["male", "female"]
[question]
style = "open"
template = "{{ question }}"
"#,
        Path::new("ff.toml"),
    )
    .unwrap();
    let out = faceval_eval::datasets::read_task(&task, dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "fairface:val/2.jpg",
            "fairface:val/3.jpg",
            "fairface:val/4.jpg"
        ]
    );
    assert_eq!(out.items[0].target, Target::Label("female".into()));
    let inferred = read(&task.spec.dataset, &task.labels, dir.path()).unwrap();
    assert_eq!(inferred, out);

    let again = read_with_field(&s, &fairface_race(), "race", dir.path()).unwrap();
    assert_eq!(
        ids(&again),
        ids(&read_with_field(&s, &fairface_race(), "race", dir.path()).unwrap())
    );
}

#[test]
fn fairface_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::Fairface, "fairface/fairface_label_val.csv", "");
    let msg = input_err(read_with_field(&s, &fairface_race(), "race", dir.path()));
    assert!(
        msg.contains("fairface_label_val.csv") && msg.contains("file,age,gender,race"),
        "{msg}"
    );

    fairface_tree(dir.path());
    let bad = spec(
        ReaderKind::Fairface,
        "fairface/fairface_label_val.csv",
        "service_test = true",
    );
    let msg = input_err(read_with_field(&bad, &fairface_race(), "race", dir.path()));
    assert!(
        msg.contains("\"service_test\"") && msg.contains("service_test_only"),
        "{msg}"
    );

    let msg = input_err(read_with_field(&s, &fairface_race(), "hair", dir.path()));
    assert!(msg.contains("hair"), "{msg}");

    write(&dir.path().join("other.csv"), "image,label\na.jpg,x\n");
    let s = spec(ReaderKind::Fairface, "other.csv", "");
    let msg = input_err(read_with_field(&s, &fairface_race(), "race", dir.path()));
    assert!(
        msg.contains("other.csv:1") && msg.contains("missing column"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- utkface

fn utk_tree(dir: &Path) -> PathBuf {
    let root = dir.join("UTKFace");
    for name in [
        "26_1_2_20170116174525125.jpg.chip.jpg",
        "1_0_0_20161219140623097.jpg.chip.jpg",
        "75_0_4_20170117195905245.jpg.chip.jpg",
        "61_1_20170109142408075.jpg.chip.jpg",
        "30_7_0_20170109150557335.jpg.chip.jpg",
    ] {
        png(&root.join(name));
    }
    write(&root.join("readme.txt"), "not an image");
    root
}

#[test]
fn utkface_numeric_binned_and_label_targets() {
    let dir = tempfile::tempdir().unwrap();
    let root = utk_tree(dir.path());
    let s = spec(ReaderKind::Utkface, "UTKFace", "");
    let out = read_with_field(&s, &LabelSet::default(), "age", dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "utkface:1_0_0_20161219140623097.jpg.chip.jpg",
            "utkface:26_1_2_20170116174525125.jpg.chip.jpg",
            "utkface:75_0_4_20170117195905245.jpg.chip.jpg",
        ]
    );
    assert_eq!(out.items[0].target, Target::Number(1.0));
    assert_eq!(out.items[1].target, Target::Number(26.0));
    let g = &out.items[1].groups;
    assert_eq!(
        (
            g["gender"].as_str(),
            g["race"].as_str(),
            g["age_bin"].as_str()
        ),
        ("Female", "Asian", "20-29")
    );
    assert_eq!(out.items[2].groups["age_bin"], "more than 70");

    assert_eq!(out.errors.len(), 2, "{:#?}", out.errors);
    let e = error_with(&out, "3 '_'-separated");
    assert_eq!(
        e.location,
        root.join("61_1_20170109142408075.jpg.chip.jpg")
            .display()
            .to_string()
    );
    assert_eq!(e.id, "utkface:61_1_20170109142408075.jpg.chip.jpg");
    let e = error_with(&out, "gender \"7\"");
    assert!(e
        .location
        .ends_with("30_7_0_20170109150557335.jpg.chip.jpg"));

    // Age bins from the label set.
    let bins = labels(
        &[
            "0-2",
            "3-9",
            "10-19",
            "20-29",
            "30-39",
            "40-49",
            "50-59",
            "60-69",
            "more than 70",
        ],
        &[],
    );
    let out = read_with_field(&s, &bins, "age", dir.path()).unwrap();
    let targets: Vec<_> = out.items.iter().map(|i| i.target.clone()).collect();
    assert_eq!(
        targets,
        vec![
            Target::Label("0-2".into()),
            Target::Label("20-29".into()),
            Target::Label("more than 70".into())
        ]
    );

    // Gender and race through the label set, with synonyms; an unknown race is an item error.
    let gender = labels(
        &["man", "woman"],
        &[("man", &["male"]), ("woman", &["female"])],
    );
    let out = read_with_field(&s, &gender, "gender", dir.path()).unwrap();
    assert_eq!(out.items[1].target, Target::Label("woman".into()));
    let race = labels(&["White", "Black", "Asian", "Indian"], &[]);
    let out = read_with_field(&s, &race, "race", dir.path()).unwrap();
    assert_eq!(out.items.len(), 2);
    let e = error_with(&out, "unknown race label \"Others\"");
    assert!(e.id.starts_with("utkface:75_"));

    // Inferred field: no labels means numeric age.
    let inferred = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(
        ids(&inferred),
        ids(&read_with_field(&s, &LabelSet::default(), "age", dir.path()).unwrap())
    );
}

#[test]
fn utkface_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::Utkface, "UTKFace", "");
    assert!(input_err(read(&s, &LabelSet::default(), dir.path())).contains("UTKFace"));
    utk_tree(dir.path());
    let s = spec(ReaderKind::Utkface, "UTKFace", "split = \"x\"");
    let msg = input_err(read(&s, &LabelSet::default(), dir.path()));
    assert!(
        msg.contains("\"split\"") && msg.contains("takes no options"),
        "{msg}"
    );
    let s = spec(ReaderKind::Utkface, "UTKFace", "");
    let msg = input_err(read_with_field(
        &s,
        &labels(&["young", "old"], &[]),
        "age",
        dir.path(),
    ));
    assert!(msg.contains("\"young\""), "{msg}");
}

// ---------------------------------------------------------------- rafdb

const RAF_LABELS: &str = "\
train_00001.jpg 5
train_00002.jpg 1
test_0001.jpg 5
test_0002.jpg 4
test_0003.jpg 9
test_0004.jpg

test_0005.jpg 7
test_0006.jpg 2
";

fn expressions() -> LabelSet {
    labels(
        &[
            "surprise",
            "fear",
            "disgust",
            "happiness",
            "sadness",
            "anger",
        ],
        &[("happiness", &["happy"]), ("sadness", &["sad"])],
    )
}

fn rafdb_tree(dir: &Path) -> PathBuf {
    let base = dir.join("RAF-DB/basic");
    write(&base.join("EmoLabel/list_patition_label.txt"), RAF_LABELS);
    for n in [
        "train_00001",
        "train_00002",
        "test_0001",
        "test_0002",
        "test_0003",
        "test_0004",
        "test_0005",
    ] {
        png(&base.join(format!("Image/aligned/{n}_aligned.jpg")));
    }
    base
}

#[test]
fn rafdb_reads_splits_and_reports_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let base = rafdb_tree(dir.path());
    let label_file = base
        .join("EmoLabel/list_patition_label.txt")
        .display()
        .to_string();
    let s = spec(ReaderKind::Rafdb, "RAF-DB/basic", "");
    let out = read(&s, &expressions(), dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec!["rafdb:test_0001.jpg", "rafdb:test_0002.jpg"]
    );
    assert_eq!(out.items[0].target, Target::Label("sadness".into()));
    assert_eq!(
        out.items[0].images,
        vec![base.join("Image/aligned/test_0001_aligned.jpg")]
    );
    assert_eq!(out.items[1].target, Target::Label("happiness".into()));
    assert_eq!(out.items[0].fields["split"], "test");

    assert_eq!(out.errors.len(), 4, "{:#?}", out.errors);
    assert_eq!(
        error_with(&out, "label \"9\"").location,
        format!("{label_file}:5")
    );
    assert_eq!(
        error_with(&out, "malformed line").location,
        format!("{label_file}:6")
    );
    // Neutral is not in this task's label set.
    let e = error_with(&out, "unknown expression label \"Neutral\"");
    assert_eq!(
        (e.id.as_str(), e.location.clone()),
        ("rafdb:test_0005.jpg", format!("{label_file}:8"))
    );
    let e = error_with(&out, "image file not found");
    assert_eq!(e.location, format!("{label_file}:9"));
    assert!(e.message.contains("test_0006_aligned.jpg"), "{}", e.message);

    let train = spec(
        ReaderKind::Rafdb,
        "RAF-DB/basic/EmoLabel/list_patition_label.txt",
        "split = \"train\"",
    );
    let out = read(&train, &expressions(), dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec!["rafdb:train_00001.jpg", "rafdb:train_00002.jpg"]
    );
    assert!(out.errors.is_empty());
    let all = spec(ReaderKind::Rafdb, "RAF-DB/basic", "split = \"all\"");
    let out = read(&all, &expressions(), dir.path()).unwrap();
    assert_eq!(out.items.len(), 4);
    assert_eq!(
        ids(&out),
        ids(&read(&all, &expressions(), dir.path()).unwrap())
    );
}

#[test]
fn rafdb_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::Rafdb, "RAF-DB/basic", "");
    assert!(input_err(read(&s, &expressions(), dir.path())).contains("list_patition_label.txt"));
    rafdb_tree(dir.path());
    let s = spec(ReaderKind::Rafdb, "RAF-DB/basic", "split = \"val\"");
    assert!(input_err(read(&s, &expressions(), dir.path())).contains("\"val\""));
    let s = spec(ReaderKind::Rafdb, "RAF-DB/basic", "aligned = true");
    let msg = input_err(read(&s, &expressions(), dir.path()));
    assert!(
        msg.contains("\"aligned\"") && msg.contains("split"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- manifest

#[test]
fn manifest_csv_labels_groups_fields_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["a", "b", "c", "d"] {
        png(&dir.path().join(format!("m/img/{n}.png")));
    }
    write(
        &dir.path().join("m/faces.csv"),
        "\
image,expression,gender,source,person
img/a.png,happy,female,lab,p1
img/b.png,Sadness,male,lab,p2
img/c.png,angry,male,web,p3
img/zzz.png,sadness,female,web,p4
img/d.png,sadness
img/d.png;img/a.png,happiness,,web,p1
",
    );
    let s = spec(
        ReaderKind::Manifest,
        "m/faces.csv",
        r#"group_columns = ["gender"]
field_columns = ["source"]
cluster_column = "person""#,
    );
    let set = labels(&["happiness", "sadness"], &[("happiness", &["happy"])]);
    let out = read_with_field(&s, &set, "expression", dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "manifest:img/a.png",
            "manifest:img/b.png",
            "manifest:img/d.png"
        ]
    );
    let a = &out.items[0];
    assert_eq!(a.target, Target::Label("happiness".into()));
    assert_eq!(a.groups["gender"], "female");
    assert_eq!(a.fields["source"], "lab");
    assert_eq!(a.cluster.as_deref(), Some("p1"));
    let d = &out.items[2];
    assert_eq!(
        d.images,
        vec![
            dir.path().join("m/img/d.png"),
            dir.path().join("m/img/a.png")
        ]
    );
    assert!(
        d.groups.is_empty(),
        "an empty group cell leaves the group out"
    );

    let csv = dir.path().join("m/faces.csv").display().to_string();
    assert_eq!(out.errors.len(), 3, "{:#?}", out.errors);
    let e = error_with(&out, "unknown expression label \"angry\"");
    assert_eq!(e.location, format!("{csv}:4"));
    assert!(e.message.starts_with("column expression"), "{}", e.message);
    assert_eq!(
        error_with(&out, "image file not found").location,
        format!("{csv}:5")
    );
    assert_eq!(
        error_with(&out, "expected 5 columns").location,
        format!("{csv}:6")
    );

    let again = read_with_field(&s, &set, "expression", dir.path()).unwrap();
    assert_eq!(ids(&again), ids(&out));
}

#[test]
fn manifest_jsonl_numeric_choices_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["a", "b"] {
        png(&dir.path().join(format!("imgs/{n}.png")));
    }
    write(
        &dir.path().join("ages.jsonl"),
        r#"{"key": "k1", "image": "imgs/a.png", "age": 31.5, "q": "How old?"}
{"key": "k2", "image": "imgs/b.png", "age": "forty"}

not json
{"key": "k3", "image": ["imgs/a.png", "imgs/b.png"], "age": 7}
{"key": "k1", "image": "imgs/b.png", "age": 3}
"#,
    );
    let s = spec(
        ReaderKind::Manifest,
        "ages.jsonl",
        r#"id_column = "key"
question_column = "q""#,
    );
    let out = read_with_field(&s, &LabelSet::default(), "age", dir.path()).unwrap();
    assert_eq!(ids(&out), vec!["manifest:k1", "manifest:k3"]);
    assert_eq!(out.items[0].target, Target::Number(31.5));
    assert_eq!(out.items[0].question.as_deref(), Some("How old?"));
    assert_eq!(out.items[1].images.len(), 2);
    let path = dir.path().join("ages.jsonl").display().to_string();
    assert_eq!(out.errors.len(), 3, "{:#?}", out.errors);
    let e = error_with(&out, "is not a number");
    assert_eq!(e.location, format!("{path}:2"));
    assert!(
        e.message.contains("column age") && e.message.contains("forty"),
        "{}",
        e.message
    );
    assert_eq!(
        error_with(&out, "not valid JSON").location,
        format!("{path}:4")
    );
    let e = error_with(&out, "duplicate id");
    assert_eq!(e.location, format!("{path}:6"));
    assert!(e.message.contains(&format!("{path}:1")), "{}", e.message);

    // Options column: the label must be one of the options.
    write(
        &dir.path().join("mc.csv"),
        "image,answer,choices\nimgs/a.png,Happy,sad;happy;angry\nimgs/b.png,calm,sad;happy\n",
    );
    let s = spec(
        ReaderKind::Manifest,
        "mc.csv",
        r#"label_column = "answer"
options_column = "choices""#,
    );
    let out = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(out.items[0].options, vec!["sad", "happy", "angry"]);
    assert_eq!(out.items[0].target, Target::Choice(1));
    let e = error_with(&out, "not one of the options");
    assert_eq!(
        e.location,
        format!("{}:3", dir.path().join("mc.csv").display())
    );
}

#[test]
fn manifest_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::Manifest, "none.csv", "");
    assert!(
        input_err(read_with_field(&s, &LabelSet::default(), "age", dir.path()))
            .contains("none.csv")
    );
    write(&dir.path().join("x.csv"), "picture,age\na.png,3\n");
    let s = spec(ReaderKind::Manifest, "x.csv", "");
    let msg = input_err(read_with_field(&s, &LabelSet::default(), "age", dir.path()));
    assert!(
        msg.contains("x.csv:1") && msg.contains("image") && msg.contains("picture"),
        "{msg}"
    );
    let s = spec(ReaderKind::Manifest, "x.csv", "image_column = \"picture\"");
    let msg = input_err(read_with_field(&s, &LabelSet::default(), "age", dir.path()));
    assert!(
        msg.contains("\"image_column\"") && msg.contains("image_columns"),
        "{msg}"
    );
    let s = spec(ReaderKind::Manifest, "x.csv", "image_columns = 3");
    assert!(
        input_err(read_with_field(&s, &LabelSet::default(), "age", dir.path()))
            .contains("list of strings")
    );
    let s = spec(
        ReaderKind::Manifest,
        "x.csv",
        "image_columns = [\"picture\"]",
    );
    assert!(input_err(read(&s, &LabelSet::default(), dir.path())).contains("label_column"));
}

// ---------------------------------------------------------------- folders

#[test]
fn folders_reads_classes_and_reports_unknown_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("expr");
    png(&root.join("Happy/1.png"));
    png(&root.join("happiness/sub/2.jpg"));
    png(&root.join("sad/3.webp"));
    png(&root.join("bored/4.png"));
    png(&root.join("bored/5.png"));
    png(&root.join("loose.png"));
    write(&root.join("sad/notes.txt"), "skip me");
    let set = labels(
        &["happiness", "sadness"],
        &[("happiness", &["happy"]), ("sadness", &["sad"])],
    );
    let s = spec(ReaderKind::Folders, "expr", "");
    let out = read(&s, &set, dir.path()).unwrap();
    assert_eq!(
        ids(&out),
        vec![
            "folders:Happy/1.png",
            "folders:happiness/sub/2.jpg",
            "folders:sad/3.webp"
        ]
    );
    assert_eq!(out.items[1].target, Target::Label("happiness".into()));
    assert_eq!(out.items[2].target, Target::Label("sadness".into()));
    assert_eq!(out.errors.len(), 3, "{:#?}", out.errors);
    let bored: Vec<_> = out
        .errors
        .iter()
        .filter(|e| e.message.contains("\"bored\""))
        .collect();
    assert_eq!(
        bored.len(),
        2,
        "one error per file in an unknown class folder"
    );
    assert_eq!(
        bored[0].location,
        root.join("bored/4.png").display().to_string()
    );
    error_with(&out, "not inside a class folder");
    assert_eq!(ids(&read(&s, &set, dir.path()).unwrap()), ids(&out));

    // Numeric class folders without labels; extension filter.
    let ages = dir.path().join("ages");
    png(&ages.join("25/a.png"));
    png(&ages.join("old/b.png"));
    let s = spec(ReaderKind::Folders, "ages", r#"extensions = ["png"]"#);
    let out = read(&s, &LabelSet::default(), dir.path()).unwrap();
    assert_eq!(out.items[0].target, Target::Number(25.0));
    error_with(&out, "\"old\" is not a number");
}

#[test]
fn folders_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::Folders, "expr", "");
    assert!(input_err(read(&s, &LabelSet::default(), dir.path())).contains("one folder per class"));
    std::fs::create_dir_all(dir.path().join("expr/happy")).unwrap();
    assert!(input_err(read(&s, &LabelSet::default(), dir.path())).contains("no images"));
    let s = spec(ReaderKind::Folders, "expr", "recursive = false");
    let msg = input_err(read(&s, &LabelSet::default(), dir.path()));
    assert!(
        msg.contains("\"recursive\"") && msg.contains("extensions"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- shipped tasks

/// Every shipped task (built in) names options its reader accepts; with no data present the
/// read is an input error that says what was expected, never a panic or an unknown-option
/// complaint.
#[test]
fn shipped_tasks_fail_cleanly_without_data() {
    let defs = faceval_eval::task::all(None).unwrap();
    assert!(!defs.is_empty(), "no built-in tasks");
    let empty = tempfile::tempdir().unwrap();
    for def in defs {
        let file = &def.path;
        let task =
            Task::from_definition(&def).unwrap_or_else(|e| panic!("{}: {e:#}", file.display()));
        let msg = input_err(faceval_eval::datasets::read_task(&task, empty.path()));
        assert!(!msg.contains("unknown key"), "{}: {msg}", file.display());
        assert!(msg.contains("expected"), "{}: {msg}", file.display());
    }
}

// ---------------------------------------------------------------- verification pairs

fn yes_no() -> LabelSet {
    labels(
        &["yes", "no"],
        &[("yes", &["same"]), ("no", &["different"])],
    )
}

/// An LFW-shaped folder: `pairs.txt` with `header` and `lines`, and a JPEG-named image for
/// every `(name, n)` in `images`.
fn lfw_tree(dir: &Path, header: &str, lines: &[&str], images: &[(&str, u32)]) {
    let mut text = format!("{header}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    write(&dir.join("lfw/pairs.txt"), &text);
    for (name, n) in images {
        png(&dir.join(format!("lfw/{name}/{name}_{n:04}.jpg")));
    }
}

#[test]
fn lfw_pairs_reads_folds_targets_clusters_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = [
        ("Abel_Pacheco", 1),
        ("Abel_Pacheco", 4),
        ("Akhmed_Zakayev", 1),
        ("Akhmed_Zakayev", 3),
        ("Abdel_Madi_Shabneh", 1),
        ("Dean_Barker", 1),
    ];
    // Two folds of two matched and two mismatched pairs, tab-separated as LFW ships them.
    lfw_tree(
        dir.path(),
        "2\t2",
        &[
            "Abel_Pacheco\t1\t4",
            "Akhmed_Zakayev\t1\t3",
            "Abdel_Madi_Shabneh\t1\tDean_Barker\t1",
            "Abel_Pacheco\t1\tAkhmed_Zakayev\t3",
            // Fold 2: a missing image, a mismatched line where a matched one belongs, then a
            // line of three fields with a bad number and a good mismatched pair.
            "Abel_Pacheco\t1\t2",
            "Dean_Barker\t1\tAbel_Pacheco\t4",
            "Akhmed_Zakayev\tone\tDean_Barker\t1",
            "Akhmed_Zakayev 3 Abdel_Madi_Shabneh 1",
        ],
        &imgs,
    );
    let s = spec(ReaderKind::LfwPairs, "lfw/pairs.txt", "");
    let o = read(&s, &yes_no(), dir.path()).unwrap();
    assert_eq!(
        ids(&o),
        [
            "lfw:Abel_Pacheco_0001:Abel_Pacheco_0004",
            "lfw:Akhmed_Zakayev_0001:Akhmed_Zakayev_0003",
            "lfw:Abdel_Madi_Shabneh_0001:Dean_Barker_0001",
            "lfw:Abel_Pacheco_0001:Akhmed_Zakayev_0003",
            "lfw:Akhmed_Zakayev_0003:Abdel_Madi_Shabneh_0001",
        ]
    );
    let first = &o.items[0];
    assert_eq!(first.target, Target::Label("yes".into()));
    assert_eq!(
        first.images,
        [
            dir.path().join("lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg"),
            dir.path().join("lfw/Abel_Pacheco/Abel_Pacheco_0004.jpg"),
        ]
    );
    assert_eq!(first.cluster.as_deref(), Some("Abel_Pacheco"));
    assert_eq!(first.fields["fold"], "1");
    assert_eq!(first.fields["pair"], "matched");
    let last = &o.items[4];
    assert_eq!(last.target, Target::Label("no".into()));
    assert_eq!(last.fields["fold"], "2");
    assert_eq!(last.fields["identity_2"], "Abdel_Madi_Shabneh");
    assert_eq!(o.errors.len(), 3, "{:#?}", o.errors);
    let list = dir.path().join("lfw/pairs.txt").display().to_string();
    let missing = error_with(&o, "image file not found");
    assert_eq!(missing.location, format!("{list}:6"));
    assert!(missing.message.contains("Abel_Pacheco_0002.jpg"));
    let order = error_with(&o, "fold 2 should have a matched pair");
    assert_eq!(order.location, format!("{list}:7"));
    let number = error_with(&o, "\"one\" is not an image number");
    assert_eq!(number.location, format!("{list}:8"));
}

#[test]
fn lfw_pairs_input_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(ReaderKind::LfwPairs, "lfw/pairs.txt", "");
    // No list at all.
    let msg = input_err(read(&s, &yes_no(), dir.path()));
    assert!(
        msg.contains("pairs.txt") && msg.contains("not found"),
        "{msg}"
    );
    // A header that is not "<folds> <pairs per class>".
    lfw_tree(dir.path(), "ten 300", &["A 1 2", "A 1 B 1"], &[]);
    let msg = input_err(read(&s, &yes_no(), dir.path()));
    assert!(
        msg.contains("pairs.txt:1") && msg.contains("\"ten 300\""),
        "{msg}"
    );
    // A header promising more lines than follow.
    lfw_tree(dir.path(), "10\t300", &["A 1 2", "A 1 B 1"], &[]);
    let msg = input_err(read(&s, &yes_no(), dir.path()));
    assert!(msg.contains("6000 lines, but 2 pair lines follow"), "{msg}");
    // pairsDevTest.txt has only the count: one fold.
    lfw_tree(
        dir.path(),
        "1",
        &["A 1 2", "A 1 B 1"],
        &[("A", 1), ("A", 2), ("B", 1)],
    );
    assert_eq!(read(&s, &yes_no(), dir.path()).unwrap().items.len(), 2);
    // Three labels: which one is "same"?
    let three = labels(&["yes", "no", "maybe"], &[]);
    let msg = input_err(read(&s, &three, dir.path()));
    assert!(msg.contains("exactly two labels.values"), "{msg}");
    // Unknown option, and an images folder that is not there.
    let bad = spec(ReaderKind::LfwPairs, "lfw/pairs.txt", "suffix = \"jpg\"");
    let msg = input_err(read(&bad, &yes_no(), dir.path()));
    assert!(msg.contains("unknown key \"suffix\""), "{msg}");
    let mut elsewhere = s.clone();
    elsewhere.images = Some(PathBuf::from("lfw-deepfunneled"));
    let msg = input_err(read(&elsewhere, &yes_no(), dir.path()));
    assert!(
        msg.contains("lfw-deepfunneled") && msg.contains("folder not found"),
        "{msg}"
    );
}

#[test]
fn rfw_pairs_reads_races_as_groups() {
    let dir = tempfile::tempdir().unwrap();
    // RFW's layout: txts/<race>/<race>_pairs.txt and data/<race>/<id>/<id>_<nnnn>.jpg.
    write(
        &dir.path().join("test/txts/African/African_pairs.txt"),
        "m.0c7mh2\t1\t3\nm.0c7mh2\t1\tm.0d1fvp\t2\n",
    );
    write(
        &dir.path().join("test/txts/Indian/Indian_pairs.txt"),
        "m.01z4dz\t2\t4\nm.01z4dz 2 m.0j7wd 1\nm.01z4dz\t2\n",
    );
    for p in [
        "African/m.0c7mh2/m.0c7mh2_0001.jpg",
        "African/m.0c7mh2/m.0c7mh2_0003.jpg",
        "African/m.0d1fvp/m.0d1fvp_0002.jpg",
        "Indian/m.01z4dz/m.01z4dz_0002.jpg",
        "Indian/m.01z4dz/m.01z4dz_0004.jpg",
        "Indian/m.0j7wd/m.0j7wd_0001.jpg",
    ] {
        png(&dir.path().join("test/data").join(p));
    }
    let s = spec(
        ReaderKind::RfwPairs,
        "test/txts",
        "races = [\"African\", \"Indian\"]",
    );
    let o = read(&s, &yes_no(), dir.path()).unwrap();
    assert_eq!(
        ids(&o),
        [
            "rfw:African:m.0c7mh2_0001:m.0c7mh2_0003",
            "rfw:African:m.0c7mh2_0001:m.0d1fvp_0002",
            "rfw:Indian:m.01z4dz_0002:m.01z4dz_0004",
            "rfw:Indian:m.01z4dz_0002:m.0j7wd_0001",
        ]
    );
    assert_eq!(o.items[1].groups["race"], "African");
    assert_eq!(o.items[1].target, Target::Label("no".into()));
    assert_eq!(o.items[2].cluster.as_deref(), Some("Indian/m.01z4dz"));
    assert_eq!(
        o.items[3].images[1],
        dir.path().join("test/data/Indian/m.0j7wd/m.0j7wd_0001.jpg")
    );
    let short = error_with(&o, "found 2 fields");
    assert_eq!(
        short.location,
        format!(
            "{}:3",
            dir.path()
                .join("test/txts/Indian/Indian_pairs.txt")
                .display()
        )
    );
    // All four races by default: the missing lists are named.
    let all = spec(ReaderKind::RfwPairs, "test/txts", "");
    let msg = input_err(read(&all, &yes_no(), dir.path()));
    assert!(msg.contains("Asian_pairs.txt not found"), "{msg}");
    // One list named directly.
    let one = spec(
        ReaderKind::RfwPairs,
        "test/txts/African/African_pairs.txt",
        "",
    );
    let mut one = one;
    one.images = Some(PathBuf::from("test/data"));
    assert_eq!(read(&one, &yes_no(), dir.path()).unwrap().items.len(), 2);
}

#[test]
fn shipped_verification_tasks_parse() {
    for name in ["verification-lfw", "verification-rfw"] {
        let t = faceval_eval::task::resolve(name, None).unwrap();
        assert_eq!(
            t.spec.question.style,
            faceval_eval::task::QuestionStyle::Verification
        );
        assert_eq!(t.labels.values(), ["yes", "no"]);
    }
    // A verification task needs exactly two answers.
    let bad = "name = \"v\"\n[dataset]\nreader = \"lfw_pairs\"\npath = \"p.txt\"\n[labels]\nvalues = [\"same\"]\n[question]\nstyle = \"verification\"\ntemplate = \"{{ question }}\"\n";
    let err = Task::parse(bad, Path::new("v.toml")).unwrap_err();
    assert!(is_input_error(&err));
    assert!(err.to_string().starts_with("v.toml:6"), "{err}");
}
