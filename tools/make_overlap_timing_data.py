#!/usr/bin/env python3
"""Timing data for `faceval overlap` at FairFace scale (docs/performance.md); not committed.

Writes, under the current folder: fairface_val/ with 10,954 reference JPEGs of 224x224 (the size
of FairFace's validation images) and bench/ with 5,000 benchmark JPEGs of 224-512 px (every
10th a 110% resized, re-encoded copy of a reference) and bench/set.csv for the manifest reader.
Images are random crops of five scikit-image photographs, colour-scaled and noised: fine for
timing, useless for precision (overlapping crops are real near copies of each other).
"""
import numpy as np, os, csv
from PIL import Image
from skimage import data
rng = np.random.default_rng(0)
photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
def draw(i):
    p = photos[i % len(photos)]
    h, w = p.shape[:2]
    s = int(rng.integers(96, min(h, w)))
    y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
    crop = p[y:y+s, x:x+s].astype(np.float32)
    crop = crop * rng.uniform(0.6, 1.4, 3) + rng.normal(0, 12, crop.shape)
    return Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
os.makedirs("fairface_val", exist_ok=True); os.makedirs("bench/img", exist_ok=True)
refs = []
for i in range(10954):
    path = f"fairface_val/{i+1}.jpg"
    draw(i).resize((224, 224), Image.BICUBIC).save(path, quality=95)
    refs.append(path)
rows = []
for i in range(5000):
    path = f"bench/img/{i:05}.jpg"
    if i % 10 == 0:
        im = Image.open(refs[int(rng.integers(0, len(refs)))]).convert("RGB")
        im = im.resize((int(224 * 1.1), int(224 * 1.1)), Image.BICUBIC)
        im.save(path, quality=80)
    else:
        size = int(rng.integers(224, 512))
        draw(100000 + i).resize((size, size), Image.BICUBIC).save(path, quality=90)
    rows.append((f"q{i:05}", f"img/{i:05}.jpg", ["a", "b", "c", "d"][i % 4]))
with open("bench/set.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["id", "image", "label"]); w.writerows(rows)
print("done")
