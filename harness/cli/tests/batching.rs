//! `faceval run --batch-size N` and the runner's task interleaving, end to end: the same
//! predictions at every batch size (random baseline, the tiny InternVL checkpoint, and the
//! tiny checkpoint served over the OpenAI API), a deterministic chunk-by-chunk task order,
//! per-member timings, and resume after an interrupted batched run.

mod common;
use common::{faceval, repo_root, write_dataset};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The runner's chunk (`faceval_eval::runner::CHUNK_ITEMS`).
const CHUNK: usize = faceval_eval::runner::CHUNK_ITEMS;

fn tiny() -> PathBuf {
    repo_root().join("harness/models/tests/fixtures/internvl/tiny-300m-current")
}

/// Copies of `task` under other names: tasks that ask about the same images, like FairFace's
/// age, gender and race.
fn sibling_tasks(dir: &Path, task: &Path, names: &[&str]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(task).unwrap();
    names
        .iter()
        .map(|n| {
            let p = dir.join(format!("{n}.toml"));
            std::fs::write(
                &p,
                text.replacen("name = \"expr\"", &format!("name = \"{n}\""), 1),
            )
            .unwrap();
            p
        })
        .collect()
}

fn run(
    dir: &Path,
    model: &str,
    tasks: &[PathBuf],
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let out = faceval()
        .args(["run", "--model", model, "--seed", "5", "--data"])
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg("--task")
        .args(tasks)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Predictions in file order.
fn lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Predictions without timings, in file order.
fn untimed(out: &Path) -> Vec<serde_json::Value> {
    lines(out)
        .into_iter()
        .map(|mut p| {
            p.as_object_mut().unwrap().remove("timings");
            p
        })
        .collect()
}

/// Lines written so far to `path` (0 while it does not exist).
fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Polls until `path` has `n` lines or `limit` has passed (a run being watched mid-way).
fn wait_for_lines(path: &Path, n: usize, limit: Duration) {
    let started = std::time::Instant::now();
    while line_count(path) < n && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

fn metrics(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn batch_size_changes_no_prediction_and_tasks_are_interleaved_by_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let n = 75;
    let base = write_dataset(dir.path(), n);
    let tasks = sibling_tasks(dir.path(), &base, &["age", "gender", "race"]);

    let one = dir.path().join("b1");
    run(dir.path(), "random", &tasks, &one, &[]);
    let four = dir.path().join("b4");
    run(dir.path(), "random", &tasks, &four, &["--batch-size", "4"]);

    // Same predictions, in the same order: the interleaving does not depend on the batch size.
    assert_eq!(untimed(&one).len(), 3 * n);
    assert_eq!(untimed(&four), untimed(&one));
    assert_eq!(metrics(&four)["tasks"], metrics(&one)["tasks"]);
    assert_eq!(manifest(&one)["batch_size"], 1);
    assert_eq!(manifest(&four)["batch_size"], 4);
    assert_eq!(metrics(&four)["telemetry"]["batch_size"], 4);

    // Chunk k of age, gender and race, then chunk k + 1; each task in dataset order.
    let mut expected = Vec::new();
    for k in 0..n.div_ceil(CHUNK) {
        for task in ["age", "gender", "race"] {
            for i in k * CHUNK..((k + 1) * CHUNK).min(n) {
                expected.push((task.to_string(), format!("manifest:item{i:05}")));
            }
        }
    }
    let got: Vec<(String, String)> = lines(&one)
        .iter()
        .map(|p| {
            (
                p["task"].as_str().unwrap().to_string(),
                p["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);

    // Per member of a batch: the call's e2e, and an equal share of the runner's wall time.
    // Batches hold consecutive items of one task within a chunk: 32 = 8 × 4, and the last
    // chunk's 11 items make batches of 4, 4 and 3.
    let preds = lines(&four);
    let mut at = 0;
    let mut batches = 0;
    while at < preds.len() {
        let task = preds[at]["task"].clone();
        let in_chunk = {
            let mut m = 1;
            while at + m < preds.len() && preds[at + m]["task"] == task && m < CHUNK {
                m += 1;
            }
            m
        };
        let mut off = 0;
        while off < in_chunk {
            let size = 4.min(in_chunk - off);
            let members = &preds[at + off..at + off + size];
            let t0 = &members[0]["timings"];
            assert!(t0["e2e_ms"].as_f64().unwrap() > 0.0, "{t0}");
            for m in members {
                assert_eq!(m["timings"]["e2e_ms"], t0["e2e_ms"], "{members:?}");
                assert_eq!(m["timings"]["wall_ms"], t0["wall_ms"], "{members:?}");
                assert_eq!(m["timings"]["warmup"], t0["warmup"], "{members:?}");
            }
            batches += 1;
            off += size;
        }
        at += in_chunk;
    }
    assert_eq!(batches, 3 * (2 * 8 + 3));
    // Warm-up counts model calls: each task's first batch (all four members) is left out.
    let warm: Vec<&serde_json::Value> = preds
        .iter()
        .filter(|p| p["timings"]["warmup"] == true)
        .collect();
    assert_eq!(warm.len(), 3 * 4);
    let t = &metrics(&four)["telemetry"]["overall"];
    assert_eq!(t["n"], 3 * n - 12);
    assert_eq!(t["n_warmup"], 12);

    // 0 is refused as a usage error.
    let bad = faceval()
        .args(["run", "--model", "random", "--batch-size", "0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--task")
        .arg(&tasks[0])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--batch-size"));
}

#[test]
fn a_batched_run_killed_mid_way_resumes_to_the_same_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6_000;
    let base = write_dataset(dir.path(), n);
    let tasks = sibling_tasks(dir.path(), &base, &["a", "b"]);
    let reference = dir.path().join("reference");
    run(dir.path(), "random", &tasks, &reference, &[]);

    let out = dir.path().join("killed");
    let mut child = faceval()
        .args(["run", "--model", "random", "--seed", "5", "--data"])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .args(["--batch-size", "7", "--task"])
        .args(&tasks)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let preds = out.join("predictions.jsonl");
    let count = || line_count(&preds);
    wait_for_lines(&preds, 100, Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = count();
    assert!(at_kill > 0 && at_kill < 2 * n, "{at_kill}");

    run(dir.path(), "random", &tasks, &out, &["--batch-size", "7"]);
    let key = |p: &serde_json::Value| (p["task"].to_string(), p["id"].to_string());
    let mut resumed = untimed(&out);
    resumed.sort_by_key(key);
    let mut whole = untimed(&reference);
    whole.sort_by_key(key);
    assert_eq!(resumed.len(), 2 * n);
    assert_eq!(resumed, whole);
}

/// Two generation tasks over the fixture faces (three images, each asked about by both).
fn internvl_setup(dir: &Path) -> Vec<PathBuf> {
    let data = dir.join("data/img");
    std::fs::create_dir_all(&data).unwrap();
    let faces = ["face_448.png", "face_380x380.png", "face_520x500.png"];
    for f in faces {
        std::fs::copy(tiny().join("../images").join(f), data.join(f)).unwrap();
    }
    let labels = ["happiness", "sadness", "anger", "neutral"];
    let mut csv = String::from("id,image,expression,gender\n");
    for i in 0..7 {
        csv.push_str(&format!(
            "item{i:05},img/{},{},{}\n",
            faces[i % 3],
            labels[(i * 3) % 4],
            ["Male", "Female"][i % 2]
        ));
    }
    std::fs::write(dir.join("data/set.csv"), csv).unwrap();
    let base = write_task(dir);
    sibling_tasks(dir, &base, &["expr-a", "expr-b"])
}

fn write_task(dir: &Path) -> PathBuf {
    let task = dir.join("expr.toml");
    std::fs::write(
        &task,
        r#"name = "expr"
[dataset]
reader = "manifest"
path = "set.csv"
options = { id_column = "id", label_column = "expression", group_columns = ["gender"] }
[labels]
field = "expression"
values = ["happiness", "sadness", "anger", "neutral"]
[question]
style = "multiple_choice"
text = "Which expression?"
max_new_tokens = 5
template = """{{ question }}
{% for o in options %}({{ o.letter }}) {{ o.text }}
{% endfor %}Answer with the option's letter."""
[metrics]
report = ["accuracy"]
"#,
    )
    .unwrap();
    task
}

/// What the model said, per question: text, tokens, outcome.
fn answers(out: &Path) -> Vec<(String, String, String, String, u64, u64)> {
    lines(out)
        .iter()
        .map(|p| {
            (
                p["task"].as_str().unwrap().to_string(),
                p["id"].as_str().unwrap().to_string(),
                p["raw_output"].as_str().unwrap().to_string(),
                p["outcome"].as_str().unwrap().to_string(),
                p["prompt_tokens"].as_u64().unwrap(),
                p["output_tokens"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn internvl_answers_identically_at_batch_sizes_1_and_4() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = internvl_setup(dir.path());
    let model = tiny().display().to_string();
    let one = dir.path().join("b1");
    run(dir.path(), &model, &tasks, &one, &[]);
    let four = dir.path().join("b4");
    run(dir.path(), &model, &tasks, &four, &["--batch-size", "4"]);
    let a1 = answers(&one);
    assert_eq!(a1.len(), 14);
    assert!(a1.iter().all(|a| a.3 != "error" && a.5 >= 1), "{a1:?}");
    assert_eq!(answers(&four), a1);
    assert_eq!(untimed(&four), untimed(&one));
    // The model's own stage split is kept on every member (vision may be a cache hit).
    for p in lines(&four) {
        assert!(p["timings"]["prefill_ms"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["timings"]["e2e_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
}

#[test]
fn the_feature_cache_skips_repeated_faces_without_changing_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = internvl_setup(dir.path());
    let model = tiny().display().to_string();
    let cached = dir.path().join("cached");
    run(dir.path(), &model, &tasks, &cached, &["--warmup", "0"]);
    let uncached = dir.path().join("uncached");
    let flags = ["--warmup", "0", "--feature-cache-mb", "0"];
    run(dir.path(), &model, &tasks, &uncached, &flags);
    assert_eq!(answers(&cached), answers(&uncached));
    let vision = |out: &Path| -> Vec<f64> {
        lines(out)
            .iter()
            .map(|p| p["timings"]["vision_ms"].as_f64().unwrap())
            .collect()
    };
    // 14 questions about 3 faces: without the cache every one runs the vision encoder; with
    // it, the 11 repeats cost a hash, far below the cheapest encode.
    let encode = vision(&uncached);
    let cheapest = encode.iter().cloned().fold(f64::INFINITY, f64::min);
    let hits = vision(&cached)
        .iter()
        .filter(|&&v| v < cheapest / 4.0)
        .count();
    assert_eq!(
        hits,
        11,
        "cached {:?} vs uncached {encode:?}",
        vision(&cached)
    );
}

/// `faceval serve` on the tiny checkpoint, killed on drop.
struct Server(Child, u16);

impl Server {
    /// On `port` (0: any free port). A port just freed by a killed server may take a moment
    /// to bind again, so a fixed port is retried for a while.
    fn start(port: u16) -> Server {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = faceval()
                .args(["serve", "--model"])
                .arg(tiny())
                .args(["--served-model-name", "tiny", "--port", &port.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("listening on http://") {
                        let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse().ok()));
                    }
                }
            });
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(Some(port)) => return Server(child, port),
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if port == 0 || std::time::Instant::now() > deadline {
                        panic!("faceval serve did not start: {other:?}");
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_served_model_batched_as_concurrent_requests_answers_like_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = internvl_setup(dir.path());
    let server = Server::start(0);
    // No response cache: every question must reach the server in both runs.
    let model = remote_manifest(dir.path(), server.1);
    let one = dir.path().join("b1");
    let o1 = run(dir.path(), &model, &tasks, &one, &[]);
    let four = dir.path().join("b4");
    let o4 = run(dir.path(), &model, &tasks, &four, &["--batch-size", "4"]);
    let a1 = answers(&one);
    assert_eq!(a1.len(), 14);
    assert!(a1.iter().all(|a| a.3 != "error"), "{a1:?}");
    assert_eq!(answers(&four), a1);
    // Each run asked the server every question (plus its start-up probe and the model
    // listing), none from a cache; the manifest records the same counts.
    for (o, run) in [(&o1, &one), (&o4, &four)] {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("16 HTTP requests") && stderr.contains("0 answers from the cache"),
            "{stderr}"
        );
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["http_requests"], 16, "{manifest}");
        assert_eq!(manifest["cache_hits"], 0, "{manifest}");
    }
    // And the answers are the local checkpoint's.
    let local = dir.path().join("local");
    run(
        dir.path(),
        &tiny().display().to_string(),
        &tasks,
        &local,
        &[],
    );
    let strip = |v: Vec<(String, String, String, String, u64, u64)>| {
        v.into_iter()
            .map(|a| (a.0, a.1, a.2, a.3))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(answers(&four)), strip(answers(&local)));
}

/// An OpenAI-kind manifest for the server on `port`, four requests in flight, no cache.
fn remote_manifest(dir: &Path, port: u16) -> String {
    let manifest = dir.join("remote.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"remote-tiny\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
             api_model = \"tiny\"\ntimeout_s = 60\nmax_retries = 1\nmax_concurrency = 4\n\
             cache_dir = \"off\"\n"
        ),
    )
    .unwrap();
    manifest.display().to_string()
}

#[test]
fn a_server_lost_during_a_batch_stops_the_run_without_item_errors_and_the_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 48;
    let base = write_dataset(dir.path(), n);
    let tasks = sibling_tasks(dir.path(), &base, &["a", "b"]);
    let mut server = Server::start(0);
    let port = server.1;
    let model = remote_manifest(dir.path(), port);
    let out = dir.path().join("run");
    let mut child = faceval()
        .args([
            "run",
            "--model",
            &model,
            "--seed",
            "5",
            "--batch-size",
            "4",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .arg("--task")
        .args(&tasks)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let preds = out.join("predictions.jsonl");
    let count = || line_count(&preds);
    wait_for_lines(&preds, 4, Duration::from_secs(120));
    server.kill();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let done = count();
    assert!(
        done >= 4 && done < 2 * n,
        "the loss must land mid-run ({done})"
    );
    assert!(
        lines(&out).iter().all(|p| p["outcome"] != "error"),
        "no member of a batch may be recorded as failed because the server went away"
    );

    let _server = Server::start(port);
    let again = run(dir.path(), &model, &tasks, &out, &["--batch-size", "4"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains(&format!("resumed {done}")), "{stderr}");
    let all = lines(&out);
    assert_eq!(all.len(), 2 * n);
    assert!(all.iter().all(|p| p["outcome"] != "error"));
}
