//! What the address source (host agent or interfaces file) says the node's NICs hold, and the
//! choice of the pod pool from it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::skel::error::{Error, Result};

/// A hardware address. The host agent writes `000D3A6E4BB2`; sysfs writes `00:0d:3a:6e:4b:b2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let hex: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a MAC address"));
        }
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// One NIC as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub mac: Mac,
    pub is_primary: bool,
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub prefix: IpNet,
    /// The node's own address(es) on this subnet: never handed to pods.
    pub primary: Vec<IpAddr>,
    /// The pod pool.
    pub secondary: Vec<IpAddr>,
}

impl Subnet {
    /// Checks that every address lies inside the prefix and none is listed twice.
    pub fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for addr in self.primary.iter().chain(&self.secondary) {
            if !self.prefix.contains(addr) {
                return Err(Error::BadSourceAnswer(format!(
                    "address {addr} is outside its subnet {}",
                    self.prefix
                )));
            }
            if !seen.insert(addr) {
                return Err(Error::BadSourceAnswer(format!("address {addr} is listed twice")));
            }
        }
        Ok(())
    }
}

/// The pod pool: secondary addresses of the chosen NIC, with the subnet each belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSubnet {
    pub prefix: IpNet,
    pub addresses: Vec<IpAddr>,
}

/// Picks the pool: the NIC matched by MAC (the primary one when several match), optionally
/// narrowed to the configured subnet.
pub fn select_pool(nics: &[Nic], local: &[(String, Mac)], subnet: Option<IpNet>) -> Result<Vec<PoolSubnet>> {
    let matched: Vec<&Nic> = nics.iter().filter(|n| local.iter().any(|(_, m)| *m == n.mac)).collect();
    if matched.is_empty() {
        let offered: Vec<String> = nics.iter().map(|n| n.mac.to_string()).collect();
        let here: Vec<String> = local.iter().map(|(name, m)| format!("{name}={m}")).collect();
        return Err(Error::NoMatchingNic(format!(
            "the source lists [{}], this node has [{}]",
            offered.join(", "),
            here.join(", ")
        )));
    }
    let pool: Vec<PoolSubnet> = match subnet {
        Some(want) => matched
            .iter()
            .flat_map(|n| &n.subnets)
            .filter(|s| s.prefix.trunc() == want.trunc())
            .map(to_pool)
            .collect(),
        None => {
            let nic = matched.iter().find(|n| n.is_primary).unwrap_or(&matched[0]);
            nic.subnets.iter().map(to_pool).collect()
        }
    };
    if let (Some(want), true) = (subnet, pool.is_empty()) {
        return Err(Error::InvalidConfig(format!("subnet {want} is not on any local NIC the source lists")));
    }
    Ok(pool)
}

fn to_pool(s: &Subnet) -> PoolSubnet {
    let mut addresses = s.secondary.clone();
    addresses.sort();
    PoolSubnet { prefix: s.prefix.trunc(), addresses }
}

/// Parses a boolean attribute the way the host agent writes it (`true`/`True`/`false`).
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn nic(m: &str, primary: bool, prefix: &str, addrs: &[&str]) -> Nic {
        Nic {
            mac: mac(m),
            is_primary: primary,
            subnets: vec![Subnet {
                prefix: prefix.parse().unwrap(),
                primary: vec![addrs[0].parse().unwrap()],
                secondary: addrs[1..].iter().map(|a| a.parse().unwrap()).collect(),
            }],
        }
    }

    #[test]
    fn macs_parse_in_every_spelling_and_print_like_sysfs() {
        for s in ["000D3A6E4BB2", "00:0d:3a:6e:4b:b2", "00-0D-3A-6E-4B-B2"] {
            assert_eq!(mac(s).to_string(), "00:0d:3a:6e:4b:b2");
        }
        for bad in ["", "000D3A6E4B", "zz0D3A6E4BB2", "000D3A6E4BB2FF"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pool_is_the_matched_nics_secondaries_without_the_primary() {
        let nics = [nic("000D3A000001", true, "10.240.0.0/16", &["10.240.0.4", "10.240.0.6", "10.240.0.5"])];
        let local = [("eth0".to_string(), mac("00:0d:3a:00:00:01"))];
        let pool = select_pool(&nics, &local, None).unwrap();
        assert_eq!(pool.len(), 1);
        let got: Vec<String> = pool[0].addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["10.240.0.5", "10.240.0.6"]);
    }

    #[test]
    fn the_primary_nic_wins_and_a_subnet_can_be_chosen() {
        let nics = [
            nic("000D3A000001", false, "10.1.0.0/24", &["10.1.0.4", "10.1.0.5"]),
            nic("000D3A000002", true, "10.2.0.0/24", &["10.2.0.4", "10.2.0.5"]),
        ];
        let local = [("eth0".into(), mac("000D3A000001")), ("eth1".into(), mac("000D3A000002"))];
        assert_eq!(select_pool(&nics, &local, None).unwrap()[0].prefix.to_string(), "10.2.0.0/24");
        let chosen = select_pool(&nics, &local, Some("10.1.0.0/24".parse().unwrap())).unwrap();
        assert_eq!(chosen[0].prefix.to_string(), "10.1.0.0/24");
        let err = select_pool(&nics, &local, Some("10.9.0.0/24".parse().unwrap())).unwrap_err();
        assert_eq!(err.code(), 7);
    }

    #[test]
    fn no_matching_mac_is_code_105_and_names_both_sides() {
        let nics = [nic("000D3A000001", true, "10.1.0.0/24", &["10.1.0.4"])];
        let local = [("eth0".into(), mac("02:00:00:00:00:09"))];
        let err = select_pool(&nics, &local, None).unwrap_err();
        assert_eq!(err.code(), 105);
        let msg = err.to_string();
        assert!(msg.contains("00:0d:3a:00:00:01") && msg.contains("eth0=02:00:00:00:00:09"), "{msg}");
    }

    #[test]
    fn addresses_outside_the_subnet_or_repeated_are_rejected() {
        let mut s = nic("000D3A000001", true, "10.1.0.0/24", &["10.1.0.4", "10.2.0.5"]).subnets.remove(0);
        assert_eq!(s.validate().unwrap_err().code(), 104);
        s.secondary = vec!["10.1.0.4".parse().unwrap()];
        assert_eq!(s.validate().unwrap_err().code(), 104);
    }
}
