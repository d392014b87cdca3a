//! The Qwen2-VL image processor, identical to transformers' `Qwen2VLImageProcessor` (PIL
//! backend): RGB, `smart_resize` to multiples of `patch_size × merge_size` within
//! `[min_pixels, max_pixels]`, Pillow-exact bicubic resize, rescale and normalise, then the
//! patches flattened `[t·h·w, C·T·P·P]` with each 2×2 merge group contiguous and the single
//! frame repeated `temporal_patch_size` times.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use serde_json::Value;

use crate::checkpoint::read_json_if_present;
use crate::preprocess::{push_normalized_chw, resize_bicubic};

/// CLIP's mean and std, the processor's defaults, as the JSON files spell them (read as f64,
/// then rounded to f32 as a config value is).
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

#[derive(Debug, Clone)]
pub struct ImageProcessor {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl Default for ImageProcessor {
    fn default() -> Self {
        // Qwen2VLImageProcessor's class defaults.
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN.map(|x| x as f32),
            image_std: CLIP_STD.map(|x| x as f32),
        }
    }
}

/// Flattened patches of one prompt's images.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    /// `[Σ t·h·w, patch_dim]` row-major.
    pub data: Vec<f32>,
    pub patch_dim: usize,
    /// Each image's `(t, h, w)` grid in patches.
    pub grids: Vec<[usize; 3]>,
}

impl Patches {
    pub fn rows(&self) -> usize {
        self.grids.iter().map(|g| g[0] * g[1] * g[2]).sum()
    }
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.rows(), self.patch_dim),
            device,
        )?)
    }
}

impl ImageProcessor {
    /// Reads `preprocessor_config.json` (absent: the defaults). `size.shortest_edge` /
    /// `size.longest_edge` and the older `min_pixels` / `max_pixels` are both understood; the
    /// latter win, as in the processor's constructor.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let mut p = Self::default();
        let Some(v) = read_json_if_present(&path)? else {
            return Ok(p);
        };
        let num = |key: &str, o: &Value| -> Result<Option<usize>> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                    anyhow!(
                        "{}: `{key}` must be a non-negative integer, got {x}",
                        path.display()
                    )
                }),
            }
        };
        if let Some(size) = v.get("size").filter(|s| s.is_object()) {
            p.min_pixels = num("shortest_edge", size)?.unwrap_or(p.min_pixels);
            p.max_pixels = num("longest_edge", size)?.unwrap_or(p.max_pixels);
        }
        p.min_pixels = num("min_pixels", &v)?.unwrap_or(p.min_pixels);
        p.max_pixels = num("max_pixels", &v)?.unwrap_or(p.max_pixels);
        p.patch_size = num("patch_size", &v)?.unwrap_or(p.patch_size);
        p.temporal_patch_size = num("temporal_patch_size", &v)?.unwrap_or(p.temporal_patch_size);
        p.merge_size = num("merge_size", &v)?.unwrap_or(p.merge_size);
        let flag = |key: &str, d: bool| v.get(key).and_then(Value::as_bool).unwrap_or(d);
        p.do_resize = flag("do_resize", true);
        p.do_rescale = flag("do_rescale", true);
        p.do_normalize = flag("do_normalize", true);
        if let Some(f) = v.get("rescale_factor").and_then(Value::as_f64) {
            p.rescale_factor = f;
        }
        let triple = |key: &str, d: [f32; 3]| -> Result<[f32; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(d),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => Ok([
                    a[0].as_f64().unwrap_or_default() as f32,
                    a[1].as_f64().unwrap_or_default() as f32,
                    a[2].as_f64().unwrap_or_default() as f32,
                ]),
                Some(x) => bail!("{}: `{key}` must be three numbers, got {x}", path.display()),
            }
        };
        p.image_mean = triple("image_mean", p.image_mean)?;
        p.image_std = triple("image_std", p.image_std)?;
        if p.patch_size == 0 || p.merge_size == 0 || p.temporal_patch_size == 0 {
            bail!("{}: patch sizes must be positive", path.display());
        }
        if p.min_pixels > p.max_pixels {
            bail!(
                "{}: min_pixels {} exceeds max_pixels {}",
                path.display(),
                p.min_pixels,
                p.max_pixels
            );
        }
        Ok(p)
    }

    /// transformers' `smart_resize`: the (height, width) an image of `h × w` is resized to.
    /// Python's `round` rounds half to even, hence `round_ties_even`.
    pub fn smart_resize(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let factor = (self.patch_size * self.merge_size) as f64;
        let (hf, wf) = (h as f64, w as f64);
        if h == 0 || w == 0 {
            bail!("empty image ({w}x{h})");
        }
        if hf.max(wf) / hf.min(wf) > 200.0 {
            bail!(
                "image {w}x{h}: absolute aspect ratio must be smaller than 200, got {}",
                hf.max(wf) / hf.min(wf)
            );
        }
        let mut hb = (hf / factor).round_ties_even() * factor;
        let mut wb = (wf / factor).round_ties_even() * factor;
        if hb * wb > self.max_pixels as f64 {
            let beta = ((hf * wf) / self.max_pixels as f64).sqrt();
            hb = factor.max((hf / beta / factor).floor() * factor);
            wb = factor.max((wf / beta / factor).floor() * factor);
        } else if hb * wb < self.min_pixels as f64 {
            let beta = (self.min_pixels as f64 / (hf * wf)).sqrt();
            hb = (hf * beta / factor).ceil() * factor;
            wb = (wf * beta / factor).ceil() * factor;
        }
        if hb < factor || wb < factor {
            // Only reachable with min_pixels below one merge unit: an empty image would follow.
            bail!(
                "image {w}x{h} resizes to {wb}x{hb}, less than one {factor}-pixel merge unit \
                 (min_pixels {} in preprocessor_config.json)",
                self.min_pixels
            );
        }
        Ok((hb as usize, wb as usize))
    }

    /// Patches and grids of `images`, in order.
    pub fn preprocess(&self, images: &[&DynamicImage]) -> Result<Patches> {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let patch_dim = 3 * tp * p * p;
        let mut data = Vec::new();
        let mut grids = Vec::with_capacity(images.len());
        for img in images {
            let rgb = to_rgb_on_white(img);
            let (w0, h0) = rgb.dimensions();
            let rgb = if self.do_resize {
                let (h, w) = self.smart_resize(h0 as usize, w0 as usize)?;
                resize_bicubic(&rgb, w as u32, h as u32)
            } else {
                rgb
            };
            let (w, h) = (rgb.width() as usize, rgb.height() as usize);
            if h % (p * m) != 0 || w % (p * m) != 0 {
                bail!(
                    "image of {w}x{h} pixels is not a multiple of patch_size x merge_size ({}) \
                     (do_resize is off in preprocessor_config.json)",
                    p * m
                );
            }
            let mut chw = Vec::with_capacity(3 * h * w);
            push_normalized_chw(
                &rgb,
                self.do_rescale.then_some(self.rescale_factor),
                self.do_normalize
                    .then_some((&self.image_mean, &self.image_std)),
                &mut chw,
            );
            let (gh, gw) = (h / p, w / p);
            data.reserve(gh * gw * patch_dim);
            for bh in 0..gh / m {
                for bw in 0..gw / m {
                    for i in 0..m {
                        for j in 0..m {
                            let (r, c) = (bh * m + i, bw * m + j);
                            for ch in 0..3 {
                                let plane = &chw[ch * h * w..(ch + 1) * h * w];
                                for _ in 0..tp {
                                    for py in 0..p {
                                        let row = (r * p + py) * w + c * p;
                                        data.extend_from_slice(&plane[row..row + p]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            grids.push([1, gh, gw]);
        }
        Ok(Patches {
            data,
            patch_dim,
            grids,
        })
    }
}

/// RGB as transformers 5.24's `convert_to_rgb` makes it for this processor: an image with
/// alpha is composited onto opaque white with Pillow's `alpha_composite` (integer arithmetic,
/// 7 fractional bits, division by 255 as two shifts), anything else converted directly.
/// faceval's own image loader (`crate::image_io`) already drops alpha, so this only matters for
/// callers that hand the processor an RGBA image, as the parity fixtures do.
fn to_rgb_on_white(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    const BITS: u32 = 7;
    let div255 = |a: u32| ((a >> 8) + a) >> 8;
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let [r, g, b, a] = p.0.map(u32::from);
        if a == 0 {
            o.0 = [255, 255, 255];
            continue;
        }
        let blend = 255 * (255 - a);
        let outa255 = a * 255 + blend;
        let coef1 = a * 255 * 255 * (1 << BITS) / outa255;
        let coef2 = 255 * (1 << BITS) - coef1;
        let ch = |c: u32| (div255(c * coef1 + 255 * coef2 + (0x80 << BITS)) >> BITS) as u8;
        o.0 = [ch(r), ch(g), ch(b)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_follows_transformers() {
        let p = ImageProcessor::default();
        // Within bounds: rounded to multiples of 28 (half to even: 42/28 = 1.5 → 2).
        assert_eq!(p.smart_resize(42, 70).unwrap(), (56, 56));
        // Above max_pixels: scaled down, floored to 28.
        let big = p.smart_resize(2000, 3000).unwrap();
        assert!(big.0 * big.1 <= p.max_pixels && big.0 % 28 == 0 && big.1 % 28 == 0);
        // Below min_pixels: scaled up, ceiled.
        assert_eq!(p.smart_resize(10, 10).unwrap(), (56, 56));
        assert!(p.smart_resize(1, 300).is_err());
        // With no lower bound a 10 px image would round to nothing: an error, not a panic.
        let p0 = ImageProcessor {
            min_pixels: 0,
            ..ImageProcessor::default()
        };
        assert!(p0.smart_resize(10, 10).is_err());
    }
}
