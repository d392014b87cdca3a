//! JPEG through libjpeg-turbo, with the settings Pillow decodes with.
//!
//! Pillow reads JPEG with libjpeg-turbo's defaults: the accurate integer IDCT (ISLOW) and
//! "fancy" (triangular) chroma upsampling; TurboJPEG's defaults are the same, so the RGB bytes
//! are Pillow's. Two Pillow rules are repeated here:
//!
//! - a CMYK (or YCCK) JPEG is read as inverted CMYK, Adobe's convention (`CMYK;I`), and
//!   `convert("RGB")` then computes `255 - k - c·(255 - k)/255` per channel with Pillow's
//!   rounding ([`cmyk_to_rgb`]);
//! - libjpeg warnings about damaged data do not stop Pillow, except running out of data, which
//!   Pillow reports as a truncated file. The same here.
//!
//! Written over the raw `turbojpeg-sys` bindings rather than the `turbojpeg` crate because that
//! crate turns a warning into an error without saying it was one, and a warning still leaves a
//! complete image that Pillow would use.

use std::ffi::{c_int, CStr};

use anyhow::{anyhow, bail, Result};
use image::{DynamicImage, RgbImage};
use turbojpeg_sys as tj;

/// Pillow's decompression-bomb limit (`2 * Image.MAX_IMAGE_PIXELS`): larger images are refused
/// before any pixel memory is allocated.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// libjpeg's JWRN_JPEG_EOF message: the data ended before the image did.
const TRUNCATED: &str = "Premature end of JPEG file";

/// One TurboJPEG decompressor instance, destroyed on drop.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Result<Self> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked below.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            bail!("libjpeg-turbo could not start a decompressor (out of memory?)");
        }
        Ok(Self(handle))
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is live for &self.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    fn set(&self, param: tj::TJPARAM, value: c_int) -> Result<()> {
        // SAFETY: the handle is live for &self.
        if unsafe { tj::tj3Set(self.0, param as c_int, value) } != 0 {
            bail!("{}", self.message());
        }
        Ok(())
    }

    /// The message of the last failure, and whether it was only a warning.
    fn message(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    fn last_was_warning(&self) -> bool {
        // SAFETY: the handle is live for &self.
        unsafe { tj::tj3GetErrorCode(self.0) == tj::TJERR_TJERR_WARNING as c_int }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Decode a JPEG file's bytes to 8-bit RGB as Pillow's `open(...).convert("RGB")` does
/// (orientation is the caller's business); images over `max_pixels` are refused from the
/// header.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage> {
    let d = Decompressor::new()?;
    // SAFETY: the pointer and length describe `bytes`, which outlives the call.
    if unsafe { tj::tj3DecompressHeader(d.0, bytes.as_ptr(), bytes.len() as _) } != 0 {
        bail!("JPEG header: {}", d.message());
    }
    let (width, height) = (
        d.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        d.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    if width <= 0 || height <= 0 {
        bail!("JPEG header gives no size ({width}x{height})");
    }
    let (w, h) = (width as usize, height as usize);
    if (w as u64) * (h as u64) > max_pixels {
        bail!("JPEG of {w}x{h} pixels is over the limit of {max_pixels} pixels per image");
    }
    let precision = d.get(tj::TJPARAM_TJPARAM_PRECISION);
    if precision != 8 {
        bail!("{precision}-bit JPEG samples are not supported (8-bit only, as Pillow)");
    }
    let cmyk = matches!(
        d.get(tj::TJPARAM_TJPARAM_COLORSPACE) as tj::TJCS,
        tj::TJCS_TJCS_CMYK | tj::TJCS_TJCS_YCCK
    );
    // Pillow's own settings, stated rather than left to the library's defaults.
    d.set(tj::TJPARAM_TJPARAM_FASTDCT, 0)?;
    d.set(tj::TJPARAM_TJPARAM_FASTUPSAMPLE, 0)?;
    let channels = if cmyk { 4 } else { 3 };
    let format = if cmyk {
        tj::TJPF_TJPF_CMYK
    } else {
        tj::TJPF_TJPF_RGB
    };
    let mut pixels = vec![0u8; w * h * channels];
    // SAFETY: `pixels` holds height rows of pitch = width * channels bytes, as the format needs.
    let status = unsafe {
        tj::tj3Decompress8(
            d.0,
            bytes.as_ptr(),
            bytes.len() as _,
            pixels.as_mut_ptr(),
            (w * channels) as c_int,
            format as c_int,
        )
    };
    if status != 0 {
        let message = d.message();
        // A warning leaves a complete image, which Pillow uses; running out of data is the
        // one warning Pillow turns into an error ("image file is truncated").
        if !d.last_was_warning() || message.contains(TRUNCATED) {
            bail!("JPEG: {message}");
        }
    }
    let rgb = if cmyk { cmyk_to_rgb(&pixels) } else { pixels };
    RgbImage::from_raw(width as u32, height as u32, rgb)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| anyhow!("JPEG of {w}x{h}: pixel buffer has the wrong size"))
}

/// Stored (Adobe-inverted) CMYK to RGB, as Pillow's `CMYK;I` unpacking followed by
/// `convert("RGB")`: with c, k the un-inverted inks, `out = clip(nk - muldiv255(c, nk))`,
/// nk = 255 - k, and `muldiv255(a, b) = ((t >> 8) + t) >> 8` for t = a·b + 128.
pub fn cmyk_to_rgb(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() / 4 * 3);
    for px in stored.chunks_exact(4) {
        // Inverting the stored values gives the inks; nk = 255 - k is then the stored k.
        let nk = px[3] as u32;
        for &stored_c in &px[..3] {
            let c = 255 - stored_c as u32;
            let t = c * nk + 128;
            let muldiv = ((t >> 8) + t) >> 8;
            out.push(nk.saturating_sub(muldiv) as u8);
        }
    }
    out
}

/// The EXIF orientation of a JPEG: from the first APP1 segment that starts with `Exif\0\0`,
/// the one Pillow reads. Absent or unreadable EXIF is no rotation, as in Pillow.
///
/// The segment walk is written here because the decoder above does not report markers, and
/// asking `image`'s JPEG decoder for them would run a second parser over every file.
pub fn exif_orientation(bytes: &[u8]) -> image::metadata::Orientation {
    use image::metadata::Orientation;
    exif_block(bytes)
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

fn exif_block(bytes: &[u8]) -> Option<&[u8]> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *bytes.get(i)? == 0xFF && *bytes.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        match marker {
            // Start of scan or end of image: EXIF comes before either.
            0xDA | 0xD9 => return None,
            // Markers without a length field.
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]) as usize;
        if len < 2 {
            return None;
        }
        let body = bytes.get(i + 4..i + 2 + len)?;
        if marker == 0xE1 {
            if let Some(tiff) = body.strip_prefix(b"Exif\0\0") {
                return Some(tiff);
            }
        }
        i += 2 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_matches_pillows_formula_at_the_corners() {
        // Stored values are inverted inks: 255 stored = no ink.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255]), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        // c = 100, k = 55: nk = 200, t = 20128, muldiv = (78 + 20128) >> 8 = 78 → 122.
        assert_eq!(cmyk_to_rgb(&[155, 255, 0, 200]), [122, 200, 0]);
    }

    #[test]
    fn exif_walk_survives_every_truncation() {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, b'J', b'F'];
        jpeg.extend([0xFF, 0xE1, 0x00, 0x0C]);
        jpeg.extend(b"Exif\0\0MM\0*");
        jpeg.extend([0xFF, 0xDA]);
        assert_eq!(exif_block(&jpeg), Some(&b"MM\0*"[..]));
        for n in 0..jpeg.len() {
            let _ = exif_block(&jpeg[..n]);
            let _ = exif_orientation(&jpeg[..n]);
        }
    }

    #[test]
    fn damaged_jpegs_are_errors_not_panics() {
        assert!(decode(b"\xFF\xD8\xFF", MAX_PIXELS).is_err());
        assert!(decode(b"", MAX_PIXELS).is_err());
    }
}
