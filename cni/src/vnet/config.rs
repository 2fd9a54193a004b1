//! The azure-vnet network configuration (Azure's field names), validated before any kernel work.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::Level;

use crate::fields::{invalid, Section};
use crate::logging;
use crate::skel::error::Result;
use crate::skel::result::Dns;

pub use super::mode::Mode;

pub const DEFAULT_STATE_FILE: &str = "/var/run/azure-vnet.json";
pub const DEFAULT_LOG_FILE: &str = "/var/log/azure-vnet.log";

const KNOWN_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "mode",
    "master",
    "bridge",
    "logLevel",
    "logFile",
    "stateFile",
    "lockTimeoutMs",
    "ipam",
    "dns",
    "capabilities",
    "runtimeConfig",
    "args",
    "prevResult",
    "ipsToRouteViaHost",
    "enableSnatOnHost",
    "vnetCidrs",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `portMappings` entry: host port (optionally on one host address) to the pod's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct VnetConfig {
    pub mode: Mode,
    pub master: Option<String>,
    pub bridge: Option<String>,
    pub ipam_type: String,
    pub state_file: PathBuf,
    pub log_file: PathBuf,
    pub log_level: Level,
    pub lock_timeout: Duration,
    /// `dns` from the config, overridden field by field by the runtime's `dns` capability.
    pub dns: Dns,
    pub port_mappings: Vec<PortMapping>,
    pub ips_via_host: Vec<IpAddr>,
    /// Destinations inside the VNet: not SNATed. Empty means "the pod's subnet".
    pub vnet_cidrs: Vec<IpNet>,
    pub snat: bool,
}

impl VnetConfig {
    pub fn parse(config: &Map<String, Value>) -> Result<VnetConfig> {
        let top = Section::new(config, "");
        top.note_unknown(KNOWN_KEYS);
        let mode = match top.string("mode")?.unwrap_or("bridge") {
            "bridge" => Mode::Bridge,
            "transparent" => Mode::Transparent,
            other => {
                return Err(invalid(format!(
                    "mode {other:?} is unknown (expected \"bridge\" or \"transparent\")"
                )))
            }
        };
        let master = top.string("master")?.map(str::to_string);
        if let Some(m) = &master {
            check_ifname("master", m)?;
        }
        let bridge = top.string("bridge")?.map(str::to_string);
        if let Some(b) = &bridge {
            check_ifname("bridge", b)?;
            if mode == Mode::Transparent {
                tracing::debug!("bridge {b:?} is ignored in transparent mode (there is no bridge)");
            }
        }
        if let (Some(m), Some(b)) = (&master, &bridge) {
            if m == b {
                return Err(invalid(format!("master {m:?} is the bridge itself; name the VNet interface")));
            }
        }
        let ipam = Section::new(top.object("ipam")?.ok_or_else(|| invalid("ipam is required"))?, "ipam.");
        let ipam_type = ipam.string("type")?.ok_or_else(|| invalid("ipam.type is required"))?;
        if ipam_type.contains('/') || ipam_type.starts_with('.') {
            return Err(invalid(format!("ipam.type {ipam_type:?} must be a plugin name, not a path")));
        }
        let runtime = top.object("runtimeConfig")?.map(|m| Section::new(m, "runtimeConfig."));
        let mut dns = parse_dns(top.object("dns")?)?;
        if let Some(rt_dns) = runtime.map(|r| r.object("dns")).transpose()?.flatten() {
            merge_runtime_dns(&mut dns, Section::new(rt_dns, "runtimeConfig.dns."))?;
        }
        let port_mappings = match runtime {
            Some(r) => r.array("portMappings")?.iter().map(parse_mapping).collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(VnetConfig {
            mode,
            master,
            bridge,
            ipam_type: ipam_type.to_string(),
            state_file: PathBuf::from(top.string("stateFile")?.unwrap_or(DEFAULT_STATE_FILE)),
            log_file: PathBuf::from(top.string("logFile")?.unwrap_or(DEFAULT_LOG_FILE)),
            log_level: top.string("logLevel")?.map_or(Ok(Level::INFO), logging::parse_level)?,
            lock_timeout: top.millis("lockTimeoutMs", 10_000)?,
            dns,
            port_mappings,
            ips_via_host: parse_list(&top, "ipsToRouteViaHost", "an IP address")?,
            vnet_cidrs: parse_list(&top, "vnetCidrs", "a CIDR")?,
            snat: top.boolean("enableSnatOnHost", true)?,
        })
    }
}

/// Interface names: 1–15 bytes, no `/`, `:` or whitespace.
pub fn check_ifname(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid(format!("{field} is empty")));
    }
    if name.len() > 15 {
        return Err(invalid(format!("{field} {name:?} is longer than 15 characters")));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(invalid(format!("{field} {name:?} is not a valid interface name")));
    }
    Ok(())
}

fn parse_list<T: std::str::FromStr>(s: &Section, key: &str, what: &str) -> Result<Vec<T>> {
    s.strings(key)?
        .iter()
        .map(|v| v.parse().map_err(|_| invalid(format!("{}{key}: {v:?} is not {what}", s.path))))
        .collect()
}

fn parse_dns(m: Option<&Map<String, Value>>) -> Result<Dns> {
    let Some(m) = m else { return Ok(Dns::default()) };
    let s = Section::new(m, "dns.");
    Ok(Dns {
        nameservers: s.strings("nameservers")?,
        domain: s.string("domain")?.unwrap_or_default().to_string(),
        search: s.strings("search")?,
        options: s.strings("options")?,
    })
}

/// The runtime's `dns` capability uses `servers`/`searches`/`options`; each one given wins.
fn merge_runtime_dns(dns: &mut Dns, s: Section) -> Result<()> {
    let servers = s.strings("servers")?;
    if !servers.is_empty() {
        dns.nameservers = servers;
    }
    let searches = s.strings("searches")?;
    if !searches.is_empty() {
        dns.search = searches;
    }
    let options = s.strings("options")?;
    if !options.is_empty() {
        dns.options = options;
    }
    Ok(())
}

fn parse_mapping(v: &Value) -> Result<PortMapping> {
    let m = v.as_object().ok_or_else(|| invalid("runtimeConfig.portMappings entries must be objects"))?;
    let port = |key: &str| -> Result<u16> {
        m.get(key).and_then(Value::as_u64).filter(|p| (1..=65535).contains(p)).map(|p| p as u16).ok_or_else(
            || invalid(format!("runtimeConfig.portMappings: {key} must be a port 1-65535 in {v}")),
        )
    };
    let protocol = match m.get("protocol").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(p) => {
            return Err(invalid(format!("runtimeConfig.portMappings: protocol {p:?} must be tcp or udp")))
        }
    };
    let host_ip = match m.get("hostIP").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| {
            invalid(format!("runtimeConfig.portMappings: hostIP {s:?} is not an IP address"))
        })?),
    };
    Ok(PortMapping {
        host_port: port("hostPort")?,
        container_port: port("containerPort")?,
        protocol,
        host_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<VnetConfig> {
        VnetConfig::parse(v.as_object().unwrap())
    }

    fn sample() -> Value {
        json!({"cniVersion": "1.0.0", "name": "azure", "type": "azure-vnet", "mode": "bridge", "master": "eth0",
               "bridge": "azure0", "logLevel": "info", "ipam": {"type": "azure-vnet-ipam", "environment": "azure"}})
    }

    #[test]
    fn the_seed_sample_parses_with_azures_defaults() {
        let c = parse(sample()).unwrap();
        assert_eq!((c.master.as_deref(), c.bridge.as_deref()), (Some("eth0"), Some("azure0")));
        assert_eq!(c.ipam_type, "azure-vnet-ipam");
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        assert_eq!(c.log_file, PathBuf::from(DEFAULT_LOG_FILE));
        assert!(c.snat && c.port_mappings.is_empty());
    }

    #[test]
    fn capabilities_arrive_through_runtime_config() {
        let mut v = sample();
        v["dns"] = json!({"nameservers": ["168.63.129.16"], "search": ["svc.cluster.local"]});
        v["runtimeConfig"] = json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
                             {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "10.240.0.4"}],
            "dns": {"servers": ["10.0.0.10"], "options": ["ndots:5"]}});
        let c = parse(v).unwrap();
        assert_eq!(c.port_mappings.len(), 2);
        assert_eq!(c.port_mappings[1].protocol, Protocol::Udp);
        assert_eq!(c.dns.nameservers, ["10.0.0.10"]);
        assert_eq!(c.dns.search, ["svc.cluster.local"]);
        assert_eq!(c.dns.options, ["ndots:5"]);
    }

    #[test]
    fn bad_configs_are_code_7_naming_the_problem() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("mode", json!("macvlan"), "mode"),
            ("mode", json!("Bridge"), "mode"),
            ("bridge", json!("a-bridge-name-too-long"), "bridge"),
            ("master", json!("eth/0"), "master"),
            ("ipam", json!({"environment": "azure"}), "ipam.type"),
            ("ipam", json!({"type": "../evil"}), "ipam.type"),
            ("runtimeConfig", json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]}), "hostPort"),
            (
                "runtimeConfig",
                json!({"portMappings": [{"hostPort": 1, "containerPort": 80, "protocol": "icmp"}]}),
                "protocol",
            ),
            ("ipsToRouteViaHost", json!(["nope"]), "ipsToRouteViaHost"),
            ("enableSnatOnHost", json!("yes"), "enableSnatOnHost"),
        ];
        for (key, value, needle) in cases {
            let mut v = sample();
            v[key] = value;
            let err = parse(v).unwrap_err();
            assert_eq!(err.code(), 7, "{key}");
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }
}
