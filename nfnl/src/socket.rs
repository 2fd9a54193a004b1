//! A NETLINK_NETFILTER socket in the calling thread's network namespace.
//!
//! A batch goes to the kernel in one `send`: the kernel parses, applies and commits (or aborts)
//! it before `send` returns, queueing an error for each refused request. Requests do not ask
//! for acks (tens of thousands of them would overflow the receive buffer); instead a GETGEN
//! request that does is sent right after, and its answer marks the end of the batch's answers.

use netlink_sys::{protocols::NETLINK_NETFILTER, SocketAddr};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::object::msg;
use crate::wire::{
    message, messages, nft_type, push_message, Attrs, Message, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES, NLMSG_DONE, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};

/// Room for any datagram the kernel sends (dump parts are at most 32 KiB).
const RECV_BUFFER: usize = 1 << 20;

pub struct Socket {
    sock: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl Socket {
    pub fn open() -> Result<Socket> {
        let mut sock = netlink_sys::Socket::new(NETLINK_NETFILTER).map_err(io("opening"))?;
        sock.bind_auto().map_err(io("binding"))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(io("connecting"))?;
        // Errors name the refused attribute (offset) and leave the request out (capped);
        // kernels without either still answer, with less detail.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ok(Socket { sock, seq, buf: Vec::with_capacity(RECV_BUFFER), sndbuf: 0 })
    }

    fn take_seq(&mut self, n: u32) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n);
        s
    }

    /// Lets one `send` carry `len` bytes (a big batch is one message to the kernel).
    fn fit(&mut self, len: usize) {
        let want = len + 64 * 1024;
        if want <= self.sndbuf || want <= 200 * 1024 {
            return;
        }
        use nix::sys::socket::{setsockopt, sockopt};
        let size = want.min(i32::MAX as usize / 2);
        if setsockopt(&self.sock, sockopt::SndBufForce, &size).is_ok()
            || setsockopt(&self.sock, sockopt::SndBuf, &size).is_ok()
        {
            self.sndbuf = want;
        }
    }

    fn recv(&mut self) -> Result<()> {
        self.buf.clear();
        loop {
            match self.sock.recv(&mut self.buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io { what: "receiving", source: e }),
            }
        }
    }

    /// Applies a batch as one transaction: all of it, or (on any refusal) none of it.
    pub fn commit(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u32;
        let base = self.take_seq(n + 3);
        let mut framed = Vec::with_capacity(batch.buf.len() + 64);
        push_message(&mut framed, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, base, 0, NFNL_SUBSYS_NFTABLES, &[]);
        let start = framed.len();
        framed.extend_from_slice(&batch.buf);
        for r in &batch.requests {
            let at = start + r.offset + 8;
            let seq = u32::from_ne_bytes([framed[at], framed[at + 1], framed[at + 2], framed[at + 3]]);
            framed[at..at + 4].copy_from_slice(&base.wrapping_add(seq).to_ne_bytes());
        }
        push_message(
            &mut framed,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            base.wrapping_add(n + 1),
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        self.fit(framed.len());
        self.sock.send(&framed, 0).map_err(io("sending a batch"))?;
        drop(framed);
        let probe = base.wrapping_add(n + 2);
        self.sock
            .send(&message(nft_type(msg::GETGEN), NLM_F_REQUEST | NLM_F_ACK, probe, 0, 0, &[]), 0)
            .map_err(io("sending a request"))?;
        let mut refused: Option<Error> = None;
        loop {
            match self.recv() {
                Ok(()) => {}
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOBUFS) => {
                    // More refusals than the receive buffer holds: the batch failed.
                    return Err(refused.unwrap_or(Error::Refused {
                        what: "a batch whose answers overflowed the socket".into(),
                        errno: libc::ENOBUFS,
                    }));
                }
                Err(e) => return Err(e),
            }
            for m in messages(&self.buf)? {
                let Some(ack) = m.error()? else { continue };
                if ack.seq == probe {
                    return match refused {
                        Some(e) => Err(e),
                        None if ack.errno == 0 => Ok(()),
                        None => Err(Error::Refused {
                            what: "reading the ruleset generation".into(),
                            errno: ack.errno,
                        }),
                    };
                }
                let index = ack.seq.wrapping_sub(base);
                if ack.errno != 0 && index <= n + 1 && refused.is_none() {
                    let what = match index {
                        0 => "committing the batch".to_string(),
                        i if i == n + 1 => "ending the batch".to_string(),
                        i => batch.describe(i as usize - 1, ack.offset),
                    };
                    let what = match ack.text {
                        Some(t) => format!("{what}: {t}"),
                        None => what,
                    };
                    refused = Some(Error::Refused { what, errno: ack.errno });
                }
            }
        }
    }

    /// Lists objects: sends a dump request and hands each answer to `each`. A dump the kernel
    /// marks inconsistent (the ruleset changed while it was read) is `Error::Interrupted`.
    pub fn dump(
        &mut self,
        kind: u16,
        family: u8,
        attrs: &Attrs,
        mut each: impl FnMut(&Message<'_>) -> Result<()>,
    ) -> Result<()> {
        let seq = self.take_seq(1);
        let req = message(nft_type(kind), NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0, &attrs.0);
        self.sock.send(&req, 0).map_err(io("sending a dump request"))?;
        let mut interrupted = false;
        loop {
            self.recv()?;
            let buf = std::mem::take(&mut self.buf);
            let result = (|| {
                for m in messages(&buf)? {
                    if m.seq != seq {
                        continue;
                    }
                    interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                    if m.kind == NLMSG_DONE {
                        return Ok(true);
                    }
                    if let Some(ack) = m.error()? {
                        if ack.errno != 0 {
                            return Err(Error::Refused {
                                what: format!("listing (request {kind})"),
                                errno: ack.errno,
                            });
                        }
                        return Ok(true);
                    }
                    each(&m)?;
                }
                Ok(false)
            })();
            self.buf = buf;
            if result? {
                return if interrupted { Err(Error::Interrupted) } else { Ok(()) };
            }
        }
    }

    /// The ruleset's generation: it changes with every committed transaction.
    pub fn generation(&mut self) -> Result<u32> {
        let seq = self.take_seq(1);
        self.sock
            .send(&message(nft_type(msg::GETGEN), NLM_F_REQUEST, seq, 0, 0, &[]), 0)
            .map_err(io("sending a request"))?;
        loop {
            self.recv()?;
            for m in messages(&self.buf)? {
                if m.seq != seq {
                    continue;
                }
                if let Some(ack) = m.error()? {
                    return Err(Error::Refused {
                        what: "reading the ruleset generation".into(),
                        errno: ack.errno,
                    });
                }
                let (_, set) = m.nf()?;
                return set.u32(1)?.ok_or_else(|| Error::malformed("generation answer without an id"));
            }
        }
    }

    /// Asks whether an object exists (a get, outside any transaction: a refused transaction
    /// costs the kernel an RCU grace period, a missing object here costs nothing): the errno,
    /// 0 when it exists.
    pub fn get(&mut self, kind: u16, family: u8, attrs: &Attrs) -> Result<i32> {
        self.request(|seq| message(nft_type(kind), NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, &attrs.0))
    }

    /// Sends one request outside any batch (ipset's subsystem takes only those) and returns
    /// the kernel's errno (0: done). `build` gets the sequence number to use.
    pub fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> Result<i32> {
        let seq = self.take_seq(1);
        self.sock.send(&build(seq), 0).map_err(io("sending a request"))?;
        loop {
            self.recv()?;
            for m in messages(&self.buf)? {
                if let Some(ack) = m.error()? {
                    if ack.seq == seq {
                        return Ok(ack.errno);
                    }
                }
            }
        }
    }
}
