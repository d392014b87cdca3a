#!/usr/bin/env python3
"""Compute reference values for faceval's statistics and fairness code with scipy,
statsmodels, scikit-learn and fairlearn, and write them to
harness/eval/tests/fixtures/stats_reference.json.

Run by hand (from the repository root) when a definition changes:

    python3 tools/make_stats_reference.py

The Rust test harness/eval/tests/stats_reference.rs checks every value here to 1e-9.
Inputs are generated from fixed numpy seeds, so reruns give the same file.

Newcombe's paired interval has no statsmodels function: it is computed below from the
published formula (Newcombe 1998, Stat Med 17:2635, method 10) on top of statsmodels' Wilson
interval, and checked against the paper's Table III method-10 limits (four decimals, as
transcribed in a public test suite; the paper itself was not reachable from this machine).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import fairlearn
import numpy as np
import pandas as pd
import scipy
import sklearn
import statsmodels
import statsmodels.api as sm
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

SEP = " × "
OUT = Path(__file__).resolve().parent.parent / "harness/eval/tests/fixtures/stats_reference.json"


def f(x) -> float:
    return float(x)


# ---------------------------------------------------------------- proportions
def proportions():
    cases = []
    for k, n in [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (37, 50), (500, 1000), (1, 1000),
                 (999, 1000), (0, 2000), (17, 30), (29, 30)]:
        for conf in (0.95, 0.9, 0.99):
            w = proportion_confint(k, n, alpha=1 - conf, method="wilson")
            b = proportion_confint(k, n, alpha=1 - conf, method="beta")
            cases.append({"k": k, "n": n, "confidence": conf,
                          "wilson": [f(w[0]), f(w[1])], "clopper_pearson": [f(b[0]), f(b[1])]})
    return cases


# ---------------------------------------------------------------- chi-square
def chi_square():
    tables = [
        [[30, 10], [20, 25]],                      # 2x2: no Yates (correction=False)
        [[5, 5], [5, 5]],                          # no association, statistic 0
        [[40, 10], [35, 15], [20, 30]],            # 3 groups x correct/wrong
        [[12, 3], [9, 6], [30, 30], [1, 4], [7, 7]],
        [[3, 1, 4], [1, 5, 9], [2, 6, 5]],         # 3x3, tests the general path
        [[50, 50]],                                # single group: dof 0
    ]
    out = []
    for t in tables:
        res = stats.chi2_contingency(np.array(t), correction=False)
        out.append({"table": t, "statistic": f(res.statistic), "dof": int(res.dof),
                    "p_value": f(res.pvalue)})
    return out


# ---------------------------------------------------------------- multiple tests
def multiple():
    rng = np.random.default_rng(7)
    vectors = [
        [0.01, 0.04, 0.03, 0.005],
        [0.05, 0.05, 0.05, 0.01, 0.2],             # ties
        [0.0, 1.0, 0.5, 0.02],                     # boundaries
        [0.3],
        list(map(float, rng.uniform(0, 0.2, 12))),
    ]
    out = []
    for p in vectors:
        out.append({"p": p,
                    "holm": list(map(f, multipletests(p, method="holm")[1])),
                    "fdr_bh": list(map(f, multipletests(p, method="fdr_bh")[1]))})
    return out


# ---------------------------------------------------------------- clustered SE
def miller_se(x, g):
    """Miller (2024) eq. for SE_clustered: SE_CLT^2 (unbiased variance) plus cross terms."""
    x = np.asarray(x, float)
    n = len(x)
    e = x - x.mean()
    se_clt2 = (e ** 2).sum() / (n - 1) / n
    cross = 0.0
    for c in set(g):
        ec = e[np.array(g) == c]
        cross += ec.sum() ** 2 - (ec ** 2).sum()
    return math.sqrt(se_clt2 + cross / n ** 2)


def cluster():
    rng = np.random.default_rng(11)
    cases = []
    # binary scores, 40 clusters of unequal size with a cluster effect
    sizes = rng.integers(1, 8, 40)
    g = [f"c{i}" for i, s in enumerate(sizes) for _ in range(s)]
    eff = {f"c{i}": rng.normal(0, 1) for i in range(40)}
    x = [float(rng.random() < 1 / (1 + math.exp(-(0.5 + eff[c])))) for c in g]
    cases.append((x, g))
    # continuous scores, 10 clusters
    g2 = [f"k{i % 10}" for i in range(57)]
    x2 = list(map(float, rng.normal(3.0, 1.5, 57)))
    cases.append((x2, g2))
    # every item its own cluster: clustered SE (Miller) equals s/sqrt(n)
    x3 = list(map(float, rng.integers(0, 2, 25)))
    g3 = [f"i{i}" for i in range(25)]
    cases.append((x3, g3))
    out = []
    for x, g in cases:
        X = np.ones((len(x), 1))
        codes = pd.factorize(pd.Series(g))[0]
        raw = sm.OLS(np.array(x), X).fit(cov_type="cluster",
                                         cov_kwds={"groups": codes, "use_correction": False})
        cr1 = sm.OLS(np.array(x), X).fit(cov_type="cluster", cov_kwds={"groups": codes})
        out.append({"values": x, "clusters": g, "mean": f(np.mean(x)),
                    "se_iid": f(np.std(x, ddof=1) / math.sqrt(len(x))),
                    "se_none": f(raw.bse[0]), "se_cr1": f(cr1.bse[0]), "se_miller": miller_se(x, g)})
    return out


# ---------------------------------------------------------------- paired
def wilson(k, n, conf):
    return proportion_confint(k, n, alpha=1 - conf, method="wilson")


def newcombe(a, b, c, d, conf):
    """Newcombe 1998 method 10, from the paper's formula (cells e, f, g, h = a, b, c, d)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, conf)
    l2, u2 = wilson(a + c, n, conf)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if cross > n / 2:
        num = cross - n / 2
    elif cross >= 0:
        num = 0.0
    else:
        num = cross
    phi = num / math.sqrt(denom) if denom > 0 else 0.0
    theta = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return theta, max(-1.0, theta - dl), min(1.0, theta + du)


# Newcombe (1998) Table III, method 10, 95% limits to four decimals: (e, f, g, h, lower, upper).
NEWCOMBE_TABLE_III = [
    (36, 12, 2, 0, 0.0569, 0.3404), (20, 12, 2, 16, 0.0562, 0.3292), (18, 12, 2, 18, 0.0562, 0.3290),
    (36, 14, 0, 0, 0.1528, 0.4167), (35, 14, 0, 1, 0.1461, 0.4175), (18, 14, 0, 18, 0.1441, 0.3963),
    (2, 97, 1, 0, 0.8721, 0.9854), (1, 97, 1, 1, 0.8736, 0.9850), (0, 29, 1, 0, 0.6666, 0.9882),
    (2, 98, 0, 0, 0.9178, 0.9945), (1, 98, 0, 1, 0.9171, 0.9916), (0, 30, 0, 0, 0.8395, 1.0),
    (54, 0, 0, 0, -0.0664, 0.0664), (53, 0, 0, 1, -0.0729, 0.0729), (30, 0, 0, 24, -0.0358, 0.0358),
    (29, 0, 0, 25, -0.0354, 0.0354), (28, 0, 0, 26, -0.0352, 0.0352), (27, 0, 0, 27, -0.0351, 0.0351),
]


def paired():
    tables = [(20, 0, 0, 10), (40, 5, 5, 50), (60, 3, 10, 27), (30, 0, 7, 13), (500, 20, 35, 445),
              (800, 120, 150, 930), (0, 1, 0, 0), (59, 6, 16, 80)]
    mc = []
    for a, b, c, d in tables:
        r = mcnemar([[a, b], [c, d]], exact=True)
        k, m = min(b, c), b + c
        # Two-sided mid-p: 2·(P(X < k) + P(X = k)/2) = 2·cdf(k) − pmf(k), capped at 1.
        mid = 1.0 if m == 0 else min(1.0, 2 * stats.binom.cdf(k, m, 0.5) - stats.binom.pmf(k, m, 0.5))
        mc.append({"a": a, "b": b, "c": c, "d": d, "statistic": f(r.statistic),
                   "p_value": f(r.pvalue), "mid_p": f(mid)})
    nc = []
    for a, b, c, d in tables + [row[:4] for row in NEWCOMBE_TABLE_III]:
        for conf in (0.95, 0.9):
            t, lo, hi = newcombe(a, b, c, d, conf)
            nc.append({"a": a, "b": b, "c": c, "d": d, "confidence": conf,
                       "estimate": t, "low": lo, "high": hi})
    worst = 0.0
    for e, f_, g, h, lo, hi in NEWCOMBE_TABLE_III:
        _, l, u = newcombe(e, f_, g, h, 0.95)
        # Row 1/97/1/1: the printed lower limit 0.8736 is one unit in the fourth decimal below
        # the formula's 0.873672 (a rounding or transcription slip); every other limit rounds
        # to the printed value.
        allowed = 1e-4 if (e, f_, g, h) == (1, 97, 1, 1) else 5e-5
        diff = max(abs(l - lo), abs(u - hi))
        if diff > allowed + 1e-12:
            sys.exit(f"Newcombe formula disagrees with Table III row {e}/{f_}/{g}/{h} by {diff}")
        worst = max(worst, diff)
    print(f"Newcombe Table III reproduced: worst difference {worst:.6f}")
    mde = []
    for n, psi, alpha, power in [(1000, 0.1, 0.05, 0.8), (200, 0.25, 0.05, 0.9),
                                 (5000, 0.03, 0.01, 0.8), (50, 0.5, 0.1, 0.5)]:
        z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
        mde.append({"n": n, "discordance": psi, "alpha": alpha, "power": power,
                    "mde": f(z * math.sqrt(psi / n))})
    return {"mcnemar": mc, "newcombe": nc, "mde": mde,
            "newcombe_table_iii": [list(r) for r in NEWCOMBE_TABLE_III]}


def independent():
    """Difference of two independent proportions, Newcombe's hybrid score interval (method 10
    of Stat Med 17:873), as statsmodels computes it."""
    cases = []
    for k1, n1, k2, n2 in [(56, 70, 48, 80), (9, 10, 3, 10), (6, 7, 2, 7), (5, 56, 0, 29),
                           (0, 10, 0, 20), (10, 10, 0, 20), (412, 600, 3000, 4400), (1, 1, 0, 1),
                           (37, 40, 4512, 4960)]:
        for conf in (0.95, 0.9):
            lo, hi = confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff",
                                                alpha=1 - conf)
            cases.append({"k1": k1, "n1": n1, "k2": k2, "n2": n2, "confidence": conf,
                          "estimate": k1 / n1 - k2 / n2, "low": f(lo), "high": f(hi)})
    return cases


# ---------------------------------------------------------------- fairness
def mf_measures(mf: MetricFrame):
    by = mf.by_group.dropna()  # empty intersections appear as NaN rows
    errors = 1 - by
    return {
        "difference_between_groups": f(mf.difference(method="between_groups")),
        "difference_to_overall": f(mf.difference(method="to_overall")),
        "ratio_between_groups": f(mf.ratio(method="between_groups")),
        "ratio_to_overall": f(mf.ratio(method="to_overall")),
        "worst_group_accuracy": f(mf.group_min()),
        "accuracy_std": f(np.std(by.to_numpy(), ddof=0)),
        "skewed_error_ratio": (f(errors.max() / errors.min()) if errors.min() > 0 else None),
    }


def key_of(k):
    return SEP.join(k) if isinstance(k, tuple) else str(k)


def fairness_case(name, fields: dict, y_true, y_pred):
    correct = [bool(t == p) for t, p in zip(y_true, y_pred)]
    df = pd.DataFrame(fields)
    groupings = {}
    names = list(fields)
    subsets = [[n] for n in names]
    if len(names) > 1:
        subsets.append(names)
    for sub in subsets:
        sf = df[sub] if len(sub) > 1 else df[sub[0]]
        mf = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=sf)
        by = {key_of(k): f(v) for k, v in mf.by_group.dropna().items()}
        counts = df.groupby(sub).size()
        sizes = {key_of(k if isinstance(k, tuple) else k): int(v) for k, v in counts.items()}
        levels = [sorted(df[c].unique()) for c in sub]
        combos = [SEP.join(p) for p in pd.MultiIndex.from_product(levels)] if len(sub) > 1 else []
        empty = sorted(c for c in combos if c not in sizes)
        rows = []
        labels = df[sub].apply(lambda r: SEP.join(r), axis=1)
        for k in sorted(sizes):
            mask = labels == k
            right = int(np.sum(np.array(correct)[mask.to_numpy()]))
            rows.append([right, int(mask.sum()) - right])
        try:
            chi = stats.chi2_contingency(np.array(rows), correction=False)
            chi_d = {"statistic": f(chi.statistic), "dof": int(chi.dof), "p_value": f(chi.pvalue)}
        except ValueError:
            chi_d = None
        groupings[SEP.join(sub)] = {"by_group": by, "sizes": sizes, "empty": empty,
                                    "measures": mf_measures(mf), "chi_square": chi_d,
                                    "overall": f(mf.overall)}
    # per-class recall and precision for the first field
    per_class = {}
    labels_all = sorted(set(y_true) | set(y_pred))
    for k in sorted(df[names[0]].unique()):
        m = (df[names[0]] == k).to_numpy()
        t, p = np.array(y_true)[m], np.array(y_pred)[m]
        rec = {}
        prec = {}
        for lab in labels_all:
            if (t == lab).sum() > 0:
                rec[lab] = f(((t == lab) & (p == lab)).sum() / (t == lab).sum())
            if (p == lab).sum() > 0:
                prec[lab] = f(((t == lab) & (p == lab)).sum() / (p == lab).sum())
        per_class[k] = {"recall": rec, "precision": prec}
    return {"name": name, "fields": fields, "y_true": list(y_true), "y_pred": list(y_pred),
            "groupings": groupings, "per_class_first_field": per_class,
            "balanced_accuracy": f(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": f(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def fairness():
    rng = np.random.default_rng(2024)
    cases = []
    # multiclass emotion-like task, race x gender, one empty intersection (C x F)
    n = 400
    race = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    gender = rng.choice(["F", "M"], n)
    gender[race == "C"] = "M"
    classes = ["anger", "happiness", "neutral", "sadness"]
    y_true = rng.choice(classes, n)
    skill = np.where(race == "A", 0.8, np.where(race == "B", 0.65, 0.5))
    y_pred = np.where(rng.random(n) < skill, y_true, rng.choice(classes, n))
    cases.append(fairness_case("multiclass", {"race": list(race), "gender": list(gender)},
                               list(y_true), list(y_pred)))
    # a single group: difference 0, ratio 1
    n = 60
    yt = list(rng.choice(["x", "y"], n))
    yp = [t if rng.random() < 0.7 else ("y" if t == "x" else "x") for t in yt]
    cases.append(fairness_case("single_group", {"site": ["only"] * n}, yt, yp))
    # ties: two groups with identical accuracy, and a group with zero error
    fields = {"g": ["p"] * 20 + ["q"] * 20 + ["r"] * 10}
    yt = ["a"] * 50
    yp = ["a"] * 15 + ["b"] * 5 + ["a"] * 15 + ["b"] * 5 + ["a"] * 10
    cases.append(fairness_case("ties_zero_error", fields, yt, yp))
    return cases


def binary():
    rng = np.random.default_rng(99)
    out = []
    n = 500
    sf = rng.choice(["A", "B", "C", "D"], n, p=[0.4, 0.3, 0.2, 0.1])
    y_true = rng.random(n) < np.where(sf == "A", 0.5, 0.35)
    y_pred = np.where(rng.random(n) < np.where(sf == "D", 0.6, 0.8), y_true, ~y_true)
    for label, yt, yp, s in [("four_groups", y_true, y_pred, sf)]:
        yt_i, yp_i = yt.astype(int), yp.astype(int)
        res = {"name": label, "y_true": list(map(bool, yt)), "y_pred": list(map(bool, yp)),
               "groups": list(s), "measures": {}}
        for method, suffix in (("between_groups", ""), ("to_overall", "_to_overall")):
            kw = dict(y_true=yt_i, y_pred=yp_i, sensitive_features=s, method=method)
            res["measures"]["demographic_parity_difference" + suffix] = f(demographic_parity_difference(**kw))
            res["measures"]["demographic_parity_ratio" + suffix] = f(demographic_parity_ratio(**kw))
            res["measures"]["equalized_odds_difference" + suffix] = f(equalized_odds_difference(**kw))
            res["measures"]["equalized_odds_ratio" + suffix] = f(equalized_odds_ratio(**kw))
            res["measures"]["equal_opportunity_difference" + suffix] = f(equal_opportunity_difference(**kw))
        mf = MetricFrame(metrics={"sel": selection_rate, "tpr": true_positive_rate,
                                  "fpr": false_positive_rate},
                         y_true=yt_i, y_pred=yp_i, sensitive_features=s)
        res["by_group"] = {k: {c: f(v) for c, v in row.items()} for k, row in mf.by_group.iterrows()}
        out.append(res)
    return out


def main():
    ref = {
        "generated_by": "tools/make_stats_reference.py",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "statsmodels": statsmodels.__version__, "sklearn": sklearn.__version__,
                     "fairlearn": fairlearn.__version__, "pandas": pd.__version__},
        "proportions": proportions(),
        "chi_square": chi_square(),
        "multiple": multiple(),
        "cluster": cluster(),
        "paired": paired(),
        "independent": independent(),
        "fairness": fairness(),
        "binary": binary(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
