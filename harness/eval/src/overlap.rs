//! Train/benchmark overlap: which benchmark images are copies of reference (training) images.
//!
//! FaceLLM was trained on FairFaceGPT, built from FairFace's validation images, and FaceXBench
//! draws its age, gender and race questions from FairFace under new file names. Whether a
//! benchmark question shows a training image cannot be read from names, only from pixels.
//!
//! Every image is decoded with the decoder runs use ([`faceval_models::image_io`]) and given
//! two fingerprints ([`Fingerprint`]):
//! - the sha256 of its decoded RGB pixels (and size): equal pixels are an **exact** match,
//!   whatever the file name or container (a JPEG saved again as PNG is exact);
//! - a 256-bit perceptual hash (DCT of a 16×16 grey thumbnail, each coefficient against the
//!   mean; `image_hasher`): a Hamming distance up to [`DEFAULT_MAX_DISTANCE`] is a **near**
//!   match, which survives JPEG re-encoding, resizing by ±10% and PNG↔JPEG conversion.
//!
//! [`find`] compares every benchmark image with every reference image (a popcount per pair:
//! 10,954 FairFace images × 5,000 questions is 55 M comparisons, well under a second) and
//! keeps each benchmark image's closest reference. Mirrored or re-cropped copies are not
//! found: they are different pixels to a model too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use image_hasher::{HashAlg, HasherConfig, ImageHash};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Near-match threshold: Hamming distance over the 256-bit hash. Measured on the committed
/// fixtures (harness/eval/tests/fixtures/overlap): JPEG re-encodings, PNG↔JPEG and ±10%
/// resizes land at 0–1; the closest different image (another face drawn by the same routine)
/// at 24, a mirror at 69, another crop at 90. 10 leaves room for harsher re-encodings on the
/// copy side and keeps well clear of look-alikes.
pub const DEFAULT_MAX_DISTANCE: u32 = 10;

/// How an image's hash is computed, recorded in the output so that files stay comparable.
pub const HASH_DESCRIPTION: &str =
    "image_hasher 3: DCT preprocessing, mean, 16x16 (256 bits), of image_io's decoded RGB";

/// The two fingerprints of one decoded image.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// sha256 of width, height and the RGB bytes.
    pub pixels_sha256: [u8; 32],
    pub perceptual: ImageHash,
}

fn hasher() -> image_hasher::Hasher {
    HasherConfig::new()
        .hash_size(16, 16)
        .hash_alg(HashAlg::Mean)
        .preproc_dct()
        .to_hasher()
}

/// Decode one image file as runs do and fingerprint it.
pub fn fingerprint(path: &Path) -> Result<Fingerprint> {
    let img = faceval_models::image_io::open(path)?.into_rgb8();
    let mut sha = Sha256::new();
    sha.update(img.width().to_le_bytes());
    sha.update(img.height().to_le_bytes());
    sha.update(img.as_raw());
    Ok(Fingerprint {
        pixels_sha256: sha.finalize().into(),
        perceptual: hasher().hash_image(&img),
    })
}

/// Fingerprints of many files, in parallel; `tick` is called once per file (a progress bar).
/// Files that do not decode are returned apart, with their error.
pub fn fingerprint_all(
    paths: &[PathBuf],
    tick: &(dyn Fn() + Sync),
) -> (Vec<(PathBuf, Fingerprint)>, Vec<Unreadable>) {
    let results: Vec<_> = paths
        .par_iter()
        .map(|p| {
            let r = fingerprint(p);
            tick();
            (p.clone(), r)
        })
        .collect();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (path, r) in results {
        match r {
            Ok(f) => ok.push((path, f)),
            Err(e) => bad.push(Unreadable {
                path: path.display().to_string(),
                message: format!("{e:#}"),
            }),
        }
    }
    (ok, bad)
}

/// One benchmark image to look for: the task and item that show it.
#[derive(Debug, Clone)]
pub struct BenchmarkImage {
    pub task: String,
    pub item_id: String,
    pub path: PathBuf,
}

/// Exact (same decoded pixels) or near (perceptual hash within the threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    Exact,
    Near,
}

/// A benchmark image found in the reference set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlapRecord {
    pub task: String,
    pub item_id: String,
    pub image: String,
    pub reference: String,
    pub kind: MatchKind,
    /// Hamming distance of the perceptual hashes (0 for most exact matches).
    pub distance: u32,
}

/// A file that could not be decoded (counted, never silently skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unreadable {
    pub path: String,
    pub message: String,
}

/// Per task: how many items and images were checked and how many matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOverlap {
    pub items: usize,
    /// Items with at least one matched image.
    pub matched_items: usize,
    pub images: usize,
    pub exact: usize,
    pub near: usize,
}

/// The whole result, written as `overlap.json` (docs/overlap.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlapReport {
    pub reference: String,
    pub reference_images: usize,
    pub hash: String,
    pub max_distance: u32,
    pub summary: BTreeMap<String, TaskOverlap>,
    pub matches: Vec<OverlapRecord>,
    pub unreadable: Vec<Unreadable>,
}

impl OverlapReport {
    /// The `(task, item id)` pairs that show a reference image: the contaminated slice.
    pub fn matched_items(&self) -> std::collections::BTreeSet<(String, String)> {
        self.matches
            .iter()
            .map(|m| (m.task.clone(), m.item_id.clone()))
            .collect()
    }
}

/// Read an `overlap.json` written by `faceval overlap`; errors (input errors, exit 2) name the
/// file and, for malformed JSON, the line and column.
pub fn read(path: &Path) -> Result<OverlapReport> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::error::input_error(format!(
            "--overlap {}: cannot read it: {e} (write it with `faceval overlap ... --out {}`)",
            path.display(),
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        crate::error::input_error(format!(
            "--overlap {}: not an overlap.json written by `faceval overlap`: {e}",
            path.display()
        ))
    })
}

/// Each benchmark image's closest reference: exact if the pixels are equal, else near if the
/// hash distance is at most `max_distance` (ties go to the first reference in path order).
pub fn find(
    reference: &[(PathBuf, Fingerprint)],
    benchmark: &[(BenchmarkImage, Fingerprint)],
    max_distance: u32,
) -> Vec<OverlapRecord> {
    let by_pixels: BTreeMap<[u8; 32], &PathBuf> = reference
        .iter()
        .rev()
        .map(|(p, f)| (f.pixels_sha256, p))
        .collect();
    benchmark
        .par_iter()
        .filter_map(|(img, f)| {
            let (reference, kind, distance) = match by_pixels.get(&f.pixels_sha256) {
                Some(p) => {
                    let d = reference
                        .iter()
                        .find(|(q, _)| q == *p)
                        .map(|(_, rf)| rf.perceptual.dist(&f.perceptual))
                        .unwrap_or(0);
                    ((*p).clone(), MatchKind::Exact, d)
                }
                None => {
                    let (p, d) = reference
                        .iter()
                        .map(|(p, rf)| (p, rf.perceptual.dist(&f.perceptual)))
                        .min_by_key(|(_, d)| *d)?;
                    if d > max_distance {
                        return None;
                    }
                    (p.clone(), MatchKind::Near, d)
                }
            };
            Some(OverlapRecord {
                task: img.task.clone(),
                item_id: img.item_id.clone(),
                image: img.path.display().to_string(),
                reference: reference.display().to_string(),
                kind,
                distance,
            })
        })
        .collect()
}

/// Per-task counts over the checked images and their matches.
pub fn summarize(
    benchmark: &[BenchmarkImage],
    matches: &[OverlapRecord],
) -> BTreeMap<String, TaskOverlap> {
    let mut out: BTreeMap<String, TaskOverlap> = BTreeMap::new();
    let mut items: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for b in benchmark {
        out.entry(b.task.clone())
            .or_insert(TaskOverlap {
                items: 0,
                matched_items: 0,
                images: 0,
                exact: 0,
                near: 0,
            })
            .images += 1;
        items.entry(&b.task).or_default().insert(&b.item_id);
    }
    for (task, ids) in &items {
        out.get_mut(*task).unwrap().items = ids.len();
    }
    let mut matched: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for m in matches {
        let t = out.get_mut(&m.task).expect("a match's task was checked");
        match m.kind {
            MatchKind::Exact => t.exact += 1,
            MatchKind::Near => t.near += 1,
        }
        matched.entry(&m.task).or_default().insert(&m.item_id);
    }
    for (task, ids) in matched {
        out.get_mut(task).unwrap().matched_items = ids.len();
    }
    out
}

/// Every image file under `dir`, as the folder readers find them; errors name the folder.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    crate::datasets::image_files(dir)
        .map_err(|e| anyhow::anyhow!("cannot read folder {}: {e}", dir.display()))
}
