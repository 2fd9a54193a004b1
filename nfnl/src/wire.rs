//! Netlink framing: a message is a 16-byte header (`nlmsghdr`: length, type, flags, sequence,
//! port), then for the netfilter subsystems a 4-byte `nfgenmsg` (family, version 0, resource
//! id in network order), then attributes: 4-byte headers (length, type) followed by the data,
//! each padded to 4 bytes, nested attributes holding attributes.

use crate::error::{Error, Result};

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// On an error message: extended ack attributes follow the original header.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// On an error message: the original message's payload was left out (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;

pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

pub const NFNL_SUBSYS_IPSET: u16 = 6;
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

/// Extended ack attributes (`enum nlmsgerr_attrs`).
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Writes attributes.
#[derive(Debug, Default, Clone)]
pub struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    pub fn bytes(&mut self, kind: u16, data: &[u8]) -> &mut Attrs {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(align4(self.0.len()), 0);
        self
    }

    /// A NUL-terminated string, as the kernel's NLA_STRING policies accept.
    pub fn str(&mut self, kind: u16, s: &str) -> &mut Attrs {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(kind, &v)
    }

    /// nf_tables numbers are big-endian.
    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Attrs {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn u64(&mut self, kind: u16, v: u64) -> &mut Attrs {
        self.bytes(kind, &v.to_be_bytes())
    }

    pub fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs)) -> &mut Attrs {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        fill(self);
        let len = self.0.len() - start;
        self.0[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Appends one message (header, nfgenmsg, attributes) to `out`.
pub fn push_message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// One message as a vector.
pub fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_message(&mut out, kind, flags, seq, family, res_id, attrs);
    out
}

/// The message type of an nf_tables message.
pub fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One attribute read back: its type without the nested/byte-order flags, and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub data: &'a [u8],
}

/// Reads a run of attributes. A length that runs past the end or is shorter than a header is
/// an error; a final partial padding is tolerated.
pub fn attrs(mut b: &[u8]) -> Result<Vec<Attr<'_>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(Error::malformed(format!("{} stray bytes after the attributes", b.len())));
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return Err(Error::malformed(format!("attribute {kind} claims {len} bytes of {}", b.len())));
        }
        out.push(Attr { kind, data: &b[4..len] });
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// Typed access to a run of attributes.
#[derive(Debug, Clone)]
pub struct AttrSet<'a>(pub Vec<Attr<'a>>);

impl<'a> AttrSet<'a> {
    pub fn parse(b: &'a [u8]) -> Result<AttrSet<'a>> {
        Ok(AttrSet(attrs(b)?))
    }

    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.0.iter().find(|a| a.kind == kind).map(|a| a.data)
    }

    pub fn nested(&self, kind: u16) -> Result<Option<AttrSet<'a>>> {
        self.get(kind).map(AttrSet::parse).transpose()
    }

    pub fn u32(&self, kind: u16) -> Result<Option<u32>> {
        self.get(kind).map(be_u32).transpose()
    }

    pub fn u64(&self, kind: u16) -> Result<Option<u64>> {
        match self.get(kind) {
            None => Ok(None),
            Some(d) => match <[u8; 8]>::try_from(d) {
                Ok(a) => Ok(Some(u64::from_be_bytes(a))),
                Err(_) => Err(Error::malformed(format!("attribute {kind}: {} bytes for a u64", d.len()))),
            },
        }
    }

    pub fn string(&self, kind: u16) -> Result<Option<String>> {
        self.get(kind).map(string).transpose()
    }

    /// A string the object cannot do without.
    pub fn required_string(&self, kind: u16, what: &str) -> Result<String> {
        self.string(kind)?.ok_or_else(|| Error::malformed(format!("{what} without attribute {kind}")))
    }
}

pub fn be_u32(d: &[u8]) -> Result<u32> {
    <[u8; 4]>::try_from(d)
        .map(u32::from_be_bytes)
        .map_err(|_| Error::malformed(format!("{} bytes for a u32", d.len())))
}

/// A NUL-terminated (or not) UTF-8 string.
pub fn string(d: &[u8]) -> Result<String> {
    let d = d.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8(d.to_vec()).map_err(|_| Error::malformed("a name that is not UTF-8"))
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the header.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The family and attributes of a netfilter message (after its nfgenmsg).
    pub fn nf(&self) -> Result<(u8, AttrSet<'a>)> {
        if self.payload.len() < NFGENMSG_LEN {
            return Err(Error::malformed("netfilter message without its nfgenmsg"));
        }
        Ok((self.payload[0], AttrSet::parse(&self.payload[NFGENMSG_LEN..])?))
    }

    /// For an NLMSG_ERROR message: the errno (0 for an ack), the sequence of the request it
    /// answers, and the kernel's extended ack (a text, and the offset of the offending
    /// attribute in the request) when it sent one.
    pub fn error(&self) -> Result<Option<Ack>> {
        if self.kind != NLMSG_ERROR {
            return Ok(None);
        }
        let p = self.payload;
        if p.len() < 4 + NLMSG_HDRLEN {
            return Err(Error::malformed("error message shorter than its header"));
        }
        let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
        let request = &p[4..];
        let request_len = u32::from_ne_bytes([request[0], request[1], request[2], request[3]]) as usize;
        let request_seq = u32::from_ne_bytes([request[8], request[9], request[10], request[11]]);
        let mut ack = Ack { errno: code.saturating_neg(), seq: request_seq, text: None, offset: None };
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // The request follows in full unless capped; the ack attributes come after it.
            let skip = if self.flags & NLM_F_CAPPED != 0 { NLMSG_HDRLEN } else { align4(request_len) };
            if let Some(tlvs) = request.get(skip..) {
                let set = AttrSet::parse(tlvs)?;
                ack.text = set.string(NLMSGERR_ATTR_MSG)?;
                ack.offset = set
                    .get(NLMSGERR_ATTR_OFFS)
                    .and_then(|d| <[u8; 4]>::try_from(d).ok().map(|a| u32::from_ne_bytes(a) as usize));
            }
        }
        Ok(Some(ack))
    }
}

/// The kernel's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// 0, or a positive errno.
    pub errno: i32,
    pub seq: u32,
    pub text: Option<String>,
    /// Byte offset, in the request, of the attribute the kernel refused.
    pub offset: Option<usize>,
}

/// Splits a datagram into messages.
pub fn messages(mut b: &[u8]) -> Result<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < NLMSG_HDRLEN {
            return Err(Error::malformed(format!("{} stray bytes after the messages", b.len())));
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(Error::malformed(format!("message claims {len} bytes of {}", b.len())));
        }
        out.push(Message {
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[NLMSG_HDRLEN..len],
        });
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_cover_their_content() {
        let mut a = Attrs::new();
        a.str(1, "ab").u32(2, 7).nested(3, |n| {
            n.bytes(1, &[9]);
        });
        let parsed = attrs(&a.0).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], Attr { kind: 1, data: b"ab\0" });
        assert_eq!(parsed[1].data, &[0, 0, 0, 7]);
        let inner = attrs(parsed[2].data).unwrap();
        assert_eq!(inner, [Attr { kind: 1, data: &[9] }]);
        assert_eq!(a.0.len() % 4, 0);
        // The nested flag is set on the wire and stripped when read.
        assert_eq!(u16::from_ne_bytes([a.0[18], a.0[19]]), 3 | NLA_F_NESTED);
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        assert!(attrs(&[8, 0, 1, 0, 1]).is_err());
        assert!(attrs(&[2, 0, 1, 0]).is_err());
        assert!(attrs(&[1, 2]).is_err());
        assert!(messages(&[200, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(messages(&[4, 0, 0, 0]).is_err());
        let m = message(nft_type(1), 0, 1, 1, 0, &[]);
        assert_eq!(messages(&m).unwrap()[0].nf().unwrap().0, 1);
    }

    #[test]
    fn an_error_message_gives_the_errno_the_request_and_the_extended_ack() {
        let request = message(nft_type(12), NLM_F_REQUEST, 41, 1, 0, &[0; 8]);
        let mut payload = (-17i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&request[..NLMSG_HDRLEN]);
        let mut tlv = Attrs::new();
        tlv.str(NLMSGERR_ATTR_MSG, "exists").bytes(NLMSGERR_ATTR_OFFS, &24u32.to_ne_bytes());
        payload.extend_from_slice(&tlv.0);
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&(NLM_F_ACK_TLVS | NLM_F_CAPPED).to_ne_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&payload);
        let msgs = messages(&out).unwrap();
        let ack = msgs[0].error().unwrap().unwrap();
        assert_eq!(ack, Ack { errno: 17, seq: 41, text: Some("exists".into()), offset: Some(24) });
    }
}
