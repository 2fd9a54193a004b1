//! MAC addresses as the plugin records them (`aa:bb:cc:dd:ee:ff` in state files and results).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A pod's MAC, derived from its address: `0a:58` + the last four bytes (the reference
    /// plugins' convention). An address that is reused keeps its MAC, so the neighbour entries
    /// other pods and the node hold for it stay right; addresses are unique on the VNet, so
    /// MACs are unique on the bridge.
    pub fn for_address(ip: IpAddr) -> Mac {
        let tail: [u8; 4] = match ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        Mac([0x0a, 0x58, tail[0], tail[1], tail[2], tail[3]])
    }

    /// A host-side veth MAC from a name (locally administered, unicast, stable across retries).
    pub fn for_name(name: &str) -> Mac {
        let d = sha1_smol::Sha1::from(name).digest().bytes();
        Mac([0x02, d[0], d[1], d[2], d[3], d[4]])
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<u8> = s
            .split(':')
            .map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).ok() } else { None })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
        Mac::from_slice(&parts).ok_or_else(|| format!("{s:?} is not a MAC address"))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_macs_follow_the_address_and_host_macs_the_name() {
        let m = Mac::for_address("10.240.1.5".parse().unwrap());
        assert_eq!(m.to_string(), "0a:58:0a:f0:01:05");
        assert_eq!(m.to_string().parse::<Mac>().unwrap(), m);
        let h = Mac::for_name("azv0123");
        assert_eq!(h, Mac::for_name("azv0123"));
        assert_ne!(h, Mac::for_name("azv0124"));
        assert_eq!(h.0[0] & 0x03, 0x02, "locally administered unicast");
        assert!("0a:58:0a".parse::<Mac>().is_err());
        assert!("zz:58:0a:f0:01:05".parse::<Mac>().is_err());
    }
}
