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
        // A port just freed by a killed server may take a moment to bind again.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Self::try_start(port) {
                Ok(s) => return s,
                Err(e) if Instant::now() < deadline && port != 0 => {
                    eprintln!("retrying serve on port {port}: {e}");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("faceval serve did not start: {e}"),
            }
        }
    }

    fn try_start(port: u16) -> Result<Server, String> {
        let mut child = faceval()
            .args(["serve", "--model"])
            .arg(fixture())
            .args(["--served-model-name", "tiny", "--port", &port.to_string()])
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

    // A second run into a new folder asks the server only the start-up probe.
    let again = dir.path().join("again");
    let out = run_cmd(dir.path(), &manifest, &task, &again)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 HTTP requests") && stderr.contains("12 answers from the cache"),
        "{stderr}"
    );
    assert_eq!(answers(&again), got);
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
    s.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
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
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        7,
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
