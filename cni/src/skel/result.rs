//! The CNI result ("Success" object), rendered in the shape the requested version expects.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::version::Version;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6"; only written for versions before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// The JSON printed on stdout for `version` (the config's `cniVersion`).
    pub fn render(&self, version: Version) -> Value {
        let mut shaped = self.clone();
        for ip in &mut shaped.ips {
            ip.version = version
                .ips_carry_version()
                .then(|| if ip.address.addr().is_ipv4() { "4" } else { "6" }.to_string());
        }
        let mut v = serde_json::to_value(&shaped).unwrap_or_else(|_| serde_json::json!({}));
        v["cniVersion"] = version.to_string().into();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            ips: vec![IpConfig {
                version: None,
                address: "10.240.0.5/16".parse().unwrap(),
                gateway: Some("10.240.0.1".parse().unwrap()),
                interface: None,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.240.0.1".parse().unwrap()),
            }],
            dns: Dns { nameservers: vec!["168.63.129.16".into()], ..Dns::default() },
            ..CniResult::default()
        }
    }

    #[test]
    fn old_versions_tag_each_ip_with_its_family() {
        let v = sample().render(Version::parse("0.3.1").unwrap());
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][0]["address"], "10.240.0.5/16");
    }

    #[test]
    fn new_versions_do_not() {
        let v = sample().render(Version::parse("1.0.0").unwrap());
        assert!(v["ips"][0].get("version").is_none());
        assert!(v.get("interfaces").is_none(), "IPAM results carry no interfaces");
        assert_eq!(v["routes"][0]["gw"], "10.240.0.1");
        assert_eq!(v["dns"]["nameservers"][0], "168.63.129.16");
    }

    #[test]
    fn a_rendered_result_parses_back() {
        for s in super::super::version::SUPPORTED {
            let v = sample().render(Version::parse(s).unwrap());
            let back: CniResult = serde_json::from_value(v).unwrap();
            assert_eq!(back.ips[0].address, sample().ips[0].address);
        }
    }
}
