//! Bridge mode's MAC translation, so the VNet only ever sees the master NIC's MAC (Azure drops
//! frames from any other source MAC, answers every ARP with its own MAC and delivers a pod's
//! packets to the NIC with the NIC's MAC as destination).
//!
//! One nftables table per bridge (`bridge azure-vnet-<bridge>`), set up once with the bridge:
//! - `endpoints`: a map pod IPv4 → pod MAC, one element per endpoint (added and removed over
//!   netlink by the plugin; see `nft.rs`).
//! - prerouting (priority -300, before br_netfilter): IPv4 arriving on master for a pod's
//!   address, and ARP replies for a pod's address, get that pod's MAC as destination, so the
//!   bridge forwards them to the pod instead of keeping them for the node.
//! - postrouting (priority 300): every frame leaving through master gets master's MAC as
//!   source, ARP sender hardware address included; ARP requests for this node's own pods and
//!   addresses never leave (the pod or the node answers on the bridge, so same-node traffic
//!   never hairpins through the VNet).

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use super::nft::{MapRef, NFPROTO_BRIDGE};
use crate::skel::error::{Error, Result};

pub const MAP: &str = "endpoints";

pub fn table(bridge: &str) -> String {
    format!("azure-vnet-{bridge}")
}

pub fn map_ref(table: &str) -> MapRef<'_> {
    MapRef { family: NFPROTO_BRIDGE, table, set: MAP }
}

pub fn mac_text(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The table, its map and its two chains, rules rewritten; the map's elements are kept, so it
/// is safe to apply again at any time (after a crash, an upgrade, or someone flushing it).
pub fn ruleset(bridge: &str, master: &str, master_mac: &[u8], node_addresses: &[Ipv4Addr]) -> String {
    let t = table(bridge);
    let mac = mac_text(master_mac);
    let mut out = format!(
        "add table bridge {t}\n\
         add map bridge {t} {MAP} {{ type ipv4_addr : ether_addr; }}\n\
         add chain bridge {t} inbound {{ type filter hook prerouting priority -300; policy accept; }}\n\
         add chain bridge {t} outbound {{ type filter hook postrouting priority 300; policy accept; }}\n\
         flush chain bridge {t} inbound\n\
         flush chain bridge {t} outbound\n"
    );
    let inbound = [
        format!("iifname \"{master}\" ether type ip ether daddr set ip daddr map @{MAP}"),
        format!("iifname \"{master}\" arp operation reply ether daddr set arp daddr ip map @{MAP}"),
    ];
    let mut outbound = vec![format!("oifname \"{master}\" arp operation request arp daddr ip @{MAP} drop")];
    if !node_addresses.is_empty() {
        let list = node_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        outbound.push(format!("oifname \"{master}\" arp operation request arp daddr ip {{ {list} }} drop"));
    }
    outbound.push(format!("oifname \"{master}\" ether saddr set {mac}"));
    outbound.push(format!("oifname \"{master}\" arp saddr ether set {mac}"));
    for r in inbound {
        out += &format!("add rule bridge {t} inbound {r}\n");
    }
    for r in outbound {
        out += &format!("add rule bridge {t} outbound {r}\n");
    }
    out
}

/// Applies `ruleset` (once per bridge; not on the per-pod path).
pub fn install(bridge: &str, master: &str, master_mac: &[u8], node_addresses: &[Ipv4Addr]) -> Result<()> {
    nft_script(&ruleset(bridge, master, master_mac, node_addresses))?;
    tracing::info!(
        "MAC translation for {bridge} (master {master}, {}) in nft table bridge {}",
        mac_text(master_mac),
        table(bridge)
    );
    Ok(())
}

/// Removes the table (with the bridge); adding it first makes the delete succeed either way.
pub fn uninstall(bridge: &str) -> Result<()> {
    let t = table(bridge);
    nft_script(&format!("add table bridge {t}\ndelete table bridge {t}\n"))
}

/// The node's IPv4 addresses, for the ARP rule.
pub fn v4(addresses: impl Iterator<Item = IpAddr>) -> Vec<Ipv4Addr> {
    addresses
        .filter_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn nft_binary() -> &'static str {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft")
}

fn nft_script(text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new(nft_binary())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft { missing: false, msg: format!("running nft (package nftables): {e}") })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::Nft { missing: false, msg: format!("writing to nft: {e}") })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Nft { missing: false, msg: e.to_string() })?;
    if !out.status.success() {
        return Err(Error::Nft {
            missing: false,
            msg: format!("nft refused:\n{text}{}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_rewrites_on_the_master_only_and_keeps_elements() {
        let text = ruleset("azure0", "eth0", &[0, 0x0d, 0x3a, 0, 0, 1], &["10.240.0.4".parse().unwrap()]);
        assert!(text.contains("add map bridge azure-vnet-azure0 endpoints { type ipv4_addr : ether_addr; }"));
        assert!(!text.contains("flush map") && !text.contains("delete"), "elements survive a re-install");
        assert!(text.contains("iifname \"eth0\" ether type ip ether daddr set ip daddr map @endpoints"));
        assert!(text.contains("oifname \"eth0\" ether saddr set 00:0d:3a:00:00:01"));
        assert!(text.contains("oifname \"eth0\" arp saddr ether set 00:0d:3a:00:00:01"));
        assert!(text.contains("arp daddr ip { 10.240.0.4 } drop"));
        // The ARP drops come before the rewrite that would otherwise let them out.
        assert!(text.find("@endpoints drop").unwrap() < text.find("ether saddr set").unwrap());
        assert!(text.contains("priority -300"), "before br_netfilter's hook (0)");
    }
}
