//! LLaVA-1.5's image preprocessing as transformers' CLIPImageProcessor does it (PIL backend):
//! RGB conversion, resize of the shortest edge with Pillow's bicubic, centre crop, rescale and
//! normalise; plus the LlavaProcessor settings that fix how many `<image>` tokens one image
//! becomes.
//!
//! The resampler is `crate::preprocess::resize_bicubic`, which reproduces Pillow's bicubic
//! bit for bit (transformers 5.17 instantiates the PIL backend when torchvision is absent, as
//! here; with torchvision it would pick the torchvision backend, whose uint8 antialiased
//! bicubic differs from Pillow's by a unit or two).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use serde_json::Value;

use super::config::{LlavaConfig, SelectStrategy};
use crate::checkpoint::read_json_if_present as read_json;
use crate::preprocess::{push_normalized_chw, resize_bicubic};

/// Target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// `size: {shortest_edge: S}`: the short side becomes S, the long side keeps the aspect
    /// ratio (truncated, as transformers' `int(S * long / short)`).
    ShortestEdge(u32),
    /// `size: {height, width}`.
    Exact { height: u32, width: u32 },
}

/// CLIPImageProcessor + LlavaProcessor settings.
#[derive(Debug, Clone)]
pub struct LlavaProcessorConfig {
    pub do_resize: bool,
    pub resize: ResizeTo,
    pub do_center_crop: bool,
    pub crop_height: u32,
    pub crop_width: u32,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// LlavaProcessor's `patch_size`.
    pub patch_size: u32,
    pub num_additional_image_tokens: u32,
    pub select_strategy: SelectStrategy,
    pub image_token: String,
}

fn get_u32(o: &Value, key: &str, file: &Path) -> Result<Option<u32>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|x| Some(x as u32)).ok_or_else(|| {
            anyhow!(
                "{}: `{key}` must be a non-negative integer, got {v}",
                file.display()
            )
        }),
    }
}

fn get_bool(o: &Value, key: &str, default: bool, file: &Path) -> Result<bool> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| anyhow!("{}: `{key}` must be true or false, got {v}", file.display())),
    }
}

fn get_triple(o: &Value, key: &str, default: [f32; 3], file: &Path) -> Result<[f32; 3]> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => Ok([
            a[0].as_f64().unwrap_or(0.0) as f32,
            a[1].as_f64().unwrap_or(0.0) as f32,
            a[2].as_f64().unwrap_or(0.0) as f32,
        ]),
        Some(v) => bail!(
            "{}: `{key}` must be a list of three numbers, got {v}",
            file.display()
        ),
    }
}

/// `size` / `crop_size`: an int (square), `{shortest_edge}` or `{height, width}`.
fn size_field(o: &Value, key: &str, file: &Path) -> Result<Option<ResizeTo>> {
    let bad = |v: &Value| {
        anyhow!(
            "{}: `{key}` must be an integer, {{\"shortest_edge\": n}} or {{\"height\": h, \"width\": w}}, got {v}",
            file.display()
        )
    };
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => {
            let s = v.as_u64().ok_or_else(|| bad(v))? as u32;
            Ok(Some(ResizeTo::Exact {
                height: s,
                width: s,
            }))
        }
        Some(v @ Value::Object(m)) => {
            if let Some(s) = m.get("shortest_edge") {
                if m.get("longest_edge").is_some_and(|x| !x.is_null()) {
                    bail!("{}: `{key}.longest_edge` is not supported", file.display());
                }
                return Ok(Some(ResizeTo::ShortestEdge(
                    s.as_u64().ok_or_else(|| bad(v))? as u32,
                )));
            }
            let h = m.get("height").and_then(Value::as_u64);
            let w = m.get("width").and_then(Value::as_u64);
            match (h, w) {
                (Some(h), Some(w)) => Ok(Some(ResizeTo::Exact {
                    height: h as u32,
                    width: w as u32,
                })),
                _ => Err(bad(v)),
            }
        }
        Some(v) => Err(bad(v)),
    }
}

impl LlavaProcessorConfig {
    /// Reads `preprocessor_config.json` (flat, as llava-hf ships it) or the `image_processor`
    /// entry of `processor_config.json` (transformers 5's `save_pretrained`), and the
    /// LlavaProcessor fields of `processor_config.json`. Missing LlavaProcessor fields fall back
    /// to the model config (patch size, strategy) with one additional (CLS) token, which is
    /// what every llava-hf repo states.
    pub fn from_dir(dir: &Path, model: &LlavaConfig) -> Result<Self> {
        let pre_path = dir.join("preprocessor_config.json");
        let proc_path = dir.join("processor_config.json");
        let pre = read_json(&pre_path)?;
        let proc_ = read_json(&proc_path)?.unwrap_or(Value::Null);
        let (ip, ip_path) = match pre {
            Some(p) => (p, pre_path.clone()),
            None => match proc_.get("image_processor") {
                Some(p) if p.is_object() => (p.clone(), proc_path.clone()),
                _ => bail!(
                    "{}: no image processor config (neither preprocessor_config.json nor an \
                     `image_processor` entry in processor_config.json)",
                    dir.display()
                ),
            },
        };
        let f = &ip_path;
        if let Some(t) = ip.get("image_processor_type").and_then(Value::as_str) {
            if !t.starts_with("CLIPImageProcessor") {
                bail!(
                    "{}: image_processor_type {t:?} is not supported (CLIPImageProcessor)",
                    f.display()
                );
            }
        }
        if get_bool(&ip, "do_pad", false, f)? {
            bail!("{}: `do_pad: true` is not supported", f.display());
        }
        let resample = get_u32(&ip, "resample", f)?.unwrap_or(3);
        if resample != 3 {
            bail!(
                "{}: `resample` {resample} is not supported (3, bicubic)",
                f.display()
            );
        }
        let vis = model.vision.image_size as u32;
        let resize = size_field(&ip, "size", f)?.unwrap_or(ResizeTo::ShortestEdge(224));
        let (crop_height, crop_width) = match size_field(&ip, "crop_size", f)? {
            Some(ResizeTo::Exact { height, width }) => (height, width),
            Some(ResizeTo::ShortestEdge(s)) => (s, s),
            None => (224, 224),
        };
        let do_center_crop = get_bool(&ip, "do_center_crop", true, f)?;
        let do_resize = get_bool(&ip, "do_resize", true, f)?;
        let out_size = if do_center_crop {
            (crop_height, crop_width)
        } else {
            match resize {
                ResizeTo::Exact { height, width } if do_resize => (height, width),
                _ => bail!(
                    "{}: without a centre crop the image size would vary; only fixed-size \
                     input ({vis}x{vis}) is supported",
                    f.display()
                ),
            }
        };
        if out_size != (vis, vis) {
            bail!(
                "{}: the processor makes {}x{} images but the vision tower takes {vis}x{vis}",
                f.display(),
                out_size.0,
                out_size.1
            );
        }
        let pp = &proc_path;
        let patch_size =
            get_u32(&proc_, "patch_size", pp)?.unwrap_or(model.vision.patch_size as u32);
        let num_additional_image_tokens =
            get_u32(&proc_, "num_additional_image_tokens", pp)?.unwrap_or(1);
        let select_strategy = match proc_
            .get("vision_feature_select_strategy")
            .and_then(Value::as_str)
        {
            None => model.select_strategy,
            Some("default") => SelectStrategy::Default,
            Some("full") => SelectStrategy::Full,
            Some(o) => bail!(
                "{}: `vision_feature_select_strategy` {o:?} is not supported",
                pp.display()
            ),
        };
        let image_token = proc_
            .get("image_token")
            .and_then(Value::as_str)
            .unwrap_or("<image>")
            .to_string();
        let cfg = Self {
            do_resize,
            resize,
            do_center_crop,
            crop_height,
            crop_width,
            do_rescale: get_bool(&ip, "do_rescale", true, f)?,
            rescale_factor: ip
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(1.0 / 255.0),
            do_normalize: get_bool(&ip, "do_normalize", true, f)?,
            image_mean: get_triple(
                &ip,
                "image_mean",
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
                f,
            )?,
            image_std: get_triple(
                &ip,
                "image_std",
                [0.268_629_54, 0.261_302_6, 0.275_777_1],
                f,
            )?,
            patch_size,
            num_additional_image_tokens,
            select_strategy,
            image_token,
        };
        let n = cfg.tokens_per_image();
        if n != model.tokens_per_image() {
            bail!(
                "{}: the processor expands each image to {n} tokens but the model gives {} \
                 feature rows per image",
                dir.display(),
                model.tokens_per_image()
            );
        }
        Ok(cfg)
    }

    /// `<image>` tokens per image, as LlavaProcessor computes them.
    pub fn tokens_per_image(&self) -> usize {
        let p = self.patch_size.max(1);
        let mut n =
            (self.crop_height / p) * (self.crop_width / p) + self.num_additional_image_tokens;
        if self.select_strategy == SelectStrategy::Default {
            n = n.saturating_sub(1);
        }
        n as usize
    }

    /// Output (height, width) of the resize step for an image of `height` x `width`.
    pub fn resized_size(&self, height: u32, width: u32) -> (u32, u32) {
        match self.resize {
            ResizeTo::Exact { height, width } => (height, width),
            ResizeTo::ShortestEdge(s) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // transformers: int(s * long / short), in Python floats.
                let new_long = ((s as f64 * long as f64) / short.max(1) as f64) as u32;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// The uint8 image after RGB conversion, resize and centre crop.
    pub fn image_u8(&self, image: &DynamicImage) -> Result<RgbImage> {
        // transformers' convert_to_rgb is PIL's Image.convert("RGB"): alpha is dropped.
        let mut rgb = image.to_rgb8();
        if self.do_resize {
            let (h, w) = self.resized_size(rgb.height(), rgb.width());
            if h == 0 || w == 0 {
                bail!(
                    "image of {}x{} resizes to nothing",
                    image.width(),
                    image.height()
                );
            }
            rgb = resize_bicubic(&rgb, w, h);
        }
        if self.do_center_crop {
            let (h, w) = (rgb.height(), rgb.width());
            let (ch, cw) = (self.crop_height, self.crop_width);
            if ch > h || cw > w {
                // transformers would zero-pad here; with shortest-edge resizing to the crop
                // size it never happens, so it is refused rather than reimplemented.
                bail!("image of {w}x{h} is smaller than the {cw}x{ch} centre crop");
            }
            let top = (h - ch) / 2;
            let left = (w - cw) / 2;
            rgb = image::imageops::crop_imm(&rgb, left, top, cw, ch).to_image();
        }
        Ok(rgb)
    }

    /// CHW f32 values of one image with transformers' numpy arithmetic (f64 rescale, cast to
    /// f32, then f32 `(x - mean) / std`).
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let mut out = Vec::new();
        push_normalized_chw(
            img,
            self.do_rescale.then_some(self.rescale_factor),
            self.do_normalize
                .then_some((&self.image_mean, &self.image_std)),
            &mut out,
        );
        out
    }

    /// Pixel values `[images, 3, H, W]` of a prompt's images, in order.
    pub fn preprocess(&self, images: &[&DynamicImage], device: &Device) -> Result<Tensor> {
        let mut data = Vec::new();
        let (mut hh, mut ww) = (0, 0);
        for (i, img) in images.iter().enumerate() {
            let u8img = self
                .image_u8(img)
                .with_context(|| format!("preprocessing image {}", i + 1))?;
            (hh, ww) = (u8img.height() as usize, u8img.width() as usize);
            data.extend(self.normalize(&u8img));
        }
        Ok(Tensor::from_vec(data, (images.len(), 3, hh, ww), device)?)
    }
}
