#!/usr/bin/env python3
"""Write one real photograph in every encoding faceval reads, with transformers' answers.

Run by hand (never by CI), from the repository root, after the InternVL fixtures exist:

    python tools/make_photo_fixtures.py            # writes harness/models/tests/fixtures/photos/
    python tools/make_photo_fixtures.py --out DIR

Needs: torch (CPU), transformers 5.x, pillow, numpy, scikit-image (for the photograph:
``skimage.data.astronaut()``, shipped inside the package, so nothing is downloaded).

For every file it records what FaceLLM's own inference does with it:
``transformers.image_utils.load_image`` (Pillow: ``ImageOps.exif_transpose``, then
``convert("RGB")``), the PIL image processor, and greedy generation with
``InternVLForConditionalGeneration`` on the tiny ``tiny-300m-current`` fixture checkpoint
(float32, eager attention). ``harness/models/tests/photo_parity.rs`` holds faceval to it:

* ``rgb/<sha256 prefix>.png``: the RGB pixels ``load_image`` produced (lossless; files that
  decode to the same pixels share one), which faceval's decoder must reproduce byte for byte (JPEG included: Pillow decodes JPEG with
  libjpeg-turbo, ISLOW IDCT, fancy upsampling, as faceval does).
* ``manifest.json``: per file the encoding, Pillow's mode, the EXIF orientation, the size
  after transposing, the sha256 of the RGB bytes, and transformers' greedy token ids with the
  top-5 log-probabilities of every step.

One deliberate difference: 16-bit PNGs. Pillow keeps only the high byte of 16-bit RGB, and
clips 16-bit grayscale (mode ``I;16``) to 255 on ``convert("RGB")``, which turns a photograph
white; faceval scales both to 8 bits (``round(v / 257)``). For that file the reference pixels and answers are computed from the
scaled image, and the manifest also records the sha256 of Pillow's clipped pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import skimage
import skimage.data
import torch
import transformers
from PIL import Image, features
from transformers import AutoProcessor, InternVLForConditionalGeneration
from transformers.image_utils import load_image

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "harness/models/tests/fixtures/internvl/tiny-300m-current"
PROMPT = "Describe the face in this image."
MAX_NEW_TOKENS = 4
TOP = 5


def photo() -> Image.Image:
    """A 320x240 crop of skimage's astronaut portrait (Eileen Collins), landscape so that a
    90-degree EXIF rotation changes the size."""
    a = skimage.data.astronaut()  # 512x512x3 uint8
    return Image.fromarray(a[10:250, 120:440].copy(), "RGB")


def exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[274] = orientation
    return e.tobytes()


def png16(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit RGB PNG, written by hand (Pillow cannot write 16-bit RGB)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_files(out: Path) -> dict[str, dict]:
    """The photo in every encoding. Returns {file: {"encoding": ..., "scaled_from": ...}}."""
    img = photo()
    gray = img.convert("L")
    files: dict[str, dict] = {}

    def save(name: str, im: Image.Image, encoding: str, **kw) -> None:
        im.save(out / name, **kw)
        files[name] = {"encoding": encoding}

    # JPEG (Pillow's libjpeg-turbo encoder).
    save("astronaut.jpg", img, "JPEG baseline, 4:2:0, quality 90", quality=90)
    save("astronaut-444.jpg", img, "JPEG baseline, 4:4:4, quality 95", quality=95, subsampling=0)
    save("astronaut-422.jpg", img, "JPEG baseline, 4:2:2, quality 85", quality=85, subsampling=1)
    save("astronaut-progressive.jpg", img, "JPEG progressive, 4:2:0, quality 90", quality=90, progressive=True)
    save("astronaut-gray.jpg", gray, "JPEG grayscale", quality=90)
    save("astronaut-cmyk.jpg", img.convert("CMYK"), "JPEG CMYK (Adobe, inverted)", quality=90)
    save("astronaut-exif6.jpg", img, "JPEG with EXIF orientation 6 (rotate 90 CW)", quality=90, exif=exif(6))
    # Sizes that are not whole 16x16 blocks exercise the upsampler's edge rows and columns.
    save("astronaut-odd.jpg", img.crop((0, 0, 317, 237)), "JPEG 4:2:0, 317x237 (partial blocks)", quality=90)
    save("astronaut-optimized.jpg", img, "JPEG optimized Huffman tables, restart every row", quality=80, optimize=True, restart_marker_rows=1)
    # Bytes between the last scan and EOI: libjpeg warns ("extraneous bytes before marker"),
    # Pillow decodes the image anyway.
    data = (out / "astronaut.jpg").read_bytes()
    assert data.endswith(b"\xff\xd9")
    (out / "astronaut-extraneous.jpg").write_bytes(data[:-2] + b"\x00\x13\x37" + data[-2:])
    files["astronaut-extraneous.jpg"] = {"encoding": "JPEG 4:2:0 with 3 extraneous bytes before EOI (a libjpeg warning)"}
    # PNG.
    save("astronaut.png", img, "PNG RGB 8-bit")
    save("astronaut-gray.png", gray, "PNG grayscale 8-bit")
    save("astronaut-palette.png", img.quantize(256), "PNG palette (256 colours)")
    rgba = img.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[..., 3] = np.linspace(0, 255, a.shape[1], dtype=np.uint8)[None, :]
    save("astronaut-rgba.png", Image.fromarray(a, "RGBA"), "PNG RGBA (alpha dropped)")
    save("astronaut-exif8.png", img, "PNG with eXIf orientation 8 (rotate 90 CCW)", exif=exif(8))
    # 16 bits: the 8-bit photo times 257 plus noise below half a step, so round(v / 257) is it.
    rng = np.random.default_rng(7)
    v8 = np.asarray(img).astype(np.int64)
    v16 = np.clip(v8 * 257 + rng.integers(-120, 121, size=v8.shape), 0, 65535).astype(np.uint16)
    png16(out / "astronaut-16bit.png", v16)
    files["astronaut-16bit.png"] = {"encoding": "PNG RGB 16-bit", "scaled_from": "astronaut.png"}
    g8 = np.asarray(gray).astype(np.int64)
    g16 = np.clip(g8 * 257 + rng.integers(-120, 121, size=g8.shape), 0, 65535).astype(np.uint16)
    Image.fromarray(g16).save(out / "astronaut-gray16.png")
    files["astronaut-gray16.png"] = {"encoding": "PNG grayscale 16-bit", "scaled_from": "astronaut-gray.png"}
    # WebP.
    save("astronaut-lossless.webp", img, "WebP lossless", lossless=True)
    save("astronaut-exif3.webp", img, "WebP lossless with EXIF orientation 3 (rotate 180)", lossless=True, exif=exif(3))
    save("astronaut.webp", img, "WebP lossy, quality 90", quality=90)
    # TIFF and BMP.
    save("astronaut.tiff", img, "TIFF RGB, deflate", compression="tiff_adobe_deflate")
    save("astronaut-lzw.tiff", img, "TIFF RGB, LZW", compression="tiff_lzw")
    save("astronaut-exif6.tiff", img, "TIFF with Orientation tag 6", compression="tiff_lzw", tiffinfo={274: 6})
    save("astronaut.bmp", img, "BMP 24-bit")
    return files


def processor_and_model():
    spec = importlib.util.spec_from_file_location("mif", ROOT / "tools/make_internvl_fixtures.py")
    mif = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mif)
    mif.allow_missing_video_processor()
    try:
        processor = AutoProcessor.from_pretrained(CHECKPOINT, backend="pil")
    except (TypeError, ValueError):
        processor = AutoProcessor.from_pretrained(CHECKPOINT)
    backend = type(processor.image_processor).__name__
    assert backend.endswith("Pil"), f"need the PIL image processor, got {backend}"
    model = InternVLForConditionalGeneration.from_pretrained(
        CHECKPOINT, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return processor, model, backend


@torch.no_grad()
def answer(processor, model, image: Image.Image) -> dict:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[image], text=prompt, return_tensors="pt")
    out = model.generate(
        **inputs,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    n = inputs["input_ids"].shape[1]
    tokens = out.sequences[0, n:].tolist()
    steps = []
    for scores in out.scores:
        lp = torch.log_softmax(scores[0].to(torch.float64), dim=-1)
        v, i = torch.topk(lp, TOP)
        steps.append([[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())])
    return {"prompt": prompt, "generated_ids": tokens, "top_logprobs": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "harness/models/tests/fixtures/photos"))
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(0)
    files = write_files(out)
    processor, model, backend = processor_and_model()
    record = {
        "photo": "skimage.data.astronaut() cropped to rows 10:250, columns 120:440",
        "checkpoint": "harness/models/tests/fixtures/internvl/tiny-300m-current",
        "prompt": PROMPT,
        "max_new_tokens": MAX_NEW_TOKENS,
        "image_processor_backend": backend,
        "versions": {
            "python": sys.version.split()[0],
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "pillow": PIL.__version__,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libwebp": features.version("webp"),
            "libtiff": features.version("libtiff"),
            "scikit_image": skimage.__version__,
        },
        "files": {},
    }
    for name, info in files.items():
        opened = Image.open(out / name)
        entry = dict(info)
        entry["pillow_mode"] = opened.mode
        entry["exif_orientation"] = int(opened.getexif().get(274, 1))
        pil_rgb = load_image(str(out / name))
        assert pil_rgb.mode == "RGB"
        if "scaled_from" in info:
            entry["pillow_clipped_rgb_sha256"] = hashlib.sha256(pil_rgb.tobytes()).hexdigest()
            reference = load_image(str(out / info["scaled_from"]))
        else:
            reference = pil_rgb
        entry["size_wh"] = list(reference.size)
        entry["rgb_sha256"] = hashlib.sha256(reference.tobytes()).hexdigest()
        entry["rgb_png"] = f"rgb/{entry['rgb_sha256'][:16]}.png"
        if not (out / entry["rgb_png"]).exists():
            (out / "rgb").mkdir(exist_ok=True)
            reference.save(out / entry["rgb_png"], optimize=True)
        entry.update(answer(processor, model, reference))
        record["files"][name] = entry
        print(f"{name:28} {entry['pillow_mode']:5} {entry['size_wh']} {entry['generated_ids']}")
    (out / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
