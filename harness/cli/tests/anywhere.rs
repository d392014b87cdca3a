//! The installed binary works outside its source tree: the shipped tasks, model manifests and
//! published tables are built in, and `--tasks-dir` / `--baselines-dir` (or `FACEVAL_TASKS` /
//! `FACEVAL_BASELINES`) add files that may replace a built-in. Every command here runs with
//! an empty temporary directory as its working directory.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

mod common;
use common::{faceval, repo_root};

/// Runs `faceval` in `cwd` with no FACEVAL_* variables from the caller's environment.
fn faceval_in(cwd: &Path, args: &[&str]) -> Output {
    faceval()
        .current_dir(cwd)
        .env_remove("FACEVAL_TASKS")
        .env_remove("FACEVAL_BASELINES")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shipped(folder: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A FaceXBench benchmark folder as the upstream repository lays it out
/// (`benchmark/*.json`, `benchmark/images/<file>/question_N.png`): two files, `n` questions each.
fn write_facexbench(data: &Path, n: usize) -> usize {
    let bench = data.join("facexbench/benchmark");
    let files = [
        ("fairface_single_mcq_age_test", "bias_fairness", "age"),
        (
            "affectnet_single_mcq",
            "attributes_expression",
            "expression",
        ),
    ];
    let options = [
        ["10-19", "20-29", "30-39", "40-49"],
        ["happy", "sad", "angry", "neutral"],
    ];
    for (f, (stem, category, sub)) in files.iter().enumerate() {
        let images = bench.join("images").join(stem);
        std::fs::create_dir_all(&images).unwrap();
        let mut questions = serde_json::Map::new();
        for q in 1..=n {
            let img = image::RgbImage::from_fn(64, 64, |x, y| {
                image::Rgb([(x * 4) as u8, (y * 4) as u8, (q * 40 + f * 7) as u8])
            });
            img.save(images.join(format!("question_{q}.png"))).unwrap();
            let right = (q + f) % 4;
            let letter = ["A", "B", "C", "D"][right];
            questions.insert(
                q.to_string(),
                json!({
                    "image_paths": [format!("images/{stem}/question_{q}.png")],
                    "question_text": "What is shown in the image?",
                    "options": options[f],
                    "correct_answer_option": letter,
                    "answer": options[f][right],
                }),
            );
        }
        let doc = json!({
            "category": category,
            "sub-category": sub,
            "dataset": "test",
            "question_type": "MCQ",
            "num_images": "single",
            "prepend_text": "",
            "postpend_text": "Answer with the option's letter from the given choices directly.",
            "questions": Value::Object(questions),
        });
        std::fs::write(
            bench.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&doc).unwrap(),
        )
        .unwrap();
    }
    files.len() * n
}

#[test]
fn tasks_run_report_and_demo_work_from_an_empty_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let data_dir = tempfile::tempdir().unwrap();

    // tasks list: every shipped task, each marked as built in.
    let list = ok(&faceval_in(cwd, &["tasks", "list"]));
    let tasks = shipped("tasks", "toml");
    assert_eq!(list.lines().count(), tasks.len(), "{list}");
    for path in &tasks {
        let name = path.file_stem().unwrap().to_string_lossy();
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{list}"));
        assert!(line.contains(" builtin "), "{line}");
        assert!(!line.contains("INVALID"), "{line}");
    }
    let show = ok(&faceval_in(cwd, &["tasks", "show", "facexbench"]));
    let facexbench_toml =
        std::fs::read_to_string(repo_root().join("tasks/facexbench.toml")).unwrap();
    assert!(show.contains(facexbench_toml.trim_end()), "{show}");
    assert!(show.starts_with("# facexbench (v1) from builtin"), "{show}");

    // A FaceXBench run on a small folder, with the run folder relative to the empty directory.
    let n = write_facexbench(data_dir.path(), 5);
    let data = data_dir.path().display().to_string();
    let out = ok(&faceval_in(
        cwd,
        &[
            "run",
            "--model",
            "random",
            "--task",
            "facexbench",
            "--data",
            &data,
            "--out",
            "runs/random",
        ],
    ));
    assert!(out.contains("facexbench"), "{out}");
    let manifest = read_json(&cwd.join("runs/random/manifest.json"));
    let task = &manifest["tasks"][0];
    assert_eq!(task["name"], "facexbench");
    assert_eq!(task["origin"], "builtin", "{manifest:#}");
    assert_eq!(
        task["fingerprint"].as_str().unwrap(),
        faceval_eval::prompt::sha256_hex(facexbench_toml.as_bytes())
    );
    // `random` is a shipped manifest (baselines/random.toml), built in as well.
    assert_eq!(manifest["model"]["origin"], "builtin", "{manifest:#}");
    let random_toml = std::fs::read_to_string(repo_root().join("baselines/random.toml")).unwrap();
    assert_eq!(
        manifest["model"]["fingerprint"].as_str().unwrap(),
        faceval_eval::prompt::sha256_hex(random_toml.as_bytes())
    );
    let metrics = read_json(&cwd.join("runs/random/metrics.json"));
    assert_eq!(metrics["tasks"]["facexbench"]["n"], n);

    // Shipped model names resolve: facellm-1b is known (its weights are not in the cache here,
    // so loading them fails, naming the weights rather than the name).
    let res = faceval_in(
        cwd,
        &[
            "run",
            "--model",
            "facellm-1b",
            "--task",
            "facexbench",
            "--data",
            &data,
            "--out",
            "runs/f",
        ],
    );
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!err.contains("unknown model"), "{err}");
    assert!(err.contains("facellm-1b"), "{err}");

    // report: the page, with the built-in published tables.
    let out = ok(&faceval_in(cwd, &["report", "runs/random", "--out", "rep"]));
    assert!(out.contains("rep/index.html"), "{out}");
    let html = std::fs::read_to_string(cwd.join("rep/index.html")).unwrap();
    assert!(!html.contains("No published tables were found"));
    let board = read_json(&cwd.join("rep/leaderboard.json"));
    let published: Vec<&str> = board["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["file"].as_str().unwrap())
        .collect();
    let shipped_csv: Vec<String> = shipped("baselines/published", "csv")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(published, shipped_csv);

    // demo: runs, summary and the leaderboard page in reports/demo/, its path printed last.
    let out = ok(&faceval_in(cwd, &["demo", "--faces", "24"]));
    assert_eq!(out.lines().last(), Some("reports/demo/index.html"), "{out}");
    let demo = cwd.join("reports/demo");
    for f in [
        "index.html",
        "leaderboard.md",
        "leaderboard.json",
        "summary.md",
    ] {
        assert!(demo.join(f).is_file(), "{f} missing");
    }
    let plots = std::fs::read_dir(demo.join("plots")).unwrap().count();
    assert!(plots > 0);
    let board = read_json(&demo.join("leaderboard.json"));
    let runs: Vec<&str> = board["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["random", "majority", "tiny-internvl3"]);
    let md = std::fs::read_to_string(demo.join("leaderboard.md")).unwrap();
    assert!(md.contains("expression-rafdb"), "{md}");
}

#[test]
fn folders_add_tasks_and_models_and_replace_builtins_by_name() {
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    let extra = tempfile::tempdir().unwrap();
    let tasks_dir = extra.path().join("my-tasks");
    let baselines_dir = extra.path().join("my-baselines");
    std::fs::create_dir_all(&tasks_dir).unwrap();
    std::fs::create_dir_all(baselines_dir.join("published")).unwrap();
    // A replacement of the shipped facexbench task, and a task of its own.
    let replaced = std::fs::read_to_string(repo_root().join("tasks/facexbench.toml"))
        .unwrap()
        .replace("max_new_tokens = 64", "max_new_tokens = 16");
    std::fs::write(tasks_dir.join("facexbench.toml"), &replaced).unwrap();
    let mine = std::fs::read_to_string(repo_root().join("tasks/facexbench.toml"))
        .unwrap()
        .replace("name = \"facexbench\"", "name = \"my-facexbench\"");
    std::fs::write(tasks_dir.join("my-facexbench.toml"), &mine).unwrap();
    std::fs::write(
        baselines_dir.join("my-floor.toml"),
        "name = \"my-floor\"\nkind = \"random\"\n",
    )
    .unwrap();
    std::fs::write(
        baselines_dir.join("published/extra.csv"),
        "# a table of my own\nmodel,overall\nmine,50.0\n",
    )
    .unwrap();

    let td = tasks_dir.display().to_string();
    let list = ok(&faceval_in(cwd, &["--tasks-dir", &td, "tasks", "list"]));
    assert_eq!(
        list.lines().count(),
        shipped("tasks", "toml").len() + 1,
        "{list}"
    );
    let line = |name: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{list}"))
            .to_string()
    };
    let replaced_path = tasks_dir.join("facexbench.toml").display().to_string();
    assert!(line("facexbench").contains(&format!("{replaced_path} (replaces the built-in)")));
    assert!(
        line("my-facexbench").contains(&tasks_dir.join("my-facexbench.toml").display().to_string())
    );
    assert!(line("age-fairface").contains(" builtin "));

    // The environment variables do what the flags do; the manifest records the files used.
    let data_dir = tempfile::tempdir().unwrap();
    write_facexbench(data_dir.path(), 2);
    let data = data_dir.path().display().to_string();
    let res = faceval()
        .current_dir(cwd)
        .env("FACEVAL_TASKS", &tasks_dir)
        .env("FACEVAL_BASELINES", &baselines_dir)
        .args([
            "run",
            "--model",
            "my-floor",
            "--task",
            "facexbench",
            "--task",
            "my-facexbench",
            "--data",
            &data,
            "--out",
            "runs/mine",
        ])
        .output()
        .unwrap();
    ok(&res);
    let manifest = read_json(&cwd.join("runs/mine/manifest.json"));
    assert_eq!(
        manifest["model"]["origin"],
        baselines_dir.join("my-floor.toml").display().to_string()
    );
    let origin = |name: &str| {
        manifest["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| (t["origin"].clone(), t["fingerprint"].clone()))
            .unwrap()
    };
    assert_eq!(
        origin("facexbench"),
        (
            json!(replaced_path),
            json!(faceval_eval::prompt::sha256_hex(replaced.as_bytes()))
        )
    );
    assert_eq!(
        origin("my-facexbench").0,
        json!(tasks_dir.join("my-facexbench.toml").display().to_string())
    );

    // Published tables from the folder join the built-in ones.
    let bd = baselines_dir.display().to_string();
    ok(&faceval_in(
        cwd,
        &[
            "--baselines-dir",
            &bd,
            "report",
            "runs/mine",
            "--out",
            "rep",
        ],
    ));
    let board = read_json(&cwd.join("rep/leaderboard.json"));
    let files: Vec<&str> = board["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["file"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"extra.csv"), "{files:?}");
    assert_eq!(files.len(), shipped("baselines/published", "csv").len() + 1);

    // Unknown names list what is known, built-ins included; a missing folder names the flag.
    let res = faceval_in(
        cwd,
        &[
            "run", "--model", "random", "--task", "nope", "--data", &data,
        ],
    );
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("unknown task \"nope\""), "{err}");
    assert!(err.contains("Known tasks: age-fairface, "), "{err}");
    let res = faceval_in(cwd, &["--tasks-dir", "no-such-folder", "tasks", "list"]);
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("--tasks-dir no-such-folder"), "{err}");
}
