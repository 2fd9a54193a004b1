//! The one conntrack request the workspace makes: forget every tracked flow in the calling
//! thread's network namespace (ctnetlink's delete without a tuple). Probes use it so a new
//! probe is judged as a new connection, not as a flow an earlier policy let through (the
//! agents accept established flows first, as stateful firewalls do).

use crate::error::{Error, Result};
use crate::socket::Socket;
use crate::wire::{message, NLM_F_ACK, NLM_F_REQUEST};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// AF_INET: the IPv4 table.
const FAMILY_IPV4: u8 = 2;

/// Flushes the IPv4 conntrack table of this network namespace.
pub fn flush(sock: &mut Socket) -> Result<()> {
    let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    match sock.request(|seq| message(kind, NLM_F_REQUEST | NLM_F_ACK, seq, FAMILY_IPV4, 0, &[]))? {
        0 => Ok(()),
        errno => Err(Error::Refused { what: "flushing the conntrack table".into(), errno }),
    }
}
