//! The fabric's drop counters, read back from `nft list counters` (pure parsing here).

use std::collections::BTreeMap;
use std::fmt;

use crate::render::{BROADCAST, NOT_HOST, OTHER, REASONS, SPOOF_ARP, SPOOF_IP, SPOOF_MAC, UNOWNED};
use crate::{Error, Result};

/// Frames or packets one port's traffic lost, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Source MAC not the NIC's.
    pub spoofed_mac: u64,
    /// ARP sender hardware address not the NIC's, or sender IP not one of its addresses.
    pub spoofed_arp: u64,
    /// IPv4 source not one of the NIC's addresses.
    pub spoofed_ip: u64,
    /// Destination MAC neither the host's nor broadcast.
    pub not_for_host: u64,
    /// IPv4 to a broadcast or multicast address (the VNet carries neither).
    pub broadcast: u64,
    /// Neither IPv4 nor ARP.
    pub other_protocol: u64,
    /// To a VNet address no NIC owns.
    pub unowned: u64,
}

impl PortCounters {
    /// What Azure's anti-spoofing dropped: the figure tests assert is zero.
    pub fn spoofed(&self) -> u64 {
        self.spoofed_mac + self.spoofed_arp + self.spoofed_ip
    }

    fn slot(&mut self, reason: &str) -> Option<&mut u64> {
        Some(match reason {
            SPOOF_MAC => &mut self.spoofed_mac,
            SPOOF_ARP => &mut self.spoofed_arp,
            SPOOF_IP => &mut self.spoofed_ip,
            NOT_HOST => &mut self.not_for_host,
            BROADCAST => &mut self.broadcast,
            OTHER => &mut self.other_protocol,
            UNOWNED => &mut self.unowned,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub ports: BTreeMap<String, PortCounters>,
}

impl Counters {
    pub fn spoofed_total(&self) -> u64 {
        self.ports.values().map(PortCounters::spoofed).sum()
    }

    pub fn port(&self, port: &str) -> PortCounters {
        self.ports.get(port).copied().unwrap_or_default()
    }
}

impl PortCounters {
    /// The counts in the order of `REASONS`.
    pub fn values(&self) -> [u64; 7] {
        [
            self.spoofed_mac,
            self.spoofed_arp,
            self.spoofed_ip,
            self.not_for_host,
            self.broadcast,
            self.other_protocol,
            self.unowned,
        ]
    }
}

/// A table of counters, one row per named port (or node), one column per drop reason.
pub fn table<'a>(label: &str, rows: impl IntoIterator<Item = (&'a str, PortCounters)>) -> String {
    let mut out = format!("{label:<16} {}\n", REASONS.join(" "));
    for (name, c) in rows {
        let cells: Vec<String> =
            c.values().iter().zip(REASONS).map(|(n, r)| format!("{n:>width$}", width = r.len())).collect();
        out += &format!("{name:<16} {}\n", cells.join(" "));
    }
    out
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&table("port", self.ports.iter().map(|(p, c)| (p.as_str(), *c))))
    }
}

/// Parses `nft list counters` output: `counter NAME {` then `packets N bytes M`.
pub fn parse(text: &str) -> Result<Counters> {
    let mut out = Counters::default();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = Some(rest.trim_end_matches('{').trim().to_string());
        } else if let Some(rest) = line.strip_prefix("packets ") {
            let name = current
                .take()
                .ok_or_else(|| Error::Counters(format!("packets outside a counter: {line}")))?;
            let packets: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::Counters(format!("{name}: {line}")))?;
            let Some((port, reason)) = name.rsplit_once('.') else { continue };
            if let Some(slot) = out.ports.entry(port.to_string()).or_default().slot(reason) {
                *slot += packets;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "table netdev vnet {\n\tcounter pn1.spoof-mac {\n\t\tpackets 3 bytes 180\n\t}\n\
        \tcounter pn1.spoof-ip {\n\t\tpackets 2 bytes 168\n\t}\n\tcounter pn2.other {\n\t\tpackets 9 bytes 900\n\t}\n}\n\
        table inet vnet {\n\tcounter pn1.unowned {\n\t\tpackets 1 bytes 84\n\t}\n}\n";

    #[test]
    fn counters_are_read_per_port_and_reason() {
        let c = parse(LISTING).unwrap();
        assert_eq!(c.port("pn1").spoofed_mac, 3);
        assert_eq!(c.port("pn1").spoofed_ip, 2);
        assert_eq!(c.port("pn1").unowned, 1);
        assert_eq!(c.port("pn2").other_protocol, 9);
        assert_eq!(c.spoofed_total(), 5, "other protocols are not spoofing");
        assert!(c.to_string().contains("pn2"));
    }

    #[test]
    fn garbage_is_an_error_not_a_zero() {
        assert!(parse("counter x.spoof-ip {\npackets many bytes 1\n").is_err());
        assert!(parse("packets 1 bytes 2\n").is_err());
    }
}
