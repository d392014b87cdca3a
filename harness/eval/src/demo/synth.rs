//! A synthetic face dataset for `faceval demo`: cartoon faces drawn from a seed, with labels
//! that the drawing actually shows, so every task can run without downloading anything.
//!
//! [`generate`] writes into `out_dir`:
//!
//! - `images/face_00000.png`, ...: 160×160 RGB PNGs, one face each;
//! - `manifest.csv`: one row per image, in the generic manifest format, columns
//!   [`MANIFEST_COLUMNS`]:
//!
//!   | column | values | what the image shows |
//!   |---|---|---|
//!   | `image` | `images/face_00000.png`, relative to the manifest | |
//!   | `expression` | RAF-DB's seven basic emotions, lowercase: `surprise`, `fear`, `disgust`, `happiness`, `sadness`, `anger`, `neutral` | mouth shape (smile, frown, "O", stretched, sneer, pressed), brow angle, eye openness, expression lines |
//!   | `yaw` | degrees in [-60, 60], one decimal; positive turns the face toward the image's right (the subject's left) | features shift sideways on a 3-D head, the face narrows, one ear hides |
//!   | `pitch` | degrees in [-30, 30], one decimal; positive looks up | features shift up or down |
//!   | `roll` | degrees in [-30, 30], one decimal; positive tilts the head clockwise in the image | the whole head rotates |
//!   | `skin_tone` | `tone_1` (lightest) .. `tone_6` (darkest), a Fitzpatrick-like scale | skin colour |
//!   | `race` | FairFace's seven group names (`East Asian`, `Indian`, `Black`, `White`, `Middle Eastern`, `Latino_Hispanic`, `Southeast Asian`) | **nothing**: the label is assigned at random, independent of the drawing, so a model should score at chance (1/7) and the race task only exercises the pipeline |
//!   | `gender` | `Male`, `Female` (FairFace spelling) | hair length (short, buzz, curly vs long, bob); some adult men have stubble |
//!   | `age` | whole years, 1..=90 | head and feature proportions (children: rounder, bigger head, lower eyes), wrinkles from 40, grey hair from 45 |
//!   | `age_bin` | FairFace's nine bins `0-2` .. `60-69`, `more than 70` (70 and up) | |
//!   | `manipulated` | `real`, `manipulated` | manipulated faces carry a visible artefact over the eyes, mouth or a cheek |
//!   | `manipulation` | `none`, `colour_shift`, `blur_patch`, `flip_patch` | a colour-shifted patch, a blurred patch with a hard seam, or an upside-down pasted patch |
//!   | `identity` | `id_0000`, ...; four images per identity | identities share skin tone, gender, race, age, hair, eye colour and face shape |
//!
//! - `synth.json`: the generator version, seed and image count.
//!
//! Every categorical column is balanced to within one identity or image (shuffled round-robin),
//! so at `n = 400` every group of every column has at least 40 images. The same seed gives the
//! same labels everywhere and byte-identical PNGs on the same platform and build (drawing uses
//! floating point, whose last bits may differ between platforms).

use std::path::{Path, PathBuf};

use anyhow::Context;
use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::input_error;

/// Bumped whenever the same seed would draw different data.
pub const GENERATOR_VERSION: u32 = 1;

/// Side of the written images, in pixels.
pub const IMAGE_SIZE: u32 = 160;

/// Faces are drawn at this multiple of [`IMAGE_SIZE`] and downsampled, which anti-aliases edges.
const SUPERSAMPLE: u32 = 2;

/// Images that share one synthetic identity (the last identity may have fewer).
pub const IMAGES_PER_IDENTITY: usize = 4;

/// The manifest's columns, in order.
pub const MANIFEST_COLUMNS: [&str; 13] = [
    "image",
    "expression",
    "yaw",
    "pitch",
    "roll",
    "skin_tone",
    "race",
    "gender",
    "age",
    "age_bin",
    "manipulated",
    "manipulation",
    "identity",
];

/// RAF-DB basic emotions in RAF-DB's label order (1..=7), lowercase canonical names.
pub const EXPRESSIONS: [&str; 7] = [
    "surprise",
    "fear",
    "disgust",
    "happiness",
    "sadness",
    "anger",
    "neutral",
];

/// FairFace race groups.
pub const RACES: [&str; 7] = crate::datasets::FAIRFACE_RACES;

/// FairFace gender labels.
pub const GENDERS: [&str; 2] = crate::datasets::FAIRFACE_GENDERS;

/// FairFace age bins.
pub const AGE_BINS: [&str; 9] = crate::datasets::FAIRFACE_AGE_BINS;

/// Inclusive age range in years drawn for each of [`AGE_BINS`].
const AGE_RANGES: [(u32, u32); 9] = [
    (1, 2),
    (3, 9),
    (10, 19),
    (20, 29),
    (30, 39),
    (40, 49),
    (50, 59),
    (60, 69),
    (70, 90),
];

/// Skin-tone group names; the colours are [`SKIN_RGB`].
pub const SKIN_TONES: [&str; 6] = ["tone_1", "tone_2", "tone_3", "tone_4", "tone_5", "tone_6"];

const SKIN_RGB: [[u8; 3]; 6] = [
    [246, 221, 200],
    [234, 196, 162],
    [212, 163, 122],
    [176, 124, 86],
    [128, 85, 57],
    [84, 56, 40],
];

const HAIR_RGB: [[u8; 3]; 5] = [
    [28, 24, 22],
    [68, 44, 30],
    [112, 76, 46],
    [146, 72, 38],
    [206, 172, 112],
];

const IRIS_RGB: [[u8; 3]; 4] = [[70, 45, 30], [110, 75, 40], [60, 110, 150], [80, 120, 80]];

/// The seven expressions; `as usize` indexes [`EXPRESSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expression {
    Surprise,
    Fear,
    Disgust,
    Happiness,
    Sadness,
    Anger,
    Neutral,
}

impl Expression {
    pub const ALL: [Expression; 7] = [
        Expression::Surprise,
        Expression::Fear,
        Expression::Disgust,
        Expression::Happiness,
        Expression::Sadness,
        Expression::Anger,
        Expression::Neutral,
    ];

    pub fn name(self) -> &'static str {
        EXPRESSIONS[self as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HairStyle {
    Short,
    Buzz,
    Curly,
    Long,
    Bob,
}

/// What a manipulated image has done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManipulationKind {
    /// The region's colour is shifted, with a visible seam.
    ColourShift,
    /// The region is blurred and pasted back with a hard edge.
    BlurPatch,
    /// The region is flipped upside down, brightened and blended in.
    FlipPatch,
}

impl ManipulationKind {
    pub fn name(self) -> &'static str {
        match self {
            ManipulationKind::ColourShift => "colour_shift",
            ManipulationKind::BlurPatch => "blur_patch",
            ManipulationKind::FlipPatch => "flip_patch",
        }
    }
}

/// Which part of the face a manipulation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManipulationTarget {
    Eyes,
    Mouth,
    Cheek,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Manipulation {
    pub kind: ManipulationKind,
    pub target: ManipulationTarget,
    /// Added to each channel by `ColourShift`.
    pub shift: [i16; 3],
    /// Gaussian sigma of `BlurPatch`, in output pixels.
    pub sigma: f32,
    /// Brightness gain of `FlipPatch` and `BlurPatch` (which also add a fixed lift, so the
    /// patch shows even over flat dark skin).
    pub gain: f32,
}

/// Appearance an identity keeps across its images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Look {
    pub hair_rgb: [u8; 3],
    pub hair_style: HairStyle,
    pub iris_rgb: [u8; 3],
    pub stubble: bool,
    /// Multipliers around 1 on the head's width and length and feature sizes.
    pub face_width: f64,
    pub face_length: f64,
    pub nose_width: f64,
    pub mouth_width: f64,
    pub brow_thickness: f64,
}

/// Everything [`draw_face`] needs: the labels and the appearance. Drawing is a pure function
/// of this value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceSpec {
    pub expression: Expression,
    /// Degrees, rounded to 0.1 so the manifest text is exactly what was drawn.
    pub yaw: f64,
    pub pitch: f64,
    pub roll: f64,
    /// Index into [`SKIN_TONES`].
    pub skin_tone: usize,
    /// Index into [`RACES`]; not drawn.
    pub race: usize,
    /// Index into [`GENDERS`].
    pub gender: usize,
    pub age: u32,
    pub identity: usize,
    pub manipulation: Option<Manipulation>,
    pub look: Look,
    pub background: [u8; 3],
    pub shirt: [u8; 3],
    /// Horizontal gaze offset of the irises, as a fraction of the eye's half-width.
    pub gaze: f64,
}

impl FaceSpec {
    pub fn age_bin(&self) -> &'static str {
        AGE_BINS[age_bin_index(self.age)]
    }

    /// The manifest row for this face (columns [`MANIFEST_COLUMNS`]).
    pub fn record(&self, image: &str) -> Vec<String> {
        vec![
            image.to_string(),
            self.expression.name().to_string(),
            format!("{:.1}", self.yaw),
            format!("{:.1}", self.pitch),
            format!("{:.1}", self.roll),
            SKIN_TONES[self.skin_tone].to_string(),
            RACES[self.race].to_string(),
            GENDERS[self.gender].to_string(),
            self.age.to_string(),
            self.age_bin().to_string(),
            if self.manipulation.is_some() {
                "manipulated"
            } else {
                "real"
            }
            .to_string(),
            self.manipulation
                .map_or("none", |m| m.kind.name())
                .to_string(),
            format!("id_{:04}", self.identity),
        ]
    }
}

/// The bin of [`AGE_BINS`] an age falls in; 70 and over is the last.
pub fn age_bin_index(age: u32) -> usize {
    AGE_RANGES
        .iter()
        .position(|&(_, hi)| age <= hi)
        .unwrap_or(AGE_BINS.len() - 1)
}

/// One written image and the spec it was drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRow {
    /// Path relative to the dataset folder, as written in the manifest.
    pub image: String,
    pub spec: FaceSpec,
}

impl SynthRow {
    pub fn record(&self) -> Vec<String> {
        self.spec.record(&self.image)
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct SynthDataset {
    pub root: PathBuf,
    pub manifest: PathBuf,
    /// `root` joined with each row's `image`, in manifest order.
    pub images: Vec<PathBuf>,
    pub rows: Vec<SynthRow>,
}

/// Draw `n` face specs from `seed`, without writing anything.
pub fn specs(n: usize, seed: u64) -> Vec<FaceSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let identities = n.div_ceil(IMAGES_PER_IDENTITY);

    // Identity-level groups, each balanced by a shuffled round-robin.
    let genders = balanced(&mut rng, identities, GENDERS.len());
    let tones = balanced(&mut rng, identities, SKIN_TONES.len());
    let races = balanced(&mut rng, identities, RACES.len());
    let bins = balanced(&mut rng, identities, AGE_BINS.len());
    let people: Vec<(u32, Look)> = (0..identities)
        .map(|j| {
            let (lo, hi) = AGE_RANGES[bins[j]];
            let age = rng.gen_range(lo..=hi);
            let male = genders[j] == 0;
            let styles: &[HairStyle] = if male {
                &[HairStyle::Short, HairStyle::Buzz, HairStyle::Curly]
            } else {
                &[HairStyle::Long, HairStyle::Bob]
            };
            let look = Look {
                hair_rgb: HAIR_RGB[rng.gen_range(0..HAIR_RGB.len())],
                hair_style: styles[rng.gen_range(0..styles.len())],
                iris_rgb: IRIS_RGB[rng.gen_range(0..IRIS_RGB.len())],
                stubble: male && age >= 20 && rng.gen_bool(0.35),
                face_width: rng.gen_range(0.93..1.07),
                face_length: rng.gen_range(0.94..1.06),
                nose_width: rng.gen_range(0.85..1.2),
                mouth_width: rng.gen_range(0.9..1.1),
                brow_thickness: rng.gen_range(0.8..1.3),
            };
            (age, look)
        })
        .collect();

    // Image-level assignments.
    let mut owner: Vec<usize> = (0..n).map(|i| i / IMAGES_PER_IDENTITY).collect();
    owner.shuffle(&mut rng);
    let expressions = balanced(&mut rng, n, EXPRESSIONS.len());
    let manipulated = balanced(&mut rng, n, 2);
    (0..n)
        .map(|i| {
            let j = owner[i];
            let round = |x: f64| (x * 10.0).round() / 10.0;
            let yaw = round(rng.gen_range(-60.0..=60.0));
            let pitch = round(rng.gen_range(-30.0..=30.0));
            let roll = round(rng.gen_range(-30.0..=30.0));
            let background = pastel(&mut rng);
            let shirt = [
                rng.gen_range(30..220),
                rng.gen_range(30..220),
                rng.gen_range(30..220),
            ];
            let gaze = rng.gen_range(-0.25..0.25);
            // Drawn for every image so the stream does not depend on `manipulated`.
            let kind = [
                ManipulationKind::ColourShift,
                ManipulationKind::BlurPatch,
                ManipulationKind::FlipPatch,
            ][rng.gen_range(0..3)];
            let target = [
                ManipulationTarget::Eyes,
                ManipulationTarget::Mouth,
                ManipulationTarget::Cheek,
            ][rng.gen_range(0..3)];
            let sign = |r: &mut ChaCha8Rng| if r.gen_bool(0.5) { 1i16 } else { -1 };
            let shift = [
                sign(&mut rng) * rng.gen_range(35..70),
                sign(&mut rng) * rng.gen_range(20..50),
                sign(&mut rng) * rng.gen_range(35..70),
            ];
            let sigma = rng.gen_range(1.8..3.0);
            let gain = rng.gen_range(1.1..1.25);
            let manipulation = (manipulated[i] == 1).then_some(Manipulation {
                kind,
                target,
                shift,
                sigma,
                gain,
            });
            FaceSpec {
                expression: Expression::ALL[expressions[i]],
                yaw,
                pitch,
                roll,
                skin_tone: tones[j],
                race: races[j],
                gender: genders[j],
                age: people[j].0,
                identity: j,
                manipulation,
                look: people[j].1,
                background,
                shirt,
                gaze,
            }
        })
        .collect()
}

/// `n` values in `0..k`, each appearing `n / k` or `n / k + 1` times, in shuffled order.
fn balanced(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|i| i % k).collect();
    v.shuffle(rng);
    v
}

/// A muted background colour, kept away from white so eye whites and teeth stand out.
fn pastel(rng: &mut ChaCha8Rng) -> [u8; 3] {
    let hue: f64 = rng.gen_range(0.0..6.0);
    let (sat, val) = (rng.gen_range(0.2..0.45), rng.gen_range(0.55..0.85));
    let f = hue.fract();
    let (p, q, t) = (
        val * (1.0 - sat),
        val * (1.0 - sat * f),
        val * (1.0 - sat * (1.0 - f)),
    );
    let (r, g, b) = match hue as u32 {
        0 => (val, t, p),
        1 => (q, val, p),
        2 => (p, val, t),
        3 => (p, q, val),
        4 => (t, p, val),
        _ => (val, p, q),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// Draw `n` faces from `seed` and write them, the manifest and `synth.json` into `out_dir`.
///
/// Files already in `out_dir` with other names are left alone; the manifest lists exactly the
/// images written by this call.
pub fn generate(out_dir: &Path, n: usize, seed: u64) -> anyhow::Result<SynthDataset> {
    if n == 0 {
        return Err(input_error(
            "the demo dataset needs at least one image (n = 0)",
        ));
    }
    let image_dir = out_dir.join("images");
    std::fs::create_dir_all(&image_dir).with_context(|| {
        format!(
            "{}: cannot create the demo image folder",
            image_dir.display()
        )
    })?;
    let rows: Vec<SynthRow> = specs(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, spec)| SynthRow {
            image: format!("images/face_{i:05}.png"),
            spec,
        })
        .collect();
    let images: Vec<PathBuf> = rows.iter().map(|r| out_dir.join(&r.image)).collect();
    rows.par_iter()
        .zip(images.par_iter())
        .try_for_each(|(row, path)| -> anyhow::Result<()> {
            draw_face(&row.spec)
                .save(path)
                .with_context(|| format!("{}: cannot write demo image", path.display()))
        })?;

    let manifest = out_dir.join("manifest.csv");
    let mut writer = csv::Writer::from_path(&manifest)
        .with_context(|| format!("{}: cannot create the demo manifest", manifest.display()))?;
    writer.write_record(MANIFEST_COLUMNS)?;
    for row in &rows {
        writer.write_record(row.record())?;
    }
    writer
        .flush()
        .with_context(|| format!("{}: cannot write the demo manifest", manifest.display()))?;

    let about = serde_json::json!({
        "generator": "faceval demo synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "image_size": IMAGE_SIZE,
        "columns": MANIFEST_COLUMNS,
    });
    let about_path = out_dir.join("synth.json");
    std::fs::write(&about_path, serde_json::to_string_pretty(&about)? + "\n")
        .with_context(|| format!("{}: cannot write", about_path.display()))?;

    Ok(SynthDataset {
        root: out_dir.to_path_buf(),
        manifest,
        images,
        rows,
    })
}

// ---------------------------------------------------------------------------------------------
// Drawing

type P2 = (f64, f64);

/// A supersampled canvas with a polygon filler.
///
/// We fill polygons ourselves rather than with `imageproc::drawing::draw_polygon_mut`: that
/// takes integer vertices and, in 0.25, panics on some polygons with horizontal edges (an odd
/// number of scanline crossings), and we fill thousands of generated polygons.
struct Canvas {
    img: RgbImage,
}

impl Canvas {
    /// Fill with the nonzero winding rule, sampling at pixel centres; `alpha` blends.
    fn fill(&mut self, poly: &[P2], colour: [u8; 3], alpha: f64) {
        if poly.len() < 3 {
            return;
        }
        let (w, h) = (self.img.width() as i64, self.img.height() as i64);
        let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in poly {
            y0 = y0.min(p.1);
            y1 = y1.max(p.1);
        }
        if !y0.is_finite() || !y1.is_finite() {
            return;
        }
        let row_start = (y0.floor() as i64).max(0);
        let row_end = (y1.ceil() as i64).min(h - 1);
        let mut crossings: Vec<(f64, i32)> = Vec::with_capacity(16);
        // One row of the colour, copied from in one go (much faster than pixel by pixel).
        let solid = colour.repeat(w as usize);
        let buf: &mut [u8] = &mut self.img;
        for y in row_start..=row_end {
            let yc = y as f64 + 0.5;
            crossings.clear();
            for i in 0..poly.len() {
                let a = poly[i];
                let b = poly[(i + 1) % poly.len()];
                if (a.1 <= yc) != (b.1 <= yc) {
                    let x = a.0 + (yc - a.1) * (b.0 - a.0) / (b.1 - a.1);
                    crossings.push((x, if b.1 > a.1 { 1 } else { -1 }));
                }
            }
            crossings.sort_by(|p, q| p.0.total_cmp(&q.0));
            let mut winding = 0;
            let mut start = 0.0;
            for &(x, dir) in &crossings {
                let before = winding;
                winding += dir;
                if before == 0 && winding != 0 {
                    start = x;
                } else if before != 0 && winding == 0 {
                    let from = ((start - 0.5).ceil() as i64).max(0);
                    let to = ((x - 0.5).ceil() as i64).min(w);
                    if from >= to {
                        continue;
                    }
                    let span = &mut buf[((y * w + from) * 3) as usize..((y * w + to) * 3) as usize];
                    if alpha >= 1.0 {
                        let len = span.len();
                        span.copy_from_slice(&solid[..len]);
                    } else {
                        for px in span.chunks_exact_mut(3) {
                            for c in 0..3 {
                                let dst = px[c] as f64;
                                px[c] = (dst + (colour[c] as f64 - dst) * alpha).round() as u8;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A line of the given width through `pts`, with round ends.
    fn stroke(&mut self, pts: &[P2], width: f64, colour: [u8; 3], alpha: f64) {
        if pts.len() < 2 {
            return;
        }
        let r = width / 2.0;
        let n = pts.len();
        let normal = |i: usize| {
            let (a, b) = (pts[i.saturating_sub(1)], pts[(i + 1).min(n - 1)]);
            let (dx, dy) = (b.0 - a.0, b.1 - a.1);
            let len = (dx * dx + dy * dy).sqrt().max(1e-9);
            (-dy / len, dx / len)
        };
        let mut outline = Vec::with_capacity(2 * n + 16);
        for (i, p) in pts.iter().enumerate() {
            let m = normal(i);
            outline.push((p.0 + m.0 * r, p.1 + m.1 * r));
        }
        // Round cap at the end, then back along the other side, then a cap at the start.
        let cap = |outline: &mut Vec<P2>, c: P2, m: P2| {
            let a0 = m.1.atan2(m.0);
            for k in 1..8 {
                let a = a0 - std::f64::consts::PI * k as f64 / 8.0;
                outline.push((c.0 + r * a.cos(), c.1 + r * a.sin()));
            }
        };
        cap(&mut outline, pts[n - 1], normal(n - 1));
        for i in (0..n).rev() {
            let m = normal(i);
            outline.push((pts[i].0 - m.0 * r, pts[i].1 - m.1 * r));
        }
        let m0 = normal(0);
        cap(&mut outline, pts[0], (-m0.0, -m0.1));
        self.fill(&outline, colour, alpha);
    }
}

/// A head as an ellipsoid: features are placed on its front surface in normalised (u, v)
/// coordinates (u right, v down, both in units of the radii), rotated by yaw and pitch,
/// projected orthographically, then rolled in the image plane.
struct Head {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
    rz: f64,
    yaw: (f64, f64),
    pitch: (f64, f64),
    roll: (f64, f64),
}

impl Head {
    fn rotate(&self, p: [f64; 3]) -> [f64; 3] {
        let [x, y, z] = p;
        let (sy, cy) = self.yaw;
        let (sp, cp) = self.pitch;
        let (x1, z1) = (x * cy + z * sy, -x * sy + z * cy);
        [x1, y * cp - z1 * sp, y * sp + z1 * cp]
    }

    /// Head-plane coordinates (after yaw and pitch) to image coordinates.
    fn screen(&self, x: f64, y: f64) -> P2 {
        let (sr, cr) = self.roll;
        (self.cx + x * cr - y * sr, self.cy + x * sr + y * cr)
    }

    /// The surface point at (u, v), raised `lift` × rz above the surface (the nose).
    fn surface(&self, u: f64, v: f64, lift: f64) -> [f64; 3] {
        let q = (1.0 - u * u - v * v).max(0.0).sqrt();
        [u * self.rx, v * self.ry, (q + lift) * self.rz]
    }

    fn at(&self, u: f64, v: f64) -> P2 {
        self.lifted(u, v, 0.0)
    }

    fn lifted(&self, u: f64, v: f64, lift: f64) -> P2 {
        let p = self.rotate(self.surface(u, v, lift));
        self.screen(p[0], p[1])
    }

    /// Depth toward the viewer; features facing away are not drawn.
    fn depth(&self, u: f64, v: f64) -> f64 {
        self.rotate(self.surface(u, v, 0.0))[2]
    }

    fn all(&self, uv: &[P2]) -> Vec<P2> {
        uv.iter().map(|&(u, v)| self.at(u, v)).collect()
    }

    /// Half-widths of the head's outline after yaw and pitch.
    fn outline_radii(&self) -> (f64, f64) {
        let wx = ((self.rx * self.yaw.1).powi(2) + (self.rz * self.yaw.0).powi(2)).sqrt();
        let wy = ((self.ry * self.pitch.1).powi(2) + (self.rz * self.pitch.0).powi(2)).sqrt();
        (wx, wy)
    }

    /// An ellipse in head-plane coordinates, rolled into the image.
    fn ellipse(&self, c: P2, r: P2, n: usize) -> Vec<P2> {
        (0..n)
            .map(|k| {
                let t = std::f64::consts::TAU * k as f64 / n as f64;
                self.screen(c.0 + r.0 * t.cos(), c.1 + r.1 * t.sin())
            })
            .collect()
    }
}

fn mix(a: [u8; 3], b: [u8; 3], t: f64) -> [u8; 3] {
    let f = |x: u8, y: u8| {
        (x as f64 + (y as f64 - x as f64) * t)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    [f(a[0], b[0]), f(a[1], b[1]), f(a[2], b[2])]
}

fn shade(a: [u8; 3], factor: f64) -> [u8; 3] {
    mix(a, [0, 0, 0], 1.0 - factor)
}

/// Points on `f(s)` for `s` in [-1, 1].
fn curve(n: usize, f: impl Fn(f64) -> P2) -> Vec<P2> {
    (0..=n)
        .map(|k| f(-1.0 + 2.0 * k as f64 / n as f64))
        .collect()
}

/// Per-expression geometry, in (u, v) units.
struct ExpressionShape {
    /// Upper and lower eye opening, multipliers.
    eye_open: (f64, f64),
    /// Brow offsets (positive = down) at the inner end, middle and outer end.
    brow: (f64, f64, f64),
}

fn expression_geometry(e: Expression) -> ExpressionShape {
    let (eye_open, brow) = match e {
        Expression::Neutral => ((1.0, 1.0), (0.0, -0.02, 0.01)),
        Expression::Happiness => ((0.75, 0.35), (-0.02, -0.04, 0.0)),
        Expression::Sadness => ((0.7, 0.9), (-0.08, -0.03, 0.04)),
        Expression::Anger => ((0.7, 0.8), (0.08, 0.01, -0.03)),
        Expression::Surprise => ((1.65, 1.3), (-0.10, -0.13, -0.07)),
        Expression::Fear => ((1.5, 1.25), (-0.11, -0.07, -0.02)),
        Expression::Disgust => ((0.5, 0.55), (0.06, 0.03, 0.01)),
    };
    ExpressionShape { eye_open, brow }
}

/// The region of the output image a manipulation covers: centre and radii in output pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub cx: f64,
    pub cy: f64,
    pub rx: f64,
    pub ry: f64,
}

/// Layout that depends on age: head size and shape, where the features sit.
struct Layout {
    rx: f64,
    ry: f64,
    eye_v: f64,
    eye_w: f64,
    eye_h: f64,
    nose_v: f64,
    nose_scale: f64,
    mouth_v: f64,
    shoulder_w: f64,
}

fn layout(spec: &FaceSpec) -> Layout {
    let s = (IMAGE_SIZE * SUPERSAMPLE) as f64;
    let l = &spec.look;
    // Children have bigger, rounder heads on narrower shoulders, with eyes lower on the face.
    let (rx, aspect, eye_v, eye_w, eye_h, nose_v, nose_scale, shoulder_w) = match spec.age {
        0..=2 => (0.31, 1.06, 0.08, 0.17, 1.35, 0.34, 0.6, 0.27),
        3..=9 => (0.29, 1.13, 0.04, 0.165, 1.25, 0.33, 0.72, 0.33),
        10..=19 => (0.27, 1.22, -0.03, 0.155, 1.1, 0.31, 0.9, 0.4),
        _ => (0.26, 1.28, -0.08, 0.15, 1.0, 0.30, 1.0, 0.45),
    };
    let rx = rx * s * l.face_width;
    Layout {
        rx,
        ry: rx * aspect * l.face_length,
        eye_v,
        eye_w,
        eye_h,
        nose_v,
        nose_scale,
        mouth_v: if spec.age <= 9 { 0.58 } else { 0.55 },
        shoulder_w: shoulder_w * s,
    }
}

fn head_for(spec: &FaceSpec, lay: &Layout) -> Head {
    let s = (IMAGE_SIZE * SUPERSAMPLE) as f64;
    let rad = |d: f64| d.to_radians().sin_cos();
    Head {
        cx: s * 0.5,
        cy: s * 0.46,
        rx: lay.rx,
        ry: lay.ry,
        rz: lay.rx * 0.85,
        yaw: rad(spec.yaw),
        pitch: rad(spec.pitch),
        roll: rad(spec.roll),
    }
}

/// Where a spec's manipulation goes, in output pixels; `None` for real faces.
pub fn manipulation_region(spec: &FaceSpec) -> Option<Region> {
    let m = spec.manipulation?;
    let lay = layout(spec);
    let head = head_for(spec, &lay);
    let ss = SUPERSAMPLE as f64;
    let (centre, rx, ry) = match m.target {
        ManipulationTarget::Eyes => (head.at(0.0, lay.eye_v), 0.62 * lay.rx, 0.2 * lay.ry),
        ManipulationTarget::Mouth => (head.at(0.0, lay.mouth_v), 0.42 * lay.rx, 0.2 * lay.ry),
        ManipulationTarget::Cheek => {
            let side = if spec.yaw >= 0.0 { -0.42 } else { 0.42 };
            (head.at(side, 0.28), 0.3 * lay.rx, 0.24 * lay.ry)
        }
    };
    Some(Region {
        cx: centre.0 / ss,
        cy: centre.1 / ss,
        rx: rx / ss,
        ry: ry / ss,
    })
}

/// Draw one face. Pure: the same spec always gives the same pixels on one platform.
pub fn draw_face(spec: &FaceSpec) -> RgbImage {
    let big = IMAGE_SIZE * SUPERSAMPLE;
    let pixels = spec.background.repeat((big * big) as usize);
    let mut c = Canvas {
        img: RgbImage::from_raw(big, big, pixels).expect("buffer sized to the image"),
    };
    let lay = layout(spec);
    let head = head_for(spec, &lay);
    let s = big as f64;
    let look = &spec.look;
    let skin = SKIN_RGB[spec.skin_tone];
    let line_dark = mix(shade(skin, 0.35), [20, 14, 12], 0.5);
    let wrinkle = shade(skin, 0.68);
    let hair = hair_colour(look.hair_rgb, spec.age);
    let brow_rgb = if spec.age >= 65 {
        mix(hair, [120, 110, 100], 0.4)
    } else {
        shade(hair, 0.8)
    };
    let (wx, wy) = head.outline_radii();
    let ry = lay.ry;
    let style = if spec.age <= 2 {
        None
    } else {
        Some(look.hair_style)
    };
    let geo = expression_geometry(spec.expression);

    // Shoulders (they do not roll with the head).
    let shoulder_top = head.cy + ry * 1.02 + 0.06 * s;
    let mut body = curve(24, |t| {
        let a = std::f64::consts::PI * (t + 1.0) / 2.0; // 0..π
        (
            head.cx - lay.shoulder_w * a.cos(),
            s + 4.0 - (s + 4.0 - shoulder_top) * a.sin().powf(0.45),
        )
    });
    body.push((head.cx + lay.shoulder_w, s + 4.0));
    body.push((head.cx - lay.shoulder_w, s + 4.0));
    c.fill(&body, spec.shirt, 1.0);

    // Long hair falls behind the neck and over the shoulders.
    if let Some(st @ (HairStyle::Long | HairStyle::Bob)) = style {
        let (bottom, spread) = if st == HairStyle::Long {
            (1.45, 1.28)
        } else {
            (0.78, 1.2)
        };
        let back = head.rotate([0.0, -0.1 * ry, -0.3 * head.rz]);
        let mut pts: Vec<P2> = (0..=20)
            .map(|k| {
                let t = std::f64::consts::PI * (1.0 + k as f64 / 20.0);
                head.screen(
                    back[0] + 1.16 * wx * t.cos(),
                    -0.08 * ry + 1.08 * wy * t.sin(),
                )
            })
            .collect();
        pts.push(head.screen(back[0] + spread * wx, bottom * ry));
        pts.extend(curve(8, |t| {
            head.screen(
                back[0] - spread * wx * t,
                bottom * ry + 0.06 * ry * (1.0 - t * t),
            )
        }));
        pts.push(head.screen(back[0] - spread * wx, bottom * ry));
        c.fill(&pts, shade(hair, 0.85), 1.0);
    }

    // Neck: its top follows the head, its base stays on the shoulders.
    let neck_w = 0.42 * lay.rx;
    let neck = [
        head.screen(-neck_w, 0.45 * ry),
        head.screen(neck_w, 0.45 * ry),
        (head.cx + neck_w * 1.1, shoulder_top + 0.05 * s),
        (head.cx - neck_w * 1.1, shoulder_top + 0.05 * s),
    ];
    c.fill(&neck, shade(skin, 0.82), 1.0);

    // Short hair: the back of the skull, seen past the face when it turns.
    if let Some(HairStyle::Short | HairStyle::Buzz | HairStyle::Curly) = style {
        let back = head.rotate([0.0, -0.12 * ry, -0.35 * head.rz]);
        let (grow, bumps) = match style {
            Some(HairStyle::Buzz) => (1.03, 0.0),
            Some(HairStyle::Curly) => (1.1, 0.035),
            _ => (1.07, 0.0),
        };
        let mut pts: Vec<P2> = (0..=32)
            .map(|k| {
                let t = std::f64::consts::PI * (1.0 + k as f64 / 32.0);
                let b = 1.0 + bumps * (14.0 * t).sin().abs();
                head.screen(
                    back[0] + grow * b * wx * t.cos(),
                    -0.1 * ry + grow * b * wy * t.sin(),
                )
            })
            .collect();
        pts.push(head.screen(back[0] + 0.95 * wx, 0.1 * ry));
        pts.push(head.screen(back[0] - 0.95 * wx, 0.1 * ry));
        c.fill(&pts, hair, 1.0);
    }

    // Ears sit behind the face's centre, so the one on the side the face turns to hides.
    let skin_ear = shade(skin, 0.9);
    for side in [-1.0, 1.0] {
        let p = head.rotate([
            side * head.rx * 0.97,
            (lay.eye_v + 0.12) * ry,
            -0.3 * head.rz,
        ]);
        let e = head.ellipse(
            (p[0] + side * 0.04 * lay.rx, p[1]),
            (0.13 * lay.rx, 0.19 * ry),
            20,
        );
        c.fill(&e, skin_ear, 1.0);
    }

    // The face: an egg shape, narrower at the jaw.
    let face: Vec<P2> = (0..64)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / 64.0;
            let jaw = 1.0 - 0.16 * t.sin().max(0.0).powi(2);
            head.screen(wx * t.cos() * jaw, wy * t.sin())
        })
        .collect();
    c.fill(&face, skin, 1.0);

    if look.stubble {
        let mut beard: Vec<P2> = (0..=24)
            .map(|k| {
                let t = std::f64::consts::PI * (0.02 + 0.96 * k as f64 / 24.0);
                let jaw = 1.0 - 0.16 * t.sin().powi(2);
                head.screen(wx * t.cos() * jaw, wy * t.sin())
            })
            .collect();
        beard.reverse();
        beard.extend(head.all(&curve(12, |t| (0.85 * t, 0.32 + 0.12 * t * t))));
        c.fill(&beard, hair, 0.35);
    }

    let stroke_w = 0.014 * ry;

    // Age lines.
    if spec.age >= 40 {
        let lines = ((spec.age - 35) / 12).min(4);
        for k in 0..lines {
            let v = lay.eye_v - 0.3 - 0.075 * k as f64;
            let pts = head.all(&curve(10, |t| (0.3 * t, v - 0.015 * (1.0 - t * t))));
            c.stroke(&pts, stroke_w, wrinkle, 0.9);
        }
    }
    let smiling = spec.expression == Expression::Happiness;
    if spec.age >= 45 || smiling {
        // Nasolabial folds; a smile deepens them at any age.
        for side in [-1.0, 1.0] {
            let pts = head.all(&curve(8, |t| {
                let f = (t + 1.0) / 2.0;
                (
                    side * (0.17 + 0.14 * f + 0.04 * (std::f64::consts::PI * f).sin()),
                    lay.nose_v + 0.02 + 0.27 * f,
                )
            }));
            c.stroke(&pts, stroke_w, wrinkle, if smiling { 0.85 } else { 0.5 });
        }
    }
    if spec.age >= 50 {
        for side in [-1.0, 1.0] {
            let corner = (side * (0.36 + lay.eye_w + 0.03), lay.eye_v);
            for dv in [-0.06, 0.0, 0.06] {
                let pts = head.all(&[corner, (corner.0 + side * 0.09, corner.1 + dv)]);
                c.stroke(&pts, stroke_w * 0.8, wrinkle, 0.8);
            }
        }
    }
    if spec.age >= 60 {
        for side in [-1.0, 1.0] {
            let pts = head.all(&curve(8, |t| {
                (
                    side * 0.36 + lay.eye_w * 0.8 * t,
                    lay.eye_v + 0.1 + 0.03 * (1.0 - t * t),
                )
            }));
            c.stroke(&pts, stroke_w * 0.8, wrinkle, 0.8);
        }
    }

    // Front hair over the forehead: the part of the outline above the hairline.
    let hairline = match style {
        None => -0.78,
        Some(HairStyle::Short) => -0.52,
        Some(HairStyle::Curly) => -0.5,
        Some(HairStyle::Buzz) => -0.64,
        Some(HairStyle::Long) => -0.5,
        Some(HairStyle::Bob) => -0.42,
    } - if spec.gender == 0 && spec.age >= 60 {
        0.12
    } else {
        0.0
    };
    let y_h = head.rotate(head.surface(0.0, hairline, 0.0))[1];
    let sin_h = y_h / (wy * 1.02);
    if sin_h > -0.98 && sin_h < 0.0 {
        let t1 = sin_h.asin();
        let (t0, span) = (-std::f64::consts::PI - t1, 2.0 * t1 + std::f64::consts::PI);
        let (gx, gy) = (wx * 1.03, wy * 1.02);
        let mut pts: Vec<P2> = (0..=24)
            .map(|k| {
                let t = t0 + span * k as f64 / 24.0;
                head.screen(gx * t.cos(), gy * t.sin())
            })
            .collect();
        let (xl, xr) = (gx * t0.cos(), gx * t1.cos());
        let dip = match style {
            Some(HairStyle::Bob) => 0.05 * ry,
            Some(HairStyle::Long) => 0.08 * ry,
            _ => 0.03 * ry,
        };
        for k in 1..12 {
            let f = k as f64 / 12.0;
            // A side parting: the fringe hangs lower on one side.
            let drop = dip * (std::f64::consts::PI * f).sin() * (0.6 + 0.8 * f);
            pts.push(head.screen(xr + (xl - xr) * f, y_h + drop));
        }
        let front = if style.is_none() {
            mix(hair, skin, 0.45)
        } else {
            hair
        };
        c.fill(&pts, front, 1.0);
    }

    // Eyes.
    let eye_w = lay.eye_w;
    let (hu, hl) = (
        0.065 * lay.eye_h * geo.eye_open.0,
        0.045 * lay.eye_h * geo.eye_open.1,
    );
    for side in [-1.0, 1.0] {
        let (eu, ev) = (side * 0.36, lay.eye_v);
        if head.depth(eu, ev) <= 0.05 * head.rz {
            continue;
        }
        let outline: Vec<P2> = (0..24)
            .map(|k| {
                let t = std::f64::consts::TAU * k as f64 / 24.0;
                let h = if t < std::f64::consts::PI { -hu } else { hl };
                (eu - eye_w * t.cos(), ev + h * t.sin().abs())
            })
            .collect();
        c.fill(&head.all(&outline), [238, 236, 230], 1.0);
        // Iris and pupil, clipped to the lids.
        let clip = |u: f64, v: f64| {
            let su = ((u - eu) / eye_w).clamp(-0.999, 0.999);
            let room = (1.0 - su * su).sqrt();
            (eu + su * eye_w, v.clamp(ev - hu * room, ev + hl * room))
        };
        let aspect = head.rx / head.ry;
        let gaze = eu + spec.gaze * eye_w;
        for (radius, colour) in [(0.075, look.iris_rgb), (0.035, [12, 10, 10])] {
            let iris: Vec<P2> = (0..20)
                .map(|k| {
                    let t = std::f64::consts::TAU * k as f64 / 20.0;
                    clip(
                        gaze + radius * t.cos(),
                        ev + 0.005 + radius * aspect * t.sin(),
                    )
                })
                .collect();
            c.fill(&head.all(&iris), colour, 1.0);
        }
        let glint = head.at(gaze + 0.025, ev - 0.02);
        c.fill(&circle(glint, 0.012 * ry), [250, 250, 250], 0.9);
        let lid = head.all(&curve(12, |t| {
            (eu + eye_w * 1.05 * t, ev - hu * (1.0 - t * t).sqrt())
        }));
        c.stroke(&lid, 0.018 * ry, line_dark, 1.0);
        if spec.expression == Expression::Happiness {
            // Raised cheeks push the lower lid up into a curve.
            let lower = head.all(&curve(10, |t| {
                (eu + eye_w * t, ev + hl * 1.6 * (1.0 - t * t).sqrt())
            }));
            c.stroke(&lower, 0.01 * ry, wrinkle, 0.9);
        }
    }

    // Eyebrows.
    let (bi, bm, bo) = geo.brow;
    let brow_v = lay.eye_v - 0.17;
    for side in [-1.0, 1.0] {
        let inner_u = if spec.expression == Expression::Anger {
            0.11
        } else {
            0.14
        };
        let pts = [
            (side * inner_u, brow_v + bi),
            (side * 0.34, brow_v - 0.03 + bm),
            (side * 0.55, brow_v + 0.01 + bo),
        ];
        if head.depth(side * 0.34, brow_v) <= 0.05 * head.rz {
            continue;
        }
        let smooth: Vec<P2> = curve(10, |t| {
            // Quadratic through the three points.
            let f = (t + 1.0) / 2.0;
            let a = 2.0 * (1.0 - f) * (0.5 - f);
            let b = 4.0 * f * (1.0 - f);
            let d = 2.0 * f * (f - 0.5);
            (
                a * pts[0].0 + b * pts[1].0 + d * pts[2].0,
                a * pts[0].1 + b * pts[1].1 + d * pts[2].1,
            )
        });
        c.stroke(
            &head.all(&smooth),
            0.034 * ry * look.brow_thickness,
            brow_rgb,
            1.0,
        );
    }
    if spec.expression == Expression::Anger {
        for side in [-1.0, 1.0] {
            let pts = head.all(&[(side * 0.04, brow_v - 0.02), (side * 0.06, brow_v + 0.1)]);
            c.stroke(&pts, stroke_w, wrinkle, 0.9);
        }
    }

    // Nose: raised off the surface, so it swings further than the eyes when the head turns.
    let nw = 0.11 * look.nose_width * lay.nose_scale;
    let nv = lay.nose_v;
    let nose = [
        head.lifted(-0.035, lay.eye_v + 0.06, 0.04),
        head.lifted(-nw, nv, 0.02),
        head.lifted(0.0, nv + 0.04, 0.1 * lay.nose_scale),
        head.lifted(nw, nv, 0.02),
        head.lifted(0.035, lay.eye_v + 0.06, 0.04),
        head.lifted(0.0, nv - 0.04, 0.19 * lay.nose_scale),
    ];
    c.fill(&nose, shade(skin, 0.86), 1.0);
    let ridge = [
        head.lifted(0.0, lay.eye_v + 0.08, 0.06),
        head.lifted(0.0, nv - 0.04, 0.19 * lay.nose_scale),
    ];
    c.stroke(
        &ridge,
        stroke_w * 1.3,
        mix(skin, [255, 255, 255], 0.12),
        0.8,
    );
    for side in [-1.0, 1.0] {
        let p = head.lifted(side * nw * 0.5, nv + 0.02, 0.07 * lay.nose_scale);
        c.fill(
            &circle(p, 0.018 * ry * lay.nose_scale.sqrt()),
            shade(skin, 0.45),
            1.0,
        );
    }
    if spec.expression == Expression::Disgust {
        // Wrinkled nose.
        for side in [-1.0, 1.0] {
            for k in 0..2 {
                let v = lay.eye_v + 0.1 + 0.05 * k as f64;
                let pts = head.all(&[(side * 0.05, v), (side * 0.13, v + 0.03)]);
                c.stroke(&pts, stroke_w, wrinkle, 0.9);
            }
        }
    }

    draw_mouth(&mut c, &head, spec, &lay, skin, line_dark);

    let mut out = downsample(&c.img);
    if let (Some(m), Some(r)) = (spec.manipulation, manipulation_region(spec)) {
        manipulate(&mut out, &m, r);
    }
    out
}

/// Average each 2 × 2 block: the pixel's coverage-weighted colour. Done by hand because
/// `imageops::resize` is a general filter, many times slower for this (and generic, so it
/// runs unoptimised in debug builds of this crate).
fn downsample(big: &RgbImage) -> RgbImage {
    const _: () = assert!(SUPERSAMPLE == 2, "downsample averages 2 × 2 blocks");
    let n = IMAGE_SIZE as usize;
    let stride = big.width() as usize * 3;
    let src: &[u8] = big;
    let mut out = vec![0u8; n * n * 3];
    for (y, dst) in out.chunks_exact_mut(n * 3).enumerate() {
        let r0 = &src[2 * y * stride..(2 * y + 1) * stride];
        let r1 = &src[(2 * y + 1) * stride..(2 * y + 2) * stride];
        for (i, d) in dst.iter_mut().enumerate() {
            // Channel c of output pixel x reads source pixels 2x and 2x + 1: byte i + 3x.
            let a = i + 3 * (i / 3);
            let sum = r0[a] as u16 + r0[a + 3] as u16 + r1[a] as u16 + r1[a + 3] as u16;
            *d = ((sum + 2) / 4) as u8;
        }
    }
    RgbImage::from_raw(IMAGE_SIZE, IMAGE_SIZE, out).expect("buffer sized to the image")
}

fn circle(c: P2, r: f64) -> Vec<P2> {
    (0..16)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / 16.0;
            (c.0 + r * t.cos(), c.1 + r * t.sin())
        })
        .collect()
}

fn hair_colour(base: [u8; 3], age: u32) -> [u8; 3] {
    match age {
        0..=44 => base,
        45..=54 => mix(base, [190, 188, 184], 0.35),
        55..=64 => mix(base, [200, 198, 194], 0.65),
        _ => mix(base, [228, 227, 222], 0.92),
    }
}

fn draw_mouth(
    c: &mut Canvas,
    head: &Head,
    spec: &FaceSpec,
    lay: &Layout,
    skin: [u8; 3],
    dark: [u8; 3],
) {
    let mv = lay.mouth_v;
    let small = if spec.age <= 9 { 0.85 } else { 1.0 };
    let mw = 0.31 * spec.look.mouth_width * small;
    let lip = mix(skin, [176, 62, 72], 0.45);
    let cavity = [80, 26, 32];
    let teeth = [242, 240, 232];
    let line_w = 0.022 * lay.ry;
    if head.depth(0.0, mv) <= 0.05 * head.rz {
        return;
    }
    // An open mouth between two curves, with optional teeth under the upper lip.
    let open = |c: &mut Canvas,
                upper: &dyn Fn(f64) -> f64,
                lower: &dyn Fn(f64) -> f64,
                width: f64,
                teeth_h: f64| {
        let mut pts = curve(16, |t| (width * t, mv + upper(t)));
        pts.extend(curve(16, |t| (-width * t, mv + lower(-t))));
        let poly = head.all(&pts);
        c.fill(&poly, cavity, 1.0);
        if teeth_h > 0.0 {
            let mut tp = curve(12, |t| (0.85 * width * t, mv + upper(0.85 * t)));
            tp.extend(curve(12, |t| {
                let u = -0.85 * t;
                (width * u, (mv + upper(u) + teeth_h).min(mv + lower(u)))
            }));
            c.fill(&head.all(&tp), teeth, 1.0);
        }
        let mut ring = poly.clone();
        ring.push(poly[0]);
        c.stroke(&ring, line_w * 0.8, lip, 1.0);
    };
    match spec.expression {
        Expression::Neutral => {
            let pts = head.all(&curve(12, |t| (mw * t, mv + 0.005 * t * t)));
            c.stroke(&pts, line_w * 1.4, lip, 1.0);
            c.stroke(&pts, line_w * 0.35, dark, 1.0);
        }
        Expression::Happiness => {
            open(
                c,
                &|t| -0.01 - 0.075 * t * t,
                &|t| 0.1 - 0.185 * t * t,
                mw * 1.1,
                0.035,
            );
        }
        Expression::Sadness => {
            let pts = head.all(&curve(12, |t| (0.9 * mw * t, mv - 0.02 + 0.08 * t * t)));
            c.stroke(&pts, line_w * 1.4, lip, 1.0);
            c.stroke(&pts, line_w * 0.35, dark, 1.0);
        }
        Expression::Anger => {
            let pts = head.all(&curve(12, |t| (0.8 * mw * t, mv + 0.01 + 0.03 * t * t)));
            c.stroke(&pts, line_w * 1.1, shade(lip, 0.8), 1.0);
            c.stroke(&pts, line_w * 0.45, dark, 1.0);
        }
        Expression::Surprise => {
            let centre = (0.0, mv + 0.04);
            let (ru, rv) = (0.1 * small, 0.12 * small);
            let ring: Vec<P2> = (0..24)
                .map(|k| {
                    let t = std::f64::consts::TAU * k as f64 / 24.0;
                    (centre.0 + ru * t.cos(), centre.1 + rv * t.sin())
                })
                .collect();
            let poly = head.all(&ring);
            c.fill(&poly, cavity, 1.0);
            let mut closed = poly.clone();
            closed.push(poly[0]);
            c.stroke(&closed, line_w, lip, 1.0);
        }
        Expression::Fear => {
            open(
                c,
                &|t| -0.035 + 0.03 * t * t,
                &|t| 0.1 - 0.07 * t * t,
                mw * 1.1,
                0.03,
            );
        }
        Expression::Disgust => {
            // A sneer: the upper lip pulled up on one side, showing teeth there.
            let upper = |t: f64| 0.02 * t - 0.08 * (1.0 - t * t) * (0.2 + 0.8 * (1.0 - t) / 2.0);
            let lower = |t: f64| 0.02 * t + 0.03 * (1.0 - t * t);
            open(c, &upper, &lower, mw * 0.9, 0.035);
        }
    }
}

/// Apply a manipulation to the output image inside `r`.
fn manipulate(img: &mut RgbImage, m: &Manipulation, r: Region) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x0 = ((r.cx - r.rx).floor() as i64).clamp(0, w);
    let x1 = ((r.cx + r.rx).ceil() as i64 + 1).clamp(0, w);
    let y0 = ((r.cy - r.ry).floor() as i64).clamp(0, h);
    let y1 = ((r.cy + r.ry).ceil() as i64 + 1).clamp(0, h);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let original = img.clone();
    // Blur only the region plus a margin: the whole image would cost ten times as much.
    let margin = (3.0 * m.sigma.max(0.5)).ceil() as i64;
    let (bx, by) = ((x0 - margin).max(0), (y0 - margin).max(0));
    let blurred = (m.kind == ManipulationKind::BlurPatch).then(|| {
        let (bw, bh) = ((x1 + margin).min(w) - bx, (y1 + margin).min(h) - by);
        let crop = image::imageops::crop_imm(&original, bx as u32, by as u32, bw as u32, bh as u32)
            .to_image();
        imageproc::filter::gaussian_blur_f32(&crop, m.sigma.max(0.5))
    });
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (
                (x as f64 + 0.5 - r.cx) / r.rx,
                (y as f64 + 0.5 - r.cy) / r.ry,
            );
            let d = (dx * dx + dy * dy).sqrt();
            if d >= 1.0 {
                continue;
            }
            // Full strength inside, easing off near the edge but still leaving a seam.
            let weight = if d < 0.8 {
                1.0
            } else {
                1.0 - (d - 0.8) / 0.2 * 0.4
            };
            let here = original.get_pixel(x as u32, y as u32).0;
            let target: [f64; 3] = match m.kind {
                ManipulationKind::ColourShift => {
                    [0, 1, 2].map(|c| here[c] as f64 + m.shift[c] as f64)
                }
                ManipulationKind::BlurPatch => {
                    let b = blurred
                        .as_ref()
                        .map_or(here, |b| b.get_pixel((x - bx) as u32, (y - by) as u32).0);
                    b.map(|v| v as f64 * m.gain as f64 + 14.0)
                }
                ManipulationKind::FlipPatch => {
                    let sy = ((2.0 * r.cy - y as f64 - 1.0).round() as i64).clamp(0, h - 1);
                    let src = original.get_pixel(x as u32, sy as u32).0;
                    src.map(|v| v as f64 * m.gain as f64 + 14.0)
                }
            };
            let out = [0, 1, 2].map(|c| {
                let v = here[c] as f64 + (target[c] - here[c] as f64) * weight;
                v.round().clamp(0.0, 255.0) as u8
            });
            img.put_pixel(x as u32, y as u32, Rgb(out));
        }
    }
}
