//! The azure-vnet plugin. ADD: the node's setup for the mode → IPAM → the mode's plan → the
//! endpoint record (before the kernel is touched) → the steps, undone newest first if one
//! fails. DEL undoes the recorded plan, CHECK verifies it step by step, GC tears down what the
//! runtime no longer lists (and map elements nobody owns), STATUS reports a node that lost its
//! setup. Locks cover only state-file and iptables read-modify-writes, never netlink work or
//! the IPAM exec.

use std::collections::HashSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde_json::Value;

use super::call::{crash_point, Call};
use super::kernel::RealKernel;
use super::mac::Mac;
use super::mode::{self, Attach, Mode, Node, Snat};

use super::netlink::Netlink;
use super::state::{endpoint_key, Endpoint, NodeRecord, VnetState};
use super::step::{self, Kernel, Step};
use super::{delegate, iptables, names, node, reaper, translation};
use crate::skel::error::{Error, Result};
use crate::skel::result::{CniResult, Dns, Interface, IpConfig};
use crate::skel::version::Version;
use crate::skel::{Attachment, Plugin, Request};

use super::config::VnetConfig;

pub struct VnetPlugin;

fn netns_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::InvalidEnv {
        name: "CNI_NETNS",
        reason: format!("cannot open network namespace {}: {e}", path.display()),
    })
}

/// The node's planning view from the state file (DEL, CHECK and GC never set the node up).
fn recorded_node(state: &VnetState) -> Node {
    state.node.as_ref().map(Node::from_record).unwrap_or_default()
}

/// The steps an endpoint was made of, re-planned from its record.
fn recorded_steps(state: &VnetState, ep: &Endpoint) -> Vec<Step> {
    match &ep.attach {
        Some(a) => mode::driver(ep.mode).plan(&recorded_node(state), a),
        // A record from before plans were recorded: its veth and port mappings are all we know.
        None => {
            let mut steps = vec![Step::Veth {
                host: ep.host_veth.clone(),
                host_mac: Mac::for_name(&ep.host_veth),
                ifname: ep.ifname.clone(),
                pod_mac: Mac::for_address(ep.address),
            }];
            if !ep.port_mappings.is_empty() {
                steps.push(Step::PortMappings {
                    tag: iptables::tag(&ep.container_id, &ep.ifname),
                    ip: ep.address,
                    mappings: ep.port_mappings.clone(),
                    masquerade: true,
                });
            }
            steps
        }
    }
}

impl Plugin for VnetPlugin {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let call = Call::new(req)?;
        let netns_path = req.env.netns.clone().unwrap_or_default();
        netns_file(&netns_path)?;
        // A missing IPAM plugin is found before the node is touched.
        delegate::find(&call.cfg.ipam_type, &req.env.path)?;
        let seen: VnetState = call.store.load()?.unwrap_or_default();
        let mut k = call.kernel(Some(&netns_path))?;
        let record = k.block_on(node::prepare(k.host(), &call.cfg, &call.store, &seen))?;
        let node = Node::from_record(&record);
        k.set_node(Some(record));
        if let Some(ep) = call.endpoint(&seen)? {
            if let Some(result) = repeated(&call, &mut k, &seen, &ep, &netns_path)? {
                return Ok(result);
            }
        }
        let ipam = call.ipam("ADD")?.ok_or_else(|| bad_ipam("ADD printed no result"))?;
        crash_point("ipam");
        match attach(&call, &mut k, &node, &seen, ipam, &netns_path) {
            Ok(result) => Ok(result),
            Err(e) => {
                // The address goes last, so it is never handed out while the old veth exists.
                if let Err(r) = call.ipam("DEL") {
                    tracing::error!("releasing the address of {} after a failed ADD: {r}", call.key());
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<()> {
        let call = Call::new(req)?;
        let state: VnetState = call.store.load()?.unwrap_or_default();
        let mut errors = Vec::new();
        // An unreadable record is kept (and reported); what its name tells is still removed.
        let ep = call.endpoint(&state).unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let netns = req.env.netns.clone().filter(|p| !p.as_os_str().is_empty());
        let mut kernel = call.kernel(netns.as_deref()).map_err(|e| errors.push(e)).ok();
        if let Some(k) = &mut kernel {
            k.defer_to_reaper();
            match &ep {
                Some(ep) => errors.extend(step::undo_all(k, &recorded_steps(&state, ep))),
                None => errors.extend(forget_unrecorded(&call, k)),
            }
        }
        if ep.is_some() {
            errors.extend(call.forget(&state).err());
        }
        // The address goes last, once the old veth is down: nothing reaches it any more.
        errors.extend(call.ipam("DEL").err());
        if let Some(k) = &mut kernel {
            k.finish();
        }
        if errors.is_empty() {
            tracing::info!("DEL {} done in {:?}", call.key(), crate::skel::elapsed());
        }
        Error::all(errors)
    }

    fn check(&self, req: &Request) -> Result<()> {
        let call = Call::new(req)?;
        let prev: CniResult = req
            .config
            .get("prevResult")
            .ok_or_else(|| Error::InvalidConfig("CHECK needs prevResult".into()))
            .and_then(|v| {
                serde_json::from_value(v.clone()).map_err(|e| Error::Decode(format!("prevResult: {e}")))
            })?;
        let state: VnetState = call.store.load()?.unwrap_or_default();
        let ep = call
            .endpoint(&state)?
            .ok_or_else(|| Error::UnknownContainer(format!("no endpoint recorded for {}", call.key())))?;
        let netns_path = req.env.netns.clone().unwrap_or_default();
        netns_file(&netns_path)?;
        let mut k = call.kernel(Some(&netns_path))?;
        let steps = recorded_steps(&state, &ep);
        if let Some(missing) = step::first_missing(&mut k, &steps)? {
            return Err(Error::Mismatch(format!("{missing} ({}) does not hold", missing.name())));
        }
        for c in &prev.ips {
            let held =
                steps.iter().any(|s| matches!(s, Step::PodAddress { address, .. } if *address == c.address));
            if !held {
                return Err(Error::Mismatch(format!("prevResult's address {} is not the pod's", c.address)));
            }
        }
        for r in &prev.routes {
            let routed = steps.iter().any(|s| matches!(s, Step::PodRoute { dst, gw, .. } if *dst == r.dst && (r.gw.is_none() || *gw == r.gw)));
            if !routed {
                return Err(Error::Mismatch(format!("prevResult's route to {} is not the pod's", r.dst)));
            }
        }
        call.ipam("CHECK").map(|_| ())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let call = Call::new(req)?;
        let state: VnetState =
            call.store.load().map_err(|e| Error::NotAvailable(e.to_string()))?.unwrap_or_default();
        if let Some(node) = state.node.as_ref().filter(|n| n.ready) {
            call.rt.block_on(node_present(node))?;
            if node.mode == Mode::Bridge {
                let table = translation::table(&node.bridge);
                match super::nft::Nft::open()?.list(translation::map_ref(&table)) {
                    Err(Error::Nft { missing: true, .. }) => {
                        return Err(Error::NotAvailable(format!(
                            "the MAC translation table {table} is missing"
                        )))
                    }
                    other => {
                        other?;
                    }
                }
            }
        }
        call.ipam("STATUS").map(|_| ()).map_err(|e| match e {
            Error::DelegateMissing(m) => Error::NotAvailable(m),
            other => other,
        })
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<()> {
        let call = Call::new(req)?;
        let valid: HashSet<String> = valid.iter().map(|a| endpoint_key(&a.container_id, &a.ifname)).collect();
        let state: VnetState = call.store.load()?.unwrap_or_default();
        let (mut all, unreadable) = call.records.all()?;
        for e in unreadable {
            tracing::warn!("GC leaves an unreadable record alone: {e}");
        }
        all.extend(state.endpoints.values().cloned());
        let key = |e: &Endpoint| endpoint_key(&e.container_id, &e.ifname);
        let stale: Vec<Endpoint> =
            all.into_iter().filter(|e| e.network == req.network && !valid.contains(&key(e))).collect();
        let mut errors = Vec::new();
        let mut k = call.kernel(None)?;
        k.set_node(state.node.clone());
        k.defer_to_reaper();
        let mut cleaned = HashSet::new();
        for e in &stale {
            // A record whose teardown failed is kept, so the next GC tries again.
            let failed = step::undo_all(&mut k, &recorded_steps(&state, e));
            if failed.is_empty() {
                errors.extend(call.records.remove(&key(e)).err());
                tracing::info!("GC removed endpoint {}", key(e));
                cleaned.insert(key(e));
            }
            errors.extend(failed);
        }
        if cleaned.iter().any(|k| state.endpoints.contains_key(k)) {
            errors.extend(
                call.update_state(|s| {
                    s.endpoints.retain(|k, _| !cleaned.contains(k));
                    true
                })
                .err(),
            );
        }
        if let Some(node) = state.node.as_ref().filter(|n| n.mode == Mode::Bridge && n.ready) {
            errors.extend(collect_orphans(&call, &mut k, node).err());
        }
        errors.extend(call.ipam("GC").err());
        k.finish();
        Error::all(errors)
    }
}

/// A repeated ADD: the recorded result if every recorded step still holds; otherwise what is
/// left of the endpoint is undone so the ADD can start over (IPAM returns the same address).
fn repeated(
    call: &Call<'_>,
    k: &mut RealKernel<'_>,
    state: &VnetState,
    ep: &Endpoint,
    netns: &Path,
) -> Result<Option<CniResult>> {
    let steps = recorded_steps(state, ep);
    if Path::new(&ep.netns) == netns && ep.mode == call.cfg.mode && ep.attach.is_some() {
        match step::first_missing(k, &steps) {
            Ok(None) => {
                tracing::info!("repeated ADD for {}: returning the recorded result", call.key());
                return serde_json::from_str(ep.result.get())
                    .map(Some)
                    .map_err(|e| Error::Io(format!("recorded result unreadable: {e}")));
            }
            Ok(Some(s)) => tracing::info!("repeated ADD for {}: {s} is missing; starting over", call.key()),
            Err(e) => tracing::warn!(
                "repeated ADD for {}: cannot verify the endpoint ({e}); starting over",
                call.key()
            ),
        }
    } else {
        tracing::info!("ADD for {} in a new sandbox or mode: removing the old endpoint first", call.key());
    }
    for e in step::undo_all(k, &steps) {
        tracing::warn!("while starting {} over: {e}", call.key());
    }
    Ok(None)
}

fn attach(
    call: &Call<'_>,
    k: &mut RealKernel<'_>,
    node: &Node,
    seen: &VnetState,
    ipam_value: Value,
    netns: &Path,
) -> Result<CniResult> {
    let env = &call.req.env;
    let driver = mode::driver(call.cfg.mode);
    let ipam: CniResult =
        serde_json::from_value(ipam_value).map_err(|e| bad_ipam(&format!("unreadable result: {e}")))?;
    let ip = ipam.ips.first().cloned().ok_or_else(|| bad_ipam("result has no address"))?;
    tracing::debug!("IPAM gave {} (gateway {:?})", ip.address, ip.gateway);
    check_inside_vnet(&call.cfg, node, &ipam)?;
    if let Some(index) = k.block_on(k.host().holder_of(ip.address.addr()))? {
        let name = k.block_on(k.host().link_by_index(index))?.map_or(format!("#{index}"), |l| l.name);
        return Err(Error::AddressInUse(format!("{} is already on interface {name}", ip.address.addr())));
    }
    let a = Attach {
        host_veth: names::host_veth(&env.container_id, &env.ifname),
        ifname: env.ifname.clone(),
        addresses: ipam.ips.iter().map(|c| c.address).collect(),
        routes: driver.routes(node, &ipam, &call.cfg),
        port_mappings: call.cfg.port_mappings.clone(),
        tag: iptables::tag(&env.container_id, &env.ifname),
        snat: snat_for(&call.cfg, node, ip.address),
    };
    let steps = driver.plan(node, &a);
    let result = CniResult {
        interfaces: vec![
            Interface { name: a.host_veth.clone(), mac: a.host_mac().to_string(), sandbox: String::new() },
            Interface {
                name: a.ifname.clone(),
                mac: a.pod_mac().to_string(),
                sandbox: netns.display().to_string(),
            },
        ],
        ips: ipam
            .ips
            .iter()
            .map(|c| IpConfig {
                interface: Some(1),
                version: None,
                gateway: driver.gateway(c.gateway),
                ..c.clone()
            })
            .collect(),
        routes: a.routes.clone(),
        dns: merge_dns(&ipam.dns, &call.cfg.dns),
    };
    let endpoint = Endpoint {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: call.req.network.clone(),
        netns: netns.display().to_string(),
        host_veth: a.host_veth.clone(),
        address: ip.address.addr(),
        port_mappings: a.port_mappings.clone(),
        mode: driver.mode(),
        attach: Some(a.clone()),
        result: serde_json::value::to_raw_value(&result.render(Version::parse("1.0.0")?))
            .map_err(|e| Error::Io(format!("encoding the result: {e}")))?,
    };
    call.records.put(&call.key(), &endpoint)?;
    crash_point("record");
    if let Err(e) = step::apply_all(k, &steps, |s| crash_point(s.name())) {
        if let Err(r) = call.forget(seen) {
            tracing::error!("forgetting the failed endpoint {}: {r}", call.key());
        }
        return Err(e);
    }
    if seen.endpoints.contains_key(&call.key()) {
        // The record from an older version is superseded by the new one.
        call.update_state(|s| s.endpoints.remove(&call.key()).is_some())?;
    }
    if let Some(snat) = &a.snat {
        call.update_state(|s| match s.node.as_mut() {
            Some(n) => {
                let before = n.snat_subnets.len();
                for subnet in &snat.subnets {
                    if !n.snat_subnets.contains(subnet) {
                        n.snat_subnets.push(*subnet);
                    }
                }
                n.snat_subnets.len() != before
            }
            None => false,
        })?;
    }
    tracing::info!(
        "ADD {}: {} ({} mode, {} steps) in {:?}",
        call.key(),
        ip.address,
        driver.mode().as_str(),
        steps.len(),
        crate::skel::elapsed()
    );
    Ok(result)
}

/// Azure drops what a NIC sends from an address it does not own: an address outside the VNet
/// would never work, so it is refused (and released) instead of being half set up.
fn check_inside_vnet(cfg: &VnetConfig, node: &Node, ipam: &CniResult) -> Result<()> {
    let vnet: Vec<IpNet> = node.subnets.iter().chain(&cfg.vnet_cidrs).copied().collect();
    if vnet.is_empty() {
        return Ok(());
    }
    for c in &ipam.ips {
        if !vnet.iter().any(|n| n.contains(&c.address.addr())) {
            let list: Vec<String> = vnet.iter().map(|n| n.to_string()).collect();
            return Err(Error::OutsideVnet(format!(
                "ipam ({}) gave {}, which is outside the VNet ({}: {}'s subnets and vnetCidrs)",
                cfg.ipam_type,
                c.address,
                list.join(", "),
                node.master
            )));
        }
    }
    Ok(())
}

/// The SNAT chain to program with this endpoint, if its subnet has none yet.
fn snat_for(cfg: &VnetConfig, node: &Node, address: IpNet) -> Option<Snat> {
    let subnet = address.trunc();
    if !cfg.snat || !address.addr().is_ipv4() || node.snat_subnets.contains(&subnet) {
        return None;
    }
    let mut subnets = node.snat_subnets.clone();
    subnets.push(subnet);
    let vnet = if cfg.vnet_cidrs.is_empty() {
        let mut v: Vec<IpNet> = node.subnets.iter().filter(|n| n.addr().is_ipv4()).copied().collect();
        let uncovered: Vec<IpNet> =
            subnets.iter().filter(|s| !v.iter().any(|n| n.contains(*s))).copied().collect();
        v.extend(uncovered);
        v
    } else {
        cfg.vnet_cidrs.clone()
    };
    Some(Snat { subnets, vnet })
}

/// DEL without a record: the endpoint never got one, or a DEL already ran. The veth is found
/// by its derived name; port-mapping rules by their comment (looked for, not failed on).
fn forget_unrecorded(call: &Call<'_>, k: &mut RealKernel<'_>) -> Vec<Error> {
    let env = &call.req.env;
    let host = names::host_veth(&env.container_id, &env.ifname);
    let veth = Step::Veth {
        host: host.clone(),
        host_mac: Mac::for_name(&host),
        ifname: env.ifname.clone(),
        pod_mac: Mac([0; 6]),
    };
    let errors: Vec<Error> = k.undo(&veth).err().into_iter().collect();
    let mappings = Step::PortMappings {
        tag: iptables::tag(&env.container_id, &env.ifname),
        ip: IpAddr::from([0, 0, 0, 0]),
        mappings: Vec::new(),
        masquerade: false,
    };
    if let Err(e) = k.undo(&mappings) {
        tracing::warn!("could not look for port mappings of {}: {e}", call.key());
    }
    errors
}

/// Map elements and bridge neighbours for addresses no recorded endpoint holds (left by a
/// removed record, an older version, or a hand edit) are removed; the elements under the
/// translation lock, as the reaper does, so an ADD running meanwhile keeps its own.
fn collect_orphans(call: &Call<'_>, k: &mut RealKernel<'_>, node: &NodeRecord) -> Result<()> {
    reaper::prune_translations(&call.cfg.state_file, call.cfg.lock_timeout, &mut None)?;
    let state: VnetState = call.store.load()?.unwrap_or_default();
    let owned = reaper::owned_addresses(&call.cfg.state_file, &state)?;
    let host = k.host().clone();
    k.block_on(async {
        let Some(bridge) = host.link(&node.bridge).await? else { return Ok(()) };
        for n in host.neighbours(bridge.index).await? {
            if n.permanent && n.mac.starts_with(&[0x0a, 0x58]) && !owned.contains(&n.ip) {
                host.del_neighbour(bridge.index, n.ip).await?;
                tracing::info!("GC removed the neighbour entry of {} nobody holds", n.ip);
            }
        }
        Ok(())
    })
}

async fn node_present(node: &NodeRecord) -> Result<()> {
    let nl = Netlink::connect()?;
    let (name, what) = match node.mode {
        Mode::Bridge => (&node.bridge, "bridge"),
        Mode::Transparent => (&node.master, "master"),
    };
    if nl.link(name).await?.is_none() {
        return Err(Error::NotAvailable(format!("{what} {name} is missing")));
    }
    Ok(())
}

fn bad_ipam(msg: &str) -> Error {
    Error::Delegate { plugin: "ipam".into(), code: 112, msg: msg.to_string() }
}

/// The config's DNS settings win where given; IPAM's fill the rest.
fn merge_dns(ipam: &Dns, cfg: &Dns) -> Dns {
    let pick = |a: &Vec<String>, b: &Vec<String>| if a.is_empty() { b.clone() } else { a.clone() };
    Dns {
        nameservers: pick(&cfg.nameservers, &ipam.nameservers),
        domain: if cfg.domain.is_empty() { ipam.domain.clone() } else { cfg.domain.clone() },
        search: pick(&cfg.search, &ipam.search),
        options: pick(&cfg.options, &ipam.options),
    }
}
