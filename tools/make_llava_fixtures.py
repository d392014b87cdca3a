#!/usr/bin/env python3
"""Generate tiny random-weight LLaVA-1.5 (llava-hf layout) parity fixtures with transformers.

Run by hand (never by CI), from the repository root:

    python tools/make_llava_fixtures.py            # writes harness/models/tests/fixtures/llava/
    python tools/make_llava_fixtures.py --out DIR  # somewhere else

Needs: torch (CPU), transformers 5.x, tokenizers, safetensors, numpy, pillow. No network: the
tokenizer is trained here on fixed text, the weights are seeded random, and the images are the
committed InternVL fixture drawings (harness/models/tests/fixtures/internvl/images/).

What it writes (see README.md in the output folder, which this script also writes):

* ``tiny-llava/``  a LlavaForConditionalGeneration checkpoint in the files llava-hf ships:
  ``config.json`` + ``model.safetensors`` from ``save_pretrained`` (transformers 5.x), a Llama
  tokenizer (``tokenizer.json``, ``tokenizer_config.json``), a flat CLIPImageProcessor
  ``preprocessor_config.json`` with llava-hf/llava-1.5-7b-hf's fields, its
  ``processor_config.json`` (patch size, select strategy, one additional CLS token) and its
  ``chat_template.json`` (the llava-1.5 "USER: <image>\\n... ASSISTANT:" template).
* ``cases/<case>.json`` and ``cases/<case>.safetensors`` (pixel values, image features,
  prompt logits, per-step greedy logits).

Everything is computed with LlavaForConditionalGeneration + AutoProcessor loaded back from
``tiny-llava/``, eager attention, float32, greedy decoding.
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
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE

import transformers
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

SEED = 20251202
MAX_NEW_TOKENS = 8
IMAGE_SIZE = 84
HIDDEN = 64  # vision and text hidden size (MLPs are twice as wide)
PATCH_SIZE = 14
IMAGES_DIR = Path("harness/models/tests/fixtures/internvl/images")

# llava-hf/llava-1.5-7b-hf's chat_template.json (the same string is in transformers'
# convert_llava_weights_to_hf.py family and in OpenVINO GenAI's template table for llava-1.5).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] "
    "!= 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# llava-hf/llava-1.5-7b-hf's preprocessor_config.json, with the 336 sizes scaled to the tiny tower.
PREPROCESSOR_CONFIG = {
    "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "LlavaProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": IMAGE_SIZE},
}

PROCESSOR_CONFIG = {
    "image_token": "<image>",
    "num_additional_image_tokens": 1,
    "patch_size": PATCH_SIZE,
    "processor_class": "LlavaProcessor",
    "vision_feature_select_strategy": "default",
}

TRAINING_TEXT = """
Describe the face in this image. What is the apparent age of this person?
Are these two faces the same person? The person in the image appears to be a young adult
with short dark hair, brown eyes and a neutral expression. The face is slightly turned to
the left. USER: ASSISTANT: Answer with one word. Happy, sad, angry, surprised, fearful,
disgusted, neutral. The image shows a man wearing glasses and a woman smiling. Yes. No.
Attributes: smiling, eyeglasses, beard, bangs, wavy hair, bald. 0 1 2 3 4 5 6 7 8 9 years old.
"""

CASES = {
    "square": {"images": ["face_448.png"], "text": "Describe the face in this image."},
    # 700x340: shortest edge to 84 (172x84), then a centre crop.
    "wide": {"images": ["group_700x340.png"], "text": "What is the apparent age of this person?"},
    # Two images in one turn (380x380 and a 520x500 RGBA whose alpha is dropped).
    "two_images": {
        "images": ["face_380x380.png", "face_520x500.png"],
        "text": "Are these two faces the same person? Answer yes or no.",
    },
    # No image at all: the template's plain user turn, no features spliced in.
    "text_only": {"images": [], "text": "Is the person smiling? Answer yes or no."},
}


def build_tokenizer() -> LlamaTokenizer:
    """A tiny SentencePiece-style BPE (metaspace, byte fallback) wrapped as LlamaTokenizer.

    Ids follow Llama's: <unk> 0, <s> 1, </s> 2, the 256 byte tokens, the BPE pieces, then
    llava-hf's added <image> and <pad> at the end (32000 and 32001 in the real one).
    """
    tok = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=2, show_progress=False, special_tokens=[])
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    trained = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in trained:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                               model_max_length=4096, padding_side="left")
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    n = len(vocab)
    assert tokenizer.convert_tokens_to_ids(["<image>", "<pad>"]) == [n, n + 1]
    return tokenizer


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
        elif "class_embedding" in name or "position_embedding" in name:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        elif short == "weight" and p.ndim == 1:  # norms
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif short == "bias":
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        else:
            raise ValueError(f"unhandled parameter {name} {tuple(p.shape)}")


def llava_config(tokenizer) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=4096,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        pad_token_id=tokenizer.convert_tokens_to_ids("<pad>"),
    )
    cfg = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-2,
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2, tie_word_embeddings=False,
    )
    cfg.architectures = ["LlavaForConditionalGeneration"]
    return cfg


def write_checkpoint(out: Path, work: Path) -> None:
    tokenizer = build_tokenizer()
    cfg = llava_config(tokenizer)
    model = LlavaForConditionalGeneration(cfg).eval()
    init_weights(model, SEED)
    model.save_pretrained(out)
    tokenizer.save_pretrained(work / "tok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(work / "tok" / f, out / f)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
    (out / "processor_config.json").write_text(json.dumps(PROCESSOR_CONFIG, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=cfg.text_config.pad_token_id).save_pretrained(out)
    # Drop files the llava-hf repos do not carry (save_pretrained may add a template file).
    for extra in ("chat_template.jinja",):
        if (out / extra).exists():
            (out / extra).unlink()


@torch.no_grad()
def run_case(model, processor, spec: dict) -> dict:
    images = [Image.open(IMAGES_DIR / n) for n in spec["images"]]
    messages = [{"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": spec["text"]}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=images or None, text=prompt, return_tensors="pt")
    ids = inputs["input_ids"]
    if images:
        pv = inputs["pixel_values"].to(torch.float32)
        feats = model.get_image_features(pixel_values=pv, vision_feature_layer=-2,
                                         vision_feature_select_strategy="default")
        if hasattr(feats, "pooler_output"):
            feats = feats.pooler_output
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats), 0)
        feats = feats.reshape(-1, feats.shape[-1])
    else:
        pv = torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE)
        feats = torch.zeros(0, model.config.text_config.hidden_size)
    full = model(input_ids=ids, pixel_values=pv if images else None).logits[0]
    gen = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    new = gen.sequences[0, ids.shape[1]:].tolist()
    step_logits = torch.stack([l[0] for l in gen.logits])
    margins = []
    for row in step_logits:
        top2 = torch.topk(row, 2).values
        margins.append(float(top2[0] - top2[1]))
    return {"images": images, "messages": messages, "prompt": prompt, "ids": ids[0].tolist(), "pixel_values": pv,
            "image_features": feats, "logits": full, "generated": new, "step_logits": step_logits,
            "margins": margins}


README = """# LLaVA-1.5 parity fixtures

Written by `tools/make_llava_fixtures.py` with transformers {transformers} and torch {torch}; do not
edit by hand. Tests: `harness/models/tests/llava_parity.rs`.

## tiny-llava/

A seeded random `LlavaForConditionalGeneration` in the files the llava-hf repos ship:
`config.json` + `model.safetensors` (transformers `save_pretrained`; key names {prefixes}),
`tokenizer.json` / `tokenizer_config.json` (a tiny SentencePiece-style Llama BPE with byte fallback;
`<image>` = {image_id} and `<pad>` added last, as 32000/32001 in llava-1.5-7b-hf),
`preprocessor_config.json` (flat CLIPImageProcessor, llava-hf's fields with 336 scaled to {size}),
`processor_config.json` (patch size, `vision_feature_select_strategy: default`,
`num_additional_image_tokens: 1`), `chat_template.json` (llava-1.5's template, with its
`{{% generation %}}` tags), `generation_config.json`.

* Vision: CLIP, hidden 64, 2 layers, 4 heads, MLP 128, quick_gelu, image {size}, patch {patch}
  ({tokens} patch tokens + CLS); `vision_feature_layer: -2` (the output of layer 1 of 2),
  strategy `default` (CLS dropped).
* Projector: Linear(64->64) -> GELU (erf) -> Linear(64->64), with biases.
* Text: Llama, hidden 64, 2 layers, 4 heads / 2 KV heads, MLP 128, RMSNorm eps 1e-5, rope theta
  1e4, max positions 4096, untied lm_head, vocabulary {vocab}.
* Weights are seeded with O(1) activations so the greedy argmax has clear margins
  (`greedy_step_margins` in each case).

Image processor that transformers instantiated from these files: `{backend}` (torchvision
installed: {torchvision}). The Rust resampler reproduces Pillow's bicubic exactly.

## Cases

{cases}

`legacy-tokenizer.json`: the same vocabulary with the hub's older Llama pipeline (normalizer
Prepend "▁" + Replace " " -> "▁", no pre-tokenizer), as transformers 4.x wrote Llama tokenizer.json files.
transformers 5.17's AutoTokenizer uses such a file as is; `legacy-tokenizer-ids.json` holds the
ids it gives for each case's expanded prompt (they differ from `input_ids` after `<image>`).

`cases/<case>.json`: `images` (relative to this folder), `image_sizes_hw`, `image_modes`,
`messages`, `rendered_prompt` (chat template output), `expanded_prompt` (each `<image>` repeated
`num_image_tokens_per_image` times, as LlavaProcessor does), `input_ids` (BOS included),
`image_token_id`, `generated_ids` (greedy, new tokens only, EOS kept if reached),
`generated_text`, `greedy_step_margins`.

`cases/<case>.safetensors` (f32): `pixel_values` `[images, 3, {size}, {size}]`, `image_features`
`[images * {tokens}, 64]` (projector output), `logits` `[prompt_len, vocab]` (one forward over the
full prompt), `step_logits` `[steps, vocab]` (the logits that chose each greedy token; row 0
equals the last row of `logits`).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="harness/models/tests/fixtures/llava")
    ap.add_argument("--geometry", choices=["tiny", "llava-1.5"], default="tiny",
                    help="llava-1.5: the real 336 px / patch 14 geometry (576 image tokens) with "
                         "hidden size 128; too large to commit, for a one-off check "
                         "(FACEVAL_LLAVA_FIXTURES=DIR cargo test -p faceval-models --test llava_parity)")
    args = ap.parse_args()
    if args.geometry == "llava-1.5":
        global IMAGE_SIZE, HIDDEN
        IMAGE_SIZE, HIDDEN = 336, 128
        PREPROCESSOR_CONFIG["crop_size"] = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        PREPROCESSOR_CONFIG["size"] = {"shortest_edge": IMAGE_SIZE}
    out = Path(args.out)
    torch.manual_seed(SEED)
    if out.exists():
        shutil.rmtree(out)
    (out / "cases").mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="llava_fixtures_"))
    ckpt = out / "tiny-llava"
    write_checkpoint(ckpt, work)

    processor = AutoProcessor.from_pretrained(ckpt)
    backend = type(processor.image_processor).__name__
    model = LlavaForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_id == image_id
    keys = sorted(load_file(str(ckpt / "model.safetensors")).keys())
    prefixes = sorted({".".join(k.split(".")[:2]) for k in keys})
    tokens_per_image = (IMAGE_SIZE // PATCH_SIZE) ** 2
    try:
        import torchvision  # noqa: F401
        has_tv = True
    except ImportError:
        has_tv = False

    case_lines = []
    for case, spec in CASES.items():
        r = run_case(model, processor, spec)
        assert min(r["margins"]) > 0.05, (case, r["margins"], "try another SEED")
        assert torch.allclose(r["step_logits"][0], r["logits"][-1], atol=1e-5)
        expanded = r["prompt"].replace("<image>", "<image>" * tokens_per_image)
        assert tokenizer(expanded)["input_ids"] == r["ids"]
        save_file(
            {
                "pixel_values": r["pixel_values"].contiguous(),
                "image_features": r["image_features"].contiguous(),
                "logits": r["logits"].contiguous(),
                "step_logits": r["step_logits"].contiguous(),
            },
            str(out / "cases" / f"{case}.safetensors"),
        )
        case_json = {
            "case": case,
            "images": [os.path.relpath(IMAGES_DIR.resolve() / n, out.resolve()) for n in spec["images"]],
            "image_sizes_hw": [[im.height, im.width] for im in r["images"]],
            "image_modes": [im.mode for im in r["images"]],
            "messages": r["messages"],
            "user_text": spec["text"],
            "add_generation_prompt": True,
            "rendered_prompt": r["prompt"],
            "expanded_prompt": expanded,
            "input_ids": r["ids"],
            "image_token_id": image_id,
            "num_image_tokens_per_image": tokens_per_image,
            "max_new_tokens": MAX_NEW_TOKENS,
            "generated_ids": r["generated"],
            "generated_text": tokenizer.decode(r["generated"], skip_special_tokens=True),
            "greedy_step_margins": r["margins"],
        }
        (out / "cases" / f"{case}.json").write_text(json.dumps(case_json, indent=1, ensure_ascii=False) + "\n")
        case_lines.append(f"* `{case}`: {', '.join(spec['images']) or 'no image'}; {len(r['ids'])} prompt ids; "
                          f"greedy {r['generated']}")
        print(case, len(r["ids"]), r["generated"], "min margin", round(min(r["margins"]), 3))

    # Llama tokenizer.json files written by transformers 4.x carry the older pipeline (normalizer Prepend "▁" +
    # Replace " " -> "▁", no pre-tokenizer). transformers 5.17's AutoTokenizer loads such a file
    # as is (a TokenizersBackend), so its ids differ from the Metaspace pipeline's after an
    # added token; record what it gives, so the Rust side is checked on that pipeline too.
    tj = json.loads((ckpt / "tokenizer.json").read_text())
    tj["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    tj["pre_tokenizer"] = None
    legacy_json = json.dumps(tj, ensure_ascii=False, indent=2) + "\n"
    (out / "legacy-tokenizer.json").write_text(legacy_json)
    legacy_dir = work / "legacy"
    shutil.copytree(ckpt, legacy_dir)
    (legacy_dir / "tokenizer.json").write_text(legacy_json)
    legacy_proc = AutoProcessor.from_pretrained(legacy_dir)
    legacy_class = type(legacy_proc.tokenizer).__name__
    legacy_ids = {}
    for case in CASES:
        cj = json.loads((out / "cases" / f"{case}.json").read_text())
        legacy_ids[case] = legacy_proc.tokenizer(cj["expanded_prompt"])["input_ids"]
    assert any(legacy_ids[c] != json.loads((out / "cases" / f"{c}.json").read_text())["input_ids"] for c in CASES)
    (out / "legacy-tokenizer-ids.json").write_text(json.dumps(
        {"tokenizer_class": legacy_class, "input_ids": legacy_ids}, indent=1) + "\n")

    (out / "README.md").write_text(README.format(
        transformers=transformers.__version__, torch=torch.__version__, prefixes=", ".join(f"`{p}`" for p in prefixes),
        image_id=image_id, size=IMAGE_SIZE, patch=PATCH_SIZE, tokens=tokens_per_image, vocab=len(tokenizer),
        backend=backend, torchvision=has_tv, cases="\n".join(case_lines)))
    (out / "manifest.json").write_text(json.dumps({
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "image_processor_class": backend, "torchvision_installed": has_tv, "weight_keys": keys,
        "vocab_size": len(tokenizer), "image_token_id": image_id,
    }, indent=2) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
