//! The fabric's configuration as text (pure): sysctls, `ip -batch` lines and nft rulesets.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::{Error, Kind, Nic, Result, Spec, Uplink, HOST_MAC};

/// Drop reasons, as counter-name suffixes (`<port>.<reason>`).
pub const SPOOF_MAC: &str = "spoof-mac";
pub const SPOOF_ARP: &str = "spoof-arp";
pub const SPOOF_IP: &str = "spoof-ip";
pub const NOT_HOST: &str = "not-host";
pub const BROADCAST: &str = "broadcast";
pub const OTHER: &str = "other";
pub const UNOWNED: &str = "unowned";
pub const REASONS: [&str; 7] = [SPOOF_MAC, SPOOF_ARP, SPOOF_IP, NOT_HOST, BROADCAST, OTHER, UNOWNED];

/// Port names become nft identifiers and interface names: a letter, then letters, digits,
/// `-` or `_`, at most 15 bytes.
pub fn check_port(port: &str) -> Result<()> {
    let mut chars = port.chars();
    let ok = port.len() <= 15
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("port name {port:?} (a letter, then [A-Za-z0-9_-], at most 15 bytes)")))
    }
}

/// Namespace-wide settings, applied before any port exists so ports inherit them.
pub fn fabric_sysctls(kind: Kind) -> Vec<String> {
    let mut s = vec![
        "net.ipv4.ip_forward=1".to_string(),
        "net.ipv6.conf.all.disable_ipv6=1".into(),
        "net.ipv6.conf.default.disable_ipv6=1".into(),
    ];
    if kind == Kind::Azure {
        // A router that sends no redirects (the VMs must keep using the host), and trusts
        // only its own anti-spoofing (rp_filter would hide drops from the counters).
        for key in ["send_redirects", "rp_filter"] {
            s.push(format!("net.ipv4.conf.all.{key}=0"));
            s.push(format!("net.ipv4.conf.default.{key}=0"));
        }
    }
    s
}

pub fn fabric_links(spec: &Spec) -> Vec<String> {
    match spec.kind {
        // The gateway is the fabric itself; unowned VNet addresses route to a sink (lo), so
        // proxy ARP answers them too, and the forward hook drops what goes there.
        Kind::Azure => vec![
            "link set lo up".into(),
            format!("address add {}/32 dev lo", spec.gateway),
            format!("route add {} dev lo", spec.subnet),
        ],
        Kind::Switch => vec![
            "link add vnet0 type bridge".into(),
            "link set vnet0 up".into(),
            format!("address add {}/{} dev vnet0", spec.gateway, spec.subnet.prefix_len()),
        ],
    }
}

/// The tables ports add their chains, sets and counters to.
pub fn fabric_tables() -> String {
    "table netdev vnet {\n}\n\
     table inet vnet {\n\
     \tchain deliver {\n\
     \t\ttype filter hook forward priority 0; policy accept;\n\
     \t}\n\
     }\n"
    .into()
}

pub fn port_sysctls(port: &str) -> Vec<String> {
    vec![
        format!("net.ipv4.conf.{port}.proxy_arp=1"),
        format!("net.ipv4.conf.{port}.proxy_arp_pvlan=1"),
        format!("net.ipv4.neigh.{port}.proxy_delay=0"),
        format!("net.ipv4.conf.{port}.send_redirects=0"),
    ]
}

pub fn port_links(nic: &Nic) -> Vec<String> {
    let mut out = vec![format!("link set {} up", nic.port)];
    out.extend(port_routes(nic));
    out
}

/// One route per owned address: the primary directly, the secondaries via the primary (so the
/// one permanent neighbour entry gives every delivery the NIC's MAC).
pub fn port_routes(nic: &Nic) -> Vec<String> {
    let mut out = vec![
        format!("neighbour replace {} lladdr {} dev {} nud permanent", nic.primary, nic.mac, nic.port),
        format!("route replace {}/32 dev {}", nic.primary, nic.port),
    ];
    for s in &nic.secondaries {
        out.push(format!("route replace {s}/32 via {} dev {} onlink", nic.primary, nic.port));
    }
    out
}

fn elements(addrs: impl Iterator<Item = Ipv4Addr>) -> String {
    addrs.map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

/// The port's set of owned addresses, counters and ingress chain, and its unowned-destination
/// rule in the forward hook.
pub fn port_rules(nic: &Nic) -> String {
    let p = &nic.port;
    let mac = &nic.mac;
    let mut out = String::from("table netdev vnet {\n");
    for r in REASONS.iter().filter(|r| **r != UNOWNED) {
        out += &format!("\tcounter {p}.{r} {{\n\t}}\n");
    }
    out += &format!(
        "\tset owned-{p} {{\n\t\ttype ipv4_addr\n\t\telements = {{ {} }}\n\t}}\n",
        elements(nic.owned())
    );
    out += &format!(
        "\tchain port-{p} {{\n\t\ttype filter hook ingress device \"{p}\" priority 0; policy accept;\n"
    );
    let rules = [
        format!("ether saddr != {mac} counter name {p}.{SPOOF_MAC} drop"),
        format!("ether type arp arp saddr ether != {mac} counter name {p}.{SPOOF_ARP} drop"),
        format!("ether type arp arp saddr ip != 0.0.0.0 arp saddr ip != @owned-{p} counter name {p}.{SPOOF_ARP} drop"),
        format!("ether type != {{ arp, ip }} counter name {p}.{OTHER} drop"),
        // IPv4 to a broadcast or multicast MAC (IGMP and the like): the VNet carries neither.
        format!("ether type ip ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 counter name {p}.{BROADCAST} drop"),
        format!("ether daddr != {{ {HOST_MAC}, ff:ff:ff:ff:ff:ff }} counter name {p}.{NOT_HOST} drop"),
        "ether type arp accept".into(),

        format!("ip saddr != @owned-{p} counter name {p}.{SPOOF_IP} drop"),
        format!("ip daddr {{ 255.255.255.255, 224.0.0.0/4 }} counter name {p}.{BROADCAST} drop"),
    ];
    for r in rules {
        out += &format!("\t\t{r}\n");
    }
    out += "\t}\n}\n";
    out += &format!(
        "table inet vnet {{\n\tcounter {p}.{UNOWNED} {{\n\t}}\n\tchain deliver {{\n\
         \t\tiifname \"{p}\" oifname \"lo\" counter name {p}.{UNOWNED} drop\n\t}}\n}}\n"
    );
    out
}

/// Replaces the owned set's elements in one transaction.
pub fn owned_set(nic: &Nic) -> String {
    format!(
        "flush set netdev vnet owned-{p}\nadd element netdev vnet owned-{p} {{ {} }}\n",
        elements(nic.owned()),
        p = nic.port
    )
}

/// A distinct locally administered MAC per switch port (a learning switch needs them distinct).
pub fn switch_port_mac(port: &str) -> String {
    let h =
        port.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let b = h.to_be_bytes();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4])
}

pub fn switch_port(port: &str) -> Vec<String> {
    vec![format!("link set {port} master vnet0 up")]
}

pub fn uplink_fabric_side(up: &Uplink) -> Vec<String> {
    vec![
        format!("address add {} dev uplink", up.local),
        "link set uplink up".into(),
        format!("route add default via {}", up.peer.addr()),
    ]
}

pub fn uplink_peer_side(up: &Uplink, vnet: Ipv4Net) -> Vec<String> {
    vec![
        format!("address add {} dev eth0", up.peer),
        "link set eth0 up".into(),
        format!("route add {vnet} via {}", up.local.addr()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic() -> Nic {
        Nic {
            port: "pn1".into(),
            mac: "00:0d:3a:00:00:01".into(),
            primary: "10.240.0.4".parse().unwrap(),
            secondaries: vec!["10.240.1.1".parse().unwrap(), "10.240.1.2".parse().unwrap()],
        }
    }

    #[test]
    fn every_owned_address_routes_via_the_primary_whose_neighbour_is_the_nic() {
        let r = port_routes(&nic());
        assert!(r[0].contains("10.240.0.4 lladdr 00:0d:3a:00:00:01 dev pn1 nud permanent"));
        assert_eq!(r[1], "route replace 10.240.0.4/32 dev pn1");
        assert_eq!(r[2], "route replace 10.240.1.1/32 via 10.240.0.4 dev pn1 onlink");
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn port_rules_check_source_mac_arp_sender_and_source_ip_against_the_nic() {
        let text = port_rules(&nic());
        assert!(text.contains("elements = { 10.240.0.4, 10.240.1.1, 10.240.1.2 }"));
        assert!(text.contains("ether saddr != 00:0d:3a:00:00:01 counter name pn1.spoof-mac drop"));
        assert!(text.contains("arp saddr ether != 00:0d:3a:00:00:01 counter name pn1.spoof-arp drop"));
        assert!(text.contains("ip saddr != @owned-pn1 counter name pn1.spoof-ip drop"));
        assert!(text.contains("hook ingress device \"pn1\""));
        for reason in REASONS {
            assert!(text.contains(&format!("counter pn1.{reason} {{")), "{reason}");
        }
        // Spoofing is judged before anything else can accept the frame.
        let first_accept = text.find("accept;\n").unwrap();
        let arp_accept = text.find("ether type arp accept").unwrap();
        assert!(text.find("spoof-mac drop").unwrap() > first_accept);
        assert!(text.find("spoof-arp drop").unwrap() < arp_accept);
    }

    #[test]
    fn port_names_must_be_identifiers() {
        assert!(check_port("pn1").is_ok());
        assert!(check_port("p-node_2").is_ok());
        for bad in ["", "1p", "p.1", "p 1", "a-port-name-too-long"] {
            assert!(check_port(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn switch_ports_get_distinct_unicast_macs() {
        let (a, b) = (switch_port_mac("pn1"), switch_port_mac("pn2"));
        assert_ne!(a, b);
        assert!(a.starts_with("02:"));
    }
}
