//! The azure-vnet plugin: ADD plans and attaches with rollback, DEL tears down idempotently,
//! CHECK compares read-only, STATUS and GC for 1.1.0. Locks cover only state-file and
//! iptables read-modify-writes, never netlink work or the IPAM exec.

use std::collections::HashSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde_json::Value;

use super::bridge::{self, Bridge};
use super::config::VnetConfig;
use super::iptables::{self, Iptables, NatTable};
use super::netlink::{Netlink, RouteSpec};
use super::state::{endpoint_key, Endpoint, VnetState};
use super::{delegate, names};
use crate::ipam::nic::Sysfs;
use crate::ipam::IpamPlugin;
use crate::logging;
use crate::skel::error::{Error, Result};
use crate::skel::result::{CniResult, Dns, Interface, IpConfig, Route};
use crate::skel::version::Version;
use crate::skel::{Attachment, Plugin, Request};
use crate::store::Store;

pub struct VnetPlugin;

/// Everything one command needs.
struct Call<'a> {
    req: &'a Request,
    cfg: VnetConfig,
    store: Store,
    rt: tokio::runtime::Runtime,
}

impl<'a> Call<'a> {
    fn new(req: &'a Request) -> Result<Call<'a>> {
        let cfg = VnetConfig::parse(&req.config)?;
        logging::init(&cfg.log_file, cfg.log_level);
        let store = Store::new(&cfg.state_file, cfg.lock_timeout);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Io(format!("starting the async runtime: {e}")))?;
        Ok(Call { req, cfg, store, rt })
    }

    fn key(&self) -> String {
        endpoint_key(&self.req.env.container_id, &self.req.env.ifname)
    }

    fn tag(&self) -> String {
        iptables::tag(&self.req.env.container_id, &self.req.env.ifname)
    }

    fn ipam(&self, command: &str) -> Result<Option<Value>> {
        let binary = delegate::find(&self.cfg.ipam_type, &self.req.env.path)?;
        if is_our_ipam(&binary) {
            tracing::debug!("{command}: azure-vnet-ipam in process ({} is ours)", binary.display());
            return ipam_in_process(self.req, command);
        }
        let stdin = serde_json::to_vec(&self.req.config).map_err(|e| Error::Io(e.to_string()))?;
        tracing::debug!("{command}: delegating to {}", binary.display());
        delegate::exec(&binary, command, &stdin)
    }

    /// Serialises iptables read-modify-writes between concurrent plugin processes.
    fn iptables_lock(&self) -> Store {
        let mut p = self.store.path().as_os_str().to_owned();
        p.push(".iptables");
        Store::new(p, self.cfg.lock_timeout)
    }

    fn update_state(&self, change: impl FnOnce(&mut VnetState) -> bool) -> Result<()> {
        let lock = self.store.lock()?;
        let mut state: VnetState = lock.load()?.unwrap_or_default();
        if change(&mut state) {
            lock.save(&state)?;
        }
        Ok(())
    }

    fn remove_port_mappings(&self) -> Result<()> {
        let _guard = self.iptables_lock().lock()?;
        let save = Iptables.save()?;
        if let Some(text) = iptables::dnat_del_restore(&save, &self.tag()) {
            Iptables.restore(&text)?;
            tracing::info!("removed port mappings of {}", self.key());
        }
        Ok(())
    }
}

/// The IPAM binary is our own azure-vnet-ipam when it sits next to this executable: then
/// the same code runs in this process and saves an exec per call (about a third of an ADD).
/// Any other IPAM plugin, or another build of azure-vnet-ipam elsewhere, is exec'd.
fn is_our_ipam(binary: &Path) -> bool {
    let ours = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    binary.file_name().is_some_and(|n| n == "azure-vnet-ipam")
        && binary.parent().map(Path::to_path_buf) == ours
}

/// Runs azure-vnet-ipam's command on the same request, answering as the exec'd plugin would.
fn ipam_in_process(req: &Request, command: &str) -> Result<Option<Value>> {
    let plugin = IpamPlugin::new(Box::new(Sysfs::default()));
    let outcome = match command {
        "ADD" => plugin.add(req).map(|r| Some(r.render(req.version))),
        "DEL" => plugin.del(req).map(|()| None),
        "CHECK" => plugin.check(req).map(|()| None),
        "STATUS" => plugin.status(req).map(|()| None),
        "GC" => crate::skel::valid_attachments(&req.config).and_then(|v| plugin.gc(req, &v)).map(|()| None),
        other => Err(Error::InvalidConfig(format!("no IPAM command {other}"))),
    };
    outcome.map_err(|e| Error::Delegate {
        plugin: "azure-vnet-ipam".into(),
        code: e.code(),
        msg: e.to_string(),
    })
}

/// Steps of an ADD that are undone, newest first, when a later step fails.
enum Undo {
    Address,
    Veth(String),
    PortMappings,
}

fn netns_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::InvalidEnv {
        name: "CNI_NETNS",
        reason: format!("cannot open network namespace {}: {e}", path.display()),
    })
}

impl Plugin for VnetPlugin {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let call = Call::new(req)?;
        let netns_path = req.env.netns.clone().unwrap_or_default();
        let netns = netns_file(&netns_path)?;
        let seen: VnetState = call.store.load()?.unwrap_or_default();
        call.rt.block_on(async {
            let nl = Netlink::connect()?;
            if let Some(ep) = seen.endpoints.get(&call.key()) {
                if Path::new(&ep.netns) == netns_path && nl.link(&ep.host_veth).await?.is_some() {
                    tracing::info!("repeated ADD for {}: returning the recorded result", call.key());
                    return serde_json::from_str(ep.result.get())
                        .map_err(|e| Error::Io(format!("recorded result unreadable: {e}")));
                }
            }
            let bridge = bridge::ensure(&nl, &call.cfg, &call.store, &seen).await?;
            let mut undo = Vec::new();
            match attach(&call, &nl, &bridge, &netns, &netns_path, &mut undo).await {
                Ok(result) => Ok(result),
                Err(e) => {
                    tracing::error!("ADD {} failed: {e}; rolling back {} steps", call.key(), undo.len());
                    roll_back(&call, &nl, undo).await;
                    Err(e)
                }
            }
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        let call = Call::new(req)?;
        let state: VnetState = call.store.load()?.unwrap_or_default();
        let ep = state.endpoints.get(&call.key()).cloned();
        let host = ep.as_ref().map_or_else(
            || names::host_veth(&req.env.container_id, &req.env.ifname),
            |e| e.host_veth.clone(),
        );
        // The kernel takes ~20 ms to tear a veth down; the iptables and record work is
        // independent of it (a retried DEL finds the veth by its derived name), so both run
        // at once. The address is released only after both.
        let (removed, mut errors) = std::thread::scope(|s| {
            let files = s.spawn(|| forget_endpoint(&call, ep.as_ref()));
            let removed = call.rt.block_on(async { Netlink::connect()?.delete_link(&host).await });
            (removed, files.join().unwrap_or_else(|_| vec![Error::Io("DEL helper thread panicked".into())]))
        });
        match removed {
            Ok(true) => tracing::info!("deleted {host} (and its peer in the pod)"),
            Ok(false) => tracing::info!("{host} was already gone"),
            Err(e) => errors.push(e),
        }
        // The address goes last, so it is never handed out while the old veth still exists.
        if let Err(e) = call.ipam("DEL") {
            errors.push(e);
        }
        match errors.len() {
            0 => {
                tracing::info!("DEL {} done", call.key());
                Ok(())
            }
            n => {
                for e in &errors[1..] {
                    tracing::error!("DEL {} also failed: {e}", call.key());
                }
                tracing::error!("DEL {}: {n} steps failed", call.key());
                Err(errors.remove(0))
            }
        }
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
        let ep = state
            .endpoints
            .get(&call.key())
            .ok_or_else(|| Error::UnknownContainer(format!("no endpoint recorded for {}", call.key())))?;
        let netns_path = req.env.netns.clone().unwrap_or_default();
        netns_file(&netns_path)?;
        call.rt.block_on(check_kernel(&call, &prev, ep, &netns_path))?;
        call.ipam("CHECK").map(|_| ())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let call = Call::new(req)?;
        let state: VnetState =
            call.store.load().map_err(|e| Error::NotAvailable(e.to_string()))?.unwrap_or_default();
        if let Some(node) = state.node.filter(|n| n.ready) {
            let present = call.rt.block_on(async { Netlink::connect()?.link(&node.bridge).await })?;
            if present.is_none() {
                return Err(Error::NotAvailable(format!("bridge {} is missing", node.bridge)));
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
        let stale: Vec<Endpoint> = state
            .endpoints
            .iter()
            .filter(|(k, e)| e.network == req.network && !valid.contains(*k))
            .map(|(_, e)| e.clone())
            .collect();
        call.rt.block_on(async {
            let nl = Netlink::connect()?;
            for e in &stale {
                nl.delete_link(&e.host_veth).await?;
            }
            Ok::<(), Error>(())
        })?;
        for e in &stale {
            if !e.port_mappings.is_empty() {
                let _guard = call.iptables_lock().lock()?;
                if let Some(text) =
                    iptables::dnat_del_restore(&Iptables.save()?, &iptables::tag(&e.container_id, &e.ifname))
                {
                    Iptables.restore(&text)?;
                }
            }
            tracing::info!("GC removed endpoint {}/{}", e.container_id, e.ifname);
        }
        call.update_state(|s| {
            let before = s.endpoints.len();
            s.endpoints.retain(|k, e| e.network != req.network || valid.contains(k));
            s.endpoints.len() != before
        })?;
        call.ipam("GC").map(|_| ())
    }
}

/// DEL's file-side steps: port-mapping rules, then the endpoint record.
fn forget_endpoint(call: &Call<'_>, ep: Option<&Endpoint>) -> Vec<Error> {
    let mut errors = Vec::new();
    match ep {
        Some(e) if e.port_mappings.is_empty() => {}
        Some(_) => errors.extend(call.remove_port_mappings().err()),
        // No record: an ADD may have died after adding rules; look, but do not fail on it.
        None => {
            if let Err(e) = call.remove_port_mappings() {
                tracing::warn!("could not look for port mappings of {}: {e}", call.key());
            }
        }
    }
    if ep.is_some() {
        errors.extend(call.update_state(|s| s.endpoints.remove(&call.key()).is_some()).err());
    }
    errors
}

async fn attach(
    call: &Call<'_>,
    nl: &Netlink,
    bridge: &Bridge,
    netns: &File,
    netns_path: &Path,
    undo: &mut Vec<Undo>,
) -> Result<CniResult> {
    let env = &call.req.env;
    let ipam_value = call.ipam("ADD")?.ok_or_else(|| bad_ipam("ADD printed no result"))?;
    undo.push(Undo::Address);
    let ipam: CniResult =
        serde_json::from_value(ipam_value).map_err(|e| bad_ipam(&format!("unreadable result: {e}")))?;
    let ip = ipam.ips.first().cloned().ok_or_else(|| bad_ipam("result has no address"))?;
    tracing::debug!("IPAM gave {} (gateway {:?})", ip.address, ip.gateway);
    if let Some(index) = nl.holder_of(ip.address.addr()).await? {
        let name = nl.link_by_index(index).await?.map_or(format!("#{index}"), |l| l.name);
        return Err(Error::AddressInUse(format!("{} is already on interface {name}", ip.address.addr())));
    }

    let host = names::host_veth(&env.container_id, &env.ifname);
    if nl.delete_link(&host).await? {
        tracing::info!("removed {host} left by an interrupted ADD");
    }
    nl.create_veth(&host, &env.ifname, netns).await?;
    undo.push(Undo::Veth(host.clone()));
    tracing::debug!("created veth {host} <-> {} in {}", env.ifname, netns_path.display());

    let pod = Netlink::connect_in(netns_path, &tokio::runtime::Handle::current())?;
    let pod_if = pod
        .link(&env.ifname)
        .await?
        .ok_or_else(|| Error::Netlink(format!("{} not found in the pod", env.ifname)))?;
    for c in &ipam.ips {
        pod.add_address(pod_if.index, c.address).await?;
    }
    pod.set_up(pod_if.index).await?;
    if let Some(lo) = pod.link("lo").await? {
        pod.set_up(lo.index).await?;
    }
    let node_v4 = bridge.record.addresses.iter().find(|a| a.addr().is_ipv4()).map(|a| a.addr());
    let routes = pod_routes(&ipam, ip.gateway, call.cfg.snat.then_some(node_v4).flatten());
    for r in &routes {
        pod.add_route(&route(r.dst, r.gw), pod_if.index).await?;
    }
    for dst in &call.cfg.ips_via_host {
        let spec = route(IpNet::from(*dst), node_v4);
        pod.add_route(&spec, pod_if.index).await?;
    }
    tracing::debug!("pod side: {} up with {}, {} routes", env.ifname, ip.address, routes.len());

    let host_link = nl.link(&host).await?.ok_or_else(|| Error::Netlink(format!("{host} vanished")))?;
    nl.set_controller(host_link.index, bridge.link.index).await?;
    nl.set_up(host_link.index).await?;
    tracing::debug!("host side: {host} on {}", bridge.record.bridge);

    let subnet = ip.address.trunc();
    if call.cfg.snat && !bridge.record.snat_subnets.contains(&subnet) {
        ensure_snat(call, &bridge.record.snat_subnets, subnet)?;
    }
    if !call.cfg.port_mappings.is_empty() {
        let _guard = call.iptables_lock().lock()?;
        let text = iptables::dnat_add_restore(
            &Iptables.save()?,
            &call.tag(),
            ip.address.addr(),
            &call.cfg.port_mappings,
        );
        undo.push(Undo::PortMappings);
        Iptables.restore(&text)?;
        tracing::debug!("{} port mappings to {}", call.cfg.port_mappings.len(), ip.address.addr());
    }

    let result = CniResult {
        interfaces: vec![
            Interface { name: host.clone(), mac: mac_text(&host_link.mac), sandbox: String::new() },
            Interface {
                name: env.ifname.clone(),
                mac: mac_text(&pod_if.mac),
                sandbox: netns_path.display().to_string(),
            },
        ],
        ips: ipam.ips.iter().map(|c| IpConfig { interface: Some(1), version: None, ..c.clone() }).collect(),
        routes,
        dns: merge_dns(&ipam.dns, &call.cfg.dns),
    };
    let endpoint = Endpoint {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: call.req.network.clone(),
        netns: netns_path.display().to_string(),
        host_veth: host,
        address: ip.address.addr(),
        port_mappings: call.cfg.port_mappings.clone(),
        result: serde_json::value::to_raw_value(&result.render(Version::parse("1.0.0")?))
            .map_err(|e| Error::Io(format!("encoding the result: {e}")))?,
    };
    call.update_state(|s| {
        s.endpoints.insert(call.key(), endpoint);
        true
    })?;
    tracing::info!("ADD {}: {} on {}", call.key(), ip.address, bridge.record.bridge);
    Ok(result)
}

fn ensure_snat(call: &Call<'_>, known: &[IpNet], subnet: IpNet) -> Result<()> {
    let _guard = call.iptables_lock().lock()?;
    let mut subnets = known.to_vec();
    subnets.push(subnet);
    let vnet = if call.cfg.vnet_cidrs.is_empty() { subnets.clone() } else { call.cfg.vnet_cidrs.clone() };
    Iptables.restore(&iptables::snat_restore(&Iptables.save()?, &subnets, &vnet))?;
    call.update_state(|s| match s.node.as_mut() {
        Some(n) if !n.snat_subnets.contains(&subnet) => {
            n.snat_subnets.push(subnet);
            true
        }
        _ => false,
    })?;
    tracing::info!(
        "outbound SNAT for {subnet} (VNet: {})",
        vnet.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

async fn roll_back(call: &Call<'_>, nl: &Netlink, undo: Vec<Undo>) {
    for step in undo.into_iter().rev() {
        let (what, r) = match step {
            Undo::PortMappings => ("port mappings", call.remove_port_mappings()),
            Undo::Veth(name) => ("veth", nl.delete_link(&name).await.map(|_| ())),
            Undo::Address => ("address", call.ipam("DEL").map(|_| ())),
        };
        if let Err(e) = r {
            tracing::error!("rollback of {what} for {} failed: {e}", call.key());
        }
    }
}

async fn check_kernel(call: &Call<'_>, prev: &CniResult, ep: &Endpoint, netns_path: &Path) -> Result<()> {
    let ifname = &call.req.env.ifname;
    let nl = Netlink::connect()?;
    let host = nl
        .link(&ep.host_veth)
        .await?
        .ok_or_else(|| Error::Mismatch(format!("host veth {} is missing", ep.host_veth)))?;
    if host.controller.is_none() {
        return Err(Error::Mismatch(format!("{} is not on the bridge", ep.host_veth)));
    }
    let pod = Netlink::connect_in(netns_path, &tokio::runtime::Handle::current())?;
    let link =
        pod.link(ifname).await?.ok_or_else(|| Error::Mismatch(format!("{ifname} is missing in the pod")))?;
    let have: Vec<IpNet> = pod.addresses(Some(link.index)).await?.into_iter().map(|(_, a)| a).collect();
    for c in &prev.ips {
        if !have.contains(&c.address) {
            return Err(Error::Mismatch(format!("{ifname} lacks {}", c.address)));
        }
    }
    let routes = pod.routes().await?;
    for r in &prev.routes {
        let gw = r.gw.or_else(|| prev.ips.first().and_then(|c| c.gateway));
        if !routes.iter().any(|x| x.dst == r.dst && x.gw == gw) {
            return Err(Error::Mismatch(format!("the pod has no route to {} via {gw:?}", r.dst)));
        }
    }
    Ok(())
}

/// The pod's routes: IPAM's, with gateways filled in. With outbound SNAT the IPv4 default
/// route goes via the node, so traffic leaving the VNet passes the node's SNAT; the VNet
/// itself stays one L2 hop away (the subnet route).
fn pod_routes(ipam: &CniResult, gateway: Option<IpAddr>, via_node: Option<IpAddr>) -> Vec<Route> {
    ipam.routes
        .iter()
        .map(|r| {
            let default_v4 = r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4();
            let gw = if default_v4 { via_node.or(r.gw).or(gateway) } else { r.gw.or(gateway) };
            Route { dst: r.dst, gw }
        })
        .collect()
}

fn route(dst: IpNet, gw: Option<IpAddr>) -> RouteSpec {
    RouteSpec { dst, gw, metric: None, src: None, link_scope: false, kernel: false, oif: None }
}

fn bad_ipam(msg: &str) -> Error {
    Error::Delegate { plugin: "ipam".into(), code: 112, msg: msg.to_string() }
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
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
