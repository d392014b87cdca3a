//! CLIP / SigLIP image preprocessing, equal to transformers' image processors.
//!
//! CLIP (`CLIPImageProcessor`): RGB, bicubic resize of the shortest edge to `size.shortest_edge`
//! (the long edge `int(size * long / short)`), center crop to `crop_size` (zero-padded when the
//! image is smaller, as transformers' `center_crop`), rescale, normalise with the config's
//! mean/std (OpenAI's by default). SigLIP (`SiglipImageProcessor`): RGB, bicubic resize to
//! `size.height` x `size.width`, rescale, normalise (0.5/0.5 by default).
//!
//! Resizing reuses the Pillow-exact bicubic resampler of [`crate::preprocess`]: that is
//! what transformers' PIL backend runs, and the one AutoProcessor instantiates when torchvision
//! is absent (the fixtures record which). The torchvision backend differs from Pillow by a uint8
//! unit or two at most (measured for InternVL, see its fixtures' README).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use image::{DynamicImage, RgbImage};
use serde_json::Value;

use super::config::Family;
use crate::checkpoint::read_json;
use crate::preprocess::{push_normalized_chw, resize_bicubic};

// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD as written there (rounded to f32 on use, as
// numpy does when it builds the float32 mean/std arrays).
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// How the resize step sizes its output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeTo {
    /// Shortest edge to this many pixels, aspect kept (CLIP).
    ShortestEdge(u32),
    /// Exactly height x width (SigLIP).
    Exact { height: u32, width: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub do_convert_rgb: bool,
    pub do_resize: bool,
    pub size: ResizeTo,
    pub resample: u32,
    pub do_center_crop: bool,
    /// (height, width)
    pub crop_size: (u32, u32),
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl ImageProcessor {
    /// transformers' class defaults for the family.
    pub fn defaults(family: Family) -> Self {
        match family {
            Family::Clip => Self {
                do_convert_rgb: true,
                do_resize: true,
                size: ResizeTo::ShortestEdge(224),
                resample: 3,
                do_center_crop: true,
                crop_size: (224, 224),
                do_rescale: true,
                rescale_factor: 1.0 / 255.0,
                do_normalize: true,
                image_mean: OPENAI_CLIP_MEAN,
                image_std: OPENAI_CLIP_STD,
            },
            Family::Siglip => Self {
                do_convert_rgb: true,
                do_resize: true,
                size: ResizeTo::Exact {
                    height: 224,
                    width: 224,
                },
                resample: 3,
                do_center_crop: false,
                crop_size: (224, 224),
                do_rescale: true,
                rescale_factor: 1.0 / 255.0,
                do_normalize: true,
                image_mean: [0.5; 3],
                image_std: [0.5; 3],
            },
        }
    }

    /// Reads `preprocessor_config.json` (flat, as the hub's CLIP/SigLIP repos) or else
    /// `processor_config.json` (transformers 5.x, nested under `image_processor`). Neither:
    /// the family's defaults.
    pub fn from_dir(dir: &Path, family: Family) -> Result<Self> {
        let mut p = Self::defaults(family);
        let flat = dir.join("preprocessor_config.json");
        let nested = dir.join("processor_config.json");
        if flat.is_file() {
            let v = read_json(&flat)?;
            p.apply(&v, &flat)?;
        } else if nested.is_file() {
            let v = read_json(&nested)?;
            if let Some(ip) = v.get("image_processor") {
                p.apply(ip, &nested)?;
            }
        }
        if p.resample != 3 {
            bail!(
                "{}: only bicubic resampling (resample = 3) is supported, got {}",
                dir.display(),
                p.resample
            );
        }
        if p.image_std.contains(&0.0) {
            bail!("{}: image_std must not contain 0", dir.display());
        }
        Ok(p)
    }

    fn apply(&mut self, v: &Value, file: &Path) -> Result<()> {
        let f = file.display();
        let b = |k: &str| -> Result<Option<bool>> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(x)) => Ok(Some(*x)),
                Some(o) => bail!("{f}: field `{k}` must be a boolean, got {o}"),
            }
        };
        let u = |o: &Value, k: &str| -> Result<Option<u32>> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as u32)).ok_or_else(|| {
                    anyhow!("{f}: field `{k}` must be a non-negative integer, got {x}")
                }),
            }
        };
        let triple = |k: &str| -> Result<Option<[f32; 3]>> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => {
                    let x = n.as_f64().unwrap_or(0.0) as f32;
                    Ok(Some([x; 3]))
                }
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x
                            .as_f64()
                            .ok_or_else(|| anyhow!("{f}: field `{k}` must hold numbers, got {x}"))?
                            as f32;
                    }
                    Ok(Some(out))
                }
                Some(o) => bail!("{f}: field `{k}` must be 3 numbers, got {o}"),
            }
        };
        if let Some(x) = b("do_convert_rgb")? {
            self.do_convert_rgb = x;
        }
        if let Some(x) = b("do_resize")? {
            self.do_resize = x;
        }
        if let Some(x) = b("do_center_crop")? {
            self.do_center_crop = x;
        }
        if let Some(x) = b("do_rescale")? {
            self.do_rescale = x;
        }
        if let Some(x) = b("do_normalize")? {
            self.do_normalize = x;
        }
        if let Some(x) = u(v, "resample")? {
            self.resample = x;
        }
        if let Some(x) = v.get("rescale_factor").filter(|x| !x.is_null()) {
            self.rescale_factor = x
                .as_f64()
                .ok_or_else(|| anyhow!("{f}: field `rescale_factor` must be a number, got {x}"))?;
        }
        if let Some(m) = triple("image_mean")? {
            self.image_mean = m;
        }
        if let Some(s) = triple("image_std")? {
            self.image_std = s;
        }
        match v.get("size") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                // A bare int: shortest edge for CLIP (default_to_square = False), square otherwise.
                let s = n
                    .as_u64()
                    .ok_or_else(|| anyhow!("{f}: field `size` must be an integer, got {n}"))?
                    as u32;
                self.size = match self.size {
                    ResizeTo::ShortestEdge(_) => ResizeTo::ShortestEdge(s),
                    ResizeTo::Exact { .. } => ResizeTo::Exact {
                        height: s,
                        width: s,
                    },
                };
            }
            Some(obj @ Value::Object(_)) => {
                self.size = match (
                    u(obj, "height")?,
                    u(obj, "width")?,
                    u(obj, "shortest_edge")?,
                ) {
                    (Some(height), Some(width), _) => ResizeTo::Exact { height, width },
                    (_, _, Some(s)) => ResizeTo::ShortestEdge(s),
                    _ => bail!("{f}: `size` needs height and width or shortest_edge, got {obj}"),
                };
            }
            Some(o) => bail!("{f}: `size` must be a number or an object, got {o}"),
        }
        match v.get("crop_size") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                let s = n.as_u64().unwrap_or(0) as u32;
                self.crop_size = (s, s);
            }
            Some(obj @ Value::Object(_)) => match (u(obj, "height")?, u(obj, "width")?) {
                (Some(h), Some(w)) => self.crop_size = (h, w),
                _ => bail!("{f}: `crop_size` needs height and width, got {obj}"),
            },
            Some(o) => bail!("{f}: `crop_size` must be a number or an object, got {o}"),
        }
        Ok(())
    }

    /// The (height, width) the processor outputs, when it is fixed.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        if self.do_center_crop {
            return Some(self.crop_size);
        }
        match (self.do_resize, self.size) {
            (true, ResizeTo::Exact { height, width }) => Some((height, width)),
            _ => None,
        }
    }

    /// The uint8 image after resize and crop, before rescale/normalize.
    pub fn resized_u8(&self, image: &DynamicImage) -> RgbImage {
        // convert_to_rgb is PIL's convert("RGB"): alpha dropped.
        let mut img = image.to_rgb8();
        if self.do_resize {
            let (w, h) = img.dimensions();
            let (ow, oh) = match self.size {
                ResizeTo::Exact { height, width } => (width, height),
                ResizeTo::ShortestEdge(s) => {
                    // get_resize_output_image_size(default_to_square=False): int() truncation.
                    let (short, long) = if w <= h { (w, h) } else { (h, w) };
                    let new_long = (s as f64 * long as f64 / short as f64) as u32;
                    if w <= h {
                        (s, new_long)
                    } else {
                        (new_long, s)
                    }
                }
            };
            img = resize_bicubic(&img, ow, oh);
        }
        if self.do_center_crop {
            img = center_crop(&img, self.crop_size.0, self.crop_size.1);
        }
        img
    }

    /// `[3, H, W]` f32 with transformers' numpy arithmetic (f64 rescale cast to f32, then f32
    /// `(x - mean) / std`), equal to the processor bit for bit.
    pub fn pixel_values(&self, image: &DynamicImage) -> (Vec<f32>, usize, usize) {
        let img = self.resized_u8(image);
        let (w, h) = img.dimensions();
        let mut out = Vec::new();
        push_normalized_chw(
            &img,
            self.do_rescale.then_some(self.rescale_factor),
            self.do_normalize
                .then_some((&self.image_mean, &self.image_std)),
            &mut out,
        );
        (out, h as usize, w as usize)
    }
}

/// transformers' `center_crop`: top/left `(orig - crop) // 2`; an image smaller than the crop
/// is first zero-padded, centred with `ceil` offsets.
fn center_crop(img: &RgbImage, crop_h: u32, crop_w: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w >= crop_w && h >= crop_h {
        let top = (h - crop_h) / 2;
        let left = (w - crop_w) / 2;
        return image::imageops::crop_imm(img, left, top, crop_w, crop_h).to_image();
    }
    let nh = crop_h.max(h);
    let nw = crop_w.max(w);
    let top_pad = (nh - h).div_ceil(2);
    let left_pad = (nw - w).div_ceil(2);
    let mut padded = RgbImage::new(nw, nh);
    image::imageops::replace(&mut padded, img, left_pad as i64, top_pad as i64);
    // transformers then crops at its original (negative-free) offsets shifted by the padding.
    let top = (h as i64 - crop_h as i64).div_euclid(2) + top_pad as i64;
    let left = (w as i64 - crop_w as i64).div_euclid(2) + left_pad as i64;
    image::imageops::crop_imm(
        &padded,
        left.max(0) as u32,
        top.max(0) as u32,
        crop_w,
        crop_h,
    )
    .to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_keeps_aspect_with_truncation() {
        let p = ImageProcessor {
            size: ResizeTo::ShortestEdge(40),
            crop_size: (40, 40),
            ..ImageProcessor::defaults(Family::Clip)
        };
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(700, 340, image::Rgb([9, 9, 9])));
        assert_eq!(p.resized_u8(&img).dimensions(), (40, 40));
        let p2 = ImageProcessor {
            do_center_crop: false,
            ..p
        };
        // int(40 * 700 / 340) = 82
        assert_eq!(p2.resized_u8(&img).dimensions(), (82, 40));
    }

    #[test]
    fn small_images_are_zero_padded_by_the_crop() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([200, 200, 200]));
        let out = center_crop(&img, 4, 5);
        assert_eq!(out.dimensions(), (5, 4));
        // rows 1..3, cols 1..4 hold the image (ceil offsets), the rest is zero.
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [200, 200, 200]);
        assert_eq!(out.get_pixel(3, 2).0, [200, 200, 200]);
        assert_eq!(out.get_pixel(4, 3).0, [0, 0, 0]);
    }
}
