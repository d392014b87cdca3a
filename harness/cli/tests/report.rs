//! `faceval report` checked as a person would: run the demo, report on its runs, then open
//! index.html in headless Chromium, read the rendered DOM and the console, and look at a
//! screenshot (it must not be blank). Chromium is required: CI installs it (.ci/run); on a
//! machine without it this test fails and says how to install it.
//!
//! `FACEVAL_UPDATE_SCREENSHOT=1` also copies the screenshot to docs/img/demo-report.png.

mod common;
use common::{faceval, repo_root};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// What a finished command wrote.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Run a command with a time limit (Chromium can hang on a broken machine). Output goes to
/// files, not pipes: a page's DOM is larger than a pipe's buffer and would block the child.
fn run_with_timeout(mut cmd: Command, logs: &Path, limit: Duration) -> Output {
    std::fs::create_dir_all(logs).unwrap();
    let (out_path, err_path) = (logs.join("stdout"), logs.join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start process");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out after {limit:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Output {
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn chromium(profile: &Path, extra: &[String], url: &str) -> Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test renders the report in headless Chromium. Install it with \
         `apt-get update && apt-get install -y --no-install-recommends chromium` (CI does this in .ci/run)."
    );
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    run_with_timeout(cmd, &profile.join("logs"), Duration::from_secs(120))
}

/// Console messages Chromium logged for the page (`CONSOLE(line)` entries), and failed loads.
fn page_problems(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Uncaught")
                || l.contains("Failed to load resource")
                || l.contains("net::ERR_")
        })
        .map(str::to_string)
        .collect()
}

/// Measures the laid-out page (added only to a test copy of it): tables wider than the
/// window, and SVG text outside its figure's box or ending in an ellipsis.
const LAYOUT_PROBE: &str = r#"<script>
(() => {
  const vw = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll('table')];
  const wide = tables
    .filter(t => t.getBoundingClientRect().width > vw - 40)
    .map(t => (t.closest('section') || {}).id + ': ' + Math.round(t.getBoundingClientRect().width) + ' px: ' + t.rows[0].textContent.trim().slice(0, 60));
  const clipped = [];
  let labels = 0;
  for (const svg of document.querySelectorAll('svg')) {
    // Screen boxes, so that rotated axis titles are measured as drawn.
    const f = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      if (!t.textContent.trim()) continue;
      labels += 1;
      const b = t.getBoundingClientRect();
      const out = b.left < f.left - 1 || b.top < f.top - 1 || b.right > f.right + 1 || b.bottom > f.bottom + 1;
      if (out || t.textContent.trim().endsWith('…')) clipped.push(t.textContent.trim());
    }
  }
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify({vw, tables: tables.length, wide, labels, clipped});
  document.body.appendChild(pre);
})();
</script>"#;

#[test]
fn demo_report_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let res = faceval()
        .current_dir(repo_root())
        .args([
            "demo",
            "--out",
            &demo.display().to_string(),
            "--faces",
            "96",
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "demo: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let runs: Vec<String> = std::fs::read_dir(demo.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(runs.len() >= 2, "demo made {runs:?}");
    let out = dir.path().join("report");
    let res = faceval()
        .current_dir(repo_root())
        .arg("report")
        .args(&runs)
        .args([
            "--out",
            &out.display().to_string(),
            "--reference",
            "majority",
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "report: {}",
        String::from_utf8_lossy(&res.stderr)
    );

    // The files, and the same content in JSON.
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let md = std::fs::read_to_string(out.join("leaderboard.md")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("leaderboard.json")).unwrap())
            .unwrap();
    assert!(out.join("plots/accuracy.png").exists());
    assert!(
        md.contains("## Leaderboard")
            && md.contains("## Fairness")
            && md.contains("## Published reference results")
    );
    let sections = json["sections"].as_array().unwrap();
    let rows = sections[0]["rows"].as_array().unwrap();
    assert!(rows
        .iter()
        .any(|r| r["reference"] == true && r["label"] == "majority"));
    // Every run has a row somewhere; runs of other task definitions sit in noted sections.
    for run in &runs {
        let model = Path::new(run).file_name().unwrap().to_str().unwrap();
        let has_row = sections.iter().any(|s| {
            s["rows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["label"] == model)
        });
        assert!(has_row, "{model} has no row");
    }
    // The demo's three models ask the same task definitions: one leaderboard holds them all.
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    for model in ["majority", "random", "tiny-internvl3"] {
        assert!(
            labels.contains(&model),
            "{model} not in the main leaderboard: {labels:?}"
        );
    }
    for s in &sections[1..] {
        assert!(
            s["note"].as_str().unwrap().contains("not comparable"),
            "{s}"
        );
    }
    assert_eq!(json["reference"], "majority");
    // A random model's significance cells exist wherever it shares questions with majority.
    let random = rows.iter().find(|r| r["label"] == "random").unwrap();
    assert!(random["cells"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["significance"]["p_holm"].is_number()));
    assert!(json["published"].as_array().unwrap().len() >= 2);

    // Self-contained: nothing is fetched.
    for bad in [
        "<script",
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
    ] {
        assert!(!html.contains(bad), "index.html contains {bad}");
    }
    assert!(html.contains("<svg"), "figures are inlined as SVG");

    let url = format!("file://{}", out.join("index.html").display());
    let dom = chromium(
        &dir.path().join("profile-dom"),
        &["--dump-dom".into()],
        &url,
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let problems = page_problems(&String::from_utf8_lossy(&dom.stderr));
    assert!(
        problems.is_empty(),
        "console errors or failed loads: {problems:#?}"
    );
    for (id, heading) in [
        ("leaderboard", "Leaderboard"),
        ("fairness", "Fairness"),
        ("efficiency", "Efficiency"),
        ("published", "Published reference results"),
        ("parse-failures", "Parse failures"),
    ] {
        assert!(
            dom_text.contains(&format!("<section id=\"{id}\"><h2>{heading}</h2>")),
            "rendered page lacks the {heading} section"
        );
    }
    assert!(
        dom_text.contains("Face Authentication"),
        "FaceXBench columns in the paper's names"
    );
    assert!(dom_text.contains("FaceLLM-38B"), "published FaceLLM rows");

    // Layout at 1024 and 1400 pixels: no table wider than the window, no SVG label outside
    // its figure, no label cut short. The page has no scripts; this test adds one to a copy,
    // which measures the laid-out page and writes the result into the DOM that --dump-dom prints.
    let probe = out.join("layout-probe.html");
    std::fs::write(
        &probe,
        html.replace("</body>", &format!("{LAYOUT_PROBE}</body>")),
    )
    .unwrap();
    for width in [1024, 1400] {
        let dom = chromium(
            &dir.path().join(format!("profile-layout-{width}")),
            &["--dump-dom".into(), format!("--window-size={width},900")],
            &format!("file://{}", probe.display()),
        );
        let text = String::from_utf8_lossy(&dom.stdout);
        let json = text
            .split("<pre id=\"layout-check\">")
            .nth(1)
            .and_then(|t| t.split("</pre>").next())
            .unwrap_or_else(|| panic!("the layout probe did not run at {width} px"));
        let v: serde_json::Value =
            serde_json::from_str(&json.replace("&quot;", "\"").replace("&amp;", "&"))
                .unwrap_or_else(|e| panic!("{e}: {json}"));
        assert!(v["tables"].as_u64().unwrap() >= 3, "{v}");
        assert_eq!(
            v["wide"],
            serde_json::json!([]),
            "tables wider than {width} px: {v}"
        );
        assert!(v["labels"].as_u64().unwrap() > 50, "{v}");
        assert_eq!(
            v["clipped"],
            serde_json::json!([]),
            "SVG labels outside their figure at {width} px: {v}"
        );
    }

    let shot = dir.path().join("shot.png");
    let res = chromium(
        &dir.path().join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".into(),
        ],
        &url,
    );
    let problems = page_problems(&String::from_utf8_lossy(&res.stderr));
    assert!(
        problems.is_empty(),
        "console errors or failed loads: {problems:#?}"
    );
    let img = image::open(&shot)
        .unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()))
        .to_luma8();
    assert_eq!(img.dimensions(), (1280, 2000));
    let px: Vec<f64> = img.pixels().map(|p| p.0[0] as f64).collect();
    let mean = px.iter().sum::<f64>() / px.len() as f64;
    let var = px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / px.len() as f64;
    let inked = px.iter().filter(|&&v| v < 200.0).count() as f64 / px.len() as f64;
    // A blank or all-one-colour page has variance ~0 and no ink; text, tables and plots give both.
    assert!(
        var > 100.0,
        "screenshot looks blank: luminance variance {var:.1}"
    );
    assert!(
        inked > 0.01,
        "screenshot has almost no dark pixels: {:.3}%",
        inked * 100.0
    );
    if std::env::var_os("FACEVAL_UPDATE_SCREENSHOT").is_some() {
        let dest = repo_root().join("docs/img/demo-report.png");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&shot, &dest).unwrap();
    }
}

#[test]
fn report_input_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let res = faceval()
        .args([
            "report",
            &dir.path().join("nope").display().to_string(),
            "--out",
        ])
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(
        res.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("not a faceval run folder"));
}
