//! An endpoint's kernel state as an ordered list of steps. Each mode plans the list (pure, see
//! `mode.rs`); one executor applies it, and when a step fails undoes the completed ones, newest
//! first; CHECK asks whether every step still holds; DEL and GC undo them. `Kernel` is the
//! seam: the real one (`kernel.rs`) speaks rtnetlink, nf_tables and iptables, tests use a
//! recording fake, so every mode's plan, rollback and teardown are tested without root.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::PortMapping;
use super::mac::Mac;
use crate::skel::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// The pod's address held in the node agent's `azure-npm-new` set until the agent has
    /// programmed the pod (see `hold.rs`); nothing when no agent runs.
    Hold {
        ip: Ipv4Addr,
    },
    /// The veth pair: `host` on the node, its peer born in the pod's namespace as `ifname`.
    #[serde(rename_all = "camelCase")]
    Veth {
        host: String,
        host_mac: Mac,
        ifname: String,
        pod_mac: Mac,
    },
    #[serde(rename_all = "camelCase")]
    PodAddress {
        ifname: String,
        address: IpNet,
        prefix_route: bool,
    },
    /// The pod's interface and `lo` up.
    PodUp {
        ifname: String,
    },
    #[serde(rename_all = "camelCase")]
    PodRoute {
        ifname: String,
        dst: IpNet,
        gw: Option<IpAddr>,
        link_scope: bool,
    },
    /// A permanent neighbour entry inside the pod.
    PodNeighbour {
        ifname: String,
        ip: IpAddr,
        mac: Mac,
    },
    /// The host side enslaved to the bridge.
    HostOnBridge {
        host: String,
        bridge: String,
    },
    HostUp {
        host: String,
    },
    /// A route on the node to the pod through its host veth.
    HostRoute {
        host: String,
        dst: IpNet,
    },
    /// A permanent neighbour entry for the pod on the node's bridge.
    BridgeNeighbour {
        bridge: String,
        ip: IpAddr,
        mac: Mac,
    },
    /// The pod's element in the bridge's MAC translation map (see `translation.rs`).
    Translation {
        table: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
    /// The outbound SNAT chain for these pod subnets (node-wide, kept once made).
    Snat {
        subnets: Vec<IpNet>,
        vnet: Vec<IpNet>,
    },
    PortMappings {
        tag: String,
        ip: IpAddr,
        mappings: Vec<PortMapping>,
        masquerade: bool,
    },
}

impl Step {
    /// A stable short name, for logs, errors and the test-only crash hook.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Hold { .. } => "hold",
            Step::Veth { .. } => "veth",
            Step::PodAddress { .. } => "pod-address",
            Step::PodUp { .. } => "pod-up",
            Step::PodRoute { .. } => "pod-route",
            Step::PodNeighbour { .. } => "pod-neighbour",
            Step::HostOnBridge { .. } => "host-on-bridge",
            Step::HostUp { .. } => "host-up",
            Step::HostRoute { .. } => "host-route",
            Step::BridgeNeighbour { .. } => "bridge-neighbour",
            Step::Translation { .. } => "translation",
            Step::Snat { .. } => "snat",
            Step::PortMappings { .. } => "port-mappings",
        }
    }

    /// Whether undoing it is an action of its own: the rest goes with the veth (everything in
    /// the pod, the host side's settings and routes) or is node-wide (SNAT).
    pub fn undoable(&self) -> bool {
        matches!(
            self,
            Step::Hold { .. }
                | Step::Veth { .. }
                | Step::BridgeNeighbour { .. }
                | Step::Translation { .. }
                | Step::PortMappings { .. }
        )
    }

    /// Whether checking it needs the pod's network namespace.
    pub fn in_pod(&self) -> bool {
        matches!(
            self,
            Step::PodAddress { .. } | Step::PodUp { .. } | Step::PodRoute { .. } | Step::PodNeighbour { .. }
        )
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Hold { ip } => write!(f, "{ip} held for the policy agent"),
            Step::Veth { host, ifname, .. } => write!(f, "veth {host} <-> {ifname}"),
            Step::PodAddress { address, .. } => write!(f, "pod address {address}"),
            Step::PodUp { ifname } => write!(f, "pod {ifname} up"),
            Step::PodRoute { dst, gw, .. } => match gw {
                Some(g) => write!(f, "pod route {dst} via {g}"),
                None => write!(f, "pod route {dst} on link"),
            },
            Step::PodNeighbour { ip, mac, .. } => write!(f, "pod neighbour {ip} at {mac}"),
            Step::HostOnBridge { host, bridge } => write!(f, "{host} on {bridge}"),
            Step::HostUp { host } => write!(f, "{host} up"),
            Step::HostRoute { host, dst } => write!(f, "node route {dst} dev {host}"),
            Step::BridgeNeighbour { bridge, ip, mac } => write!(f, "neighbour {ip} at {mac} on {bridge}"),
            Step::Translation { table, ip, mac } => write!(f, "MAC translation {ip} -> {mac} in {table}"),
            Step::Snat { subnets, .. } => {
                let list: Vec<String> = subnets.iter().map(|s| s.to_string()).collect();
                write!(f, "outbound SNAT for {}", list.join(", "))
            }
            Step::PortMappings { mappings, ip, .. } => write!(f, "{} port mappings to {ip}", mappings.len()),
        }
    }
}

/// Where the steps happen.
pub trait Kernel {
    fn apply(&mut self, step: &Step) -> Result<()>;
    /// Idempotent: what is already gone is success.
    fn undo(&mut self, step: &Step) -> Result<()>;
    /// Read-only.
    fn holds(&mut self, step: &Step) -> Result<bool>;
}

/// Applies `steps` in order, calling `after` once each is done. When one fails, the completed
/// undoable steps are undone, newest first (failures to undo are logged, never hidden: they
/// are also in the returned error's message).
pub fn apply_all(k: &mut dyn Kernel, steps: &[Step], mut after: impl FnMut(&Step)) -> Result<()> {
    for (i, step) in steps.iter().enumerate() {
        tracing::debug!("step {}: {step}", step.name());
        if let Err(e) = k.apply(step) {
            tracing::error!("step {} ({step}) failed: {e}; rolling back {i} steps", step.name());
            let failed = undo_all(k, &steps[..i]);
            if failed.is_empty() {
                return Err(e);
            }
            let also: Vec<String> = failed.iter().map(|f| f.to_string()).collect();
            return Err(with_context(e, &format!("(rollback also failed: {})", also.join("; "))));
        }
        after(step);
    }
    Ok(())
}

/// Undoes every undoable step, newest first, going on past failures; returns them all.
pub fn undo_all(k: &mut dyn Kernel, steps: &[Step]) -> Vec<Error> {
    let mut errors = Vec::new();
    for step in steps.iter().rev().filter(|s| s.undoable()) {
        tracing::debug!("undo {}: {step}", step.name());
        if let Err(e) = k.undo(step) {
            tracing::error!("undoing {} ({step}) failed: {e}", step.name());
            errors.push(e);
        }
    }
    errors
}

/// The first step that does not hold (what CHECK reports).
pub fn first_missing<'a>(k: &mut dyn Kernel, steps: &'a [Step]) -> Result<Option<&'a Step>> {
    for step in steps {
        if !k.holds(step)? {
            return Ok(Some(step));
        }
    }
    Ok(None)
}

fn with_context(e: Error, note: &str) -> Error {
    match e {
        Error::Netlink(m) => Error::Netlink(format!("{m} {note}")),
        Error::Iptables(m) => Error::Iptables(format!("{m} {note}")),
        Error::Nft { missing, msg } => Error::Nft { missing, msg: format!("{msg} {note}") },
        other => {
            tracing::error!("{note}");
            other
        }
    }
}
