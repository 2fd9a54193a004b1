//! The few nf_tables requests the plugin makes on its hot path: set, remove and list the
//! elements of one map, each change one transaction, over a NETLINK_NETFILTER socket in the
//! caller's network namespace (`nfnl`); no `nft` process is started.

use nfnl::object::{decode_elems, elems_header, msg, Data, Elem, Set, ELEMS_LIST};
use nfnl::{Batch, Socket};

use crate::skel::error::{Error, Result};

pub const NFPROTO_BRIDGE: u8 = nfnl::family::BRIDGE;
pub(super) use nfnl::error::ENOENT;

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

pub struct Nft {
    sock: Socket,
}

fn refused(map: MapRef<'_>, what: &str, e: nfnl::Error) -> Error {
    let missing = e.errno() == Some(ENOENT);
    let hint = if missing { " (the table or map is missing)" } else { "" };
    Error::Nft { missing, msg: format!("{what} of {} {}: {e}{hint}", map.table, map.set) }
}

impl Nft {
    pub fn open() -> Result<Nft> {
        let sock =
            Socket::open().map_err(|e| Error::Netlink(format!("opening the nf_tables socket: {e}")))?;
        Ok(Nft { sock })
    }

    /// One transaction: removes then adds elements of the map.
    fn change(
        &mut self,
        map: MapRef<'_>,
        remove: Option<&[u8]>,
        add: Option<(&[u8], &[u8])>,
    ) -> nfnl::Result<()> {
        let mut batch = Batch::new();
        if let Some(key) = remove {
            batch.elems(map.family, map.table, map.set, true, &[Elem::key(key.to_vec())], &[]);
        }
        if let Some((key, value)) = add {
            let e = Elem { key: key.to_vec(), data: Some(Data::Value(value.to_vec())), flags: 0 };
            batch.elems(map.family, map.table, map.set, false, &[e], &[]);
        }
        self.sock.commit(&batch)
    }

    /// Makes `key` map to `value`: inserted, or replaced in one transaction if it mapped to
    /// something else. Returns false when it already held `value`.
    pub fn put(&mut self, map: MapRef<'_>, key: &[u8], value: &[u8]) -> Result<bool> {
        match self.change(map, None, Some((key, value))) {
            Ok(()) => Ok(true),
            // The key maps to something else (kernels say EEXIST or EBUSY).
            Err(e) if matches!(e.errno(), Some(nfnl::error::EEXIST) | Some(nfnl::error::EBUSY)) => {
                if self.list(map)?.iter().any(|el| el.key == key && el.value == value) {
                    return Ok(false);
                }
                self.change(map, Some(key), Some((key, value)))
                    .map_err(|e| refused(map, "replacing an element", e))?;
                Ok(true)
            }
            Err(e) => Err(refused(map, "adding an element", e)),
        }
    }

    /// Removes `key`; false when it was not there.
    pub fn remove(&mut self, map: MapRef<'_>, key: &[u8]) -> Result<bool> {
        match self.change(map, Some(key), None) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(ENOENT) => Ok(false),
            Err(e) => Err(refused(map, "removing an element", e)),
        }
    }

    /// Adds (or removes) a key of a plain set. Returns false when the set is missing; adding
    /// a present key or removing an absent one is done already. Whether the set (or the key)
    /// is there is asked first: a get costs microseconds, a refused transaction milliseconds
    /// (an RCU grace period), and this runs on every ADD and DEL.
    pub fn set_key(&mut self, map: MapRef<'_>, key: &[u8], add: bool) -> Result<bool> {
        let set = Set::named(map.table, map.set);
        let asked = |e: nfnl::Error| Error::Netlink(format!("asking for {} {}: {e}", map.table, map.set));
        match self.sock.get(msg::GETSET, map.family, &set).map_err(asked)? {
            0 => {}
            ENOENT => return Ok(false),
            errno => {
                return Err(Error::Netlink(format!("asking for {} {}: errno {errno}", map.table, map.set)))
            }
        }
        if !add {
            let mut elem = elems_header(map.table, map.set);
            elem.nested(ELEMS_LIST, |l| Elem::key(key.to_vec()).encode(l));
            if self.sock.get(msg::GETSETELEM, map.family, &elem).map_err(asked)? == ENOENT {
                return Ok(true);
            }
        }
        let mut batch = Batch::new();
        batch.elems(map.family, map.table, map.set, !add, &[Elem::key(key.to_vec())], &[]);
        match self.sock.commit(&batch) {
            Ok(()) => Ok(true),
            // Gone meanwhile (the agent's cleanup, a DEL racing): nothing to do.
            Err(e) if e.errno() == Some(ENOENT) => Ok(!add),
            Err(e) => Err(refused(map, if add { "adding a key" } else { "removing a key" }, e)),
        }
    }

    /// Every element of the map.
    pub fn list(&mut self, map: MapRef<'_>) -> Result<Vec<Element>> {
        let mut out = Vec::new();
        self.sock
            .dump(msg::GETSETELEM, map.family, &elems_header(map.table, map.set), |m| {
                for e in decode_elems(&m.nf()?.1)?.2 {
                    let value = match e.data {
                        Some(Data::Value(v)) => v,
                        _ => Vec::new(),
                    };
                    out.push(Element { key: e.key, value });
                }
                Ok(())
            })
            .map_err(|e| refused(map, "listing", e))?;
        Ok(out)
    }

    /// Sends one request outside a batch (ipset's subsystem takes plain requests) and returns
    /// the kernel's errno for it (0: done).
    pub(super) fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> Result<i32> {
        self.sock.request(build).map_err(|e| Error::Netlink(format!("netfilter request: {e}")))
    }
}
