//! A batch: nf_tables requests the kernel applies as one transaction (framed by BATCH_BEGIN and
//! BATCH_END). Every request carries a label, and element requests the label of each element,
//! so a refusal names what was refused. Sequence numbers are relative (1, 2, ...) until
//! `Socket::commit` rebases them.

use crate::object::{elems_header, msg, Elem, ELEMS_LIST};
use crate::wire::{
    nft_type, push_message, Attrs, NFGENMSG_LEN, NLMSG_HDRLEN, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};

/// Element lists are one attribute, whose length field is 16 bits: stay well below it.
const ELEMS_PER_MESSAGE_BYTES: usize = 48 * 1024;

#[derive(Debug, Default)]
pub struct Batch {
    /// The requests, back to back (no framing yet).
    pub(crate) buf: Vec<u8>,
    /// Per request: its offset in `buf`, its label, and for element requests each element's
    /// offset within the request and label.
    pub(crate) requests: Vec<Request>,
}

#[derive(Debug)]
pub(crate) struct Request {
    pub offset: usize,
    pub label: String,
    pub elems: Vec<(usize, String)>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests in the batch.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Bytes of the requests.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Adds one request. `create` adds NLM_F_CREATE (create if missing, no error if present).
    /// New rules are appended to their chain, so a chain's rules keep the batch's order.
    pub fn add(&mut self, kind: u16, family: u8, create: bool, attrs: &Attrs, label: impl Into<String>) {
        let append = if kind == msg::NEWRULE { NLM_F_APPEND } else { 0 };
        let flags = NLM_F_REQUEST | append | if create { NLM_F_CREATE } else { 0 };
        let seq = self.requests.len() as u32 + 1;
        let offset = self.buf.len();
        push_message(&mut self.buf, nft_type(kind), flags, seq, family, 0, &attrs.0);
        self.requests.push(Request { offset, label: label.into(), elems: Vec::new() });
    }

    /// Adds (or with `delete`, removes) elements of a set, split over as many requests as
    /// their size needs. `labels[i]` names `elems[i]` in errors. An empty delete is a flush.
    pub fn elems(
        &mut self,
        family: u8,
        table: &str,
        set: &str,
        delete: bool,
        elems: &[Elem],
        labels: &[String],
    ) {
        let (kind, flags) = if delete {
            (msg::DELSETELEM, NLM_F_REQUEST)
        } else {
            (msg::NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE)
        };
        let verb = if delete { "removing" } else { "adding" };
        if elems.is_empty() {
            if delete {
                let label = format!("flushing set {set}");
                self.add(kind, family, false, &elems_header(table, set), label);
            }
            return;
        }
        let mut start = 0;
        while start < elems.len() {
            let mut a = elems_header(table, set);
            let mut offsets = Vec::new();
            let mut end = start;
            a.nested(ELEMS_LIST, |l| {
                while end < elems.len() && l.len() < ELEMS_PER_MESSAGE_BYTES {
                    offsets.push((l.len(), labels.get(end).cloned().unwrap_or_default()));
                    elems[end].encode(l);
                    end += 1;
                }
            });
            let seq = self.requests.len() as u32 + 1;
            let offset = self.buf.len();
            push_message(&mut self.buf, nft_type(kind), flags, seq, family, 0, &a.0);
            // Offsets the kernel reports count from the message's start.
            let base = NLMSG_HDRLEN + NFGENMSG_LEN;
            let elems = offsets.into_iter().map(|(o, l)| (base + o, l)).collect();
            let label = format!("{verb} {} elements of set {set}", end - start);
            self.requests.push(Request { offset, label, elems });
            start = end;
        }
    }

    /// What request `index` (0-based) does, naming the element at `offset` when known.
    pub fn describe(&self, index: usize, offset: Option<usize>) -> String {
        let Some(r) = self.requests.get(index) else { return format!("request {index} of the batch") };
        let elem = offset.and_then(|o| r.elems.iter().rev().find(|(start, _)| *start <= o));
        match elem {
            Some((_, label)) if !label.is_empty() => format!("{} (element {label})", r.label),
            _ => r.label.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages;

    #[test]
    fn big_element_lists_are_split_and_errors_name_the_element() {
        let elems: Vec<Elem> = (0..10_000u32).map(|i| Elem::key(i.to_be_bytes().to_vec())).collect();
        let labels: Vec<String> = (0..10_000).map(|i| format!("#{i}")).collect();
        let mut b = Batch::new();
        b.elems(1, "t", "s", false, &elems, &labels);
        assert!(b.len() > 1, "one attribute cannot hold 10k elements");
        let msgs = messages(&b.buf).unwrap();
        assert_eq!(msgs.len(), b.len());
        let mut total = 0;
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.seq as usize, i + 1);
            let (_, set) = m.nf().unwrap();
            let (_, _, e) = crate::object::decode_elems(&set).unwrap();
            total += e.len();
        }
        assert_eq!(total, 10_000);
        // The third element of the second request.
        let second = &b.requests[1];
        let third = second.elems[2].0;
        assert_eq!(
            b.describe(1, Some(third + 4)),
            format!("{} (element {})", second.label, second.elems[2].1)
        );
        let mut flush = Batch::new();
        flush.elems(1, "t", "s", true, &[], &[]);
        assert_eq!(flush.describe(0, None), "flushing set s");
    }
}
