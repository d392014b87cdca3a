//! Answer extraction against FaceXBench's own Python function (fixture written by
//! `tools/facexbench_extract_reference.py`), faceval's strict rules, and the FaceXBench task
//! files' prompts against the text FaceXBench's evaluate.py builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faceval_eval::extract::{
    extract_answer, extract_facexbench, extract_label, extract_number, extract_strict_choice,
    extract_strict_choice_with_labels, facexbench_explained, strict_choice_explained, Extracted,
};
use faceval_eval::labels::LabelSet;
use faceval_eval::prompt::questions_for;
use faceval_eval::task::{ExtractorKind, QuestionStyle};
use faceval_eval::{Item, Target, Task};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facexbench_extract_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn facexbench_mode_equals_python_on_every_row() {
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= 60,
        "the fixture should hold at least 60 rows, has {}",
        cases.len()
    );
    let mut mismatches = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let output = case["output"].as_str().expect("output");
        let options = strings(&case["options"]);
        let expected = case["expected_index"].as_u64().map(|i| i as usize);
        // The letter and the index must agree inside the fixture itself.
        match (case["expected"].as_str(), expected) {
            (Some(l), Some(i)) => assert_eq!(l, ((b'A' + i as u8) as char).to_string(), "{name}"),
            (None, None) => {}
            other => panic!("{name}: inconsistent fixture row {other:?}"),
        }
        let got = extract_facexbench(output, &options);
        if got != expected {
            let (_, rule) = facexbench_explained(output, &options);
            mismatches.push(format!(
                "{name:?}: output {output:?}: Python {expected:?}, Rust {got:?} ({rule})"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "Rust differs from FaceXBench's Python:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn facexbench_mode_keeps_the_documented_quirks() {
    let age = strs(&["30-39", "20-29", "40-49", "10-19"]);
    // The article "A" at the start is read as option A.
    assert_eq!(
        extract_facexbench("A young man in his twenties.", &age),
        Some(0)
    );
    // Lowercase letters are not labels.
    assert_eq!(extract_facexbench("b", &age), None);
    // Text fallback: the first option contained in the output, in list order ("0-2" is in "20-29").
    let q3 = strs(&["0-2", "20-29", "3-9", "None of the above"]);
    assert_eq!(
        facexbench_explained("20-29", &q3),
        (Some(0), "facexbench-text-contains")
    );
    // A chain of thought is read by its first stand-alone capital letter, not its conclusion.
    assert_eq!(
        extract_facexbench("A close look suggests youth, so the answer is B.", &age),
        Some(0)
    );
}

const AGE: &[&str] = &["30-39", "20-29", "40-49", "10-19"];
const GENDER: &[&str] = &["Male", "Female", "Both", "None of the above"];
const RACE: &[&str] = &["East Asian", "Southeast Asian", "Indian", "White"];

#[test]
fn strict_rules_table() {
    let letters = strs(&["A", "B", "C", "D"]);
    // (output, options, expected index, rule)
    let table: &[(&str, &[&str], Option<usize>, &str)] = &[
        ("B", AGE, Some(1), "letter"),
        ("b", AGE, Some(1), "letter"),
        ("a", AGE, Some(0), "letter"),
        ("(C)", AGE, Some(2), "letter"),
        ("(C) 20-29", AGE, Some(2), "letter"),
        ("Option D", AGE, Some(3), "letter"),
        ("option d", AGE, Some(3), "letter"),
        ("Answer: C", AGE, Some(2), "declared-answer"),
        ("answer: a", AGE, Some(0), "declared-answer"),
        ("ANSWER: c", AGE, Some(2), "declared-answer"),
        ("The answer is A.", AGE, Some(0), "declared-answer"),
        ("The answer is (C).", AGE, Some(2), "declared-answer"),
        (
            "The correct option is B) 20-29.",
            AGE,
            Some(1),
            "declared-answer",
        ),
        ("Answer:\nD", AGE, Some(3), "declared-answer"),
        ("**B**", AGE, Some(1), "letter"),
        ("**Answer:** B", AGE, Some(1), "declared-answer"),
        ("B) Female", GENDER, Some(1), "letter"),
        ("B. 20-29", AGE, Some(1), "letter"),
        ("- D: 10-19", AGE, Some(3), "letter"),
        ("B because the skin is smooth", AGE, Some(1), "letter"),
        // The article is not a letter; text matching may still find an option.
        ("A young man in his twenties.", AGE, None, "no-match"),
        ("A young man, 20-29.", AGE, Some(1), "text"),
        ("The answer is a man in his 30s.", AGE, None, "no-match"),
        // The last explicit declaration wins; a declared answer beats mere mentions.
        (
            "I first thought A, but the answer is (C)",
            AGE,
            Some(2),
            "declared-answer",
        ),
        (
            "Option A is too young; option C fits.",
            AGE,
            Some(2),
            "letter",
        ),
        (
            "The answer is B. Option A is wrong because the skin is smooth.",
            AGE,
            Some(1),
            "declared-answer",
        ),
        (
            "Answer: A\nOn reflection, the answer is D.",
            AGE,
            Some(3),
            "declared-answer",
        ),
        // Ambiguity is never resolved by guessing.
        ("The answer is A or B", AGE, None, "ambiguous-letters"),
        ("(A) or (B)", AGE, None, "ambiguous-letters"),
        ("Answer: B and C", AGE, None, "ambiguous-letters"),
        ("B or C", AGE, None, "ambiguous-letters"),
        ("20-29 or 30-39", AGE, None, "ambiguous-text"),
        (
            "The person is female, not male.",
            GENDER,
            None,
            "ambiguous-text",
        ),
        // Whole phrases only, longest first.
        ("20-29", &["2", "20-29", "3", "30-39"], Some(1), "text"),
        ("2", &["2", "20-29", "3", "30-39"], Some(0), "text"),
        ("The person is 20-29 years old", AGE, Some(1), "text"),
        ("Southeast Asian", RACE, Some(1), "text"),
        ("east asian", RACE, Some(0), "text"),
        (
            "more than 70",
            &["60-69", "more than 70", "70", "50-59"],
            Some(1),
            "text",
        ),
        (
            "There are 15 people.",
            &["2", "5", "1", "3"],
            None,
            "no-match",
        ),
        (
            "-10 to 0",
            &["0 to 10", "-10 to 0", "10 to 20", "-20 to -10"],
            Some(1),
            "text",
        ),
        (
            "90 to 100",
            &["0 to 10", "-10 to 0", "90 to 100", "-20 to -10"],
            Some(2),
            "text",
        ),
        ("The answer is: 20-29", AGE, Some(1), "text"),
        (
            "I think it is 30-39, though 20-29 is possible. Answer: 20-29",
            AGE,
            Some(1),
            "text-after-answer",
        ),
        // Letters outside the shown ones are not read.
        ("E", AGE, None, "no-match"),
        ("The answer is not A", AGE, None, "no-match"),
        ("", AGE, None, "no-match"),
        ("person(s) 20-29", AGE, Some(1), "text"),
        // Reasoning blocks and answer tags.
        (
            "<think>Maybe A.</think>The answer is D",
            AGE,
            Some(3),
            "declared-answer",
        ),
        (
            "<think>Maybe A. Still thinking",
            AGE,
            None,
            "unfinished-think",
        ),
        ("<answer>C</answer>", AGE, Some(2), "letter"),
        (
            "Reasoning: (A) is too old.\n<answer>(B)</answer>",
            AGE,
            Some(1),
            "letter",
        ),
    ];
    let mut failures = Vec::new();
    for (output, options, want, want_rule) in table {
        let options = strs(options);
        let (got, rule) = strict_choice_explained(output, &letters, &options, None);
        if got != *want || rule != *want_rule {
            failures.push(format!(
                "{output:?}: want {want:?} ({want_rule}), got {got:?} ({rule})"
            ));
        }
        assert_eq!(extract_strict_choice(output, &letters, &options), got);
    }
    assert!(
        failures.is_empty(),
        "strict rules:\n{}",
        failures.join("\n")
    );
}

fn label_set(values: &[&str], synonyms: &[(&str, &[&str])]) -> LabelSet {
    let syn: BTreeMap<String, Vec<String>> = synonyms
        .iter()
        .map(|(k, v)| (k.to_string(), strs(v)))
        .collect();
    LabelSet::new(&strs(values), &syn).expect("label set")
}

#[test]
fn strict_choice_accepts_label_synonyms() {
    let labels = label_set(
        &["happiness", "sadness", "anger", "surprise"],
        &[("happiness", &["happy", "joy"])],
    );
    let letters = strs(&["A", "B", "C", "D"]);
    let options = strs(&["sadness", "happiness", "anger", "surprise"]);
    assert_eq!(
        extract_strict_choice_with_labels(
            "The person looks happy.",
            &letters,
            &options,
            Some(&labels)
        ),
        Some(1)
    );
    assert_eq!(
        extract_strict_choice("The person looks happy.", &letters, &options),
        None
    );
    assert_eq!(
        extract_strict_choice_with_labels("unhappy", &letters, &options, Some(&labels)),
        None
    );
}

#[test]
fn open_answers_map_onto_labels() {
    let race = label_set(
        &[
            "East Asian",
            "Indian",
            "Black",
            "White",
            "Middle Eastern",
            "Latino_Hispanic",
            "Southeast Asian",
        ],
        &[("Latino_Hispanic", &["Latino", "Hispanic"])],
    );
    let table: &[(&str, Option<usize>)] = &[
        ("Southeast Asian", Some(6)),
        ("The person appears to be East Asian.", Some(0)),
        ("latino hispanic", Some(5)),
        ("Hispanic", Some(5)),
        ("WHITE", Some(3)),
        ("White or Middle Eastern", None),
        ("Could be Black. Answer: White", Some(3)),
        ("Asian", None),
        ("", None),
    ];
    for (output, want) in table {
        assert_eq!(extract_label(output, &race), *want, "{output:?}");
    }
    let expr = label_set(&["happiness", "sadness"], &[("happiness", &["happy"])]);
    assert_eq!(extract_label("happy", &expr), Some(0));
    assert_eq!(extract_label("unhappy", &expr), None);
    assert_eq!(extract_label("Happiness.", &expr), Some(0));
}

#[test]
fn numbers_table() {
    let table: &[(&str, Option<f64>)] = &[
        ("25", Some(25.0)),
        ("about 25 years", Some(25.0)),
        ("The person is about 25 years old.", Some(25.0)),
        ("-12.5°", Some(-12.5)),
        ("\u{2212}12.5°", Some(-12.5)),
        ("+15 degrees", Some(15.0)),
        ("25-30", Some(27.5)),
        ("25 to 30 years old", Some(27.5)),
        ("25–30", Some(27.5)),
        ("between 25 and 30", Some(27.5)),
        ("in their 30s", Some(35.0)),
        ("Yaw: -10 to -20 degrees", Some(-15.0)),
        ("1,234 people", Some(1234.0)),
        ("25.5", Some(25.5)),
        ("25.", Some(25.0)),
        ("30 years old, yes 30", Some(30.0)),
        ("20 or 40", None),
        ("25 and 30", None),
        ("I'd say 30. Answer: 32", Some(32.0)),
        ("The 2nd image shows 40", Some(40.0)),
        ("90% sure he is 45", Some(45.0)),
        ("InternVL3 says 22", Some(22.0)),
        ("no idea", None),
        ("<think>maybe 20</think>35", Some(35.0)),
        ("<think>maybe 20", None),
    ];
    for (output, want) in table {
        assert_eq!(extract_number(output), *want, "{output:?}");
    }
}

#[test]
fn dispatcher_uses_the_task_extractor() {
    let letters = strs(&["A", "B", "C", "D"]);
    let options = strs(AGE);
    let empty = LabelSet::default();
    let f = extract_answer(
        ExtractorKind::Facexbench,
        QuestionStyle::MultipleChoice,
        "A young man",
        &letters,
        &options,
        &empty,
    );
    assert_eq!(f.answer, Extracted::Choice(0));
    assert_eq!(f.rule, "facexbench-start");
    let s = extract_answer(
        ExtractorKind::Strict,
        QuestionStyle::MultipleChoice,
        "A young man",
        &letters,
        &options,
        &empty,
    );
    assert_eq!(s.answer, Extracted::Unparseable);
    let n = extract_answer(
        ExtractorKind::Facexbench,
        QuestionStyle::Numeric,
        "about 41",
        &[],
        &[],
        &empty,
    );
    assert_eq!(n.answer, Extracted::Number(41.0));
    let labels = label_set(&["Male", "Female"], &[]);
    let l = extract_answer(
        ExtractorKind::Strict,
        QuestionStyle::Open,
        "female",
        &[],
        &[],
        &labels,
    );
    assert_eq!(l.answer, Extracted::Label(1));
}

fn load_task(name: &str) -> Task {
    let path = repo_root().join("tasks").join(format!("{name}.toml"));
    Task::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn item_from(case: &Value) -> Item {
    let fields: BTreeMap<String, String> = case["fields"]
        .as_object()
        .expect("fields")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string field").to_string()))
        .collect();
    Item {
        id: "x".into(),
        images: vec![],
        question: Some(case["question"].as_str().expect("question").to_string()),
        options: strings(&case["options"]),
        target: Target::Choice(0),
        groups: BTreeMap::new(),
        cluster: None,
        fields,
    }
}

/// The CoT setting has no upstream code: its composition is faceval's, stated in
/// tasks/facexbench-cot.toml and docs/extraction.md.
fn cot_prompt(case: &Value) -> String {
    let mut text = String::new();
    if case["fields"]["category"] == "tools_use" {
        text += case["fields"]["context"].as_str().expect("context");
        text += "\n";
    }
    text += case["question"].as_str().expect("question");
    text += "\n";
    text += "Think step by step: describe the evidence in the image(s) that bears on the question, compare it with each option, and then give your final answer on the last line as \"Answer: X\", where X is the letter of the correct option.\n";
    for (i, o) in strings(&case["options"]).iter().take(4).enumerate() {
        text += &format!("({}) {o}\n", (b'A' + i as u8) as char);
    }
    text
}

#[test]
fn facexbench_tasks_render_exactly_the_upstream_prompts() {
    let fx = fixture();
    let prompts = fx["prompts"].as_array().expect("prompts");
    assert!(
        prompts
            .iter()
            .any(|p| p["fields"]["category"] == "tools_use"),
        "a tools_use case is needed"
    );
    let settings = [("facexbench", "zero_shot"), ("facexbench-icd", "icd")];
    for (task_name, key) in settings {
        let task = load_task(task_name);
        assert_eq!(task.spec.question.extractor, ExtractorKind::Facexbench);
        assert_eq!(
            task.spec.metrics.breakdown,
            vec!["category".to_string(), "subcategory".to_string()]
        );
        for case in prompts {
            let qs = questions_for(&task, &item_from(case)).expect("renders");
            let want = case[key].as_str().expect("prompt");
            assert_eq!(qs[0].prompt, want, "{task_name} on {}", case["name"]);
            assert!(
                qs[0].prompt.ends_with('\n') && !qs[0].prompt.ends_with("\n\n"),
                "one final newline"
            );
        }
    }
    let cot = load_task("facexbench-cot");
    assert!(
        cot.spec.question.max_new_tokens > load_task("facexbench").spec.question.max_new_tokens
    );
    for case in prompts {
        let qs = questions_for(&cot, &item_from(case)).expect("renders");
        assert_eq!(
            qs[0].prompt,
            cot_prompt(case),
            "facexbench-cot on {}",
            case["name"]
        );
    }
}

#[test]
fn facexbench_templates_do_not_depend_on_minijinja_whitespace_settings() {
    let fx = fixture();
    let case = &fx["prompts"][0];
    let want = case["zero_shot"].as_str().expect("prompt");
    let template = load_task("facexbench").spec.question.template;
    let options: Vec<BTreeMap<&str, String>> = strings(&case["options"])
        .into_iter()
        .zip(["A", "B", "C", "D"])
        .map(|(t, l)| BTreeMap::from([("letter", l.to_string()), ("text", t)]))
        .collect();
    for (keep, trim) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut env = minijinja::Environment::new();
        env.set_keep_trailing_newline(keep);
        env.set_trim_blocks(trim);
        env.set_lstrip_blocks(trim);
        env.add_template("p", &template).expect("parses");
        let got = env
            .get_template("p")
            .expect("template")
            .render(minijinja::context! {
                question => case["question"].as_str(),
                options => options,
                fields => case["fields"],
                labels => Vec::<String>::new(),
            })
            .expect("renders");
        assert_eq!(got, want, "keep_trailing_newline={keep} trim_blocks={trim}");
    }
}
