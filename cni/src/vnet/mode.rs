//! The two ways a pod is put on the VNet, each a `Driver` that plans an endpoint's steps
//! (pure; the node-wide setup each needs is in `node.rs`):
//!
//! ```text
//! bridge:      pod eth0 ── veth ── bridge (took over master) ── master ══ VNet
//!              pod MAC rewritten to master's on the way out, master's to the pod's on the way in
//! transparent: pod eth0 ── veth ── node (routes: default via 169.254.1.1 in the pod,
//!              a /32 per pod on the node) ── master ══ VNet; everything leaves with master's MAC
//! ```

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::config::{PortMapping, VnetConfig};
use super::mac::Mac;
use super::step::Step;
use crate::skel::result::{CniResult, Route};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Bridge,
    Transparent,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Transparent => "transparent",
        }
    }
}

/// The link-local next hop transparent mode's pods route everything through (the host veth).
pub const VIRTUAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// What planning needs to know about the node (from its record: pure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub mode: Mode,
    pub master: String,
    /// Bridge mode: the bridge and its translation table.
    pub bridge: Option<String>,
    pub table: Option<String>,
    pub node_v4: Option<Ipv4Addr>,
    /// The prefixes the node has on the VNet (master's addresses).
    pub subnets: Vec<IpNet>,
    /// Pod subnets whose SNAT is already programmed.
    pub snat_subnets: Vec<IpNet>,
}

/// Everything an endpoint's plan is made of. Recorded with the endpoint before the kernel is
/// touched, so DEL, CHECK and GC re-plan exactly what ADD did, even after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attach {
    pub host_veth: String,
    pub ifname: String,
    pub addresses: Vec<IpNet>,
    /// The pod's routes as the result reports them (gateways filled in).
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    pub tag: String,
    /// Outbound SNAT to program with this endpoint (none: not wanted, or already there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat: Option<Snat>,
}

/// The SNAT chain's content: every pod subnet masqueraded, VNet destinations exempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snat {
    pub subnets: Vec<IpNet>,
    pub vnet: Vec<IpNet>,
}

impl Attach {
    pub fn pod_mac(&self) -> Mac {
        self.addresses.first().map_or(Mac([0x0a, 0x58, 0, 0, 0, 0]), |a| Mac::for_address(a.addr()))
    }

    pub fn host_mac(&self) -> Mac {
        Mac::for_name(&self.host_veth)
    }

    fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.addresses.iter().filter_map(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// First of all, before the pod has a route: its IPv4 addresses held for the policy agent.
    fn holds(&self) -> Vec<Step> {
        self.v4().map(|ip| Step::Hold { ip }).collect()
    }

    fn veth(&self) -> Step {
        Step::Veth {
            host: self.host_veth.clone(),
            host_mac: self.host_mac(),
            ifname: self.ifname.clone(),
            pod_mac: self.pod_mac(),
        }
    }

    /// The node-wide and per-pod NAT steps both modes end with.
    fn nat(&self, masquerade: bool) -> Vec<Step> {
        let mut out = Vec::new();
        if let Some(s) = &self.snat {
            out.push(Step::Snat { subnets: s.subnets.clone(), vnet: s.vnet.clone() });
        }
        if let (false, Some(ip)) = (self.port_mappings.is_empty(), self.addresses.first()) {
            out.push(Step::PortMappings {
                tag: self.tag.clone(),
                ip: ip.addr(),
                mappings: self.port_mappings.clone(),
                masquerade,
            });
        }
        out
    }
}

pub trait Driver {
    fn mode(&self) -> Mode;
    /// The pod's routes for the result, from IPAM's answer and the config.
    fn routes(&self, node: &Node, ipam: &CniResult, cfg: &VnetConfig) -> Vec<Route>;
    /// The gateway the result reports for the pod's addresses.
    fn gateway(&self, ipam_gateway: Option<IpAddr>) -> Option<IpAddr>;
    /// Every step of one endpoint, in the order they are applied.
    fn plan(&self, node: &Node, a: &Attach) -> Vec<Step>;
}

pub struct Bridge;
pub struct Transparent;

pub fn driver(mode: Mode) -> &'static dyn Driver {
    match mode {
        Mode::Bridge => &Bridge,
        Mode::Transparent => &Transparent,
    }
}

impl Driver for Bridge {
    fn mode(&self) -> Mode {
        Mode::Bridge
    }

    /// IPAM's routes with gateways filled in. With outbound SNAT the IPv4 default route goes via
    /// the node, so traffic leaving the VNet passes the node's SNAT; the VNet itself stays one
    /// L2 hop away (the subnet route, through the MAC translation).
    fn routes(&self, node: &Node, ipam: &CniResult, cfg: &VnetConfig) -> Vec<Route> {
        let gateway = ipam.ips.first().and_then(|c| c.gateway);
        let via_node = cfg.snat.then_some(node.node_v4).flatten().map(IpAddr::V4);
        let mut routes: Vec<Route> = ipam
            .routes
            .iter()
            .map(|r| {
                let default_v4 = r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4();
                let gw = if default_v4 { via_node.or(r.gw).or(gateway) } else { r.gw.or(gateway) };
                Route { dst: r.dst, gw }
            })
            .collect();
        for ip in &cfg.ips_via_host {
            routes.push(Route { dst: IpNet::from(*ip), gw: node.node_v4.map(IpAddr::V4) });
        }
        routes
    }

    fn gateway(&self, ipam_gateway: Option<IpAddr>) -> Option<IpAddr> {
        ipam_gateway
    }

    fn plan(&self, node: &Node, a: &Attach) -> Vec<Step> {
        let bridge = node.bridge.clone().unwrap_or_default();
        let ifname = &a.ifname;
        let mut steps = a.holds();
        steps.push(a.veth());
        for address in &a.addresses {
            steps.push(Step::PodAddress { ifname: ifname.clone(), address: *address, prefix_route: true });
        }
        steps.push(Step::PodUp { ifname: ifname.clone() });
        for r in &a.routes {
            steps.push(Step::PodRoute { ifname: ifname.clone(), dst: r.dst, gw: r.gw, link_scope: false });
        }
        steps.push(Step::HostOnBridge { host: a.host_veth.clone(), bridge: bridge.clone() });
        steps.push(Step::HostUp { host: a.host_veth.clone() });
        let mac = a.pod_mac();
        for ip in a.v4() {
            steps.push(Step::BridgeNeighbour { bridge: bridge.clone(), ip: ip.into(), mac });
            if let Some(table) = &node.table {
                steps.push(Step::Translation { table: table.clone(), ip, mac });
            }
        }
        // The pod answers VNet clients of its port mappings directly (it is on the VNet's L2),
        // so those connections are masqueraded to come back through the node.
        steps.extend(a.nat(true));
        steps
    }
}

impl Driver for Transparent {
    fn mode(&self) -> Mode {
        Mode::Transparent
    }

    /// Everything goes to the node: one default route via 169.254.1.1 (plus IPv6 defaults as
    /// IPAM gives them).
    fn routes(&self, _node: &Node, ipam: &CniResult, _cfg: &VnetConfig) -> Vec<Route> {
        let mut routes = vec![Route { dst: IpNet::V4(Ipv4Net::default()), gw: Some(VIRTUAL_GATEWAY.into()) }];
        routes.extend(ipam.routes.iter().filter(|r| r.dst.addr().is_ipv6()).cloned());
        routes
    }

    fn gateway(&self, _ipam_gateway: Option<IpAddr>) -> Option<IpAddr> {
        Some(VIRTUAL_GATEWAY.into())
    }

    fn plan(&self, _node: &Node, a: &Attach) -> Vec<Step> {
        let ifname = &a.ifname;
        let gateway_net = IpNet::V4(Ipv4Net::from(VIRTUAL_GATEWAY));
        let mut steps = a.holds();
        steps.push(a.veth());
        // No prefix route: nothing is on-link for the pod but the virtual gateway.
        for address in &a.addresses {
            steps.push(Step::PodAddress { ifname: ifname.clone(), address: *address, prefix_route: false });
        }
        steps.push(Step::PodUp { ifname: ifname.clone() });
        steps.push(Step::PodRoute { ifname: ifname.clone(), dst: gateway_net, gw: None, link_scope: true });
        steps.push(Step::PodNeighbour {
            ifname: ifname.clone(),
            ip: VIRTUAL_GATEWAY.into(),
            mac: a.host_mac(),
        });
        for r in &a.routes {
            steps.push(Step::PodRoute { ifname: ifname.clone(), dst: r.dst, gw: r.gw, link_scope: false });
        }
        steps.push(Step::HostUp { host: a.host_veth.clone() });
        for address in &a.addresses {
            let host_route = IpNet::new(address.addr(), address.max_prefix_len()).unwrap_or(*address);
            steps.push(Step::HostRoute { host: a.host_veth.clone(), dst: host_route });
        }
        // Replies to port-mapped connections come back through the node anyway (all pod
        // traffic is routed by it), so the client's address is kept.
        steps.extend(a.nat(false));
        steps
    }
}

#[cfg(test)]
mod tests;
