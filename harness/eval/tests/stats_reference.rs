//! Checks the statistics and fairness code against reference values computed with scipy,
//! statsmodels, scikit-learn and fairlearn (tests/fixtures/stats_reference.json, written by
//! tools/make_stats_reference.py). Deterministic values must agree to 1e-9 (relative to the
//! value when it exceeds 1); bootstrap intervals are checked for their distribution.

use std::collections::BTreeMap;

use faceval_eval::fairness::{
    self, audit_accuracy, binary_fairness, group_accuracy, group_by, groupings_with_intersections,
    per_class_by_group, FairnessOptions,
};
use faceval_eval::stats::bootstrap::{bootstrap, bootstrap_mean, bootstrap_stratified};
use faceval_eval::stats::hypothesis::chi_square_independence;
use faceval_eval::stats::{
    benjamini_hochberg, clopper_pearson, clustered_mean_se, holm, macro_averages, mcnemar_exact,
    minimum_detectable_effect, newcombe_independent, newcombe_paired, paired_bootstrap, wilson,
    BootstrapConfig, ClusterCorrection, PairedCounts,
};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stats_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read reference")).expect("parse")
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn close(actual: f64, expected: f64, what: &str) {
    let tol = TOL * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: got {actual:.15}, reference {expected:.15} (diff {:e})",
        (actual - expected).abs()
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn wilson_and_clopper_pearson_match_statsmodels() {
    let r = reference();
    let cases = r["proportions"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let (k, n, conf) = (
            c["k"].as_u64().unwrap(),
            c["n"].as_u64().unwrap(),
            num(&c["confidence"]),
        );
        let w = wilson(k, n, conf).unwrap();
        close(
            w.low,
            num(&c["wilson"][0]),
            &format!("wilson low {k}/{n} @{conf}"),
        );
        close(
            w.high,
            num(&c["wilson"][1]),
            &format!("wilson high {k}/{n} @{conf}"),
        );
        let b = clopper_pearson(k, n, conf).unwrap();
        close(
            b.low,
            num(&c["clopper_pearson"][0]),
            &format!("CP low {k}/{n} @{conf}"),
        );
        close(
            b.high,
            num(&c["clopper_pearson"][1]),
            &format!("CP high {k}/{n} @{conf}"),
        );
        assert_eq!(w.n, n as usize);
        close(b.estimate, k as f64 / n as f64, "estimate");
    }
}

#[test]
fn proportion_intervals_reject_bad_input() {
    assert!(wilson(1, 0, 0.95).is_err());
    assert!(wilson(5, 4, 0.95).is_err());
    assert!(clopper_pearson(1, 2, 1.0).is_err());
    assert!(clopper_pearson(1, 2, f64::NAN).is_err());
}

#[test]
fn chi_square_matches_scipy_without_yates() {
    let r = reference();
    for c in r["chi_square"].as_array().unwrap() {
        let table: Vec<Vec<u64>> = c["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect()
            })
            .collect();
        let got = chi_square_independence(&table).unwrap();
        close(
            got.statistic.unwrap(),
            num(&c["statistic"]),
            &format!("X² {table:?}"),
        );
        close(
            got.p_value.unwrap(),
            num(&c["p_value"]),
            &format!("p {table:?}"),
        );
        assert_eq!(got.dof as u64, c["dof"].as_u64().unwrap());
    }
    // A column of zeros (every item correct) has no defined statistic: a reason, not NaN.
    let all_right = chi_square_independence(&[vec![10, 0], vec![5, 0]]).unwrap();
    assert!(all_right.statistic.is_none() && all_right.reason.is_some());
}

#[test]
fn holm_and_bh_match_statsmodels() {
    let r = reference();
    for c in r["multiple"].as_array().unwrap() {
        let p: Vec<f64> = c["p"].as_array().unwrap().iter().map(num).collect();
        let h = holm(&p).unwrap();
        let b = benjamini_hochberg(&p).unwrap();
        for i in 0..p.len() {
            close(h[i], num(&c["holm"][i]), &format!("holm {p:?}[{i}]"));
            close(b[i], num(&c["fdr_bh"][i]), &format!("bh {p:?}[{i}]"));
        }
    }
    assert!(holm(&[0.1, 1.5]).is_err());
    assert!(holm(&[]).unwrap().is_empty());
}

#[test]
fn clustered_se_matches_statsmodels_and_miller() {
    let r = reference();
    for c in r["cluster"].as_array().unwrap() {
        let x: Vec<f64> = c["values"].as_array().unwrap().iter().map(num).collect();
        let g = strings(&c["clusters"]);
        let none = clustered_mean_se(&x, &g, ClusterCorrection::None).unwrap();
        close(none.mean, num(&c["mean"]), "mean");
        close(none.se_iid, num(&c["se_iid"]), "se_iid");
        close(
            none.se_clustered,
            num(&c["se_none"]),
            "statsmodels use_correction=False",
        );
        let cr1 = clustered_mean_se(&x, &g, ClusterCorrection::Cr1).unwrap();
        close(
            cr1.se_clustered,
            num(&c["se_cr1"]),
            "statsmodels default (CR1)",
        );
        let miller = clustered_mean_se(&x, &g, ClusterCorrection::Miller).unwrap();
        close(miller.se_clustered, num(&c["se_miller"]), "Miller form");
    }
}

#[test]
fn mcnemar_newcombe_and_mde_match_references() {
    let r = reference();
    let paired = &r["paired"];
    let counts = |c: &Value| PairedCounts {
        both: c["a"].as_u64().unwrap(),
        only_first: c["b"].as_u64().unwrap(),
        only_second: c["c"].as_u64().unwrap(),
        neither: c["d"].as_u64().unwrap(),
    };
    for c in paired["mcnemar"].as_array().unwrap() {
        let m = mcnemar_exact(&counts(c));
        close(
            m.statistic as f64,
            num(&c["statistic"]),
            "mcnemar statistic",
        );
        close(m.p_value, num(&c["p_value"]), &format!("mcnemar p {c}"));
        close(
            m.mid_p_value,
            num(&c["mid_p"]),
            &format!("mcnemar mid-p {c}"),
        );
    }
    for c in paired["newcombe"].as_array().unwrap() {
        let i = newcombe_paired(&counts(c), num(&c["confidence"])).unwrap();
        close(
            i.estimate,
            num(&c["estimate"]),
            &format!("newcombe estimate {c}"),
        );
        close(i.low, num(&c["low"]), &format!("newcombe low {c}"));
        close(i.high, num(&c["high"]), &format!("newcombe high {c}"));
    }
    // The paper's own printed limits (4 decimals); row 1/97/1/1 is off by one unit there.
    for row in paired["newcombe_table_iii"].as_array().unwrap() {
        let v: Vec<f64> = row.as_array().unwrap().iter().map(num).collect();
        let c = PairedCounts {
            both: v[0] as u64,
            only_first: v[1] as u64,
            only_second: v[2] as u64,
            neither: v[3] as u64,
        };
        let i = newcombe_paired(&c, 0.95).unwrap();
        assert!(
            (i.low - v[4]).abs() <= 1e-4 && (i.high - v[5]).abs() <= 1e-4,
            "{v:?} vs {i:?}"
        );
    }
    for c in paired["mde"].as_array().unwrap() {
        let got = minimum_detectable_effect(
            c["n"].as_u64().unwrap(),
            num(&c["discordance"]),
            num(&c["alpha"]),
            num(&c["power"]),
        )
        .unwrap();
        close(got, num(&c["mde"]), "mde");
    }
}

#[test]
fn newcombe_independent_matches_statsmodels() {
    let r = reference();
    let cases = r["independent"].as_array().unwrap();
    assert!(cases.len() >= 18);
    for c in cases {
        let u = |k: &str| c[k].as_u64().unwrap();
        let i = newcombe_independent(u("k1"), u("n1"), u("k2"), u("n2"), num(&c["confidence"]))
            .unwrap();
        close(i.estimate, num(&c["estimate"]), &format!("estimate {c}"));
        close(i.low, num(&c["low"]), &format!("low {c}"));
        close(i.high, num(&c["high"]), &format!("high {c}"));
    }
    assert!(newcombe_independent(1, 0, 0, 1, 0.95).is_err());
}

fn options(min_group_size: usize) -> FairnessOptions {
    FairnessOptions {
        min_group_size,
        bootstrap: BootstrapConfig {
            resamples: 400,
            confidence: 0.95,
            seed: 5,
        },
    }
}

#[test]
fn fairness_matches_fairlearn_metricframe() {
    let r = reference();
    for case in r["fairness"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let y_true = strings(&case["y_true"]);
        let y_pred = strings(&case["y_pred"]);
        let correct: Vec<bool> = y_true.iter().zip(&y_pred).map(|(t, p)| t == p).collect();
        let fields: BTreeMap<String, Vec<String>> = case["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), strings(v)))
            .collect();
        // Keep the script's field order (serde_json sorts keys): the script lists race first.
        let order: Vec<&str> = match name {
            "multiclass" => vec!["race", "gender"],
            _ => fields.keys().map(|k| k.as_str()).collect(),
        };
        let cols: Vec<(&str, &[String])> =
            order.iter().map(|k| (*k, fields[*k].as_slice())).collect();
        let groupings = groupings_with_intersections(&cols).unwrap();
        let opts = options(1);
        for (gname, expected) in case["groupings"].as_object().unwrap() {
            let grouping = groupings
                .iter()
                .find(|g| &g.name == gname)
                .unwrap_or_else(|| panic!("{name}: no grouping {gname}"));
            let groups = group_accuracy(&correct, grouping, &opts).unwrap();
            let by = expected["by_group"].as_object().unwrap();
            assert_eq!(groups.len(), by.len(), "{name}/{gname} group count");
            for g in &groups {
                close(
                    g.accuracy.estimate,
                    num(&by[&g.key]),
                    &format!("{name}/{gname}/{}", g.key),
                );
                assert_eq!(g.n, expected["sizes"][&g.key].as_u64().unwrap());
                assert!(g.accuracy.contains(g.accuracy.estimate));
            }
            assert_eq!(
                grouping.empty_intersections,
                strings(&expected["empty"]),
                "{name}/{gname}"
            );
            let measures = fairness::accuracy_disparities(&groups, &opts).unwrap();
            for m in &measures {
                let want = &expected["measures"][&m.name];
                if want.is_null() {
                    assert!(
                        m.estimate.is_none() && m.reason.is_some(),
                        "{name}/{gname}/{}: {m:?}",
                        m.name
                    );
                } else {
                    let got = m
                        .estimate
                        .unwrap_or_else(|| panic!("{name}/{gname}/{} undefined: {m:?}", m.name));
                    close(got, num(want), &format!("{name}/{gname}/{}", m.name));
                    if let (Some(lo), Some(hi)) = (m.low, m.high) {
                        assert!(lo <= hi, "{name}/{gname}/{} interval", m.name);
                    }
                }
            }
            let audit_chi = chi_square_independence(
                &groups
                    .iter()
                    .map(|g| vec![g.correct, g.n - g.correct])
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            let want = &expected["chi_square"];
            close(
                audit_chi.statistic.unwrap(),
                num(&want["statistic"]),
                &format!("{name}/{gname} X²"),
            );
            close(
                audit_chi.p_value.unwrap(),
                num(&want["p_value"]),
                &format!("{name}/{gname} p"),
            );
        }
        // Balanced accuracy and macro-F1 point values match scikit-learn.
        let macros = macro_averages(&y_true, &y_pred, &opts.bootstrap).unwrap();
        close(
            macros.balanced_accuracy.estimate,
            num(&case["balanced_accuracy"]),
            "balanced accuracy",
        );
        close(macros.macro_f1.estimate, num(&case["macro_f1"]), "macro-F1");
        assert!(macros
            .balanced_accuracy
            .contains(macros.balanced_accuracy.estimate));
        // Per-class recall and precision within the first field's groups.
        let first = group_by(&cols[..1]).unwrap();
        let per_class = per_class_by_group(&y_true, &y_pred, &first, &opts).unwrap();
        for g in &per_class {
            let want = &case["per_class_first_field"][&g.key];
            for c in &g.classes {
                match (&c.recall, want["recall"].get(&c.label)) {
                    (Some(i), Some(v)) => {
                        close(i.estimate, num(v), &format!("recall {}/{}", g.key, c.label))
                    }
                    (None, None) => {}
                    other => panic!(
                        "recall presence differs for {}/{}: {other:?}",
                        g.key, c.label
                    ),
                }
                match (&c.precision, want["precision"].get(&c.label)) {
                    (Some(i), Some(v)) => close(
                        i.estimate,
                        num(v),
                        &format!("precision {}/{}", g.key, c.label),
                    ),
                    (None, None) => {}
                    other => panic!(
                        "precision presence differs for {}/{}: {other:?}",
                        g.key, c.label
                    ),
                }
            }
        }
    }
}

#[test]
fn binary_fairness_matches_fairlearn() {
    let r = reference();
    for case in r["binary"].as_array().unwrap() {
        let yt: Vec<bool> = case["y_true"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        let yp: Vec<bool> = case["y_pred"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        let groups = strings(&case["groups"]);
        let grouping = group_by(&[("group", groups.as_slice())]).unwrap();
        let result = binary_fairness(&yt, &yp, &grouping, &options(1)).unwrap();
        for g in &result.groups {
            let want = &case["by_group"][&g.key];
            close(g.selection_rate, num(&want["sel"]), "selection rate");
            close(g.true_positive_rate, num(&want["tpr"]), "tpr");
            close(g.false_positive_rate, num(&want["fpr"]), "fpr");
        }
        let want = case["measures"].as_object().unwrap();
        assert_eq!(want.len(), result.measures.len());
        for m in &result.measures {
            close(m.estimate.unwrap(), num(&want[&m.name]), &m.name);
            let (lo, hi) = (m.low.unwrap(), m.high.unwrap());
            assert!(lo <= hi);
        }
    }
}

// ------------------------------------------------------------------ bootstrap behaviour

fn bernoulli(n: usize, p: f64, seed: u64) -> Vec<bool> {
    // A fixed low-discrepancy pattern: exactly round(n p) successes spread over the sample.
    let k = (n as f64 * p).round() as usize;
    let mut v: Vec<bool> = (0..n).map(|i| (i * k) / n != ((i + 1) * k) / n).collect();
    v.rotate_left(seed as usize % n.max(1));
    v
}

fn mean_of(v: &[bool]) -> f64 {
    v.iter().filter(|b| **b).count() as f64 / v.len() as f64
}

#[test]
fn bootstrap_interval_contains_estimate_shrinks_and_matches_normal_width() {
    let config = BootstrapConfig {
        resamples: 2000,
        confidence: 0.95,
        seed: 42,
    };
    let mut widths = Vec::new();
    for &n in &[100usize, 400, 1600] {
        let data = bernoulli(n, 0.7, 3);
        let i = bootstrap(&data, mean_of, &config).unwrap();
        assert!(i.contains(i.estimate), "{i:?}");
        let normal = 2.0 * 1.959963984540054 * (0.7f64 * 0.3 / n as f64).sqrt();
        assert!(
            (i.width() / normal - 1.0).abs() < 0.12,
            "n={n}: width {} vs normal {normal}",
            i.width()
        );
        widths.push(i.width());
    }
    assert!(widths[0] > widths[1] && widths[1] > widths[2], "{widths:?}");
    // Halving the width needs four times the items: ratios near 2.
    assert!((widths[0] / widths[1] - 2.0).abs() < 0.3 && (widths[1] / widths[2] - 2.0).abs() < 0.3);
}

#[test]
fn bootstrap_is_reproducible_and_seed_dependent() {
    let data = bernoulli(300, 0.4, 1);
    let c = BootstrapConfig {
        resamples: 500,
        confidence: 0.9,
        seed: 1,
    };
    let a = bootstrap(&data, mean_of, &c).unwrap();
    let b = bootstrap(&data, mean_of, &c).unwrap();
    assert_eq!(a, b);
    let d = bootstrap(&data, mean_of, &BootstrapConfig { seed: 2, ..c }).unwrap();
    assert_ne!((a.low, a.high), (d.low, d.high));
}

#[test]
fn count_level_mean_bootstrap_agrees_with_item_resampling() {
    // Integer errors take few distinct values, so bootstrap_mean draws multinomial counts;
    // the generic bootstrap resamples items. Both estimate the same distribution.
    let values: Vec<f64> = (0..2000).map(|i| ((i * 7919) % 11) as f64).collect();
    let c = BootstrapConfig {
        resamples: 4000,
        confidence: 0.95,
        seed: 9,
    };
    let fast = bootstrap_mean(&values, &c).unwrap();
    let slow = bootstrap(
        &values,
        |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64,
        &c,
    )
    .unwrap();
    close(fast.estimate, slow.estimate, "same estimate");
    assert!(
        (fast.width() / slow.width() - 1.0).abs() < 0.08,
        "{fast:?} vs {slow:?}"
    );
    assert!((fast.low - slow.low).abs() < 0.02 && (fast.high - slow.high).abs() < 0.02);
}

#[test]
fn stratified_bootstrap_keeps_strata_sizes() {
    // Two strata with different means: the within-stratum bootstrap of the pooled mean is
    // narrower than an unstratified one, since stratum sizes stay fixed.
    let data: Vec<f64> = (0..400).map(|i| if i < 200 { 0.0 } else { 1.0 }).collect();
    let strata: Vec<usize> = (0..400).map(|i| i / 200).collect();
    let c = BootstrapConfig {
        resamples: 500,
        confidence: 0.95,
        seed: 4,
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let s = bootstrap_stratified(&data, &strata, mean, &c).unwrap();
    assert_eq!((s.low, s.high), (0.5, 0.5), "each stratum is constant");
    let u = bootstrap(&data, mean, &c).unwrap();
    assert!(u.width() > 0.05);
}

#[test]
fn paired_bootstrap_difference_is_centred_and_covers() {
    let first: Vec<f64> = (0..500).map(|i| ((i * 37) % 10) as f64 / 10.0).collect();
    let second: Vec<f64> = first
        .iter()
        .enumerate()
        .map(|(i, v)| v - if i % 5 == 0 { 0.1 } else { 0.0 })
        .collect();
    let c = BootstrapConfig {
        resamples: 1000,
        confidence: 0.95,
        seed: 8,
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let i = paired_bootstrap(&first, &second, mean, &c).unwrap();
    close(i.estimate, 0.02, "paired difference");
    assert!(i.contains(0.02) && i.low > 0.0, "{i:?}");
}

#[test]
fn disparity_intervals_behave() {
    // Three groups with known accuracies; the gap interval contains the estimate, shrinks
    // with n and is close to the normal-approximation width for a difference of two
    // proportions when one pair of groups dominates.
    let mut widths = Vec::new();
    for &scale in &[1usize, 4] {
        let mut correct = Vec::new();
        let mut groups = Vec::new();
        for (key, n, p) in [
            ("a", 500 * scale, 0.9),
            ("b", 500 * scale, 0.7),
            ("c", 500 * scale, 0.8),
        ] {
            correct.extend(bernoulli(n, p, 0));
            groups.extend(std::iter::repeat_n(key.to_string(), n));
        }
        let g = group_by(&[("g", groups.as_slice())]).unwrap();
        let opts = FairnessOptions {
            min_group_size: 30,
            bootstrap: BootstrapConfig {
                resamples: 2000,
                confidence: 0.95,
                seed: 17,
            },
        };
        let acc = group_accuracy(&correct, &g, &opts).unwrap();
        let m = fairness::accuracy_disparities(&acc, &opts).unwrap();
        let gap = m
            .iter()
            .find(|m| m.name == "difference_between_groups")
            .unwrap();
        let est = gap.estimate.unwrap();
        close(est, 0.2, "gap");
        assert!(gap.low.unwrap() <= est && est <= gap.high.unwrap());
        let n = (500 * scale) as f64;
        let normal = 2.0 * 1.959963984540054 * (0.9 * 0.1 / n + 0.7 * 0.3 / n).sqrt();
        let width = gap.high.unwrap() - gap.low.unwrap();
        assert!(
            (width / normal - 1.0).abs() < 0.15,
            "width {width} vs normal {normal}"
        );
        widths.push(width);
    }
    assert!(widths[1] < widths[0] * 0.6);
}

#[test]
fn small_groups_are_flagged_and_excluded() {
    let mut correct = bernoulli(100, 0.8, 0);
    correct.extend(vec![false; 5]);
    let mut groups = vec!["big".to_string(); 100];
    groups.extend(vec!["tiny".to_string(); 5]);
    let g = group_by(&[("g", groups.as_slice())]).unwrap();
    let opts = FairnessOptions::default();
    let acc = group_accuracy(&correct, &g, &opts).unwrap();
    assert!(acc.iter().find(|a| a.key == "tiny").unwrap().small);
    let m = fairness::accuracy_disparities(&acc, &opts).unwrap();
    let gap = m
        .iter()
        .find(|m| m.name == "difference_between_groups")
        .unwrap();
    assert_eq!(gap.groups, 1);
    assert_eq!(gap.estimate, Some(0.0), "only one group is large enough");
    let worst = m.iter().find(|m| m.name == "worst_group_accuracy").unwrap();
    close(
        worst.estimate.unwrap(),
        0.8,
        "tiny group excluded from worst-group accuracy",
    );
}

#[test]
fn skewed_error_ratio_is_none_with_reason_when_a_group_is_perfect() {
    let correct: Vec<bool> = (0..100).map(|i| i < 50 || i % 2 == 0).collect();
    let groups: Vec<String> = (0..100)
        .map(|i| if i < 50 { "p" } else { "q" }.to_string())
        .collect();
    let g = group_by(&[("g", groups.as_slice())]).unwrap();
    let opts = FairnessOptions::default();
    let acc = group_accuracy(&correct, &g, &opts).unwrap();
    let m = fairness::accuracy_disparities(&acc, &opts).unwrap();
    let s = m.iter().find(|m| m.name == "skewed_error_ratio").unwrap();
    assert!(s.estimate.is_none());
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("\"p\" has zero error"),
        "{s:?}"
    );
}

#[test]
fn audit_reports_intersections_empty_cells_and_missing_labels() {
    let race: Vec<String> = (0..300)
        .map(|i| ["A", "B", "C"][i % 3].to_string())
        .collect();
    // No "C × F": every third item is male.
    let gender: Vec<String> = (0..300)
        .map(|i| if i % 3 == 2 || i % 2 == 0 { "M" } else { "F" }.to_string())
        .collect();
    let mut age: Vec<String> = (0..300)
        .map(|i| if i < 150 { "young" } else { "old" }.to_string())
        .collect();
    age[7] = String::new(); // not recorded
    let correct: Vec<bool> = (0..300).map(|i| i % 4 != 0).collect();
    let audit = audit_accuracy(
        &correct,
        &[
            ("race", race.as_slice()),
            ("gender", gender.as_slice()),
            ("age", age.as_slice()),
        ],
        &FairnessOptions::default(),
    )
    .unwrap();
    let names: Vec<&str> = audit.groupings.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "race",
            "gender",
            "age",
            "race × gender",
            "race × age",
            "gender × age",
            "race × gender × age"
        ]
    );
    let rg = &audit.groupings[3];
    assert_eq!(rg.empty_intersections, ["C × F"]);
    assert!(rg.groups.iter().all(|g| g.key.contains(" × ")));
    assert_eq!(audit.groupings[2].missing, 1);
    let holm: Vec<f64> = audit
        .groupings
        .iter()
        .filter_map(|g| g.chi_square_p_holm)
        .collect();
    assert!(!holm.is_empty());
    for g in &audit.groupings {
        if let (Some(p), Some(h)) = (g.chi_square.p_value, g.chi_square_p_holm) {
            assert!(h >= p);
        }
    }
}

#[test]
fn paired_and_cluster_edge_cases() {
    use faceval_eval::stats::compare_paired;
    // Identical runs: no discordant pairs, p = 1, MDE unknown rather than zero.
    let run = bernoulli(50, 0.6, 0);
    let cmp = compare_paired(&run, &run, 0.95, 0.05, 0.8).unwrap();
    assert_eq!(cmp.mcnemar.p_value, 1.0);
    assert_eq!(cmp.mcnemar.mid_p_value, 1.0);
    assert!(cmp.minimum_detectable_effect.is_none() && cmp.mde_note.is_some());
    assert!(cmp.difference.contains(0.0));
    // Errors, not panics, on bad input.
    assert!(compare_paired(&run, &run[1..], 0.95, 0.05, 0.8).is_err());
    assert!(minimum_detectable_effect(0, 0.1, 0.05, 0.8).is_err());
    assert!(minimum_detectable_effect(100, 1.5, 0.05, 0.8).is_err());
    assert!(minimum_detectable_effect(100, 0.1, 0.05, 1.0).is_err());
    assert!(newcombe_paired(&PairedCounts::default(), 0.95).is_err());
    assert!(clustered_mean_se(&[1.0, 0.0], &["a", "a"], ClusterCorrection::Cr1).is_err());
    assert!(clustered_mean_se(&[1.0, f64::NAN], &["a", "b"], ClusterCorrection::None).is_err());
    assert!(clustered_mean_se(&[1.0], &["a", "b"], ClusterCorrection::None).is_err());
    let empty: [bool; 0] = [];
    let no_groups: [String; 0] = [];
    assert!(audit_accuracy(
        &empty,
        &[("g", &no_groups[..])],
        &FairnessOptions::default()
    )
    .is_err());
}
