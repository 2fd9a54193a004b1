//! The benches' command-line numbers: one way to read them and one way to refuse them (a
//! value out of range is an error naming the flag and the range, never silently clamped).

use std::ops::RangeInclusive;

/// `value`, the word after `flag`, as a whole number within `range`.
pub fn number(flag: &str, value: Option<String>, range: RangeInclusive<usize>) -> Result<usize, String> {
    let value =
        value.ok_or_else(|| format!("{flag} needs a number from {} to {}", range.start(), range.end()))?;
    match value.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("{flag} {value:?}: expected a number from {} to {}", range.start(), range.end())),
    }
}

/// `value` as a comma-separated list of such numbers (at least one).
pub fn numbers(
    flag: &str,
    value: Option<String>,
    range: RangeInclusive<usize>,
) -> Result<Vec<usize>, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a list like 50,250"))?;
    value.split(',').map(|v| number(flag, Some(v.trim().to_string()), range.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_out_of_range_or_missing_are_refused_with_the_flag_and_range() {
        assert_eq!(number("--rounds", Some("3".into()), 1..=100), Ok(3));
        let zero = number("--rounds", Some("0".into()), 1..=100).unwrap_err();
        assert!(zero.contains("--rounds") && zero.contains("1 to 100"), "{zero}");
        assert!(number("--rounds", Some("x".into()), 1..=100).is_err());
        assert!(number("--rounds", None, 1..=100).unwrap_err().contains("needs a number"));
        assert_eq!(numbers("--pods", Some("50, 250".into()), 1..=250), Ok(vec![50, 250]));
        assert!(numbers("--pods", Some("50,251".into()), 1..=250).unwrap_err().contains("\"251\""));
        assert!(numbers("--pods", Some(String::new()), 1..=250).is_err());
    }
}
