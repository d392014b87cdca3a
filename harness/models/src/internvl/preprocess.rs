//! InternVL image preprocessing, identical to transformers' `InternVLProcessor` with the
//! GotOcr2 image processor: RGB conversion, dynamic tiling (closest aspect-ratio grid, a
//! thumbnail when there is more than one tile), bicubic resize, rescale and normalisation.
//!
//! The resampler reproduces Pillow's `Image.resize(..., BICUBIC)` bit for bit (fixed-point,
//! horizontal pass then vertical pass through an 8-bit intermediate). That is what
//! transformers' PIL backend and the original InternVL code run; transformers' torchvision
//! backend (torch's native uint8 antialiased bicubic) differs from it by at most a couple of
//! uint8 units on real images (the fixtures record the measured difference).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};

use crate::checkpoint::read_json_if_present as read_json;
pub use crate::preprocess::{push_normalized_chw, resize_bicubic};
use serde_json::Value;

/// ImageNet statistics, which InternVL uses (not CLIP's, the GotOcr2 class default).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Image-processor settings, read from `processor_config.json` (transformers 5.x, nested under
/// `image_processor`), `preprocessor_config.json` (4.x, flat) and, for the original
/// InternVLChatModel layout, `config.json` (`min_dynamic_patch`, `max_dynamic_patch`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Tile height and width in pixels (448).
    pub tile_height: u32,
    pub tile_width: u32,
    /// Dynamic tiling on/off. `InternVLProcessor` passes `crop_to_patches=True` whatever the
    /// saved image-processor config says (its `_defaults`), so this is true for InternVL.
    pub crop_to_patches: bool,
    pub min_patches: usize,
    pub max_patches: usize,
    pub use_thumbnail: bool,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// PIL resampling code; only 3 (bicubic) is supported.
    pub resample: u32,
    /// `<IMG_CONTEXT>` tokens per tile (256 for 448 px, patch 14, downsample 0.5).
    pub image_seq_length: usize,
}

impl Default for ProcessorConfig {
    /// The settings transformers' converter writes for every InternVL3-*-hf checkpoint.
    fn default() -> Self {
        Self {
            tile_height: 448,
            tile_width: 448,
            crop_to_patches: true,
            min_patches: 1,
            max_patches: 12,
            use_thumbnail: true,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: IMAGENET_MEAN,
            image_std: IMAGENET_STD,
            resample: 3,
            image_seq_length: 256,
        }
    }
}

fn field_u64(obj: &Value, key: &str, file: &Path) -> Result<Option<u64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                anyhow!(
                    "{}: field `{key}` must be a non-negative integer, got {v}",
                    file.display()
                )
            }),
    }
}

fn field_bool(obj: &Value, key: &str, file: &Path) -> Result<Option<bool>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) => Ok(Some(n.as_f64() != Some(0.0))),
        Some(v) => bail!(
            "{}: field `{key}` must be a boolean, got {v}",
            file.display()
        ),
    }
}

fn field_f64(obj: &Value, key: &str, file: &Path) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            anyhow!(
                "{}: field `{key}` must be a number, got {v}",
                file.display()
            )
        }),
    }
}

fn field_triple(obj: &Value, key: &str, file: &Path) -> Result<Option<[f32; 3]>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v.as_f64().ok_or_else(|| {
                    anyhow!(
                        "{}: field `{key}` must hold numbers, got {v}",
                        file.display()
                    )
                })? as f32;
            }
            Ok(Some(out))
        }
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(0.0) as f32;
            Ok(Some([x, x, x]))
        }
        Some(v) => bail!(
            "{}: field `{key}` must be 3 numbers, got {v}",
            file.display()
        ),
    }
}

impl ProcessorConfig {
    /// Reads the settings from a checkpoint folder. Files that are absent are skipped; a folder
    /// with none of them gets the InternVL3 defaults.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut cfg = Self::default();
        // Original InternVLChatModel config.json carries the tiling limits.
        let config_path = dir.join("config.json");
        if let Some(c) = read_json(&config_path)? {
            cfg.apply_model_config(&c, &config_path)?;
        }
        let pre = dir.join("preprocessor_config.json");
        if let Some(p) = read_json(&pre)? {
            cfg.apply_image_processor(&p, &pre)?;
            if let Some(n) = field_u64(&p, "image_seq_length", &pre)? {
                cfg.image_seq_length = n as usize;
            }
        }
        let proc = dir.join("processor_config.json");
        if let Some(p) = read_json(&proc)? {
            if let Some(ip) = p.get("image_processor") {
                cfg.apply_image_processor(ip, &proc)?;
            }
            if let Some(n) = field_u64(&p, "image_seq_length", &proc)? {
                cfg.image_seq_length = n as usize;
            }
        }
        cfg.validate(dir)?;
        Ok(cfg)
    }

    fn apply_model_config(&mut self, c: &Value, file: &Path) -> Result<()> {
        if let Some(n) = field_u64(c, "min_dynamic_patch", file)? {
            self.min_patches = n as usize;
        }
        if let Some(n) = field_u64(c, "max_dynamic_patch", file)? {
            self.max_patches = n as usize;
        }
        if let Some(b) = field_bool(c, "use_thumbnail", file)? {
            self.use_thumbnail = b;
        }
        if let Some(b) = field_bool(c, "dynamic_image_size", file)? {
            self.crop_to_patches = b;
        }
        if let Some(s) = field_u64(c, "force_image_size", file)? {
            self.tile_height = s as u32;
            self.tile_width = s as u32;
        }
        if let Some(n) = field_u64(c, "image_seq_length", file)? {
            self.image_seq_length = n as usize;
        } else if let (Some(v), Some(r)) = (
            c.get("vision_config"),
            field_f64(c, "downsample_ratio", file)?,
        ) {
            // Original layout: (image_size / patch_size)^2 * downsample_ratio^2.
            let image = field_u64(v, "image_size", file)?.unwrap_or(self.tile_width as u64) as f64;
            let patch = field_u64(v, "patch_size", file)?.unwrap_or(14) as f64;
            if patch > 0.0 {
                self.image_seq_length = ((image / patch).powi(2) * r * r).round() as usize;
            }
        }
        Ok(())
    }

    fn apply_image_processor(&mut self, p: &Value, file: &Path) -> Result<()> {
        // `crop_to_patches` in the saved config is ignored on purpose: InternVLProcessor
        // overrides it with True (see the field's doc).
        if let Some(n) = field_u64(p, "min_patches", file)? {
            self.min_patches = n as usize;
        }
        if let Some(n) = field_u64(p, "max_patches", file)? {
            self.max_patches = n as usize;
        }
        if let Some(b) = field_bool(p, "do_resize", file)? {
            self.do_resize = b;
        }
        if let Some(b) = field_bool(p, "do_rescale", file)? {
            self.do_rescale = b;
        }
        if let Some(x) = field_f64(p, "rescale_factor", file)? {
            self.rescale_factor = x;
        }
        if let Some(b) = field_bool(p, "do_normalize", file)? {
            self.do_normalize = b;
        }
        if let Some(m) = field_triple(p, "image_mean", file)? {
            self.image_mean = m;
        }
        if let Some(s) = field_triple(p, "image_std", file)? {
            self.image_std = s;
        }
        if let Some(r) = field_u64(p, "resample", file)? {
            self.resample = r as u32;
        }
        match p.get("size") {
            None | Some(Value::Null) => {}
            Some(Value::Number(_)) => {
                let s = field_u64(p, "size", file)?.unwrap_or(448) as u32;
                self.tile_height = s;
                self.tile_width = s;
            }
            Some(obj @ Value::Object(_)) => {
                let h = field_u64(obj, "height", file)?;
                let w = field_u64(obj, "width", file)?;
                let se = field_u64(obj, "shortest_edge", file)?;
                match (h, w, se) {
                    (Some(h), Some(w), _) => {
                        self.tile_height = h as u32;
                        self.tile_width = w as u32;
                    }
                    (_, _, Some(s)) => {
                        self.tile_height = s as u32;
                        self.tile_width = s as u32;
                    }
                    _ => bail!(
                        "{}: `size` needs height and width, got {obj}",
                        file.display()
                    ),
                }
            }
            Some(v) => bail!(
                "{}: `size` must be a number or an object, got {v}",
                file.display()
            ),
        }
        Ok(())
    }

    fn validate(&self, dir: &Path) -> Result<()> {
        let d = dir.display();
        if self.tile_height == 0 || self.tile_width == 0 {
            bail!("{d}: image size must be positive");
        }
        if self.min_patches == 0 || self.min_patches > self.max_patches {
            bail!(
                "{d}: need 1 <= min_patches <= max_patches, got {} and {}",
                self.min_patches,
                self.max_patches
            );
        }
        if self.resample != 3 {
            bail!(
                "{d}: only bicubic resampling (resample = 3) is supported, got {}",
                self.resample
            );
        }
        if self.image_std.contains(&0.0) {
            bail!("{d}: image_std must not contain 0");
        }
        Ok(())
    }

    /// The tiling grid `(columns, rows)` transformers picks for an image of `height`×`width`:
    /// the grid with the closest aspect ratio; on an exact tie the later (larger) grid wins
    /// only while the image area exceeds half the grid's pixel area.
    pub fn tile_grid(&self, height: u32, width: u32) -> (u32, u32) {
        if !self.crop_to_patches || self.max_patches <= 1 {
            return (1, 1);
        }
        // Same enumeration and (stable) area sort as get_all_supported_aspect_ratios.
        let max = self.max_patches as u32;
        let min = self.min_patches as u32;
        let mut grids = Vec::new();
        for w in 1..=max {
            for h in 1..=max {
                if w * h <= max && w * h >= min {
                    grids.push((w, h));
                }
            }
        }
        grids.sort_by_key(|(w, h)| w * h);
        let aspect = width as f64 / height as f64;
        let area = width as f64 * height as f64;
        let mut best_diff = f64::INFINITY;
        let mut best = (1, 1);
        for (c, r) in grids {
            let diff = (aspect - c as f64 / r as f64).abs();
            if diff < best_diff {
                best_diff = diff;
                best = (c, r);
            } else if diff == best_diff
                && area > 0.5 * self.tile_height as f64 * self.tile_width as f64 * (c * r) as f64
            {
                best = (c, r);
            }
        }
        best
    }

    /// Number of tiles an image of this size yields (grid tiles plus the thumbnail).
    pub fn num_tiles(&self, height: u32, width: u32) -> usize {
        let (c, r) = self.tile_grid(height, width);
        let n = (c * r) as usize;
        if n > 1 && self.use_thumbnail {
            n + 1
        } else {
            n
        }
    }

    /// The uint8 tiles of one image before rescale/normalize, in the processor's order
    /// (row-major grid tiles, then the thumbnail).
    pub fn tiles_u8(&self, image: &DynamicImage) -> Vec<RgbImage> {
        // transformers' convert_to_rgb is PIL's Image.convert("RGB"): alpha is dropped.
        let rgb = image.to_rgb8();
        let (w, h) = rgb.dimensions();
        let (tw, th) = (self.tile_width, self.tile_height);
        if !self.crop_to_patches || self.max_patches <= 1 {
            return vec![if self.do_resize {
                resize_bicubic(&rgb, tw, th)
            } else {
                rgb
            }];
        }
        let (cols, rows) = self.tile_grid(h, w);
        let big = resize_bicubic(&rgb, tw * cols, th * rows);
        let mut tiles = Vec::with_capacity((cols * rows + 1) as usize);
        for i in 0..cols * rows {
            let (c, r) = (i % cols, i / cols);
            tiles.push(image::imageops::crop_imm(&big, c * tw, r * th, tw, th).to_image());
        }
        if self.use_thumbnail && tiles.len() != 1 {
            tiles.push(resize_bicubic(&rgb, tw, th));
        }
        tiles
    }

    /// Rescale and normalise uint8 tiles into CHW f32, with transformers' numpy arithmetic
    /// (f64 multiply by the rescale factor, cast to f32, then f32 `(x - mean) / std`), so the
    /// values equal the processor's bit for bit.
    pub fn normalize_tiles(&self, tiles: &[RgbImage]) -> Vec<f32> {
        let mut out = Vec::with_capacity(tiles.iter().map(|t| t.as_raw().len()).sum());
        for t in tiles {
            push_normalized_chw(
                t,
                self.do_rescale.then_some(self.rescale_factor),
                self.do_normalize
                    .then_some((&self.image_mean, &self.image_std)),
                &mut out,
            );
        }
        out
    }

    /// Preprocesses the images of one prompt, in prompt order.
    pub fn preprocess(&self, images: &[&DynamicImage]) -> Result<PixelValues> {
        let mut tiles_per_image = Vec::with_capacity(images.len());
        let mut data = Vec::new();
        for img in images {
            let tiles = self.tiles_u8(img);
            tiles_per_image.push(tiles.len());
            if tiles
                .iter()
                .any(|t| t.dimensions() != (self.tile_width, self.tile_height))
            {
                bail!(
                    "tiles must be {}x{} (do_resize is off and the image has another size)",
                    self.tile_width,
                    self.tile_height
                );
            }
            data.extend(self.normalize_tiles(&tiles));
        }
        Ok(PixelValues {
            data,
            tiles_per_image,
            height: self.tile_height as usize,
            width: self.tile_width as usize,
        })
    }

    /// Decodes image files and preprocesses them; errors name the file.
    pub fn preprocess_paths(&self, paths: &[PathBuf]) -> Result<PixelValues> {
        let images = paths
            .iter()
            .map(|p| load_image(p))
            .collect::<Result<Vec<_>>>()?;
        self.preprocess(&images.iter().collect::<Vec<_>>())
    }
}

/// Decodes an image file as transformers' `load_image` does (EXIF orientation applied, 8-bit
/// RGB; see [`crate::image_io`]), naming the path in any error.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    crate::image_io::open(path)
}

/// Preprocessed tiles of one prompt: `data` is `[tiles, 3, height, width]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    pub data: Vec<f32>,
    /// Tiles per image, in prompt order; the `<IMG_CONTEXT>` count of image i is
    /// `image_seq_length * tiles_per_image[i]`.
    pub tiles_per_image: Vec<usize>,
    pub height: usize,
    pub width: usize,
}

impl PixelValues {
    pub fn num_tiles(&self) -> usize {
        self.tiles_per_image.iter().sum()
    }

    /// A `[tiles, 3, height, width]` f32 tensor.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.num_tiles(), 3, self.height, self.width),
            device,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_choice_follows_transformers() {
        let c = ProcessorConfig::default();
        assert_eq!(c.tile_grid(448, 448), (1, 1));
        assert_eq!(c.tile_grid(340, 700), (2, 1));
        // 4:5 portrait: 3x4 is closest, so 12 tiles + thumbnail.
        assert_eq!(c.tile_grid(400, 320), (3, 4));
        assert_eq!(c.num_tiles(400, 320), 13);
        // Exact tie between 1x1 and 2x2 for a square: the larger grid needs area > 0.5*4*448^2.
        assert_eq!(c.tile_grid(633, 633), (1, 1));
        assert_eq!(c.tile_grid(634, 634), (2, 2));
    }

    #[test]
    fn same_size_resize_is_identity() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bicubic(&img, 5, 4), img);
    }

    #[test]
    fn flat_image_stays_flat() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        let out = resize_bicubic(&img, 448, 448);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
        let out = resize_bicubic(&img, 9, 31);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }
}
