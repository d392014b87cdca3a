#!/usr/bin/env python3
"""faceval vs transformers on a FairFace-like task: three questions (age, gender, race) about
each face, same weights, same thread count, on the CPU (issue #8, "Side-by-side benchmark").

Run by hand (see docs/performance.md, "FairFace-like side by side"):

    cargo build --release -p faceval
    python tools/fairface_side_by_side.py --items 6 --threads 2          # smoke test, minutes
    python tools/fairface_side_by_side.py --items 100 --threads 2        # the benchmark, hours

1. Data: `faceval demo --faces F` draws F synthetic faces (F = ceil(items / 3)); this script
   writes them as a FairFace validation split — `fairface/fairface_label_val.csv`
   (`file,age,gender,race,service_test`) and 224×224 crops under
   `fairface/fairface-img-margin025-trainval/val/` (FairFace's crop size; PNG rather than
   FairFace's JPEG so that both sides decode identical pixels: two JPEG decoders may differ in
   the last bit, and random weights amplify that into different tokens).
2. faceval: `faceval run` with the shipped tasks age-fairface, gender-fairface and
   race-fairface (`--limit F`), i.e. 3·F questions, interleaved by the runner so that the
   three questions about a face come close together and InternVL's vision-feature cache can
   answer the second and third from the first. `--warmup 0`: every call counts. Per-question
   stage times come from `predictions.jsonl`.
3. transformers: InternVLForConditionalGeneration, float32, eager attention,
   torch.set_num_threads(threads), the same prompts (rendered from the task TOMLs with jinja2
   and checked against faceval's `prompt_sha256`), timed stage by stage the way faceval splits
   a call (as tools/cpu_side_by_side.py does): preprocess, vision (image features + splicing),
   prefill (to the first token's logits), decode (greedy steps with the KV cache). Task after
   task, as a transformers loop is usually written; it has no cache across questions. One
   untimed warm-up call first, on an image outside the set.
4. Memory bound: the bandwidth measured by tools/membw.py, and the language model's weight
   bytes read per decoded token (every weight once at batch 1, plus the KV cache), give the
   tokens/s ceiling that decode is compared with.

Prints Markdown tables and writes every figure to --json-out. Exit 1 when the two sides'
answers differ (same weights and inputs must give the same greedy tokens).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import membw  # noqa: E402  (tools/membw.py)

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["age-fairface", "gender-fairface", "race-fairface"]
WARMUP_IMAGE = ROOT / "harness/models/tests/fixtures/internvl/images/face_448.png"


# ---------------------------------------------------------------- data


def build_data(binary: Path, work: Path, faces: int) -> Path:
    """FairFace-like data folder with `faces` synthetic faces; returns the data root."""
    from PIL import Image

    demo = work / "demo"
    if not (demo / "data/manifest.csv").is_file():
        subprocess.run([str(binary), "demo", "--faces", str(faces), "--out", str(demo)],
                       check=True, capture_output=True)
    data = work / "data"
    img_dir = data / "fairface/fairface-img-margin025-trainval/val"
    img_dir.mkdir(parents=True, exist_ok=True)
    with open(demo / "data/manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:faces]
    if len(rows) < faces:
        raise SystemExit(f"{demo}: the demo drew {len(rows)} faces, {faces} needed; delete it and rerun")
    with open(data / "fairface/fairface_label_val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "age", "gender", "race", "service_test"])
        for i, r in enumerate(rows, start=1):
            name = f"val/{i}.png"
            Image.open(demo / "data" / r["image"]).convert("RGB").resize((224, 224), Image.BICUBIC).save(
                img_dir.parent / name)
            w.writerow([name, r["age_bin"], r["gender"], r["race"], "True"])
    return data


# ---------------------------------------------------------------- faceval


def faceval_run(binary: Path, ckpt: Path, data: Path, work: Path, faces: int, args) -> dict:
    out = work / f"run-b{args.batch_size}"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [str(binary), "--tasks-dir", str(ROOT / "tasks"), "run", "--model", str(ckpt),
           "--data", str(data), "--out", str(out), "--limit", str(faces), "--warmup", "0",
           "--batch-size", str(args.batch_size), "--device", "cpu", "--dtype", "f32", "--task", *TASKS]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    process_s = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"faceval run failed ({res.returncode}):\n{res.stderr}")
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    seen: set[str] = set()
    items = []
    for p in preds:  # file order = call order
        sha = p["image_sha256"][0] if p["image_sha256"] else ""
        t = p["timings"]
        items.append({
            "task": p["task"], "file": p["id"].split(":", 1)[-1], "prompt_sha256": p["prompt_sha256"],
            "text": p["raw_output"], "output_tokens": p["output_tokens"], "prompt_tokens": p["prompt_tokens"],
            "error": p["error"], "repeat_image": sha in seen,
            "preprocess_ms": t["preprocess_ms"], "vision_ms": t["vision_ms"], "prefill_ms": t["prefill_ms"],
            "decode_ms": t["decode_ms"], "e2e_ms": t["e2e_ms"], "wall_ms": t["wall_ms"],
        })
        seen.add(sha)
    # Members of one batch share the call's timings (docs/telemetry.md): consecutive questions
    # of a task with the same e2e_ms are one model call.
    call = -1
    for k, it in enumerate(items):
        prev = items[k - 1] if k else None
        if not (prev and prev["task"] == it["task"] and prev["e2e_ms"] == it["e2e_ms"]
                and args.batch_size > 1):
            call += 1
        it["call"] = call
    return {"command": " ".join(cmd), "process_s": process_s, "items": items,
            "telemetry": metrics.get("telemetry"), "run": str(out)}


# ---------------------------------------------------------------- transformers


def prompts(data: Path, faces: int) -> dict:
    """(task, file) -> prompt text, rendered from the shipped task TOMLs as faceval renders
    them (minijinja and jinja2 agree on these templates; the sha256 check below proves it)."""
    import tomllib

    import jinja2

    rows = list(csv.DictReader(open(data / "fairface/fairface_label_val.csv", newline="")))[:faces]
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    out = {}
    for task in TASKS:
        spec = tomllib.loads((ROOT / "tasks" / f"{task}.toml").read_text())
        q = spec["question"]
        if q.get("shuffle") or q.get("num_options") or q.get("circular"):
            raise SystemExit(f"{task}: shuffled, subsampled or circular options are not rendered here")
        labels = spec["labels"]["values"]
        letters = [chr(ord("A") + i) for i in range(len(labels))]
        tpl = env.from_string(q["template"])
        text = tpl.render(question=q["text"], options=[{"letter": l, "text": t} for l, t in zip(letters, labels)],
                          labels=labels, fields={})
        for r in rows:
            out[(task, r["file"])] = text
    return out


def transformers_run(ckpt: Path, data: Path, faces: int, args) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, InternVLForConditionalGeneration, InternVLProcessor

    torch.set_num_threads(args.threads)
    if importlib.util.find_spec("torchvision") is None:
        # InternVLVideoProcessor needs torchvision; images never touch it.
        attrs = InternVLProcessor.get_attributes()
        InternVLProcessor.get_attributes = classmethod(lambda cls: [a for a in attrs if a != "video_processor"])
    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(ckpt)
    model = InternVLForConditionalGeneration.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    eos_cfg = model.generation_config.eos_token_id
    eos = set(eos_cfg if isinstance(eos_cfg, list) else [eos_cfg])
    img_root = data / "fairface/fairface-img-margin025-trainval"

    @torch.no_grad()
    def ask(image_path: Path, text: str) -> dict:
        t = {}
        s = time.perf_counter()
        image = Image.open(image_path).convert("RGB")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[image], text=prompt, return_tensors="pt")
        t["preprocess_ms"] = (time.perf_counter() - s) * 1e3
        ids = inputs["input_ids"]
        s = time.perf_counter()
        feats = model.model.get_image_features(pixel_values=inputs["pixel_values"].to(torch.float32))
        if not torch.is_tensor(feats):
            feats = feats.pooler_output if getattr(feats, "pooler_output", None) is not None else feats[0]
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats), 0)
        embeds = model.get_input_embeddings()(ids)
        mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(mask, feats.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
        t["vision_ms"] = (time.perf_counter() - s) * 1e3
        s = time.perf_counter()
        out = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], use_cache=True)
        tokens = [int(torch.argmax(out.logits[:, -1, :], dim=-1))]
        t["prefill_ms"] = (time.perf_counter() - s) * 1e3
        s = time.perf_counter()
        pkv, attn = out.past_key_values, inputs["attention_mask"]
        while len(tokens) < args.max_new_tokens and tokens[-1] not in eos:
            attn = torch.cat([attn, attn.new_ones((1, 1))], dim=1)
            out = model(input_ids=torch.tensor([[tokens[-1]]]), attention_mask=attn, past_key_values=pkv,
                        use_cache=True)
            pkv = out.past_key_values
            tokens.append(int(torch.argmax(out.logits[:, -1, :], dim=-1)))
        t["decode_ms"] = (time.perf_counter() - s) * 1e3
        if tokens[-1] in eos:
            tokens = tokens[:-1]  # faceval does not count the end-of-sequence token
        t["e2e_ms"] = sum(t[k] for k in ("preprocess_ms", "vision_ms", "prefill_ms", "decode_ms"))
        t["text"] = processor.tokenizer.decode(tokens, skip_special_tokens=True)
        t["output_tokens"] = len(tokens)
        t["prompt_tokens"] = int(ids.shape[1])
        return t

    # transformers has no state across questions, so its per-question cost is the same on any
    # subset: --transformers-faces times it on the first N faces to save hours of CPU.
    texts = prompts(data, min(faces, args.transformers_faces or faces))
    ask(WARMUP_IMAGE, texts[next(iter(texts))])  # warm-up, untimed
    items = []
    started = time.perf_counter()
    for task in TASKS:
        for (t_name, file), text in texts.items():
            if t_name != task:
                continue
            r = ask(img_root / file, text)
            r.update(task=task, file=file, prompt_sha256=hashlib.sha256(text.encode()).hexdigest())
            items.append(r)
    loop_s = time.perf_counter() - started
    return {"load_ms": load_ms, "loop_s": loop_s, "items": items,
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__}}


# ---------------------------------------------------------------- figures


def mean(xs) -> float | None:
    xs = list(xs)
    return statistics.fmean(xs) if xs else None


def decode_tps(items) -> float | None:
    """Σ(tokens − 1) / Σ decode time, counting each model call's decode time once (a batch's
    members all carry the batch's time)."""
    toks = sum(max(i["output_tokens"] - 1, 0) for i in items)
    calls = {}
    for n, i in enumerate(items):
        if i["output_tokens"] >= 2:
            calls[i.get("call", ("q", n))] = i["decode_ms"]
    ms = sum(calls.values())
    return toks / (ms / 1e3) if ms > 0 else None


def lm_weight_bytes(ckpt: Path) -> int:
    """Bytes of the language model's tensors (a tied embedding counts once: decode reads it as
    the output projection), from the safetensors header."""
    total = 0
    for f in sorted(ckpt.glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, v in header.items():
            if name != "__metadata__" and ("language_model" in name or name.startswith("lm_head")):
                a, b = v["data_offsets"]
                total += b - a
    return total


def kv_bytes_per_token(ckpt: Path, context: float) -> float:
    """KV-cache bytes one decode step reads at a given context length (f32)."""
    cfg = json.loads((ckpt / "config.json").read_text())["text_config"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4 * context


def fmt(x, digits=0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100, help="questions wanted; faces = ceil(items / 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1, help="faceval run --batch-size")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="must equal the tasks' max_new_tokens")
    ap.add_argument("--checkpoint", type=Path, default=Path("/tmp/faceval-internvl3-1b-random"))
    ap.add_argument("--faceval", type=Path, default=ROOT / "target/release/faceval")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fairface_side_by_side"))
    ap.add_argument("--membw-mib", type=int, default=1024)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--transformers-faces", type=int, default=None,
                    help="time transformers on the first N faces only (its cost per question does not "
                         "depend on the others); answers are compared on those")
    ap.add_argument("--json-out", type=Path, default=Path("/tmp/fairface_side_by_side.json"))
    args = ap.parse_args()

    if not args.faceval.is_file():
        print(f"{args.faceval}: build it first (cargo build --release -p faceval)", file=sys.stderr)
        return 2
    if not (args.checkpoint / "model.safetensors").is_file():
        subprocess.run([str(args.faceval), "make-checkpoint", "--size", "1b", "--out", str(args.checkpoint)],
                       check=True)
    faces = math.ceil(args.items / 3)
    args.work.mkdir(parents=True, exist_ok=True)
    data = build_data(args.faceval, args.work / f"faces{faces}", faces)

    fv = faceval_run(args.faceval, args.checkpoint, data, args.work / f"faces{faces}", faces, args)
    hf = None if args.skip_transformers else transformers_run(args.checkpoint, data, faces, args)
    bw = membw.measure(args.membw_mib, 5, args.threads)

    fi = fv["items"]
    errors = [i for i in fi if i["error"]]
    same = None
    if hf:
        by_key = {(i["task"], i["file"]): i for i in hf["items"]}
        shared = [i for i in fi if (i["task"], i["file"]) in by_key]
        prompts_equal = all(by_key[(i["task"], i["file"])]["prompt_sha256"] == i["prompt_sha256"] for i in shared)
        same = prompts_equal and all(
            by_key[(i["task"], i["file"])]["text"].strip() == i["text"].strip()
            and by_key[(i["task"], i["file"])]["output_tokens"] == i["output_tokens"] for i in shared)
    n = len(fi)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; threads "
          f"{args.threads}; {faces} faces × {len(TASKS)} tasks = {n} questions; faceval batch size "
          f"{args.batch_size}; {len(errors)} faceval item errors")
    if hf:
        print(f"transformers timed on {len(hf['items'])} of the {n} questions; on those, prompts identical "
              f"(sha256): {prompts_equal}; answers identical: {same}")
    rows = [
        ("preprocess (ms)", "preprocess_ms", mean),
        ("vision (ms)", "vision_ms", mean),
        ("prefill (ms)", "prefill_ms", mean),
        ("decode (ms)", "decode_ms", mean),
        ("end to end (ms)", "e2e_ms", mean),
    ]
    if args.batch_size > 1:
        print("(faceval batched: a question's stage times and end to end are its batch's, the latency it saw)")
    print("\n| figure (mean per question) | faceval | transformers | faceval / transformers |")
    print("|---|---:|---:|---:|")
    for label, key, agg in rows:
        a = agg(i[key] for i in fi)
        b = agg(i[key] for i in hf["items"]) if hf else None
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {fmt(a / b, 2) if a and b else '—'} |")
    first = [i["vision_ms"] for i in fi if not i["repeat_image"]]
    again = [i["vision_ms"] for i in fi if i["repeat_image"]]
    print(f"| vision, first question about a face (ms) | {fmt(mean(first))} | "
          f"{fmt(mean(i['vision_ms'] for i in hf['items'])) if hf else '—'} | |")
    print(f"| vision, later questions about it (ms) | {fmt(mean(again))} | "
          f"{fmt(mean(i['vision_ms'] for i in hf['items'])) if hf else '—'} | |")
    fv_tps = decode_tps(fi)
    hf_tps = decode_tps(hf["items"]) if hf else None
    fv_wall_s = sum(i["wall_ms"] for i in fi) / 1e3
    fv_ips = n / fv_wall_s if fv_wall_s else None
    hf_ips = len(hf["items"]) / hf["loop_s"] if hf else None
    fv_ots = sum(i["output_tokens"] for i in fi) / fv_wall_s if fv_wall_s else None
    hf_ots = sum(i["output_tokens"] for i in hf["items"]) / hf["loop_s"] if hf else None
    for label, a, b in [("decode tokens/s", fv_tps, hf_tps), ("output tokens/s (whole run)", fv_ots, hf_ots),
                        ("items/s", fv_ips, hf_ips)]:
        print(f"| {label} | {fmt(a, 3)} | {fmt(b, 3)} | {fmt(a / b, 2) if a and b else '—'} |")

    weights = lm_weight_bytes(args.checkpoint)
    context = mean(i["prompt_tokens"] + i["output_tokens"] / 2 for i in fi) or 0.0
    per_token = weights + kv_bytes_per_token(args.checkpoint, context)
    best = membw.best_gbs(bw)
    bound = best * 1e9 / per_token
    print(f"\nmemory bandwidth (tools/membw.py, best kernel): {best:.1f} GB/s "
          f"({', '.join(f'{k} {v:.1f}' for k, v in bw.items() if k.endswith('_gbs'))})")
    print(f"bytes read per decoded token: {per_token / 1e9:.3f} GB (language model weights {weights / 1e9:.3f} GB "
          f"+ KV cache at ~{context:.0f} tokens)")
    print(f"decode bound: {bound:.2f} tokens/s; faceval {fmt(fv_tps, 2)} tokens/s = "
          f"{fmt(100 * fv_tps / bound if fv_tps else None, 0)}% of it; transformers {fmt(hf_tps, 2)} tokens/s = "
          f"{fmt(100 * hf_tps / bound if hf_tps else None, 0)}%")
    print(f"\nfaceval: {fv['command']}\n  process {fv['process_s']:.1f} s (load included), run folder {fv['run']}")
    if hf:
        print(f"transformers {hf['versions']['transformers']} / torch {hf['versions']['torch']}: "
              f"load {hf['load_ms'] / 1e3:.1f} s, loop {hf['loop_s']:.1f} s")
    args.json_out.write_text(json.dumps({
        "faces": faces, "questions": n, "threads": args.threads, "batch_size": args.batch_size,
        "faceval": fv, "transformers": hf, "same_answers": same, "membw": bw,
        "lm_weight_bytes": weights, "bytes_per_token": per_token, "decode_bound_tokens_per_s": bound,
        "figures": {"faceval": {"decode_tokens_per_s": fv_tps, "items_per_s": fv_ips, "output_tokens_per_s": fv_ots,
                                "vision_first_ms": mean(first), "vision_repeat_ms": mean(again)},
                    "transformers": {"decode_tokens_per_s": hf_tps, "items_per_s": hf_ips,
                                     "output_tokens_per_s": hf_ots}},
    }, indent=1))
    print(f"raw figures: {args.json_out}")
    return 1 if same is False or errors else 0


if __name__ == "__main__":
    sys.exit(main())
