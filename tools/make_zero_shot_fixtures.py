#!/usr/bin/env python3
"""Generate tiny random-weight CLIP and SigLIP zero-shot parity fixtures with transformers.

Run by hand (never by CI), from the repository root:

    python tools/make_zero_shot_fixtures.py            # writes harness/models/tests/fixtures/zero_shot/
    python tools/make_zero_shot_fixtures.py --out DIR  # somewhere else

Needs: torch (CPU), transformers 5.x, tokenizers, sentencepiece, safetensors, numpy, pillow. No
network: tokenizers are trained here on fixed text, weights are seeded random, the images are the
committed InternVL fixture drawings (harness/models/tests/fixtures/internvl/images).

What it writes:

* ``clip-tiny/``   CLIPModel (save_pretrained: config.json, model.safetensors), the CLIP processor
  (preprocessor_config.json; tokenizer.json etc. from CLIPTokenizer built on a locally trained
  byte-level BPE with CLIP's normalizer / split regex / ``</w>`` suffix).
* ``siglip-tiny/`` SiglipModel, SigLIP processor (preprocessor_config.json, spiece.model from a
  locally trained SentencePiece unigram model, tokenizer_config.json). Real SigLIP checkpoints
  ship only ``spiece.model`` (no tokenizer.json), so that is what the fixture holds too.
* ``<model>.json``: prompts, input_ids per prompt (the Python processor's), image sizes, the image
  processor class AutoProcessor instantiated, and argmax ranking per image.
* ``<model>.safetensors``: pixel_values [images,3,H,W], image_embeds, text_embeds (unnormalised
  projections), logits_per_image [images, prompts].

Logits follow transformers: CLIP ``logit_scale.exp() * cos``; SigLIP the same plus ``logit_bias``.
The SigLIP text tower is run WITHOUT an attention mask over the prompt padded to 64 tokens, as the
model was trained (big_vision) and as faceval does; the masked variant transformers computes when
the tokenizer's attention_mask is passed too is recorded as ``logits_per_image_masked`` for the
record (it differs).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE

import transformers
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
    SiglipTokenizer,
)

SEED = int(__import__("os").environ.get("ZS_SEED", "13"))
TEMPLATE = "a photo of a {label} face"
LABELS = ["happy", "sad", "surprised", "angry", "neutral"]
# Extra tokenizer inputs (case, punctuation, whitespace runs, unknown characters); ids recorded
# without padding.
TOKENIZER_CASES = [
    "A Photo of an ANGRY face!!",
    "  a photo,  of a  surprised-face ",
    "x y z q",
    "\u00fcmlaut caf\u00e9",
    "fearful disgusted man woman elderly",
]
IMAGES = ["face_448.png", "group_700x340.png", "face_520x500.png"]

TRAINING_TEXT = """
a photo of a happy face. a photo of a sad face. a photo of a surprised face.
a photo of an angry face. a photo of a neutral face. a photo of a fearful face.
a photo of a disgusted face. the person is smiling. a young adult, an elderly man, a child.
A woman with glasses and a man with a beard. Happy, sad, angry, surprised, neutral!
"""

CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def train_bpe(words: dict[str, int], num_merges: int) -> list[tuple[str, str]]:
    """Deterministic BPE training (most frequent pair, ties broken by the pair's text).

    Written here instead of tokenizers' BpeTrainer, whose choice among equally frequent pairs
    varies from run to run, so reruns reproduce the committed fixtures exactly.
    """
    seqs = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in words}
    merges = []
    for _ in range(num_merges):
        counts: dict[tuple[str, str], int] = {}
        for w, syms in seqs.items():
            for a, b in zip(syms, syms[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + words[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < 2:
            break
        merges.append(best)
        for w, syms in seqs.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            seqs[w] = out
    return merges


def build_clip_tokenizer() -> CLIPTokenizer:
    """A tiny byte-level BPE laid out like CLIP's vocabulary: the 256 byte symbols, the same
    with ``</w>``, the merges, then ``<|startoftext|>`` and ``<|endoftext|>`` last."""
    # CLIP's normalizer and pre-tokenizer, only to split the training text into words.
    pre = Tokenizer(BPE())
    pre.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    pre.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words: dict[str, int] = {}
    for line in TRAINING_TEXT.strip().splitlines():
        norm = pre.normalizer.normalize_str(line)
        for w, _ in pre.pre_tokenizer.pre_tokenize_str(norm):
            words[w] = words.get(w, 0) + 1
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for sym in alphabet + [a + "</w>" for a in alphabet]:
        vocab[sym] = len(vocab)
    merges = train_bpe(words, 120)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    n = len(vocab)
    vocab["<|startoftext|>"] = n
    vocab["<|endoftext|>"] = n + 1
    t = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    assert t.bos_token_id == n and t.eos_token_id == n + 1, (t.bos_token_id, t.eos_token_id)
    return t


def build_siglip_tokenizer(workdir: Path) -> SiglipTokenizer:
    """A tiny SentencePiece unigram model with SigLIP's special ids (<pad> 0, </s> 1 = eos and pad, <unk> 2)."""
    import sentencepiece as spm

    lines = [l.strip() for l in TRAINING_TEXT.strip().splitlines()] * 8
    # Trained from an iterator into memory, so the model file records no temporary paths and
    # reruns write identical bytes.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=120,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        # SigLIP's spiece.model: <pad>=0, </s>=1, <unk>=2, no <s>.
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        normalization_rule_name="nmt_nfkc",
        seed_sentencepiece_size=1000,
        num_threads=1,
        minloglevel=2,
    )
    path = workdir / "spiece.model"
    path.write_bytes(model.getvalue())
    return SiglipTokenizer(vocab_file=str(path), model_max_length=64)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded init with O(1) activations so embeddings and rankings are not near-degenerate."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        short = name.split(".")[-1]
        if name in ("logit_scale", "logit_bias"):
            continue  # keep transformers' init values (log(1/0.07); SigLIP log(10), -10)
        if "embedding" in name and p.ndim == 2 or "class_embedding" in name or "probe" in name:
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        elif short == "weight" and p.ndim == 1:  # norms
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif short == "bias" or short == "in_proj_bias":
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        else:
            raise ValueError(f"unhandled parameter {name} {tuple(p.shape)}")


def clip_model(tokenizer: CLIPTokenizer) -> CLIPModel:
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=40,
            patch_size=8,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=32,
        ),
        projection_dim=32,
    )
    torch.manual_seed(SEED)
    m = CLIPModel(cfg).eval()
    init_weights(m, SEED)
    return m


def siglip_model(tokenizer: SiglipTokenizer) -> SiglipModel:
    cfg = SiglipConfig(
        text_config=dict(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=48,
            patch_size=8,
        ),
    )
    torch.manual_seed(SEED + 1)
    m = SiglipModel(cfg).eval()
    init_weights(m, SEED + 1)
    return m


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def run_case(kind: str, folder: Path, image_dir: Path, out: Path) -> dict:
    """Load everything back from `folder` as a user would (Auto classes) and record outputs."""
    processor = AutoProcessor.from_pretrained(folder)
    # transformers 5.17's default is the torchvision backend; AutoImageProcessor refuses to
    # build anything without torchvision, while AutoProcessor falls back to the PIL backend.
    try:
        auto_ip = type(AutoImageProcessor.from_pretrained(folder)).__name__
    except ImportError as e:
        auto_ip = "error: " + " ".join(str(e).split())[:120]
    model = (CLIPModel if kind == "clip" else SiglipModel).from_pretrained(folder, attn_implementation="eager").eval()
    prompts = [TEMPLATE.format(label=l) for l in LABELS]
    images = [Image.open(image_dir / n) for n in IMAGES]

    # Per-prompt ids, as faceval tokenizes (one prompt at a time).
    if kind == "clip":
        ids = [processor.tokenizer(p)["input_ids"] for p in prompts]
        text_inputs = processor(text=prompts, padding=True, return_tensors="pt")
    else:
        ids = [processor.tokenizer(p, padding="max_length", max_length=64)["input_ids"] for p in prompts]
        text_inputs = processor(text=prompts, padding="max_length", max_length=64, return_tensors="pt")
    for i, row in enumerate(ids):
        n = len(row)
        assert text_inputs["input_ids"][i, :n].tolist() == row, (i, row)
    pixel_inputs = processor(images=images, return_tensors="pt")
    pixel_values = pixel_inputs["pixel_values"]

    with torch.no_grad():
        if kind == "clip":
            o = model(input_ids=text_inputs["input_ids"], attention_mask=text_inputs["attention_mask"], pixel_values=pixel_values)
            image_embeds = model.get_image_features(pixel_values=pixel_values).pooler_output
            text_embeds = model.get_text_features(
                input_ids=text_inputs["input_ids"], attention_mask=text_inputs["attention_mask"]
            ).pooler_output
            masked = None
        else:
            o = model(input_ids=text_inputs["input_ids"], pixel_values=pixel_values)
            image_embeds = model.get_image_features(pixel_values=pixel_values).pooler_output
            text_embeds = model.get_text_features(input_ids=text_inputs["input_ids"]).pooler_output
            masked = model(
                input_ids=text_inputs["input_ids"], attention_mask=text_inputs["attention_mask"], pixel_values=pixel_values
            ).logits_per_image
        logits = o.logits_per_image
        # Cross-check the documented formula against the model output.
        ie = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        te = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        manual = model.logit_scale.exp() * ie @ te.T
        if kind == "siglip":
            manual = manual + model.logit_bias
        assert torch.allclose(manual, logits, atol=1e-5), (manual, logits)
        # CLIP: one prompt at a time without padding gives the same text embedding.
        if kind == "clip":
            single = torch.cat(
                [model.get_text_features(input_ids=torch.tensor([r])).pooler_output for r in ids]
            )
            assert torch.allclose(single, text_embeds, atol=1e-5)

    tensors = {
        "pixel_values": pixel_values.float().contiguous(),
        "image_embeds": image_embeds.float().contiguous(),
        "text_embeds": text_embeds.float().contiguous(),
        "logits_per_image": logits.float().contiguous(),
    }
    if masked is not None:
        tensors["logits_per_image_masked"] = masked.float().contiguous()
    save_file(tensors, str(out / f"{kind}.safetensors"))
    ranks = logits.argsort(dim=-1, descending=True).tolist()
    margins = []
    for row in logits.tolist():
        s = sorted(row, reverse=True)
        margins.append(s[0] - s[1])
    meta = {
        "model_type": kind,
        "checkpoint": folder.name,
        "template": TEMPLATE,
        "labels": LABELS,
        "prompts": prompts,
        "input_ids": ids,
        "tokenizer_cases": {t: processor.tokenizer(t)["input_ids"] for t in TOKENIZER_CASES},
        "images": IMAGES,
        "image_sizes_wh": [list(im.size) for im in images],
        "image_modes": [im.mode for im in images],
        "processor_class": type(processor).__name__,
        "image_processor_class": type(processor.image_processor).__name__,
        "auto_image_processor": auto_ip,
        "torchvision_installed": importlib.util.find_spec("torchvision") is not None,
        "tokenizer_class": type(processor.tokenizer).__name__,
        "text_inputs_keys": sorted(text_inputs.keys()),
        "siglip_text_attention_mask_used": False if kind == "siglip" else None,
        "pixel_values_shape": list(pixel_values.shape),
        "argmax_per_image": [r[0] for r in ranks],
        "ranking_per_image": ranks,
        "top2_margin_per_image": margins,
        "logit_scale": float(model.logit_scale.item()),
        "logit_bias": float(model.logit_bias.item()) if kind == "siglip" else None,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    (out / f"{kind}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parent.parent
    ap.add_argument("--out", type=Path, default=root / "harness/models/tests/fixtures/zero_shot")
    ap.add_argument("--images", type=Path, default=root / "harness/models/tests/fixtures/internvl/images")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # CLIP
        clip_dir = out / "clip-tiny"
        shutil.rmtree(clip_dir, ignore_errors=True)
        ctok = build_clip_tokenizer()
        cproc = CLIPProcessor(
            image_processor=CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 40, "width": 40}),
            tokenizer=ctok,
        )
        clip_model(ctok).save_pretrained(clip_dir)
        cproc.save_pretrained(clip_dir)
        # Real openai/clip-* repos hold a flat (4.x-style) preprocessor_config.json; the CLIP
        # fixture does too, while the SigLIP one keeps 5.x's nested processor_config.json, so
        # both layouts are read by the tests.
        (clip_dir / "processor_config.json").unlink()
        cproc.image_processor.save_pretrained(clip_dir)
        # SigLIP
        sig_dir = out / "siglip-tiny"
        shutil.rmtree(sig_dir, ignore_errors=True)
        stok = build_siglip_tokenizer(tmp)
        sproc = SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 48, "width": 48}), tokenizer=stok)
        siglip_model(stok).save_pretrained(sig_dir)
        sproc.save_pretrained(sig_dir)

    metas = [run_case("clip", out / "clip-tiny", args.images, out), run_case("siglip", out / "siglip-tiny", args.images, out)]
    for m in metas:
        print(m["model_type"], m["image_processor_class"], m["auto_image_processor"], m["argmax_per_image"], m["top2_margin_per_image"])
        print("  ids[0]", m["input_ids"][0][:16])
    for d in ("clip-tiny", "siglip-tiny"):
        print(d, sorted(p.name for p in (out / d).iterdir()))


if __name__ == "__main__":
    main()
