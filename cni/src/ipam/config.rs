//! The `ipam` section of the network config, validated into [`IpamConfig`].
//!
//! Fields are read by hand rather than through serde so that a wrong type is reported with
//! the field's name (code 7), and unknown fields are only logged.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};
use tracing::Level;

use super::http::HttpUrl;
use crate::fields::{invalid, Section};
use crate::logging;
use crate::skel::error::Result;
use crate::skel::Request;

pub const DEFAULT_QUERY_URL: &str =
    "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1";
pub const DEFAULT_INTERFACES_FILE: &str = "/etc/kubernetes/interfaces.json";
pub const DEFAULT_STATE_FILE: &str = "/var/run/azure-vnet-ipam.json";
pub const DEFAULT_LOG_FILE: &str = "/var/log/azure-vnet-ipam.log";
/// The DNS server every Azure VNet address gets.
pub const AZURE_DNS: &str = "168.63.129.16";

const KNOWN_KEYS: &[&str] = &[
    "type",
    "environment",
    "queryUrl",
    "interfacesFile",
    "subnet",
    "stateFile",
    "logFile",
    "logLevel",
    "lockTimeoutMs",
    "queryTimeoutMs",
    "refreshIntervalMs",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// NMAgent XML over HTTP.
    Azure { url: HttpUrl },
    /// Azure Stack: the interfaces JSON file.
    Mas { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub source: Source,
    pub subnet: Option<IpNet>,
    pub state_file: PathBuf,
    pub log_file: PathBuf,
    pub log_level: Level,
    pub lock_timeout: Duration,
    pub query_timeout: Duration,
    pub refresh_interval: Duration,
}

impl IpamConfig {
    pub fn from_network_config(config: &Map<String, Value>) -> Result<IpamConfig> {
        let top = Section::new(config, "");
        let ipam = Section::new(top.object("ipam")?.ok_or_else(|| invalid("ipam is required"))?, "ipam.");
        ipam.note_unknown(KNOWN_KEYS);
        let source = match ipam.string("environment")?.unwrap_or("azure") {
            "azure" => {
                Source::Azure { url: HttpUrl::parse(ipam.string("queryUrl")?.unwrap_or(DEFAULT_QUERY_URL))? }
            }
            "mas" => Source::Mas {
                path: PathBuf::from(ipam.string("interfacesFile")?.unwrap_or(DEFAULT_INTERFACES_FILE)),
            },
            other => {
                return Err(invalid(format!(
                    "ipam.environment {other:?} is unknown (expected \"azure\" or \"mas\")"
                )))
            }
        };
        let log_level = match ipam.string("logLevel")?.or(top.string("logLevel")?) {
            Some(s) => logging::parse_level(s)?,
            None => Level::INFO,
        };
        Ok(IpamConfig {
            source,
            subnet: ipam.parsed("subnet", "a CIDR")?,
            state_file: PathBuf::from(ipam.string("stateFile")?.unwrap_or(DEFAULT_STATE_FILE)),
            log_file: PathBuf::from(ipam.string("logFile")?.unwrap_or(DEFAULT_LOG_FILE)),
            log_level,
            lock_timeout: ipam.millis("lockTimeoutMs", 10_000)?,
            query_timeout: ipam.millis("queryTimeoutMs", 5_000)?,
            refresh_interval: ipam.millis("refreshIntervalMs", 10_000)?,
        })
    }
}

/// The address the caller asked for, if any: `runtimeConfig.ips` (the `ips` capability),
/// `args.cni.ips`, or `IP=` in `CNI_ARGS`. A prefix length, if given, is kept for checking.
pub fn requested_address(req: &Request) -> Result<Option<(IpAddr, Option<u8>)>> {
    let from_runtime = req.config.get("runtimeConfig").and_then(|r| r.get("ips"));
    let from_args = req.config.get("args").and_then(|a| a.get("cni")).and_then(|c| c.get("ips"));
    let mut wanted: Vec<String> = Vec::new();
    for (name, list) in [("runtimeConfig.ips", from_runtime), ("args.cni.ips", from_args)] {
        match list {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let s = item.as_str().ok_or_else(|| invalid(format!("{name} must hold strings")))?;
                    wanted.push(s.to_string());
                }
            }
            Some(_) => return Err(invalid(format!("{name} must be an array of strings"))),
        }
    }
    if let Some(ip) = req.env.arg("IP") {
        wanted.push(ip.to_string());
    }
    wanted.dedup();
    match wanted.as_slice() {
        [] => Ok(None),
        [one] => parse_requested(one).map(Some),
        many => Err(invalid(format!(
            "requested addresses {many:?}: azure-vnet-ipam gives one address per attachment"
        ))),
    }
}

fn parse_requested(s: &str) -> Result<(IpAddr, Option<u8>)> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok((net.addr(), Some(net.prefix_len())));
    }
    s.parse::<IpAddr>()
        .map(|a| (a, None))
        .map_err(|_| invalid(format!("requested address {s:?} is not an IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(ipam: Value) -> Result<IpamConfig> {
        let v = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "ipam": ipam});
        IpamConfig::from_network_config(v.as_object().unwrap())
    }

    #[test]
    fn defaults_are_azures_paths() {
        let c = parse(json!({"type": "azure-vnet-ipam"})).unwrap();
        assert_eq!(c.source, Source::Azure { url: HttpUrl::parse(DEFAULT_QUERY_URL).unwrap() });
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        assert_eq!(c.log_file, PathBuf::from(DEFAULT_LOG_FILE));
        assert_eq!(c.refresh_interval, Duration::from_secs(10));
        let c = parse(json!({"type": "azure-vnet-ipam", "environment": "mas"})).unwrap();
        assert_eq!(c.source, Source::Mas { path: DEFAULT_INTERFACES_FILE.into() });
    }

    #[test]
    fn every_override_is_honoured() {
        let c = parse(
            json!({"environment": "azure", "queryUrl": "http://10.0.0.1:8080/x", "subnet": "10.1.0.0/16",
            "stateFile": "/tmp/s.json", "logFile": "/tmp/l.log", "logLevel": "debug", "lockTimeoutMs": 50,
            "queryTimeoutMs": 60, "refreshIntervalMs": 0, "somethingNew": true}),
        )
        .unwrap();
        assert_eq!(c.subnet, Some("10.1.0.0/16".parse().unwrap()));
        assert_eq!(c.log_level, Level::DEBUG);
        assert_eq!(
            (c.lock_timeout.as_millis(), c.query_timeout.as_millis(), c.refresh_interval.as_millis()),
            (50, 60, 0)
        );
    }

    #[test]
    fn bad_fields_are_code_7_and_named() {
        let cases = [
            (json!({"environment": "gcp"}), "environment"),
            (json!({"environment": 5}), "environment"),
            (json!({"queryUrl": "https://x/"}), "queryUrl"),
            (json!({"subnet": "10.0.0.0/40"}), "subnet"),
            (json!({"stateFile": ""}), "stateFile"),
            (json!({"logLevel": "loud"}), "logLevel"),
            (json!({"lockTimeoutMs": -1}), "lockTimeoutMs"),
            (json!({"lockTimeoutMs": "10s"}), "lockTimeoutMs"),
            (json!("azure"), "ipam"),
        ];
        for (ipam, field) in cases {
            let err = parse(ipam.clone()).unwrap_err();
            assert_eq!(err.code(), 7, "{ipam}");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }
}
