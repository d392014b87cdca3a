#!/usr/bin/env python3
"""Reference values for faceval's calibration metrics (ECE, MCE, multi-class Brier and the
15 reliability bins), computed with numpy, written to
harness/eval/tests/fixtures/calibration_reference.json.

Run by hand from the repository root when a definition changes:

    python3 tools/make_calibration_reference.py

The Rust test `calibration::tests::ece_mce_brier_and_bins_match_numpy` checks every value
to 1e-12. Inputs come from fixed numpy seeds, so reruns give the same file. Definitions
(docs/calibration.md): softmax over the options' log-probabilities; confidence is the top
option's probability (ties: the first option in key order); bin k holds confidences in
(k/15, (k+1)/15], 0 goes to bin 0; ECE is the count-weighted mean of |accuracy - mean
confidence| over the bins, MCE the largest over non-empty bins; Brier is the mean of
sum_k (p_k - y_k)^2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BINS = 15
OUT = Path(__file__).resolve().parent.parent / "harness/eval/tests/fixtures/calibration_reference.json"


def metrics(logits: np.ndarray, truth: np.ndarray) -> dict:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = p.argmax(axis=1)  # first maximum, as faceval
    conf = p[np.arange(len(p)), top]
    correct = top == truth
    onehot = np.zeros_like(p)
    onehot[np.arange(len(p)), truth] = 1.0
    brier = ((p - onehot) ** 2).sum(axis=1).mean()
    bins = np.clip(np.ceil(conf * BINS).astype(int), 1, BINS) - 1
    counts = np.bincount(bins, minlength=BINS)
    gaps = []
    for b in range(BINS):
        m = bins == b
        if m.any():
            gaps.append((m.sum(), abs(correct[m].mean() - conf[m].mean())))
    ece = sum(n / len(p) * g for n, g in gaps)
    mce = max(g for _, g in gaps)
    return {
        "confidence": conf.tolist(),
        "correct": correct.tolist(),
        "ece": float(ece),
        "mce": float(mce),
        "brier": float(brier),
        "bin_counts": counts.tolist(),
    }


def case(name: str, logits: np.ndarray, truth: np.ndarray, keys: list[str]) -> dict:
    # Keys are listed in sorted order, the order faceval reads a JSON object's keys in.
    assert keys == sorted(keys)
    return {
        "name": name,
        "option_logprobs": [{k: float(v) for k, v in zip(keys, row)} for row in logits],
        "targets": [keys[t] for t in truth],
        **metrics(logits, truth),
    }


def main() -> None:
    rng = np.random.default_rng(20250517)
    letters = list("ABCD")
    cases = []
    # Overconfident: sharp log-likelihoods, right about 60% of the time.
    n = 200
    truth = rng.integers(0, 4, n)
    logits = rng.normal(0, 1, (n, 4))
    right = rng.random(n) < 0.6
    pick = np.where(right, truth, rng.integers(0, 4, n))
    logits[np.arange(n), pick] += 4.0
    cases.append(case("overconfident-4-options", np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True)), truth, letters))
    # Near-uniform probabilities over nine labels (confidence in the low bins).
    labels = sorted(["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"])
    n = 120
    truth = rng.integers(0, 9, n)
    logits = rng.normal(-20, 0.3, (n, 9))
    cases.append(case("flat-9-labels", logits, truth, labels))
    # Two options, log-likelihoods of various scales, some exact ties.
    n = 60
    truth = rng.integers(0, 2, n)
    logits = rng.normal(-5, 3, (n, 2))
    logits[:10, 1] = logits[:10, 0]
    cases.append(case("binary-with-ties", logits, truth, ["A", "B"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"numpy": np.__version__, "bins": BINS, "cases": cases}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
