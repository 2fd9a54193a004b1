//! The real `Kernel`: steps carried out over rtnetlink (node and pod namespaces), nf_tables
//! netlink (translation map elements) and iptables-restore (SNAT, port mappings). Link indices
//! are looked up once per name and remembered for the rest of the command.
//!
//! DEL and GC defer what the kernel is slow at to the reaper (`reaper.rs`): they park the veth
//! (the host end down, which at once removes the routes and neighbour entries through it and
//! stops the bridge forwarding to it, and in link group `REAP_GROUP`; the pod end down and
//! renamed `azq…`, so `CNI_IFNAME` is free at once for the next ADD into that namespace) and
//! leave its deletion, and the removal of the translation element, to the reaper. A rollback
//! or an ADD starting over deletes at once: it makes the same names again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::bridge;
use super::hold;
use super::iptables::{self, Iptables, NatTable};
use super::mac::Mac;
use super::mode::Mode;
use super::netlink::{Netlink, RouteSpec};
use super::nft::Nft;
use super::reaper::{self, REAP_GROUP};
use super::records::Records;

use super::state::NodeRecord;
use super::step::{Kernel, Step};
use super::translation;
use crate::skel::error::{Error, Result};
use crate::store::{suffixed, Store};

pub struct RealKernel<'a> {
    rt: &'a tokio::runtime::Runtime,
    host: Netlink,
    pod_ns: Option<PathBuf>,
    pod: Option<Netlink>,
    nft: Option<Nft>,
    /// Serialises nat-table edits between plugin processes.
    nat_lock: Store,
    /// Keeps translation inserts off the reaper's pruning (see `reaper.rs`).
    translation_lock: Store,
    /// For re-installing the translation table when a step finds it gone.
    node: Option<NodeRecord>,
    links: HashMap<(bool, String), u32>,
    /// DEL/GC: what was left to the reaper (see the module doc).
    deferred: Option<Vec<String>>,
    /// The state file: where the reaper and the translation lock are found.
    state_file: PathBuf,
}

fn route(dst: IpNet, gw: Option<IpAddr>, link_scope: bool) -> RouteSpec {
    RouteSpec { dst, gw, metric: None, src: None, link_scope, kernel: false, oif: None }
}

impl<'a> RealKernel<'a> {
    /// A kernel for one command on the state file `state_file` (whose siblings are its locks).
    pub fn new(
        rt: &'a tokio::runtime::Runtime,
        pod_ns: Option<&Path>,
        state_file: &Path,
        lock_timeout: Duration,
    ) -> Result<RealKernel<'a>> {
        let host = {
            let _ctx = rt.enter();
            Netlink::connect()?
        };
        Ok(RealKernel {
            rt,
            host,
            pod_ns: pod_ns.map(Path::to_path_buf),
            pod: None,
            nft: None,
            nat_lock: Store::new(suffixed(state_file, ".iptables"), lock_timeout),
            translation_lock: reaper::translation_lock(state_file, lock_timeout),
            node: None,
            links: HashMap::new(),
            deferred: None,
            state_file: state_file.to_path_buf(),
        })
    }

    /// The node's record, for re-installing its translation table if a step finds it gone.
    pub fn set_node(&mut self, node: Option<NodeRecord>) {
        self.node = node;
    }

    /// From now on slow teardown is left to the reaper (DEL, GC).
    pub fn defer_to_reaper(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// Starts the detached reaper for what was left to it, unless one is pending (it will see
    /// it). If none can start, parked veths are deleted here and now.
    pub fn finish(&mut self) {
        let Some(left) = self.deferred.take().filter(|n| !n.is_empty()) else { return };
        if reaper::pending(&self.state_file) {
            tracing::debug!("a reaper is pending; it takes {}", left.join(", "));
            return;
        }
        match reaper::start(&self.state_file) {
            Ok(pid) => tracing::debug!("reaper {pid} takes {}", left.join(", ")),
            Err(e) => {
                tracing::warn!("cannot start the reaper ({e}); deleting now");
                for name in left.iter().filter(|n| n.starts_with("azv")) {
                    if let Err(e) = self.rt.block_on(self.host.delete_link(name)) {
                        tracing::warn!("deleting {name}: {e}");
                    }
                }
            }
        }
    }

    pub fn host(&self) -> &Netlink {
        &self.host
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn pod(&mut self) -> Result<Netlink> {
        if let Some(p) = &self.pod {
            return Ok(p.clone());
        }
        let path =
            self.pod_ns.clone().ok_or_else(|| Error::Netlink("no pod namespace for this step".into()))?;
        let handle = self.rt.handle().clone();
        let nl = self.rt.block_on(async { Netlink::connect_in(&path, &handle) })?;
        self.pod = Some(nl.clone());
        Ok(nl)
    }

    fn nft(&mut self) -> Result<&mut Nft> {
        if self.nft.is_none() {
            self.nft = Some(Nft::open()?);
        }
        self.nft.as_mut().ok_or_else(|| Error::Netlink("nf_tables socket".into()))
    }

    /// The index of link `name` on the node (`in_pod` false) or in the pod; `None` if absent.
    fn index(&mut self, in_pod: bool, name: &str) -> Result<Option<u32>> {
        if let Some(i) = self.links.get(&(in_pod, name.to_string())) {
            return Ok(Some(*i));
        }
        let nl = if in_pod { self.pod()? } else { self.host.clone() };
        let found = self.rt.block_on(nl.link(name))?.map(|l| l.index);
        if let Some(i) = found {
            self.links.insert((in_pod, name.to_string()), i);
        }
        Ok(found)
    }

    /// Frees `ifname` in the pod at once (best effort: the namespace may be gone, and then so
    /// is the pair): our pod end, recognised by its MAC, goes down and takes its parked name.
    fn park_pod_end(&mut self, host: &str, ifname: &str, pod_mac: Mac) {
        let Some(path) = self.pod_ns.clone().filter(|p| p.exists()) else { return };
        let parked = reaper::parked_name(host);
        let done = self.pod().and_then(|pod| {
            self.rt.block_on(async {
                match pod.link(ifname).await? {
                    Some(l) if l.mac == pod_mac.bytes() => {
                        pod.park(l.index, REAP_GROUP).await?;
                        pod.rename(l.index, &parked).await
                    }
                    _ => Ok(()),
                }
            })
        });
        if let Err(e) = done {
            tracing::warn!("could not free {ifname} in {}: {e}", path.display());
        }
    }

    /// The veth's ends get new indices when it is made again.
    fn forget_veth(&mut self, host: &str, ifname: &str) {
        self.links.remove(&(false, host.to_string()));
        self.links.remove(&(true, ifname.to_string()));
    }

    fn require(&mut self, in_pod: bool, name: &str) -> Result<u32> {
        let side = if in_pod { "in the pod" } else { "on the node" };
        self.index(in_pod, name)?.ok_or_else(|| Error::Netlink(format!("{name} not found {side}")))
    }

    fn translation(&mut self, table: &str, ip: std::net::Ipv4Addr, mac: Mac) -> Result<()> {
        let map = translation::map_ref(table);
        // Never between the reaper's reading of the records and its removals.
        let _guard = self.translation_lock.lock()?;
        match self.nft()?.put(map, &ip.octets(), mac.bytes()) {
            Err(Error::Nft { missing: true, msg }) => {
                let node = self.node.as_ref().ok_or(Error::Nft { missing: true, msg: msg.clone() })?;
                tracing::warn!("{msg}; re-installing the translation table of {}", node.bridge);
                bridge::install_translation(node)?;

                self.restore_translations(table)?;
                self.nft()?.put(map, &ip.octets(), mac.bytes()).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// Puts back the element of every recorded bridge-mode endpoint (a table re-installed
    /// after someone removed it starts empty).
    fn restore_translations(&mut self, table: &str) -> Result<()> {
        let (records, unreadable) = Records::beside(&self.state_file).all()?;
        for e in unreadable {
            tracing::warn!("not restoring a translation from an unreadable record: {e}");
        }
        let map = translation::map_ref(table);
        let mut restored = 0;
        for a in records.iter().filter(|e| e.mode == Mode::Bridge).filter_map(|e| e.attach.as_ref()) {
            for address in &a.addresses {
                if let std::net::IpAddr::V4(v4) = address.addr() {
                    self.nft()?.put(map, &v4.octets(), a.pod_mac().bytes())?;
                    restored += 1;
                }
            }
        }
        tracing::info!("restored the translations of {restored} recorded endpoints");
        Ok(())
    }

    fn nat_edit(&mut self, render: impl FnOnce(&str) -> Option<String>) -> Result<()> {
        let _guard = self.nat_lock.lock()?;
        if let Some(text) = render(&Iptables.save()?) {
            Iptables.restore(&text)?;
        }
        Ok(())
    }

    fn nat_holds(&self, check: impl FnOnce(&str) -> bool) -> Result<bool> {
        Ok(check(&Iptables.save()?))
    }
}

impl Kernel for RealKernel<'_> {
    fn apply(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Veth { host, host_mac, ifname, pod_mac } => {
                self.forget_veth(host, ifname);
                if self.rt.block_on(self.host.delete_link(host))? {
                    tracing::info!("removed {host} left by an interrupted ADD");
                }
                let path = self.pod_ns.clone().ok_or_else(|| Error::Netlink("no pod namespace".into()))?;
                let ns = std::fs::File::open(&path).map_err(|e| Error::InvalidEnv {
                    name: "CNI_NETNS",
                    reason: format!("cannot open network namespace {}: {e}", path.display()),
                })?;
                self.rt.block_on(self.host.create_veth(host, host_mac.bytes(), ifname, pod_mac.bytes(), &ns))
            }
            Step::PodAddress { ifname, address, prefix_route } => {
                let i = self.require(true, ifname)?;
                let pod = self.pod()?;
                self.rt.block_on(pod.add_address_with(i, *address, *prefix_route))
            }
            Step::PodUp { ifname } => {
                let i = self.require(true, ifname)?;
                let lo = self.index(true, "lo")?;
                let pod = self.pod()?;
                self.rt.block_on(async {
                    pod.set_up(i).await?;
                    if let Some(lo) = lo {
                        pod.set_up(lo).await?;
                    }
                    Ok(())
                })
            }
            Step::PodRoute { ifname, dst, gw, link_scope } => {
                let i = self.require(true, ifname)?;
                let pod = self.pod()?;
                self.rt.block_on(pod.add_route(&route(*dst, *gw, *link_scope), i))
            }
            Step::PodNeighbour { ifname, ip, mac } => {
                let i = self.require(true, ifname)?;
                let pod = self.pod()?;
                self.rt.block_on(pod.set_neighbour(i, *ip, mac.bytes()))
            }
            Step::HostOnBridge { host, bridge } => {
                let (h, b) = (self.require(false, host)?, self.require(false, bridge)?);
                self.rt.block_on(self.host.set_controller(h, b))
            }
            Step::HostUp { host } => {
                let h = self.require(false, host)?;
                self.rt.block_on(self.host.set_up(h))
            }
            Step::HostRoute { host, dst } => {
                let h = self.require(false, host)?;
                self.rt.block_on(self.host.add_route(&route(*dst, None, true), h))
            }
            Step::BridgeNeighbour { bridge, ip, mac } => {
                let b = self.require(false, bridge)?;
                self.rt.block_on(self.host.set_neighbour(b, *ip, mac.bytes()))
            }
            Step::Translation { table, ip, mac } => self.translation(table, *ip, *mac),
            Step::Hold { ip } => {
                if !hold::change(self.nft()?, hold::Op::Hold, *ip)? {
                    tracing::debug!(
                        "no hold set (ipset {}, nft inet {} {}): no policy agent on this node to hold {ip} for",
                        hold::HOLD_SET,
                        hold::NFT_HOLD.table,
                        hold::NFT_HOLD.set
                    );
                }
                Ok(())
            }
            Step::Snat { subnets, vnet } => {
                self.nat_edit(|save| Some(iptables::snat_restore(save, subnets, vnet)))?;
                tracing::info!(
                    "outbound SNAT for {} (VNet: {})",
                    subnets.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                    vnet.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
                );
                Ok(())
            }
            Step::PortMappings { tag, ip, mappings, masquerade } => {
                self.nat_edit(|save| Some(iptables::dnat_add_restore(save, tag, *ip, mappings, *masquerade)))
            }
        }
    }

    fn undo(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Veth { host, ifname, pod_mac, .. } if self.deferred.is_some() => {
                self.forget_veth(host, ifname);
                let Some(link) = self.rt.block_on(self.host.link(host))? else {
                    tracing::info!("{host} was already gone");
                    return Ok(());
                };
                self.rt.block_on(self.host.park(link.index, REAP_GROUP))?;
                self.park_pod_end(host, ifname, *pod_mac);
                tracing::info!("parked {host} (down, detached; deleted in the background)");
                self.deferred.get_or_insert_with(Vec::new).push(host.clone());
                Ok(())
            }
            Step::Veth { host, ifname, .. } => {
                self.forget_veth(host, ifname);
                if self.rt.block_on(self.host.delete_link(host))? {
                    tracing::info!("deleted {host} (and its peer in the pod)");
                } else {
                    tracing::info!("{host} was already gone");
                }
                Ok(())
            }
            // Removed by key, without reading first: the address is still this endpoint's (IPAM
            // releases it last), so no other endpoint can hold an entry for it yet.
            Step::BridgeNeighbour { bridge, ip, .. } => {
                let Some(b) = self.index(false, bridge)? else { return Ok(()) };
                self.rt.block_on(self.host.del_neighbour(b, *ip))
            }
            Step::Translation { ip, .. } if self.deferred.is_some() => {
                tracing::debug!("the translation of {ip} is left to the reaper");
                self.deferred.get_or_insert_with(Vec::new).push(ip.to_string());
                Ok(())
            }
            Step::Translation { table, ip, .. } => {
                match self.nft()?.remove(translation::map_ref(table), &ip.octets()) {
                    Ok(_) | Err(Error::Nft { missing: true, .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }

            Step::PortMappings { tag, .. } => self.nat_edit(|save| iptables::dnat_del_restore(save, tag)),
            Step::Hold { ip } => hold::change(self.nft()?, hold::Op::Release, *ip).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn holds(&mut self, step: &Step) -> Result<bool> {
        match step {
            Step::Veth { host, host_mac, ifname, pod_mac } => {
                let h = self.rt.block_on(self.host.link(host))?;
                let pod = self.pod()?;
                let p = self.rt.block_on(pod.link(ifname))?;
                Ok(h.is_some_and(|l| l.mac == host_mac.bytes())
                    && p.is_some_and(|l| l.mac == pod_mac.bytes()))
            }
            Step::PodAddress { ifname, address, .. } => {
                let Some(i) = self.index(true, ifname)? else { return Ok(false) };
                let pod = self.pod()?;
                Ok(self.rt.block_on(pod.addresses(Some(i)))?.iter().any(|(_, a)| a == address))
            }
            Step::PodUp { ifname } => {
                let pod = self.pod()?;
                Ok(self.rt.block_on(pod.link(ifname))?.is_some_and(|l| l.up))
            }
            Step::PodRoute { dst, gw, .. } => {
                let pod = self.pod()?;
                Ok(self.rt.block_on(pod.routes())?.iter().any(|r| r.dst == *dst && r.gw == *gw))
            }
            Step::PodNeighbour { ifname, ip, mac } => {
                let Some(i) = self.index(true, ifname)? else { return Ok(false) };
                let pod = self.pod()?;
                let n = self.rt.block_on(pod.neighbours(i))?;
                Ok(n.iter().any(|n| n.ip == *ip && n.mac == mac.bytes() && n.permanent))
            }
            Step::HostOnBridge { host, bridge } => {
                let b = self.index(false, bridge)?;
                Ok(b.is_some() && self.rt.block_on(self.host.link(host))?.is_some_and(|l| l.controller == b))
            }
            Step::HostUp { host } => Ok(self.rt.block_on(self.host.link(host))?.is_some_and(|l| l.up)),
            Step::HostRoute { host, dst } => {
                let Some(h) = self.index(false, host)? else { return Ok(false) };
                Ok(self.rt.block_on(self.host.routes())?.iter().any(|r| r.dst == *dst && r.oif == Some(h)))
            }
            Step::BridgeNeighbour { bridge, ip, mac } => {
                let Some(b) = self.index(false, bridge)? else { return Ok(false) };
                let n = self.rt.block_on(self.host.neighbours(b))?;
                Ok(n.iter().any(|n| n.ip == *ip && n.mac == mac.bytes() && n.permanent))
            }
            Step::Translation { table, ip, mac } => {
                let list = match self.nft()?.list(translation::map_ref(table)) {
                    Ok(l) => l,
                    Err(Error::Nft { missing: true, .. }) => return Ok(false),
                    Err(e) => return Err(e),
                };
                Ok(list.iter().any(|e| e.key == ip.octets() && e.value == mac.bytes()))
            }
            // Released by the agent once it has programmed the pod: nothing to check.
            Step::Hold { .. } => Ok(true),
            Step::Snat { .. } => {
                self.nat_holds(|save| save.contains(&format!("-A {} ", iptables::SNAT_CHAIN)))
            }
            Step::PortMappings { tag, mappings, .. } => {
                self.nat_holds(|save| iptables::dnat_rules_of(save, tag) >= mappings.len())
            }
        }
    }
}
