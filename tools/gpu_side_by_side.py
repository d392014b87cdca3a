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


def summarize(args) -> None:
    res = Path(args.results)
    steps = read_json(res / "steps.json") or []
    smi = (res / "nvidia-smi.txt").read_text() if (res / "nvidia-smi.txt").exists() else None
    parity = {d: read_json(res / f"parity-{d}.json") for d in ("f32", "bf16")}
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
    (res / "results.json").write_text(json.dumps(results, indent=1))

    def fmt(x, digits=2):
        return "—" if x is None else f"{x:.{digits}f}"

    md = ["# GPU check", ""]
    if smi:
        md += ["```", smi.strip()[:1500], "```", ""]
    md += ["## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for s in steps:
        md.append(f"| {s.get('step')} | {s.get('status')} | {s.get('seconds')} | {s.get('note', '')} |")
    md += ["", "## InternVL parity vs transformers (tiny fixtures)", ""]
    md += ["| dtype | device | features | logits | step logits | tokens equal | pass |", "|---|---|---:|---:|---:|---|---|"]
    for d, p in parity.items():
        if p is None:
            md.append(f"| {d} | — | — | — | — | — | not run |")
        else:
            md.append(
                f"| {d} | {p.get('device')} | {p.get('max_image_features_diff', 0):.2e} | {p.get('max_logits_diff', 0):.2e} "
                f"| {p.get('max_step_logits_diff', 0):.2e} | {p.get('all_tokens_equal')} | {p.get('pass')} |"
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
    p = sub.add_parser("summarize")
    p.add_argument("--results", required=True)
    args = ap.parse_args()
    {
        "make-checkpoint": make_checkpoint,
        "make-data": make_data,
        "transformers-bench": transformers_bench,
        "summarize": summarize,
    }[args.cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
