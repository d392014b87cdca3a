#!/usr/bin/env python3
"""Write the overlap-audit fixtures: reference images, their re-encodings, and near misses.

Run by hand (never by CI), from the repository root:

    python tools/make_overlap_fixtures.py     # writes harness/eval/tests/fixtures/overlap/

Needs: pillow, numpy, scikit-image (photographs from ``skimage.data``: nothing is downloaded).

``reference/`` plays a training set (FairFaceGPT's FairFace validation images); ``benchmark/``
plays a benchmark laid out for the ``folders`` reader (one folder per class), holding copies of
reference images as benchmarks make them (same pixels under another name, PNG <-> JPEG,
JPEG re-encoding, resizing by -10% and +10%) and near misses that must not match (another crop
of the same photograph, a mirrored copy, another face drawing, another photograph).
``expected.json`` says, per benchmark file, which reference it copies and how, or that it is a
miss; ``harness/cli/tests/overlap.rs`` asserts that ``faceval overlap`` finds exactly those.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "harness/eval/tests/fixtures/overlap"
FACES = ROOT / "harness/models/tests/fixtures/internvl/images"
SIZE = 160


def square(img: Image.Image, box) -> Image.Image:
    return img.crop(box).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    ref, bench = OUT / "reference", OUT / "benchmark"
    for d in [ref / "train", bench / "a", bench / "b"]:
        d.mkdir(parents=True)
    astronaut = Image.fromarray(skimage.data.astronaut())
    chelsea = Image.fromarray(skimage.data.chelsea())
    coffee = Image.fromarray(skimage.data.coffee())
    face448 = Image.open(FACES / "face_448.png").convert("RGB")
    face380 = Image.open(FACES / "face_380x380.png").convert("RGB")

    refs = {
        "astronaut.png": square(astronaut, (140, 20, 380, 260)),
        "face448.png": face448.resize((SIZE, SIZE), Image.BICUBIC),
        "chelsea.jpg": square(chelsea, (60, 0, 360, 300)),
        "coffee.png": square(coffee, (100, 50, 400, 350)),
    }
    for name, im in refs.items():
        kw = {"quality": 92} if name.endswith(".jpg") else {}
        im.save(ref / "train" / name, **kw)
    # What a decoder reads from each reference file (the JPEG one differs from `refs`).
    decoded = {n: Image.open(ref / "train" / n).convert("RGB") for n in refs}

    expected: dict[str, dict] = {}

    def put(rel: str, im: Image.Image, kind: str, source: str | None, **kw) -> None:
        im.save(bench / rel, **kw)
        expected[rel] = {"kind": kind, "reference": f"train/{source}" if source else None}

    # Copies.
    put("a/renamed.png", decoded["astronaut.png"], "exact", "astronaut.png")
    put("a/jpeg-as-png.png", decoded["chelsea.jpg"], "exact", "chelsea.jpg")
    put("a/reencoded.jpg", decoded["astronaut.png"], "near", "astronaut.png", quality=70)
    put("a/png-to-jpeg.jpg", decoded["coffee.png"], "near", "coffee.png", quality=85)
    put("b/shrunk.png", decoded["face448.png"].resize((144, 144), Image.BICUBIC), "near", "face448.png")
    put("b/enlarged.jpg", decoded["chelsea.jpg"].resize((176, 176), Image.BICUBIC), "near", "chelsea.jpg", quality=90)
    # Near misses.
    put("a/other-crop.png", square(astronaut, (190, 60, 430, 300)), "miss", None)
    put("b/mirrored.png", ImageOps.mirror(decoded["astronaut.png"]), "miss", None)
    put("b/other-face.png", face380.resize((SIZE, SIZE), Image.BICUBIC), "miss", None)
    put("b/other-photo.jpg", square(coffee, (0, 0, 300, 300)), "miss", None, quality=90)

    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(expected)} benchmark files, {len(refs)} references, {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
