//! `gate.toml`: the thresholds of the gate, globally and per task.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::input_error;

/// `gate.toml`. Every key is optional; unknown keys are an error that names the key and
/// lists the valid ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Largest tolerated accuracy drop, in percentage points.
    #[serde(default = "default_max_drop")]
    pub max_drop: f64,
    /// Family-wise significance level of the one-sided accuracy tests (Holm across tasks)
    /// and of the fairness checks (Bonferroni across them).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Power for the minimum detectable effect.
    #[serde(default = "default_power")]
    pub power: f64,
    /// Fail (exit 1) instead of warning when a task's test set is too small to see `max_drop`.
    #[serde(default)]
    pub fail_on_underpowered: bool,
    /// Fail (exit 1, status `incomplete`) when the candidate lacks questions the baseline
    /// answered or did not finish; `false` (`--allow-partial`) compares the shared questions
    /// and only warns.
    #[serde(default = "default_true")]
    pub require_complete: bool,
    /// Candidate errors tolerated per task on questions where the baseline had none.
    #[serde(default)]
    pub max_new_errors: usize,
    /// Relative p95 latency increase tolerated (0.10 = 10%).
    #[serde(default = "default_latency_tolerance")]
    pub latency_tolerance: f64,
    /// Relative peak VRAM increase tolerated.
    #[serde(default = "default_vram_tolerance")]
    pub vram_tolerance: f64,
    /// Increase of the max−min accuracy gap between groups tolerated, in points.
    #[serde(default = "default_fairness_tolerance")]
    pub fairness_tolerance: f64,
    /// Group fields for the fairness check; default: each task record's `groups`.
    #[serde(default)]
    pub fairness_fields: Option<Vec<String>>,
    /// Minimum group size for the fairness check; default: the task's, else 30.
    #[serde(default)]
    pub min_group: Option<usize>,
    /// Bootstrap resamples for the fairness check.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// Gate only these tasks (default: every task both runs have).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Per-task overrides: `[task.expression-rafdb] max_drop = 2.0`.
    #[serde(default)]
    pub task: BTreeMap<String, TaskOverride>,
}

/// Per-task settings that replace the global ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskOverride {
    pub max_drop: Option<f64>,
    pub fairness_tolerance: Option<f64>,
    pub fairness_fields: Option<Vec<String>>,
    pub max_new_errors: Option<usize>,
}

fn default_true() -> bool {
    true
}
fn default_max_drop() -> f64 {
    1.0
}
fn default_alpha() -> f64 {
    0.05
}
fn default_power() -> f64 {
    0.8
}
fn default_latency_tolerance() -> f64 {
    0.10
}
fn default_vram_tolerance() -> f64 {
    0.05
}
fn default_fairness_tolerance() -> f64 {
    5.0
}
fn default_resamples() -> usize {
    2000
}

impl Default for GateConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

impl GateConfig {
    /// Parse and check `gate.toml`; `path` names the file in messages.
    pub fn parse(text: &str, path: &Path) -> Result<GateConfig> {
        let config: GateConfig = toml::from_str(text).map_err(|e| {
            input_error(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        config.check(path)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<GateConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| input_error(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad =
            |key: &str, why: &str| Err(input_error(format!("{}: {key} {why}", path.display())));
        let drops = std::iter::once(("max_drop".to_string(), self.max_drop)).chain(
            self.task
                .iter()
                .filter_map(|(t, o)| Some((format!("task.{t}.max_drop"), o.max_drop?))),
        );
        for (key, v) in drops {
            if !(0.0..100.0).contains(&v) {
                return bad(&key, &format!("must be in [0, 100) points, got {v}"));
            }
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return bad("alpha", &format!("must be in (0, 0.5), got {}", self.alpha));
        }
        if !(self.power > 0.0 && self.power < 1.0) {
            return bad("power", &format!("must be in (0, 1), got {}", self.power));
        }
        let tolerances = [
            ("latency_tolerance", self.latency_tolerance),
            ("vram_tolerance", self.vram_tolerance),
            ("fairness_tolerance", self.fairness_tolerance),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.task.iter().filter_map(|(t, o)| {
            Some((
                format!("task.{t}.fairness_tolerance"),
                o.fairness_tolerance?,
            ))
        }));
        for (key, v) in tolerances {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(&key, &format!("must be a number ≥ 0, got {v}"));
            }
        }
        if self.resamples < 100 {
            return bad(
                "resamples",
                &format!("must be at least 100, got {}", self.resamples),
            );
        }
        if self.min_group == Some(0) {
            return bad("min_group", "must be at least 1");
        }
        Ok(())
    }

    pub(super) fn max_drop_for(&self, task: &str) -> f64 {
        self.task
            .get(task)
            .and_then(|o| o.max_drop)
            .unwrap_or(self.max_drop)
    }

    pub(super) fn max_new_errors_for(&self, task: &str) -> usize {
        self.task
            .get(task)
            .and_then(|o| o.max_new_errors)
            .unwrap_or(self.max_new_errors)
    }

    pub(super) fn fairness_tolerance_for(&self, task: &str) -> f64 {
        self.task
            .get(task)
            .and_then(|o| o.fairness_tolerance)
            .unwrap_or(self.fairness_tolerance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_config_key_names_it_and_lists_the_valid_ones() {
        let err =
            GateConfig::parse("max_drop = 2\nmax_dorp = 1\n", Path::new("gate.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(crate::error::is_input_error(&err));
        assert!(
            msg.contains("gate.toml") && msg.contains("max_dorp"),
            "{msg}"
        );
        assert!(
            msg.contains("max_drop") && msg.contains("latency_tolerance"),
            "{msg}"
        );
        let nested = GateConfig::parse("[task.x]\nmax_drop = 1\nalpha = 2\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            nested.contains("alpha") && nested.contains("fairness_tolerance"),
            "{nested}"
        );
    }

    #[test]
    fn config_defaults_and_ranges() {
        let c = GateConfig::default();
        assert_eq!(c.max_drop, 1.0);
        assert_eq!(c.alpha, 0.05);
        assert!(!c.fail_on_underpowered);
        let err = GateConfig::parse("alpha = 0.7\n", Path::new("g.toml")).unwrap_err();
        assert!(err.to_string().contains("alpha"), "{err}");
    }
}
