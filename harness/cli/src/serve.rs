//! `faceval serve`: any local faceval model behind an OpenAI-compatible HTTP API
//! (`POST /v1/chat/completions`, `GET /v1/models`, `GET /health`), and the other direction,
//! [`connect_openai`]: a `kind = "openai"` model manifest turned into a client.
//!
//! The server answers one user turn — images (data URLs or `file://` paths) then text — with
//! greedy decoding, `max_tokens`, `stop`, `seed`, and `logprobs`/`top_logprobs` where the
//! model reports them. Many connections are handled at once; the single model answers one
//! request at a time behind a mutex. See `docs/serving.md`.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use clap::Args;
use faceval_eval::error::input_error;
use faceval_eval::model_manifest::{self, ModelKind, ModelManifest};
use faceval_eval::runner::ModelHandle;
use faceval_models::internvl::InternVlModel;
use faceval_models::openai::{OpenAiConfig, OpenAiModel};
use faceval_models::{Generation, Model, Request};
use serde_json::{json, Value};

/// Largest request body accepted (a few full-resolution images as base64 fit easily).
const MAX_BODY_BYTES: u64 = 64 << 20;
/// Generated tokens when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: usize = 256;

#[derive(Args)]
pub struct ServeArgs {
    /// A model manifest, its name, `random`, `majority`, or a checkpoint folder / hf:// id.
    #[arg(long)]
    pub model: String,
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
    /// Threads reading and writing HTTP connections.
    #[arg(long, default_value_t = 8)]
    pub http_threads: usize,
}

/// The served model: InternVL keeps its concrete type so that token ids can be shown as text.
enum Loaded {
    Internvl(Box<InternVlModel>),
    Other(Box<dyn Model>),
}

impl Loaded {
    fn model(&mut self) -> &mut dyn Model {
        match self {
            Loaded::Internvl(m) => m.as_mut(),
            Loaded::Other(m) => m.as_mut(),
        }
    }

    fn token_text(&self, id: u32) -> Option<String> {
        match self {
            Loaded::Internvl(m) => m.text().decode(&[id], false).ok(),
            Loaded::Other(_) => None,
        }
    }
}

struct Served {
    name: String,
    model: Mutex<Loaded>,
    counter: AtomicU64,
}

fn load(args: &ServeArgs, baselines_dir: Option<&Path>) -> anyhow::Result<(String, Loaded)> {
    let loaded = model_manifest::resolve(&args.model, baselines_dir)?;
    let m = &loaded.manifest;
    let model = match m.kind {
        ModelKind::Random => Loaded::Other(Box::new(faceval_models::RandomModel)),
        ModelKind::Majority => {
            let label = args.majority_label.clone().ok_or_else(|| {
                input_error(
                    "--model majority needs --majority-label: a server has no reference split to count",
                )
            })?;
            Loaded::Other(Box::new(faceval_models::MajorityModel::new(label)))
        }
        // InternVL is kept concrete: the server reports its tokens' text in logprobs.
        ModelKind::Internvl => Loaded::Internvl(Box::new(crate::commands::load_internvl(
            &m.name,
            &m.source,
            &args.device,
            &m.dtype,
        )?)),
        ModelKind::Openai => {
            return Err(input_error(format!(
                "model {} is already served over HTTP at {}; point clients there",
                m.name, m.base_url
            )))
        }
        // Every other local kind loads the way `faceval run` loads it.
        #[allow(unreachable_patterns)]
        _ => match crate::commands::instantiate_on(&loaded, &args.device, None)?.0 {
            ModelHandle::Loaded(model) => Loaded::Other(model),
            ModelHandle::Majority => {
                return Err(input_error("majority needs --majority-label (see above)"))
            }
        },
    };
    Ok((
        args.served_model_name
            .clone()
            .unwrap_or_else(|| m.name.clone()),
        model,
    ))
}

pub fn serve(args: ServeArgs, baselines_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (name, model) = load(&args, baselines_dir)?;
    let addr = format!("{}:{}", args.host, args.port);
    let server = tiny_http::Server::http(&addr)
        .map_err(|e| input_error(format!("cannot listen on {addr}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("the server is not on an IP address"))?;
    let server = Arc::new(server);
    let served = Arc::new(Served {
        name,
        model: Mutex::new(model),
        counter: AtomicU64::new(0),
    });
    // Tests and scripts read this line to learn the port.
    println!("listening on http://{bound}");
    eprintln!(
        "serving {} at http://{bound}/v1 (Ctrl-C stops)",
        served.name
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let workers: Vec<_> = (0..args.http_threads.max(1))
        .map(|_| {
            let server = Arc::clone(&server);
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(request, &served);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(ExitCode::SUCCESS)
}

fn json_response(status: u16, body: &Value) -> tiny_http::Response<Cursor> {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .expect("static header is valid");
    tiny_http::Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(header)
}

type Cursor = std::io::Cursor<Vec<u8>>;

/// An OpenAI-style error body.
fn error_body(status: u16, message: &str) -> Value {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json!({"error": {"message": message, "type": kind, "code": status}})
}

fn handle(mut request: tiny_http::Request, served: &Served) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let (status, body) = match (&method, path.trim_end_matches('/')) {
        (tiny_http::Method::Get, "/v1/models") => (
            200,
            json!({"object": "list", "data": [{"id": served.name, "object": "model", "created": 0, "owned_by": "faceval"}]}),
        ),
        (tiny_http::Method::Get, "/health") => (200, json!({"status": "ok"})),
        (tiny_http::Method::Post, "/v1/chat/completions") => {
            let mut text = String::new();
            match request
                .as_reader()
                .take(MAX_BODY_BYTES + 1)
                .read_to_string(&mut text)
            {
                Err(e) => (400, error_body(400, &format!("cannot read the request body: {e}"))),
                Ok(n) if n as u64 > MAX_BODY_BYTES => (
                    413,
                    error_body(413, &format!("request body over {MAX_BODY_BYTES} bytes")),
                ),
                Ok(_) => match chat(&text, served) {
                    Ok(v) => (200, v),
                    Err((code, msg)) => (code, error_body(code, &msg)),
                },
            }
        }
        _ => (
            404,
            error_body(404, &format!("no route {method} {path}: this server has POST /v1/chat/completions, GET /v1/models, GET /health")),
        ),
    };
    // A client that hung up cannot be told anything.
    let _ = request.respond(json_response(status, &body));
}

type HttpError = (u16, String);

fn bad(msg: impl Into<String>) -> HttpError {
    (400, msg.into())
}

/// The parts of a chat request faceval acts on.
#[derive(Debug)]
struct ChatRequest {
    images: Vec<Arc<image::DynamicImage>>,
    text: String,
    max_tokens: usize,
    stop: Vec<String>,
    seed: u64,
    logprobs: bool,
    top_logprobs: usize,
    token_ids: bool,
}

fn parse_chat(body: &str, served_name: &str) -> Result<ChatRequest, HttpError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    if let Some(model) = v.get("model").and_then(Value::as_str) {
        if model != served_name {
            return Err((
                404,
                format!("The model `{model}` does not exist; this server serves `{served_name}`"),
            ));
        }
    }
    if v.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(bad("stream = true is not supported by faceval serve"));
    }
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
                        images.push(Arc::new(
                            decode_image_url(url).map_err(|m| bad(format!("content[{i}]: {m}")))?,
                        ));
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
    let max_tokens = v
        .get("max_completion_tokens")
        .or_else(|| v.get("max_tokens"))
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .unwrap_or(DEFAULT_MAX_TOKENS);
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
    })
}

/// `data:<mime>;base64,<bytes>` or `file://<path>` → decoded image. Remote URLs are refused:
/// the server never fetches from the network.
fn decode_image_url(url: &str) -> Result<image::DynamicImage, String> {
    let bytes = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or("a data URL needs a comma before its payload")?;
        if !meta.ends_with(";base64") {
            return Err("only base64 data URLs are supported".into());
        }
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("bad base64 in data URL: {e}"))?
    } else if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        std::fs::read(&path).map_err(|e| format!("{}: cannot read image: {e}", path.display()))?
    } else {
        return Err(format!(
            "image URL {:?}: only data: and file:// URLs are served (no network fetches)",
            url.chars().take(40).collect::<String>()
        ));
    };
    faceval_models::image_io::decode(&bytes).map_err(|e| format!("not a decodable image: {e:#}"))
}

fn chat(body: &str, served: &Served) -> Result<Value, HttpError> {
    let req = parse_chat(body, &served.name)?;
    let request = Request {
        images: req.images.clone(),
        prompt: req.text.clone(),
        max_new_tokens: req.max_tokens,
        stop: req.stop.clone(),
        choices: vec![],
        choice_texts: vec![],
        seed: req.seed,
    };
    // One request at a time on the model; a panic in it must not take the server down.
    let mut guard = served.model.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| guard.model().generate(&request)));
    let g: Generation = match outcome {
        Ok(Ok(g)) => g,
        // Model errors are about this input (too long, unreadable image…): a retry would fail again.
        Ok(Err(e)) => return Err(bad(format!("the model could not answer: {e:#}"))),
        Err(_) => return Err((500, "the model panicked on this request".into())),
    };
    let token_text = |id: u32| -> String {
        if req.token_ids {
            format!("token_id:{id}")
        } else {
            guard.token_text(id).unwrap_or_default()
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
    drop(guard);
    let completion_tokens = g.token_ids.len();
    let finish = if completion_tokens >= req.max_tokens && completion_tokens > 0 {
        "length"
    } else {
        "stop"
    };
    let n = served.counter.fetch_add(1, Ordering::Relaxed);
    Ok(json!({
        "id": format!("chatcmpl-faceval-{n}"),
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "model": served.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": g.text},
            "logprobs": logprobs,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": g.prompt_tokens + completion_tokens,
        },
    }))
}

/// The client for a `kind = "openai"` manifest, probed and ready. Any failure is an input
/// error (exit 2): at this point it is always the address, key or model named in the manifest.
pub fn connect_openai(m: &ModelManifest) -> anyhow::Result<OpenAiModel> {
    let api_model = if m.api_model.is_empty() {
        &m.name
    } else {
        &m.api_model
    };
    let mut cfg = OpenAiConfig::new(&m.name, &m.base_url, api_model);
    if !m.api_key_env.is_empty() {
        let key = std::env::var(&m.api_key_env).map_err(|_| {
            input_error(format!(
                "model {}: api_key_env names {}, which is not set",
                m.name, m.api_key_env
            ))
        })?;
        cfg.api_key = Some(key);
    }
    if let Some(t) = m.timeout_s {
        if !(t.is_finite() && t > 0.0) {
            return Err(input_error(format!(
                "model {}: timeout_s must be a positive number of seconds",
                m.name
            )));
        }
        cfg.timeout = Duration::from_secs_f64(t);
        cfg.connect_timeout = cfg.connect_timeout.min(cfg.timeout);
    }
    if let Some(r) = m.max_retries {
        cfg.max_retries = r;
    }
    if let Some(c) = m.max_concurrency {
        cfg.max_concurrency = c.max(1);
    }
    match m.cache_dir.as_str() {
        "" => {}
        "off" | "none" => cfg.cache_dir = None,
        dir => cfg.cache_dir = Some(PathBuf::from(dir)),
    }
    cfg.report_on_drop = true;
    OpenAiModel::connect(cfg).map_err(|e| input_error(format!("model {}: {e:#}", m.name)))
}
