//! The node-wide setup each mode needs before its first endpoint, and the planning view of
//! the node (`Node`) derived from its record.
//! - bridge: the bridge takes over `master` (see `bridge.rs`), with its MAC translation table;
//! - transparent: `master` stays as it is; the node forwards IPv4 and answers for pods.

use std::net::IpAddr;

use super::bridge;
use super::config::VnetConfig;
use super::mac::Mac;
use super::mode::{Mode, Node};
use super::netlink::{Link, Netlink};
use super::state::{NodeRecord, VnetState};
use super::translation;
use crate::fields::invalid;
use crate::skel::error::{Error, Result};
use crate::store::Store;

impl Node {
    /// The planning view of a node record (pure).
    pub fn from_record(r: &NodeRecord) -> Node {
        let bridged = r.mode == Mode::Bridge;
        Node {
            mode: r.mode,
            master: r.master.clone(),
            bridge: bridged.then(|| r.bridge.clone()),
            table: bridged.then(|| translation::table(&r.bridge)),
            node_v4: translation::v4(r.addresses.iter().map(|a| a.addr())).first().copied(),
            subnets: r.addresses.iter().map(|a| a.trunc()).collect(),
            snat_subnets: r.snat_subnets.clone(),
        }
    }
}

/// Makes the node ready for `cfg.mode` and returns its planning view plus its record.
pub async fn prepare(nl: &Netlink, cfg: &VnetConfig, store: &Store, seen: &VnetState) -> Result<NodeRecord> {
    match cfg.mode {
        Mode::Bridge => Ok(bridge::ensure(nl, cfg, store, seen).await?.record),
        Mode::Transparent => transparent(nl, cfg, store, seen).await,
    }
}

/// The error for a config whose mode is not the one this node was set up in.
pub fn other_mode(r: &NodeRecord, wanted: Mode) -> Error {
    let how = match r.mode {
        Mode::Bridge => format!("bridge {} carries {}", r.bridge, r.master),
        Mode::Transparent => format!("{} routes its pods", r.master),
    };
    invalid(format!(
        "mode {:?}: this node is set up in {} mode ({how}); one node runs one mode",
        wanted.as_str(),
        r.mode.as_str()
    ))
}

/// `name` as a master: an existing, Ethernet-like interface (not loopback, not a bridge).
pub async fn usable_master(nl: &Netlink, name: &str) -> Result<Link> {
    let link = nl
        .link(name)
        .await?
        .ok_or_else(|| Error::MasterMissing(format!("master {name:?} is not an interface on this host")))?;
    if link.loopback {
        return Err(invalid(format!("master {name:?} is a loopback interface, not the VNet NIC")));
    }
    if link.kind.as_deref() == Some("bridge") {
        return Err(invalid(format!("master {name:?} is a bridge; name the VNet NIC it should carry")));
    }
    if link.mac.len() != 6 {
        return Err(invalid(format!("master {name:?} has no Ethernet address")));
    }
    Ok(link)
}

async fn transparent(nl: &Netlink, cfg: &VnetConfig, store: &Store, seen: &VnetState) -> Result<NodeRecord> {
    if let Some(r) = &seen.node {
        if r.mode != Mode::Transparent {
            return Err(other_mode(r, Mode::Transparent));
        }
        if nl.link(&r.master).await?.is_some() && forwarding() {
            return Ok(r.clone());
        }
    }
    let name = match &cfg.master {
        Some(m) => m.clone(),
        None => bridge::default_route_link(nl).await?,
    };
    let link = usable_master(nl, &name).await?;
    if link.controller.is_some() {
        return Err(invalid(format!("master {name:?} is enslaved to another device")));
    }
    let addresses: Vec<_> = nl
        .addresses(Some(link.index))
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| !matches!(a.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    let record = NodeRecord {
        mode: Mode::Transparent,
        master: name,
        master_mac: Mac::from_slice(&link.mac),
        bridge: String::new(),
        addresses,
        routes: Vec::new(),
        ready: true,
        snat_subnets: Vec::new(),
    };
    enable_forwarding()?;
    let lock = store.lock()?;
    let mut state: VnetState = lock.load()?.unwrap_or_default();
    let mut merged = record;
    if let Some(old) =
        state.node.as_ref().filter(|o| o.mode == Mode::Transparent && o.master == merged.master)
    {
        merged.snat_subnets = old.snat_subnets.clone();
    }
    state.node = Some(merged.clone());
    lock.save(&state)?;
    tracing::info!("transparent mode on {}: pods are routed by the node", merged.master);
    Ok(merged)
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn forwarding() -> bool {
    std::fs::read_to_string(IP_FORWARD).is_ok_and(|v| v.trim() == "1")
}

fn enable_forwarding() -> Result<()> {
    if !forwarding() {
        std::fs::write(IP_FORWARD, "1")
            .map_err(|e| Error::io("setting", std::path::Path::new(IP_FORWARD), e))?;
        tracing::info!("set {IP_FORWARD} = 1");
    }
    Ok(())
}
