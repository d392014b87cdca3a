//! Issue 17 (verification) end to end: an RFW-shaped folder of face pairs, asked of the
//! committed tiny InternVL3 checkpoint by answer likelihood (two images per question) and of
//! the random baseline by generation. Predictions carry `score` next to `parsed`;
//! metrics.json gets the `verification` block with per-race rates; `faceval audit` prints and
//! serialises them; the report draws the DET curve; bad input exits 2.

mod common;
use common::faceval;

use std::path::{Path, PathBuf};

use serde_json::Value;

const RACES: [&str; 2] = ["African", "Asian"];

/// `<dir>/rfw/txts/<race>_pairs.txt` and `<dir>/rfw/data/<race>/<id>/<id>_<nnnn>.png` for
/// three identities per race, two images each (the fixture faces), three matched and three
/// mismatched pairs per race; and the task file.
fn setup(dir: &Path) -> PathBuf {
    let faces = common::model_fixtures("internvl").join("images");
    let files = ["face_448.png", "face_380x380.png", "face_520x500.png"];
    for race in RACES {
        let mut list = String::new();
        for k in 0..3 {
            let id = format!("m.{race}{k}");
            for n in 1..=2 {
                let to = dir.join(format!("rfw/data/{race}/{id}/{id}_{n:04}.png"));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(faces.join(files[(k + n) % 3]), to).unwrap();
            }
            list.push_str(&format!("{id}\t1\t2\n"));
        }
        for k in 0..3 {
            list.push_str(&format!("m.{race}{k}\t1\tm.{race}{}\t2\n", (k + 1) % 3));
        }
        let path = dir.join(format!("rfw/txts/{race}_pairs.txt"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, list).unwrap();
    }
    let task = dir.join("pairs.toml");
    std::fs::write(
        &task,
        r#"name = "pairs"
[dataset]
reader = "rfw_pairs"
path = "rfw/txts"
images = "rfw/data"
options = { races = ["African", "Asian"], extension = "png" }
[labels]
values = ["yes", "no"]
[question]
style = "verification"
text = "Do these two faces show the same person?"
template = "{{ question }} Answer yes or no."
scoring = "likelihood"
max_new_tokens = 4
[fairness]
groups = ["race"]
"#,
    )
    .unwrap();
    task
}

fn ok(res: &std::process::Output) -> String {
    assert!(
        res.status.success(),
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    String::from_utf8_lossy(&res.stdout).into_owned()
}

fn run(dir: &Path, model: &std::ffi::OsStr, task: &Path, out: &Path) -> std::process::Output {
    faceval()
        .args(["run", "--model"])
        .arg(model)
        .arg("--data")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--task"])
        .arg(task)
        .output()
        .unwrap()
}

fn lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pairs_are_scored_audited_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let task = setup(dir.path());
    let out = dir.path().join("run-tiny");
    let model = common::model_fixtures("internvl").join("tiny-300m-current");
    ok(&run(dir.path(), model.as_os_str(), &task, &out));

    // Every pair: two images, the answers' log-likelihoods, and the score from them.
    let preds = lines(&out);
    assert_eq!(preds.len(), 12);
    for p in &preds {
        assert_ne!(p["outcome"], "error", "{p}");
        assert_eq!(p["image_sha256"].as_array().unwrap().len(), 2, "{p}");
        let lp = &p["option_logprobs"];
        let (yes, no) = (lp["yes"].as_f64().unwrap(), lp["no"].as_f64().unwrap());
        let score = p["score"].as_f64().unwrap();
        assert!(
            (score - 1.0 / (1.0 + (no - yes).exp())).abs() < 1e-12,
            "{p}"
        );
        assert!(p["groups"]["race"] == "African" || p["groups"]["race"] == "Asian");
    }
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let v = &metrics["tasks"]["pairs"]["verification"];
    assert_eq!(
        (v["n"].as_u64(), v["n_genuine"].as_u64()),
        (Some(12), Some(6)),
        "{v}"
    );
    assert_eq!(v["auc"]["method"], "cluster_bootstrap");
    let auc = v["auc"]["estimate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&auc));
    assert_eq!(v["tmr_at_fmr"].as_array().unwrap().len(), 3);
    assert_eq!(v["group_fmr"], 0.01);
    let groups = v["groups"]["race"]["groups"].as_object().unwrap();
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["African", "Asian"]);
    assert_eq!(groups["Asian"]["n_impostor"], 3);

    // The audit: JSON block and Markdown table, and a bad --group-fmr.
    let json: Value = serde_json::from_str(&ok(&faceval()
        .arg("audit")
        .arg(&out)
        .args([
            "--format",
            "json",
            "--group-fmr",
            "0.2",
            "--resamples",
            "200",
        ])
        .output()
        .unwrap()))
    .unwrap();
    let va = &json["runs"][0]["tasks"][0]["verification"];
    assert_eq!(va["group_fmr"], 0.2, "{va}");
    // The audit's block is the metrics block at another global FMR: same pairs and AUC.
    assert_eq!(va["n"], v["n"]);
    assert_eq!(va["auc"]["estimate"], v["auc"]["estimate"]);
    assert_eq!(
        va["groups"]["race"]["groups"]["African"]["n_genuine"], 3,
        "{va}"
    );
    let md = ok(&faceval().arg("audit").arg(&out).output().unwrap());
    assert!(md.contains("#### Verification"), "{md}");
    assert!(md.contains("race = African"), "{md}");
    let bad = faceval()
        .arg("audit")
        .arg(&out)
        .args(["--group-fmr", "1.5"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--group-fmr 1.5"));

    // A generating model scores 1 or 0 from its answer.
    let random = dir.path().join("run-random");
    ok(&run(dir.path(), "random".as_ref(), &task, &random));
    for p in lines(&random) {
        let want = match p["parsed"].as_str() {
            Some("yes") => Some(1.0),
            Some("no") => Some(0.0),
            _ => None,
        };
        assert_eq!(p["score"].as_f64(), want, "{p}");
    }

    // The report: the verification tables and the DET curve.
    let report = dir.path().join("report");
    ok(&faceval()
        .arg("report")
        .arg(&out)
        .arg(&random)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap());
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(
        html.contains("id=\"verification\""),
        "no verification section"
    );
    assert!(html.contains("id=\"fig-det-pairs\""), "no DET curve");
    let md = std::fs::read_to_string(report.join("leaderboard.md")).unwrap();
    assert!(md.contains("## Face verification") && md.contains("TMR % @ FMR 0.01"));
}

#[test]
fn a_broken_pair_list_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let task = setup(dir.path());
    // LFW-style header that does not match the lines that follow.
    let lfw = dir.path().join("lfw");
    std::fs::create_dir_all(&lfw).unwrap();
    std::fs::write(lfw.join("pairs.txt"), "10\t300\nA\t1\t2\n").unwrap();
    let lfw_task = dir.path().join("lfw.toml");
    std::fs::write(
        &lfw_task,
        std::fs::read_to_string(&task)
            .unwrap()
            .replace("reader = \"rfw_pairs\"", "reader = \"lfw_pairs\"")
            .replace("path = \"rfw/txts\"", "path = \"lfw/pairs.txt\"")
            .replace("images = \"rfw/data\"\n", "")
            .replace(
                "options = { races = [\"African\", \"Asian\"], extension = \"png\" }",
                "",
            ),
    )
    .unwrap();
    let res = run(
        dir.path(),
        "random".as_ref(),
        &lfw_task,
        &dir.path().join("o"),
    );
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("pairs.txt") && err.contains("6000 lines"),
        "{err}"
    );
}
