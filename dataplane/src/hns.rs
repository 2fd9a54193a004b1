//! The IR as Windows HNS ACL endpoint policies: one ordered ACL list per pod endpoint (lower
//! Priority wins; the first matching ACL decides). Per endpoint:
//! - priority 100: Allow In from the pod's own node;
//! - priority 1000+: Allow In/Out for each policy rule that applies to this pod;
//! - priority 60000: Block In (Out) when the pod is isolated for ingress (egress);
//! - priority 65500: Allow In and Out (everything else).
//!
//! HNS has no IP sets with `nomatch`, no ip,port sets and no marks, so the renderer expands:
//! ipBlock `except` becomes the CIDRs of `cidr` minus the exceptions; named ports resolve on the
//! endpoint (ingress) or group remote pods by port number (egress). What HNS cannot express at
//! all is reported in `unsupported` and the allow is omitted, which only ever blocks more:
//! SCTP, and port ranges wider than `MAX_PORT_LIST` ports (ranges are written as port lists).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use policy_compiler::ir::{Action, IpSet, Ir, Member, Rule, SetId, SetKind};
use policy_compiler::model::{Cluster, Protocol};

pub const MAX_PORT_LIST: u32 = 64;
const NODE_PRIORITY: u16 = 100;
const RULE_PRIORITY: u16 = 1000;
const ISOLATION_PRIORITY: u16 = 60000;
const DEFAULT_PRIORITY: u16 = 65500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Acl {
    /// The rule's origin, e.g. `x/web ingress[0]`.
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    pub action: String,
    pub direction: String,
    /// Comma-separated addresses and CIDRs; empty means any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_addresses: String,
    /// IANA protocol number; empty means any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocols: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_ports: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remote_ports: String,
    pub priority: u16,
    pub rule_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAcls {
    pub pod: String,
    pub ip: IpAddr,
    pub acls: Vec<Acl>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub endpoints: Vec<EndpointAcls>,
    /// Rules (or parts) HNS cannot express, each with what was done instead.
    pub unsupported: Vec<String>,
}

fn acl(id: &str, action: &str, direction: &str, priority: u16) -> Acl {
    Acl {
        id: id.to_string(),
        kind: "ACL".into(),
        action: action.into(),
        direction: direction.into(),
        remote_addresses: String::new(),
        protocols: String::new(),
        local_ports: String::new(),
        remote_ports: String::new(),
        priority,
        rule_type: "Switch".into(),
    }
}

/// `net` minus every CIDR in `holes`, as a list of CIDRs.
pub fn subtract(net: IpNet, holes: &[IpNet]) -> Vec<IpNet> {
    if holes.iter().any(|h| h.contains(&net)) {
        return Vec::new();
    }
    if !holes.iter().any(|h| net.contains(h)) {
        return vec![net];
    }
    match net.subnets(net.prefix_len() + 1) {
        Ok(halves) => halves.flat_map(|half| subtract(half, holes)).collect(),
        Err(_) => Vec::new(),
    }
}

/// A set as HNS remote addresses (`None`: it cannot be written as addresses).
fn addresses(set: &IpSet) -> Option<Vec<String>> {
    match set.kind() {
        SetKind::HashIp => Some(
            set.members
                .iter()
                .filter_map(|m| match m {
                    Member::Ip(ip) => Some(ip.to_string()),
                    _ => None,
                })
                .collect(),
        ),
        SetKind::HashNet => {
            let holes: Vec<IpNet> = set
                .members
                .iter()
                .filter_map(|m| match m {
                    Member::Net { net, nomatch: true } => Some(*net),
                    _ => None,
                })
                .collect();
            let mut out = Vec::new();
            for m in &set.members {
                if let Member::Net { net, nomatch: false } = m {
                    out.extend(subtract(*net, &holes).iter().map(IpNet::to_string));
                }
            }
            Some(out)
        }
        SetKind::HashIpPort => None,
    }
}

fn protocol_number(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("6"),
        Protocol::Udp => Some("17"),
        Protocol::Sctp => None,
    }
}

fn port_list(lo: u16, hi: u16) -> Option<String> {
    (u32::from(hi) - u32::from(lo) < MAX_PORT_LIST)
        .then(|| (lo..=hi).map(|p| p.to_string()).collect::<Vec<_>>().join(","))
}

/// Is `ip` in the set (any set a rule names as source or destination; no set means any)?
fn member_of(ir: &Ir, set: &Option<SetId>, ip: IpAddr) -> bool {
    set.as_ref().is_none_or(|s| {
        ir.sets.get(s).is_some_and(|set| policy_compiler::compiled::contains(set, ip, Protocol::Tcp, 0))
    })
}

/// ACLs for one policy rule as seen from endpoint `ip` (`ingress`: the rule's dst is us).
fn rule_acls(
    ir: &Ir,
    r: &Rule,
    ip: IpAddr,
    ingress: bool,
    priority: u16,
    unsupported: &mut Vec<String>,
) -> Vec<Acl> {
    let direction = if ingress { "In" } else { "Out" };
    let mut base = acl(&r.comment, "Allow", direction, priority);
    let remote_set = if ingress { &r.src_set } else { &r.dst_set };
    let remote: Option<Vec<String>> = match remote_set {
        None => None,
        Some(name) => match ir.sets.get(name).and_then(addresses) {
            Some(list) if list.is_empty() => return Vec::new(), // nobody to allow
            Some(list) => Some(list),
            None => return Vec::new(),
        },
    };
    if let Some(list) = &remote {
        base.remote_addresses = list.join(",");
    }
    if let Some(p) = r.protocol {
        match protocol_number(p) {
            Some(n) => base.protocols = n.to_string(),
            None => {
                unsupported
                    .push(format!("{}: {p} cannot be expressed in HNS ACLs; allow omitted", r.comment));
                return Vec::new();
            }
        }
    }
    let ports = match r.dports.map(|(lo, hi)| (port_list(lo, hi), lo, hi)) {
        None => None,
        Some((Some(list), _, _)) => Some(list),
        Some((None, lo, hi)) => {
            unsupported.push(format!(
                "{}: port range {lo}-{hi} is too wide for an HNS port list; allow omitted",
                r.comment
            ));
            return Vec::new();
        }
    };
    let set_ports = |acl: &mut Acl, ports: String| {
        if ingress {
            acl.local_ports = ports
        } else {
            acl.remote_ports = ports
        }
    };
    match &r.dst_named_port {
        None => {
            if let Some(p) = ports {
                set_ports(&mut base, p);
            }
            vec![base]
        }
        Some(named) => {
            let members = ir.sets.get(named).map(|s| s.members.clone()).unwrap_or_default();
            if ingress {
                // Resolved on this endpoint: its own port of that name, if it has one.
                members
                    .iter()
                    .filter_map(|m| match m {
                        Member::IpPort { ip: mine, port, .. } if *mine == ip => Some(*port),
                        _ => None,
                    })
                    .map(|port| {
                        let mut a = base.clone();
                        a.local_ports = port.to_string();
                        a
                    })
                    .collect()
            } else {
                // Resolved on each remote pod: one ACL per port number.
                let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
                for m in &members {
                    if let Member::IpPort { ip: remote_ip, port, .. } = m {
                        if member_of(ir, &r.dst_set, *remote_ip) {
                            by_port.entry(*port).or_default().push(remote_ip.to_string());
                        }
                    }
                }
                by_port
                    .into_iter()
                    .map(|(port, ips)| {
                        let mut a = base.clone();
                        a.remote_addresses = ips.join(",");
                        a.remote_ports = port.to_string();
                        a
                    })
                    .collect()
            }
        }
    }
}

/// ACL lists for every pod with an address on `node` (every pod when `node` is `None`).
pub fn render(ir: &Ir, cluster: &Cluster, node: Option<&str>) -> Rendered {
    let mut out = Rendered::default();
    let isolated = |ingress: bool| {
        let set = ir.sets.values().find(
            |s| matches!(s.def, policy_compiler::ir::SetDef::Isolated { ingress: i, .. } if i == ingress),
        );
        set.map(|s| s.id)
    };
    let mut pods: Vec<_> =
        cluster.pods.iter().filter(|p| node.is_none_or(|n| p.node.as_deref() == Some(n))).collect();
    pods.sort_by_key(|p| p.key());
    for pod in pods {
        let Some(ip) = pod.ip else { continue };
        let mut acls = Vec::new();
        for r in ir.accept.iter().filter(|r| member_of(ir, &r.dst_set, ip)) {
            if let Some(list) = r.src_set.as_ref().and_then(|s| ir.sets.get(s)).and_then(addresses) {
                let mut a = acl(&r.comment, "Allow", "In", NODE_PRIORITY);
                a.remote_addresses = list.join(",");
                acls.push(a);
            }
        }
        let mut priority = RULE_PRIORITY;
        for (ingress, rules) in [(true, &ir.ingress), (false, &ir.egress)] {
            for r in rules.iter().filter(|r| r.action == Action::MarkAllowed) {
                let ours = if ingress { &r.dst_set } else { &r.src_set };
                if member_of(ir, ours, ip) {
                    acls.extend(rule_acls(ir, r, ip, ingress, priority, &mut out.unsupported));
                    priority += 1;
                }
            }
            let direction = if ingress { "In" } else { "Out" };
            let is_isolated = isolated(ingress)
                .and_then(|id| ir.sets.get(&id))
                .is_some_and(|s| s.members.contains(&Member::Ip(ip)));
            acls.push(if is_isolated {
                acl(&format!("isolated {}", direction.to_lowercase()), "Block", direction, ISOLATION_PRIORITY)
            } else {
                acl("default", "Allow", direction, DEFAULT_PRIORITY)
            });
        }
        out.endpoints.push(EndpointAcls { pod: pod.key(), ip, acls });
    }
    out.unsupported.sort();
    out.unsupported.dedup();
    out
}

fn addr_matches(list: &str, ip: IpAddr) -> bool {
    list.is_empty()
        || list.split(',').any(|a| {
            a.parse::<IpNet>()
                .map(|n| n.contains(&ip))
                .or_else(|_| a.parse::<IpAddr>().map(|x| x == ip))
                .unwrap_or(false)
        })
}

fn port_matches(list: &str, port: u16) -> bool {
    list.is_empty() || list.split(',').any(|p| p.parse::<u16>() == Ok(port))
}

/// What one endpoint's ACLs decide for traffic in `direction` with the far end `remote`.
fn decide(acls: &[Acl], direction: &str, remote: IpAddr, protocol: Protocol, port: u16) -> bool {
    let proto = protocol_number(protocol).unwrap_or("132");
    let mut matching: Vec<&Acl> = acls
        .iter()
        .filter(|a| a.direction == direction)
        .filter(|a| addr_matches(&a.remote_addresses, remote))
        .filter(|a| a.protocols.is_empty() || a.protocols == proto)
        .filter(|a| port_matches(if direction == "In" { &a.local_ports } else { &a.remote_ports }, port))
        .collect();
    matching.sort_by_key(|a| a.priority);
    matching.first().is_none_or(|a| a.action == "Allow")
}

/// Simulates HNS on the rendered ACLs: the source endpoint's Out list, then the destination's In list.
pub fn evaluate(r: &Rendered, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> bool {
    let out_ok =
        r.endpoints.iter().find(|e| e.ip == src).is_none_or(|e| decide(&e.acls, "Out", dst, protocol, port));
    let in_ok =
        r.endpoints.iter().find(|e| e.ip == dst).is_none_or(|e| decide(&e.acls, "In", src, protocol, port));
    out_ok && in_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracting_excepts_leaves_the_covering_cidrs() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let left = subtract(n("10.0.0.0/16"), &[n("10.0.2.0/24")]);
        assert!(left.iter().all(|c| !c.contains(&n("10.0.2.0/24"))));
        let covered: u64 = left.iter().map(|c| 1u64 << (32 - c.prefix_len())).sum();
        assert_eq!(covered, (1 << 16) - 256);
        assert!(subtract(n("10.0.0.0/24"), &[n("10.0.0.0/16")]).is_empty());
        assert_eq!(subtract(n("10.0.0.0/24"), &[n("11.0.0.0/8")]), vec![n("10.0.0.0/24")]);
    }

    #[test]
    fn wide_ranges_do_not_fit_a_port_list() {
        assert_eq!(port_list(80, 81).as_deref(), Some("80,81"));
        assert!(port_list(1, 1000).is_none());
    }
}
