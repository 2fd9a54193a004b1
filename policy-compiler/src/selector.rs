//! Label selectors: `matchLabels` and every `matchExpressions` operator, ANDed together.

use crate::model::Labels;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

/// An empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::In(values) => value.is_some_and(|v| values.contains(v)),
            // A missing key is "not in" any set; several values are ANDed (not equal to any).
            Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            // An empty value still exists.
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

impl Selector {
    /// `matchLabels` entries become `In` requirements with one value.
    pub fn from_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Selector {
        Selector {
            requirements: pairs
                .into_iter()
                .map(|(k, v)| Requirement { key: k.to_string(), op: Op::In(vec![v.to_string()]) })
                .collect(),
        }
        .canonical()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The same selector in one canonical form (values and requirements sorted, repeats
    /// dropped), so equal selectors compare equal and name the same set.
    pub fn canonical(&self) -> Selector {
        let mut requirements: Vec<Requirement> = self
            .requirements
            .iter()
            .map(|r| {
                let op = match &r.op {
                    Op::In(v) => Op::In(sorted_values(v)),
                    Op::NotIn(v) => Op::NotIn(sorted_values(v)),
                    other => other.clone(),
                };
                Requirement { key: r.key.clone(), op }
            })
            .collect();
        requirements.sort();
        requirements.dedup();
        Selector { requirements }
    }
}

impl std::fmt::Display for Selector {
    /// A canonical text (requirements sorted), used in set keys and explanations.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                Op::In(v) if v.len() == 1 => format!("{}={}", r.key, v[0]),
                Op::In(v) => format!("{} in ({})", r.key, sorted(v)),
                Op::NotIn(v) => format!("{} notin ({})", r.key, sorted(v)),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        parts.sort();
        parts.dedup();
        write!(f, "{{{}}}", parts.join(","))
    }
}

fn sorted(values: &[String]) -> String {
    sorted_values(values).join(",")
}

fn sorted_values(values: &[String]) -> Vec<String> {
    let mut v = values.to_vec();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: Op) -> Selector {
        Selector { requirements: vec![Requirement { key: key.into(), op }] }
    }

    fn vals(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_empty_selector_matches_everything() {
        assert!(Selector::default().matches(&labels(&[])));
        assert!(Selector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn not_in_matches_a_missing_key_and_ands_its_values() {
        let s = req("env", Op::NotIn(vals(&["prod", "staging"])));
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "staging")])));
    }

    #[test]
    fn exists_matches_an_empty_value_and_does_not_exist_its_absence() {
        assert!(req("x", Op::Exists).matches(&labels(&[("x", "")])));
        assert!(!req("x", Op::Exists).matches(&labels(&[])));
        assert!(req("x", Op::DoesNotExist).matches(&labels(&[("y", "1")])));
        assert!(!req("x", Op::DoesNotExist).matches(&labels(&[("x", "")])));
    }

    #[test]
    fn requirements_and_together() {
        let mut s = Selector::from_labels([("app", "web")]);
        s.requirements.push(Requirement { key: "tier".into(), op: Op::In(vals(&["a", "b"])) });
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("tier", "a")])));
    }
}
