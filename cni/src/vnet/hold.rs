//! The hold on a new pod, azure-vnet's half of a contract with azure-npm.
//!
//! NetworkPolicy requires a pod selected by a policy to be isolated from the first instant any
//! of its containers runs; but the policy agent learns a pod's address from the API server,
//! after the CNI ADD, so a fast container can send before the agent has programmed it (the
//! upstream e2e suite does exactly that). So: while the node's agent runs, it owns the ipset
//! `azure-npm-new` and drops traffic from and to the addresses in it (the node's own traffic to
//! its pods excepted); ADD puts the pod's address there before the pod has a route, and the
//! agent takes it out once it has programmed that pod. DEL takes it out too. No agent on the
//! node (no set): nothing to hold, nothing to do.
//!
//! The agent programs either ipset + iptables or its own nftables table (`--dataplane`), so the
//! hold goes to whichever holds a hold set: the ipset `azure-npm-new`, and the set `hold` of
//! table `inet azure-npm` (both, after a switch of backend, until the agent removes the old).
//!
//! One ipset netlink request per change (linux/netfilter/ipset/ip_set.h), no `ipset` process;
//! without NLM_F_EXCL the kernel treats adding a present entry and deleting a missing one as
//! success (ipset's `-exist`). One nf_tables transaction for the nftables set.

use std::net::Ipv4Addr;

use nfnl::wire::{message, Attrs, NLA_F_NET_BYTEORDER, NLM_F_ACK, NLM_F_REQUEST};

use super::nft::{MapRef, Nft, ENOENT};
use crate::skel::error::{Error, Result};

/// The set the agent creates (hash:ip, family inet) and the CNI fills.
pub const HOLD_SET: &str = "azure-npm-new";
/// The same set in the agent's nftables table.
pub const NFT_HOLD: MapRef<'static> = MapRef { family: nfnl::family::INET, table: "azure-npm", set: "hold" };

const NFNL_SUBSYS_IPSET: u16 = 6;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
const IPSET_PROTOCOL: u8 = 7;
const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
const NFPROTO_IPV4: u8 = 2;

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Hold,
    Release,
}

/// The netlink request for one change.
pub fn request(op: Op, set: &str, ip: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut a = Attrs::new();
    a.bytes(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]).str(IPSET_ATTR_SETNAME, set);
    a.nested(IPSET_ATTR_DATA, |d| {
        d.nested(IPSET_ATTR_IP, |i| {
            i.bytes(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER, &ip.octets());
        });
    });
    let cmd = match op {
        Op::Hold => IPSET_CMD_ADD,
        Op::Release => IPSET_CMD_DEL,
    };
    message((NFNL_SUBSYS_IPSET << 8) | cmd, NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_IPV4, 0, &a.0)
}

/// Applies one change in the caller's network namespace, to every hold set there is. Returns
/// false when there is none (no agent on this node).
pub fn change(nft: &mut Nft, op: Op, ip: Ipv4Addr) -> Result<bool> {
    let in_nft = nft.set_key(NFT_HOLD, &ip.octets(), op == Op::Hold)?;
    let in_ipset = ipset_change(nft, op, ip)?;
    Ok(in_nft || in_ipset)
}

fn ipset_change(nft: &mut Nft, op: Op, ip: Ipv4Addr) -> Result<bool> {
    match nft.request(|seq| request(op, HOLD_SET, ip, seq))? {
        0 => Ok(true),
        ENOENT => Ok(false),
        errno => Err(Error::Netlink(format!(
            "{} {ip} in ipset {HOLD_SET}: {} (errno {errno})",
            if op == Op::Hold { "holding" } else { "releasing" },
            nix::errno::Errno::from_raw(errno).desc()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_the_protocol_the_set_and_the_address_in_network_order() {
        let m = request(Op::Hold, HOLD_SET, "10.240.1.7".parse().unwrap(), 42);
        let len = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, m.len());
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), (6 << 8) | 9, "ipset subsystem, ADD");
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK, "no NLM_F_EXCL: -exist");
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 42);
        assert_eq!(m[16], NFPROTO_IPV4);
        // Protocol attribute first (the kernel refuses a request without it).
        assert_eq!(&m[20..25], &[5, 0, 1, 0, 7]);
        let tail = &m[m.len() - 8..];
        assert_eq!(u16::from_ne_bytes([tail[2], tail[3]]), 1 | NLA_F_NET_BYTEORDER);
        assert_eq!(&tail[4..], &[10, 240, 1, 7]);
        let del = request(Op::Release, HOLD_SET, "10.240.1.7".parse().unwrap(), 1);
        assert_eq!(u16::from_ne_bytes([del[4], del[5]]), (6 << 8) | 10);
        assert!(m.windows(HOLD_SET.len()).any(|w| w == HOLD_SET.as_bytes()));
    }
}
