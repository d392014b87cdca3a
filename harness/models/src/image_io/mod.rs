//! Image files to the RGB pixels a model sees, the way FaceLLM's own inference loads them.
//!
//! transformers' `load_image` opens a file with Pillow, applies `ImageOps.exif_transpose`
//! and calls `convert("RGB")`. [`decode`] does the same, in one place for every caller (runs,
//! `generate`, `serve`, the parity tools):
//!
//! - the format is sniffed from the bytes (PNG, JPEG, WebP, BMP, TIFF), never the extension;
//! - the EXIF orientation (tag 274) is applied: JPEG APP1, PNG `eXIf`, WebP `EXIF`, TIFF's
//!   own IFD;
//! - grayscale is replicated to three channels; palette images are expanded; alpha is
//!   dropped, not composited (`convert("RGB")` drops it too);
//! - 16-bit samples are scaled to 8 bits as `round(v / 257)`. Pillow keeps only the high byte
//!   of 16-bit RGB and clips 16-bit grayscale (mode `I;16`: `convert("RGB")` saturates every
//!   value above 255, turning a photograph white); faceval deliberately differs there.
//! - JPEG goes through libjpeg-turbo with Pillow's settings ([`jpeg`]), so its RGB bytes are
//!   Pillow's, CMYK included (`tests/photo_parity.rs`).
//!
//! See `docs/datasets.md` ("Image files") for the list of encodings and how each is read.

mod jpeg;

use std::io::Cursor;

use anyhow::{anyhow, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Decode image bytes to 8-bit RGB with the EXIF orientation applied. Images over
/// [`MAX_PIXELS`] (Pillow's decompression-bomb limit) are refused from their header.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage> {
    decode_within(bytes, MAX_PIXELS)
}

/// Pillow's decompression-bomb limit, `2 * Image.MAX_IMAGE_PIXELS` pixels.
pub const MAX_PIXELS: u64 = jpeg::MAX_PIXELS;

/// [`decode`] with a tighter bound on width × height (a server's per-image limit, say),
/// checked from the header before any pixel memory is allocated.
pub fn decode_within(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage> {
    let max_pixels = max_pixels.min(MAX_PIXELS);
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| anyhow!("cannot read the image header: {e}"))?;
    let format = reader.format();
    if format == Some(ImageFormat::Jpeg) {
        let mut img = jpeg::decode(bytes, max_pixels)?;
        img.apply_orientation(jpeg::exif_orientation(bytes));
        return Ok(img);
    }
    let mut decoder = reader.into_decoder().map_err(|e| match format {
        None => anyhow!("not a known image format (PNG, JPEG, WebP, BMP or TIFF): {e}"),
        Some(f) => anyhow!("{f:?}: {e}"),
    })?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > max_pixels {
        return Err(anyhow!(
            "{w}x{h} pixels is over the limit of {max_pixels} pixels per image"
        ));
    }
    // A file whose EXIF block is damaged still decodes, upright as stored (as Pillow does).
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(DynamicImage::ImageRgb8(to_rgb8(img)))
}

/// Read and [`decode`] an image file; errors name the path.
pub fn open(path: &std::path::Path) -> Result<DynamicImage> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow!("cannot read image {}: {e}", path.display()))?;
    decode(&bytes).map_err(|e| anyhow!("cannot decode image {}: {e:#}", path.display()))
}

/// 8-bit RGB: gray replicated, alpha dropped, 16-bit and float samples scaled (not clipped).
fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        // `image`'s 16 → 8 bit conversion is round(v * 255 / 65535); float is clamped to
        // [0, 1] and scaled. Gray is replicated, alpha dropped.
        other => other.to_rgb8(),
    }
}

/// The format [`decode`] would read `bytes` as, if any.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    image::guess_format(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Luma, LumaA, Rgb, Rgba};

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    fn gradient() -> RgbImage {
        RgbImage::from_fn(7, 4, |x, y| Rgb([x as u8 * 30, y as u8 * 60, 200]))
    }

    #[test]
    fn gray_is_replicated_and_alpha_dropped() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_fn(3, 2, |x, y| {
            Luma([(x * 50 + y * 7) as u8])
        }));
        let rgb = decode(&png(&gray)).unwrap().into_rgb8();
        assert_eq!(rgb.get_pixel(2, 1), &Rgb([107, 107, 107]));
        let la = DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_pixel(2, 2, LumaA([90, 0])));
        assert_eq!(
            decode(&png(&la)).unwrap().into_rgb8().get_pixel(0, 0),
            &Rgb([90, 90, 90])
        );
        // Fully transparent pixels keep their colour: convert("RGB") drops alpha, it does not
        // composite over a background.
        let rgba =
            DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0])));
        assert_eq!(
            decode(&png(&rgba)).unwrap().into_rgb8().get_pixel(1, 1),
            &Rgb([10, 20, 30])
        );
    }

    #[test]
    fn sixteen_bit_is_scaled_not_clipped() {
        let g16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(4, 1, |x, _| {
            Luma([[0u16, 257, 32896, 65535][x as usize]])
        }));
        let rgb = decode(&png(&g16)).unwrap().into_rgb8();
        let row: Vec<u8> = (0..4).map(|x| rgb.get_pixel(x, 0)[0]).collect();
        assert_eq!(row, [0, 1, 128, 255]);
        let rgb16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            1,
            1,
            Rgb([65535u16, 0, 25700]),
        ));
        assert_eq!(
            decode(&png(&rgb16)).unwrap().into_rgb8().get_pixel(0, 0),
            &Rgb([255, 0, 100])
        );
    }

    #[test]
    fn palette_png_is_expanded() {
        // An indexed PNG written with the png crate: 2x1, palette [red, blue].
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, 2, 1);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[1, 0]).unwrap();
        }
        let rgb = decode(&out).unwrap().into_rgb8();
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([0, 0, 255]));
        assert_eq!(rgb.get_pixel(1, 0), &Rgb([255, 0, 0]));
    }

    /// A little-endian EXIF block (TIFF header, one IFD) holding only Orientation.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut e = b"II*\0".to_vec();
        e.extend(8u32.to_le_bytes()); // IFD0 offset
        e.extend(1u16.to_le_bytes()); // one entry
        e.extend(274u16.to_le_bytes()); // Orientation
        e.extend(3u16.to_le_bytes()); // SHORT
        e.extend(1u32.to_le_bytes()); // count
        e.extend(value.to_le_bytes());
        e.extend([0, 0]);
        e.extend(0u32.to_le_bytes()); // no next IFD
        e
    }

    #[test]
    fn png_exif_orientation_is_applied() {
        let img = gradient();
        let mut out = Vec::new();
        {
            let mut enc = image::codecs::png::PngEncoder::new(&mut out);
            enc.set_exif_metadata(exif_orientation(6)).unwrap();
            enc.write_image(img.as_raw(), 7, 4, image::ExtendedColorType::Rgb8)
                .unwrap();
        }
        let got = decode(&out).unwrap().into_rgb8();
        // 6 = "rotate 90° clockwise to view upright".
        assert_eq!(got.dimensions(), (4, 7));
        assert_eq!(got, image::imageops::rotate90(&img));
    }

    #[test]
    fn huge_images_are_refused_from_the_header() {
        // A real JPEG whose frame header is edited to claim 60000x60000 pixels (10.8 GB of
        // RGB): refused before any pixel memory is allocated.
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(gradient())
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let err = decode(&jpeg).unwrap_err().to_string();
        assert!(
            err.contains("60000x60000") && err.contains("over the limit"),
            "{err}"
        );
        // A server's tighter limit applies to every format.
        let png_bytes = png(&DynamicImage::ImageRgb8(gradient()));
        assert!(decode_within(&png_bytes, 28).is_ok());
        let err = decode_within(&png_bytes, 27).unwrap_err().to_string();
        assert!(err.contains("7x4") && err.contains("27 pixels"), "{err}");
    }

    #[test]
    fn unknown_bytes_are_an_error_that_says_what_is_read() {
        let err = decode(b"definitely not an image").unwrap_err().to_string();
        assert!(err.contains("PNG, JPEG, WebP, BMP or TIFF"), "{err}");
    }
}
