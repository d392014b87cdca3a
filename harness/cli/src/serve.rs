//! `faceval serve`: any local faceval model behind an OpenAI-compatible HTTP API
//! (`POST /v1/chat/completions`, `GET /v1/models`, `GET /health`). The other direction, a
//! `kind = "openai"` manifest turned into a client, is `faceval_eval::registry::connect_openai`.
//!
//! The server answers one user turn — images (data URLs, or `file://` paths under
//! `--allow-files`) then text — with greedy decoding, `max_tokens`, `stop`, `seed`,
//! `logprobs`/`top_logprobs` where the model reports them, and `stream = true` as
//! server-sent events. See `docs/serving.md`, which also describes the security model.
//!
//! Layout: hyper (HTTP/1.1) on a tokio runtime handles the connections, so a slow or idle
//! client costs a task, never a thread; each connection has a deadline for its request's head
//! (`--read-timeout`, which also closes idle keep-alive connections), one for its body, and a
//! timeout on every write (`--write-timeout`). A request is parsed, its images read and checked
//! against the limits, then — on a blocking thread, under `catch_unwind` — its pixels decoded
//! and the answer generated while holding the one model's mutex. Decoded pixels therefore
//! exist for one request at a time; queued requests hold only their bodies.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use clap::Args;
use faceval_eval::error::input_error;
use faceval_eval::model_manifest::{self, LoadedManifest, ModelKind};
use faceval_eval::registry;
use faceval_eval::runner::ModelHandle;
use faceval_models::{Model, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Default of `--max-body-bytes` (a few full-resolution images as base64 fit easily).
const DEFAULT_MAX_BODY_BYTES: u64 = 64 << 20;
/// Generated tokens when a request names no `max_tokens` (or `--max-tokens-limit` if lower).
const DEFAULT_MAX_TOKENS: usize = 256;
/// The environment variable that may hold `--api-key`.
const API_KEY_ENV: &str = "FACEVAL_SERVE_API_KEY";

#[derive(Args)]
pub struct ServeArgs {
    /// A model manifest, its name, `random`, `majority`, or a checkpoint folder / hf:// id.
    #[arg(long)]
    pub model: String,
    /// Address to listen on. Loopback (the default) answers only requests addressed to
    /// localhost / 127.0.0.1 / [::1]; any other address without --api-key prints a warning.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the chosen address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The label `majority` always answers (required for `--model majority`).
    #[arg(long)]
    pub majority_label: Option<String>,
    /// Name clients put in the `model` field (default: the manifest's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`, for models with weights.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Threads reading and writing HTTP connections (connections are asynchronous: a slow
    /// client holds no thread).
    #[arg(long, default_value_t = 8)]
    pub http_threads: usize,
    /// Serve `file://` image URLs, but only regular files inside DIR (after resolving symlinks
    /// and `..`). Without it every `file://` URL is refused.
    #[arg(long, value_name = "DIR")]
    pub allow_files: Option<PathBuf>,
    /// Require `Authorization: Bearer KEY` on every request but GET /health.
    #[arg(long, value_name = "KEY", env = API_KEY_ENV, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Largest request body, in bytes (larger requests get 413).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,
    /// Most images one request may carry.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_images: usize,
    /// Most pixels (width × height) one image may decode to; bounds the decoder's memory.
    #[arg(long, value_name = "PIXELS", default_value_t = 36_000_000)]
    pub max_image_pixels: u64,
    /// Largest `max_tokens` a request may ask for (larger ones get 400). Answers also stop
    /// where the model's context ends.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_tokens_limit: usize,
    /// Seconds a client has to send a request's headers, and again its body; an idle
    /// keep-alive connection is closed after as long.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub read_timeout: f64,
    /// Seconds one write to a client may wait (a client that stops reading is dropped).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub write_timeout: f64,
}

/// What the request handlers need to know of the flags.
#[derive(Debug, Clone)]
struct Config {
    /// Canonical `--allow-files` folder.
    allow_files: Option<PathBuf>,
    api_key: Option<String>,
    max_body_bytes: u64,
    max_images: usize,
    max_image_pixels: u64,
    max_tokens_limit: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    /// The server listens on a loopback address: check `Host` and `Origin`.
    loopback: bool,
}

impl Config {
    fn from_args(args: &ServeArgs) -> anyhow::Result<Config> {
        let seconds = |flag: &str, s: f64| {
            if s.is_finite() && s > 0.0 && s < 1e9 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(input_error(format!(
                    "{flag} must be a positive number of seconds, not {s}"
                )))
            }
        };
        let positive = |flag: &str, n: u64| {
            if n == 0 {
                Err(input_error(format!("{flag} must be at least 1")))
            } else {
                Ok(())
            }
        };
        positive("--max-body-bytes", args.max_body_bytes)?;
        positive("--max-image-pixels", args.max_image_pixels)?;
        positive("--max-tokens-limit", args.max_tokens_limit as u64)?;
        let allow_files = match &args.allow_files {
            None => None,
            Some(dir) => {
                let canon = std::fs::canonicalize(dir)
                    .ok()
                    .filter(|c| c.is_dir())
                    .ok_or_else(|| {
                        input_error(format!(
                            "--allow-files {}: not a folder this process can open",
                            dir.display()
                        ))
                    })?;
                Some(canon)
            }
        };
        let api_key = match &args.api_key {
            Some(k) if k.trim().is_empty() => {
                return Err(input_error(format!(
                    "--api-key (or {API_KEY_ENV}) is empty; give a key or leave it unset"
                )))
            }
            other => other.clone(),
        };
        Ok(Config {
            allow_files,
            api_key,
            max_body_bytes: args.max_body_bytes,
            max_images: args.max_images,
            max_image_pixels: args.max_image_pixels,
            max_tokens_limit: args.max_tokens_limit,
            read_timeout: seconds("--read-timeout", args.read_timeout)?,
            write_timeout: seconds("--write-timeout", args.write_timeout)?,
            loopback: true,
        })
    }
}

const LOADING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

struct Served {
    name: String,
    cfg: Config,
    /// `None` until the model is loaded.
    model: Mutex<Option<Box<dyn Model>>>,
    /// Signalled when loading ends (either way).
    load_done: Condvar,
    /// LOADING, READY or FAILED: read by /health without touching the model's mutex.
    state: AtomicU8,
    counter: AtomicU64,
    /// What `GET /v1/models` sends as the model's `root` once it is loaded: `sha256:` and the
    /// weights' sha256 (the weightless floors: `kind:name`). Clients key their response caches
    /// on it, so new weights served under the same name are never answered from old answers.
    root: std::sync::OnceLock<String>,
    /// Debug builds only: a prompt on which the request panics under the model's lock, so that
    /// tests can check the panic guard (`FACEVAL_SERVE_TEST_PANIC`).
    test_panic: Option<String>,
}

/// Checks that the manifest names a model this server can serve, before anything is bound.
fn check_servable(loaded: &LoadedManifest, args: &ServeArgs) -> anyhow::Result<()> {
    let m = &loaded.manifest;
    match m.kind {
        ModelKind::Majority if args.majority_label.is_none() => Err(input_error(
            "--model majority needs --majority-label: a server has no reference split to count",
        )),
        ModelKind::Openai => Err(input_error(format!(
            "model {} is already served over HTTP at {}; point clients there",
            m.name, m.base_url
        ))),
        _ => Ok(()),
    }
}

/// The served model, loaded as `faceval run` loads it; `majority` answers the label given.
fn load(loaded: &LoadedManifest, args: &ServeArgs) -> anyhow::Result<Box<dyn Model>> {
    Ok(
        match registry::instantiate_on(loaded, &args.device, None)?.0 {
            ModelHandle::Loaded(model) => model,
            ModelHandle::Majority => Box::new(faceval_models::MajorityModel::new(
                args.majority_label.clone().unwrap_or_default(),
            )),
        },
    )
}

/// Whether `authority` (a `Host` header or a URL's host[:port]) names this machine's loopback
/// interface: `localhost`, `*.localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback_authority(authority: &str) -> bool {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) if tail.is_empty() || tail.starts_with(':') => h,
            _ => return false,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return false,
            None => a,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host[:port] of an `Origin` header (`scheme://host[:port]`), or `None` for `null` or
/// anything unparseable.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

pub fn serve(args: ServeArgs, baselines_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::from_args(&args)?;
    let manifest = model_manifest::resolve(&args.model, baselines_dir)?;
    check_servable(&manifest, &args)?;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| manifest.manifest.name.clone());

    let addr = format!("{}:{}", args.host, args.port);
    let listener = std::net::TcpListener::bind(&addr)
        .map_err(|e| input_error(format!("cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    cfg.loopback = bound.ip().is_loopback();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.http_threads.max(1))
        .max_blocking_threads(64)
        .thread_name("faceval-serve")
        .enable_all()
        .build()?;
    let test_panic = if cfg!(debug_assertions) {
        std::env::var("FACEVAL_SERVE_TEST_PANIC").ok()
    } else {
        None
    };
    let served = Arc::new(Served {
        name,
        cfg,
        model: Mutex::new(None),
        load_done: Condvar::new(),
        state: AtomicU8::new(LOADING),
        counter: AtomicU64::new(0),
        root: std::sync::OnceLock::new(),
        test_panic,
    });
    let accepting = {
        let _entered = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        runtime.spawn(accept_loop(listener, Arc::clone(&served)))
    };
    // Tests and scripts read this line to learn the port. Requests that arrive while the model
    // loads wait for it; GET /health says 503 "loading" until then.
    println!("listening on http://{bound}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Some(warning) = exposure_warning(bound, &served.cfg) {
        eprintln!("{warning}");
    }
    if let Some(dir) = &served.cfg.allow_files {
        eprintln!(
            "file:// image URLs are served from {} (regular files only)",
            dir.display()
        );
    }
    match load(&manifest, &args) {
        Ok(model) => {
            let info = model.info();
            let _ = served.root.set(match info.weights_sha256 {
                Some(sha) => format!("sha256:{sha}"),
                None => format!("{}:{}", info.kind, info.name),
            });
            *lock_model(&served) = Some(model);
            served.state.store(READY, Ordering::SeqCst);
            served.load_done.notify_all();
        }
        Err(e) => {
            served.state.store(FAILED, Ordering::SeqCst);
            served.load_done.notify_all();
            runtime.shutdown_background();
            return Err(e);
        }
    }
    eprintln!(
        "serving {} at http://{bound}/v1 (Ctrl-C stops)",
        served.name
    );
    // The accept loop runs for as long as the process is meant to serve; should it ever end,
    // that is a failure, never a clean exit.
    let ended = runtime.block_on(accepting);
    runtime.shutdown_background();
    Err(anyhow::anyhow!(
        "the server stopped accepting connections{}",
        match ended {
            Err(e) => format!(": {e}"),
            Ok(()) => String::new(),
        }
    ))
}

/// The warning printed when the server listens beyond loopback without an API key.
fn exposure_warning(bound: std::net::SocketAddr, cfg: &Config) -> Option<String> {
    if bound.ip().is_loopback() || cfg.api_key.is_some() {
        return None;
    }
    Some(format!(
        "warning: listening on {bound}, which is not a loopback address, without --api-key: \
         anyone who can reach this machine can use the model{}. Set --api-key KEY (or {API_KEY_ENV}).",
        if cfg.allow_files.is_some() {
            " and read the images under --allow-files"
        } else {
            ""
        }
    ))
}

/// The model's mutex; a request that panicked while holding it left the model's caches in an
/// unknown state, so they are emptied (answers never depend on them) and the lock is reused.
fn lock_model(served: &Served) -> MutexGuard<'_, Option<Box<dyn Model>>> {
    match served.model.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            served.model.clear_poison();
            let mut g = poisoned.into_inner();
            if let Some(m) = g.as_mut() {
                m.clear_caches();
            }
            g
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, served: Arc<Served>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, Arc::clone(&served)));
            }
            // Out of file descriptors and the like: wait a little, keep serving the others.
            Err(e) => {
                eprintln!("warning: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, served: Arc<Served>) {
    let _ = stream.set_nodelay(true);
    let mut io = tokio_io_timeout::TimeoutStream::new(stream);
    // Reads have deadlines per request (below); a blocked write fails after the timeout.
    io.set_write_timeout(Some(served.cfg.write_timeout));
    let io = hyper_util::rt::TokioIo::new(Box::pin(io));
    let head_deadline = served.cfg.read_timeout;
    let service = hyper::service::service_fn(move |req| {
        let served = Arc::clone(&served);
        async move { Ok::<_, Infallible>(route(req, served).await) }
    });
    // A connection ends when the client leaves, breaks a deadline or a write times out;
    // nothing to report.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(head_deadline)
        .serve_connection(io, service)
        .await;
}

type Body = BoxBody<Bytes, Infallible>;
type Response = hyper::Response<Body>;
type HttpError = (u16, String);

fn bad(msg: impl Into<String>) -> HttpError {
    (400, msg.into())
}

fn status(code: u16) -> hyper::StatusCode {
    hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status(code);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An OpenAI-style error body.
fn error_body(code: u16, message: &str) -> Value {
    let kind = match code {
        401 => "authentication_error",
        403 | 421 => "permission_error",
        c if c >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn error_response(code: u16, message: &str) -> Response {
    let mut r = json_response(code, &error_body(code, message));
    if code == 401 {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// `Host` / `Origin` on a loopback server, then the API key (not asked of /health).
fn check_access(req: &hyper::Request<Incoming>, cfg: &Config, path: &str) -> Result<(), HttpError> {
    let headers = req.headers();
    if cfg.loopback {
        let host = headers
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("?"))
            .or(req.uri().authority().map(|a| a.as_str()));
        match host {
            Some(h) if is_loopback_authority(h) => {}
            Some(h) => {
                return Err((
                    421,
                    format!(
                        "Host {:?} is not this server: a server on a loopback address answers only \
                         requests addressed to localhost, 127.0.0.1 or [::1] (this stops web pages \
                         from reaching it by DNS rebinding); serve on another --host to be reached \
                         by other names",
                        h.chars().take(100).collect::<String>()
                    ),
                ))
            }
            None => {
                return Err((
                    421,
                    "the request has no Host header; a server on a loopback address answers only \
                     requests addressed to localhost, 127.0.0.1 or [::1]"
                        .into(),
                ))
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("?");
            if !origin_authority(origin).is_some_and(is_loopback_authority) {
                return Err((
                    403,
                    format!(
                        "requests from web pages of other origins ({:?}) are refused by a server \
                         on a loopback address",
                        origin.chars().take(100).collect::<String>()
                    ),
                ));
            }
        }
    }
    if let (Some(key), false) = (&cfg.api_key, path == "/health") {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => {
                return Err((
                    401,
                    "this server needs an API key: send the header `Authorization: Bearer KEY` \
                     (the key given to faceval serve --api-key)"
                        .into(),
                ))
            }
            Some(g) if !constant_time_eq(g.as_bytes(), key.as_bytes()) => {
                return Err((401, "Incorrect API key provided".into()))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Equality whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(req: hyper::Request<Incoming>, served: Arc<Served>) -> Response {
    let path = req.uri().path().trim_end_matches('/').to_string();
    if let Err((code, msg)) = check_access(&req, &served.cfg, &path) {
        return error_response(code, &msg);
    }
    let model_object = || {
        let mut m =
            json!({"id": served.name, "object": "model", "created": 0, "owned_by": "faceval"});
        if let Some(root) = served.root.get() {
            m["root"] = json!(root);
        }
        m
    };
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/models") => {
            json_response(200, &json!({"object": "list", "data": [model_object()]}))
        }
        (&Method::GET, p) if p.strip_prefix("/v1/models/") == Some(served.name.as_str()) => {
            json_response(200, &model_object())
        }
        (&Method::GET, p) if p.starts_with("/v1/models/") => error_response(
            404,
            &format!("The model `{}` does not exist; this server serves `{}`", &p[11..], served.name),
        ),
        (&Method::GET, "/health") => {
            let (code, state) = match served.state.load(Ordering::SeqCst) {
                READY => (200, "ok"),
                LOADING => (503, "loading"),
                _ => (503, "failed"),
            };
            json_response(
                code,
                &json!({"status": state, "model": served.name, "loaded": code == 200}),
            )
        }
        (&Method::POST, "/v1/chat/completions") => chat(req, served).await,
        (method, _) => error_response(
            404,
            &format!("no route {method} {path}: this server has POST /v1/chat/completions, GET /v1/models, GET /health"),
        ),
    }
}

/// What a generating request tells the HTTP side.
enum Event {
    /// A piece of the answer (streamed requests only).
    Text(String),
    Done(Box<Answer>),
    Failed(HttpError),
}

/// A finished answer and what the response needs of the request.
struct Answer {
    stream: bool,
    include_usage: bool,
    text: String,
    finish_reason: &'static str,
    logprobs: Value,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Answer {
    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// Sets its flag when dropped: the HTTP side went away (client gone), so generation stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn chat(req: hyper::Request<Incoming>, served: Arc<Served>) -> Response {
    let max = served.cfg.max_body_bytes;
    let too_large = || {
        error_response(
            413,
            &format!(
                "the request body is over this server's limit of {max} bytes (--max-body-bytes)"
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large();
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let read = Limited::new(req.into_body(), limit).collect();
    let body = match tokio::time::timeout(served.cfg.read_timeout, read).await {
        Err(_) => {
            return error_response(
                408,
                &format!(
                    "the request body did not arrive within {:?} (--read-timeout)",
                    served.cfg.read_timeout
                ),
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => return error_response(400, &format!("cannot read the request body: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let cancelled = Arc::new(AtomicBool::new(false));
    let cancel_guard = CancelOnDrop(Arc::clone(&cancelled));
    let job = Arc::clone(&served);
    tokio::task::spawn_blocking(move || {
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| answer(&body, &job, &tx, &cancelled)));
        let event = match outcome {
            Ok(Ok(a)) => Event::Done(Box::new(a)),
            Ok(Err(e)) => Event::Failed(e),
            Err(_) => Event::Failed((
                500,
                "faceval serve failed on this request (a panic, reported in the server's log); \
                 the server goes on"
                    .into(),
            )),
        };
        let _ = tx.blocking_send(event);
    });
    // The first event decides the response: an error before any text is an HTTP error.
    match rx.recv().await {
        None => error_response(500, "the request ended without an answer"),
        Some(Event::Failed((code, msg))) => error_response(code, &msg),
        Some(Event::Done(a)) if !a.stream => {
            let n = served.counter.fetch_add(1, Ordering::Relaxed);
            json_response(
                200,
                &json!({
                    "id": format!("chatcmpl-faceval-{n}"),
                    "object": "chat.completion",
                    "created": unix_now(),
                    "model": served.name,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": a.text},
                        "logprobs": a.logprobs,
                        "finish_reason": a.finish_reason,
                    }],
                    "usage": a.usage(),
                }),
            )
        }
        Some(first) => {
            let n = served.counter.fetch_add(1, Ordering::Relaxed);
            let mut sse = Sse {
                id: format!("chatcmpl-faceval-{n}"),
                created: unix_now(),
                model: served.name.clone(),
                started: false,
                pending: VecDeque::new(),
                rx: Some(rx),
                _cancel: cancel_guard,
            };
            sse.render(first);
            let mut r = hyper::Response::new(sse.boxed());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            r
        }
    }
}

/// A streamed answer as server-sent events in OpenAI's `chat.completion.chunk` format.
struct Sse {
    id: String,
    created: u64,
    model: String,
    /// The role chunk was sent.
    started: bool,
    pending: VecDeque<Bytes>,
    /// `None` once the last event was rendered.
    rx: Option<mpsc::Receiver<Event>>,
    /// Dropped with the body when the client goes away.
    _cancel: CancelOnDrop,
}

impl Sse {
    fn chunk(&self, delta: Value, logprobs: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        })
    }

    fn push(&mut self, v: &Value) {
        self.pending
            .push_back(Bytes::from(format!("data: {v}\n\n")));
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            let c = self.chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                Value::Null,
            );
            self.push(&c);
        }
    }

    fn render(&mut self, event: Event) {
        match event {
            Event::Text(t) => {
                self.start();
                let c = self.chunk(json!({"content": t}), Value::Null, Value::Null);
                self.push(&c);
            }
            Event::Done(a) => {
                self.start();
                let c = self.chunk(json!({}), a.logprobs.clone(), json!(a.finish_reason));
                self.push(&c);
                if a.include_usage {
                    let mut u = self.chunk(json!({}), Value::Null, Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = a.usage();
                    self.push(&u);
                }
                self.pending
                    .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                self.rx = None;
            }
            Event::Failed((code, msg)) => {
                self.push(&error_body(code, &msg));
                self.rx = None;
            }
        }
    }
}

impl hyper::body::Body for Sse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => self.render(event),
                Poll::Ready(None) => self.render(Event::Failed((
                    500,
                    "the answer ended without finishing".into(),
                ))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The parts of a chat request faceval acts on.
struct ChatRequest {
    /// Encoded images (PNG, JPEG…), checked against `--max-image-pixels` by their headers.
    images: Vec<Vec<u8>>,
    text: String,
    max_tokens: usize,
    stop: Vec<String>,
    seed: u64,
    logprobs: bool,
    top_logprobs: usize,
    token_ids: bool,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(body: &[u8], served: &Served) -> Result<ChatRequest, HttpError> {
    let cfg = &served.cfg;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    if let Some(model) = v.get("model").and_then(Value::as_str) {
        if model != served.name {
            return Err((
                404,
                format!(
                    "The model `{model}` does not exist; this server serves `{}`",
                    served.name
                ),
            ));
        }
    }
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream must be true or false")),
    };
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if v.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(bad("only n = 1 is supported (decoding is greedy)"));
    }
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("\"messages\" must be an array"))?;
    if messages.len() != 1 || messages[0].get("role").and_then(Value::as_str) != Some("user") {
        return Err(bad(format!(
            "faceval serve answers exactly one user message (images, then text), as faceval's prompts are built; got {} messages",
            messages.len()
        )));
    }
    let mut images = Vec::new();
    let mut texts = Vec::new();
    match messages[0].get("content") {
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(parts)) => {
            let n_images = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
                .count();
            if n_images > cfg.max_images {
                return Err(bad(format!(
                    "the request has {n_images} images; this server takes at most {} per request (--max-images)",
                    cfg.max_images
                )));
            }
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                bad(format!("content[{i}]: a text part needs \"text\""))
                            })?
                            .to_string(),
                    ),
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .or_else(|| part.get("image_url"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                bad(format!(
                                    "content[{i}]: an image_url part needs image_url.url"
                                ))
                            })?;
                        let bytes =
                            image_bytes(url, cfg).map_err(|m| bad(format!("content[{i}]: {m}")))?;
                        check_dimensions(&bytes, cfg.max_image_pixels)
                            .map_err(|m| bad(format!("content[{i}]: {m}")))?;
                        images.push(bytes);
                    }
                    other => {
                        return Err(bad(format!(
                            "content[{i}]: unsupported part type {other:?}"
                        )))
                    }
                }
            }
        }
        _ => {
            return Err(bad(
                "the user message needs \"content\" (a string or an array of parts)",
            ))
        }
    }
    let limit = cfg.max_tokens_limit;
    let max_tokens = match ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| v.get(*k).filter(|x| !x.is_null()).map(|x| (*k, x)))
    {
        None => DEFAULT_MAX_TOKENS.min(limit),
        Some((key, x)) => {
            let n = x
                .as_u64()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad(format!("{key} must be a positive integer, not {x}")))?;
            if n > limit as u64 {
                return Err(bad(format!(
                    "{key} = {n} is over this server's limit of {limit} (--max-tokens-limit)"
                )));
            }
            n as usize
        }
    };
    let stop = match v.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("stop entries must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop must be a string or an array of strings")),
    };
    let seed = match v.get("seed") {
        None | Some(Value::Null) => 0,
        Some(s) => s
            .as_u64()
            .or_else(|| s.as_i64().map(|i| i as u64))
            .ok_or_else(|| bad("seed must be an integer"))?,
    };
    let logprobs = v.get("logprobs").and_then(Value::as_bool).unwrap_or(false);
    let top_logprobs = v.get("top_logprobs").and_then(Value::as_u64).unwrap_or(0) as usize;
    if top_logprobs > 20 {
        return Err(bad("top_logprobs must be between 0 and 20"));
    }
    Ok(ChatRequest {
        images,
        text: texts.join("\n"),
        max_tokens,
        stop,
        seed,
        logprobs,
        top_logprobs,
        token_ids: v
            .get("return_tokens_as_token_ids")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        stream,
        include_usage,
    })
}

/// The encoded bytes behind `data:<mime>;base64,<bytes>` or `file://<path>`. Remote URLs are
/// refused: the server never fetches from the network.
fn image_bytes(url: &str, cfg: &Config) -> Result<Vec<u8>, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or("a data URL needs a comma before its payload")?;
        if !meta.ends_with(";base64") {
            return Err("only base64 data URLs are supported".into());
        }
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("bad base64 in data URL: {e}"))
    } else if let Some(path) = url.strip_prefix("file://") {
        let Some(root) = &cfg.allow_files else {
            return Err(
                "file:// image URLs are refused: this server was started without --allow-files DIR \
                 (send the image as a data: URL instead)"
                    .into(),
            );
        };
        // Whether the file is outside the folder, missing, not a regular file or unreadable,
        // the client learns the same thing.
        read_allowed(path, root, cfg.max_body_bytes).map_err(|too_large| match too_large {
            Some(limit) => format!(
                "{}: the file is larger than {limit} bytes (--max-body-bytes)",
                short(url)
            ),
            None => format!(
                "{}: no readable image file at this path under the folder this server serves \
                 (--allow-files)",
                short(url)
            ),
        })
    } else {
        Err(format!(
            "image URL {:?}: only data: and file:// URLs are served (no network fetches)",
            url.chars().take(40).collect::<String>()
        ))
    }
}

fn short(url: &str) -> String {
    let s: String = url.chars().take(200).collect();
    if s.len() < url.len() {
        format!("{s}…")
    } else {
        s
    }
}

/// Reads the file a `file://` URL's path names (absolute, or relative to `root`; `localhost`
/// as the host is allowed; percent-escapes decoded), only if it is a regular file inside
/// `root` once symlinks and `..` are resolved. `Err(Some(limit))`: the file is over `max_bytes`;
/// `Err(None)`: anything else.
fn read_allowed(url_path: &str, root: &Path, max_bytes: u64) -> Result<Vec<u8>, Option<u64>> {
    let rest = match url_path.strip_prefix("localhost") {
        Some(r) if r.starts_with('/') => r,
        _ => url_path,
    };
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| None)?;
    let p = Path::new(decoded.as_ref());
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let canon = std::fs::canonicalize(&full).map_err(|_| None)?;
    if !canon.starts_with(root) || !std::fs::metadata(&canon).map_err(|_| None)?.is_file() {
        return Err(None);
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    // Never block opening a FIFO swapped in since the check, nor follow a symlink put there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    let file = opts.open(&canon).map_err(|_| None)?;
    let meta = file.metadata().map_err(|_| None)?;
    if !meta.is_file() {
        return Err(None);
    }
    if meta.len() > max_bytes {
        return Err(Some(max_bytes));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| None)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Some(max_bytes));
    }
    Ok(bytes)
}

fn pixel_limit_error(w: u32, h: u32, max: u64) -> String {
    format!(
        "the image is {w}x{h} = {} pixels, over this server's limit of {max} pixels per image \
         (--max-image-pixels)",
        w as u64 * h as u64
    )
}

/// Reads only the image's header: its format must be known and its size within `max_pixels`.
fn check_dimensions(bytes: &[u8], max_pixels: u64) -> Result<(), String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("not a decodable image: {e}"))?;
    if reader.format().is_none() {
        return Err("not a decodable image (PNG, JPEG, WebP, BMP or TIFF)".into());
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("not a decodable image: {e}"))?;
    if w as u64 * h as u64 > max_pixels {
        return Err(pixel_limit_error(w, h, max_pixels));
    }
    Ok(())
}

/// Decodes an image whose header passed [`check_dimensions`] with the decoder every run uses
/// (`image_io`: EXIF orientation, JPEG as Pillow decodes it), so a served model sees the
/// pixels `faceval run` would give it; the pixel limit is checked again from the header.
fn decode_pixels(bytes: &[u8], max_pixels: u64) -> Result<image::DynamicImage, String> {
    faceval_models::image_io::decode_within(bytes, max_pixels)
        .map_err(|e| format!("not a decodable image: {e:#}"))
}

/// Waits for the model to be loaded and locks it; 503 when loading failed.
fn ready_model(served: &Served) -> Result<MutexGuard<'_, Option<Box<dyn Model>>>, HttpError> {
    let mut guard = lock_model(served);
    loop {
        if guard.is_some() {
            return Ok(guard);
        }
        if served.state.load(Ordering::SeqCst) == FAILED {
            return Err((503, "the model failed to load; see the server's log".into()));
        }
        guard = served
            .load_done
            .wait_timeout(guard, Duration::from_secs(1))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

/// One request, start to end, on a blocking thread: parse, read and check the images, then,
/// holding the model, decode the pixels and generate (pieces of text go to `tx` when streamed).
fn answer(
    body: &[u8],
    served: &Served,
    tx: &mpsc::Sender<Event>,
    cancelled: &AtomicBool,
) -> Result<Answer, HttpError> {
    let req = parse_chat(body, served)?;
    let mut slot = ready_model(served)?;
    let loaded = slot.as_mut().expect("ready_model returns a loaded model");
    let images = req
        .images
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            decode_pixels(bytes, served.cfg.max_image_pixels)
                .map(Arc::new)
                .map_err(|m| bad(format!("image {i}: {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if served.test_panic.as_deref() == Some(req.text.as_str()) {
        panic!("FACEVAL_SERVE_TEST_PANIC: panicking on purpose under the model's lock");
    }
    let request = Request {
        images,
        prompt: req.text.clone(),
        max_new_tokens: req.max_tokens,
        stop: req.stop.clone(),
        choices: vec![],
        choice_texts: vec![],
        seed: req.seed,
    };
    // Generation stops when nobody waits for it any more: the HTTP side dropped the request
    // (client gone) or, streaming, the event stream's reader went away.
    let mut on_text = |piece: &str| {
        let gone = cancelled.load(Ordering::Relaxed)
            || (req.stream
                && if piece.is_empty() {
                    tx.is_closed()
                } else {
                    tx.blocking_send(Event::Text(piece.to_string())).is_err()
                });
        if gone {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let g = loaded
        .generate_streaming(&request, &mut on_text)
        // Model errors are about this input (too long, unreadable image…): a retry would fail again.
        .map_err(|e| bad(format!("the model could not answer: {e:#}")))?;
    let token_text = |id: u32| -> String {
        if req.token_ids {
            format!("token_id:{id}")
        } else {
            loaded.token_text(id).unwrap_or_default()
        }
    };
    let logprobs = if req.logprobs && !g.top_logprobs.is_empty() {
        let content: Vec<Value> = g
            .token_ids
            .iter()
            .zip(&g.top_logprobs)
            .map(|(&id, alts)| {
                let lp = alts
                    .iter()
                    .find(|(t, _)| *t == id)
                    .or(alts.first())
                    .map(|(_, l)| *l as f64)
                    .unwrap_or(0.0);
                let tok = token_text(id);
                let tops: Vec<Value> = alts
                    .iter()
                    .take(req.top_logprobs)
                    .map(|(t, l)| {
                        let s = token_text(*t);
                        json!({"token": s, "logprob": *l as f64, "bytes": s.as_bytes()})
                    })
                    .collect();
                json!({"token": tok, "logprob": lp, "bytes": tok.as_bytes(), "top_logprobs": tops})
            })
            .collect();
        json!({"content": content})
    } else {
        Value::Null
    };
    let finish_reason = loaded.finish_reason(req.max_tokens, &g);
    drop(slot);
    Ok(Answer {
        stream: req.stream,
        include_usage: req.include_usage,
        finish_reason,
        logprobs,
        prompt_tokens: g.prompt_tokens,
        completion_tokens: g.token_ids.len(),
        text: g.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "localhost:8000",
            "LOCALHOST.:80",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:8000",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for no in [
            "evil.com",
            "evil.com:8000",
            "localhost.evil.com",
            "127.0.0.1.nip.io:8000",
            "10.0.0.1:8000",
            "[::2]:80",
            "[::1]x",
            "127.0.0.1:80:80",
            "",
            "0.0.0.0:8000",
        ] {
            assert!(!is_loopback_authority(no), "{no}");
        }
        assert_eq!(
            origin_authority("http://localhost:3000"),
            Some("localhost:3000")
        );
        assert_eq!(origin_authority("https://evil.com/x"), Some("evil.com"));
        assert_eq!(origin_authority("null"), None);
    }

    #[test]
    fn serving_beyond_loopback_without_a_key_is_warned_about() {
        let mut cfg = Config {
            allow_files: None,
            api_key: None,
            max_body_bytes: 1,
            max_images: 1,
            max_image_pixels: 1,
            max_tokens_limit: 1,
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            loopback: false,
        };
        let lan: std::net::SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let warning = exposure_warning(lan, &cfg).unwrap();
        assert!(
            warning.contains("0.0.0.0:8000") && warning.contains("--api-key"),
            "{warning}"
        );
        assert!(exposure_warning("127.0.0.1:8000".parse().unwrap(), &cfg).is_none());
        assert!(exposure_warning("[::1]:8000".parse().unwrap(), &cfg).is_none());
        cfg.allow_files = Some(PathBuf::from("/data"));
        assert!(exposure_warning(lan, &cfg)
            .unwrap()
            .contains("--allow-files"));
        cfg.api_key = Some("k".into());
        assert!(exposure_warning(lan, &cfg).is_none());
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
