#!/usr/bin/env python3
"""Record what an original InternVL checkpoint's own ``chat()`` does, without a chat template.

Run by hand (never by CI), from the repository root, after the InternVL fixtures exist:

    python tools/make_conversation_fixtures.py \
        --conversation-py PATH/conversation.py \
        --modeling-py PATH/modeling_internvl_chat.py

Both files come from InternVL's own code (github.com/OpenGVLab/InternVL,
``internvl_chat/internvl/conversation.py`` and
``internvl_chat/internvl/model/internvl_chat/modeling_internvl_chat.py``; every original
checkpoint on the hub ships the same two files). They are read from where they lie and never
copied into this repository.

Original checkpoints (``model_type: internvl_chat``) are prompted by ``InternVLChatModel.chat()``,
which builds the prompt from the conversation template that ``config.json`` names
(``"template": "internvl2_5"``), system prompt included, instead of a Jinja chat template.
This script runs that ``chat()`` function itself (its source is taken from the modeling file
and executed unchanged) bound to a small stand-in whose ``generate`` is transformers'
``InternVLForConditionalGeneration`` on ``tiny-300m-current``, the same weights as
``tiny-300m-original`` in transformers' layout (the fixture script proves the layouts equal).
The stand-in records the ids ``chat()`` tokenized and the prompt it built.

Writes ``harness/models/tests/fixtures/internvl/conversation/cases.json``: per case the
images, the question given to ``chat()``, the user text faceval sends (the question without
its ``<image>`` lines: faceval puts every image first), the prompt ``chat()`` built with the
image tokens expanded, its input ids, and the greedy tokens. ``tests/internvl_conversation.rs``
holds faceval to it on a copy of ``tiny-300m-original`` with no chat template anywhere.

Needs: torch (CPU), transformers 5.x, pillow.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
import transformers
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, InternVLForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "harness/models/tests/fixtures/internvl"
MAX_NEW_TOKENS = 8

CASES = [
    # (name, image files, question given to chat(), user text faceval sends)
    ("one_image", ["face_448.png"], "How old is the person in this photo?", "How old is the person in this photo?"),
    ("wide_image", ["group_700x340.png"], "How many faces are there?", "How many faces are there?"),
    (
        "two_images",
        ["face_380x380.png", "face_520x500.png"],
        "<image>\n<image>\nAre these two photos of the same person?",
        "Are these two photos of the same person?",
    ),
    ("text_only", [], "Describe a typical passport photo.", "Describe a typical passport photo."),
]


def load_module(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def chat_function(modeling_py: Path, get_conv_template):
    """InternVLChatModel.chat, taken from the modeling file's source and executed as it is.

    Only the method is executed: the rest of the file imports InternVL's training stack
    (peft, InternLM2, Phi-3), which chat() does not use."""
    tree = ast.parse(modeling_py.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InternVLChatModel")
    method = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "chat")
    method.decorator_list = []
    namespace = {"get_conv_template": get_conv_template, "torch": torch}
    exec(compile(ast.Module(body=[method], type_ignores=[]), str(modeling_py), "exec"), namespace)
    return namespace["chat"]


class OriginalChat:
    """The attributes chat() reads from an InternVLChatModel, and a generate() that records
    its inputs and runs transformers' model on them."""

    def __init__(self, chat, hf_model, template: str, system_message: str, num_image_token: int):
        self._chat = chat
        self.hf = hf_model
        self.template = template
        self.system_message = system_message
        self.num_image_token = num_image_token
        self.language_model = types.SimpleNamespace(device=torch.device("cpu"))
        self.seen = None

    def chat(self, *args, **kwargs):
        return self._chat(self, *args, **kwargs)

    @torch.no_grad()
    def generate(self, pixel_values=None, input_ids=None, attention_mask=None, **config):
        self.seen = {"input_ids": input_ids[0].tolist(), "eos_token_id": config["eos_token_id"]}
        images = {} if pixel_values is None else {"pixel_values": pixel_values}
        out = self.hf.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **images,
            max_new_tokens=config["max_new_tokens"],
            do_sample=False,
            eos_token_id=config["eos_token_id"],
            pad_token_id=config["eos_token_id"],
        )
        # The original generate() works on input embeddings and returns only new tokens.
        new = out[:, input_ids.shape[1]:]
        self.seen["generated_ids"] = new[0].tolist()
        return new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversation-py", required=True, type=Path)
    ap.add_argument("--modeling-py", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=FIXTURES / "conversation")
    args = ap.parse_args()

    conversation = load_module(args.conversation_py, "internvl_conversation")
    chat = chat_function(args.modeling_py, conversation.get_conv_template)
    original = FIXTURES / "tiny-300m-original"
    config = json.loads((original / "config.json").read_text())
    template = config["template"]
    tokenizer = AutoTokenizer.from_pretrained(original, trust_remote_code=False)

    spec = importlib.util.spec_from_file_location("mif", ROOT / "tools/make_internvl_fixtures.py")
    mif = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mif)
    mif.allow_missing_video_processor()
    current = FIXTURES / "tiny-300m-current"
    processor = AutoProcessor.from_pretrained(current)
    hf = InternVLForConditionalGeneration.from_pretrained(current, dtype=torch.float32, attn_implementation="eager").eval()
    num_image_token = int(processor.image_seq_length)
    model = OriginalChat(chat, hf, template, conversation.get_conv_template(template).system_message, num_image_token)

    cases = []
    for name, files, question, user_text in CASES:
        images = [Image.open(FIXTURES / "images" / f).convert("RGB") for f in files]
        if images:
            # Tiled as the model card's load_image() tiles (dynamic_preprocess with a thumbnail):
            # InternVLProcessor passes crop_to_patches=True; the image processor alone does not.
            px = processor.image_processor(images=images, crop_to_patches=True, return_tensors="pt")
            pixel_values = px["pixel_values"].to(torch.float32)
            num_patches = [int(n) for n in px["num_patches"]]
        else:
            pixel_values, num_patches = None, None
        config = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}
        response, history = model.chat(
            tokenizer, pixel_values, question, config, num_patches_list=num_patches, return_history=True
        )
        seen = model.seen
        prompt = tokenizer.decode(seen["input_ids"])
        cases.append(
            {
                "case": name,
                "images": [f"images/{f}" for f in files],
                "question": question,
                "user_text": user_text,
                "num_patches": num_patches or [],
                "prompt": prompt,
                "input_ids": seen["input_ids"],
                "eos_token_id": seen["eos_token_id"],
                "max_new_tokens": MAX_NEW_TOKENS,
                "generated_ids": seen["generated_ids"],
                "response": response,
            }
        )
        print(f"{name:11} {len(seen['input_ids']):5} prompt ids -> {seen['generated_ids']}")

    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "checkpoint": "tiny-300m-original (its chat template removed by the test)",
        "template": template,
        "system_message": conversation.get_conv_template(template).system_message,
        "versions": {"python": sys.version.split()[0], "transformers": transformers.__version__, "torch": torch.__version__},
        "cases": cases,
    }
    (args.out / "cases.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
