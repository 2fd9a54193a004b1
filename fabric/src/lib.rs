//! An Azure VNet in a network namespace, for tests, benchmarks and the lab.
//!
//! ```text
//!  node ns ─ eth0 (NIC MAC) ══ veth ══ port (12:34:56:78:9a:bc) ─┐
//!  node ns ─ eth0 (NIC MAC) ══ veth ══ port (12:34:56:78:9a:bc) ─┼─ fabric ns: routes by owned IP,
//!                                                                │  proxy ARP, netdev anti-spoofing
//!                                             uplink ══ veth ════┘  (the "internet", optional)
//! ```
//!
//! The rules of Azure's network this fabric enforces (and `tests/rules.rs` checks, one by one):
//! 1. **One ARP answer for everything.** The host answers every ARP request a VM sends, whatever
//!    address it asks for, with 12:34:56:78:9a:bc: every port carries that MAC and answers by
//!    proxy ARP (`proxy_arp` + `proxy_arp_pvlan`, no proxy delay); unowned VNet addresses are
//!    routed to a sink so they are answered too. Broadcast and multicast are never forwarded
//!    (the fabric routes; it does not switch).
//! 2. **Delivery by destination IP** to the NIC that owns the address (its primary or a
//!    secondary), with that NIC's MAC as destination: one `/32` route per owned address via the
//!    NIC's primary, whose neighbour entry is permanent (the fabric never ARPs a VM). Packets for
//!    addresses nobody owns are dropped and counted (`unowned`).
//! 3. **Anti-spoofing.** On each port's ingress (a netdev chain), frames whose source MAC is not
//!    the NIC's, ARP whose sender hardware or protocol address is not the NIC's, and IPv4 whose
//!    source is not one of the NIC's addresses are dropped and counted per port (IP forwarding
//!    is off on AKS nodes' NICs). Frames not addressed to the host's MAC (or broadcast, for ARP),
//!    IPv4 to broadcast or multicast, and any other protocol are dropped and counted too.
//!
//! Known differences from Azure: the fabric decrements the IPv4 TTL (it is a router) and answers
//! pings to the gateway; IPv6 is not carried. `Kind::Switch` is the old learning switch, kept as
//! an explicitly named option for comparisons: it enforces none of the rules.
//!
//! The fabric configures namespaces its caller created (and removes); it runs `ip`, `sysctl`
//! and `nft` inside them only, never in the root namespace.

mod counters;
mod render;
mod run;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use counters::{table, Counters, PortCounters};

/// The MAC the Azure host answers every ARP request with, and the source of every frame it delivers.
pub const HOST_MAC: &str = "12:34:56:78:9a:bc";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    #[error("invalid fabric input: {0}")]
    Invalid(String),
    #[error("unreadable nft counters: {0}")]
    Counters(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// Azure's rules (the default everywhere).
    #[default]
    Azure,

    /// A plain learning switch: no rules, for comparisons only.
    Switch,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        match s {
            "azure" => Ok(Kind::Azure),
            "switch" => Ok(Kind::Switch),
            other => Err(Error::Invalid(format!("VNet kind {other:?} (expected azure or switch)"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Azure => "azure",
            Kind::Switch => "switch",
        }
    }
}

/// The VNet: its address space and gateway.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: Kind,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A VM's NIC on the VNet: the port's name in the fabric, the NIC's MAC and its addresses.
#[derive(Debug, Clone)]
pub struct Nic {
    pub port: String,
    pub mac: String,
    pub primary: Ipv4Addr,
    pub secondaries: Vec<Ipv4Addr>,
}

impl Nic {
    pub fn owned(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        std::iter::once(self.primary).chain(self.secondaries.iter().copied())
    }
}

/// A link from the fabric to a namespace outside the VNet (the "internet"): `local` is the
/// fabric's address on it, `peer` the other side's; the fabric's default route goes there and
/// the peer routes the VNet back through the fabric.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub peer_ns: String,
    pub local: Ipv4Net,
    pub peer: Ipv4Net,
}

/// A handle on a fabric namespace (cheap: it holds the names only, so a later process can
/// reopen a fabric another one built).
#[derive(Debug, Clone)]
pub struct Fabric {
    pub ns: String,
    pub kind: Kind,
    pub spec: Spec,
}

impl Fabric {
    /// Turns the (empty, caller-owned) namespace `ns` into the VNet.
    pub fn create(ns: &str, spec: &Spec) -> Result<Fabric> {
        if !spec.subnet.contains(&spec.gateway) {
            return Err(Error::Invalid(format!("gateway {} is outside {}", spec.gateway, spec.subnet)));
        }
        let fabric = Fabric::open(ns, spec.clone());
        run::sysctl(ns, &render::fabric_sysctls(spec.kind))?;
        run::ip_batch(ns, &render::fabric_links(spec))?;
        if spec.kind == Kind::Azure {
            run::nft(ns, &render::fabric_tables())?;
        }
        Ok(fabric)
    }

    pub fn open(ns: &str, spec: Spec) -> Fabric {
        Fabric { ns: ns.to_string(), kind: spec.kind, spec }
    }

    /// Plugs `nic` in: `ifname` (with the NIC's MAC, up) in `node_ns`, its peer in the fabric.
    pub fn plug(&self, node_ns: &str, ifname: &str, nic: &Nic) -> Result<()> {
        render::check_port(&nic.port)?;
        let port_mac = match self.kind {
            Kind::Azure => HOST_MAC.to_string(),
            Kind::Switch => render::switch_port_mac(&nic.port),
        };
        run::ip(
            node_ns,
            &[
                "link", "add", ifname, "address", &nic.mac, "type", "veth", "peer", "name", &nic.port,
                "address", &port_mac, "netns", &self.ns,
            ],
        )?;
        run::ip(node_ns, &["link", "set", ifname, "up"])?;
        match self.kind {
            Kind::Azure => {
                run::sysctl(&self.ns, &render::port_sysctls(&nic.port))?;
                run::ip_batch(&self.ns, &render::port_links(nic))?;
                run::nft(&self.ns, &render::port_rules(nic))
            }
            Kind::Switch => run::ip_batch(&self.ns, &render::switch_port(&nic.port)),
        }
    }

    /// Replaces the addresses `nic` owns (a host-agent pool change): routes and the spoofing set.
    pub fn set_owned(&self, nic: &Nic) -> Result<()> {
        if self.kind == Kind::Switch {
            return Ok(());
        }
        run::ip(&self.ns, &["route", "flush", "dev", &nic.port])?;
        run::ip_batch(&self.ns, &render::port_routes(nic))?;
        run::nft(&self.ns, &render::owned_set(nic))
    }

    pub fn uplink(&self, up: &Uplink) -> Result<()> {
        run::ip(
            &self.ns,
            &["link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", &up.peer_ns],
        )?;
        run::ip_batch(&self.ns, &render::uplink_fabric_side(up))?;
        run::ip_batch(&up.peer_ns, &render::uplink_peer_side(up, self.spec.subnet))
    }

    /// The drop counters of every port (all zero on a switch, which drops nothing).
    pub fn counters(&self) -> Result<Counters> {
        if self.kind == Kind::Switch {
            return Ok(Counters::default());
        }
        counters::parse(&run::nft_list_counters(&self.ns)?)
    }
}
