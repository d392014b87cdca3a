//! A model behind an OpenAI-compatible `/v1/chat/completions` server: vLLM, SGLang, TGI,
//! llama.cpp's server, or `faceval serve`.
//!
//! One [`Request`] becomes one user turn: every image first, as a PNG data URL, then the
//! prompt text — the same turn faceval's local models build. Decoding is greedy
//! (`temperature = 0`). The client is built to survive a long run against a real server:
//!
//! - a start-up probe ([`OpenAiModel::connect`]) sends one tiny image, so that a wrong URL, a
//!   refused connection, a bad key or a text-only model is one clear error before the run,
//!   not thousands of item errors; it also learns whether the server returns logprobs;
//! - per-request timeouts, and bounded retries with exponential backoff on 429, 5xx, timeouts
//!   and dropped connections (honouring `Retry-After`);
//! - a response cache on disk keyed by everything that determines the answer, so that a
//!   rerun or a resume asks the server nothing it already answered;
//! - a circuit breaker: a server that stops answering ends the run with
//!   [`ModelUnavailable`] (the run folder then resumes), instead of failing every item;
//! - malformed JSON or an empty `choices` is an item error; a refusal is an empty answer.
//!
//! Likelihood scoring ([`Model::choice_logprobs`]) uses the first generated token's
//! `top_logprobs`; see [`score_choices_first_token`] for the rule.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use image::{DynamicImage, ImageFormat};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::model::{Generation, Model, ModelInfo, ModelUnavailable, Request, Traffic};

/// How many requests in a row may fail (after their retries) before the server is declared
/// unavailable and the run stops.
const BREAKER_THRESHOLD: usize = 5;
/// OpenAI accepts at most four stop strings; the rest are applied to the answer here.
const MAX_STOP_SENT: usize = 4;
/// Longest wait between two attempts, whatever the backoff or `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and how to reach the server.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Name recorded in run manifests.
    pub name: String,
    /// API root, e.g. `http://127.0.0.1:8000/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The `model` field of each request.
    pub api_model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Limit on one HTTP request, connection included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt (so at most `max_retries + 1` attempts per request).
    pub max_retries: u32,
    /// Wait before the first retry; doubled each time.
    pub backoff: Duration,
    /// Requests in flight at once in [`OpenAiModel::generate_many`].
    pub max_concurrency: usize,
    /// Response cache folder; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Alternatives asked per token when the server offers logprobs (OpenAI allows 20).
    pub top_logprobs: usize,
    /// Print a one-line summary (requests, cache hits, retries) to stderr when dropped.
    pub report_on_drop: bool,
    /// The manifest's `revision`: a label the user changes when the weights behind the same
    /// name and address change. It keys the response cache.
    pub revision: Option<String>,
}

impl OpenAiConfig {
    pub fn new(name: &str, base_url: &str, api_model: &str) -> Self {
        OpenAiConfig {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_model: api_model.to_string(),
            api_key: None,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            max_retries: 4,
            backoff: Duration::from_millis(500),
            max_concurrency: 8,
            cache_dir: default_cache_dir(),
            top_logprobs: 20,
            report_on_drop: false,
            revision: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }
}

/// `$FACEVAL_CACHE_DIR/openai`, else `$XDG_CACHE_HOME/faceval/openai`, else
/// `~/.cache/faceval/openai`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("FACEVAL_CACHE_DIR") {
        return Some(d.join("openai"));
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return Some(d.join("faceval/openai"));
    }
    env("HOME").map(|h| h.join(".cache/faceval/openai"))
}

/// Counters of one client's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenAiStats {
    /// HTTP requests sent (each retry counts).
    pub requests: u64,
    /// Answers served from the response cache.
    pub cache_hits: u64,
    pub retries: u64,
}

/// What the start-up probe learned about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// `top_logprobs` the server accepted (0: no logprobs).
    pub top_logprobs: usize,
    /// Tokens come back as `token_id:N` (vLLM's `--return-tokens-as-token-ids`), so token
    /// ids are known but token texts are not.
    pub token_ids: bool,
    /// What `GET {base_url}/models` says of the served model: its `id`, and `root` where the
    /// server sends one (vLLM: the weights' path or hub id). `None` when the server has no
    /// such route or does not list the model. It keys the response cache, so a new checkpoint
    /// served under the same name is not answered from the old one's cache.
    pub served_model: Option<ServedModel>,
}

/// A model entry of `GET /v1/models`, as far as it identifies the weights.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServedModel {
    pub id: String,
    pub root: Option<String>,
}

/// A chat-completions server behind the [`Model`] trait.
pub struct OpenAiModel {
    cfg: OpenAiConfig,
    agent: ureq::Agent,
    caps: ServerCapabilities,
    requests: AtomicU64,
    cache_hits: AtomicU64,
    retries: AtomicU64,
    consecutive_failures: AtomicUsize,
}

/// One failed HTTP exchange.
#[derive(Debug)]
enum CallError {
    /// The server answered with a non-2xx status.
    Status {
        code: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// No connection could be made (refused, DNS, unreachable).
    Connect(String),
    /// The request timed out or the connection broke mid-way.
    Io(String),
    /// A URL or scheme the client cannot use.
    Config(String),
    /// A 2xx whose body is not JSON.
    BadJson(String),
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Status { code, .. } => *code == 408 || *code == 429 || *code >= 500,
            CallError::Connect(_) | CallError::Io(_) => true,
            CallError::Config(_) | CallError::BadJson(_) => false,
        }
    }

    fn describe(&self, url: &str) -> String {
        match self {
            CallError::Status { code, body, .. } => {
                format!("{url} answered HTTP {code}: {}", server_message(body))
            }
            CallError::Connect(m) => format!("cannot connect to {url}: {m}"),
            CallError::Io(m) => format!("{url}: {m}"),
            CallError::Config(m) => format!("{url}: {m}"),
            CallError::BadJson(m) => format!("{url} answered with malformed JSON: {m}"),
        }
    }
}

/// The `error.message` of an OpenAI-style error body, else the body itself (shortened).
fn server_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str().map(str::to_string))
    });
    shorten(&msg.unwrap_or_else(|| body.trim().to_string()), 400)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…")
}

/// PNG bytes of an image. PNG is lossless, so the server decodes exactly the pixels faceval
/// decoded; the encoder is deterministic, so the bytes (and the cache key) are stable.
pub fn png_bytes(img: &DynamicImage) -> Result<Vec<u8>> {
    let owned;
    let img = match img {
        // PNG has no float samples: 16 bits per channel keeps them as well as PNG can.
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
            owned = DynamicImage::ImageRgba16(img.to_rgba16());
            &owned
        }
        other => other,
    };
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Png)
        .context("encoding an image as PNG")?;
    Ok(buf.into_inner())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A request body with the parts that key the cache.
struct Prepared {
    body: Value,
    key: String,
}

impl OpenAiModel {
    /// Connects and probes the server with one tiny image. Fails with one clear message when
    /// the URL is wrong, nothing listens, the key is refused, the model is unknown or the
    /// server does not take images.
    pub fn connect(cfg: OpenAiConfig) -> Result<Self> {
        if !(cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://")) {
            bail!(
                "base_url {:?} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)",
                cfg.base_url
            );
        }
        let mut model = Self::without_probe(cfg);
        model.caps = model.probe()?;
        model.caps.served_model = model.served_model();
        Ok(model)
    }

    /// The served model's entry of `GET {base_url}/models`; `None` when the route is missing,
    /// fails or does not list `api_model` (many servers list nothing useful, and the cache
    /// key then rests on the manifest's `revision`).
    fn served_model(&self) -> Option<ServedModel> {
        let url = format!("{}/models", self.cfg.base_url);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.agent.get(&url);
        if let Some(key) = &self.cfg.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let v: Value = serde_json::from_str(&req.call().ok()?.into_string().ok()?).ok()?;
        let entry =
            v.get("data")?.as_array()?.iter().find(|m| {
                m.get("id").and_then(Value::as_str) == Some(self.cfg.api_model.as_str())
            })?;
        Some(ServedModel {
            id: self.cfg.api_model.clone(),
            root: entry
                .get("root")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// A client that has not talked to the server yet and assumes it offers no logprobs.
    /// [`OpenAiModel::connect`] is what a run should use.
    pub fn without_probe(cfg: OpenAiConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .max_idle_connections_per_host(cfg.max_concurrency.max(1))
            .build();
        OpenAiModel {
            cfg,
            agent,
            caps: ServerCapabilities::default(),
            requests: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            consecutive_failures: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.cfg
    }

    pub fn capabilities(&self) -> &ServerCapabilities {
        &self.caps
    }

    pub fn stats(&self) -> OpenAiStats {
        OpenAiStats {
            requests: self.requests.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    fn probe(&self) -> Result<ServerCapabilities> {
        let url = self.cfg.endpoint();
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, 128])
        }));
        let png = png_bytes(&img)?;
        let mut tries: Vec<usize> = vec![self.cfg.top_logprobs.clamp(1, 20), 5, 0];
        tries.dedup();
        let mut last_logprob_refusal = None;
        for top in tries {
            let mut body = json!({
                "model": self.cfg.api_model,
                "messages": [user_turn(std::slice::from_ref(&png), "Reply with one word.")],
                "max_tokens": 1,
                "temperature": 0,
            });
            if top > 0 {
                body["logprobs"] = json!(true);
                body["top_logprobs"] = json!(top);
            }
            // One attempt only: at start-up a refused connection is a wrong address, not a
            // hiccup, and the user wants to hear it at once.
            match self.post_once(&body) {
                Ok(v) => {
                    parse_completion(&v, &[]).map_err(|e| {
                        anyhow!(
                            "{url} is not an OpenAI-compatible chat completions endpoint: {e:#}"
                        )
                    })?;
                    let tops = first_token_top(&v);
                    let caps = match tops {
                        Some(t) if top > 0 && !t.is_empty() => ServerCapabilities {
                            top_logprobs: top,
                            token_ids: t.iter().all(|(tok, _)| token_id_of(tok).is_some()),
                            served_model: None,
                        },
                        _ => ServerCapabilities::default(),
                    };
                    return Ok(caps);
                }
                Err(e) => {
                    let msg = e.describe(&url);
                    let lower = msg.to_lowercase();
                    match &e {
                        CallError::Status { code, .. }
                            if (400..500).contains(code)
                                && ["image", "multimodal", "multi-modal", "vision", "mmproj"]
                                    .iter()
                                    .any(|w| lower.contains(w)) =>
                        {
                            bail!(
                                "the server at {} does not take images for model {:?}: {msg}. faceval \
                                 needs a vision-language model (see docs/serving.md)",
                                self.cfg.base_url,
                                self.cfg.api_model
                            )
                        }
                        CallError::Status { code: 401 | 403, .. } => bail!(
                            "{msg}: the server refused the credentials (set api_key_env in the model \
                             manifest to the variable holding the key)"
                        ),
                        CallError::Status { code: 404, .. } => bail!(
                            "{msg}. Check base_url (it is the API root, usually ending in /v1) and \
                             api_model (GET {}/models lists what the server serves)",
                            self.cfg.base_url
                        ),
                        CallError::Status { code: 400 | 422, .. }
                            if top > 0 && lower.contains("logprob") =>
                        {
                            last_logprob_refusal = Some(msg);
                            continue;
                        }
                        CallError::Connect(_) => bail!(
                            "{msg}. Is the server running, and is base_url right?"
                        ),
                        _ => bail!("start-up probe failed: {msg}"),
                    }
                }
            }
        }
        bail!(
            "start-up probe failed: {}",
            last_logprob_refusal.unwrap_or_else(|| "the server refused every request".into())
        )
    }

    /// One HTTP POST, no retries.
    fn post_once(&self, body: &Value) -> std::result::Result<Value, CallError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .agent
            .post(&self.cfg.endpoint())
            .set("Content-Type", "application/json");
        if let Some(key) = &self.cfg.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let text = serde_json::to_string(body).map_err(|e| CallError::Config(e.to_string()))?;
        match req.send_string(&text) {
            Ok(resp) => {
                let body = resp
                    .into_string()
                    .map_err(|e| CallError::Io(format!("reading the response: {e}")))?;
                serde_json::from_str(&body).map_err(|e| {
                    CallError::BadJson(format!("{e} (body starts {:?})", shorten(&body, 120)))
                })
            }
            Err(ureq::Error::Status(code, resp)) => {
                let retry_after = resp
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s).min(MAX_BACKOFF));
                let body = resp.into_string().unwrap_or_default();
                Err(CallError::Status {
                    code,
                    body,
                    retry_after,
                })
            }
            Err(ureq::Error::Transport(t)) => {
                let msg = t.to_string();
                Err(match t.kind() {
                    ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed => {
                        CallError::Connect(msg)
                    }
                    ureq::ErrorKind::InvalidUrl
                    | ureq::ErrorKind::UnknownScheme
                    | ureq::ErrorKind::InsecureRequestHttpsOnly
                    | ureq::ErrorKind::InvalidProxyUrl => CallError::Config(msg),
                    _ => CallError::Io(msg),
                })
            }
        }
    }

    /// POST with retries and the circuit breaker.
    fn post(&self, body: &Value) -> Result<Value> {
        let url = self.cfg.endpoint();
        let mut attempt = 0u32;
        loop {
            match self.post_once(body) {
                Ok(v) => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.retryable() && attempt < self.cfg.max_retries => {
                    let wait = match &e {
                        CallError::Status {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => self.cfg.backoff.saturating_mul(1 << attempt.min(16)),
                    };
                    std::thread::sleep(wait.min(MAX_BACKOFF));
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let msg = e.describe(&url);
                    let attempts = attempt + 1;
                    if !e.retryable() {
                        // The server answered; this item is the problem, not the server.
                        self.consecutive_failures.store(0, Ordering::Relaxed);
                        bail!("{msg}");
                    }
                    let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if matches!(e, CallError::Connect(_)) {
                        return Err(ModelUnavailable(format!(
                            "{msg} ({attempts} attempts); the server is gone. Rerun the same command \
                             once it is back: the run resumes where it stopped"
                        ))
                        .into());
                    }
                    if failures >= BREAKER_THRESHOLD {
                        return Err(ModelUnavailable(format!(
                            "{failures} requests in a row failed after {attempts} attempts each; last: \
                             {msg}. Rerun the same command once the server is healthy: the run resumes"
                        ))
                        .into());
                    }
                    bail!("{msg} (after {attempts} attempts)");
                }
            }
        }
    }

    /// The body and cache key for a request.
    fn prepare(&self, request: &Request, score_only: bool) -> Result<Prepared> {
        let pngs: Vec<Vec<u8>> = request
            .images
            .iter()
            .map(|i| png_bytes(i))
            .collect::<Result<_>>()?;
        let mut params = serde_json::Map::new();
        params.insert("temperature".into(), json!(0));
        // Servers differ on seed width (llama.cpp: u32, OpenAI: i64): 31 bits fit them all.
        params.insert("seed".into(), json!(request.seed & 0x7fff_ffff));
        if score_only {
            params.insert("max_tokens".into(), json!(1));
            params.insert("logprobs".into(), json!(true));
            params.insert("top_logprobs".into(), json!(self.caps.top_logprobs));
        } else {
            params.insert("max_tokens".into(), json!(request.max_new_tokens.max(1)));
            let stops: Vec<&String> = request
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .take(MAX_STOP_SENT)
                .collect();
            if !stops.is_empty() {
                params.insert("stop".into(), json!(stops));
            }
            if self.caps.top_logprobs > 0 {
                params.insert("logprobs".into(), json!(true));
                params.insert("top_logprobs".into(), json!(self.caps.top_logprobs.min(5)));
            }
        }
        let key_material = json!({
            "v": 2,
            "endpoint": self.cfg.endpoint(),
            "model": self.cfg.api_model,
            "served_model": self.caps.served_model,
            "revision": self.cfg.revision,
            "prompt_sha256": sha256_hex(request.prompt.as_bytes()),
            "image_sha256": pngs.iter().map(|p| sha256_hex(p)).collect::<Vec<_>>(),
            "params": params,
        });
        // serde_json maps are sorted by key, so this text is canonical.
        let key = sha256_hex(key_material.to_string().as_bytes());
        let mut body = Value::Object(params);
        body["model"] = json!(self.cfg.api_model);
        body["messages"] = json!([user_turn(&pngs, &request.prompt)]);
        Ok(Prepared { body, key })
    }

    fn cache_path(&self, key: &str) -> Option<PathBuf> {
        self.cfg
            .cache_dir
            .as_ref()
            .map(|d| d.join(&key[..2]).join(format!("{key}.json")))
    }

    /// The response for a prepared request: from the cache, else from the server.
    /// `accept` decides whether a response is worth caching (an unusable one is asked again
    /// next time).
    fn complete(&self, p: &Prepared, accept: impl Fn(&Value) -> bool) -> Result<(Value, bool)> {
        let path = self.cache_path(&p.key);
        if let Some(path) = &path {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if accept(&v) {
                        self.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok((v, true));
                    }
                }
            }
        }
        let v = self.post(&p.body)?;
        if let Some(path) = &path {
            if accept(&v) {
                // A cache that cannot be written only costs a repeat request later.
                let _ = write_atomic(path, v.to_string().as_bytes());
            }
        }
        Ok((v, false))
    }

    /// Greedy generation through the server (shared by `generate` and `generate_many`).
    pub fn generate_shared(&self, request: &Request) -> Result<Generation> {
        let p = self.prepare(request, false)?;
        let (v, _) = self.complete(&p, |v| parse_completion(v, &[]).is_ok())?;
        // The API does not split its time into stages, so the stage timings stay zero (not
        // reported); the caller measures the call's wall time.
        parse_completion(&v, &request.stop)
    }

    /// Runs `requests` with at most `max_concurrency` in flight, results in input order
    /// (what [`Model::generate_batch`] does for this backend).
    pub fn generate_many(&self, requests: &[Request]) -> Vec<Result<Generation>> {
        let workers = self.cfg.max_concurrency.clamp(1, requests.len().max(1));
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Generation>>>> =
            Mutex::new((0..requests.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = requests.get(i) else { break };
                    let out = self.generate_shared(r);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(out);
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow!("request was not run"))))
            .collect()
    }
}

impl Drop for OpenAiModel {
    fn drop(&mut self) {
        if self.cfg.report_on_drop {
            let s = self.stats();
            eprintln!(
                "{}: {} HTTP requests to {}, {} answers from the cache, {} retries",
                self.cfg.name, s.requests, self.cfg.base_url, s.cache_hits, s.retries
            );
        }
    }
}

/// The single user turn: images first, then the text.
fn user_turn(pngs: &[Vec<u8>], prompt: &str) -> Value {
    let mut content: Vec<Value> = pngs
        .iter()
        .map(|p| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(p);
            json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}})
        })
        .collect();
    content.push(json!({"type": "text", "text": prompt}));
    json!({"role": "user", "content": content})
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// `token_id:N` → N (vLLM's `--return-tokens-as-token-ids` form).
fn token_id_of(token: &str) -> Option<u32> {
    token.strip_prefix("token_id:")?.parse().ok()
}

/// `(token, logprob)` alternatives of the first generated token, if the response has them.
fn first_token_top(v: &Value) -> Option<Vec<(String, f64)>> {
    let first = v.pointer("/choices/0/logprobs/content/0")?;
    let tops = first.get("top_logprobs")?.as_array()?;
    Some(
        tops.iter()
            .filter_map(|t| {
                Some((
                    t.get("token")?.as_str()?.to_string(),
                    t.get("logprob")?.as_f64()?,
                ))
            })
            .collect(),
    )
}

/// Reads a chat completion into a [`Generation`], cutting the text at the first of `stops`
/// (servers accept only four; faceval may have more). Malformed shapes and an empty
/// `choices` are errors; a refusal or a filtered answer is an empty text.
pub fn parse_completion(v: &Value, stops: &[String]) -> Result<Generation> {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        bail!(
            "the server answered with an error: {}",
            server_message(&err.to_string())
        );
    }
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the response has no \"choices\" array"))?;
    let choice = choices
        .first()
        .ok_or_else(|| anyhow!("the response's \"choices\" is empty"))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| anyhow!("the response's first choice has no \"message\""))?;
    let refused = message
        .get("refusal")
        .and_then(Value::as_str)
        .is_some_and(|r| !r.is_empty());
    let mut text = match message.get("content") {
        _ if refused => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Some servers send content as parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        // null content: a filtered or empty answer.
        Some(Value::Null) | None => String::new(),
        Some(other) => bail!("the response's message content is neither text nor parts: {other}"),
    };
    if let Some(cut) = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        text.truncate(cut);
    }
    let mut g = Generation {
        text,
        prompt_tokens: v
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
        ..Default::default()
    };
    // Token ids are known only when the server returns them (`token_id:N`); texts alone
    // cannot be mapped back to ids without the server's tokenizer.
    if let Some(content) = choice
        .pointer("/logprobs/content")
        .and_then(Value::as_array)
    {
        let mut ids = Vec::with_capacity(content.len());
        let mut tops = Vec::with_capacity(content.len());
        for step in content {
            let Some(id) = step
                .get("token")
                .and_then(Value::as_str)
                .and_then(token_id_of)
            else {
                ids.clear();
                tops.clear();
                break;
            };
            ids.push(id);
            let alts: Vec<(u32, f32)> = step
                .get("top_logprobs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| {
                            Some((
                                token_id_of(t.get("token")?.as_str()?)?,
                                t.get("logprob")?.as_f64()? as f32,
                            ))
                        })
                        .take(5)
                        .collect()
                })
                .unwrap_or_default();
            tops.push(alts);
        }
        g.token_ids = ids;
        g.top_logprobs = tops;
    }
    Ok(g)
}

/// Token text as a comparable answer: whitespace and the word-start markers of byte-level
/// BPE (`Ġ`) and SentencePiece (`▁`), which some servers return raw, removed.
fn normalise_token(t: &str) -> &str {
    let t = t.trim();
    let t = t.strip_prefix('Ġ').unwrap_or(t);
    let t = t.strip_prefix('▁').unwrap_or(t);
    t.trim()
}

/// Scores `choices` from the first generated token's alternatives.
///
/// - A choice's score is the log of the summed probability of the listed tokens that equal it
///   exactly (case-sensitive, after [`normalise_token`]): `" A"` and `"A"` both count for A.
/// - The result is `None` (the caller generates and extracts instead) when no choice is
///   listed, when a listed token that is not a choice is likelier than the best choice (the
///   model would not have answered with a choice), or when the best choice is a proper
///   prefix of another choice ("young" / "young adult": the first token cannot tell them apart).
/// - A choice absent from the list gets the smallest listed logprob minus 1: below every
///   listed token, which is all that is known of it. Only the ranking is used downstream.
pub fn score_choices_first_token(choices: &[String], top: &[(String, f64)]) -> Option<Vec<f64>> {
    if choices.is_empty() || top.is_empty() {
        return None;
    }
    let mut matched: Vec<Vec<f64>> = vec![vec![]; choices.len()];
    let mut best_other = f64::NEG_INFINITY;
    for (tok, lp) in top {
        if !lp.is_finite() {
            continue;
        }
        let t = normalise_token(tok);
        match choices
            .iter()
            .position(|c| !t.is_empty() && c.as_str() == t)
        {
            Some(i) => matched[i].push(*lp),
            None => best_other = best_other.max(*lp),
        }
    }
    let floor = top
        .iter()
        .map(|(_, lp)| *lp)
        .filter(|lp| lp.is_finite())
        .fold(f64::INFINITY, f64::min)
        - 1.0;
    let scores: Vec<Option<f64>> = matched
        .iter()
        .map(|lps| {
            (!lps.is_empty()).then(|| {
                let m = lps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                m + lps.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
            })
        })
        .collect();
    let (best_i, best) = scores
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (i, s)))
        .fold(None, |acc: Option<(usize, f64)>, (i, s)| match acc {
            Some((_, b)) if b >= s => acc,
            _ => Some((i, s)),
        })?;
    if best < best_other {
        return None;
    }
    let winner = &choices[best_i];
    if choices
        .iter()
        .any(|c| c != winner && c.starts_with(winner.as_str()))
    {
        return None;
    }
    Some(scores.into_iter().map(|s| s.unwrap_or(floor)).collect())
}

impl Model for OpenAiModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.cfg.name.clone(),
            kind: "openai".into(),
            device: format!("remote:{}", self.cfg.base_url),
            dtype: "unknown".into(),
            weights_sha256: None,
            weight_bytes: 0,
        }
    }

    fn generate(&mut self, request: &Request) -> Result<Generation> {
        self.generate_shared(request)
    }

    fn traffic(&self) -> Option<Traffic> {
        let s = self.stats();
        Some(Traffic {
            http_requests: s.requests,
            cache_hits: s.cache_hits,
        })
    }

    /// A batch is sent as concurrent requests (at most `max_concurrency` in flight): each
    /// answer is the server's answer to that one request, as with [`Model::generate`], so
    /// `--batch-size` only changes how many the server sees at once.
    fn generate_batch(&mut self, requests: &[Request]) -> Vec<Result<Generation>> {
        self.generate_many(requests)
    }

    fn choice_logprobs(&mut self, request: &Request) -> Result<Option<Vec<f64>>> {
        // Without token texts there is nothing to match the choices against.
        if self.caps.top_logprobs == 0 || self.caps.token_ids || request.choices.is_empty() {
            return Ok(None);
        }
        let p = self.prepare(request, true)?;
        let (v, _) = self.complete(&p, |v| parse_completion(v, &[]).is_ok())?;
        parse_completion(&v, &[])?;
        let top = first_token_top(&v).unwrap_or_default();
        Ok(score_choices_first_token(&request.choices, &top))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn top(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(t, l)| (t.to_string(), *l)).collect()
    }

    #[test]
    fn first_token_scoring_sums_variants_and_floors_absent_choices() {
        let c = s(&["A", "B", "C", "D"]);
        let got = score_choices_first_token(
            &c,
            &top(&[("B", -0.5), (" A", -1.5), ("A", -2.0), ("x", -3.0)]),
        )
        .unwrap();
        let a = ((-1.5f64).exp() + (-2.0f64).exp()).ln();
        assert!((got[0] - a).abs() < 1e-12);
        assert_eq!(got[1], -0.5);
        assert_eq!(got[2], -4.0);
        assert_eq!(got[3], -4.0);
    }

    #[test]
    fn first_token_scoring_declines_when_it_cannot_decide() {
        let c = s(&["A", "B"]);
        // The model would start with "(": not a choice.
        assert_eq!(
            score_choices_first_token(&c, &top(&[("(", -0.1), ("A", -3.0)])),
            None
        );
        // No choice listed.
        assert_eq!(score_choices_first_token(&c, &top(&[("x", -0.1)])), None);
        // Best choice is a prefix of another.
        let c = s(&["young", "young adult", "old"]);
        assert_eq!(
            score_choices_first_token(&c, &top(&[("young", -0.1), ("old", -3.0)])),
            None
        );
        assert!(score_choices_first_token(&c, &top(&[("old", -0.1), ("young", -3.0)])).is_some());
    }

    #[test]
    fn completions_parse_refusals_and_reject_bad_shapes() {
        let ok = json!({"choices":[{"message":{"role":"assistant","content":"B) sad\nmore"}}],"usage":{"prompt_tokens":7}});
        let g = parse_completion(&ok, &s(&["\n"])).unwrap();
        assert_eq!((g.text.as_str(), g.prompt_tokens), ("B) sad", 7));
        let refusal = json!({"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't"}}]});
        assert_eq!(parse_completion(&refusal, &[]).unwrap().text, "");
        assert!(parse_completion(&json!({"choices":[]}), &[])
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_completion(&json!({"object":"x"}), &[]).is_err());
        assert!(parse_completion(&json!({"error":{"message":"boom"}}), &[])
            .unwrap_err()
            .to_string()
            .contains("boom"));
        let ids = json!({"choices":[{"message":{"content":"A"},"logprobs":{"content":[
            {"token":"token_id:32","logprob":-0.1,"top_logprobs":[{"token":"token_id:32","logprob":-0.1},{"token":"token_id:33","logprob":-2.5}]}]}}]});
        let g = parse_completion(&ids, &[]).unwrap();
        assert_eq!(g.token_ids, vec![32]);
        assert_eq!(g.top_logprobs, vec![vec![(32, -0.1f32), (33, -2.5f32)]]);
    }

    #[test]
    fn png_round_trip_keeps_pixels_and_bytes_are_stable() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([x as u8 * 30, y as u8 * 40, 9])
        }));
        let a = png_bytes(&img).unwrap();
        assert_eq!(a, png_bytes(&img).unwrap());
        let back = image::load_from_memory(&a).unwrap();
        assert_eq!(back.to_rgb8(), img.to_rgb8());
    }
}
