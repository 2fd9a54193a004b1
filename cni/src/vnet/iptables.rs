//! Outbound SNAT and port mappings in the nat table. Rendering is pure (restore text from the
//! current `iptables-save` output); running is a thin wrapper over `iptables-save` and one
//! atomic `iptables-restore --noflush` per change.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::config::PortMapping;
use crate::skel::error::{Error, Result};

pub const SNAT_CHAIN: &str = "AZURE-VNET-SNAT";
pub const DNAT_CHAIN: &str = "AZURE-VNET-DNAT";
/// Marks port-mapped connections for masquerading (a bit kube-proxy does not use). Without it
/// the pod, being on the same L2 VNet as the client, would answer it directly from its own
/// address and the client would drop the reply.
pub const RETURN_MARK: &str = "0x20000/0x20000";

/// The nat table as the kernel holds it.
pub trait NatTable {
    fn save(&self) -> Result<String>;
    fn restore(&self, text: &str) -> Result<()>;
}

/// The real table, through the iptables binaries (waiting for the xtables lock).
pub struct Iptables;

impl NatTable for Iptables {
    fn save(&self) -> Result<String> {
        let out = Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .map_err(|e| Error::Iptables(format!("running iptables-save: {e}")))?;
        if !out.status.success() {
            return Err(Error::Iptables(format!(
                "iptables-save: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn restore(&self, text: &str) -> Result<()> {
        let mut child = Command::new("iptables-restore")
            .args(["-w", "10", "--noflush"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Iptables(format!("running iptables-restore: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).map_err(|e| Error::Iptables(format!("writing rules: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::Iptables(e.to_string()))?;
        if !out.status.success() {
            return Err(Error::Iptables(format!(
                "iptables-restore refused:\n{text}{}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

fn has_chain(save: &str, chain: &str) -> bool {
    save.lines().any(|l| l.strip_prefix(':').is_some_and(|r| r.split_whitespace().next() == Some(chain)))
}

fn has_jump(save: &str, from: &str, to: &str) -> bool {
    let prefix = format!("-A {from} ");
    let target = format!("-j {to}");
    save.lines().any(|l| l.starts_with(&prefix) && l.trim_end().ends_with(&target))
}

/// Rewrites the SNAT chain (declaring a chain in a restore flushes it, so this is idempotent):
/// VNet destinations return untouched, everything else from the pod subnets is masqueraded
/// to the node's address. Adds the POSTROUTING jump if it is missing.
pub fn snat_restore(save: &str, pod_subnets: &[IpNet], vnet: &[IpNet]) -> String {
    let mut out = format!("*nat\n:{SNAT_CHAIN} - [0:0]\n");
    for dst in vnet {
        out += &format!(
            "-A {SNAT_CHAIN} -d {dst} -m comment --comment \"azure-vnet: VNet destination\" -j RETURN\n"
        );
    }
    for src in pod_subnets {
        out += &format!(
            "-A {SNAT_CHAIN} -s {src} -m comment --comment \"azure-vnet: outbound SNAT\" -j MASQUERADE\n"
        );
    }
    if !has_jump(save, "POSTROUTING", SNAT_CHAIN) {
        out +=
            &format!("-A POSTROUTING -m comment --comment \"azure-vnet: outbound SNAT\" -j {SNAT_CHAIN}\n");
    }
    out + "COMMIT\n"
}

/// The comment that marks a pod's rules, so DEL finds them even without a record.
pub fn tag(container_id: &str, ifname: &str) -> String {
    format!("azure-vnet:{container_id}/{ifname}")
}

/// Adds the pod's DNAT rules (host port → pod port), creating the chain and jumps if missing.
/// With `masquerade`, the connections are marked so POSTROUTING makes them come from the node
/// (needed when the pod could answer the client without passing the node).
pub fn dnat_add_restore(
    save: &str,
    tag: &str,
    pod_ip: IpAddr,
    mappings: &[PortMapping],
    masquerade: bool,
) -> String {
    let mut out = String::from("*nat\n");
    if !has_chain(save, DNAT_CHAIN) {
        out += &format!(":{DNAT_CHAIN} - [0:0]\n");
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        if !has_jump(save, hook, DNAT_CHAIN) {
            out += &format!(
                "-A {hook} -m addrtype --dst-type LOCAL -m comment --comment \"azure-vnet: port mappings\" -j {DNAT_CHAIN}\n"
            );
        }
    }
    if masquerade && !save.lines().any(|l| l.starts_with("-A POSTROUTING ") && l.contains(RETURN_MARK)) {
        out += &format!(
            "-A POSTROUTING -m mark --mark {RETURN_MARK} -m comment --comment \"azure-vnet: port mapping return path\" -j MASQUERADE\n"
        );
    }
    for m in mappings {
        let dst = m.host_ip.map(|ip| format!("-d {ip}/32 ")).unwrap_or_default();
        let proto = m.protocol.as_str();
        let matcher = format!(
            "-A {DNAT_CHAIN} {dst}-p {proto} -m {proto} --dport {} -m comment --comment \"{tag}\"",
            m.host_port
        );
        if masquerade {
            out += &format!("{matcher} -j MARK --set-xmark {RETURN_MARK}\n");
        }
        out += &format!("{matcher} -j DNAT --to-destination {pod_ip}:{}\n", m.container_port);
    }
    out + "COMMIT\n"
}

fn tagged<'a>(save: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let prefix = format!("-A {DNAT_CHAIN} ");
    let quoted = format!("\"{tag}\"");
    let tag = tag.to_string();
    save.lines()
        .filter(move |l| l.starts_with(&prefix))
        .filter(move |l| l.split_whitespace().any(|w| w == tag || w == quoted))
}

/// How many DNAT rules carry `tag` (CHECK: one per mapping).
pub fn dnat_rules_of(save: &str, tag: &str) -> usize {
    tagged(save, tag).filter(|l| l.contains(" -j DNAT ")).count()
}

/// Deletes every rule carrying `tag`; `None` when there is none.
pub fn dnat_del_restore(save: &str, tag: &str) -> Option<String> {
    let lines: Vec<String> = tagged(save, tag).map(|l| format!("-D{}\n", &l[2..])).collect();
    (!lines.is_empty()).then(|| format!("*nat\n{}COMMIT\n", lines.concat()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet::config::Protocol;

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    fn mapping(host: u16, pod: u16, protocol: Protocol) -> PortMapping {
        PortMapping { host_port: host, container_port: pod, protocol, host_ip: None }
    }

    #[test]
    fn snat_rewrites_its_chain_and_adds_the_jump_once() {
        let subnet: IpNet = "10.240.0.0/16".parse().unwrap();
        let first = snat_restore(EMPTY, &[subnet], &[subnet]);
        assert!(first.contains(":AZURE-VNET-SNAT - [0:0]"));
        assert!(first.contains("-A AZURE-VNET-SNAT -d 10.240.0.0/16"));
        assert!(first
            .contains("-s 10.240.0.0/16 -m comment --comment \"azure-vnet: outbound SNAT\" -j MASQUERADE"));
        assert!(first.contains("-A POSTROUTING"));
        let after = format!(
            "{EMPTY}-A POSTROUTING -m comment --comment \"azure-vnet: outbound SNAT\" -j AZURE-VNET-SNAT\n"
        );
        assert!(!snat_restore(&after, &[subnet], &[subnet]).contains("-A POSTROUTING"));
    }

    #[test]
    fn dnat_rules_are_tagged_and_deleted_by_tag() {
        let t = tag("c1", "eth0");
        let add = dnat_add_restore(
            EMPTY,
            &t,
            "10.240.0.7".parse().unwrap(),
            &[mapping(8080, 80, Protocol::Tcp), mapping(53, 53, Protocol::Udp)],
            true,
        );
        assert!(add.contains(":AZURE-VNET-DNAT - [0:0]"));
        assert!(add.contains("-A PREROUTING -m addrtype --dst-type LOCAL"));
        assert!(add.contains("-p tcp -m tcp --dport 8080 -m comment --comment \"azure-vnet:c1/eth0\" -j DNAT --to-destination 10.240.0.7:80"));
        assert!(add.contains("-p udp -m udp --dport 53"));
        // What iptables-save prints back after that restore (it drops quotes from one-word comments).
        let saved = format!(
            "{EMPTY}:AZURE-VNET-DNAT - [0:0]\n-A AZURE-VNET-DNAT -p tcp -m tcp --dport 8080 -m comment --comment azure-vnet:c1/eth0 -j DNAT --to-destination 10.240.0.7:80\n\
             -A AZURE-VNET-DNAT -p tcp -m tcp --dport 9090 -m comment --comment \"azure-vnet:c10/eth0\" -j DNAT --to-destination 10.240.0.8:80\n"
        );
        assert_eq!(dnat_rules_of(&saved, &t), 1);
        let del = dnat_del_restore(&saved, &t).unwrap();
        assert!(del.contains("-D AZURE-VNET-DNAT -p tcp -m tcp --dport 8080"));
        assert!(!del.contains("9090"), "another pod's rule (c10 shares the prefix c1) stays");
        assert!(dnat_del_restore(EMPTY, &t).is_none());
        let again = dnat_add_restore(
            &saved,
            &tag("c2", "eth0"),
            "10.240.0.9".parse().unwrap(),
            &[mapping(1, 2, Protocol::Tcp)],
            true,
        );
        assert!(!again.contains(":AZURE-VNET-DNAT"), "never re-declare (that would flush other pods' rules)");
    }
}
