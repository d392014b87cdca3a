#!/usr/bin/env python3
"""Score files and scikit-learn reference values for faceval's verification metrics
(docs/verification.md), written to harness/eval/tests/fixtures/verification/.

Run by hand from the repository root when a definition changes:

    pip install scikit-learn numpy
    python3 tools/make_verification_fixtures.py

It writes one CSV per case (`id,cluster,group,genuine,score`; fixed numpy seeds, so reruns
give the same files) and `reference.json` with what scikit-learn and numpy make of each:

- `roc`: `sklearn.metrics.roc_curve(genuine, score)` (drop_intermediate=True), +inf
  thresholds written as null;
- `auc`: `sklearn.metrics.roc_auc_score`;
- `eer`: on those ROC points, where FPR = 1 - TPR, linearly interpolated between the two
  points that bracket the crossing; `threshold_eer`: threshold of the first point with
  FPR >= 1 - TPR; `accuracy_at_threshold_eer`: `sklearn.metrics.accuracy_score` of
  score >= threshold_eer;
- `tmr_at_fmr`: for FMR 0.1, 0.01, 0.001 the largest TPR among points with FPR <= FMR;
- `group_threshold`: the threshold of that point at the case's `group_fmr` (first point on
  a TPR tie);
  per group, FMR and FNMR there from `sklearn.metrics.confusion_matrix`, and the group's own
  `roc_auc_score`.

The Rust tests `verification::tests::*_match_sklearn` read the CSVs and check every value.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

OUT = Path(__file__).resolve().parent.parent / "harness/eval/tests/fixtures/verification"
FMRS = [0.1, 0.01, 0.001]
# The global FMR of the per-group threshold: faceval's default, and larger ones where the
# default would reject every pair of a small case.
GROUP_FMR = {"small": 0.5, "continuous": 0.01, "ties": 0.1, "binary": 0.25}


def write_case(name: str, rows: list[tuple[str, str, str, int, float]]) -> None:
    with open(OUT / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "cluster", "group", "genuine", "score"])
        for r in rows:
            w.writerow([r[0], r[1], r[2], r[3], repr(float(r[4]))])


def read_case(name: str):
    with open(OUT / f"{name}.csv") as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(r["genuine"]) for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    g = np.array([r["group"] for r in rows])
    return y, s, g


def finite(x: float):
    return None if math.isinf(x) else float(x)


def reference(name: str) -> dict:
    y, s, g = read_case(name)
    fpr, tpr, thr = roc_curve(y, s)
    d = fpr + tpr - 1.0  # FPR - FNR
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or d[i] == d[i - 1]:
        eer = fpr[i]
    else:
        t = -d[i - 1] / (d[i] - d[i - 1])
        eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    threshold_eer = thr[i]

    def at_fmr(fmr: float) -> int:
        ok = np.flatnonzero(fpr <= fmr)
        return int(ok[np.argmax(tpr[ok])])  # argmax: the first point of the largest TPR

    j = at_fmr(GROUP_FMR[name])
    gt = thr[j]
    groups = {}
    for v in sorted(set(g)):
        m = g == v
        tn, fp, fn, tp = confusion_matrix(y[m], (s[m] >= gt).astype(int), labels=[0, 1]).ravel()
        both = 0 < y[m].sum() < m.sum()
        groups[v] = {
            "n_genuine": int(y[m].sum()),
            "n_impostor": int((1 - y[m]).sum()),
            "fmr": float(fp / (fp + tn)) if fp + tn else None,
            "fnmr": float(fn / (fn + tp)) if fn + tp else None,
            "auc": float(roc_auc_score(y[m], s[m])) if both else None,
        }
    return {
        "name": name,
        "n": int(len(y)),
        "roc": {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": [finite(t) for t in thr],
        },
        "auc": float(roc_auc_score(y, s)),
        "eer": float(eer),
        "threshold_eer": float(threshold_eer),
        "accuracy_at_threshold_eer": float(accuracy_score(y, (s >= threshold_eer).astype(int))),
        "tmr_at_fmr": [
            {"fmr": f, "tmr": float(tpr[at_fmr(f)]), "threshold": finite(thr[at_fmr(f)])}
            for f in FMRS
        ],
        "group_fmr": GROUP_FMR[name],
        "group_threshold": finite(gt),
        "groups": groups,
    }


def make_cases() -> list[str]:
    rng = np.random.default_rng(20260412)
    # 1. Hand-sized, with tied scores across genuine and impostor pairs.
    small = [
        ("p1", "a", "x", 1, 0.9), ("p2", "a", "x", 0, 0.9), ("p3", "b", "x", 1, 0.8),
        ("p4", "b", "y", 0, 0.4), ("p5", "c", "y", 1, 0.4), ("p6", "c", "y", 0, 0.1),
        ("p7", "d", "y", 1, 0.7), ("p8", "d", "x", 0, 0.3),
    ]
    write_case("small", small)
    # 2. Continuous scores, four groups of unequal skill, identities shared by several pairs.
    rows = []
    shift = {"African": 1.2, "Asian": 1.6, "Caucasian": 2.2, "Indian": 1.9}
    for k in range(1200):
        group = list(shift)[k % 4]
        ident = f"{group}_{k // 12}"
        genuine = int(rng.random() < 0.5)
        z = rng.normal(shift[group] if genuine else 0.0, 1.0)
        rows.append((f"c{k}", ident, group, genuine, 1.0 / (1.0 + math.exp(-z))))
    write_case("continuous", rows)
    # 3. Scores rounded to one decimal: many ties, and intermediate points to drop.
    rows = []
    for k in range(300):
        genuine = int(rng.random() < 0.4)
        p = np.clip(rng.normal(0.65 if genuine else 0.35, 0.2), 0.0, 1.0)
        rows.append((f"t{k}", f"id{k // 5}", "ab"[k % 2], genuine, round(float(p), 1)))
    write_case("ties", rows)
    # 4. Generated yes/no answers: scores 1 and 0 only.
    rows = []
    for k in range(200):
        genuine = int(k % 2 == 0)
        right = rng.random() < (0.85 if k % 3 else 0.7)
        yes = genuine if right else 1 - genuine
        rows.append((f"b{k}", f"id{k // 4}", "ABC"[k % 3], genuine, float(yes)))
    write_case("binary", rows)
    return ["small", "continuous", "ties", "binary"]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    names = make_cases()
    out = {
        "generator": "tools/make_verification_fixtures.py",
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "cases": [reference(n) for n in names],
    }
    (OUT / "reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
