#!/usr/bin/env python3
"""The transformers half of scripts/gpu-check.sh: an InternVL3-1B-sized random-weight
checkpoint, a small image set + task for `faceval bench`, transformers timings on the same
weights and inputs, and the side-by-side summary.

Run by hand or by gpu-check.sh (needs torch, transformers >= 5, Pillow, safetensors):

    python3 tools/gpu_side_by_side.py make-checkpoint --out /tmp/ivl1b --size 1b --device cuda
    python3 tools/gpu_side_by_side.py make-data --out /tmp/sbs-data --n 16
    python3 tools/gpu_side_by_side.py transformers-bench --model /tmp/ivl1b --data /tmp/sbs-data \
        --device cuda --dtype bf16 --out hf.json
    python3 tools/gpu_side_by_side.py summarize --results gpu-results

The checkpoint: InternVL3-1B's shapes (InternViT-300M: hidden 1024, 24 layers, 16 heads, MLP
4096; Qwen2: hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151674, tied
lm_head), transformers' own random init, saved with `save_pretrained` in bf16. The real
tokenizer is not available offline, so the tiny parity fixture's tokenizer is used and its
vocabulary padded with plain tokens `x<id>` up to 151674: the ids the prompt uses (chat
markers, `<IMG_CONTEXT>` = 365, `<|im_end|>` = 362) are the fixture's, and every id the random
model can emit decodes on both sides. Speed depends on the shapes, not on the token ids.

Timings (transformers): per item, after `--warmup` items, with torch.cuda.synchronize()
around each stage — preprocess (processor), vision (get_image_features), prefill (prompt
forward through the first token's logits), decode (the remaining greedy tokens, one forward
each with the KV cache, argmax read back each step as faceval does), and separately the whole
`model.generate(do_sample=False)` call. Peak VRAM is torch.cuda.max_memory_allocated (and
reserved) over the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE_CKPT = REPO / "harness/models/tests/fixtures/internvl/tiny-300m-current"
PROMPT = "Describe the face in this image."
TASK_NAME = "gpu-side-by-side"

# InternVL3-1B (InternViT-300M-448px-V2_5 + Qwen2.5-0.5B), see shared reference notes.
SIZES = {
    "1b": dict(
        vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
        text=dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                  intermediate_size=4864, vocab_size=151674),
    ),
    # --cpu-dry-run: the same code path at a size a laptop CPU runs in seconds.
    "tiny": dict(
        vision=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=4096),
    ),
}


def log(msg: str) -> None:
    print(f"[gpu_side_by_side] {msg}", file=sys.stderr, flush=True)


def allow_missing_video_processor() -> None:
    """InternVLProcessor insists on a video processor; this benchmark sends images only.

    The checkpoint written here carries no video_preprocessor_config.json (it is built from the
    tiny fixture's processor files), and the video processor needs torchvision, so drop only the
    video slot from the processor's attributes — with or without torchvision (the H200 check of
    2026-11-28 failed to load the processor otherwise). Images and text are unaffected.
    """
    from transformers import InternVLProcessor

    attributes = InternVLProcessor.get_attributes()
    InternVLProcessor.get_attributes = classmethod(lambda cls: [a for a in attributes if a != "video_processor"])


def torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}[name]


# ---------------------------------------------------------------------------------------------
# make-checkpoint
# ---------------------------------------------------------------------------------------------


def padded_tokenizer_json(vocab_size: int) -> dict:
    tok = json.loads((FIXTURE_CKPT / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    used = set(vocab.values()) | {a["id"] for a in tok["added_tokens"]}
    if max(used) >= vocab_size:
        raise SystemExit(f"fixture tokenizer uses id {max(used)}, beyond vocab_size {vocab_size}")
    for i in range(vocab_size):
        if i not in used:
            vocab[f"x{i}"] = i
    return tok


def make_checkpoint(args) -> None:
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

    size = SIZES[args.size]
    gen = json.loads((FIXTURE_CKPT / "generation_config.json").read_text())
    fixture_cfg = json.loads((FIXTURE_CKPT / "config.json").read_text())
    image_token_id = fixture_cfg["image_token_id"]
    vision = InternVLVisionConfig(
        **size["vision"],
        hidden_act="gelu",
        image_size=[448, 448],
        patch_size=[14, 14],
        layer_norm_eps=1e-6,
        norm_type="layer_norm",
        attention_bias=True,
        use_qk_norm=False,
        use_absolute_position_embeddings=True,
        use_mean_pooling=True,
        layer_scale_init_value=0.1,
    )
    text = Qwen2Config(
        **size["text"],
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=size["text"]["num_hidden_layers"],
        tie_word_embeddings=True,
        bos_token_id=gen["bos_token_id"],
        eos_token_id=gen["eos_token_id"],
        pad_token_id=None,
    )
    cfg = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        image_seq_length=256,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    cfg.architectures = ["InternVLForConditionalGeneration"]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    # Built on the target device in the target dtype: initialising 0.9B parameters there takes
    # well under a second on a GPU, minutes on a CPU.
    with torch.device(args.device):
        model = InternVLForConditionalGeneration._from_config(cfg, dtype=torch_dtype(args.dtype))
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    for name in ["tokenizer_config.json", "chat_template.jinja", "processor_config.json", "generation_config.json"]:
        shutil.copy(FIXTURE_CKPT / name, out / name)
    (out / "tokenizer.json").write_text(json.dumps(padded_tokenizer_json(size["text"]["vocab_size"])))
    weight_bytes = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    info = {
        "size": args.size,
        "dtype": args.dtype,
        "params": n_params,
        "weight_file_bytes": weight_bytes,
        "image_token_id": image_token_id,
        "vocab_size": size["text"]["vocab_size"],
        "seconds": round(time.perf_counter() - t0, 2),
        "folder": str(out),
    }
    (out / "side_by_side_checkpoint.json").write_text(json.dumps(info, indent=1))
    log(f"checkpoint: {n_params / 1e6:.1f}M parameters, {weight_bytes / 2**20:.0f} MiB in {out}")
    print(json.dumps(info))


# ---------------------------------------------------------------------------------------------
# make-data
# ---------------------------------------------------------------------------------------------


def draw_image(k: int, side: int):
    """A seeded face-like drawing; any image works, the model's weights are random."""
    import random

    from PIL import Image, ImageDraw

    rnd = random.Random(1000 + k)
    img = Image.new("RGB", (side, side), tuple(rnd.randrange(40, 200) for _ in range(3)))
    d = ImageDraw.Draw(img)
    cx, cy, r = side // 2, side // 2, side // 3
    skin = (rnd.randrange(120, 240), rnd.randrange(90, 200), rnd.randrange(70, 170))
    d.ellipse([cx - r, cy - int(1.2 * r), cx + r, cy + int(1.2 * r)], fill=skin)
    for ex in (-1, 1):
        d.ellipse([cx + ex * r // 2 - 12, cy - r // 3 - 8, cx + ex * r // 2 + 12, cy - r // 3 + 8], fill=(30, 30, 30))
    d.arc([cx - r // 2, cy + r // 4, cx + r // 2, cy + 2 * r // 3], 10, 170, fill=(120, 30, 30), width=5)
    for _ in range(40):  # texture, so no two images are alike
        x, y = rnd.randrange(side), rnd.randrange(side)
        d.point((x, y), fill=tuple(rnd.randrange(256) for _ in range(3)))
    return img


def make_data(args) -> None:
    """Images + a manifest CSV + a task TOML whose prompt is exactly PROMPT for every item."""
    out = Path(args.out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rows = ["id,image,label"]
    labels = ["a", "b"]
    for k in range(args.n):
        name = f"img/face{k:03d}.png"
        draw_image(k, args.side).save(out / name)
        rows.append(f"item{k:03d},{name},{labels[k % 2]}")
    (out / "set.csv").write_text("\n".join(rows) + "\n")
    # A template of only the question: the model sees PROMPT verbatim, as transformers does here.
    (out / "task.toml").write_text(
        f'''name = "{TASK_NAME}"
version = "1"
description = "Side-by-side timing: one fixed prompt over generated images"

[dataset]
reader = "manifest"
path = "set.csv"
options = {{ id_column = "id", label_column = "label" }}

[labels]
field = "label"
values = {json.dumps(labels)}

[question]
style = "multiple_choice"
text = "{PROMPT}"
template = """{{{{ question }}}}"""
scoring = "generate"
max_new_tokens = {args.max_new_tokens}
stop = []

[metrics]
report = ["accuracy"]
'''
    )
    (out / "prompt.txt").write_text(PROMPT)
    (out / "side_by_side_data.json").write_text(
        json.dumps({"n": args.n, "side": args.side, "prompt": PROMPT, "max_new_tokens": args.max_new_tokens})
    )
    log(f"data: {args.n} images of {args.side}x{args.side} in {out}")


# ---------------------------------------------------------------------------------------------
# make-facexbench: a FaceXBench-format folder at FaceXBench's size and image-count mix
# ---------------------------------------------------------------------------------------------

FXB_POSTPEND = "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."
# FaceXBench's 48 files: 25 `*_single_mcq*` (one image), 22 `*_multiple_mcq*` (two or three
# images, mostly two) and tools_retrieval.json (`num_images: "zero"`); at about 104 questions a
# file that is roughly 52% / 46% / 2%. An estimate from the file list, not a count of the
# questions; the mix is a flag. Zero-image questions here carry no image at all (upstream lists
# one black image), so the text-only path is exercised.
FXB_MIX = "single=0.52,two=0.46,zero=0.02"


def parse_mix(text: str) -> dict:
    mix = {}
    for part in text.split(","):
        k, v = part.split("=")
        mix[k.strip()] = float(v)
    unknown = set(mix) - {"single", "two", "zero"}
    if unknown or abs(sum(mix.values()) - 1.0) > 1e-6:
        raise SystemExit(f"--mix {text!r}: expected single=..,two=..,zero=.. summing to 1")
    return mix


def make_facexbench(args) -> None:
    """`<out>/facexbench/benchmark/*.json` in FaceXBench's format (the reader faceval's
    built-in `facexbench` task uses, with `--data <out>`), `--n` four-option questions.

    Images come from a pool of `--pool` drawings reused across questions, so writing 5,000
    questions takes seconds; both sides must then run with any image-feature cache off
    (`faceval run --feature-cache-mb 0`), or faceval would skip the vision encoder on repeats.
    """
    import random

    mix = parse_mix(args.mix)
    out = Path(args.out)
    bench = out / "facexbench" / "benchmark"
    pool_dir = bench / "images" / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    pool = []
    for k in range(args.pool):
        name = f"face{k:03d}.png"
        draw_image(k, args.side).save(pool_dir / name)
        pool.append(f"images/pool/{name}")
    rnd = random.Random(args.seed)
    counts = {k: int(round(args.n * v)) for k, v in mix.items()}
    counts["single"] += args.n - sum(counts.values())  # rounding goes to the largest share
    labels = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
    files = {
        "synthetic_single_mcq_age": ("single", "bias_fairness", "age"),
        "synthetic_multiple_mcq_age": ("two", "bias_fairness", "age"),
        "tools_retrieval": ("zero", "tools_use", "tools_retrieval"),
    }
    written = {}
    for file, (kind, category, sub) in files.items():
        questions = {}
        for i in range(counts.get(kind, 0)):
            if kind == "single":
                images = [rnd.choice(pool)]
                q = "Estimate the age group of the person in this image."
                opts = rnd.sample(labels, 4)
            elif kind == "two":
                images = rnd.sample(pool, 2)
                q = "Who among these two appears to be older?"
                opts = ["Image 1", "Image 2", "Both are of the same age group", "None of the above"]
                rnd.shuffle(opts)
            else:
                images = []
                q = "Which tool should be used to estimate the age of a person from a face image?"
                opts = ["face detector", "age estimator", "face parser", "crowd counter"]
                rnd.shuffle(opts)
            right = rnd.randrange(4)
            entry = {
                "image_paths": images,
                "question_text": q,
                "options": opts,
                "correct_answer_option": "ABCD"[right],
                "answer": opts[right],
            }
            questions[str(i + 1)] = entry
        doc = {
            "category": category,
            "sub-category": sub,
            "dataset": "faceval-synthetic",
            "question_type": "MCQ",
            "num_images": {"single": "single", "two": "multiple", "zero": "zero"}[kind],
            "prepend_text": "",
            "postpend_text": FXB_POSTPEND,
            "questions": questions,
        }
        if kind == "zero":
            doc["context"] = "Tools: face detector, age estimator, face parser, crowd counter."
            for qd in questions.values():
                qd["context"] = doc["context"]
        (bench / f"{file}.json").write_text(json.dumps(doc, indent=1))
        written[file] = len(questions)
    info = {"n": args.n, "mix": mix, "files": written, "pool": args.pool, "side": args.side,
            "images": sum(counts.get(k, 0) * m for k, m in (("single", 1), ("two", 2)))}
    (out / "facexbench_info.json").write_text(json.dumps(info, indent=1))
    log(f"facexbench: {args.n} questions {written} over {args.pool} images in {bench}")
    print(json.dumps(info))


def fxb_questions(data: Path) -> list[dict]:
    """The questions in faceval's order (file name, then numeric key) with the user text the
    built-in facexbench task renders (tasks/facexbench.toml)."""
    bench = data / "facexbench" / "benchmark"
    out = []
    for f in sorted(bench.glob("*.json")):
        doc = json.loads(f.read_text())
        for key in sorted(doc["questions"], key=lambda k: int(k)):
            q = doc["questions"][key]
            text = ""
            if doc.get("category") == "tools_use":
                text += f"{q.get('context', doc.get('context', ''))}\n"
            text += q["question_text"] + "\n"
            if doc.get("postpend_text"):
                text += doc["postpend_text"] + "\n"
            for letter, o in zip("ABCD", q["options"][:4]):
                text += f"({letter}) {o}\n"
            out.append({"id": f"{f.stem}:{key}", "images": [bench / p for p in q["image_paths"]], "text": text})
    return out


def percentile(values: list[float], q: float):
    """numpy.percentile's default (linear between closest ranks), as faceval's telemetry."""
    v = sorted(values)
    if not v:
        return None
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def transformers_facexbench(args) -> None:
    """transformers batched `generate` over the FaceXBench-format questions, as well as it
    batches: questions bucketed by image count (a batch never mixes 0-, 1- and 2-image
    prompts, so no image padding), left padding, greedy, `max_new_tokens` as faceval's task.
    Per item latency is its batch's wall time (faceval's definition for batch members)."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, InternVLForConditionalGeneration

    allow_missing_video_processor()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch_dtype(args.dtype)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    questions = fxb_questions(Path(args.data))[: args.n]
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(args.model)
    processor.tokenizer.padding_side = "left"
    model = InternVLForConditionalGeneration.from_pretrained(
        args.model, dtype=dtype, attn_implementation=args.attn
    ).to(dev)
    model.eval()
    sync()
    load_ms = (time.perf_counter() - t0) * 1e3
    buckets: dict[int, list[dict]] = {}
    for q in questions:
        buckets.setdefault(len(q["images"]), []).append(q)
    batches = [b[i : i + args.batch_size] for b in buckets.values() for i in range(0, len(b), args.batch_size)]
    answers = {}
    latencies = []
    tokens_out = 0
    prompt_tokens = 0
    sync()
    t_start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            t_a = time.perf_counter()
            texts, images = [], []
            for q in batch:
                content = [{"type": "image"} for _ in q["images"]] + [{"type": "text", "text": q["text"]}]
                texts.append(processor.apply_chat_template([{"role": "user", "content": content}],
                                                           add_generation_prompt=True, tokenize=False))
                images += [Image.open(p).convert("RGB") for p in q["images"]]
            inputs = processor(images=images or None, text=texts, return_tensors="pt", padding=True)
            inputs = {k: v.to(dev) for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            g = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1)
            sync()
            ms = (time.perf_counter() - t_a) * 1e3
            new = g[:, inputs["input_ids"].shape[1] :]
            prompt_tokens += int(inputs["attention_mask"].sum())
            for q, row in zip(batch, new.tolist()):
                answers[q["id"]] = row
                latencies.append(ms)
                tokens_out += len(row)
    wall = time.perf_counter() - t_start
    report = {
        "implementation": "transformers",
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "dtype": args.dtype,
        "attn_implementation": args.attn,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "items": len(answers),
        "images": sum(len(q["images"]) for q in questions),
        "load_ms": load_ms,
        "wall_s": wall,
        "items_per_s": len(answers) / wall if wall > 0 else None,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "output_tokens": tokens_out,
        # Same prompts as faceval's run when this equals its telemetry's prompt tokens per item.
        "prompt_tokens_per_item": prompt_tokens / len(answers) if answers else None,
        "peak_vram_allocated_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
        "peak_vram_reserved_mib": torch.cuda.max_memory_reserved(dev) / 2**20 if cuda else None,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    log(f"transformers facexbench: {len(answers)} items in {wall:.1f} s ({report['items_per_s']:.2f} items/s), "
        f"batch {args.batch_size}")


def partial_run_figures(run: Path) -> dict | None:
    """A run cut short (its step timed out) has no metrics.json; its predictions.jsonl, flushed
    chunk by chunk, still gives items, wall time (Σ wall_ms) and latency percentiles."""
    pred = run / "predictions.jsonl"
    if not pred.exists():
        return None
    rows = []
    for line in pred.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    if not rows:
        return None
    t = [r.get("timings") or {} for r in rows]
    wall = sum(x.get("wall_ms", 0) for x in t) / 1e3
    e2e = [x["e2e_ms"] for x in t if "e2e_ms" in x]
    return {
        "run": str(run),
        "partial": True,
        "batch_size": None,
        "items": len(rows),
        "timed": len(rows),
        "wall_s": wall,
        "items_per_s": len(rows) / wall if wall > 0 else None,
        "p50_ms": percentile(e2e, 50),
        "p95_ms": percentile(e2e, 95),
        "peak_vram_mib": None,
        "vram_added_mib": None,
        "answers": {(r.get("task"), r.get("id"), r.get("rotation", 0), r.get("variant", 0)): r.get("raw_output") for r in rows},
    }


def run_figures(run: Path) -> dict | None:
    """items/s, p50/p95 e2e latency, peak VRAM and the answers of a `faceval run` folder."""
    m = read_json(run / "metrics.json")
    if not m:
        return partial_run_figures(run)
    tel = m.get("telemetry") or {}
    ov = tel.get("overall") or {}
    mem = tel.get("memory") or {}
    e2e = ov.get("e2e_ms") or {}
    answers = {}
    pred = run / "predictions.jsonl"
    if pred.exists():
        for line in pred.read_text().splitlines():
            try:
                p = json.loads(line)
            except ValueError:
                continue
            answers[(p.get("task"), p.get("id"), p.get("rotation", 0), p.get("variant", 0))] = p.get("raw_output")
    vram = mem.get("peak_vram_bytes")
    base = mem.get("vram_baseline_bytes")
    return {
        "run": str(run),
        "batch_size": tel.get("batch_size"),
        "device": tel.get("device"),
        "dtype": tel.get("dtype"),
        # Every question answered (warm-up calls included); `timed` is telemetry's n, the
        # questions behind items/s and the percentiles.
        "items": len(answers),
        "timed": ov.get("n"),
        "wall_s": ov.get("wall_s"),
        "items_per_s": ov.get("items_per_s"),
        "p50_ms": e2e.get("p50"),
        "p95_ms": e2e.get("p95"),
        "output_tokens_per_s": ov.get("output_tokens_per_s"),
        "prompt_tokens_per_item": ov["prompt_tokens"] / ov["n"] if ov.get("n") and ov.get("prompt_tokens") is not None else None,
        "peak_vram_mib": vram / 2**20 if vram is not None else None,
        "vram_added_mib": (vram - base) / 2**20 if vram is not None and base is not None else None,
        "peak_rss_mib": mem["peak_rss_bytes"] / 2**20 if mem.get("peak_rss_bytes") else None,
        "answers": answers,
    }


# ---------------------------------------------------------------------------------------------
# transformers-bench
# ---------------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": statistics.fmean(v),
        "sd": statistics.stdev(v) if len(v) > 1 else None,
        "n": len(v),
        "min": min(v),
        "max": max(v),
    }


def transformers_bench(args) -> None:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, InternVLForConditionalGeneration

    allow_missing_video_processor()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch_dtype(args.dtype)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    data = Path(args.data)
    meta = json.loads((data / "side_by_side_data.json").read_text())
    prompt = meta["prompt"]
    max_new = args.max_new_tokens or meta["max_new_tokens"]
    images = sorted((data / "img").glob("*.png"))[: args.n]
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(args.model)
    model = InternVLForConditionalGeneration.from_pretrained(
        args.model, dtype=dtype, attn_implementation=args.attn
    ).to(dev)
    model.eval()
    sync()
    load_ms = (time.perf_counter() - t0) * 1e3
    weights_mib = torch.cuda.memory_allocated(dev) / 2**20 if cuda else None
    lm = model.model.language_model
    embed = model.get_input_embeddings()
    image_token_id = model.config.image_token_id
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    rows = []
    with torch.inference_mode():
        for k in range(args.warmup + len(images)):
            img = Image.open(images[k % len(images)]).convert("RGB")
            t_a = time.perf_counter()
            inputs = processor(images=[img], text=text, return_tensors="pt")
            ids = inputs["input_ids"].to(dev)
            pv = inputs["pixel_values"].to(dev, dtype)
            t_b = time.perf_counter()
            sync()
            t_c = time.perf_counter()
            feats = model.model.get_image_features(pixel_values=pv)
            if not torch.is_tensor(feats):
                feats = feats.pooler_output if getattr(feats, "pooler_output", None) is not None else feats[0]
            if isinstance(feats, (list, tuple)):
                feats = torch.cat(list(feats), 0)
            sync()
            t_d = time.perf_counter()
            emb = embed(ids)
            mask = (ids == image_token_id).unsqueeze(-1).expand_as(emb)
            emb = emb.masked_scatter(mask, feats.reshape(-1, feats.shape[-1]).to(emb.dtype))
            out = lm(inputs_embeds=emb, use_cache=True)
            cache = out.past_key_values
            tok = int(model.lm_head(out.last_hidden_state[:, -1]).float().argmax(-1).item())
            t_e = time.perf_counter()
            tokens = [tok]
            while len(tokens) < max_new and tok not in eos:
                out = lm(inputs_embeds=embed(torch.tensor([[tok]], device=dev)), past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                tok = int(model.lm_head(out.last_hidden_state[:, -1]).float().argmax(-1).item())
                tokens.append(tok)
            sync()
            t_f = time.perf_counter()
            gen_ms = None
            gen_tokens = None
            if not args.skip_generate:
                sync()
                t_g = time.perf_counter()
                g = model.generate(
                    input_ids=ids,
                    attention_mask=inputs["attention_mask"].to(dev),
                    pixel_values=pv,
                    max_new_tokens=max_new,
                    do_sample=False,
                    num_beams=1,
                )
                sync()
                gen_ms = (time.perf_counter() - t_g) * 1e3
                gen_tokens = g[0, ids.shape[1] :].tolist()
            if k < args.warmup:
                continue
            decode_ms = (t_f - t_e) * 1e3
            rows.append(
                {
                    "image": images[k % len(images)].name,
                    "prompt_tokens": int(ids.shape[1]),
                    "tiles": int(pv.shape[0]),
                    "new_tokens": len(tokens),
                    "tokens": tokens,
                    "generate_tokens": gen_tokens,
                    "preprocess_ms": (t_b - t_a) * 1e3,
                    "vision_ms": (t_d - t_c) * 1e3,
                    "prefill_ms": (t_e - t_d) * 1e3,
                    # faceval's definition (docs/telemetry.md): preprocess + vision + prefill.
                    "ttft_ms": (t_b - t_a + t_e - t_c) * 1e3,
                    "decode_ms": decode_ms,
                    "tpot_ms": decode_ms / (len(tokens) - 1) if len(tokens) > 1 else None,
                    "e2e_ms": (t_b - t_a + t_f - t_c) * 1e3,
                    "generate_ms": gen_ms,
                }
            )
    figures = {
        key: summary([r[key] for r in rows])
        for key in ["preprocess_ms", "vision_ms", "prefill_ms", "ttft_ms", "decode_ms", "tpot_ms", "e2e_ms",
                    "generate_ms", "new_tokens", "prompt_tokens"]
    }
    dec_tokens = sum(r["new_tokens"] - 1 for r in rows)
    dec_ms = sum(r["decode_ms"] for r in rows)
    figures["decode_tokens_per_s"] = dec_tokens / (dec_ms / 1e3) if dec_ms > 0 and dec_tokens > 0 else None
    report = {
        "implementation": "transformers",
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if cuda else None,
        "dtype": args.dtype,
        "attn_implementation": args.attn,
        "model": str(args.model),
        "prompt": prompt,
        "max_new_tokens": max_new,
        "warmup": args.warmup,
        "items": len(rows),
        "load_ms": load_ms,
        "weights_mib": weights_mib,
        "peak_vram_allocated_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
        "peak_vram_reserved_mib": torch.cuda.max_memory_reserved(dev) / 2**20 if cuda else None,
        "figures": figures,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    f = figures
    log(
        f"transformers {args.dtype} {args.attn}: vision {f['vision_ms']['mean']:.2f} ms, prefill "
        f"{f['prefill_ms']['mean']:.2f} ms, TPOT {f['tpot_ms']['mean'] or float('nan'):.2f} ms, "
        f"generate {f['generate_ms']['mean'] or float('nan'):.1f} ms over {len(rows)} items"
    )


# ---------------------------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------------------------


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_figure(bench: dict | None, name: str):
    if not bench:
        return None
    for f in bench.get("figures", []):
        if f.get("figure") == name:
            return f.get("mean")
    return None


def generate_figures(folder: Path) -> dict | None:
    """bench-shaped figures from `faceval generate --json` outputs (one process per image; the
    first item is left out as warm-up, though every process starts cold)."""
    items = [read_json(p) for p in sorted(folder.glob("item*.json"))] if folder.is_dir() else []
    items = [i for i in items if i and "timings" in i]
    if not items:
        return None
    timed = items[1:] if len(items) > 1 else items
    t = [i["timings"] for i in timed]
    steps = [max(len(i.get("token_ids", [])) - 1, 0) for i in timed]
    dec = sum(x["decode_ms"] for x in t)

    def fig(name, values):
        return {"figure": name, "mean": summary(values)["mean"], "values": values}

    return {
        "source": "faceval generate (one process per image)",
        "items": len(timed),
        "model": items[0].get("model"),
        "figures": [
            fig("preprocess", [x["preprocess_ms"] for x in t]),
            fig("vision", [x["vision_ms"] for x in t]),
            fig("prefill", [x["prefill_ms"] for x in t]),
            fig("TTFT", [x["vision_ms"] + x["prefill_ms"] for x in t]),
            fig("decode", [x["decode_ms"] for x in t]),
            fig("TPOT", [x["decode_ms"] / n for x, n in zip(t, steps) if n > 0]),
            fig("e2e", [x.get("e2e_ms") or (x["preprocess_ms"] + x["vision_ms"] + x["prefill_ms"] + x["decode_ms"]) for x in t]),
            {"figure": "decode tokens/s", "mean": sum(steps) / (dec / 1e3) if dec > 0 and sum(steps) else None},
        ],
    }


def step_seconds(res: Path, name: str):
    for s in read_json(res / "steps.json") or []:
        if s.get("step") == name:
            return s.get("seconds")
    return None


def batch_sweep(res: Path) -> dict:
    """`faceval run --batch-size B` folders under <results>/sweep/b<B>: figures, and whether
    every answer equals batch size 1's."""
    rows = []
    base = None
    folders = sorted((res / "sweep").glob("b*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0)
    for f in folders:
        r = run_figures(f)
        if r is None:
            continue
        if base is None and r.get("batch_size") == 1:
            base = r["answers"]
        rows.append(r)
    for r in rows:
        ans = r.pop("answers")
        # The larger batches answer more questions; compare the ones batch 1 also answered.
        shared = [k for k in ans if base is not None and k in base]
        r["answers_compared"] = len(shared)
        r["answers_equal_batch1"] = None if not shared else all(ans[k] == base[k] for k in shared)
    best = max((r for r in rows if r.get("items_per_s")), key=lambda r: r["items_per_s"], default=None)
    return {"rows": rows, "best_batch_size": best["batch_size"] if best else None}


def facexbench_side_by_side(res: Path) -> dict:
    rows = []
    fv = run_figures(res / "fxb-faceval")
    if fv:
        fv.pop("answers")
        cmd = (res / "fxb-faceval.cmd").read_text().strip() if (res / "fxb-faceval.cmd").exists() else None
        info = read_json(res / "data" / "facexbench_info.json") or {}
        label = "faceval run (cut short: from predictions.jsonl)" if fv.get("partial") else "faceval run"
        rows.append({"implementation": label, "command": cmd, "images": info.get("images"),
                     "process_s": step_seconds(res, "fxb-faceval"), **fv})
    hf = read_json(res / "transformers-fxb.json")
    if hf:
        cmd = (res / "transformers-fxb.cmd").read_text().strip() if (res / "transformers-fxb.cmd").exists() else None
        rows.append({"implementation": f"transformers {hf.get('transformers_version')} generate, batch {hf.get('batch_size')}",
                     "command": cmd, "process_s": step_seconds(res, "fxb-transformers"),
                     "peak_vram_mib": hf.get("peak_vram_reserved_mib"), **hf})
    return {"rows": rows}


def summarize(args) -> None:
    res = Path(args.results)
    steps = read_json(res / "steps.json") or []
    smi = (res / "nvidia-smi.txt").read_text() if (res / "nvidia-smi.txt").exists() else None
    # parity-<family>-<dtype>.json (parity-<dtype>.json: InternVL, as earlier scripts wrote).
    parity = {}
    for fam in ("internvl", "llava", "zero-shot"):
        for d in ("f32", "bf16"):
            p = read_json(res / f"parity-{fam}-{d}.json")
            if p is None and fam == "internvl":
                p = read_json(res / f"parity-{d}.json")
            parity[f"{fam} {d}"] = p
    bench = read_json(res / "faceval-bench.json") or generate_figures(res / "generate")
    hf = read_json(res / "transformers.json")
    ckpt = read_json(res / "checkpoint.json")
    # nvidia-smi samples of the whole GPU's used memory, taken while each side ran: peak less
    # the lowest reading (the idle GPU before the process started) is what that side added,
    # CUDA context included — the same measure for both.
    def vram_added(name):
        path = res / name
        if not path.exists():
            return None, None
        vals = []
        for line in path.read_text().splitlines():
            try:
                vals.append(float(line.split(",")[0].strip().split()[0]))
            except (ValueError, IndexError):
                pass
        return (max(vals) - min(vals), max(vals)) if vals else (None, None)

    fv_added, fv_peak = vram_added("vram-faceval.csv")
    hf_added, hf_peak = vram_added("vram-transformers.csv")

    hf_fig = (hf or {}).get("figures", {})

    def hf_mean(key):
        v = hf_fig.get(key)
        return v.get("mean") if isinstance(v, dict) else v

    pairs = [
        ("vision", "ms", bench_figure(bench, "vision"), hf_mean("vision_ms")),
        ("prefill", "ms", bench_figure(bench, "prefill"), hf_mean("prefill_ms")),
        ("TTFT", "ms", bench_figure(bench, "TTFT"), hf_mean("ttft_ms")),
        ("decode", "ms", bench_figure(bench, "decode"), hf_mean("decode_ms")),
        ("TPOT", "ms", bench_figure(bench, "TPOT"), hf_mean("tpot_ms")),
        ("e2e", "ms", bench_figure(bench, "e2e"), hf_mean("e2e_ms")),
        ("decode tokens/s", "tok/s", bench_figure(bench, "decode tokens/s"), hf_mean("decode_tokens_per_s")),
        ("GPU memory added (nvidia-smi)", "MiB", fv_added, hf_added),
    ]
    side = []
    for name, unit, ours, theirs in pairs:
        ratio = ours / theirs if ours is not None and theirs not in (None, 0) else None
        side.append({"figure": name, "unit": unit, "faceval": ours, "transformers": theirs, "ratio": ratio})
    results = {
        "steps": steps,
        "nvidia_smi": smi,
        "parity": {
            d: (
                None
                if p is None
                else {
                    k: p.get(k)
                    for k in ["device", "dtype", "pass", "all_tokens_equal", "max_image_features_diff",
                              "max_logits_diff", "max_step_logits_diff"]
                }
            )
            for d, p in parity.items()
        },
        "parity_max_text_embeds_diff": {d: (p or {}).get("max_text_embeds_diff") for d, p in parity.items()},
        "checkpoint": ckpt,
        "faceval_bench": bench,
        "gpu_memory_mib": {
            "faceval_added": fv_added,
            "faceval_peak": fv_peak,
            "faceval_bench_peak_vram": bench_figure(bench, "peak VRAM"),
            "faceval_bench_peak_vram_process": bench_figure(bench, "peak VRAM (process)"),
            "transformers_added": hf_added,
            "transformers_peak": hf_peak,
            "transformers_torch_peak_allocated": (hf or {}).get("peak_vram_allocated_mib"),
            "transformers_torch_peak_reserved": (hf or {}).get("peak_vram_reserved_mib"),
        },
        "transformers": {k: v for k, v in (hf or {}).items() if k != "rows"} if hf else None,
        "side_by_side": side,
    }
    sweep, fxb = batch_sweep(res), facexbench_side_by_side(res)
    results["batch_sweep"] = sweep
    results["facexbench"] = fxb
    (res / "results.json").write_text(json.dumps(results, indent=1))

    def fmt(x, digits=2):
        return "—" if x is None else f"{x:.{digits}f}"

    md = ["# GPU check", ""]
    if smi:
        md += ["```", smi.strip()[:1500], "```", ""]
    md += ["## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for s in steps:
        md.append(f"| {s.get('step')} | {s.get('status')} | {s.get('seconds')} | {s.get('note', '')} |")
    md += ["", "## Parity vs transformers (tiny fixtures)", ""]
    md += ["Zero-shot rows: features = image embeddings, steps = text embeddings, tokens = option ranking.", ""]
    md += ["| family, dtype | device | features | logits | step logits | tokens equal | pass |", "|---|---|---:|---:|---:|---|---|"]

    def sci(x):
        return "—" if x is None else f"{x:.2e}"

    for d, p in parity.items():
        if p is None:
            md.append(f"| {d} | — | — | — | — | — | not run |")
        else:
            third = p.get("max_step_logits_diff")
            if third is None:
                third = p.get("max_text_embeds_diff")
            md.append(
                f"| {d} | {p.get('device')} | {sci(p.get('max_image_features_diff'))} | {sci(p.get('max_logits_diff'))} "
                f"| {sci(third)} | {p.get('all_tokens_equal')} | {p.get('pass')} |"
            )
    md += ["", "## faceval vs transformers, InternVL3-1B-sized random weights", ""]
    if ckpt:
        md.append(f"Checkpoint: {ckpt.get('params', 0) / 1e6:.1f}M parameters, {ckpt.get('dtype')}, "
                  f"{ckpt.get('weight_file_bytes', 0) / 2**20:.0f} MiB on disk.")
    if hf:
        md.append(f"transformers {hf.get('transformers_version')} / torch {hf.get('torch_version')}, "
                  f"{hf.get('attn_implementation')}, {hf.get('dtype')}, {hf.get('items')} items after "
                  f"{hf.get('warmup')} warm-up, max_new_tokens {hf.get('max_new_tokens')}, "
                  f"{fmt(hf_mean('new_tokens'), 1)} tokens generated on average; "
                  f"model.generate() end to end {fmt(hf_mean('generate_ms'))} ms.")
    md += ["", "| figure | unit | faceval | transformers | faceval / transformers |", "|---|---|---:|---:|---:|"]
    for r in side:
        md.append(f"| {r['figure']} | {r['unit']} | {fmt(r['faceval'])} | {fmt(r['transformers'])} | {fmt(r['ratio'], 3)} |")
    if hf and hf.get("peak_vram_allocated_mib") is not None:
        md.append(f"\ntorch's own peak: {fmt(hf.get('peak_vram_allocated_mib'), 0)} MiB allocated, "
                  f"{fmt(hf.get('peak_vram_reserved_mib'), 0)} MiB reserved (no CUDA context). faceval bench's "
                  f"peak VRAM (NVML, whole GPU): {fmt(bench_figure(bench, 'peak VRAM'), 0)} MiB.")
    md.append("\nRatios below 1 mean faceval took less time (or memory); for tokens/s above 1 means faceval is faster.")
    md += ["", "## faceval batch-size sweep (FaceXBench-mix questions, feature cache off)", ""]
    if sweep["rows"]:
        md += ["| batch size | items (timed) | wall s | items/s | p50 ms | p95 ms | peak VRAM MiB | VRAM added MiB | answers = batch 1 (compared) |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in sweep["rows"]:
            md.append(f"| {r['batch_size']} | {r['items']} ({r['timed']}) | {fmt(r['wall_s'])} | {fmt(r['items_per_s'])} | {fmt(r['p50_ms'], 1)} "
                      f"| {fmt(r['p95_ms'], 1)} | {fmt(r['peak_vram_mib'], 0)} | {fmt(r['vram_added_mib'], 0)} "
                      f"| {r['answers_equal_batch1']} ({r['answers_compared']}) |")
        md.append("\nOn the GPU, items/s and the percentiles leave out each run's first model call (warm-up: "
                  "CUDA's PTX JIT and allocator growth; `timed` counts the rest); the CPU dry run times every "
                  "call. Answers are compared on every question both runs asked.")
        md.append(f"\nMost items/s: batch size {sweep['best_batch_size']}.")
    else:
        md.append("not run")
    md += ["", "## FaceXBench-sized run: faceval run vs transformers batched generate", ""]
    if fxb["rows"]:
        md += ["| implementation | command | items | images | prompt tokens/item | process s | wall s | items/s | p50 ms | p95 ms | peak VRAM MiB |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in fxb["rows"]:
            md.append(f"| {r['implementation']} | `{r.get('command') or ''}` | {r.get('items')} | {r.get('images') or '—'} "
                      f"| {fmt(r.get('prompt_tokens_per_item'), 1)} | {fmt(r.get('process_s'), 1)} | {fmt(r.get('wall_s'), 1)} | {fmt(r.get('items_per_s'))} "
                      f"| {fmt(r.get('p50_ms'), 1)} | {fmt(r.get('p95_ms'), 1)} | {fmt(r.get('peak_vram_mib'), 0)} |")
        md.append("\nwall s: the model calls (faceval telemetry `wall_s`; transformers: the generate loop), loading "
                  "excluded; process s: the whole step, loading included. Peak VRAM: faceval NVML whole-GPU peak; "
                  "transformers torch max_memory_reserved.")
    else:
        md.append("not run")
    (res / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--size", choices=sorted(SIZES), default="1b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "f32", "f16"], default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("make-data")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--side", type=int, default=448)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p = sub.add_parser("transformers-bench")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "f32", "f16"], default="bf16")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=0, help="0: the data's max_new_tokens")
    p.add_argument("--skip-generate", action="store_true")
    p = sub.add_parser("make-facexbench")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--pool", type=int, default=64)
    p.add_argument("--side", type=int, default=448)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mix", default=FXB_MIX)
    p = sub.add_parser("transformers-facexbench")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bf16", "f32", "f16"], default="bf16")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=64, help="the facexbench task's")
    p = sub.add_parser("summarize")
    p.add_argument("--results", required=True)
    args = ap.parse_args()
    {
        "make-checkpoint": make_checkpoint,
        "make-data": make_data,
        "transformers-bench": transformers_bench,
        "make-facexbench": make_facexbench,
        "transformers-facexbench": transformers_facexbench,
        "summarize": summarize,
    }[args.cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
