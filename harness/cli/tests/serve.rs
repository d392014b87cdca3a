//! The OpenAI-compatible backend against real servers on 127.0.0.1: `faceval serve` running
//! the tiny InternVL fixture checkpoint, and small in-test HTTP servers that answer slowly or
//! badly on purpose. Every wait is bounded in time.

mod common;
use common::{faceval, repo_root};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use faceval_models::openai::{OpenAiConfig, OpenAiModel};
use faceval_models::{Model, Request};

fn fixture() -> PathBuf {
    repo_root().join("harness/models/tests/fixtures/internvl/tiny-300m-current")
}

/// `faceval serve` in a child process, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(port: u16) -> Server {
        Self::start_with(port, &[], &[])
    }

    /// `faceval serve` on the fixture with extra flags and environment variables.
    fn start_with(port: u16, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::start_model(port, &fixture(), extra, envs)
    }

    fn start_model(port: u16, model: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        // A port just freed by a killed server may take a moment to bind again.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Self::try_start(port, model, extra, envs) {
                Ok(s) => return s,
                Err(e) if Instant::now() < deadline && port != 0 => {
                    eprintln!("retrying serve on port {port}: {e}");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("faceval serve did not start: {e}"),
            }
        }
    }

    fn try_start(
        port: u16,
        model: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut child = faceval()
            .args(["serve", "--model"])
            .arg(model)
            .args(["--served-model-name", "tiny", "--port", &port.to_string()])
            .args(extra)
            .env_remove("FACEVAL_SERVE_API_KEY")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
                }
            }
        });
        let err_text = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = Arc::clone(&err_text);
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            *sink.lock().unwrap() = s;
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(port)) => Ok(Server { child, port }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(format!(
                    "no listening line; stderr: {}",
                    err_text.lock().unwrap()
                ))
            }
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A manifest dataset of `n` items over four PNGs, and a generated multiple-choice task.
fn write_dataset(dir: &Path, n: usize) -> PathBuf {
    let images = dir.join("data/img");
    std::fs::create_dir_all(&images).unwrap();
    for k in 0..4u8 {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([
                (x as u8).wrapping_mul(k + 1),
                (y as u8).wrapping_mul(3),
                50 * k,
            ])
        });
        img.save(images.join(format!("{k}.png"))).unwrap();
    }
    let labels = ["happiness", "sadness", "anger", "neutral"];
    let mut csv = String::from("id,image,expression\n");
    for i in 0..n {
        csv.push_str(&format!(
            "item{i:04},img/{}.png,{}\n",
            i % 4,
            labels[(i * 7) % 4]
        ));
    }
    std::fs::write(dir.join("data/set.csv"), csv).unwrap();
    let task = dir.join("expr.toml");
    std::fs::write(
        &task,
        r#"name = "expr"
[dataset]
reader = "manifest"
path = "set.csv"
options = { id_column = "id", label_column = "expression" }
[labels]
field = "expression"
values = ["happiness", "sadness", "anger", "neutral"]
[question]
style = "multiple_choice"
text = "Which expression?"
max_new_tokens = 6
template = """{{ question }}
{% for o in options %}({{ o.letter }}) {{ o.text }}
{% endfor %}"""
[metrics]
report = ["accuracy"]
"#,
    )
    .unwrap();
    task
}

fn write_manifest(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("remote.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"remote-tiny\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_model = \"tiny\"\n\
             timeout_s = 30\nmax_retries = 1\ncache_dir = \"{}\"\n{extra}",
            dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

fn run_cmd(dir: &Path, model: &Path, task: &Path, out: &Path) -> Command {
    let mut c = faceval();
    c.args(["run", "--model"])
        .arg(model)
        .arg("--task")
        .arg(task)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(out)
        .args(["--seed", "3"]);
    c
}

fn predictions(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap_or_default();
    let mut v: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    v.sort_by_key(|p| (p["id"].to_string(), p["rotation"].to_string()));
    v
}

fn answers(out: &Path) -> Vec<(String, String, String, String)> {
    predictions(out)
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["raw_output"].to_string(),
                p["parsed"].to_string(),
                p["outcome"].to_string(),
            )
        })
        .collect()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// The same run, in this process, on the same checkpoint loaded directly.
fn local_run(dir: &Path, task: &Path, out: &Path) {
    use faceval_eval::run_folder::{Manifest, ModelRecord};
    use faceval_eval::runner::{self, ModelHandle, RunOptions};
    let model = faceval_models::internvl::InternVlModel::load(
        &fixture().display().to_string(),
        &faceval_models::internvl::parse_device("cpu").unwrap(),
        faceval_models::internvl::parse_dtype("f32").unwrap(),
    )
    .unwrap();
    let mut handle = ModelHandle::Loaded(Box::new(model));
    let manifest = Manifest {
        format: 1,
        model: ModelRecord {
            name: "local-tiny".into(),
            fingerprint: "local".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let opts = RunOptions {
        data_root: dir.join("data"),
        out: out.to_path_buf(),
        limit: None,
        shard: None,
        seed: 3,
        strict: false,
        progress: false,
    };
    let task = faceval_eval::task::Task::load(task).unwrap();
    runner::run(&mut handle, manifest, &[task], &opts).unwrap();
}

#[test]
fn a_served_model_answers_like_the_local_one_and_a_rerun_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 12);
    let server = Server::start(0);
    let manifest = write_manifest(dir.path(), &server.base_url(), "");

    let remote = dir.path().join("remote");
    let out = run_cmd(dir.path(), &manifest, &task, &remote)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let local = dir.path().join("local");
    local_run(dir.path(), &task, &local);
    let got = answers(&remote);
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|a| a.3 != "\"error\""), "{got:?}");
    assert_eq!(
        got,
        answers(&local),
        "answers through the server must equal the local model's"
    );
    let manifest_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(remote.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest_json["model"]["kind"], "openai");

    // A second run into a new folder asks the server only the start-up probe and the model
    // listing, and says so in its manifest.
    let again = dir.path().join("again");
    let out = run_cmd(dir.path(), &manifest, &task, &again)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 HTTP requests") && stderr.contains("12 answers from the cache"),
        "{stderr}"
    );
    assert_eq!(answers(&again), got);
    let manifest_again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest_again["http_requests"], 2);
    assert_eq!(manifest_again["cache_hits"], 12);
}

fn requests_for_fixture_images(n: usize) -> Vec<Request> {
    let images: Vec<_> =
        std::fs::read_dir(repo_root().join("harness/models/tests/fixtures/internvl/images"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
            .map(|p| Arc::new(image::open(p).unwrap()))
            .collect();
    assert!(!images.is_empty());
    (0..n)
        .map(|i| Request {
            images: vec![images[i % images.len()].clone()],
            prompt: format!("Describe face number {i}."),
            max_new_tokens: 5,
            stop: vec![],
            choices: vec![],
            choice_texts: vec![],
            seed: i as u64,
        })
        .collect()
}

fn client(base_url: &str) -> OpenAiModel {
    let mut cfg = OpenAiConfig::new("tiny", base_url, "tiny");
    cfg.cache_dir = None;
    cfg.max_concurrency = 4;
    OpenAiModel::connect(cfg).unwrap()
}

#[test]
fn several_clients_at_once_get_what_one_client_gets_alone() {
    let server = Server::start(0);
    let requests = requests_for_fixture_images(8);
    let mut alone = client(&server.base_url());
    let expected: Vec<String> = requests
        .iter()
        .map(|r| alone.generate(r).unwrap().text)
        .collect();
    // The served checkpoint reports top logprobs, so the probe found them.
    assert!(alone.capabilities().top_logprobs > 0);

    let started = Instant::now();
    let texts: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let c = client(&server.base_url());
                    c.generate_many(&requests)
                        .into_iter()
                        .map(|g| g.unwrap().text)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(started.elapsed() < Duration::from_secs(120));
    for t in texts {
        assert_eq!(t, expected);
    }

    // Through the server, the answer is the local model's, token for token and logprob for
    // logprob: the images arrive pixel-exact.
    let mut local = faceval_models::internvl::InternVlModel::load(
        &fixture().display().to_string(),
        &faceval_models::internvl::parse_device("cpu").unwrap(),
        faceval_models::internvl::parse_dtype("f32").unwrap(),
    )
    .unwrap();
    for r in &requests[..4] {
        let want = local.generate(r).unwrap();
        let got = alone.generate(r).unwrap();
        assert_eq!(
            (&got.text, got.prompt_tokens),
            (&want.text, want.prompt_tokens)
        );
        let png = faceval_models::openai::png_bytes(&r.images[0]).unwrap();
        use base64::Engine;
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        );
        let v = post_json(
            server.port,
            &serde_json::json!({
                "model": "tiny",
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": r.prompt}]}],
                "max_tokens": r.max_new_tokens, "temperature": 0,
                "logprobs": true, "top_logprobs": 5, "return_tokens_as_token_ids": true,
            }),
        );
        let g = faceval_models::openai::parse_completion(&v, &[]).unwrap();
        assert_eq!(g.token_ids, want.token_ids);
        assert_eq!(g.top_logprobs.len(), want.top_logprobs.len());
        for (a, b) in g.top_logprobs.iter().zip(&want.top_logprobs) {
            assert_eq!(a.len(), b.len());
            for ((ia, la), (ib, lb)) in a.iter().zip(b) {
                assert_eq!(ia, ib);
                assert!((la - lb).abs() < 1e-6, "{la} vs {lb}");
            }
        }
    }

    // /v1/models names the served model.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"id\":\"tiny\""),
        "{resp}"
    );
}

#[test]
fn a_server_killed_mid_run_stops_the_run_and_the_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    let task = write_dataset(dir.path(), n);
    let mut server = Server::start(0);
    let port = server.port;
    let manifest = write_manifest(dir.path(), &server.base_url(), "");
    let out = dir.path().join("run");
    let mut child = run_cmd(dir.path(), &manifest, &task, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let preds = out.join("predictions.jsonl");
    let started = Instant::now();
    while count_lines(&preds) < 3 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    let killed_at = Instant::now();
    // The client retries once, then stops the run rather than failing every item.
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the run did not stop after the server died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("server is gone") && stderr.contains("resumes"),
        "{stderr}"
    );
    let done = count_lines(&preds);
    assert!(
        done >= 3 && done < n,
        "the kill must land mid-run ({done} of {n})"
    );
    assert!(
        predictions(&out).iter().all(|p| p["outcome"] != "error"),
        "no item may be recorded as failed"
    );

    let _server = Server::start(port);
    let out2 = run_cmd(dir.path(), &manifest, &task, &out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out2.stderr);
    assert!(out2.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("resumed {done}")), "{stderr}");
    let all = predictions(&out);
    assert_eq!(all.len(), n);
    assert!(all.iter().all(|p| p["outcome"] != "error"));
    let mut ids: Vec<&str> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), n, "no duplicates");
}

/// POST a JSON body to `/v1/chat/completions` and read the JSON answer (HTTP/1.1, one
/// connection, bounded by a read timeout).
fn post_json(port: u16, body: &serde_json::Value) -> serde_json::Value {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, json) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{resp}");
    serde_json::from_str(json).unwrap()
}

/// A real HTTP listener on 127.0.0.1 whose answers a closure decides: `(delay, status, body)`
/// for the k-th request (0-based) and its body. Stops when dropped.
struct TestServer {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    fn start(
        answer: impl Fn(usize, &str) -> (Duration, u16, String) + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer = Arc::new(answer);
        let (h, st) = (Arc::clone(&hits), Arc::clone(&stop));
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let k = h.fetch_add(1, Ordering::SeqCst);
                        let answer = Arc::clone(&answer);
                        std::thread::spawn(move || serve_one(stream, k, answer.as_ref()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestServer { port, hits, stop }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(
    mut stream: TcpStream,
    k: usize,
    answer: &(dyn Fn(usize, &str) -> (Duration, u16, String) + Send + Sync),
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (delay, status, text) = answer(k, &String::from_utf8_lossy(&body));
    std::thread::sleep(delay);
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn completion(text: &str) -> String {
    serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        .to_string()
}

#[test]
fn a_slow_server_times_out_and_a_dead_one_trips_the_breaker() {
    // The start-up probe is answered at once; every later request only after 3 s.
    let server = TestServer::start(|k, _| {
        let delay = if k == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(3)
        };
        (delay, 200, completion("A"))
    });
    let mut cfg = OpenAiConfig::new("slow", &server.base_url(), "m");
    cfg.cache_dir = None;
    cfg.timeout = Duration::from_millis(400);
    cfg.max_retries = 1;
    cfg.backoff = Duration::from_millis(10);
    let mut model = OpenAiModel::connect(cfg).unwrap();
    let request = requests_for_fixture_images(1).remove(0);
    let started = Instant::now();
    let err = model.generate(&request).unwrap_err();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "two attempts of 0.4 s took {took:?}"
    );
    assert!(format!("{err:#}").contains("timed out"), "{err:#}");
    assert!(!faceval_models::model::is_unavailable(&err));
    assert_eq!(model.stats().retries, 1);
    // Five requests in a row that fail after their retries: the server is declared unavailable.
    let mut last = None;
    for _ in 0..4 {
        last = Some(model.generate(&request).unwrap_err());
    }
    assert!(
        faceval_models::model::is_unavailable(last.as_ref().unwrap()),
        "{:#}",
        last.unwrap()
    );
}

#[test]
fn malformed_json_and_empty_choices_are_item_errors_and_a_refusal_is_unparseable() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 6);
    let server = TestServer::start(|k, _| {
        match k {
        0 => (Duration::ZERO, 200, completion("ok")),
        k if k % 3 == 1 => (Duration::ZERO, 200, "{\"choices\": [{\"message\": ".into()),
        k if k % 3 == 2 => (Duration::ZERO, 200, "{\"choices\": []}".into()),
        _ => (
            Duration::ZERO,
            200,
            serde_json::json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "I cannot help with that."}}]})
                .to_string(),
        ),
    }
    });
    let manifest = write_manifest(dir.path(), &server.base_url(), "");
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest).unwrap().replace(
            &format!("cache_dir = \"{}\"", dir.path().join("cache").display()),
            "cache_dir = \"off\"",
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let res = run_cmd(dir.path(), &manifest, &task, &out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    let preds = predictions(&out);
    assert_eq!(preds.len(), 6);
    let with = |needle: &str| {
        preds
            .iter()
            .filter(|p| {
                p["outcome"] == "error" && p["error"].as_str().unwrap_or("").contains(needle)
            })
            .count()
    };
    assert_eq!(with("malformed JSON"), 2, "{preds:?}");
    assert_eq!(with("\"choices\" is empty"), 2, "{preds:?}");
    assert_eq!(
        preds
            .iter()
            .filter(|p| p["outcome"] == "unparseable")
            .count(),
        2,
        "{preds:?}"
    );
    // The probe, the model listing (GET /v1/models, answered here with the sequence's
    // malformed JSON, which the client takes as "no listing"), one request per question.
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        8,
        "no retries for answers that are not transient"
    );
}

#[test]
fn a_refused_connection_or_a_text_only_server_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 4);
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let manifest = write_manifest(dir.path(), &format!("http://127.0.0.1:{port}/v1"), "");
    let started = Instant::now();
    let res = run_cmd(dir.path(), &manifest, &task, &dir.path().join("a"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot connect") && stderr.contains("Is the server running"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // A server that refuses images: one request, one message.
    let server = TestServer::start(|_, _| {
        (
            Duration::ZERO,
            400,
            r#"{"error":{"message":"image input is not supported by this model","type":"invalid_request_error"}}"#.into(),
        )
    });
    let manifest = write_manifest(dir.path(), &server.base_url(), "");
    let res = run_cmd(dir.path(), &manifest, &task, &dir.path().join("b"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not take images"), "{stderr}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // Not a URL at all.
    let manifest = write_manifest(dir.path(), "localhost:8000/v1", "");
    let res = run_cmd(dir.path(), &manifest, &task, &dir.path().join("c"))
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("must start with http://"));
}

// ---------------------------------------------------------------------------------------------
// `faceval serve` as a server for real clients: streaming, files, limits, timeouts, access.

/// One HTTP/1.1 exchange on its own connection: (status, head, body), a chunked body decoded.
/// A `Host` naming 127.0.0.1 is added unless `headers` has one.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    if !headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    }) {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of it.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// POST a chat request; the status and the JSON answer.
fn chat_with(
    port: u16,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    let (status, head, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &h,
        body.to_string().as_bytes(),
    );
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {head}\n{}", String::from_utf8_lossy(&body)));
    (status, v)
}

fn chat(port: u16, body: &serde_json::Value) -> (u16, serde_json::Value) {
    chat_with(port, &[], body)
}

/// The message of an OpenAI-style error answer (and a check of its shape).
fn error_message(v: &serde_json::Value) -> String {
    assert!(v["error"]["type"].is_string(), "{v}");
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// A streamed chat request: its status, the parsed `data:` events before `[DONE]`, whether
/// `[DONE]` came.
fn stream_chat(port: u16, body: &serde_json::Value) -> (u16, Vec<serde_json::Value>, bool) {
    let (status, head, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    if status != 200 {
        return (status, vec![serde_json::from_slice(&body).unwrap()], false);
    }
    assert!(head.contains("text/event-stream"), "{head}");
    let text = String::from_utf8(body).unwrap();
    let mut events = vec![];
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data = block
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not an SSE data line: {block:?}"));
        assert!(!done, "an event after [DONE]: {block}");
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).unwrap());
        }
    }
    (status, events, done)
}

fn fixture_images() -> Vec<Arc<image::DynamicImage>> {
    requests_for_fixture_images(4)
        .into_iter()
        .map(|r| r.images[0].clone())
        .collect()
}

fn data_url(img: &image::DynamicImage) -> String {
    use base64::Engine;
    let png = faceval_models::openai::png_bytes(img).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

fn image_chat(url: &str, text: &str, max_tokens: usize) -> serde_json::Value {
    serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": text}]}],
        "max_tokens": max_tokens,
    })
}

#[test]
fn streamed_deltas_join_to_the_non_streamed_answer_byte_for_byte() {
    let server = Server::start(0);
    let port = server.port;
    let images = fixture_images();
    let mut multi_delta = 0;
    let mut non_ascii = 0;
    for (i, img) in images.iter().enumerate() {
        for (k, prompt) in ["Describe this face.", "Wie alt ist diese Person? 年龄?"]
            .iter()
            .enumerate()
        {
            let mut body = image_chat(&data_url(img), prompt, 40);
            body["seed"] = serde_json::json!(i * 2 + k);
            let (status, whole) = chat(port, &body);
            assert_eq!(status, 200, "{whole}");
            let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
            non_ascii += usize::from(!text.is_ascii());

            body["stream"] = serde_json::json!(true);
            body["stream_options"] = serde_json::json!({"include_usage": true});
            let (status, events, done) = stream_chat(port, &body);
            assert_eq!(status, 200, "{events:?}");
            assert!(done, "no [DONE]");
            assert!(events.iter().all(|e| e["object"] == "chat.completion.chunk"
                && e["model"] == "tiny"
                && e["id"] == events[0]["id"]));
            // A role delta first, content deltas, one finish chunk, then the usage chunk.
            assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
            let usage = events.last().unwrap();
            assert_eq!(usage["choices"], serde_json::json!([]));
            assert_eq!(usage["usage"], whole["usage"]);
            let fin = &events[events.len() - 2]["choices"][0];
            assert_eq!(fin["finish_reason"], whole["choices"][0]["finish_reason"]);
            assert_eq!(fin["delta"], serde_json::json!({}));
            let deltas: Vec<&str> = events[..events.len() - 2]
                .iter()
                .map(|e| {
                    assert!(e["choices"][0]["finish_reason"].is_null());
                    e["choices"][0]["delta"]["content"].as_str().unwrap()
                })
                .collect();
            assert_eq!(deltas.concat(), text, "image {i} prompt {k}: {deltas:?}");
            if deltas.iter().filter(|d| !d.is_empty()).count() > 1 {
                multi_delta += 1;
            }

            // A stop string taken from the middle of the answer: both cut the same way.
            let chars: Vec<char> = text.chars().collect();
            if chars.len() >= 6 {
                let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
                body["stop"] = serde_json::json!([stop]);
                body["stream"] = serde_json::json!(false);
                let (_, cut) = chat(port, &body);
                let cut_text = cut["choices"][0]["message"]["content"].as_str().unwrap();
                assert!(cut_text.len() < text.len() && text.starts_with(cut_text));
                assert_eq!(cut["choices"][0]["finish_reason"], "stop");
                body["stream"] = serde_json::json!(true);
                let (_, events, done) = stream_chat(port, &body);
                assert!(done);
                let joined: String = events
                    .iter()
                    .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                    .collect();
                assert_eq!(joined, cut_text, "stop {stop:?}");
            }
        }
    }
    // Tokens arrive as they are decoded, not as one piece at the end.
    assert!(
        multi_delta >= 4,
        "only {multi_delta} answers came in several pieces"
    );
    eprintln!("{non_ascii} of 8 answers hold non-ASCII text");

    // Logprobs requested with stream: the finish chunk carries them, as the non-streamed answer.
    let mut body = image_chat(&data_url(&images[0]), "Describe this face.", 8);
    body["logprobs"] = serde_json::json!(true);
    body["top_logprobs"] = serde_json::json!(2);
    let (_, whole) = chat(port, &body);
    body["stream"] = serde_json::json!(true);
    let (_, events, _) = stream_chat(port, &body);
    let fin = events.last().unwrap();
    assert_eq!(
        fin["choices"][0]["logprobs"],
        whole["choices"][0]["logprobs"]
    );
    assert!(fin.get("usage").is_none(), "usage only when asked for");

    // An error before the first token is a plain JSON error, not a stream.
    let mut bad = image_chat("data:image/png;base64,AAAA", "x", 4);
    bad["stream"] = serde_json::json!(true);
    let (status, events, _) = stream_chat(port, &bad);
    assert_eq!(status, 400);
    assert!(error_message(&events[0]).contains("not a decodable image"));
}

#[test]
fn file_urls_are_refused_by_default_and_confined_to_allow_files() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(served.join("sub")).unwrap();
    let img = &fixture_images()[0];
    img.save(served.join("face.png")).unwrap();
    img.save(dir.path().join("outside.png")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.png"), served.join("link.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", served.join("zero.png")).unwrap();
    std::os::unix::fs::symlink("/etc", served.join("etc")).unwrap();
    let fifo = served.join("fifo.png");
    let made_fifo = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let reference = {
        let server = Server::start(0);
        let (status, v) = chat(server.port, &image_chat(&data_url(img), "Who?", 6));
        assert_eq!(status, 200, "{v}");
        // Without --allow-files, even an existing image is refused, and the answer says why.
        let url = format!("file://{}", served.join("face.png").display());
        let (status, refused) = chat(server.port, &image_chat(&url, "Who?", 6));
        assert_eq!(status, 400);
        assert!(
            error_message(&refused).contains("--allow-files"),
            "{refused}"
        );
        v
    };

    let server = Server::start_with(0, &["--allow-files", served.to_str().unwrap()], &[]);
    let port = server.port;
    // Inside the folder: absolute, relative, percent-escaped and localhost forms all work and
    // answer as the data URL does.
    let abs = format!("file://{}", served.join("face.png").display());
    for url in [
        abs.clone(),
        "file://face.png".to_string(),
        "file://sub/../face.png".to_string(),
        format!("file://localhost{}", served.join("face.png").display()),
        abs.replace("face.png", "%66ace.png"),
    ] {
        let (status, v) = chat(port, &image_chat(&url, "Who?", 6));
        assert_eq!(status, 200, "{url}: {v}");
        assert_eq!(
            v["choices"][0]["message"]["content"], reference["choices"][0]["message"]["content"],
            "{url}"
        );
    }
    // Everything else gets one message, whatever the reason, and no OS error text.
    let mut refused: Vec<String> = vec![
        format!("file://{}", dir.path().join("outside.png").display()),
        format!("file://{}/../outside.png", served.display()),
        "file://../outside.png".into(),
        format!("file://{}", served.join("link.png").display()),
        format!("file://{}", served.join("missing.png").display()),
        format!("file://{}", served.join("sub").display()),
        format!("file://{}", served.join("zero.png").display()),
        format!("file://{}", served.join("etc/passwd").display()),
        "file:///etc/passwd".into(),
        "file:///dev/zero".into(),
        "file:///root/.bashrc".into(),
        "file://".into(),
    ];
    if made_fifo {
        refused.push(format!("file://{}", fifo.display()));
    }
    let mut messages = std::collections::BTreeSet::new();
    for url in &refused {
        let started = Instant::now();
        let (status, v) = chat(port, &image_chat(url, "Who?", 6));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} took {:?}",
            started.elapsed()
        );
        assert_eq!(status, 400, "{url}: {v}");
        let msg = error_message(&v);
        for leak in [
            "os error",
            "No such file",
            "ermission",
            "Is a directory",
            "Not a directory",
        ] {
            assert!(!msg.contains(leak), "{url}: {msg}");
        }
        messages.insert(msg.replace(url.as_str(), "URL"));
    }
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages.iter().next().unwrap().contains("--allow-files"),
        "{messages:?}"
    );
    // data: URLs work as before.
    let (status, _) = chat(port, &image_chat(&data_url(img), "Who?", 6));
    assert_eq!(status, 200);

    // A folder that is not there is a usage error.
    let out = faceval()
        .args(["serve", "--model", "random", "--port", "0", "--allow-files"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-files"));
}

/// A PNG whose header claims `w`×`h` pixels, followed by a few bytes of garbage image data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", b"not zlib data at all");
    png_chunk(&mut png, b"IEND", b"");
    png
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend(data);
    png.extend(&body);
    png.extend(crc32(&body).to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn every_limit_is_a_4xx_that_names_its_flag() {
    let server = Server::start_with(
        0,
        &[
            "--max-body-bytes",
            "300000",
            "--max-images",
            "2",
            "--max-image-pixels",
            "280000",
            "--max-tokens-limit",
            "64",
        ],
        &[],
    );
    let port = server.port;
    let small = data_url(&image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
        64,
        64,
        |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 90]),
    )));

    // Body size, declared or not.
    let (status, _, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &[("Content-Length", "400000")],
        b"",
    );
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("--max-body-bytes"));
    let big = vec![b' '; 350_000];
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend(&big);
    chunked.extend(b"\r\n0\r\n\r\n");
    let (status, _, body) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("--max-body-bytes"));

    // Images per request.
    let mut body = image_chat(&small, "x", 4);
    let part = body["messages"][0]["content"][0].clone();
    body["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .splice(0..0, [part.clone(), part]);
    let (status, v) = chat(port, &body);
    assert_eq!(status, 400);
    let msg = error_message(&v);
    assert!(
        msg.contains("3 images") && msg.contains("--max-images"),
        "{msg}"
    );

    // Pixels per image: a real 600x500 image, and a header claiming 100000x100000 (refused
    // from its header, before any allocation).
    let wide = image::DynamicImage::ImageRgb8(image::RgbImage::new(600, 500));
    use base64::Engine;
    for url in [
        data_url(&wide),
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png_header(100_000, 100_000))
        ),
    ] {
        let started = Instant::now();
        let (status, v) = chat(port, &image_chat(&url, "x", 4));
        assert_eq!(status, 400);
        let msg = error_message(&v);
        assert!(msg.contains("--max-image-pixels"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    // max_tokens: over the limit, zero, not a number; at the limit it is served.
    for (mt, want) in [
        (serde_json::json!(1_000_000_000u64), "--max-tokens-limit"),
        (serde_json::json!(65), "--max-tokens-limit"),
        (serde_json::json!(0), "positive integer"),
        (serde_json::json!(-3), "positive integer"),
        (serde_json::json!("many"), "positive integer"),
    ] {
        let mut body = image_chat(&small, "x", 4);
        body["max_tokens"] = mt.clone();
        let (status, v) = chat(port, &body);
        assert_eq!(status, 400, "{mt}: {v}");
        assert!(error_message(&v).contains(want), "{mt}: {v}");
    }
    let mut body = image_chat(&small, "x", 4);
    body["max_completion_tokens"] = serde_json::json!(64);
    let (status, v) = chat(port, &body);
    assert_eq!(status, 200, "{v}");

    // Other refusals keep their 4xx.
    let (status, v) = chat(port, &image_chat("http://example.com/a.png", "x", 4));
    assert_eq!(status, 400);
    assert!(error_message(&v).contains("no network fetches"));
    let (status, _, _) = http(port, "POST", "/v1/chat/completions", &[], b"{not json");
    assert_eq!(status, 400);
    let (status, _, _) = http(port, "DELETE", "/v1/models", &[], b"");
    assert_eq!(status, 404);

    // Bad limits are usage errors.
    for flags in [
        ["--read-timeout", "0"],
        ["--max-tokens-limit", "0"],
        ["--api-key", " "],
    ] {
        let out = faceval()
            .args(["serve", "--model", "random", "--port", "0"])
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flags[0]),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn max_tokens_stops_at_the_end_of_the_models_context() {
    // The fixture with a 64-token context.
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"max_position_embeddings\": 32768"));
    std::fs::write(
        &cfg,
        text.replace(
            "\"max_position_embeddings\": 32768",
            "\"max_position_embeddings\": 64",
        ),
    )
    .unwrap();
    let server = Server::start_model(0, dir.path(), &["--max-tokens-limit", "1000"], &[]);
    let body = serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 1000,
    });
    let (status, v) = chat(server.port, &body);
    assert_eq!(status, 200, "{v}");
    let usage = &v["usage"];
    assert_eq!(usage["total_tokens"], 64, "{v}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

/// Polls GET /health until it answers 200 (at most 60 s); every earlier answer must be 503
/// "loading".
fn wait_for_health(port: u16) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (status, _, body) = http(port, "GET", "/health", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if status == 200 {
            return v;
        }
        assert_eq!(
            (status, &v["status"], &v["loaded"]),
            (
                503,
                &serde_json::json!("loading"),
                &serde_json::json!(false)
            )
        );
        assert!(started.elapsed() < Duration::from_secs(60), "{v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that sends `head` and then one byte of `trickle` per second. Returns how long
/// after the first trickled byte the server closed the connection, what it sent, and when.
fn slow_client(port: u16, head: &[u8], trickle: u8) -> (Duration, String, Instant) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(head).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(40) {
        if s.write_all(&[trickle]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&got).to_string(),
        Instant::now(),
    )
}

#[test]
fn slow_clients_hold_no_worker_and_are_cut_off_at_the_read_timeout() {
    let server = Server::start_with(0, &["--read-timeout", "6", "--http-threads", "2"], &[]);
    let port = server.port;
    let images = fixture_images();
    let bodies: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            image_chat(
                &data_url(&images[i % images.len()]),
                &format!("Face {i}?"),
                5,
            )
        })
        .collect();
    // What one client alone gets (this also warms the model up).
    let alone: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| chat(port, b).1["choices"][0]["message"]["content"].clone())
        .collect();

    let started = Instant::now();
    let (slow, fast) = std::thread::scope(|s| {
        // Eight clients trickling their headers and eight trickling their bodies, one byte a
        // second, on a server with two HTTP threads.
        let head_only = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        let with_body = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
        );
        let slow: Vec<_> = (0..16)
            .map(|i| {
                let head = if i < 8 {
                    head_only.clone()
                } else {
                    with_body.clone()
                };
                s.spawn(move || slow_client(port, head.as_bytes(), if i < 8 { b'X' } else { b' ' }))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // Eight clients at once, each with its own question, while the slow ones hang on.
        let fast: Vec<_> = bodies
            .iter()
            .map(|b| s.spawn(move || (chat(port, b), Instant::now())))
            .collect();
        let fast: Vec<_> = fast.into_iter().map(|h| h.join().unwrap()).collect();
        let slow: Vec<_> = slow.into_iter().map(|h| h.join().unwrap()).collect();
        (slow, fast)
    });
    let last_fast = fast.iter().map(|(_, t)| *t).max().unwrap();
    for (((status, v), _), want) in fast.iter().zip(&alone) {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(&v["choices"][0]["message"]["content"], want);
    }
    let first_cut = slow.iter().map(|(_, _, t)| *t).min().unwrap();
    eprintln!(
        "8 clients done after {:?}; slow clients cut after {:?}",
        last_fast - started,
        slow.iter().map(|(d, _, _)| *d).collect::<Vec<_>>()
    );
    assert!(
        last_fast < first_cut,
        "the eight clients finished {:?} after the start, the first slow client was cut at {:?}",
        last_fast - started,
        first_cut - started
    );
    for (i, (took, got, _)) in slow.iter().enumerate() {
        assert!(
            *took >= Duration::from_secs(4) && *took < Duration::from_secs(20),
            "slow client {i} was cut after {took:?}"
        );
        if i >= 8 {
            assert!(got.starts_with("HTTP/1.1 408"), "slow client {i}: {got}");
            assert!(got.contains("--read-timeout"), "{got}");
        }
    }
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "idle for {:?}",
        t.elapsed()
    );
    // And the server is still there.
    let (status, _, body) = http(port, "GET", "/health", &[], b"");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["loaded"], true);
}

#[test]
fn failed_and_panicking_requests_never_take_the_server_down() {
    let mut server = Server::start_with(
        0,
        &["--http-threads", "1"],
        &[("FACEVAL_SERVE_TEST_PANIC", "please panic")],
    );
    let port = server.port;
    let url = data_url(&fixture_images()[1]);
    let (status, good) = chat(port, &image_chat(&url, "Who?", 6));
    assert_eq!(status, 200);
    let png_garbage = {
        let b = png_header(8, 8);
        use base64::Engine;
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    };
    for round in 0..6 {
        // An image whose header passes and whose pixels do not decode (under the model lock).
        let (status, v) = chat(port, &image_chat(&png_garbage, "Who?", 6));
        assert_eq!(status, 400, "{v}");
        assert!(error_message(&v).contains("not a decodable image"));
        if cfg!(debug_assertions) {
            let mut body = image_chat(&url, "please panic", 6);
            body["stream"] = serde_json::json!(round % 2 == 0);
            let (status, v) = chat(port, &body);
            assert_eq!(status, 500, "{v}");
            assert!(error_message(&v).contains("the server goes on"));
        }
        let (status, v) = chat(port, &image_chat(&url, "Who?", 6));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"], good["choices"]);
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
    server.kill();
}

#[test]
fn api_key_host_and_origin_checks() {
    let server = Server::start_with(0, &["--api-key", "sekret"], &[]);
    let port = server.port;
    let get = |headers: &[(&str, &str)], path: &str| {
        let (status, _, body) = http(port, "GET", path, headers, b"");
        (status, String::from_utf8_lossy(&body).to_string())
    };
    let (status, body) = get(&[], "/v1/models");
    assert_eq!(status, 401);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(
        get(&[("Authorization", "Bearer wrong")], "/v1/models").0,
        401
    );
    assert_eq!(
        get(&[("Authorization", "Bearer sekre")], "/v1/models").0,
        401
    );
    assert_eq!(get(&[("Authorization", "sekret")], "/v1/models").0, 401);
    let ok = [("Authorization", "Bearer sekret")];
    assert_eq!(get(&ok, "/v1/models").0, 200);
    assert_eq!(get(&ok, "/v1/models/tiny").0, 200);
    assert_eq!(get(&ok, "/v1/models/other").0, 404);
    // Health needs no key, and says whether the model is loaded yet (the port is open, and
    // "listening on" printed, before the weights are read).
    let health = wait_for_health(port);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["loaded"], true);
    assert_eq!(health["model"], "tiny");
    let (status, v) = chat_with(
        port,
        &[],
        &image_chat(&data_url(&fixture_images()[0]), "x", 2),
    );
    assert_eq!(status, 401, "{v}");
    let (status, v) = chat_with(
        port,
        &ok,
        &image_chat(&data_url(&fixture_images()[0]), "x", 2),
    );
    assert_eq!(status, 200, "{v}");

    // DNS rebinding: a loopback server answers only loopback names.
    let local_port = format!("localhost:{port}");
    for host in ["localhost", local_port.as_str(), "127.0.0.1", "[::1]:80"] {
        assert_eq!(get(&[("Host", host), ok[0]], "/v1/models").0, 200, "{host}");
    }
    let evil_port = format!("evil.example:{port}");
    for host in [
        "evil.example",
        evil_port.as_str(),
        "127.0.0.1.nip.io",
        "0.0.0.0",
    ] {
        let (status, body) = get(&[("Host", host), ok[0]], "/v1/models");
        assert_eq!(status, 421, "{host}: {body}");
        assert!(body.contains("loopback"), "{body}");
        assert_eq!(get(&[("Host", host)], "/health").0, 421, "{host}");
    }
    // Web pages of other origins are refused; a local one is not.
    let (status, body) = get(&[("Origin", "https://evil.example"), ok[0]], "/v1/models");
    assert_eq!(status, 403, "{body}");
    assert_eq!(get(&[("Origin", "null"), ok[0]], "/v1/models").0, 403);
    assert_eq!(
        get(&[("Origin", "http://localhost:3000"), ok[0]], "/v1/models").0,
        200
    );
    drop(server);

    // The key may come from the environment instead.
    let server = Server::start_with(0, &[], &[("FACEVAL_SERVE_API_KEY", "from-env")]);
    let (status, _, _) = http(server.port, "GET", "/v1/models", &[], b"");
    assert_eq!(status, 401);
    let (status, _, _) = http(
        server.port,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer from-env")],
        b"",
    );
    assert_eq!(status, 200);
}

const OPENAI_CLIENT_SCRIPT: &str = r#"
import base64, json, sys
try:
    import openai
except ImportError:
    print("NO_OPENAI")
    sys.exit(3)
base_url, key, image = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
ids = [m.id for m in client.models.list()]
url = "data:image/png;base64," + base64.b64encode(open(image, "rb").read()).decode()
messages = [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": url}},
    {"type": "text", "text": "Describe this face."}]}]
full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24,
    temperature=0, logprobs=True, top_logprobs=3)
choice = full.choices[0]
lp = choice.logprobs.content
stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24,
    temperature=0, stream=True, stream_options={"include_usage": True})
deltas, roles, finish, usage = [], [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            deltas.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    auth = "accepted"
except openai.AuthenticationError:
    auth = "refused"
print(json.dumps({
    "version": openai.__version__,
    "ids": ids,
    "text": choice.message.content,
    "finish": choice.finish_reason,
    "usage": full.usage.model_dump(),
    "logprob_tokens": [t.token for t in lp],
    "top_counts": [len(t.top_logprobs) for t in lp],
    "deltas": deltas,
    "roles": roles,
    "stream_finish": finish,
    "stream_usage": usage,
    "auth": auth,
}))
"#;

#[test]
fn the_official_openai_python_client_lists_chats_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, OPENAI_CLIENT_SCRIPT).unwrap();
    let image = dir.path().join("face.png");
    fixture_images()[0].save(&image).unwrap();
    let server = Server::start_with(0, &["--api-key", "k-123"], &[]);
    let out = match Command::new("python3")
        .arg(&script)
        .arg(server.base_url())
        .arg("k-123")
        .arg(&image)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("SKIPPED: python3 is not available ({e}); .ci/run installs it with the openai package");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) && stdout.contains("NO_OPENAI") {
        println!("SKIPPED: the openai Python package is not installed (pip install openai); .ci/run installs it");
        return;
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("openai {}", v["version"]);
    assert_eq!(v["ids"], serde_json::json!(["tiny"]));
    let text = v["text"].as_str().unwrap();
    let deltas: Vec<&str> = v["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deltas.concat(), text, "{v}");
    assert!(deltas.len() > 1, "{v}");
    assert_eq!(v["roles"], serde_json::json!(["assistant"]));
    assert_eq!(v["stream_finish"], v["finish"]);
    assert_eq!(v["stream_usage"], v["usage"]);
    let n = v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert_eq!(v["logprob_tokens"].as_array().unwrap().len(), n);
    assert!(
        v["top_counts"].as_array().unwrap().iter().all(|c| c == 3),
        "{v}"
    );
    assert_eq!(v["auth"], "refused");
}

#[test]
fn a_client_that_leaves_mid_answer_frees_the_model() {
    let server = Server::start_with(0, &["--max-tokens-limit", "4000"], &[]);
    let port = server.port;
    let text_chat = |max_tokens: usize| {
        serde_json::json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "Tell me everything."}],
            "max_tokens": max_tokens,
        })
    };
    // How long 100 tokens take (after a warm-up).
    chat(port, &text_chat(5));
    let t = Instant::now();
    let (status, v) = chat(port, &text_chat(100));
    assert_eq!(
        (status, v["usage"]["completion_tokens"].as_u64()),
        (200, Some(100))
    );
    let full_answer = t.elapsed() * 40;

    for stream in [true, false] {
        // Ask for 4000 tokens, read a little, hang up.
        let mut body = text_chat(4000);
        body["stream"] = serde_json::json!(stream);
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        if stream {
            let mut first = [0u8; 256];
            let n = s.read(&mut first).unwrap();
            assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        drop(s);
        // The next request does not wait for the abandoned answer.
        let t = Instant::now();
        let (status, _) = chat(port, &text_chat(5));
        assert_eq!(status, 200);
        eprintln!(
            "stream = {stream}: next answer after {:?}; the abandoned one would take about {full_answer:?}",
            t.elapsed()
        );
        assert!(
            t.elapsed() < full_answer / 3,
            "stream = {stream}: the next answer took {:?}; the abandoned one would take about {full_answer:?}",
            t.elapsed()
        );
    }
}

/// A run folder's manifest as JSON.
fn run_manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn new_weights_under_the_same_name_and_address_are_not_answered_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_dataset(dir.path(), 6);
    let fixtures = repo_root().join("harness/models/tests/fixtures/internvl");
    let mut first = Server::start_model(0, &fixtures.join("tiny-300m-current"), &[], &[]);
    let port = first.port;
    // `root` is sent once the model is loaded.
    let models = |port: u16| -> serde_json::Value {
        wait_for_health(port);
        let (code, _, body) = http(port, "GET", "/v1/models", &[], b"");
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    };
    let root_a = models(port)["data"][0]["root"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        root_a.starts_with("sha256:") && root_a.len() == 71,
        "{root_a}"
    );
    let manifest = write_manifest(dir.path(), &first.base_url(), "");
    let old = dir.path().join("old");
    let o = run_cmd(dir.path(), &manifest, &task, &old)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(run_manifest(&old)["cache_hits"], 0);

    // Another checkpoint, served under the same name at the same address.
    first.kill();
    let second = Server::start_model(port, &fixtures.join("tiny-6b"), &[], &[]);
    let root_b = models(port)["data"][0]["root"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(root_a, root_b);
    let new = dir.path().join("new");
    let o = run_cmd(dir.path(), &manifest, &task, &new)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = run_manifest(&new);
    assert_eq!(
        m["cache_hits"], 0,
        "the old checkpoint's answers were reused: {m}"
    );
    assert_eq!(m["http_requests"], 2 + 6, "{m}");
    assert_ne!(
        answers(&old),
        answers(&new),
        "the second checkpoint answers differently"
    );
    // A rerun of the same server is answered from the cache.
    let again = dir.path().join("again");
    let o = run_cmd(dir.path(), &manifest, &task, &again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(run_manifest(&again)["cache_hits"], 6);
    assert_eq!(answers(&again), answers(&new));

    // Bumping the manifest's `revision` misses the cache too: the key for servers that say
    // nothing about their weights.
    let bumped = write_manifest(dir.path(), &second.base_url(), "revision = \"step-2\"\n");
    let rev = dir.path().join("rev");
    let o = run_cmd(dir.path(), &bumped, &task, &rev).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(run_manifest(&rev)["cache_hits"], 0);
    assert_eq!(answers(&rev), answers(&new));
}
