//! Every rtnetlink call of the plugin, behind a small typed surface. Creation and deletion are
//! idempotent here (EEXIST on add and "not found" on delete are success) so that callers can
//! replay steps after a crash or a race without special cases.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::skel::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub controller: Option<u32>,
    pub up: bool,
    pub loopback: bool,
    /// The driver kind (`veth`, `bridge`, …); `None` for plain devices.
    pub kind: Option<String>,
}

/// A neighbour (ARP) entry: address, link-layer address, and whether it is permanent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: Vec<u8>,
    pub permanent: bool,
}

/// A route as the plugin records and replays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    /// Link scope (a directly connected prefix).
    #[serde(default)]
    pub link_scope: bool,
    /// Added by the kernel for an address's prefix; recreated by the kernel, never replayed.
    #[serde(default, skip)]
    pub kernel: bool,
    #[serde(default, skip)]
    pub oif: Option<u32>,
}

/// A connection to the kernel's routing netlink in one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => Some(Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

fn fail(what: impl std::fmt::Display, e: rtnetlink::Error) -> Error {
    match errno(&e) {
        Some(code) => Error::Netlink(format!("{what}: {}", code.desc())),
        None => Error::Netlink(format!("{what}: {e}")),
    }
}

/// Success, or one of the errno values that mean "already done".
fn tolerate(r: Result<(), rtnetlink::Error>, ok: &[Errno], what: impl std::fmt::Display) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if errno(&e).is_some_and(|c| ok.contains(&c)) => Ok(()),
        Err(e) => Err(fail(what, e)),
    }
}

impl Netlink {
    /// Connects in the calling thread's network namespace; needs a tokio runtime context.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Netlink(format!("opening netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Connects inside the network namespace at `path`. The socket is created on a short-lived
    /// thread that enters the namespace (setns affects only that thread), then driven from here.
    pub fn connect_in(path: &Path, rt: &tokio::runtime::Handle) -> Result<Netlink> {
        let ns = File::open(path).map_err(|e| Error::InvalidEnv {
            name: "CNI_NETNS",
            reason: format!("cannot open {}: {e}", path.display()),
        })?;
        let rt = rt.clone();
        let made = std::thread::spawn(move || {
            let _ctx = rt.enter();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Netlink(format!("entering network namespace: {}", e.desc())))?;
            rtnetlink::new_connection()
                .map_err(|e| Error::Netlink(format!("opening netlink socket in namespace: {e}")))
        })
        .join()
        .map_err(|_| Error::Netlink("namespace helper thread panicked".into()))??;
        let (conn, handle, _) = made;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(to_link(&msg))),
            Ok(None) => Ok(None),
            Err(e) if matches!(errno(&e), Some(Errno::ENODEV)) => Ok(None),
            Err(e) => Err(fail(format_args!("looking up link {name}"), e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(|m| to_link(&m))),
            Err(e) if matches!(errno(&e), Some(Errno::ENODEV)) => Ok(None),
            Err(e) => Err(fail(format_args!("looking up link #{index}"), e)),
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(|e| fail("listing links", e))?;
        Ok(msgs.iter().map(to_link).collect())
    }

    /// Creates the bridge (up, with the given MAC) unless it exists.
    pub async fn create_bridge(&self, name: &str, mac: &[u8]) -> Result<()> {
        let msg = LinkBridge::new(name).address(mac.to_vec()).up().build();
        let r = self.handle.link().add(msg).execute().await;
        tolerate(r, &[Errno::EEXIST], format_args!("creating bridge {name}"))
    }

    /// Creates a veth pair whose peer is born inside the namespace `peer_ns` with its final
    /// name; both ends get the given MACs.
    pub async fn create_veth(
        &self,
        host: &str,
        host_mac: &[u8],
        peer: &str,
        peer_mac: &[u8],
        peer_ns: &File,
    ) -> Result<()> {
        let mut msg = LinkVeth::new(host, peer).address(host_mac.to_vec()).build();
        // The builder's peer message only carries the name; add the target namespace to it.
        for attr in msg.attributes.iter_mut() {
            if let LinkAttribute::LinkInfo(infos) = attr {
                for info in infos.iter_mut() {
                    if let rtnetlink::packet_route::link::LinkInfo::Data(
                        rtnetlink::packet_route::link::InfoData::Veth(
                            rtnetlink::packet_route::link::InfoVeth::Peer(p),
                        ),
                    ) = info
                    {
                        p.attributes.push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
                        p.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
                    }
                }
            }
        }
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| fail(format_args!("creating veth {host} with peer {peer}"), e))
    }

    pub async fn set_controller(&self, index: u32, controller: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(controller).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| fail(format_args!("enslaving link #{index}"), e))
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| fail(format_args!("setting link #{index} up"), e))
    }

    /// Takes a link down and puts it in link group `group` (one request).
    pub async fn park(&self, index: u32, group: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .down()
            .append_extra_attribute(LinkAttribute::Group(group))
            .build();
        let r = self.handle.link().set(msg).execute().await;
        tolerate(r, &[Errno::ENODEV], format_args!("taking link #{index} down"))
    }

    /// Renames a link (it must be down).
    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).name(name.to_string()).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| fail(format_args!("renaming link #{index} to {name}"), e))
    }

    /// The links of link group `group`.
    pub async fn group(&self, group: u32) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(|e| fail("listing links", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.attributes.iter().any(|a| matches!(a, LinkAttribute::Group(g) if *g == group)))
            .map(to_link)
            .collect())
    }

    /// Deletes every link of group `group` in one request: the kernel unregisters them
    /// together and waits once, not once per link.
    pub async fn delete_group(&self, group: u32) -> Result<()> {
        let mut req = self.handle.link().del(0);
        req.message_mut().attributes.push(LinkAttribute::Group(group));
        tolerate(req.execute().await, &[Errno::ENODEV], format_args!("deleting link group {group}"))
    }

    /// Deletes a link by name; false when it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(link) = self.link(name).await? else { return Ok(false) };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno(&e), Some(Errno::ENODEV)) => Ok(false),
            Err(e) => Err(fail(format_args!("deleting link {name}"), e)),
        }
    }

    /// Addresses as (link index, address/prefix), optionally of one link.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<_> = req.execute().try_collect().await.map_err(|e| fail("listing addresses", e))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let addr = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })?;
                Some((m.header.index, IpNet::new(addr, m.header.prefix_len).ok()?))
            })
            .collect())
    }

    /// The link holding `addr`, if any. Dumps only that address family (a node with hundreds
    /// of pods has hundreds of IPv6 link-local addresses it need not read).
    pub async fn holder_of(&self, addr: IpAddr) -> Result<Option<u32>> {
        let mut req = self.handle.address().get();
        req.message_mut().header.family =
            if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let msgs: Vec<_> = req
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail("listing addresses", e))?;
        Ok(msgs.first().map(|m| m.header.index))
    }

    pub async fn add_address(&self, index: u32, net: IpNet) -> Result<()> {
        self.add_address_with(index, net, true).await
    }

    /// Adds an address; without `prefix_route` the kernel adds no route for its prefix.
    pub async fn add_address_with(&self, index: u32, net: IpNet, prefix_route: bool) -> Result<()> {
        let mut req = self.handle.address().add(index, net.addr(), net.prefix_len());
        if !prefix_route {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        let r = req.execute().await;
        tolerate(r, &[Errno::EEXIST], format_args!("adding address {net} to link #{index}"))
    }

    /// Sets a permanent neighbour entry (replacing whatever the kernel had for `ip` there).
    pub async fn set_neighbour(&self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| fail(format_args!("setting neighbour {ip} on link #{index}"), e))
    }

    /// The IPv4 neighbour entries of one link.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let msgs: Vec<_> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail("listing neighbours", e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| {
                let mut ip = None;
                let mut mac = Vec::new();
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            ip = Some(IpAddr::V4(*v4))
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => mac = l.clone(),
                        _ => {}
                    }
                }
                Some(Neighbour { ip: ip?, mac, permanent: m.header.state == NeighbourState::Permanent })
            })
            .collect())
    }

    /// Removes the neighbour entry for `ip` on a link; absent is fine.
    pub async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        let mut msg = rtnetlink::packet_route::neighbour::NeighbourMessage::default();
        msg.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.ifindex = index;
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        let r = self.handle.neighbours().del(msg).execute().await;
        tolerate(r, &[Errno::ENOENT, Errno::ENODEV], format_args!("removing neighbour {ip}"))
    }

    pub async fn del_address(&self, index: u32, net: IpNet) -> Result<()> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(net.addr())
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail("listing addresses", e))?;
        for m in msgs.into_iter().filter(|m| m.header.prefix_len == net.prefix_len()) {
            let r = self.handle.address().del(m).execute().await;
            tolerate(r, &[Errno::EADDRNOTAVAIL, Errno::ENODEV], format_args!("removing address {net}"))?;
        }
        Ok(())
    }

    /// Unicast routes of the main table, both families.
    pub async fn routes(&self) -> Result<Vec<RouteSpec>> {
        let mut out = Vec::new();
        let queries =
            [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()];
        for q in queries {
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(q)
                .execute()
                .try_collect()
                .await
                .map_err(|e| fail("listing routes", e))?;
            out.extend(msgs.iter().filter_map(to_route));
        }
        Ok(out)
    }

    pub async fn add_route(&self, route: &RouteSpec, oif: u32) -> Result<()> {
        let msg = route_message(route, oif);
        let r = self.handle.route().add(msg).execute().await;
        tolerate(r, &[Errno::EEXIST], format_args!("adding route {} via {:?}", route.dst, route.gw))
    }

    pub async fn del_route(&self, route: &RouteSpec, oif: u32) -> Result<()> {
        let msg = route_message(route, oif);
        let r = self.handle.route().del(msg).execute().await;
        tolerate(
            r,
            &[Errno::ESRCH, Errno::ENOENT, Errno::ENODEV],
            format_args!("removing route {}", route.dst),
        )
    }
}

fn to_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        controller: None,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.link_layer_type == LinkLayerType::Loopback,
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(mac) => link.mac = mac.clone(),
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(InfoKind::Bridge) => Some("bridge".to_string()),
                    LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_string()),
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    link
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn to_route(m: &RouteMessage) -> Option<RouteSpec> {
    if m.header.table != 254 || m.header.kind != RouteType::Unicast {
        return None;
    }
    let v4 = m.header.address_family == AddressFamily::Inet;
    let mut dst_ip = if v4 { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let mut spec = RouteSpec {
        dst: IpNet::default(),
        gw: None,
        metric: None,
        src: None,
        link_scope: m.header.scope == RouteScope::Link,
        kernel: m.header.protocol == RouteProtocol::Kernel,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst_ip = ip_of(d)?,
            RouteAttribute::Gateway(g) => spec.gw = ip_of(g),
            RouteAttribute::PrefSource(s) => spec.src = ip_of(s),
            RouteAttribute::Priority(p) => spec.metric = Some(*p),
            RouteAttribute::Oif(i) => spec.oif = Some(*i),
            _ => {}
        }
    }
    spec.dst = IpNet::new(dst_ip, m.header.destination_prefix_length).ok()?;
    Some(spec)
}

fn route_message(r: &RouteSpec, oif: u32) -> RouteMessage {
    let scope = if r.link_scope { RouteScope::Link } else { RouteScope::Universe };
    let mut msg = match r.dst {
        IpNet::V4(d) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(d.addr(), d.prefix_len());
            if let Some(IpAddr::V4(g)) = r.gw {
                b = b.gateway(g);
            }
            if let Some(IpAddr::V4(s)) = r.src {
                b = b.pref_source(s);
            }
            b.output_interface(oif).scope(scope).build()
        }
        IpNet::V6(d) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(d.addr(), d.prefix_len());
            if let Some(IpAddr::V6(g)) = r.gw {
                b = b.gateway(g);
            }
            b.output_interface(oif).scope(scope).build()
        }
    };
    if let Some(m) = r.metric {
        msg.attributes.push(RouteAttribute::Priority(m));
    }
    msg
}
