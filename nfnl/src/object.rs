//! nf_tables objects (tables, chains, sets and their elements, rules) as netlink attributes,
//! both ways. Families travel in the message's nfgenmsg, not here.

use crate::error::{Error, Result};
use crate::expr::{decode_list, encode_list, Expr};
use crate::wire::{AttrSet, Attrs};

pub use crate::expr::Data;

pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const GETCHAIN: u16 = 4;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    pub const DELSETELEM: u16 = 14;
    pub const NEWGEN: u16 = 15;
    pub const GETGEN: u16 = 16;
}

/// Netfilter hooks of the inet/ip families.
pub mod hook {
    pub const PREROUTING: u32 = 0;
    pub const INPUT: u32 = 1;
    pub const FORWARD: u32 = 2;
    pub const OUTPUT: u32 = 3;
    pub const POSTROUTING: u32 = 4;
}

/// Set flags (`enum nft_set_flags`).
pub mod set_flags {
    pub const CONSTANT: u32 = 0x2;
    pub const INTERVAL: u32 = 0x4;
    pub const MAP: u32 = 0x8;
    pub const CONCAT: u32 = 0x80;
}

/// `NFT_DATA_VERDICT`: the data type of a verdict map.
pub const DATA_VERDICT: u32 = 0xffff_ff00;
pub const ELEM_INTERVAL_END: u32 = 0x1;
/// The most userdata the kernel keeps for an object.
pub const USERDATA_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub flags: u32,
    /// The table's comment (in its userdata, as nft keeps it).
    pub comment: Option<String>,
}

/// nft's userdata record for a table comment (`NFTNL_UDATA_TABLE_COMMENT`).
const UDATA_TABLE_COMMENT: u8 = 0;

impl Table {
    pub fn encode(&self) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, &self.name).u32(2, self.flags);
        if let Some(c) = &self.comment {
            a.bytes(6, &udata_comment(UDATA_TABLE_COMMENT, c));
        }
        a
    }

    /// Only the name: what a delete or a get needs.
    pub fn named(name: &str) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, name);
        a
    }

    pub fn decode(set: &AttrSet<'_>) -> Result<Table> {
        Ok(Table {
            name: set.required_string(1, "table")?,
            flags: set.u32(2)?.unwrap_or(0),
            comment: set.get(6).map(|u| udata_record(u, UDATA_TABLE_COMMENT)).transpose()?.flatten(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub num: u32,
    pub priority: i32,
    /// `filter`, `nat` or `route`.
    pub kind: String,
    /// The chain's policy (NF_ACCEPT 1, NF_DROP 0).
    pub policy: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub table: String,
    pub name: String,
    pub hook: Option<Hook>,
}

impl Chain {
    pub fn encode(&self) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, &self.table).str(3, &self.name);
        if let Some(h) = &self.hook {
            a.nested(4, |n| {
                n.u32(1, h.num).u32(2, h.priority as u32);
            });
            a.u32(5, h.policy).str(7, &h.kind);
        }
        a
    }

    pub fn named(table: &str, name: &str) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, table).str(3, name);
        a
    }

    pub fn decode(set: &AttrSet<'_>) -> Result<Chain> {
        let hook = match set.nested(4)? {
            None => None,
            Some(h) => Some(Hook {
                num: h.u32(1)?.ok_or_else(|| Error::malformed("chain hook without a number"))?,
                priority: h.u32(2)?.unwrap_or(0) as i32,
                kind: set.string(7)?.unwrap_or_default(),
                policy: set.u32(5)?.unwrap_or(1),
            }),
        };
        Ok(Chain { table: set.required_string(1, "chain")?, name: set.required_string(3, "chain")?, hook })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub table: String,
    pub name: String,
    pub flags: u32,
    /// The key's type as nft names it (informational for the kernel, used by `nft list`).
    pub key_type: u32,
    pub key_len: u32,
    /// For maps: the value's type (`DATA_VERDICT` for verdict maps) and length.
    pub data: Option<(u32, u32)>,
    /// Lengths in bytes of the fields of a concatenated key.
    pub concat: Vec<u32>,
    /// Identifies the set within one transaction.
    pub id: u32,
    /// The most elements the kernel lets it hold (0: no limit).
    pub size: u32,
}

impl Set {
    pub fn encode(&self) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, &self.table)
            .str(2, &self.name)
            .u32(3, self.flags)
            .u32(4, self.key_type)
            .u32(5, self.key_len);
        if let Some((kind, len)) = self.data {
            a.u32(6, kind);
            if kind != DATA_VERDICT {
                a.u32(7, len);
            }
        }
        if !self.concat.is_empty() || self.size > 0 {
            a.nested(9, |d| {
                if self.size > 0 {
                    d.u32(1, self.size);
                }
                if !self.concat.is_empty() {
                    d.nested(2, |c| {
                        for len in &self.concat {
                            c.nested(1, |f| {
                                f.u32(1, *len);
                            });
                        }
                    });
                }
            });
        }
        a.u32(10, self.id);
        a
    }

    pub fn named(table: &str, name: &str) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, table).str(2, name);
        a
    }

    pub fn decode(set: &AttrSet<'_>) -> Result<Set> {
        let (mut concat, mut size) = (Vec::new(), 0);
        if let Some(desc) = set.nested(9)? {
            size = desc.u32(1)?.unwrap_or(0);
            if let Some(fields) = desc.nested(2)? {
                for f in &fields.0 {
                    if let Some(len) = AttrSet::parse(f.data)?.u32(1)? {
                        concat.push(len);
                    }
                }
            }
        }
        let data = match set.u32(6)? {
            None => None,
            Some(kind) => Some((kind, set.u32(7)?.unwrap_or(0))),
        };
        Ok(Set {
            table: set.required_string(1, "set")?,
            name: set.required_string(2, "set")?,
            flags: set.u32(3)?.unwrap_or(0),
            key_type: set.u32(4)?.unwrap_or(0),
            key_len: set.u32(5)?.ok_or_else(|| Error::malformed("set without a key length"))?,
            data,
            concat,
            id: set.u32(10)?.unwrap_or(0),
            size,
        })
    }
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Elem {
    pub key: Vec<u8>,
    pub data: Option<Data>,
    pub flags: u32,
}

impl Elem {
    pub fn key(key: Vec<u8>) -> Elem {
        Elem { key, data: None, flags: 0 }
    }

    pub fn encode(&self, a: &mut Attrs) {
        a.nested(1, |e| {
            e.nested(1, |k| {
                k.bytes(1, &self.key);
            });
            if let Some(d) = &self.data {
                d.encode(e, 2);
            }
            if self.flags != 0 {
                e.u32(3, self.flags);
            }
        });
    }

    pub fn decode(elem: &[u8]) -> Result<Elem> {
        let set = AttrSet::parse(elem)?;
        let key = match set.get(1).map(Data::decode).transpose()? {
            Some(Data::Value(v)) => v,
            _ => return Err(Error::malformed("set element without a key")),
        };
        Ok(Elem { key, data: set.get(2).map(Data::decode).transpose()?, flags: set.u32(3)?.unwrap_or(0) })
    }
}

/// The attributes of a set-element message: table, set, then (unless empty: a flush, for a
/// delete) the elements.
pub fn elems_header(table: &str, set: &str) -> Attrs {
    let mut a = Attrs::new();
    a.str(1, table).str(2, set);
    a
}

pub const ELEMS_LIST: u16 = 3;

/// The elements of one NEWSETELEM message (a dump's reply): table, set, elements.
pub fn decode_elems(set: &AttrSet<'_>) -> Result<(String, String, Vec<Elem>)> {
    let table = set.required_string(1, "set elements")?;
    let name = set.required_string(2, "set elements")?;
    let mut out = Vec::new();
    if let Some(list) = set.nested(ELEMS_LIST)? {
        for e in list.0.iter().filter(|a| a.kind == 1) {
            out.push(Elem::decode(e.data)?);
        }
    }
    Ok((table, name, out))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: String,
    pub chain: String,
    /// Set by the kernel; needed to delete one rule.
    pub handle: Option<u64>,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

/// nft's userdata record for a rule comment (`NFTNL_UDATA_RULE_COMMENT`).
const UDATA_RULE_COMMENT: u8 = 0;
/// The longest comment nft stores (`NFTNL_UDATA_COMMENT_MAXLEN`, with its NUL).
pub const COMMENT_MAX: usize = 128;

/// `text` cut to what a rule comment holds (on a character boundary).
pub fn comment_text(text: &str) -> String {
    let mut end = text.len().min(COMMENT_MAX - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Rule {
    pub fn encode(&self) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, &self.table).str(2, &self.chain);
        if let Some(h) = self.handle {
            a.u64(3, h);
        }
        a.nested(4, |l| encode_list(&self.exprs, l));
        if let Some(c) = &self.comment {
            a.bytes(7, &udata_comment(UDATA_RULE_COMMENT, c));
        }
        a
    }

    /// Deletes every rule of a chain (no handle), or one rule.
    pub fn delete(table: &str, chain: &str, handle: Option<u64>) -> Attrs {
        let mut a = Attrs::new();
        a.str(1, table).str(2, chain);
        if let Some(h) = handle {
            a.u64(3, h);
        }
        a
    }

    pub fn decode(set: &AttrSet<'_>) -> Result<Rule> {
        let exprs = match set.get(4) {
            Some(list) => decode_list(list)?,
            None => Vec::new(),
        };
        Ok(Rule {
            table: set.required_string(1, "rule")?,
            chain: set.required_string(2, "rule")?,
            handle: set.u64(3)?,
            exprs,
            comment: set.get(7).map(|u| udata_record(u, UDATA_RULE_COMMENT)).transpose()?.flatten(),
        })
    }
}

/// A comment as a userdata record (type, length, value with its NUL), cut to what nft keeps.
fn udata_comment(kind: u8, text: &str) -> Vec<u8> {
    let c = comment_text(text);
    let mut u = vec![kind, (c.len() + 1) as u8];
    u.extend_from_slice(c.as_bytes());
    u.push(0);
    u
}

/// The record of type `kind` in userdata (type, length, value records), if any.
fn udata_record(mut u: &[u8], kind: u8) -> Result<Option<String>> {
    while u.len() >= 2 {
        let (k, len) = (u[0], u[1] as usize);
        let value = u.get(2..2 + len).ok_or_else(|| Error::malformed("userdata record runs past its end"))?;
        if k == kind {
            return crate::wire::string(value).map(Some);
        }
        u = &u[2 + len..];
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Verdict;

    fn round<T>(a: Attrs, decode: impl Fn(&AttrSet<'_>) -> Result<T>) -> T {
        decode(&AttrSet::parse(&a.0).unwrap()).unwrap()
    }

    #[test]
    fn objects_read_back_as_written() {
        let t = Table { name: "azure-npm".into(), flags: 0, comment: Some("azure-npm/1".into()) };
        assert_eq!(round(t.encode(), Table::decode), t);
        let c = Chain {
            table: "azure-npm".into(),
            name: "forward".into(),
            hook: Some(Hook { num: hook::FORWARD, priority: -10, kind: "filter".into(), policy: 1 }),
        };
        assert_eq!(round(c.encode(), Chain::decode), c);
        let s = Set {
            table: "azure-npm".into(),
            name: "ports".into(),
            flags: 0,
            key_type: 29453,
            key_len: 12,
            data: None,
            concat: vec![4, 1, 2],
            id: 3,
            size: 1 << 20,
        };
        assert_eq!(round(s.encode(), Set::decode), s);
        let m = Set {
            name: "egress".into(),
            flags: set_flags::MAP,
            data: Some((DATA_VERDICT, 0)),
            concat: vec![],
            size: 0,
            ..s
        };
        assert_eq!(round(m.encode(), Set::decode), m);
        let r = Rule {
            table: "azure-npm".into(),
            chain: "entry".into(),
            handle: Some(9),
            exprs: vec![Expr::verdict(Verdict::Accept)],
            comment: Some("x/web ingress[0]".into()),
        };
        assert_eq!(round(r.encode(), Rule::decode), r);
    }

    #[test]
    fn elements_and_long_comments() {
        let mut a = elems_header("t", "s");
        a.nested(ELEMS_LIST, |l| {
            Elem { key: vec![10, 0, 0, 1], data: Some(Data::Verdict(Verdict::Goto("g".into()))), flags: 0 }
                .encode(l);
            Elem { key: vec![10, 0, 1, 0], data: None, flags: ELEM_INTERVAL_END }.encode(l);
        });
        let (table, set, elems) = round(a, decode_elems);
        assert_eq!((table.as_str(), set.as_str(), elems.len()), ("t", "s", 2));
        assert_eq!(elems[1].flags, ELEM_INTERVAL_END);
        let long = "é".repeat(100);
        let cut = comment_text(&long);
        assert!(cut.len() < COMMENT_MAX && long.starts_with(&cut));
        let r =
            Rule { table: "t".into(), chain: "c".into(), handle: None, exprs: vec![], comment: Some(long) };
        assert_eq!(round(r.encode(), Rule::decode).comment, Some(cut));
    }
}
