//! The endpoint state file (`/var/run/azure-vnet.json`): what the node's bridge took over from
//! `master`, and one record per attached container.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::config::PortMapping;
use super::mac::Mac;
use super::mode::{Attach, Mode};
use super::netlink::RouteSpec;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VnetState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeRecord>,
    /// Keyed by `containerID/ifname`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// Written before the bridge takes over `master`, so a crash midway can be replayed: the
/// addresses and routes are those `master` had, which it may no longer have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's mode: bridge (the bridge took `master` over) or transparent (no bridge).
    #[serde(default)]
    pub mode: Mode,
    pub master: String,
    /// `master`'s MAC: every frame leaving in bridge mode carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_mac: Option<Mac>,
    pub bridge: String,
    pub addresses: Vec<IpNet>,
    pub routes: Vec<RouteSpec>,
    /// True once every step of the takeover has completed.
    pub ready: bool,
    /// Pod subnets whose outbound SNAT is programmed.
    #[serde(default)]
    pub snat_subnets: Vec<IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub network: String,
    pub netns: String,
    pub host_veth: String,
    pub address: IpAddr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub mode: Mode,
    /// What the endpoint's steps are planned from; written before the kernel is touched.
    /// Records from before it existed have none (DEL then removes the veth and port mappings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<Attach>,
    /// The ADD result (shape of cniVersion 1.0.0), returned again on a repeated ADD. Kept as
    /// raw JSON: every call reads the whole file, and only a repeated ADD looks inside one.
    pub result: Box<RawValue>,
}

pub fn endpoint_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}
