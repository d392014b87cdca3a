//! Age bins written as labels ("20-29", "more than 70"): parse them and find the bin an age
//! falls in. FairFace's nine bins are the default grouping for age fairness audits.

/// FairFace's age bins, in order.
pub const FAIRFACE_AGE_BINS: [&str; 9] = [
    "0-2",
    "3-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "more than 70",
];

/// The FairFace bin an age in whole years belongs to. FairFace has no "69-70" gap: its last
/// bin, "more than 70", holds everyone from 70 on.
pub fn fairface_age_bin(age: u32) -> &'static str {
    let i = match age {
        0..=2 => 0,
        3..=9 => 1,
        10..=19 => 2,
        20..=29 => 3,
        30..=39 => 4,
        40..=49 => 5,
        50..=59 => 6,
        60..=69 => 7,
        _ => 8,
    };
    FAIRFACE_AGE_BINS[i]
}

/// One bin: ages in `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bin {
    lo: f64,
    hi: f64,
}

/// Age bins parsed from label names, in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeBins {
    bins: Vec<Bin>,
}

impl AgeBins {
    /// Parse every label as a bin. Accepted forms (case-insensitive): `a-b` / `a–b` /
    /// `a to b` (whole years, both ends included), `more than N` / `over N` / `above N` /
    /// `N+` / `N and above` / `N and over` / `N or more` / `N or older` (N and up: FairFace's
    /// "more than 70" follows "60-69", so 70 itself belongs to it), `under N` / `less than N`
    /// / `below N` (up to, not including, N). Returns the first label that is none of these.
    pub fn from_labels(labels: &[String]) -> Result<AgeBins, String> {
        let bins = labels
            .iter()
            .map(|l| {
                parse_bin(l).ok_or_else(|| {
                    format!("label \"{l}\" is not an age bin such as \"20-29\" or \"more than 70\"")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AgeBins { bins })
    }

    /// Index of the first bin holding `age`.
    pub fn index_of(&self, age: f64) -> Option<usize> {
        self.bins.iter().position(|b| age >= b.lo && age < b.hi)
    }
}

fn number(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn parse_bin(label: &str) -> Option<Bin> {
    let t = label.trim().to_lowercase().replace('_', " ");
    let t = t
        .trim_end_matches(['.', ' '])
        .trim_end_matches("years")
        .trim_end_matches("year")
        .trim();
    for prefix in ["more than", "over", "above", "older than", ">=", ">"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return number(rest).map(|n| Bin {
                lo: n,
                hi: f64::INFINITY,
            });
        }
    }
    for suffix in [
        "+",
        "and above",
        "and over",
        "and older",
        "or more",
        "or older",
    ] {
        if let Some(rest) = t.strip_suffix(suffix) {
            return number(rest).map(|n| Bin {
                lo: n,
                hi: f64::INFINITY,
            });
        }
    }
    for prefix in ["under", "less than", "below", "younger than", "<"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return number(rest).map(|n| Bin { lo: 0.0, hi: n });
        }
    }
    for sep in [" to ", "-", "–", "—"] {
        if let Some((a, b)) = t.split_once(sep) {
            let (lo, hi) = (number(a)?, number(b)?);
            // Whole-year bins include their upper end: "20-29" holds 29.9 years too.
            return (lo <= hi).then_some(Bin { lo, hi: hi + 1.0 });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fairface_bins_parse_and_cover_every_age() {
        let bins = AgeBins::from_labels(&labels(&FAIRFACE_AGE_BINS)).unwrap();
        for age in 0..=116u32 {
            let i = bins.index_of(age as f64).unwrap();
            assert_eq!(FAIRFACE_AGE_BINS[i], fairface_age_bin(age), "age {age}");
        }
        assert_eq!(bins.index_of(29.5), Some(3));
        assert_eq!(bins.index_of(70.0), Some(8));
    }

    #[test]
    fn other_spellings() {
        let bins = AgeBins::from_labels(&labels(&["under 18", "18 to 64", "65+"])).unwrap();
        assert_eq!(bins.index_of(17.0), Some(0));
        assert_eq!(bins.index_of(18.0), Some(1));
        assert_eq!(bins.index_of(64.0), Some(1));
        assert_eq!(bins.index_of(65.0), Some(2));
        let err = AgeBins::from_labels(&labels(&["child", "20-29"])).unwrap_err();
        assert!(err.contains("\"child\""), "{err}");
        assert!(AgeBins::from_labels(&labels(&["30-20"])).is_err());
    }
}
