#!/usr/bin/env python3
"""Test oracle for faceval's FaceXBench compatibility mode (run by hand).

It runs FaceXBench's own `extract_option_label` on a table of real-world answer strings and
writes the results, with FaceXBench's zero-shot and in-context-description prompts for a few
real benchmark items, to `harness/eval/tests/fixtures/facexbench_extract_cases.json`.
`harness/eval/tests/extract.rs` then asserts that the Rust code agrees on every row.

Where the function comes from: it is NOT copied here. Give the path of `aggregate_results.py`
from a checkout of https://github.com/Kartik-3004/facexbench (the fixture was generated from
the version at commit 07b44451f3a2e25790710f7ca1bdbd44c337465e). The script parses that file,
takes only the `extract_option_label` function definition (so the file's `main()` never runs)
and executes it. The sha256 of the function's source is recorded in the fixture.

    git clone https://github.com/Kartik-3004/facexbench /tmp/facexbench
    python3 tools/facexbench_extract_reference.py --aggregate /tmp/facexbench/aggregate_results.py

The prompt cases follow evaluate.py's composition (lines 50-69 of the checkout at commit
17713fb767d52477a38ada9a18af18971fb6aaf5):
context (tools_use only), prepend_text (only with --prepend_text), question_text,
postpend_text, then "(A) option" lines for at most four options, each piece ending in "\n".
evaluate.py cannot be imported without VLMEvalKit, so that composition is restated in
`evaluate_py_prompt` below; keep it in step with the upstream file.
"""

import argparse
import ast
import hashlib
import json
import re
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "harness/eval/tests/fixtures/facexbench_extract_cases.json"

AGE = ["30-39", "20-29", "40-49", "10-19"]
AGE_Q3 = ["0-2", "20-29", "3-9", "None of the above"]  # fairface_single_mcq_age_test.json, question 3
GENDER = ["Male", "Female", "Both", "None of the above"]
RACE = ["East Asian", "Southeast Asian", "Indian", "White"]
CROWD = [2, 5, 1, 3]  # jhucrowd_single_mcq_test.json, question 15 (JSON numbers)
CROWD2 = [8, 4, 6, 5]  # question 1
POSE = ["0 to 10", "-10 to 0", "90 to 100", "-20 to -10"]
POSE_Q1 = ["-10 to 0", "-20 to -10", "0 to 10", "10 to 20"]  # aflw2000_single_mcq_test.json, question 1
EXPR = ["Happiness", "Sadness", "Anger", "Surprise"]
TWO = ["Real", "Spoof"]
SIX = ["a", "b", "c", "d", "e", "f"]
FRACTIONS = [0.5, 1.0, 2.5, 10]

LONG_COT = (
    "To determine the age group, let's look at the facial features. The skin appears smooth, "
    "with no visible wrinkles, and the hair is dark. These features suggest a young adult. "
    "Considering the options, the person most likely falls in the 20-29 range.\n\n"
    "Therefore, the correct answer is (B) 20-29."
)
LONG_COT_ARTICLE = (
    "A careful look at the image shows a person with smooth skin and no grey hair. "
    "I would estimate their age to be in the twenties, so the answer is B."
)
LONG_COT_I = (
    "I think the person looks young. In my view the features match option C best.\n"
    "Final answer: C"
)

CASES = [
    # name, output, options
    ("bare letter", "B", AGE),
    ("bare letter with newline", "B\n", AGE),
    ("letter with spaces", "   C   ", AGE),
    ("parenthesised letter", "(C)", AGE),
    ("parenthesised letter and text", "(C) 20-29", AGE),
    ("letter paren and text", "B) Female", GENDER),
    ("letter dot", "D.", AGE),
    ("letter dot and text", "A. 30-39", AGE),
    ("letter colon", "C: 40-49", AGE),
    ("letter dash", "D - 10-19", AGE),
    ("Option D", "Option D", AGE),
    ("option lowercase", "option b", AGE),
    ("Option no space letter", "OptionB", AGE),
    ("answer colon", "Answer: C", AGE),
    ("the answer is", "The answer is A.", AGE),
    ("the answer is parenthesised", "The answer is (D).", AGE),
    ("correct option sentence", "The correct option is B) Female.", GENDER),
    ("bold letter", "**B**", AGE),
    ("bold answer", "**Answer:** C", AGE),
    ("markdown header", "### Answer\nB", AGE),
    ("article start", "A young man in his twenties.", AGE),
    ("article start text match", "A person aged 20-29", AGE),
    ("article later", "The image shows a man of 40-49 years.", AGE),
    ("lowercase letter", "b", AGE),
    ("lowercase parenthesised", "(c)", AGE),
    ("lowercase answer is", "the answer is d", AGE),
    ("I pronoun then letter", "I think it is C", AGE),
    ("I pronoun only", "I am not sure.", AGE),
    ("text only exact", "30-39", AGE),
    ("text only exact second", "20-29", AGE),
    ("text contains", "The person appears to be 40-49 years old", AGE),
    ("0-2 inside 20-29", "20-29", AGE_Q3),
    ("none of the above exact", "None of the above", AGE_Q3),
    ("gender word", "Female", GENDER),
    ("male inside female", "The person is female", GENDER),
    ("race text", "Southeast Asian", RACE),
    ("east asian inside southeast", "southeast asian", RACE),
    ("numeric option exact", "5", CROWD),
    ("numeric option inside larger number", "15", CROWD),
    ("numeric option in sentence", "There are 3 people in the image.", CROWD),
    ("numeric options letter", "D", CROWD2),
    ("numeric options count word", "There are about 40 people", CROWD2),
    ("float options", "2.5", FRACTIONS),
    ("int 10 vs float 1.0", "10", FRACTIONS),
    ("pose text", "90 to 100", POSE),
    ("pose negative text", "-20 to -10", POSE),
    ("pose real item text", "0 to 10", POSE_Q1),
    ("empty output", "", AGE),
    ("whitespace output", "  \n\t ", AGE),
    ("long chain of thought", LONG_COT, AGE),
    ("long chain of thought starting with article", LONG_COT_ARTICLE, AGE),
    ("chain of thought with I", LONG_COT_I, AGE),
    ("first thought then answer", "I first thought A, but the answer is (C)", AGE),
    ("two letters", "B or C", AGE),
    ("letter E beyond four options", "E", AGE),
    ("letter E with six options", "E", SIX),
    ("lowercase option text with six options", "f", SIX),
    ("two options letter B", "B", TWO),
    ("two options letter C", "C", TWO),
    ("two options text", "Spoof", TWO),
    ("expression text lowercase", "happiness", EXPR),
    ("expression text", "The expression is Surprise.", EXPR),
    ("letter inside word", "Based on the image", AGE),
    ("underscore glued", "_B_", AGE),
    ("digit glued", "1B", AGE),
    ("letter then digit", "B1", AGE),
    ("word then paren", "x(B)", AGE),
    ("superscript after letter", "B\u00b2", AGE),
    ("combining accent after letter", "B\u0301", AGE),
    ("accented word letter", "caf\u00e9 B", AGE),
    ("nbsp around letter", "\u00a0B\u00a0", AGE),
    ("python-only whitespace", "\u001cB\u001c", AGE),
    ("ideographic space", "\u3000C", AGE),
    ("option label later in text", "My choice: Option C", AGE),
    ("letter dot later in text", "Looking closely, D. is right", AGE),
    ("letter colon later", "so it is B: 20-29", AGE),
    ("letter dash later", "so it is C - 40-49", AGE),
    ("json answer", '{"answer": "B"}', AGE),
    ("xml answer", "<answer>C</answer>", AGE),
    ("think tags", "<think>A is wrong</think>\nD", AGE),
    ("options listed back", "(A) 30-39\n(B) 20-29\n(C) 40-49\n(D) 10-19", AGE),
    ("tools use text", "api_7-identify_high_res_face, api_4-detect_spoofing", ["api_4-detect_spoofing", "api_7-identify_high_res_face, api_4-detect_spoofing"]),
    ("empty option text", "nothing useful", ["", "x"]),
]


def load_extract_option_label(path):
    """Execute only the `extract_option_label` definition from FaceXBench's file."""
    source = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "extract_option_label":
            segment = ast.get_source_segment(source, node)
            namespace = {"re": re}
            exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), namespace)
            return namespace["extract_option_label"], hashlib.sha256(segment.encode("utf-8")).hexdigest()
    sys.exit(f"{path}: no function extract_option_label found")


def evaluate_py_prompt(file_meta, question, prepend):
    """FaceXBench evaluate.py's user text for one question (see the module docstring)."""
    text = ""
    if file_meta["category"] == "tools_use":
        text += file_meta["context"] + "\n"
    if prepend and file_meta.get("prepend_text"):
        text += file_meta["prepend_text"] + "\n"
    text += question["question_text"] + "\n"
    if file_meta.get("postpend_text"):
        text += file_meta["postpend_text"] + "\n"
    for idx, option in enumerate(question["options"]):
        if idx >= 4:  # evaluate.py warns and stops after the labels A-D
            break
        text += f"({'ABCD'[idx]}) {option}\n"
    return text


POSTPEND = "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."

# Real benchmark items (file metadata and one question each), plus one made-up item with five
# options to pin down the truncation to four.
PROMPT_ITEMS = [
    (
        "fairface_single_mcq_age_test:1",
        {
            "category": "bias_fairness",
            "sub-category": "age",
            "prepend_text": "Age estimation involves predicting the age of a person based on their facial features in an image. For this task, we define the following age groups: 0-2, 3-9, 10-19, 20-29, 30-39, 40-49, 50-59, 60-69, and more than 70 years. You have to perform the task of age estimation.",
            "postpend_text": POSTPEND,
        },
        {"question_text": "Estimate the age group of the person in this image.", "options": AGE},
    ),
    (
        "jhucrowd_single_mcq_test:1",
        {
            "category": "face_localization",
            "sub-category": "crowd_counting",
            "prepend_text": "Crowd counting involves estimating the number of people present in an image, typically in a crowded scene. You have to perform the task of crowd counting.",
            "postpend_text": POSTPEND,
        },
        {"question_text": "Determine the number of people in this picture.", "options": CROWD2},
    ),
    (
        "tools_retrieval:2 (context shortened)",
        {
            "category": "tools_use",
            "sub-category": "tools_retrieval",
            "prepend_text": "This task involves selecting the correct sequence of API function calls from a set of multiple-choice options based on a given question.",
            "context": "Ignore the black image provided.\n1. Age Estimation:\n    api_name: api_1\n    functions:\n        predict_age:\n            description: Predicts the age of the person in the input face image.",
            "postpend_text": POSTPEND,
        },
        {
            "question_text": "A virtual assistant in a smart home utilizes low-resolution images from cameras to recognize household members. Which API function calls sequence should be applied?",
            "options": [
                "api_6-extract_low_res_embedding, api_6-identify_low_res_face, api_2-classify_gender, api_2-get_gender_probabilities",
                "api_6-extract_low_res_embedding, api_2-get_gender_probabilities, api_6-identify_low_res_face, api_2-classify_gender",
                "api_6-extract_low_res_embedding, api_6-identify_low_res_face, api_2-get_gender_probabilities",
                "api_6-extract_low_res_embedding, api_6-identify_low_res_face, api_2-get_gender_probabilities, api_2-classify_gender",
            ],
        },
    ),
    (
        "made-up: five options, no prepend_text",
        {"category": "attributes_expression", "sub-category": "expression", "postpend_text": POSTPEND},
        {"question_text": "What is the expression?", "options": EXPR + ["Neutral"]},
    ),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aggregate", required=True, help="path to FaceXBench's aggregate_results.py")
    parser.add_argument("--out", default=str(FIXTURE), help="fixture to write")
    args = parser.parse_args()

    extract, digest = load_extract_option_label(args.aggregate)
    rows = []
    for name, output, options in CASES:
        labels = [chr(ord("A") + i) for i in range(len(options))]  # as aggregate_results.py main()
        got = extract(output, labels, options)
        rows.append(
            {
                "name": name,
                "output": output,
                "options": [str(o) for o in options],
                "expected": got,
                "expected_index": None if got is None else labels.index(got),
            }
        )
    prompts = []
    for name, meta, question in PROMPT_ITEMS:
        fields = {"category": meta["category"], "subcategory": meta["sub-category"]}
        for key in ("prepend_text", "postpend_text", "context"):
            if key in meta:
                fields[key] = meta[key]
        prompts.append(
            {
                "name": name,
                "question": question["question_text"],
                "options": [str(o) for o in question["options"]],
                "fields": fields,
                "zero_shot": evaluate_py_prompt(meta, question, prepend=False),
                "icd": evaluate_py_prompt(meta, question, prepend=True),
            }
        )
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)), "case names must be unique"
    fixture = {
        "source": "Kartik-3004/facexbench aggregate_results.py extract_option_label",
        "function_sha256": digest,
        "python": sys.version.split()[0],
        "cases": rows,
        "prompts": prompts,
    }
    Path(args.out).write_text(json.dumps(fixture, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} extraction cases and {len(prompts)} prompt cases to {args.out}")


if __name__ == "__main__":
    main()
