//! Command-line value types shared by azure-npm and azure-lab.

use clap::ValueEnum;
use policy_compiler::model::Protocol;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    #[value(name = "TCP", alias = "tcp")]
    Tcp,
    #[value(name = "UDP", alias = "udp")]
    Udp,
    #[value(name = "SCTP", alias = "sctp")]
    Sctp,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Tcp => Protocol::Tcp,
            ProtocolArg::Udp => Protocol::Udp,
            ProtocolArg::Sctp => Protocol::Sctp,
        }
    }
}

/// `--dataplane`: which kernel interface the agent programs.
#[derive(Clone, Copy, ValueEnum)]
pub enum DataplaneArg {
    /// The agent's own table, `inet azure-npm`, over netlink
    Nftables,
    /// ipset + iptables-restore
    Iptables,
    /// nftables when the kernel has it, else iptables in the variant kube uses; never a guess
    Auto,
}

impl From<DataplaneArg> for dataplane::choice::Choice {
    fn from(d: DataplaneArg) -> dataplane::choice::Choice {
        use dataplane::choice::Choice;
        match d {
            DataplaneArg::Nftables => Choice::Nftables,
            DataplaneArg::Iptables => Choice::Iptables,
            DataplaneArg::Auto => Choice::Auto,
        }
    }
}
