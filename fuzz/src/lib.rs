//! A small mutation fuzzer for faceval's parsers that runs on stable Rust inside `cargo test`.
//!
//! Each target (see `tests/`) hands [`fuzz`] its seeds (real fixture files of the repository)
//! and a closure that feeds one input to a parser. Every case is a seed changed by a stack of
//! mutations: byte-level ones for any input, plus structure-aware ones for JSON and TOML (the
//! seed is parsed, a node is changed, the document written back). The random choices are
//! decoded from ChaCha bytes by `arbitrary`'s [`Unstructured`], so a case is reproducible from
//! the run seed and its number.
//!
//! Failures: a panic is caught with `catch_unwind`; a case that runs longer than the hang limit
//! is caught by a watchdog thread, which saves the input and ends the process. Either way the
//! input is written under the crash folder and its path printed. Inputs committed under
//! `fuzz/regressions/<target>/` are replayed on every run.
//!
//! Modes (environment):
//! - default: the seeds, the regression inputs and `default_cases` generated cases from a fixed
//!   seed (deterministic, a few seconds for all targets: what `cargo test --workspace` runs);
//! - `FACEVAL_FUZZ_SECONDS=S`: generated cases for S seconds per target, from a fresh seed;
//! - `FACEVAL_FUZZ_CASES=N`: N generated cases per target (overrides the default count);
//! - `FACEVAL_FUZZ_SEED=U64`: the run seed (printed by every run, to replay one);
//! - `FACEVAL_FUZZ_HANG_SECONDS` (default 10), `FACEVAL_FUZZ_CRASHES` (the crash folder);
//! - `FACEVAL_FUZZ_REPORT=FILE`: one line per target appended there (scripts/fuzz.sh).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

pub mod mutate;

/// How a target's inputs are shaped, which picks the structure-aware mutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Binary (images, safetensors): byte mutations only.
    Bytes,
    /// Line-oriented text (CSV, label lists, JSONL, templates, HTTP).
    Text,
    /// One JSON document.
    Json,
    /// One TOML document.
    Toml,
}

/// The repository root (the fuzz crate lives in `<root>/fuzz`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

/// Every file under `dir` (sorted, recursive), read whole.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// The seed files committed for `target` under `fuzz/seeds/<target>/`.
pub fn committed_seeds(target: &str) -> Vec<Vec<u8>> {
    files_under(&repo_root().join("fuzz/seeds").join(target))
        .into_iter()
        .map(|(_, b)| b)
        .collect()
}

/// Repository files by path relative to the root; a missing one fails the test (a moved
/// fixture must be followed here, not silently dropped from the corpus).
pub fn repo_files(paths: &[&str]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(repo_root().join(p))
                .unwrap_or_else(|e| panic!("seed {p} is missing from the repository: {e}"))
        })
        .collect()
}

struct Config {
    seconds: Option<f64>,
    cases: Option<u64>,
    seed: u64,
    hang: Duration,
    crashes: PathBuf,
    report: Option<PathBuf>,
}

impl Config {
    fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let seconds = var("FACEVAL_FUZZ_SECONDS").map(|v| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("FACEVAL_FUZZ_SECONDS={v} is not a number"))
        });
        let cases = var("FACEVAL_FUZZ_CASES").map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("FACEVAL_FUZZ_CASES={v} is not a count"))
        });
        // The default mode is deterministic (CI); a timed run explores from a fresh seed.
        let seed = match var("FACEVAL_FUZZ_SEED") {
            Some(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("FACEVAL_FUZZ_SEED={v} is not a u64")),
            None if seconds.is_some() => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
            None => 0xface_5eed,
        };
        let hang = var("FACEVAL_FUZZ_HANG_SECONDS")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(10.0);
        let crashes = var("FACEVAL_FUZZ_CRASHES")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/fuzz-crashes"));
        Config {
            seconds,
            cases,
            seed,
            hang: Duration::from_secs_f64(hang),
            crashes,
            report: var("FACEVAL_FUZZ_REPORT").map(PathBuf::from),
        }
    }
}

/// The case a target is running, watched for hangs.
struct Slot {
    target: String,
    started: Option<Instant>,
    input: Vec<u8>,
    crash_dir: PathBuf,
    limit: Duration,
}

fn slots() -> &'static Mutex<Vec<Arc<Mutex<Slot>>>> {
    static SLOTS: OnceLock<Mutex<Vec<Arc<Mutex<Slot>>>>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        // One watchdog for the process: a hung parser cannot be interrupted, so the input is
        // saved and the process ends (the test run fails) rather than waiting forever.
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(250));
            let all: Vec<_> = slots().lock().unwrap_or_else(|p| p.into_inner()).clone();
            for slot in all {
                // try_lock: the slot is only held briefly by its target between cases.
                let Ok(s) = slot.try_lock() else { continue };
                if let Some(t) = s.started {
                    if t.elapsed() > s.limit {
                        let path = save(&s.crash_dir, &s.target, "hang", &s.input);
                        eprintln!(
                            "FUZZ HANG in target {}: one case ran over {:?}; input saved to {}",
                            s.target,
                            s.limit,
                            path.display()
                        );
                        std::process::exit(70);
                    }
                }
            }
        });
        Mutex::new(Vec::new())
    })
}

fn save(dir: &Path, target: &str, what: &str, input: &[u8]) -> PathBuf {
    let dir = dir.join(target);
    let _ = std::fs::create_dir_all(&dir);
    let hash = hex::encode(&Sha256::digest(input)[..8]);
    let path = dir.join(format!("{what}-{hash}"));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("cannot save the failing input to {}: {e}", path.display());
    }
    path
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}

/// What one target did, as printed and reported.
#[derive(Debug, Clone)]
pub struct Summary {
    pub target: String,
    pub seed: u64,
    /// Seeds and committed regression inputs replayed.
    pub replayed: u64,
    /// Generated cases run.
    pub cases: u64,
    pub seconds: f64,
    pub crashes: Vec<PathBuf>,
}

/// Stop a target after this many panicking inputs: they are usually one bug.
const MAX_CRASHES: usize = 8;

/// Fuzz one target: replay `seeds` and `fuzz/regressions/<target>/*`, then run generated
/// cases (see the module docs for how many); panics at the end, listing the saved inputs, if
/// any case panicked. `run` feeds one input to the parser and must not panic itself for
/// parser errors: it returns normally whatever the parser answered.
pub fn fuzz(
    target: &str,
    kind: Kind,
    seeds: Vec<Vec<u8>>,
    default_cases: u64,
    mut run: impl FnMut(&[u8]),
) -> Summary {
    assert!(!seeds.is_empty(), "target {target} has no seeds");
    let cfg = Config::from_env();
    let slot = Arc::new(Mutex::new(Slot {
        target: target.to_string(),
        started: None,
        input: Vec::new(),
        crash_dir: cfg.crashes.clone(),
        limit: cfg.hang,
    }));
    slots()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::clone(&slot));
    let mut crashes = Vec::new();
    let current = cfg.seconds.map(|_| {
        let dir = cfg.crashes.join(target);
        let _ = std::fs::create_dir_all(&dir);
        dir.join("current")
    });
    let mut one = |input: &[u8], crashes: &mut Vec<PathBuf>| {
        {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            s.input.clear();
            s.input.extend_from_slice(input);
            s.started = Some(Instant::now());
        }
        // A stack overflow aborts the process past catch_unwind and the watchdog; in timed
        // runs each input is written first, so the one that killed the process is on disk.
        if let Some(current) = &current {
            let _ = std::fs::write(current, input);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| run(input)));
        slot.lock().unwrap_or_else(|p| p.into_inner()).started = None;
        if let Err(p) = outcome {
            let path = save(&cfg.crashes, target, "crash", input);
            eprintln!(
                "FUZZ CRASH in target {target}: {}; input saved to {}",
                panic_message(&*p),
                path.display()
            );
            if !crashes.contains(&path) {
                crashes.push(path);
            }
        }
    };

    let start = Instant::now();
    let mut replayed = 0;
    for s in &seeds {
        one(s, &mut crashes);
        replayed += 1;
    }
    for (_, input) in files_under(&repo_root().join("fuzz/regressions").join(target)) {
        one(&input, &mut crashes);
        replayed += 1;
    }

    let dict = mutate::Dictionary::new(kind, &seeds);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ fnv(target));
    let mut entropy = vec![0u8; 4096];
    let deadline = cfg.seconds.map(|s| start + Duration::from_secs_f64(s));
    let limit = match (cfg.cases, deadline) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => default_cases,
    };
    let mut cases = 0;
    while cases < limit && crashes.len() < MAX_CRASHES {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        rng.fill_bytes(&mut entropy);
        let mut u = Unstructured::new(&entropy);
        let input = mutate::case(&mut u, kind, &seeds, &dict);
        one(&input, &mut crashes);
        cases += 1;
    }
    let summary = Summary {
        target: target.to_string(),
        seed: cfg.seed,
        replayed,
        cases,
        seconds: start.elapsed().as_secs_f64(),
        crashes,
    };
    slots()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| !Arc::ptr_eq(s, &slot));
    let line = format!(
        "fuzz target={} seed={} replayed={} cases={} seconds={:.1} rate={:.0}/s crashes={}",
        summary.target,
        summary.seed,
        summary.replayed,
        summary.cases,
        summary.seconds,
        summary.cases as f64 / summary.seconds.max(1e-9),
        summary.crashes.len()
    );
    eprintln!("{line}");
    if let Some(report) = &cfg.report {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(report)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    assert!(
        summary.crashes.is_empty(),
        "target {target}: {} panicking input(s) (seed {}), saved to:\n{}",
        summary.crashes.len(),
        summary.seed,
        summary
            .crashes
            .iter()
            .map(|p| format!("  {}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    summary
}

/// FNV-1a: gives each target its own stream from one run seed.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
