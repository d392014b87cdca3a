#!/usr/bin/env python3
"""faceval vs transformers on the CPU: same weights, same input, same thread count.

Run by hand (see docs/performance.md):

    cargo build --release -p faceval
    python tools/cpu_side_by_side.py --threads 2 --repeats 3 --max-new-tokens 16

1. Writes an InternVL3-1B-sized checkpoint with seeded random weights once, with faceval's own
   writer (`faceval make-checkpoint --size 1b`), in the transformers 5.x format.
2. faceval: `faceval generate --json --repeat R` (one process, the model loaded once; the first
   run is a warm-up and is left out). Stage timings come from faceval's own timers.
3. transformers: InternVLForConditionalGeneration in float32 with eager attention and
   torch.set_num_threads(threads), timed stage by stage the way faceval splits an item:
   vision = get_image_features + splicing into the prompt embeddings; prefill = the prompt
   through the decoder up to the first token's logits; decode = the remaining greedy steps with
   the KV cache. `model.generate` end to end is timed too, as a cross-check of the split.
   One warm-up call first, then R timed ones.
4. Checks that both produce the same greedy tokens (same weights, same input), then prints a
   Markdown table and writes the raw figures as JSON.

faceval's candle CPU kernels use one thread per core (RAYON_NUM_THREADS caps them); the script
sets RAYON_NUM_THREADS to the same count as torch's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACE = ROOT / "harness/models/tests/fixtures/internvl/images/face_448.png"
PROMPT = "Describe the face in this image."


def faceval_runs(binary: Path, ckpt: Path, args) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [
        str(binary), "generate", "--model", str(ckpt), "--image", str(args.image),
        "--prompt", args.prompt, "--max-new-tokens", str(args.max_new_tokens),
        "--repeat", str(args.repeats + 1), "--json",
        # Every repeat encodes the image: the cross-question feature cache is measured by
        # tools/fairface_side_by_side.py, not here.
        "--feature-cache-mb", "0",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout)
    runs = res["repeats"][1:]  # the first is a warm-up
    return {
        "command": " ".join(cmd),
        "tokens": res["token_ids"],
        "prompt_tokens": res["prompt_tokens"],
        "load_ms": res["load_ms"],
        "process_wall_s": wall,
        "runs": [
            {
                "preprocess_ms": r["preprocess_ms"],
                "vision_ms": r["vision_ms"],
                "prefill_ms": r["prefill_ms"],
                "decode_ms": r["decode_ms"],
                "total_ms": r["e2e_ms"],
            }
            for r in runs
        ],
    }


def transformers_runs(ckpt: Path, args) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoProcessor, InternVLForConditionalGeneration, InternVLProcessor

    torch.set_num_threads(args.threads)
    if importlib.util.find_spec("torchvision") is None:
        # InternVLVideoProcessor needs torchvision; images never touch it (as in
        # tools/make_internvl_fixtures.py): drop the video slot from the processor.
        attrs = InternVLProcessor.get_attributes()
        InternVLProcessor.get_attributes = classmethod(lambda cls: [a for a in attrs if a != "video_processor"])
    t0 = time.perf_counter()
    processor = AutoProcessor.from_pretrained(ckpt)
    model = InternVLForConditionalGeneration.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    image = Image.open(args.image)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    n_new = args.max_new_tokens

    @torch.no_grad()
    def one() -> tuple[dict, list[int]]:
        t = {}
        s = time.perf_counter()
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[image], text=prompt, return_tensors="pt")
        t["preprocess_ms"] = (time.perf_counter() - s) * 1e3
        ids = inputs["input_ids"]
        pv = inputs["pixel_values"].to(torch.float32)

        s = time.perf_counter()
        feats = model.model.get_image_features(pixel_values=pv)
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
        logits = out.logits[:, -1, :]
        nxt = int(torch.argmax(logits, dim=-1))
        t["prefill_ms"] = (time.perf_counter() - s) * 1e3

        s = time.perf_counter()
        tokens = [nxt]
        pkv = out.past_key_values
        attn = inputs["attention_mask"]
        eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                  else [model.generation_config.eos_token_id])
        while len(tokens) < n_new and tokens[-1] not in eos:
            attn = torch.cat([attn, attn.new_ones((1, 1))], dim=1)
            out = model(input_ids=torch.tensor([[tokens[-1]]]), attention_mask=attn, past_key_values=pkv, use_cache=True)
            pkv = out.past_key_values
            tokens.append(int(torch.argmax(out.logits[:, -1, :], dim=-1)))
        t["decode_ms"] = (time.perf_counter() - s) * 1e3
        t["total_ms"] = t["preprocess_ms"] + t["vision_ms"] + t["prefill_ms"] + t["decode_ms"]
        return t, tokens

    @torch.no_grad()
    def generate_e2e() -> tuple[float, list[int]]:
        s = time.perf_counter()
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[image], text=prompt, return_tensors="pt")
        g = model.generate(**inputs, max_new_tokens=n_new, do_sample=False, num_beams=1)
        return (time.perf_counter() - s) * 1e3, g[0, inputs["input_ids"].shape[1]:].tolist()

    one()  # warm-up
    runs, tokens = [], []
    for _ in range(args.repeats):
        t, tokens = one()
        runs.append(t)
    e2e = []
    for _ in range(max(1, args.repeats // 2)):
        ms, gen_tokens = generate_e2e()
        e2e.append(ms)
    return {
        "tokens": tokens,
        "generate_tokens": gen_tokens,
        "load_ms": load_ms,
        "runs": runs,
        "generate_e2e_ms": e2e,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def best(runs: list[dict], key: str) -> float:
    # On a shared machine other processes only ever add time: the fastest run is the figure
    # least disturbed by them. Medians are printed too.
    return min(r[key] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("/tmp/faceval-internvl3-1b-random"))
    ap.add_argument("--faceval", type=Path, default=ROOT / "target/release/faceval")
    ap.add_argument("--image", type=Path, default=FACE)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json-out", type=Path, default=Path("/tmp/cpu_side_by_side.json"))
    args = ap.parse_args()

    if not args.faceval.is_file():
        print(f"{args.faceval}: build it first (cargo build --release -p faceval)", file=sys.stderr)
        return 2
    if not (args.checkpoint / "model.safetensors").is_file():
        subprocess.run([str(args.faceval), "make-checkpoint", "--size", "1b", "--out", str(args.checkpoint)], check=True)

    fv = faceval_runs(args.faceval, args.checkpoint, args)
    hf = transformers_runs(args.checkpoint, args)
    same = fv["tokens"] == hf["tokens"] == hf["generate_tokens"]

    steps = len(fv["tokens"]) - 1
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"threads {args.threads}; prompt {fv['prompt_tokens']} tokens; {len(fv['tokens'])} new tokens; "
          f"{args.repeats} runs after one warm-up")
    print(f"greedy tokens identical: {same}")
    for label, agg in [("best", best), ("median", median)]:
        print(f"\n{label} of {args.repeats}:")
        print("| stage | faceval (ms) | transformers (ms) | faceval / transformers |")
        print("|---|---:|---:|---:|")
        for stage in ["preprocess_ms", "vision_ms", "prefill_ms", "decode_ms", "total_ms"]:
            a, b = agg(fv["runs"], stage), agg(hf["runs"], stage)
            print(f"| {stage.removesuffix('_ms')} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
        if steps:
            fv_tps = steps / (agg(fv["runs"], "decode_ms") / 1e3)
            hf_tps = (len(hf["tokens"]) - 1) / (agg(hf["runs"], "decode_ms") / 1e3)
            print(f"| decode tokens/s | {fv_tps:.2f} | {hf_tps:.2f} | {fv_tps / hf_tps:.2f} |")
    print(f"\ntransformers generate() end to end (median): {statistics.median(hf['generate_e2e_ms']):.0f} ms")
    print(f"load: faceval {fv['load_ms']:.0f} ms, transformers {hf['load_ms']:.0f} ms")
    args.json_out.write_text(json.dumps({"faceval": fv, "transformers": hf, "same_tokens": same,
                                         "threads": args.threads}, indent=1))
    print(f"raw figures: {args.json_out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
