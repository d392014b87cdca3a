#!/usr/bin/env python3
"""Generate tiny random-weight Qwen2-VL and Qwen2.5-VL parity fixtures with transformers.

Run by hand (never by CI), from the repository root:

    python tools/make_qwen2_vl_fixtures.py            # writes harness/models/tests/fixtures/qwen2_vl/
    python tools/make_qwen2_vl_fixtures.py --out DIR  # somewhere else
    python tools/make_qwen2_vl_fixtures.py --geometry hub --out /tmp/qwen-hub
        # the hub processors' min_pixels/max_pixels (3136 / 12845056) and window size 112,
        # hidden sizes still tiny; too large to commit. Then
        # FACEVAL_QWEN2_VL_FIXTURES=/tmp/qwen-hub cargo test -p faceval-models --test qwen2_vl_parity

Needs: torch (CPU), transformers 5.x, tokenizers, safetensors, numpy, pillow. No network: the
byte-level BPE tokenizer is trained here on fixed text, the weights are seeded random, and the
images are the committed InternVL fixture drawings (harness/models/tests/fixtures/internvl/images/).

It writes, per family (``tiny-qwen2-vl/`` with Qwen2VLForConditionalGeneration and
``tiny-qwen2.5-vl/`` with Qwen2_5_VLForConditionalGeneration), the files the Qwen hub repos ship
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``preprocessor_config.json``, ``chat_template.json``, ``generation_config.json``) and
``cases/<family>/<case>.{json,safetensors}`` with pixel values, grids, ids, M-RoPE position ids,
prompt logits and per-step greedy logits, all from the model loaded back with eager attention in
float32, and the processor loaded back with AutoProcessor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers, AddedToken
from tokenizers.models import BPE

import transformers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

SEED = 20251206  # Qwen2-VL weights
SEED_25 = 20251209  # Qwen2.5-VL weights
MAX_NEW_TOKENS = 8
IMAGES_DIR = Path("harness/models/tests/fixtures/internvl/images")

# The chat template of Qwen/Qwen2-VL-7B-Instruct (also Qwen2.5-VL-*-Instruct's), as its
# chat_template.json carries it.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

TRAINING_TEXT = """
Describe the face in this image. What is the apparent age of this person?
Are these two faces the same person? The person in the image appears to be a young adult
with short dark hair, brown eyes and a neutral expression. The face is slightly turned to
the left. system user assistant You are a helpful assistant. Answer with one word. Happy, sad,
angry, surprised, fearful, disgusted, neutral. Yes. No. Is the person smiling? Answer yes or no.
Attributes: smiling, eyeglasses, beard, bangs, wavy hair, bald. 0 1 2 3 4 5 6 7 8 9 years old.
"""

CASES = {
    "one_image": {"images": ["face_448.png"], "text": "Describe the face in this image."},
    "two_images": {
        "images": ["face_380x380.png", "face_520x500.png"],
        "text": "Are these two faces the same person? Answer yes or no.",
    },
    # 700x340: a non-square grid, so M-RoPE's height and width positions differ.
    "wide": {"images": ["group_700x340.png"], "text": "What is the apparent age of this person?"},
    "text_only": {"images": [], "text": "Is the person smiling? Answer yes or no."},
}

# Tiny geometry: 28 px merge units, at most 16 of them per image (12544 px), so an image is a
# few dozen patches. "hub" keeps the hub processors' pixel bounds and window size.
GEOMETRY = {
    "tiny": {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16, "window_size": 56},
    "hub": {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16384, "window_size": 112},
}


def build_tokenizer(work: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE like Qwen2's (GPT-2 byte alphabet, no prefix space), trained on fixed
    text, with Qwen2-VL's special tokens appended after the vocabulary."""
    tok = Tokenizer(BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=32768, clean_up_tokenization_spaces=False,
    )
    return fast


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded init with O(1) activations, so the greedy argmax has clear margins."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        short = name.split(".")[-1]
        if "embed_tokens" in name:
            p.copy_(0.25 * torch.randn(p.shape, generator=g))
        elif name.endswith("lm_head.weight"):
            p.copy_(6.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        elif short == "weight" and p.ndim == 1:  # norms
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif short == "bias":
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        else:
            raise ValueError(f"unhandled parameter {name} {tuple(p.shape)}")


def text_config(tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        # head_dim 16: 8 rotary frequencies split 2 (temporal) + 3 (height) + 3 (width).
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tie_word_embeddings=False,
    )


def family_config(family: str, tokenizer, geometry: dict):
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in {
        "image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}.items()}
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, hidden_act="quick_gelu", mlp_ratio=2,
                      num_heads=2, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        cfg = Qwen2VLConfig(vision_config=vision, text_config=text_config(tokenizer), tie_word_embeddings=False, **ids)
        cfg.architectures = ["Qwen2VLForConditionalGeneration"]
    else:
        # Four blocks: 0 and 2 windowed, 1 and 3 full attention.
        vision = dict(depth=4, hidden_size=32, intermediate_size=48, hidden_act="silu", num_heads=2,
                      in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=geometry["window_size"], out_hidden_size=64, fullatt_block_indexes=[1, 3])
        cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text_config(tokenizer), tie_word_embeddings=False, **ids)
        cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return cfg


def preprocessor_config(family: str, geometry: dict) -> dict:
    # Qwen/Qwen2-VL-7B-Instruct's preprocessor_config.json, with the pixel bounds of `geometry`.
    return {
        "min_pixels": geometry["min_pixels"],
        "max_pixels": geometry["max_pixels"],
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor" if family == "qwen2_vl" else "Qwen2_5_VLProcessor",
    }


def write_checkpoint(family: str, out: Path, work: Path, geometry: dict):
    tokenizer = build_tokenizer(work)
    cfg = family_config(family, tokenizer, geometry)
    cls = Qwen2VLForConditionalGeneration if family == "qwen2_vl" else Qwen2_5_VLForConditionalGeneration
    model = cls(cfg).eval()
    init_weights(model, SEED if family == "qwen2_vl" else SEED_25)
    model.save_pretrained(out)
    tokenizer.save_pretrained(work / f"tok-{family}")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(work / f"tok-{family}" / f, out / f)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family, geometry), indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    GenerationConfig(bos_token_id=eot, eos_token_id=[eos, eot], pad_token_id=eot).save_pretrained(out)
    for extra in ("chat_template.jinja",):
        if (out / extra).exists():
            (out / extra).unlink()
    return cls


@torch.no_grad()
def run_case(model, processor, spec: dict) -> dict:
    images = [Image.open(IMAGES_DIR / n) for n in spec["images"]]
    messages = [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": spec["text"]}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=images or None, text=prompt, return_tensors="pt")
    expanded = inputs.pop("expanded")
    ids = inputs["input_ids"]
    out = {"expanded": expanded, "images": images, "messages": messages, "prompt": prompt, "ids": ids[0].tolist()}
    if images:
        pv = inputs["pixel_values"].to(torch.float32)
        grid = inputs["image_grid_thw"]
        feats = model.model.get_image_features(pixel_values=pv, image_grid_thw=grid)
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
        pos, deltas = model.model.get_rope_index(ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                                                 image_grid_thw=grid)
        out.update(pixel_values=pv, grid=grid.tolist(), image_features=feats,
                   position_ids=pos[:, 0].to(torch.int64), rope_delta=int(deltas[0, 0]))
    else:
        out.update(pixel_values=torch.zeros(0, 3 * 2 * 14 * 14), grid=[],
                   image_features=torch.zeros(0, model.config.text_config.hidden_size),
                   position_ids=torch.arange(ids.shape[1]).view(1, -1).expand(3, -1).contiguous(), rope_delta=0)
    model.model.rope_deltas = None
    full = model(**inputs).logits[0]
    model.model.rope_deltas = None
    gen = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    new = gen.sequences[0, ids.shape[1]:].tolist()
    step_logits = torch.stack([l[0] for l in gen.logits])
    margins = []
    for row in step_logits:
        top2 = torch.topk(row, 2).values
        margins.append(float(top2[0] - top2[1]))
    out.update(logits=full, generated=new, step_logits=step_logits, margins=margins)
    return out


class Processor:
    """What Qwen2VLProcessor / Qwen2_5_VLProcessor do for images and text, built from their
    parts: ProcessorMixin insists on the video processor, which needs torchvision (absent here),
    and no case has a video. The image processor is transformers' own PIL backend
    (Qwen2VLImageProcessorPil, Pillow's bicubic); the template is rendered by the tokenizer's
    apply_chat_template; each `<|image_pad|>` becomes grid_t*grid_h*grid_w/merge^2 copies and
    `mm_token_type_ids` marks them, as Qwen2VLProcessor.replace_image_token does."""

    def __init__(self, ckpt: Path):
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(ckpt)
        self.tokenizer = AutoTokenizer.from_pretrained(ckpt)
        self.chat_template = json.loads((ckpt / "chat_template.json").read_text())["chat_template"]
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, images, text, return_tensors="pt"):
        out = {}
        if images:
            px = self.image_processor(images=images, return_tensors="pt")
            out["pixel_values"] = px["pixel_values"]
            out["image_grid_thw"] = px["image_grid_thw"]
            merge = self.image_processor.merge_size ** 2
            parts = text.split("<|image_pad|>")
            assert len(parts) == len(images) + 1
            text = parts[0]
            for g, rest in zip(px["image_grid_thw"].tolist(), parts[1:]):
                text += "<|image_pad|>" * (g[0] * g[1] * g[2] // merge) + rest
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        out["input_ids"] = ids
        out["attention_mask"] = torch.ones_like(ids)
        out["mm_token_type_ids"] = (ids == self.image_token_id).to(torch.int32)
        out["expanded"] = text
        return out


def main() -> None:
    global SEED, SEED_25
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="harness/models/tests/fixtures/qwen2_vl")
    ap.add_argument("--geometry", choices=sorted(GEOMETRY), default="tiny")
    ap.add_argument("--seed", type=int, default=SEED, help="Qwen2-VL weight seed (pick another when a "
                    "greedy margin is too thin to compare tokens)")
    ap.add_argument("--seed-25", type=int, default=SEED_25, help="Qwen2.5-VL weight seed")
    args = ap.parse_args()
    SEED, SEED_25 = args.seed, args.seed_25
    geometry = GEOMETRY[args.geometry]
    out = Path(args.out)
    torch.manual_seed(SEED)
    if out.exists():
        shutil.rmtree(out)
    work = Path(tempfile.mkdtemp(prefix="qwen2_vl_fixtures_"))
    lines = []
    for family, dirname in (("qwen2_vl", "tiny-qwen2-vl"), ("qwen2_5_vl", "tiny-qwen2.5-vl")):
        ckpt = out / dirname
        cls = write_checkpoint(family, ckpt, work, geometry)
        processor = Processor(ckpt)
        backend = type(processor.image_processor).__name__
        model = cls.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
        tokenizer = processor.tokenizer
        (out / "cases" / family).mkdir(parents=True)
        lines.append(f"## {dirname} ({cls.__name__}; image processor {backend})\n")
        for case, spec in CASES.items():
            r = run_case(model, processor, spec)
            assert min(r["margins"]) > 0.05, (family, case, r["margins"], "try another SEED")
            assert torch.allclose(r["step_logits"][0], r["logits"][-1], atol=1e-5)
            save_file(
                {
                    "pixel_values": r["pixel_values"].contiguous(),
                    "image_features": r["image_features"].contiguous(),
                    "position_ids": r["position_ids"].contiguous(),
                    "logits": r["logits"].contiguous(),
                    "step_logits": r["step_logits"].contiguous(),
                },
                str(out / "cases" / family / f"{case}.safetensors"),
            )
            case_json = {
                "case": case,
                "family": family,
                "checkpoint": dirname,
                "images": [os.path.relpath(IMAGES_DIR.resolve() / n, out.resolve()) for n in spec["images"]],
                "image_sizes_hw": [[im.height, im.width] for im in r["images"]],
                "user_text": spec["text"],
                "messages": r["messages"],
                "rendered_prompt": r["prompt"],
                "expanded_prompt": r["expanded"],
                "input_ids": r["ids"],
                "image_grid_thw": r["grid"],
                "rope_delta": r["rope_delta"],
                "max_new_tokens": MAX_NEW_TOKENS,
                "generated_ids": r["generated"],
                "generated_text": tokenizer.decode(r["generated"], skip_special_tokens=True),
                "greedy_step_margins": r["margins"],
            }
            (out / "cases" / family / f"{case}.json").write_text(json.dumps(case_json, indent=1, ensure_ascii=False) + "\n")
            lines.append(f"* `{case}`: {', '.join(spec['images']) or 'no image'}; grids {r['grid']}; "
                         f"{len(r['ids'])} prompt ids; greedy {r['generated']}")
            print(family, case, r["grid"], len(r["ids"]), r["generated"], "min margin", round(min(r["margins"]), 3))
        lines.append("")
    readme = f"""# Qwen2-VL / Qwen2.5-VL parity fixtures

Written by `tools/make_qwen2_vl_fixtures.py --geometry {args.geometry} --seed {SEED} --seed-25 {SEED_25}` with transformers
{transformers.__version__} and torch {torch.__version__}; do not edit by hand. Tests:
`harness/models/tests/qwen2_vl_parity.rs`. Pixel bounds: min_pixels {geometry['min_pixels']},
max_pixels {geometry['max_pixels']}; Qwen2.5-VL window_size {geometry['window_size']}.

Each case: `cases/<family>/<case>.json` (rendered prompt, input ids, grids, greedy ids) and
`.safetensors` (`pixel_values` `[patches, 1176]`, `image_features` `[tokens, 64]`,
`position_ids` `[3, prompt_len]` (M-RoPE, int64), `logits` `[prompt_len, vocab]`,
`step_logits` `[steps, vocab]`).

""" + "\n".join(lines)
    (out / "README.md").write_text(readme)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
