//! `faceval serve`'s request parsing (private to the binary) fuzzed over HTTP: a real
//! `faceval serve --model majority` on 127.0.0.1 gets mutated chat-completion bodies and mutated
//! raw HTTP requests.
//!
//! Failures: a 5xx other than 503 (the server turns a panic into a 500), no answer within
//! `ANSWER` (a hang), the server process dying, and — for bodies sent with valid HTTP framing —
//! a connection closed without a response. A raw request that is not HTTP may be dropped.
//!
//! The binary is `$FACEVAL_BIN`, else `<target dir>/debug/faceval`: `cargo test --workspace`
//! builds it (the CLI's own tests need it); scripts/fuzz.sh builds it before fuzzing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use faceval_fuzz::{committed_seeds, fuzz, repo_root, Kind};

/// Longer than the server's own --read-timeout, shorter than the fuzzer's hang limit.
const ANSWER: Duration = Duration::from_secs(8);

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FACEVAL_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let p = target.join("debug/faceval");
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build -p faceval) or set FACEVAL_BIN",
        p.display()
    );
    p
}

/// A `faceval serve --model majority` child (answers every request, so the 200 path and
/// streaming are reached too), killed on drop.
struct Server {
    child: Child,
    port: u16,
    files: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let files = tempfile::tempdir().expect("tempdir");
        let mut png = std::io::Cursor::new(Vec::new());
        image::RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]))
            .write_to(&mut png, image::ImageFormat::Png)
            .expect("png");
        std::fs::write(files.path().join("face.png"), png.into_inner()).expect("write");
        std::fs::write(
            files.path().join("broken.png"),
            b"\x89PNG\r\n\x1a\nnot really",
        )
        .expect("write");
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--model",
                "majority",
                "--majority-label",
                "B",
                "--port",
                "0",
            ])
            .args(["--read-timeout", "2", "--write-timeout", "5"])
            .arg("--allow-files")
            .arg(files.path())
            .env_remove("FACEVAL_SERVE_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start faceval serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.rsplit(':').next().and_then(|p| p.parse().ok()));
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                panic!("faceval serve did not print its address within 60 s");
            }
        };
        Server { child, port, files }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends raw bytes and reads one response (or until the server closes); `None` when the
    /// server closed without sending a byte. The write side stays open: the server (hyper,
    /// without half-close support) drops a connection whose client shut down its writes.
    fn exchange(&self, request: &[u8]) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(ANSWER)).expect("timeout");
        s.set_write_timeout(Some(ANSWER)).expect("timeout");
        // The server may answer (413, 400) and close before reading all of a large request.
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        while !complete(&out) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "no complete answer within {ANSWER:?} ({} bytes received)",
                        out.len()
                    );
                }
                // Reset after an early answer: what arrived is the answer.
                Err(_) => break,
            }
        }
        let _ = s.shutdown(Shutdown::Both);
        (!out.is_empty()).then_some(out)
    }
}

/// Whether `r` holds a whole HTTP response: headers plus a Content-Length body, or a chunked
/// body up to its last chunk. Other responses end when the server closes.
fn complete(r: &[u8]) -> bool {
    let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
    let body = &r[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Answers seen, by status ("none": closed without a response), printed after each target
/// to show how deep the inputs reach (200s and 4xx beyond "not JSON").
static STATUSES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn print_statuses(target: &str) {
    let mut m = STATUSES.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("{target}: answers by HTTP status {m:?}");
    m.clear();
}

fn post(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Checks one answer; panics (a fuzz failure) on a server error, a hang or a dead server.
fn check(server: &mut Option<Server>, request: &[u8], framed: bool) {
    if !server.as_mut().is_some_and(Server::alive) {
        *server = Some(Server::start());
    }
    let s = server.as_mut().expect("started");
    let dir = s.files.path().display().to_string();
    let request: Vec<u8> = String::from_utf8_lossy(request)
        .replace("ALLOWED_DIR", &dir)
        .into_bytes();
    let answer = s.exchange(&request);
    let code = answer.as_deref().and_then(status);
    *STATUSES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(code.map_or("none".into(), |c| c.to_string()))
        .or_default() += 1;
    if !s.alive() {
        let code = s.child.wait().ok();
        panic!("faceval serve died on this request (exit {code:?})");
    }
    match answer.as_deref().map(status) {
        Some(Some(code)) if code >= 500 && code != 503 => panic!(
            "faceval serve answered {code}: {}",
            String::from_utf8_lossy(answer.as_deref().unwrap_or_default())
        ),
        Some(Some(_)) => {}
        Some(None) if framed => panic!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&answer.unwrap_or_default()[..])
        ),
        None if framed => panic!("the connection closed without a response"),
        _ => {}
    }
}

/// Mutated JSON bodies in well-formed POSTs: reach `parse_chat` and the answer path.
#[test]
fn serve_body() {
    let mut server: Option<Server> = None;
    fuzz(
        "serve_body",
        Kind::Json,
        committed_seeds("serve"),
        40,
        |input| check(&mut server, &post(input), true),
    );
    print_statuses("serve_body");
}

/// Mutated raw requests: request line, headers, framing (Content-Length, chunked) and body.
#[test]
fn serve_raw() {
    let mut seeds: Vec<Vec<u8>> = committed_seeds("serve").iter().map(|b| post(b)).collect();
    seeds.push(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec());
    seeds.push(b"GET /health HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost\r\nConnection: close\r\n\r\n".to_vec());
    seeds.push(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n{\"messages\":[{\"\r\n2c\r\nrole\":\"user\",\"content\":\"hi\"}],\"seed\":1}  \r\n0\r\n\r\n"
            .to_vec(),
    );
    let mut server: Option<Server> = None;
    fuzz("serve_raw", Kind::Text, seeds, 20, |input| {
        check(&mut server, input, false)
    });
    print_statuses("serve_raw");
}
