//! A task's label set: canonical label names plus synonyms, matched after normalisation, so
//! "happy", "Happiness" and "joy" all mean `happiness`.

use std::collections::{BTreeMap, HashMap};

/// Canonical labels in a fixed order, with a lookup from every accepted spelling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSet {
    values: Vec<String>,
    lookup: HashMap<String, usize>,
}

/// Lowercase, trim, turn `_` into a space, collapse runs of whitespace and drop trailing
/// sentence punctuation. Hyphens stay: "10-19" is a label, not two numbers.
pub fn normalize(text: &str) -> String {
    let lowered = text.trim().to_lowercase().replace('_', " ");
    let collapsed = lowered.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed
        .trim_end_matches(['.', '!', ',', ';', ':'])
        .trim()
        .to_string()
}

impl LabelSet {
    /// Build a label set. A synonym that points at an unknown label, or a spelling that maps
    /// to two labels, is an error naming both.
    pub fn new(
        values: &[String],
        synonyms: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let mut set = LabelSet {
            values: values.to_vec(),
            lookup: HashMap::new(),
        };
        for (i, v) in values.iter().enumerate() {
            set.insert(v, i)?;
        }
        for (label, spellings) in synonyms {
            let Some(i) = values.iter().position(|v| v == label) else {
                return Err(format!(
                    "synonyms are given for \"{label}\", which is not in labels.values ({})",
                    values.join(", ")
                ));
            };
            for s in spellings {
                set.insert(s, i)?;
            }
        }
        Ok(set)
    }

    fn insert(&mut self, spelling: &str, index: usize) -> Result<(), String> {
        let key = normalize(spelling);
        match self.lookup.insert(key.clone(), index) {
            Some(prev) if prev != index => Err(format!(
                "\"{spelling}\" would mean both \"{}\" and \"{}\"",
                self.values[prev], self.values[index]
            )),
            _ => Ok(()),
        }
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The canonical label for any accepted spelling.
    pub fn canonical(&self, text: &str) -> Option<&str> {
        self.index_of(text).map(|i| self.values[i].as_str())
    }

    pub fn index_of(&self, text: &str) -> Option<usize> {
        self.lookup.get(&normalize(text)).copied()
    }

    /// Every accepted spelling (normalised) with its label index, longest first, for
    /// extractors that look for a label inside free text.
    pub fn spellings_longest_first(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> =
            self.lookup.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_map_to_canonical() {
        let values = vec!["happiness".to_string(), "sadness".to_string()];
        let mut syn = BTreeMap::new();
        syn.insert(
            "happiness".to_string(),
            vec!["happy".to_string(), "Joy".to_string()],
        );
        let set = LabelSet::new(&values, &syn).unwrap();
        assert_eq!(set.canonical(" Happy. "), Some("happiness"));
        assert_eq!(set.canonical("JOY"), Some("happiness"));
        assert_eq!(set.canonical("sadness"), Some("sadness"));
        assert_eq!(set.canonical("anger"), None);
    }

    #[test]
    fn conflicting_synonym_is_an_error() {
        let values = vec!["a".to_string(), "b".to_string()];
        let mut syn = BTreeMap::new();
        syn.insert("b".to_string(), vec!["A".to_string()]);
        let err = LabelSet::new(&values, &syn).unwrap_err();
        assert!(err.contains("both"), "{err}");
        let mut syn = BTreeMap::new();
        syn.insert("c".to_string(), vec!["x".to_string()]);
        assert!(LabelSet::new(&values, &syn)
            .unwrap_err()
            .contains("not in labels.values"));
    }

    #[test]
    fn underscores_and_case_normalise() {
        let values = vec!["Latino_Hispanic".to_string()];
        let set = LabelSet::new(&values, &BTreeMap::new()).unwrap();
        assert_eq!(set.canonical("latino hispanic"), Some("Latino_Hispanic"));
    }
}
