//! The few nf_tables netlink requests the plugin makes on its hot path: set, remove and list
//! the elements of one map. Each change is one batch (one transaction, applied or refused as
//! a whole), sent on a NETLINK_NETFILTER socket in the caller's network namespace; no `nft`
//! process is started. Encoding and decoding are pure and unit-tested; `Nft` only does I/O.
//!
//! Message layout (linux/netfilter/nf_tables.h, nfnetlink.h): `nlmsghdr`, then `nfgenmsg`
//! (family, version 0, resource id), then attributes; a batch is framed by
//! NFNL_MSG_BATCH_BEGIN/END carrying the nftables subsystem id.

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::skel::error::{Error, Result};

pub const NFPROTO_BRIDGE: u8 = 7;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

pub(super) const NLM_F_REQUEST: u16 = 0x01;
pub(super) const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

const EEXIST: i32 = 17;
pub(super) const ENOENT: i32 = 2;

/// Which map: family, table and set name.
#[derive(Debug, Clone, Copy)]
pub struct MapRef<'a> {
    pub family: u8,
    pub table: &'a str,
    pub set: &'a str,
}

/// One map element: key and value bytes (network order, as the kernel stores them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// What the kernel said about one request of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub seq: u32,
    /// 0, or a positive errno.
    pub errno: i32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(super) fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

pub(super) fn nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

pub(super) fn strz(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink message: header, nfgenmsg, attributes.
pub(super) fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(0);
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

fn element_attrs(map: MapRef<'_>, elements: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
    let mut a = Vec::new();
    attr(&mut a, NFTA_SET_ELEM_LIST_TABLE, &strz(map.table));
    attr(&mut a, NFTA_SET_ELEM_LIST_SET, &strz(map.set));
    if !elements.is_empty() {
        nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
            for (key, value) in elements {
                nested(b, NFTA_LIST_ELEM, |e| {
                    nested(e, NFTA_SET_ELEM_KEY, |k| attr(k, NFTA_DATA_VALUE, key));
                    if let Some(v) = value {
                        nested(e, NFTA_SET_ELEM_DATA, |d| attr(d, NFTA_DATA_VALUE, v));
                    }
                });
            }
        });
    }
    a
}

/// A change to the map's elements, in the order the kernel will apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Insert { key: &'a [u8], value: &'a [u8] },
    Remove { key: &'a [u8] },
}

/// A batch (one transaction) of element changes; request `i` gets sequence `first_seq + 1 + i`.
pub fn batch(map: MapRef<'_>, changes: &[Change<'_>], first_seq: u32) -> Vec<u8> {
    let subsys = NFNL_SUBSYS_NFTABLES;
    let mut out = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, first_seq, 0, subsys, &[]);
    for (i, c) in changes.iter().enumerate() {
        let seq = first_seq + 1 + i as u32;
        let (msg, flags, attrs) = match c {
            Change::Insert { key, value } => {
                (NFT_MSG_NEWSETELEM, NLM_F_CREATE, element_attrs(map, &[(key, Some(value))]))
            }
            Change::Remove { key } => (NFT_MSG_DELSETELEM, 0, element_attrs(map, &[(key, None)])),
        };
        out.extend(message(
            (subsys << 8) | msg,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            map.family,
            0,
            &attrs,
        ));
    }
    out.extend(message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        first_seq + 1 + changes.len() as u32,
        0,
        subsys,
        &[],
    ));
    out
}

/// A dump request for every element of the map.
pub fn dump_request(map: MapRef<'_>, seq: u32) -> Vec<u8> {
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM;
    message(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, map.family, 0, &element_attrs(map, &[]))
}

/// Attributes of a payload as (type without flags, data).
fn attributes(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

fn value_of(nest: &[u8]) -> Option<Vec<u8>> {
    attributes(nest).into_iter().find(|(k, _)| *k == NFTA_DATA_VALUE).map(|(_, v)| v.to_vec())
}

/// What came back: acks (and errors) by sequence, elements from dumps, whether a dump ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub acks: Vec<Ack>,
    pub elements: Vec<Element>,
    pub done: bool,
}

/// Parses the netlink messages in one datagram.
pub fn parse(mut b: &[u8], reply: &mut Reply) -> Result<()> {
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        if len < 16 || len > b.len() {
            return Err(Error::Netlink(format!("nf_tables: truncated message ({len} of {} bytes)", b.len())));
        }
        let body = &b[16..len];
        match kind {
            NLMSG_ERROR if body.len() >= 4 => {
                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                // The kernel sends -errno; anything else (garbage) must not overflow.
                reply.acks.push(Ack { seq, errno: code.saturating_neg() });
            }
            NLMSG_DONE => reply.done = true,
            k if k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM && body.len() >= 4 => {
                for (t, list) in attributes(&body[4..]) {
                    if t != NFTA_SET_ELEM_LIST_ELEMENTS {
                        continue;
                    }
                    for (_, elem) in attributes(list) {
                        let mut key = None;
                        let mut value = Vec::new();
                        for (a, nest) in attributes(elem) {
                            match a {
                                NFTA_SET_ELEM_KEY => key = value_of(nest),
                                NFTA_SET_ELEM_DATA => value = value_of(nest).unwrap_or_default(),
                                _ => {}
                            }
                        }
                        if let Some(key) = key {
                            reply.elements.push(Element { key, value });
                        }
                    }
                }
            }
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(())
}

fn errno_text(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).desc().to_string()
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
pub struct Nft {
    socket: Socket,
    seq: u32,
}

impl Nft {
    pub fn open() -> Result<Nft> {
        let mut socket = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| Error::Netlink(format!("opening the nf_tables socket: {e}")))?;
        socket.bind_auto().map_err(|e| Error::Netlink(format!("binding the nf_tables socket: {e}")))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::Netlink(format!("connecting the nf_tables socket: {e}")))?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ok(Nft { socket, seq })
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n + 2);
        s
    }

    /// Sends one batch and returns the kernel's answer to each request. The kernel handles a
    /// batch while `send` runs, so every answer is queued when it returns.
    fn transact(&mut self, map: MapRef<'_>, changes: &[Change<'_>]) -> Result<Vec<Ack>> {
        let first = self.next_seq(changes.len() as u32);
        let msg = batch(map, changes, first);
        self.socket.send(&msg, 0).map_err(|e| Error::Netlink(format!("nf_tables batch: {e}")))?;
        let mut reply = Reply::default();
        while reply.acks.len() < changes.len() {
            let (data, _) =
                self.socket.recv_from_full().map_err(|e| Error::Netlink(format!("nf_tables answer: {e}")))?;
            parse(&data, &mut reply)?;
            if reply.acks.iter().any(|a| a.errno != 0) {
                break;
            }
        }
        Ok(reply.acks)
    }

    /// Sends one request (not a batch: ipset's subsystem takes plain requests) and returns the
    /// kernel's errno for it (0: done).
    pub(super) fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> Result<i32> {
        let seq = self.next_seq(0);
        self.socket.send(&build(seq), 0).map_err(|e| Error::Netlink(format!("netfilter request: {e}")))?;
        let mut reply = Reply::default();
        loop {
            let (data, _) =
                self.socket.recv_from_full().map_err(|e| Error::Netlink(format!("netfilter answer: {e}")))?;
            parse(&data, &mut reply)?;
            if let Some(a) = reply.acks.iter().find(|a| a.seq == seq) {
                return Ok(a.errno);
            }
        }
    }

    /// Makes `key` map to `value`: inserted, or replaced in one transaction if it mapped to
    /// something else. Returns false when it already held `value`.
    pub fn put(&mut self, map: MapRef<'_>, key: &[u8], value: &[u8]) -> Result<bool> {
        let acks = self.transact(map, &[Change::Insert { key, value }])?;
        match acks.first().map(|a| a.errno) {
            Some(0) | None => Ok(true),
            Some(EEXIST) => {
                let current = self.list(map)?;
                if current.iter().any(|e| e.key == key && e.value == value) {
                    return Ok(false);
                }
                let acks = self.transact(map, &[Change::Remove { key }, Change::Insert { key, value }])?;
                match acks.iter().find(|a| a.errno != 0) {
                    None => Ok(true),
                    Some(a) => Err(self.refused(map, "replacing an element", a.errno)),
                }
            }
            Some(e) => Err(self.refused(map, "adding an element", e)),
        }
    }

    /// Removes `key`; false when it was not there.
    pub fn remove(&mut self, map: MapRef<'_>, key: &[u8]) -> Result<bool> {
        let acks = self.transact(map, &[Change::Remove { key }])?;
        match acks.first().map(|a| a.errno) {
            Some(0) | None => Ok(true),
            Some(ENOENT) => Ok(false),
            Some(e) => Err(self.refused(map, "removing an element", e)),
        }
    }

    /// Every element of the map.
    pub fn list(&mut self, map: MapRef<'_>) -> Result<Vec<Element>> {
        let seq = self.next_seq(0);
        self.socket
            .send(&dump_request(map, seq), 0)
            .map_err(|e| Error::Netlink(format!("nf_tables dump: {e}")))?;
        let mut reply = Reply::default();
        while !reply.done {
            let (data, _) =
                self.socket.recv_from_full().map_err(|e| Error::Netlink(format!("nf_tables dump: {e}")))?;
            parse(&data, &mut reply)?;
            if let Some(a) = reply.acks.iter().find(|a| a.errno != 0) {
                return Err(self.refused(map, "listing", a.errno));
            }
        }
        Ok(reply.elements)
    }

    fn refused(&self, map: MapRef<'_>, what: &str, errno: i32) -> Error {
        let hint = if errno == ENOENT { " (the table or map is missing)" } else { "" };
        Error::Nft {
            missing: errno == ENOENT,
            msg: format!("{what} of {} {}: {}{hint}", map.table, map.set, errno_text(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: MapRef<'static> = MapRef { family: NFPROTO_BRIDGE, table: "azure-vnet", set: "endpoints" };

    fn headers(b: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut out = Vec::new();
        let mut rest = b;
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            out.push((
                u16::from_ne_bytes([rest[4], rest[5]]),
                u16::from_ne_bytes([rest[6], rest[7]]),
                u32::from_ne_bytes(rest[8..12].try_into().unwrap()),
            ));
            rest = &rest[align4(len)..];
        }
        out
    }

    #[test]
    fn a_batch_is_framed_and_every_request_asks_for_an_ack() {
        let key = [10, 240, 1, 5];
        let mac = [0x0a, 0x58, 10, 240, 1, 5];
        let b = batch(MAP, &[Change::Remove { key: &key }, Change::Insert { key: &key, value: &mac }], 100);
        let h = headers(&b);
        assert_eq!(h.len(), 4);
        assert_eq!(h[0], (0x10, NLM_F_REQUEST, 100));
        assert_eq!(h[1], (0x0a00 | 14, NLM_F_REQUEST | NLM_F_ACK, 101));
        assert_eq!(h[2], (0x0a00 | 12, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 102));
        assert_eq!(h[3], (0x11, NLM_F_REQUEST, 103));
        // The subsystem id of the batch frame is big-endian in nfgenmsg.res_id.
        assert_eq!(&b[16..20], &[0, 0, 0, 10]);
        assert_eq!(b[36], NFPROTO_BRIDGE, "requests carry the table's family");
    }

    #[test]
    fn the_kernels_element_dump_and_errors_parse_back() {
        // A NEWSETELEM message as the kernel sends it in a dump: our own encoding of the list.
        let attrs = element_attrs(MAP, &[(&[10, 240, 1, 5], Some(&[2, 0, 0, 0, 0, 1]))]);
        let mut data = message(0x0a00 | 12, 2, 7, NFPROTO_BRIDGE, 0, &attrs);
        let mut err = message(NLMSG_ERROR, 0, 8, 0, 0, &[]);
        err.truncate(16);
        err.extend_from_slice(&(-17i32).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        data.extend(err);
        data.extend(message(NLMSG_DONE, 2, 9, 0, 0, &[]));
        let mut r = Reply::default();
        parse(&data, &mut r).unwrap();
        assert_eq!(r.elements, [Element { key: vec![10, 240, 1, 5], value: vec![2, 0, 0, 0, 0, 1] }]);
        assert_eq!(r.acks, [Ack { seq: 8, errno: 17 }]);
        assert!(r.done);
    }

    #[test]
    fn truncated_answers_are_errors_not_panics() {
        let mut m = message(0x0a00 | 12, 2, 7, NFPROTO_BRIDGE, 0, &[]);
        m[0..4].copy_from_slice(&500u32.to_ne_bytes());
        assert!(parse(&m, &mut Reply::default()).is_err());
        // Garbage attributes inside a well-framed message are skipped.
        let bad = message(0x0a00 | 12, 2, 7, NFPROTO_BRIDGE, 0, &[0xff, 0xff, 3, 0, 1, 2, 3, 4]);
        let mut r = Reply::default();
        parse(&bad, &mut r).unwrap();
        assert!(r.elements.is_empty());
    }
}
