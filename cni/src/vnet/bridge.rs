//! The node's bridge: created once, it enslaves `master` and takes over its addresses and
//! routes so the node stays reachable. Safe when several ADDs race on a fresh node (one does
//! the takeover under a lock, the others wait and see it done) and after a crash midway (the
//! takeover is recorded before it starts and replayed until it is marked ready).

use std::path::PathBuf;

use super::config::VnetConfig;
use super::names;
use super::netlink::{Link, Netlink};
use super::state::{NodeRecord, VnetState};
use crate::skel::error::{Error, Result};
use crate::store::Store;

pub struct Bridge {
    pub link: Link,
    pub record: NodeRecord,
}

/// Returns the ready bridge, setting it up first if needed.
pub async fn ensure(nl: &Netlink, cfg: &VnetConfig, store: &Store, seen: &VnetState) -> Result<Bridge> {
    if let Some(b) = ready(nl, cfg, seen).await? {
        return Ok(b);
    }
    let takeover = Store::new(with_suffix(store, ".bridge"), cfg.lock_timeout);
    let _guard = takeover.lock()?;
    let current: VnetState = store.load()?.unwrap_or_default();
    if let Some(b) = ready(nl, cfg, &current).await? {
        return Ok(b);
    }
    let record = match current.node {
        Some(r) => {
            tracing::info!("resuming the takeover of {} by {}", r.master, r.bridge);
            r
        }
        None => plan(nl, cfg).await?,
    };
    save_node(store, &record)?;
    take_over(nl, &record).await?;
    let mut done = record;
    done.ready = true;
    save_node(store, &done)?;
    let link = nl
        .link(&done.bridge)
        .await?
        .ok_or_else(|| Error::Netlink(format!("bridge {} vanished", done.bridge)))?;
    tracing::info!("bridge {} now carries {} and its addresses", done.bridge, done.master);
    Ok(Bridge { link, record: done })
}

/// The fast path: the record says ready and the kernel agrees.
async fn ready(nl: &Netlink, cfg: &VnetConfig, state: &VnetState) -> Result<Option<Bridge>> {
    let Some(record) = state.node.as_ref().filter(|n| n.ready) else { return Ok(None) };
    if cfg.bridge.as_ref().is_some_and(|b| *b != record.bridge)
        || cfg.master.as_ref().is_some_and(|m| *m != record.master)
    {
        tracing::warn!(
            "config names bridge {:?} / master {:?}, but this node's bridge {} already carries {}; using it",
            cfg.bridge,
            cfg.master,
            record.bridge,
            record.master
        );
    }
    let (Some(bridge), Some(master)) = (nl.link(&record.bridge).await?, nl.link(&record.master).await?)
    else {
        return Ok(None);
    };
    if master.controller != Some(bridge.index) || !bridge.up {
        return Ok(None);
    }
    Ok(Some(Bridge { link: bridge, record: record.clone() }))
}

/// Reads what `master` has now: the plan of the takeover.
async fn plan(nl: &Netlink, cfg: &VnetConfig) -> Result<NodeRecord> {
    let master_name = match &cfg.master {
        Some(m) => m.clone(),
        None => default_route_link(nl).await?,
    };
    let master = nl.link(&master_name).await?.ok_or_else(|| {
        Error::MasterMissing(format!("master {master_name:?} is not an interface on this host"))
    })?;
    let bridge = cfg.bridge.clone().unwrap_or_else(|| names::default_bridge(master.index));
    let addresses: Vec<_> = nl
        .addresses(Some(master.index))
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| !matches!(a, ipnet::IpNet::V6(v6) if v6.addr().segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    let routes: Vec<_> =
        nl.routes().await?.into_iter().filter(|r| r.oif == Some(master.index) && !r.kernel).collect();
    tracing::info!(
        "bridge {bridge} will take over {master_name}: addresses [{}], {} routes",
        addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        routes.len()
    );
    Ok(NodeRecord { master: master_name, bridge, addresses, routes, ready: false, snat_subnets: Vec::new() })
}

async fn default_route_link(nl: &Netlink) -> Result<String> {
    let routes = nl.routes().await?;
    let oif = routes
        .iter()
        .find(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4())
        .and_then(|r| r.oif)
        .ok_or_else(|| {
        Error::MasterMissing("no master configured and no IPv4 default route to pick one".into())
    })?;
    let link =
        nl.link_by_index(oif).await?.ok_or_else(|| Error::MasterMissing(format!("link #{oif} vanished")))?;
    tracing::info!("no master configured; using {} (it holds the default route)", link.name);
    Ok(link.name)
}

/// Every step is idempotent, so a replay after a crash finishes the job.
async fn take_over(nl: &Netlink, r: &NodeRecord) -> Result<()> {
    let master = nl.link(&r.master).await?.ok_or_else(|| {
        Error::MasterMissing(format!("master {:?} is not an interface on this host", r.master))
    })?;
    nl.create_bridge(&r.bridge, &master.mac).await?;
    let bridge = nl
        .link(&r.bridge)
        .await?
        .ok_or_else(|| Error::Netlink(format!("bridge {} not found after creation", r.bridge)))?;
    // Addresses go on the bridge before they leave master, so the node keeps them throughout.
    for a in &r.addresses {
        nl.add_address(bridge.index, *a).await?;
    }
    nl.set_controller(master.index, bridge.index).await?;
    nl.set_up(master.index).await?;
    nl.set_up(bridge.index).await?;
    for a in &r.addresses {
        nl.del_address(master.index, *a).await?;
    }
    for route in &r.routes {
        nl.add_route(route, bridge.index).await?;
    }
    set_sysctls(&r.bridge)
}

/// Pods route traffic leaving the VNet through the node (for SNAT) and port mappings DNAT
/// through it, so the node forwards IPv4. It must not answer that forwarding with ICMP
/// redirects to the VNet gateway, which would teach pods to bypass the node (and its SNAT).
fn set_sysctls(bridge: &str) -> Result<()> {
    let settings = [
        ("/proc/sys/net/ipv4/ip_forward".to_string(), "1"),
        ("/proc/sys/net/ipv4/conf/all/send_redirects".to_string(), "0"),
        (format!("/proc/sys/net/ipv4/conf/{bridge}/send_redirects"), "0"),
    ];
    for (path, value) in settings {
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
            continue;
        }
        std::fs::write(&path, value).map_err(|e| Error::io("setting", std::path::Path::new(&path), e))?;
        tracing::info!("set {path} = {value}");
    }
    Ok(())
}

fn save_node(store: &Store, record: &NodeRecord) -> Result<()> {
    let lock = store.lock()?;
    let mut state: VnetState = lock.load()?.unwrap_or_default();
    state.node = Some(record.clone());
    lock.save(&state)
}

fn with_suffix(store: &Store, suffix: &str) -> PathBuf {
    let mut p = store.path().as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}
