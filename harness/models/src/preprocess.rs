//! Image preprocessing shared by every model family's processor: Pillow-exact bicubic
//! resampling ([`resize_bicubic`]) and transformers' numpy rescale/normalise arithmetic
//! ([`push_normalized_chw`]). Each family keeps its own geometry (tiling, cropping, resizing
//! rules) and calls these for the pixels.

use image::RgbImage;

// ---------------------------------------------------------------------------------------------
// Pillow-compatible bicubic resampling.
//
// Hand-written because neither `image` (CatmullRom: float arithmetic, no 8-bit intermediate,
// a different support when downscaling) nor `fast_image_resize` promises Pillow's exact
// integers; matching transformers to the uint8 needs Pillow's algorithm: per-axis filters
// scaled by the downscale factor, coefficients normalised and quantised to 22 fractional bits,
// horizontal pass into an 8-bit image, then the vertical pass.
// ---------------------------------------------------------------------------------------------

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic_filter(x: f64) -> f64 {
    // Keys cubic with a = -0.5, as Pillow.
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first input index, and the quantised weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn precompute_coeffs(in_size: u32, out_size: u32) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    let (in0, in1) = (0.0f64, in_size as f64);
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut weights = vec![0i32; out_size as usize * ksize];
    let ss = 1.0 / filterscale;
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = in0 + (xx as f64 + 0.5) * scale;
        // C's (int) truncation toward zero, then clamping, as Pillow.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let q = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (q - 0.5) as i32
            } else {
                (q + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

#[inline]
fn clip8(v: i64) -> u8 {
    let v = v >> PRECISION_BITS;
    v.clamp(0, 255) as u8
}

/// Resizes an RGB image with Pillow's BICUBIC filter; same size returns a copy (as Pillow).
pub fn resize_bicubic(src: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    if (in_w, in_h) == (out_w, out_h) {
        return src.clone();
    }
    let horiz = precompute_coeffs(in_w, out_w);
    let mut vert = precompute_coeffs(in_h, out_h);
    let need_h = in_w != out_w;
    let need_v = in_h != out_h;
    let half = 1i64 << (PRECISION_BITS - 1);

    // Horizontal pass, only over the rows the vertical pass reads (as Pillow).
    let (tmp, tmp_w, tmp_h) = if need_h {
        let first = vert.bounds[0].0;
        let last = vert
            .bounds
            .last()
            .map(|(s, n)| s + n)
            .unwrap_or(in_h as usize);
        for b in vert.bounds.iter_mut() {
            b.0 -= first;
        }
        let rows = last - first;
        let mut out = vec![0u8; rows * out_w as usize * 3];
        let raw = src.as_raw();
        let stride = in_w as usize * 3;
        for y in 0..rows {
            let row = &raw[(y + first) * stride..(y + first + 1) * stride];
            for xx in 0..out_w as usize {
                let (xmin, n) = horiz.bounds[xx];
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + n];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                for (x, &kw) in k.iter().enumerate() {
                    let p = (xmin + x) * 3;
                    s0 += row[p] as i64 * kw as i64;
                    s1 += row[p + 1] as i64 * kw as i64;
                    s2 += row[p + 2] as i64 * kw as i64;
                }
                let o = (y * out_w as usize + xx) * 3;
                out[o] = clip8(s0);
                out[o + 1] = clip8(s1);
                out[o + 2] = clip8(s2);
            }
        }
        (out, out_w as usize, rows)
    } else {
        (src.as_raw().clone(), in_w as usize, in_h as usize)
    };
    if !need_v {
        debug_assert_eq!(tmp_h, out_h as usize);
        return RgbImage::from_raw(out_w, out_h, tmp).expect("buffer sized for the output");
    }
    let mut out = vec![0u8; out_h as usize * tmp_w * 3];
    let stride = tmp_w * 3;
    for yy in 0..out_h as usize {
        let (ymin, n) = vert.bounds[yy];
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        for xx in 0..tmp_w {
            let (mut s0, mut s1, mut s2) = (half, half, half);
            for (y, &kw) in k.iter().enumerate() {
                let p = (ymin + y) * stride + xx * 3;
                s0 += tmp[p] as i64 * kw as i64;
                s1 += tmp[p + 1] as i64 * kw as i64;
                s2 += tmp[p + 2] as i64 * kw as i64;
            }
            let o = (yy * tmp_w + xx) * 3;
            out[o] = clip8(s0);
            out[o + 1] = clip8(s1);
            out[o + 2] = clip8(s2);
        }
    }
    RgbImage::from_raw(tmp_w as u32, out_h, out).expect("buffer sized for the output")
}

/// Appends `img` as CHW f32 with transformers' numpy arithmetic: an f64 multiply by the
/// rescale factor cast to f32, then f32 `(x - mean) / std` per channel, so that the values
/// equal the Python processors' bit for bit. Shared by every model's image processor.
pub fn push_normalized_chw(
    img: &RgbImage,
    rescale_factor: Option<f64>,
    mean_std: Option<(&[f32; 3], &[f32; 3])>,
    out: &mut Vec<f32>,
) {
    let (w, h) = img.dimensions();
    let raw = img.as_raw();
    out.reserve(raw.len());
    for c in 0..3 {
        for p in 0..(w * h) as usize {
            let v = raw[p * 3 + c];
            let mut x = match rescale_factor {
                Some(f) => (v as f64 * f) as f32,
                None => v as f32,
            };
            if let Some((mean, std)) = mean_std {
                x = (x - mean[c]) / std[c];
            }
            out.push(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
