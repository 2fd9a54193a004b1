//! Which backend to program: the one asked for, or with `auto`, the one the evidence names.
//! Never a guess: without evidence `auto` is an error that says what it looked for.
//!
//! Evidence, gathered without changing anything:
//! - nf_tables: the kernel answers an nf_tables request on netlink, and is 5.10 or newer (the
//!   first to keep a table's comment, which is how the agent knows its table);
//! - iptables: which variant the node's iptables programs, from kube's own marks — the chains
//!   `KUBE-IPTABLES-HINT` and `KUBE-KUBELET-CANARY` that kubelet and kube-proxy create in the
//!   mangle table of the variant they use — else the `iptables` binary's own report
//!   (`iptables --version`: `nf_tables` or `legacy`).
//!
//! `auto` picks nftables when the kernel has it (the agent's own table coexists with whatever
//! kube-proxy uses), else iptables in the variant the evidence names. Evidence is gathered
//! again while the agent runs; a change is logged and reported, never followed.

use crate::exec::Exec;

/// What `--dataplane` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Nftables,
    Iptables,
    Auto,
}

/// The iptables variant: the nf_tables-based one or the legacy one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Nft,
    Legacy,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Nft => "nf_tables",
            Variant::Legacy => "legacy",
        }
    }
}

/// A backend to program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables(Variant),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Nftables => f.write_str("nftables"),
            Backend::Iptables(v) => write!(f, "iptables ({})", v.name()),
        }
    }
}

/// What was found, each with how it was found (or why not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub nf_tables: Result<(), String>,
    /// The variant kube marked (hint or canary chains in one variant's mangle table).
    pub kube_marks: Option<Variant>,
    /// The `iptables` binary's own report.
    pub binary: Result<Variant, String>,
}

impl Evidence {
    /// The iptables variant the evidence names: kube's marks first (they say what kube-proxy
    /// and kubelet really use), then the binary's report.
    pub fn variant(&self) -> Option<Variant> {
        self.kube_marks.or(self.binary.as_ref().ok().copied())
    }

    pub fn describe(&self) -> String {
        let nft = match &self.nf_tables {
            Ok(()) => "the kernel answers nf_tables requests".to_string(),
            Err(e) => format!("no nf_tables ({e})"),
        };
        let marks = match self.kube_marks {
            Some(v) => {
                format!("kube's KUBE-IPTABLES-HINT/KUBE-KUBELET-CANARY chains in iptables-{}", v.name())
            }
            None => {
                "neither iptables variant holds kube's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain alone"
                    .to_string()
            }
        };
        let binary = match &self.binary {
            Ok(v) => format!("`iptables --version` reports {}", v.name()),
            Err(e) => format!("`iptables --version`: {e}"),
        };
        format!("{nft}; {marks}; {binary}")
    }
}

/// The decision (pure).
pub fn decide(choice: Choice, evidence: &Evidence) -> Result<Backend, String> {
    let iptables = || {
        evidence.variant().map(Backend::Iptables).ok_or_else(|| {
            format!(
                "cannot tell which iptables variant this node uses; refusing to guess ({})",
                evidence.describe()
            )
        })
    };
    match choice {
        Choice::Nftables => match &evidence.nf_tables {
            Ok(()) => Ok(Backend::Nftables),
            Err(e) => {
                Err(format!("--dataplane nftables: the kernel does not answer nf_tables requests ({e})"))
            }
        },
        Choice::Iptables => iptables(),
        Choice::Auto if evidence.nf_tables.is_ok() => Ok(Backend::Nftables),
        Choice::Auto => {
            iptables().map_err(|e| format!("--dataplane auto: no nf_tables in the kernel and {e}"))
        }
    }
}

/// The variant a `iptables --version` line reports.
pub fn reported(version: &str) -> Option<Variant> {
    if version.contains("nf_tables") {
        Some(Variant::Nft)
    } else if version.contains("legacy") {
        Some(Variant::Legacy)
    } else {
        None
    }
}

/// The oldest kernel the nftables backend runs on.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// Whether a kernel release (`uname -r`) is at least `MIN_KERNEL`.
pub fn recent_enough(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_KERNEL,
        _ => false,
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Gathers the evidence (reads only).
pub fn gather(exec: &dyn Exec) -> Evidence {
    let release = kernel_release();
    let nf_tables = nfnl::Socket::open()
        .and_then(|mut s| s.generation().map(|_| ()))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            if recent_enough(&release) {
                Ok(())
            } else {
                Err(format!("kernel {release:?} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1))
            }
        });
    let marked = |v: Variant| {
        let program = match v {
            Variant::Nft => "iptables-nft-save",
            Variant::Legacy => "iptables-legacy-save",
        };
        exec.run(program, &["-t", "mangle"], "").is_ok_and(|save| {
            save.lines().any(|l| {
                let l = l.trim_start_matches(':');
                l.starts_with("KUBE-IPTABLES-HINT ") || l.starts_with("KUBE-KUBELET-CANARY ")
            })
        })
    };
    let kube_marks = match (marked(Variant::Nft), marked(Variant::Legacy)) {
        (true, false) => Some(Variant::Nft),
        (false, true) => Some(Variant::Legacy),
        // Both (a node that switched) or neither: kube's marks do not decide.
        _ => None,
    };
    let binary = match exec.run("iptables", &["--version"], "") {
        Ok(v) => reported(&v).ok_or_else(|| format!("an unknown variant: {:?}", v.trim())),
        Err(e) => Err(e.to_string()),
    };
    Evidence { nf_tables, kube_marks, binary }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(nft: bool, marks: Option<Variant>, binary: Option<Variant>) -> Evidence {
        Evidence {
            nf_tables: if nft { Ok(()) } else { Err("EPROTONOSUPPORT".into()) },
            kube_marks: marks,
            binary: binary.ok_or_else(|| "not installed".to_string()),
        }
    }

    #[test]
    fn auto_prefers_nftables_and_otherwise_needs_evidence() {
        assert_eq!(decide(Choice::Auto, &evidence(true, None, None)), Ok(Backend::Nftables));
        assert_eq!(
            decide(Choice::Auto, &evidence(false, None, Some(Variant::Legacy))),
            Ok(Backend::Iptables(Variant::Legacy))
        );
        let err = decide(Choice::Auto, &evidence(false, None, None)).unwrap_err();
        assert!(err.contains("refusing to guess") && err.contains("KUBE-IPTABLES-HINT"), "{err}");
    }

    #[test]
    fn kubes_marks_outrank_the_binarys_report() {
        let e = evidence(true, Some(Variant::Legacy), Some(Variant::Nft));
        assert_eq!(decide(Choice::Iptables, &e), Ok(Backend::Iptables(Variant::Legacy)));
        assert!(decide(Choice::Nftables, &evidence(false, None, None)).is_err());
        assert_eq!(reported("iptables v1.8.9 (nf_tables)"), Some(Variant::Nft));
        assert_eq!(reported("iptables v1.8.9 (legacy)"), Some(Variant::Legacy));
        assert_eq!(reported("iptables v1.4"), None);
        assert!(recent_enough("6.18.44-fc-v1300") && recent_enough("5.10.0-28-amd64"));
        assert!(!recent_enough("5.4.0-1109-azure") && !recent_enough("garbage"));
    }
}
