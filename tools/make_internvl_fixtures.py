#!/usr/bin/env python3
"""Generate tiny random-weight InternVL3 parity fixtures with transformers.

Run by hand (never by CI), from the repository root:

    python tools/make_internvl_fixtures.py            # writes harness/models/tests/fixtures/internvl/
    python tools/make_internvl_fixtures.py --out DIR  # somewhere else

Needs: torch (CPU), transformers 5.x, tokenizers, safetensors, numpy, pillow. No network: the
tokenizer is trained here on fixed text, the weights are seeded random, the images are drawn here.

What it writes (see README.md in the output folder, which this script also writes):

* ``images/*.png``  deterministic face-like drawings used by the cases.
* ``tiny-300m-legacy/``   300M-style vision tower (LayerNorm, qkv bias, layer scale), legacy
  transformers key names (``vision_tower.*``, ``multi_modal_projector.*``,
  ``language_model.model.*``, ``language_model.lm_head.weight``), sharded with an index.
* ``tiny-300m-current/``  the same weights with current names (``model.vision_tower.*`` ...),
  ``lm_head.weight`` dropped because ``tie_word_embeddings`` is true (tying is exercised).
* ``tiny-300m-original/`` the same weights in the original InternVLChatModel layout
  (``vision_model.*`` with fused ``attn.qkv``, ``ls1/ls2``, ``mlp1.{0,1,3}``) and an
  original-style config.json (``llm_config``, ``vision_config``, ``template`` ...), plus a
  transformers-4.x-style ``preprocessor_config.json`` and the chat template inside
  ``tokenizer_config.json``.
* ``tiny-6b/``            6B-style vision tower (RMSNorm, QK-norm, no qkv bias), untied lm_head,
  current key names, single file.
* ``cases/<case>.json``, ``cases/<case>.pixels.safetensors``,
  ``cases/<case>.<checkpoint>.logits.safetensors``.

Everything is computed with InternVLForConditionalGeneration + AutoProcessor loaded from the
fixture folders, eager attention, float32, greedy decoding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE

import transformers
from transformers import (
    AutoProcessor,
    GenerationConfig,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVisionConfig,
    Qwen2Config,
    Qwen2Tokenizer,
)

SEED = 20250611
MAX_NEW_TOKENS = 8
LAST_POSITIONS = 8

# The real InternVL3-*-hf chat template, as transformers' convert_internvl_weights_to_hf.py
# writes it (verified against that script's `chat_template` constant).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}"
    "{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{'<|im_start|>assistant\n' }}"
    "{% endif %}"
)

# Qwen2's pre-tokenizer split pattern (transformers' tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Special tokens in Qwen2 / InternVL3 order (ids follow the trained vocabulary, as in Qwen2.5,
# where they follow the 151643 BPE tokens).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
]

TRAINING_TEXT = """
Describe the face in this image. What is the apparent age of this person?
Are these two faces the same person? The person in the image appears to be a young adult
with short dark hair, brown eyes and a neutral expression. The face is slightly turned to
the left. The lighting is soft and comes from the right side. Estimate the gender, the age
and the emotion shown by the face. Answer with one word. Happy, sad, angry, surprised,
fearful, disgusted, neutral. The image shows a man wearing glasses and a woman smiling.
There is no face in this picture. Yes. No. The two images show the same person.
Attributes: smiling, eyeglasses, beard, mustache, bangs, wavy hair, straight hair, bald.
0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 60 70 years old, child, teenager, adult, elderly.
"""


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def build_tokenizer(workdir: Path) -> Qwen2Tokenizer:
    """Train a tiny byte-level BPE with Qwen2's pipeline and wrap it as Qwen2Tokenizer."""
    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    vocab = tok.get_vocab()
    n_bpe = len(vocab)
    # Specials take the ids right after the BPE vocabulary, in Qwen2/InternVL order; putting them in
    # the model vocabulary first makes the added-token ids deterministic.
    for i, t in enumerate(SPECIAL_TOKENS):
        vocab[t] = n_bpe + i
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=8192,
        return_token_type_ids=False,
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    # Specials must follow the BPE vocabulary, as in Qwen2.5.
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert ids == list(range(n_bpe, n_bpe + len(SPECIAL_TOKENS))), ids
    assert len(tokenizer) == n_bpe + len(SPECIAL_TOKENS), len(tokenizer)
    return tokenizer


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def draw_face(width: int, height: int, seed: int, skin=(224, 180, 150), bg_top=(40, 70, 120), bg_bottom=(170, 190, 210)) -> Image.Image:
    """A deterministic face-like drawing: gradient background, texture, head, eyes, mouth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    t = yy / max(height - 1, 1)
    bg = np.zeros((height, width, 3), dtype=np.float64)
    for c in range(3):
        bg[..., c] = bg_top[c] * (1 - t) + bg_bottom[c] * t
    # Smooth texture so that resampling has something to do besides flat areas.
    phase = rng.uniform(0, 2 * math.pi, size=3)
    for c in range(3):
        bg[..., c] += 18 * np.sin(xx / 7.3 + phase[c]) * np.cos(yy / 11.1 + phase[c] / 2)
    bg += rng.normal(0, 1.0, size=bg.shape)
    img = Image.fromarray(np.clip(np.rint(bg), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    cx, cy = width / 2, height / 2
    fw, fh = min(width, height) * 0.36, min(width, height) * 0.46
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin, outline=(120, 80, 60), width=3)
    hair = tuple(int(v) for v in rng.integers(20, 90, size=3))
    d.chord([cx - fw, cy - fh, cx + fw, cy + fh * 0.2], start=180, end=360, fill=hair)
    for side in (-1, 1):
        ex, ey = cx + side * fw * 0.42, cy - fh * 0.05
        d.ellipse([ex - fw * 0.17, ey - fh * 0.07, ex + fw * 0.17, ey + fh * 0.07], fill=(250, 250, 250))
        d.ellipse([ex - fw * 0.07, ey - fh * 0.06, ex + fw * 0.07, ey + fh * 0.06], fill=(60, 40, 30))
    d.line([cx, cy, cx - fw * 0.1, cy + fh * 0.3, cx + fw * 0.05, cy + fh * 0.32], fill=(150, 100, 80), width=3)
    d.arc([cx - fw * 0.4, cy + fh * 0.25, cx + fw * 0.4, cy + fh * 0.65], start=20, end=160, fill=(170, 60, 60), width=4)
    return img


def make_images(image_dir: Path) -> dict[str, Path]:
    image_dir.mkdir(parents=True, exist_ok=True)
    specs = {
        # Exactly 448x448: one tile and no resize at all, so pixels must match exactly.
        "face_448.png": (448, 448, 1, (224, 180, 150)),
        # 2.06:1 -> grid 2x1 (resize to 896x448, two tiles) + a 448 thumbnail = 3 tiles.
        "group_700x340.png": (700, 340, 2, (200, 150, 120)),
        # Smaller than a tile: one tile, upsampled. (Note a 4:5 portrait would already give
        # 3x4 tiles + thumbnail: ties are the only place where the tile area matters.)
        "face_380x380.png": (380, 380, 3, (180, 130, 100)),
        # Slightly larger than a tile: one tile, downsampled.
        "face_520x500.png": (520, 500, 4, (236, 196, 170)),
    }
    out = {}
    for name, (w, h, seed, skin) in specs.items():
        img = draw_face(w, h, seed, skin=skin)
        if name == "face_520x500.png":
            # Store one image as RGBA to exercise the RGB conversion (alpha is dropped, as PIL's
            # Image.convert("RGB") does in transformers' convert_to_rgb).
            img = img.convert("RGBA")
            a = np.asarray(img).copy()
            a[..., 3] = 200
            img = Image.fromarray(a, "RGBA")
        path = image_dir / name
        img.save(path, format="PNG", optimize=True)
        out[name] = path
    return out


CASES = {
    "square": {
        "images": ["face_448.png"],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "Describe the face in this image."}],
            }
        ],
    },
    "wide": {
        "images": ["group_700x340.png"],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "What is the apparent age of this person?"}],
            }
        ],
    },
    "two_images": {
        "images": ["face_380x380.png", "face_520x500.png"],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "image"},
                    {"type": "text", "text": "Are these two faces the same person? Answer yes or no."},
                ],
            }
        ],
    },
}


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def text_config(vocab_size: int, eos_id: int, bos_id: int, tie: bool) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=2,
        tie_word_embeddings=tie,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=None,
    )


def vision_config(style: str) -> InternVLVisionConfig:
    common = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_act="gelu",
        image_size=[448, 448],
        patch_size=[14, 14],
        layer_norm_eps=1e-6,
        use_absolute_position_embeddings=True,
        use_mean_pooling=True,
        layer_scale_init_value=0.1,
    )
    if style == "300m":
        return InternVLVisionConfig(norm_type="layer_norm", attention_bias=True, use_qk_norm=False, **common)
    if style == "6b":
        return InternVLVisionConfig(norm_type="rms_norm", attention_bias=False, use_qk_norm=True, **common)
    raise ValueError(style)


def internvl_config(style: str, tokenizer, tie: bool) -> InternVLConfig:
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    cfg = InternVLConfig(
        vision_config=vision_config(style),
        text_config=text_config(len(tokenizer), eos, bos, tie),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=256,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=tie,
    )
    cfg.architectures = ["InternVLForConditionalGeneration"]
    return cfg


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded init with O(1) activations, so logits have clear margins for greedy parity.

    transformers' default init (std 0.02) makes near-uniform logits whose argmax flips under
    tiny numerical differences; this one does not.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        short = name.split(".")[-1]
        if "embed_tokens" in name:
            # Small next to the layers' outputs, so a tied lm_head does not just echo the input token.
            p.copy_(0.25 * torch.randn(p.shape, generator=g))
        elif name == "lm_head.weight":
            p.copy_(3.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        elif "lambda_" in name:
            p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
        elif "cls_token" in name or "position_embeddings" in name:
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


def current_state_dict(model: InternVLForConditionalGeneration) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return sd


def to_legacy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("model.vision_tower."):
            nk = k[len("model.") :]
        elif k.startswith("model.multi_modal_projector."):
            nk = k[len("model.") :]
        elif k.startswith("model.language_model."):
            nk = "language_model.model." + k[len("model.language_model.") :]
        elif k == "lm_head.weight":
            nk = "language_model.lm_head.weight"
        else:
            raise KeyError(k)
        out[nk] = v
    return out


def to_original(sd: dict[str, torch.Tensor], vcfg: InternVLVisionConfig) -> dict[str, torch.Tensor]:
    """Inverse of transformers' convert_internvl_weights_to_hf.py key mapping (Qwen2 LLM)."""
    out = {}
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.startswith("model.vision_tower.encoder.layer."):
            rest = k[len("model.vision_tower.encoder.layer.") :]
            idx, sub = rest.split(".", 1)
            layers.setdefault(int(idx), {})[sub] = v
        elif k.startswith("model.vision_tower.embeddings."):
            sub = k[len("model.vision_tower.embeddings.") :]
            sub = {
                "cls_token": "class_embedding",
                "position_embeddings": "position_embedding",
                "patch_embeddings.projection.weight": "patch_embedding.weight",
                "patch_embeddings.projection.bias": "patch_embedding.bias",
            }[sub]
            out["vision_model.embeddings." + sub] = v
        elif k.startswith("model.multi_modal_projector."):
            sub = k[len("model.multi_modal_projector.") :]
            a, b = sub.split(".", 1)
            out["mlp1." + {"layer_norm": "0", "linear_1": "1", "linear_2": "3"}[a] + "." + b] = v
        elif k.startswith("model.language_model."):
            out["language_model.model." + k[len("model.language_model.") :]] = v
        elif k == "lm_head.weight":
            out["language_model.lm_head.weight"] = v
        else:
            raise KeyError(k)
    simple = {
        "lambda_1": "ls1",
        "lambda_2": "ls2",
        "attention.projection_layer.weight": "attn.proj.weight",
        "attention.projection_layer.bias": "attn.proj.bias",
        "attention.q_norm.weight": "attn.q_norm.weight",
        "attention.k_norm.weight": "attn.k_norm.weight",
        "layernorm_before.weight": "norm1.weight",
        "layernorm_before.bias": "norm1.bias",
        "layernorm_after.weight": "norm2.weight",
        "layernorm_after.bias": "norm2.bias",
        "mlp.fc1.weight": "mlp.fc1.weight",
        "mlp.fc1.bias": "mlp.fc1.bias",
        "mlp.fc2.weight": "mlp.fc2.weight",
        "mlp.fc2.bias": "mlp.fc2.bias",
    }
    for idx, subs in layers.items():
        pre = f"vision_model.encoder.layers.{idx}."
        out[pre + "attn.qkv.weight"] = torch.cat(
            [subs.pop("attention.q_proj.weight"), subs.pop("attention.k_proj.weight"), subs.pop("attention.v_proj.weight")], 0
        ).contiguous()
        if vcfg.attention_bias:
            out[pre + "attn.qkv.bias"] = torch.cat(
                [subs.pop("attention.q_proj.bias"), subs.pop("attention.k_proj.bias"), subs.pop("attention.v_proj.bias")], 0
            ).contiguous()
        for sub, v in subs.items():
            out[pre + simple[sub]] = v
    return out


def save_sharded(sd: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> None:
    """Write safetensors shards + model.safetensors.index.json in transformers' naming."""
    for f in folder.glob("model*.safetensors*"):
        f.unlink()
    names = sorted(sd)
    shards: list[list[str]] = [[]]
    size = 0
    for n in names:
        b = sd[n].numel() * sd[n].element_size()
        if shards[-1] and size + b > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += b
    if len(shards) == 1:
        save_file({n: sd[n] for n in shards[0]}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: sd[n] for n in shard}, str(folder / fname), metadata={"format": "pt"})
        for n in shard:
            weight_map[n] = fname
            total += sd[n].numel() * sd[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def original_config(cfg: InternVLConfig) -> dict:
    """An original InternVLChatModel config.json, with the fields OpenGVLab/InternVL3-1B carries."""
    t = cfg.text_config
    v = cfg.vision_config
    llm = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": t.bos_token_id,
        "eos_token_id": t.eos_token_id,
        "hidden_act": t.hidden_act,
        "hidden_size": t.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": t.intermediate_size,
        "max_position_embeddings": t.max_position_embeddings,
        "max_window_layers": t.max_window_layers,
        "model_type": "qwen2",
        "num_attention_heads": t.num_attention_heads,
        "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads,
        "rms_norm_eps": t.rms_norm_eps,
        # The real 1B carries dynamic NTK scaling, inactive below max_position_embeddings.
        "rope_scaling": {"factor": 2.0, "rope_type": "dynamic", "type": "dynamic"},
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_bfloat16": False,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": t.vocab_size,
    }
    vision = {
        "architectures": ["InternVisionModel"],
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": v.hidden_act,
        "hidden_size": v.hidden_size,
        "image_size": v.image_size[0],
        "initializer_factor": 0.1,
        "initializer_range": 1e-10,
        "intermediate_size": v.intermediate_size,
        "layer_norm_eps": v.layer_norm_eps,
        "model_type": "intern_vit_6b",
        "norm_type": v.norm_type,
        "num_attention_heads": v.num_attention_heads,
        "num_channels": 3,
        "num_hidden_layers": v.num_hidden_layers,
        "patch_size": v.patch_size[0],
        "qk_normalization": v.use_qk_norm,
        "qkv_bias": v.attention_bias,
        "torch_dtype": "float32",
        "use_bfloat16": False,
        "use_flash_attn": False,
    }
    return {
        "architectures": ["InternVLChatModel"],
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
            "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
        },
        "downsample_ratio": cfg.downsample_ratio,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "image_fold": None,
        "llm_config": llm,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "internvl_chat",
        "output_attentions": False,
        "pad2square": False,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "internvl2_5",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": None,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": vision,
    }


# transformers 4.x wrote the image processor flat in preprocessor_config.json; the original
# layout gets one so the Rust reader exercises that path. Values as InternVL3-1B-hf ships them.
PREPROCESSOR_CONFIG_4X = {
    "crop_size": None,
    "crop_to_patches": False,
    "data_format": "channels_first",
    "default_to_square": True,
    "device": None,
    "do_center_crop": None,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "GotOcr2ImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225],
    "input_data_format": None,
    "max_patches": 12,
    "min_patches": 1,
    "processor_class": "InternVLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "return_tensors": None,
    "size": {"height": 448, "width": 448},
}


def allow_missing_video_processor() -> bool:
    """Let InternVLProcessor run without a video processor when torchvision is absent.

    InternVLVideoProcessor needs torchvision; the image path does not. Only the video slot is
    dropped from the processor's attribute list (so it is neither required, saved nor loaded);
    images and text go through transformers' own code unchanged. Returns whether the shim was
    installed.
    """
    if importlib.util.find_spec("torchvision") is not None:
        return False
    attributes = InternVLProcessor.get_attributes()
    InternVLProcessor.get_attributes = classmethod(lambda cls: [a for a in attributes if a != "video_processor"])
    return True


def build_processor(tokenizer) -> InternVLProcessor:
    # `GotOcr2ImageProcessor` is the torchvision backend when torchvision is installed and
    # falls back to the PIL backend otherwise; the README records which one produced the
    # fixtures. Settings as transformers' convert script writes them for InternVL3.
    image_processor = transformers.GotOcr2ImageProcessor(
        do_resize=True,
        size={"height": 448, "width": 448},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
        resample=3,
    )
    return InternVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=256, chat_template=CHAT_TEMPLATE
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def write_checkpoint_files(base: Path, folder: Path, config: InternVLConfig, sd: dict[str, torch.Tensor]) -> None:
    """Copy the non-weight files that save_pretrained wrote in `base`, then write `sd`."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if not f.name.startswith("model") and f.is_file():
            shutil.copy(f, folder / f.name)
    config.save_pretrained(folder)


def run_case(name: str, spec: dict, ckpt: Path, image_paths: dict[str, Path]):
    processor = AutoProcessor.from_pretrained(ckpt)
    images = [Image.open(image_paths[n]) for n in spec["images"]]
    prompt = processor.apply_chat_template(spec["messages"], add_generation_prompt=True, tokenize=False)
    inputs = processor(images=images, text=prompt, return_tensors="pt")
    return processor, prompt, inputs


def u8_tiles(processor, images: list[Image.Image]) -> tuple[np.ndarray, list[int]]:
    """The tiles as uint8 before rescale/normalize: the same processor with both turned off."""
    ip = processor.image_processor
    out = ip(images=images, crop_to_patches=True, do_rescale=False, do_normalize=False, return_tensors="np")
    pv = out["pixel_values"]
    assert pv.dtype in (np.float32, np.float64, np.uint8), pv.dtype
    assert np.all(pv == np.rint(pv)) and pv.min() >= 0 and pv.max() <= 255
    return pv.astype(np.uint8), [int(n) for n in out["num_patches"]]


def torch_u8_resize_delta(images: list[Image.Image], num_tiles: list[int], u8: np.ndarray) -> int:
    """Max |PIL - torch native uint8 bicubic| over the tiles: what the torchvision backend would change."""
    import torch.nn.functional as F

    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    tiles = []
    for img in images:
        a = torch.from_numpy(np.asarray(img.convert("RGB"))).permute(2, 0, 1)[None].contiguous()
        h, w = a.shape[-2:]
        cols, rows = get_optimal_tiled_canvas((h, w), (448, 448), 1, 12)

        def rs(x, hh, ww):
            if (hh, ww) == tuple(x.shape[-2:]):
                return x
            return F.interpolate(x, size=(hh, ww), mode="bicubic", align_corners=False, antialias=True)

        big = rs(a, 448 * rows, 448 * cols)
        for i in range(rows * cols):
            r, c = divmod(i, cols)
            tiles.append(big[0, :, r * 448 : (r + 1) * 448, c * 448 : (c + 1) * 448])
        if rows * cols > 1:
            tiles.append(rs(a, 448, 448)[0])
    t = torch.stack(tiles).numpy().astype(np.int32)
    assert t.shape == u8.shape, (t.shape, u8.shape)
    return int(np.abs(t - u8.astype(np.int32)).max())


@torch.no_grad()
def model_outputs(ckpt: Path, inputs) -> dict:
    model = InternVLForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    pv = inputs["pixel_values"].to(torch.float32)
    feats = model.model.get_image_features(pixel_values=pv)
    if not torch.is_tensor(feats):
        feats = feats.pooler_output if getattr(feats, "pooler_output", None) is not None else feats[0]
    if isinstance(feats, (list, tuple)):
        feats = torch.cat(list(feats), 0)
    feats = feats.reshape(-1, feats.shape[-1])
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=pv)
    logits = out.logits[0, -LAST_POSITIONS:].contiguous()
    gen = model.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values=pv,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        num_beams=1,
        output_logits=True,
        return_dict_in_generate=True,
    )
    new_ids = gen.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    step_logits = torch.stack([l[0] for l in gen.logits]).contiguous()
    top2 = torch.topk(step_logits, 2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()
    assert torch.equal(step_logits[0], out.logits[0, -1]) or torch.allclose(step_logits[0], out.logits[0, -1], atol=1e-4)
    tied = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    return {
        "image_features": feats.contiguous(),
        "logits": logits,
        "step_logits": step_logits,
        "generated_ids": new_ids,
        "step_margins": margins,
        "lm_head_tied": tied,
    }


def write_readme(out: Path, records: dict) -> None:
    ids = records["tokenizer"]["special_token_ids"]
    text = README.format(
        transformers=records["transformers_version"],
        torch=records["torch_version"],
        backend=records["image_processor_backend"],
        shim="yes" if records["video_processor_shim"] else "no",
        prefixes=", ".join(f"`{p}.*`" for p in records["save_pretrained_key_prefixes"]),
        lm_head="yes" if records["save_pretrained_wrote_lm_head"] else "no",
        files=", ".join(f"`{f}`" for f in records["save_pretrained_files"]),
        vocab=records["tokenizer"]["vocab_size"],
        specials=", ".join(f"`{t}`={i}" for t, i in ids.items()),
        image_token_id=ids["<IMG_CONTEXT>"],
        eos=ids["<|im_end|>"],
        bos=ids["<|endoftext|>"],
    )
    (out / "README.md").write_text(text)


README = """# InternVL3 parity fixtures

Generated by `tools/make_internvl_fixtures.py` (run by hand: `python tools/make_internvl_fixtures.py`)
with transformers {transformers}, torch {torch}, CPU, float32, eager attention. Everything is seeded
and drawn locally; rerunning the script rewrites this folder. `manifest.json` holds the raw facts.

## Tokenizer (all checkpoints)

A byte-level BPE trained on fixed English text with Qwen2's pipeline (NFC, Qwen2 split regex,
ByteLevel), wrapped as `Qwen2Tokenizer`. Vocabulary {vocab}: 360 BPE tokens, then the specials
{specials}.

* `image_token_id` (`<IMG_CONTEXT>`) = {image_token_id}; eos / stop `<|im_end|>` = {eos};
  bos / pad `<|endoftext|>` = {bos}.
* tokenizer_config.json (5.x) carries `start_image_token`, `end_image_token`,
  `context_image_token`, `video_token` as top-level keys (4.x put them in `extra_special_tokens`).
* Chat template: the real InternVL3-*-hf template (the `chat_template` constant of transformers'
  `convert_internvl_weights_to_hf.py`). An image part renders as `<IMG_CONTEXT>\\n`; the processor then
  replaces each `<IMG_CONTEXT>` with `<img>` + `<IMG_CONTEXT>` x 256 x tiles + `</img>`.

## Checkpoints

| folder | vision | key names | lm_head | files |
|---|---|---|---|---|
| `tiny-300m-legacy` | 300M-style | legacy transformers: `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.weight` | present (equal to the embedding) | 7 shards + `model.safetensors.index.json` |
| `tiny-300m-current` | 300M-style | current transformers: `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*` | absent, `tie_word_embeddings: true` | `model.safetensors` |
| `tiny-300m-original` | 300M-style | original InternVLChatModel: `vision_model.*` (fused `attn.qkv`, `ls1`/`ls2`, `norm1`/`norm2`, `attn.proj`), `mlp1.{{0,1,3}}`, `language_model.model.*`, `language_model.lm_head.weight` | present | `model.safetensors` |
| `tiny-6b` | 6B-style | current transformers | untied, present | `model.safetensors` |

The three 300M folders hold the same weights (the script checks that transformers loads legacy and
current to identical tensors), so their expected outputs are identical; the original layout is not
loadable by transformers and its expected outputs are those of the other two.

* 300M-style vision: `norm_type: layer_norm`, `attention_bias: true` (qkv bias), `use_qk_norm: false`,
  layer scale `lambda_1`/`lambda_2`, learned position embeddings with CLS (1025 positions).
* 6B-style vision: `norm_type: rms_norm`, `use_qk_norm: true` (RMSNorm over the full hidden size,
  before the head split), `attention_bias: false` (the output projection keeps its bias).
* Dims: vision hidden 64, 2 layers, 4 heads, MLP 128; image 448, patch 14, `downsample_ratio` 0.5
  (256 tokens per tile), projector LayerNorm(256) -> Linear(256->64) -> GELU -> Linear(64->64);
  text Qwen2 hidden 64, 2 layers, 4 heads / 2 KV heads (head_dim 16), MLP 128, RMSNorm eps 1e-6,
  rope theta 1e6.
* Weights are seeded with O(1) activations (not transformers' std 0.02), so the greedy argmax has
  clear margins (`greedy_step_margins` in each case; all > 0.05).

### What transformers {transformers} `save_pretrained` wrote

* Key names: {prefixes} — the **legacy** names. lm_head written when tied: {lm_head}.
* Files: {files}. No `preprocessor_config.json` and no `chat_template.json`: the image processor
  is nested in `processor_config.json` under `image_processor`, the template is `chat_template.jinja`.
* config.json (5.x): `dtype` (not `torch_dtype`); `text_config.rope_parameters = {{"rope_theta":
  1000000.0, "rope_type": "default"}}` (no top-level `rope_theta`); `text_config.layer_types`;
  `tie_word_embeddings` at top level and in `text_config`; `vision_config.image_size` and
  `patch_size` as `[448, 448]` / `[14, 14]` lists; `image_token_id`, `image_seq_length`,
  `downsample_ratio`, `projector_hidden_act`, `vision_feature_layer`.
* `processor_config.json` says `"crop_to_patches": false`, yet `InternVLProcessor` tiles anyway: its
  `_defaults` pass `crop_to_patches=True` to the image processor.

### tiny-300m-original

* `config.json` follows OpenGVLab/InternVL3-1B's `InternVLChatConfig` (fields checked against a public
  dump of that config: `architectures`, `auto_map`, `downsample_ratio`, `dynamic_image_size`,
  `force_image_size`, `image_fold`, `llm_config` (Qwen2 fields with `rope_theta`, `rope_scaling`
  dynamic x2 as the real one, `torch_dtype`), `max_dynamic_patch`, `min_dynamic_patch`,
  `model_type: internvl_chat`, `pad2square`, `ps_version: v2`, `select_layer`, `template: internvl2_5`,
  `tie_word_embeddings: false`, `use_thumbnail`, `vision_config` with `model_type: intern_vit_6b`,
  `norm_type`, `qk_normalization`, `qkv_bias`, integer `image_size` / `patch_size`). The MoE and
  dropout fields of the real file are left out.
* `preprocessor_config.json` is a transformers-4.x-style flat GotOcr2 config (as InternVL3-1B-hf
  ships), so readers exercise the 4.x path; the chat template sits in `tokenizer_config.json`'s
  `chat_template` field (real original checkpoints are prompted by Python code instead).
* The fused qkv is `cat([q, k, v], dim=0)` (rows), weights and biases.

## Cases

`square` (448x448 face, 1 tile, no resize), `wide` (700x340, grid 2x1 + thumbnail = 3 tiles),
`two_images` (380x380 upsampled + 520x500 RGBA downsampled, 1 tile each). Images are in `images/`.

`cases/<case>.json`: `images`, `image_sizes_hw`, `image_modes`, `num_tiles` (per image), `messages`,
`add_generation_prompt`, `rendered_prompt` (chat template output), `expanded_prompt` (after image
token expansion), `input_ids`, `image_token_id`, `num_image_tokens`, `pixel_values_shape`,
`max_new_tokens` (8), `logits_last_positions` (8), and per checkpoint `generated_ids` (greedy,
new tokens only), `generated_text`, `greedy_step_margins`, `lm_head_tied`.

`cases/<case>.pixels.safetensors`:
* `pixel_values_u8` u8 `[tiles, 3, 448, 448]`: the tiles before rescale/normalize (same processor,
  `do_rescale=False, do_normalize=False`), all images of the prompt concatenated in order.
* `image_mean`, `image_std` f32 `[3]`.
The processor's `pixel_values` equal `((u8 as f64 * (1/255)) as f32 - mean) / std` (f32 arithmetic)
bit for bit; the script asserts it, so they are not stored.

`cases/<case>.<checkpoint>.logits.safetensors` (f32):
* `logits` `[8, vocab]`: the prompt's last 8 positions (one forward over the full prompt).
* `step_logits` `[steps, vocab]`: the logits that chose each greedy token (`steps` = number of
  generated ids; row 0 equals `logits[7]`).
* `image_features` `[256 * total_tiles, 64]`: projector output for all tiles, in order.

## Image processor backend

These fixtures were made by `{backend}` (torchvision not installed: transformers falls back to
its PIL backend; video-processor shim used: {shim}). Pillow's bicubic and torch's native uint8
antialiased bicubic (the torchvision backend) differ by `torch_native_u8_resize_max_abs_diff_vs_fixture`
uint8 units per case (0, 1, 2 here); the Rust resampler reproduces Pillow exactly.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="harness/models/tests/fixtures/internvl")
    args = ap.parse_args()
    out = Path(args.out)
    torch.manual_seed(SEED)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "cases").mkdir()
    image_paths = make_images(out / "images")

    video_shim = allow_missing_video_processor()
    work = Path(tempfile.mkdtemp(prefix="internvl_fixtures_"))
    tokenizer = build_tokenizer(work)
    processor = build_processor(tokenizer)
    backend = type(processor.image_processor).__name__

    records: dict = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
                     "image_processor_backend": backend, "video_processor_shim": video_shim, "checkpoints": {}}

    # ---- 300M-style model (tied lm_head, as InternVL3-1B's Qwen2.5-0.5B) ----
    cfg300 = internvl_config("300m", tokenizer, tie=True)
    m300 = InternVLForConditionalGeneration(cfg300).eval()
    init_weights(m300, SEED)
    m300.tie_weights()
    assert m300.lm_head.weight.data_ptr() == m300.model.language_model.embed_tokens.weight.data_ptr()
    base300 = work / "save_pretrained_300m"
    m300.save_pretrained(base300)
    processor.save_pretrained(base300)
    GenerationConfig(eos_token_id=cfg300.text_config.eos_token_id, bos_token_id=cfg300.text_config.bos_token_id,
                     do_sample=False).save_pretrained(base300)
    written = {}
    for f in sorted(base300.glob("model*.safetensors")):
        written.update({k: f.name for k in load_file(str(f)).keys()})
    records["save_pretrained_keys_sample"] = sorted(written)[:6] + sorted(written)[-3:]
    records["save_pretrained_wrote_lm_head"] = any("lm_head" in k for k in written)
    records["save_pretrained_key_prefixes"] = sorted(
        {".".join(k.split(".")[:2]) if k.startswith("language_model.") else k.split(".")[0] for k in written}
    )
    records["save_pretrained_files"] = sorted(p.name for p in base300.iterdir())

    sd300 = current_state_dict(m300)
    # current names, lm_head dropped (tied)
    cur = work / "tiny-300m-current"
    write_checkpoint_files(base300, out / "tiny-300m-current", cfg300, {})
    save_sharded({k: v for k, v in sd300.items() if k != "lm_head.weight"}, out / "tiny-300m-current", 1 << 40)
    # legacy names, lm_head written explicitly (equal to the embedding), sharded
    write_checkpoint_files(base300, out / "tiny-300m-legacy", cfg300, {})
    save_sharded(to_legacy(sd300), out / "tiny-300m-legacy", 200_000)
    # original InternVLChatModel layout
    orig = out / "tiny-300m-original"
    orig.mkdir()
    save_sharded(to_original(sd300, cfg300.vision_config), orig, 1 << 40)
    (orig / "config.json").write_text(json.dumps(original_config(cfg300), indent=2) + "\n")
    (orig / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG_4X, indent=2) + "\n")
    shutil.copy(base300 / "tokenizer.json", orig / "tokenizer.json")
    tc = json.loads((base300 / "tokenizer_config.json").read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    (orig / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n")
    (orig / "generation_config.json").write_text(json.dumps({"eos_token_id": cfg300.text_config.eos_token_id}, indent=2) + "\n")

    # ---- 6B-style model (untied lm_head) ----
    cfg6b = internvl_config("6b", tokenizer, tie=False)
    m6b = InternVLForConditionalGeneration(cfg6b).eval()
    init_weights(m6b, SEED + 1)
    base6b = work / "save_pretrained_6b"
    m6b.save_pretrained(base6b)
    processor.save_pretrained(base6b)
    GenerationConfig(eos_token_id=cfg6b.text_config.eos_token_id, bos_token_id=cfg6b.text_config.bos_token_id,
                     do_sample=False).save_pretrained(base6b)
    write_checkpoint_files(base6b, out / "tiny-6b", cfg6b, {})
    save_sharded(current_state_dict(m6b), out / "tiny-6b", 1 << 40)

    hf_ckpts = ["tiny-300m-legacy", "tiny-300m-current", "tiny-6b"]
    # The original layout is not loadable by transformers; its weights are sd300 renamed, so its
    # expected outputs are those of the 300M model (checked below by reloading the other two).
    ckpt_models = {"tiny-300m-legacy": "300m", "tiny-300m-current": "300m", "tiny-300m-original": "300m", "tiny-6b": "6b"}

    # Sanity: the two transformers layouts load to the same weights, and the tie is honoured.
    for name in ("tiny-300m-legacy", "tiny-300m-current"):
        m = InternVLForConditionalGeneration.from_pretrained(out / name, dtype=torch.float32)
        for k, v in m.state_dict().items():
            assert torch.equal(v, sd300[k]), (name, k)
        records["checkpoints"][name] = {"loads_in_transformers": True}

    for case, spec in CASES.items():
        outputs = {}
        prompt = inputs = None
        for name in hf_ckpts:
            proc, p, inp = run_case(case, spec, out / name, image_paths)
            if prompt is None:
                prompt, inputs, proc0 = p, inp, proc
            assert p == prompt and torch.equal(inp["input_ids"], inputs["input_ids"])
            assert torch.equal(inp["pixel_values"], inputs["pixel_values"])
            outputs[name] = model_outputs(out / name, inputs)
        outputs["tiny-300m-original"] = outputs["tiny-300m-legacy"]
        for name, o in outputs.items():
            # Greedy parity is only a fair test when the argmax is not a near-tie.
            assert min(o["step_margins"]) > 0.05, (case, name, o["step_margins"], "try another SEED")
        for a in ("tiny-300m-current",):
            assert outputs[a]["generated_ids"] == outputs["tiny-300m-legacy"]["generated_ids"]
            assert torch.equal(outputs[a]["logits"], outputs["tiny-300m-legacy"]["logits"])

        images = [Image.open(image_paths[n]) for n in spec["images"]]
        u8, num_tiles = u8_tiles(proc0, images)
        pv = inputs["pixel_values"].numpy()
        assert u8.shape == pv.shape and list(u8.shape[1:]) == [3, 448, 448], (u8.shape, pv.shape)
        # Normalising the uint8 tiles the way the processor does reproduces pixel_values exactly.
        mean = np.array(PREPROCESSOR_CONFIG_4X["image_mean"], dtype=np.float32)[None, :, None, None]
        std = np.array(PREPROCESSOR_CONFIG_4X["image_std"], dtype=np.float32)[None, :, None, None]
        # transformers' numpy rescale (f64 multiply, cast to f32) then f32 normalize.
        ref = ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - mean) / std
        norm_diff = float(np.abs(ref - pv).max())
        assert norm_diff == 0.0, norm_diff
        torch_delta = torch_u8_resize_delta(images, num_tiles, u8)

        save_file(
            {
                "pixel_values_u8": torch.from_numpy(u8).contiguous(),
                "image_mean": torch.tensor(PREPROCESSOR_CONFIG_4X["image_mean"], dtype=torch.float32),
                "image_std": torch.tensor(PREPROCESSOR_CONFIG_4X["image_std"], dtype=torch.float32),
            },
            str(out / "cases" / f"{case}.pixels.safetensors"),
        )
        for name, o in outputs.items():
            save_file(
                {"logits": o["logits"], "step_logits": o["step_logits"], "image_features": o["image_features"]},
                str(out / "cases" / f"{case}.{name}.logits.safetensors"),
            )
        ids = inputs["input_ids"][0].tolist()
        expanded = prompt
        # What InternVLProcessor does: each `<IMG_CONTEXT>` the template emitted becomes
        # `<img>` + `<IMG_CONTEXT>` x 256 x tiles + `</img>`.
        parts = prompt.split("<IMG_CONTEXT>")
        assert len(parts) == len(num_tiles) + 1
        expanded = parts[0]
        for n, part in zip(num_tiles, parts[1:]):
            expanded += "<img>" + "<IMG_CONTEXT>" * (256 * n) + "</img>" + part
        assert tokenizer(expanded, add_special_tokens=False)["input_ids"] == ids
        case_json = {
            "case": case,
            "images": [f"images/{n}" for n in spec["images"]],
            "image_sizes_hw": [[im.height, im.width] for im in images],
            "image_modes": [im.mode for im in images],
            "num_tiles": num_tiles,
            "messages": spec["messages"],
            "add_generation_prompt": True,
            "rendered_prompt": prompt,
            "expanded_prompt": expanded,
            "input_ids": ids,
            "image_token_id": int(cfg300.image_token_id),
            "num_image_tokens": int(sum(1 for i in ids if i == cfg300.image_token_id)),
            "pixel_values_shape": list(pv.shape),
            "pixel_values_normalize_max_abs_diff": norm_diff,
            "torch_native_u8_resize_max_abs_diff_vs_fixture": torch_delta,
            "max_new_tokens": MAX_NEW_TOKENS,
            "logits_last_positions": LAST_POSITIONS,
            "generated_ids": {n: o["generated_ids"] for n, o in outputs.items()},
            "generated_text": {n: tokenizer.decode(o["generated_ids"], skip_special_tokens=False) for n, o in outputs.items()},
            "greedy_step_margins": {n: o["step_margins"] for n, o in outputs.items()},
            "lm_head_tied": {n: o["lm_head_tied"] for n, o in outputs.items()},
        }
        (out / "cases" / f"{case}.json").write_text(json.dumps(case_json, indent=1, ensure_ascii=False) + "\n")
        print(case, "tiles", num_tiles, "ids", len(ids), "gen", case_json["generated_ids"],
              "min margin", {n: round(min(m), 3) for n, m in case_json["greedy_step_margins"].items()},
              "torch-u8 delta", torch_delta)

    records["tokenizer"] = {
        "vocab_size": len(tokenizer),
        "special_token_ids": {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS},
    }
    (out / "manifest.json").write_text(json.dumps(records, indent=2) + "\n")
    write_readme(out, records)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
