//! nf_tables expressions: the small instruction set rules are made of (load a field into a
//! register, compare, look a register up in a set, set a verdict). Only what this workspace
//! writes is typed; anything else read back from the kernel stays `Expr::Other`, so a rule
//! edited by hand is seen as different, never misread.

use crate::error::{Error, Result};
use crate::wire::{be_u32, string, AttrSet, Attrs};

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// Registers: the verdict register and the 4-byte data registers. The first 4-byte register
/// is also the first 16-byte one, and the kernel lists it by its 16-byte name (`REG_1`), so
/// that is the name to write; the next ones are `REG32_00 + 1`, `+ 2`, ...
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG32_00: u32 = 8;

pub mod payload {
    pub const NETWORK: u32 = 1;
    pub const TRANSPORT: u32 = 2;
}

pub mod meta {
    pub const MARK: u32 = 3;
    pub const NFPROTO: u32 = 15;
    pub const L4PROTO: u32 = 16;
}

pub mod ct {
    pub const STATE: u32 = 0;
    /// `ct state` bits.
    pub const ESTABLISHED: u32 = 1 << 1;
    pub const RELATED: u32 = 1 << 2;
}

pub mod fib {
    pub const RESULT_ADDRTYPE: u32 = 3;
    pub const F_SADDR: u32 = 1 << 0;
    pub const F_DADDR: u32 = 1 << 1;
    /// `RTN_LOCAL`: an address of this host.
    pub const RTN_LOCAL: u32 = 2;
}

pub mod cmp {
    pub const EQ: u32 = 0;
    pub const NEQ: u32 = 1;
    pub const LTE: u32 = 3;
    pub const GTE: u32 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

impl Verdict {
    pub fn encode(&self, a: &mut Attrs) {
        let (code, chain) = match self {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Continue => (NFT_CONTINUE, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Jump(c) => (NFT_JUMP, Some(c)),
            Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        };
        a.u32(NFTA_VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            a.str(NFTA_VERDICT_CHAIN, c);
        }
    }

    pub fn decode(set: &AttrSet<'_>) -> Result<Verdict> {
        let code =
            set.u32(NFTA_VERDICT_CODE)?.ok_or_else(|| Error::malformed("verdict without a code"))? as i32;
        let chain = || set.required_string(NFTA_VERDICT_CHAIN, "jump");
        Ok(match code {
            NF_ACCEPT => Verdict::Accept,
            NF_DROP => Verdict::Drop,
            NFT_CONTINUE => Verdict::Continue,
            NFT_RETURN => Verdict::Return,
            NFT_JUMP => Verdict::Jump(chain()?),
            NFT_GOTO => Verdict::Goto(chain()?),
            other => return Err(Error::malformed(format!("verdict code {other}"))),
        })
    }
}

/// A register's content or a verdict (`nft_data`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

impl Data {
    pub fn encode(&self, a: &mut Attrs, kind: u16) {
        a.nested(kind, |d| match self {
            Data::Value(v) => {
                d.bytes(NFTA_DATA_VALUE, v);
            }
            Data::Verdict(v) => {
                d.nested(NFTA_DATA_VERDICT, |x| v.encode(x));
            }
        });
    }

    pub fn decode(nest: &[u8]) -> Result<Data> {
        let set = AttrSet::parse(nest)?;
        if let Some(v) = set.get(NFTA_DATA_VALUE) {
            return Ok(Data::Value(v.to_vec()));
        }
        match set.nested(NFTA_DATA_VERDICT)? {
            Some(v) => Ok(Data::Verdict(Verdict::decode(&v)?)),
            None => Err(Error::malformed("data that is neither a value nor a verdict")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    Payload {
        dreg: u32,
        base: u32,
        offset: u32,
        len: u32,
    },
    Meta {
        dreg: u32,
        key: u32,
    },
    Ct {
        dreg: u32,
        key: u32,
    },
    Fib {
        dreg: u32,
        result: u32,
        flags: u32,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    /// Inclusive range, `op` 0 (in) or 1 (not in).
    Range {
        sreg: u32,
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Matches when the register's value is (not, when `inverted`) in the set; with `dreg`,
    /// loads the map's value there instead (0: a verdict map).
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        inverted: bool,
    },
    Immediate {
        dreg: u32,
        data: Data,
    },
    /// Packet and byte counts; never compared (they change as traffic flows).
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// Anything else, as the kernel gave it.
    Other {
        name: String,
        data: Vec<u8>,
    },
}

impl Expr {
    pub fn name(&self) -> &str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Fib { .. } => "fib",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Range { .. } => "range",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Counter { .. } => "counter",
            Expr::Other { name, .. } => name,
        }
    }

    /// The verdict statement `Immediate { dreg: 0, .. }`.
    pub fn verdict(v: Verdict) -> Expr {
        Expr::Immediate { dreg: REG_VERDICT, data: Data::Verdict(v) }
    }

    fn encode_data(&self, a: &mut Attrs) {
        match self {
            Expr::Payload { dreg, base, offset, len } => {
                a.u32(1, *dreg).u32(2, *base).u32(3, *offset).u32(4, *len);
            }
            Expr::Meta { dreg, key } => {
                a.u32(1, *dreg).u32(2, *key);
            }
            Expr::Ct { dreg, key } => {
                a.u32(1, *dreg).u32(2, *key);
            }
            Expr::Fib { dreg, result, flags } => {
                a.u32(1, *dreg).u32(2, *result).u32(3, *flags);
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                a.u32(1, *sreg).u32(2, *dreg).u32(3, mask.len() as u32);
                Data::Value(mask.clone()).encode(a, 4);
                Data::Value(xor.clone()).encode(a, 5);
            }
            Expr::Cmp { sreg, op, data } => {
                a.u32(1, *sreg).u32(2, *op);
                Data::Value(data.clone()).encode(a, 3);
            }
            Expr::Range { sreg, op, from, to } => {
                a.u32(1, *sreg).u32(2, *op);
                Data::Value(from.clone()).encode(a, 3);
                Data::Value(to.clone()).encode(a, 4);
            }
            Expr::Lookup { set, sreg, dreg, inverted } => {
                a.str(1, set).u32(2, *sreg);
                if let Some(d) = dreg {
                    a.u32(3, *d);
                }
                if *inverted {
                    a.u32(5, 1);
                }
            }
            Expr::Immediate { dreg, data } => {
                a.u32(1, *dreg);
                data.encode(a, 2);
            }
            Expr::Counter { packets, bytes } => {
                a.u64(1, *bytes).u64(2, *packets);
            }
            Expr::Other { data, .. } => a.0.extend_from_slice(data),
        }
    }

    /// The expression as one element of NFTA_RULE_EXPRESSIONS.
    pub fn encode(&self, a: &mut Attrs) {
        a.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, self.name());
            e.nested(NFTA_EXPR_DATA, |d| self.encode_data(d));
        });
    }

    /// One element of NFTA_RULE_EXPRESSIONS.
    pub fn decode(elem: &[u8]) -> Result<Expr> {
        let set = AttrSet::parse(elem)?;
        let name = set.required_string(NFTA_EXPR_NAME, "expression")?;
        let raw = set.get(NFTA_EXPR_DATA).unwrap_or_default();
        let d = AttrSet::parse(raw)?;
        let u = |k: u16| -> Result<u32> {
            d.u32(k)?.ok_or_else(|| Error::malformed(format!("{name} expression without attribute {k}")))
        };
        let value = |k: u16| -> Result<Vec<u8>> {
            match d.get(k).map(Data::decode).transpose()? {
                Some(Data::Value(v)) => Ok(v),
                _ => Err(Error::malformed(format!("{name} expression without a value in attribute {k}"))),
            }
        };
        Ok(match name.as_str() {
            "payload" if d.get(5).is_none() => {
                Expr::Payload { dreg: u(1)?, base: u(2)?, offset: u(3)?, len: u(4)? }
            }
            "meta" if d.get(3).is_none() => Expr::Meta { dreg: u(1)?, key: u(2)? },
            "ct" if d.get(3).is_none() && d.get(4).is_none() => Expr::Ct { dreg: u(1)?, key: u(2)? },
            "fib" => Expr::Fib { dreg: u(1)?, result: u(2)?, flags: u(3)? },
            "bitwise" if d.get(6).map(be_u32).transpose()?.unwrap_or(0) == 0 => {
                Expr::Bitwise { sreg: u(1)?, dreg: u(2)?, mask: value(4)?, xor: value(5)? }
            }
            "cmp" => Expr::Cmp { sreg: u(1)?, op: u(2)?, data: value(3)? },
            "range" => Expr::Range { sreg: u(1)?, op: u(2)?, from: value(3)?, to: value(4)? },
            "lookup" => Expr::Lookup {
                set: d
                    .get(1)
                    .map(string)
                    .transpose()?
                    .ok_or_else(|| Error::malformed("lookup without a set"))?,
                sreg: u(2)?,
                dreg: d.u32(3)?,
                inverted: d.u32(5)?.unwrap_or(0) & 1 != 0,
            },
            "immediate" => Expr::Immediate {
                dreg: u(1)?,
                data: Data::decode(d.get(2).ok_or_else(|| Error::malformed("immediate without data"))?)?,
            },
            "counter" => Expr::Counter { bytes: d.u64(1)?.unwrap_or(0), packets: d.u64(2)?.unwrap_or(0) },
            _ => Expr::Other { name, data: raw.to_vec() },
        })
    }
}

/// A rule's expressions as NFTA_RULE_EXPRESSIONS content.
pub fn encode_list(exprs: &[Expr], a: &mut Attrs) {
    for e in exprs {
        e.encode(a);
    }
}

pub fn decode_list(list: &[u8]) -> Result<Vec<Expr>> {
    AttrSet::parse(list)?
        .0
        .iter()
        .filter(|a| a.kind == NFTA_LIST_ELEM)
        .map(|a| Expr::decode(a.data))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_typed_expression_reads_back_as_written() {
        let exprs = vec![
            Expr::Meta { dreg: REG32_00, key: meta::L4PROTO },
            Expr::Cmp { sreg: REG32_00, op: cmp::EQ, data: vec![6] },
            Expr::Payload { dreg: REG32_00, base: payload::TRANSPORT, offset: 2, len: 2 },
            Expr::Range { sreg: REG32_00, op: 0, from: vec![0, 80], to: vec![0, 90] },
            Expr::Ct { dreg: REG32_00, key: ct::STATE },
            Expr::Bitwise { sreg: 8, dreg: 8, mask: vec![0, 0, 0, 6], xor: vec![0; 4] },
            Expr::Fib { dreg: 8, result: fib::RESULT_ADDRTYPE, flags: fib::F_SADDR },
            Expr::Lookup { set: "azn-i1".into(), sreg: 8, dreg: None, inverted: true },
            Expr::Lookup { set: "egress".into(), sreg: 8, dreg: Some(REG_VERDICT), inverted: false },
            Expr::Counter { packets: 3, bytes: 180 },
            Expr::verdict(Verdict::Jump("entry".into())),
            Expr::verdict(Verdict::Return),
            Expr::verdict(Verdict::Drop),
        ];
        let mut a = Attrs::new();
        encode_list(&exprs, &mut a);
        assert_eq!(decode_list(&a.0).unwrap(), exprs);
    }

    #[test]
    fn an_expression_this_crate_does_not_write_stays_opaque() {
        let mut a = Attrs::new();
        a.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, "log");
            e.nested(NFTA_EXPR_DATA, |d| {
                d.str(2, "prefix");
            });
        });
        let back = decode_list(&a.0).unwrap();
        assert!(matches!(&back[0], Expr::Other { name, .. } if name == "log"));
        let mut again = Attrs::new();
        encode_list(&back, &mut again);
        assert_eq!(again.0, a.0, "written back byte for byte");
    }
}
