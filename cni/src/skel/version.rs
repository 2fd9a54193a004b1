//! CNI spec versions this crate speaks, and what each one allows.

use super::error::{Error, Result};

/// Every version we accept, oldest first (also printed by the VERSION command).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version.
pub const CURRENT: &str = "1.1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u8, u8, u8);

impl Version {
    pub fn parse(s: &str) -> Result<Version> {
        if !SUPPORTED.contains(&s) {
            return Err(Error::IncompatibleVersion(format!(
                "cniVersion {s:?} is not supported (supported: {})",
                SUPPORTED.join(", ")
            )));
        }
        let mut parts = s.split('.').map(|p| p.parse::<u8>().unwrap_or(0));
        let mut next = || parts.next().unwrap_or(0);
        Ok(Version(next(), next(), next()))
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version(0, 4, 0)
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Version(1, 1, 0)
    }

    /// Before 1.0.0 every IP config carries `"version": "4"|"6"`.
    pub fn ips_carry_version(self) -> bool {
        self < Version(1, 0, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_round_trips() {
        for s in SUPPORTED {
            assert_eq!(Version::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        for s in ["0.2.0", "1.2.0", "", "1.0", "abc"] {
            assert_eq!(Version::parse(s).unwrap_err().code(), 1, "{s}");
        }
    }

    #[test]
    fn capabilities_follow_the_spec() {
        let v = |s| Version::parse(s).unwrap();
        assert!(!v("0.3.1").has_check());
        assert!(v("0.4.0").has_check());
        assert!(!v("1.0.0").has_status_and_gc());
        assert!(v("1.1.0").has_status_and_gc());
        assert!(v("0.4.0").ips_carry_version());
        assert!(!v("1.0.0").ips_carry_version());
    }
}
