//! The node's bridge: created once, it enslaves `master` and takes over its addresses and
//! routes so the node stays reachable. Safe when several ADDs race on a fresh node (one does
//! the takeover under a lock, the others wait and see it done) and after a crash midway (the
//! takeover is recorded before it starts and replayed until it is marked ready).

use super::config::VnetConfig;
use super::mac::Mac;
use super::mode::Mode;
use super::netlink::{Link, Netlink};
use super::state::{NodeRecord, VnetState};
use super::{names, node, translation};
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
    let takeover = Store::new(crate::store::suffixed(store.path(), ".bridge"), cfg.lock_timeout);
    let _guard = takeover.lock()?;
    let current: VnetState = store.load()?.unwrap_or_default();
    if let Some(b) = ready(nl, cfg, &current).await? {
        return Ok(b);
    }
    let record = match current.node {
        Some(r) if cfg.master.as_ref().is_none_or(|m| *m == r.master) => {
            tracing::info!("resuming the takeover of {} by {}", r.master, r.bridge);
            r
        }
        Some(r) => {
            tracing::warn!(
                "an unfinished takeover of {} does not match master {:?}; undoing it",
                r.master,
                cfg.master
            );
            revert(nl, &r).await;
            plan(nl, cfg).await?
        }
        None => plan(nl, cfg).await?,
    };
    save_node(store, &record)?;
    if let Err(e) = take_over(nl, &record).await {
        // A refused takeover must not shape later ADDs: put master back, forget the record.
        tracing::error!("taking over {} by {} failed: {e}; undoing it", record.master, record.bridge);
        revert(nl, &record).await;
        forget_node(store)?;
        return Err(e);
    }
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
    if record.mode != Mode::Bridge {
        return Err(node::other_mode(record, Mode::Bridge));
    }
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
    let mut record = record.clone();
    if record.master_mac.is_none() {
        record.master_mac = Mac::from_slice(&master.mac);
    }
    Ok(Some(Bridge { link: bridge, record }))
}

/// Reads what `master` has now: the plan of the takeover.
async fn plan(nl: &Netlink, cfg: &VnetConfig) -> Result<NodeRecord> {
    let master_name = match &cfg.master {
        Some(m) => m.clone(),
        None => default_route_link(nl).await?,
    };
    let master = node::usable_master(nl, &master_name).await?;
    let bridge = cfg.bridge.clone().unwrap_or_else(|| names::default_bridge(master.index));
    if bridge == master_name {
        return Err(crate::fields::invalid(format!(
            "master {master_name:?} is the bridge itself; name the VNet interface"
        )));
    }
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
    Ok(NodeRecord {
        mode: Mode::Bridge,
        master: master_name,
        master_mac: Mac::from_slice(&master.mac),
        bridge,
        addresses,
        routes,
        ready: false,
        snat_subnets: Vec::new(),
    })
}

pub async fn default_route_link(nl: &Netlink) -> Result<String> {
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
    set_sysctls(&r.bridge)?;
    install_translation(r)
}

/// The bridge's MAC translation table (also re-installed when a pod's element finds it missing).
pub fn install_translation(r: &NodeRecord) -> Result<()> {
    let mac = r.master_mac.map(|m| m.0).ok_or_else(|| {
        Error::MasterMissing(format!("the record of {} has no MAC for master {}", r.bridge, r.master))
    })?;
    translation::install(&r.bridge, &r.master, &mac, &translation::v4(r.addresses.iter().map(|a| a.addr())))
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

/// Best effort: master gets its addresses and routes back, the bridge and its table go.
async fn revert(nl: &Netlink, r: &NodeRecord) {
    if let Ok(Some(master)) = nl.link(&r.master).await {
        for a in &r.addresses {
            let _ = nl.add_address(master.index, *a).await;
        }
        if let Err(e) = nl.delete_link(&r.bridge).await {
            tracing::warn!("could not remove bridge {}: {e}", r.bridge);
        }
        let _ = nl.set_up(master.index).await;
        for route in &r.routes {
            let _ = nl.add_route(route, master.index).await;
        }
    } else {
        let _ = nl.delete_link(&r.bridge).await;
    }
    if let Err(e) = translation::uninstall(&r.bridge) {
        tracing::warn!("could not remove the translation table of {}: {e}", r.bridge);
    }
}

fn forget_node(store: &Store) -> Result<()> {
    let lock = store.lock()?;
    let mut state: VnetState = lock.load()?.unwrap_or_default();
    state.node = None;
    lock.save(&state)
}

fn save_node(store: &Store, record: &NodeRecord) -> Result<()> {
    let lock = store.lock()?;
    let mut state: VnetState = lock.load()?.unwrap_or_default();
    state.node = Some(record.clone());
    lock.save(&state)
}
