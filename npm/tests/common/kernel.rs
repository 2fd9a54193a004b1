//! What the kernel of a test namespace holds, through either backend's read-back: whether it
//! is exactly a compiled state, and what it lets through.

use std::net::IpAddr;

use npm::dataplane::iptables::readback::{kernel_shape, KernelView};
use npm::dataplane::nftables::read::{TableState, View};
use npm::dataplane::nftables::{eval, render, Nftables};
use policy_compiler::compiled::evaluate;
use policy_compiler::ir::Ir;
use policy_compiler::model::Protocol;

use super::Netns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

pub const BACKENDS: [Backend; 2] = [Backend::Iptables, Backend::Nftables];

impl Backend {
    /// The `--dataplane` value.
    pub fn arg(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// One reading of the kernel.
pub enum Kernel {
    Iptables(KernelView),
    Nftables(View),
}

impl Kernel {
    pub fn read(ns: &Netns, backend: Backend) -> Option<Kernel> {
        match backend {
            Backend::Iptables => {
                let rules = ns.command("iptables-save").args(["-t", "filter"]).output().ok()?;
                let sets = ns.command("ipset").arg("save").output().ok()?;
                let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
                KernelView::read(&text(&sets), &text(&rules)).ok().map(Kernel::Iptables)
            }
            Backend::Nftables => ns.enter(|| Nftables::new().ok()?.read().ok()).map(Kernel::Nftables),
        }
    }

    /// The agent's rules are reached (hooks and entry intact).
    pub fn wired(&self) -> bool {
        match self {
            Kernel::Iptables(v) => v.entry_ok && v.jumps.iter().any(|j| j == "FORWARD"),
            Kernel::Nftables(v) => v.table == TableState::Ours && v.fixed_ok,
        }
    }

    /// Exactly the compiled state `ir`, wired.
    pub fn holds(&self, ir: &Ir) -> bool {
        match self {
            Kernel::Iptables(v) => v.ir == kernel_shape(ir) && v.wired(&["FORWARD", "OUTPUT"]),
            Kernel::Nftables(v) => {
                self.wired() && v.problems.is_empty() && render::render(ir).is_ok_and(|r| r == v.ruleset)
            }
        }
    }

    /// Whether a new connection passes (unwired: the kernel lets everything through).
    pub fn allows(&self, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> bool {
        if !self.wired() {
            return true;
        }
        match self {
            Kernel::Iptables(v) => evaluate(&v.ir, src, dst, protocol, port).allowed,
            Kernel::Nftables(v) => {
                eval::evaluate(&v.ruleset, &v.hold, &|_| false, src, dst, protocol, port).allowed
            }
        }
    }
}
