//! `azure-npm debug`: reachability matrices and explained verdicts over a YAML snapshot.

use std::net::IpAddr;

use crate::dataplane::{hns, iptables, nftables, KernelTrace};
use crate::error::{Error, Result};
use policy_compiler::compile::compile;
use policy_compiler::compiled::{self, Trace};
use policy_compiler::model::{Cluster, Protocol};
use policy_compiler::reach::{reachability, Engine, Reach};
use policy_compiler::semantic::{self, Endpoint, Verdict};
use policy_compiler::snapshot::Snapshot;
use serde::Serialize;

/// Loads a snapshot; objects that do not convert are reported on stderr and left out.
pub fn load(path: &std::path::Path) -> Result<Cluster> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("reading {}: {e}", path.display())))?;
    let snap =
        Snapshot::from_yaml(&text).map_err(|e| Error::Input(format!("parsing {}: {e}", path.display())))?;
    for refused in &snap.refused {
        eprintln!("azure-npm: skipping invalid object: {refused}");
    }
    Ok(snap.cluster)
}

#[derive(Serialize)]
pub struct Matrix {
    pub protocol: String,
    pub port: u16,
    pub engine: Engine,
    pub results: Vec<Reach>,
}

pub fn matrix(
    cluster: &Cluster,
    externals: &[IpAddr],
    protocol: Protocol,
    port: u16,
    engine: Engine,
) -> Matrix {
    Matrix {
        protocol: protocol.to_string(),
        port,
        engine,
        results: reachability(cluster, externals, protocol, port, engine),
    }
}

/// A table for people: rows are sources, columns destinations, `.` allowed, `X` denied.
pub fn matrix_table(m: &Matrix) -> String {
    let title = format!("reachability {}/{} ({:?} engine)", m.protocol, m.port, m.engine);
    reach_table(&title, &m.results)
}

/// Rows are sources, columns destinations (numbered, listed below), `.` allowed, `X` denied.
pub fn reach_table(title: &str, results: &[Reach]) -> String {
    let mut sources: Vec<&str> = Vec::new();
    let mut destinations: Vec<&str> = Vec::new();
    for r in results {
        if !sources.contains(&r.from.as_str()) {
            sources.push(&r.from);
        }
        if !destinations.contains(&r.to.as_str()) {
            destinations.push(&r.to);
        }
    }
    // Columns in the rows' order (pods, then external addresses).
    destinations.sort_by_key(|d| sources.iter().position(|s| s == d).unwrap_or(usize::MAX));
    let width = sources.iter().chain(&destinations).map(|s| s.len()).max().unwrap_or(4);
    let mut out = format!("{title}: . allowed, X denied\n");
    out += &format!("{:width$}", "from \\ to");
    for (i, _) in destinations.iter().enumerate() {
        out += &format!(" {:>3}", i);
    }
    out.push('\n');
    for s in &sources {
        out += &format!("{s:width$}");
        for d in &destinations {
            let cell = results.iter().find(|r| r.from == *s && r.to == *d).map_or("-", |r| {
                if r.allowed {
                    "."
                } else {
                    "X"
                }
            });
            out += &format!(" {cell:>3}");
        }
        out.push('\n');
    }
    for (i, d) in destinations.iter().enumerate() {
        out += &format!("  {i:>3}: {d}\n");
    }
    out
}

/// Resolves `ns/pod` or an address to an endpoint (an address that is a pod's is that pod).
pub fn endpoint<'a>(cluster: &'a Cluster, text: &str) -> Result<Endpoint<'a>> {
    if text.contains('/') {
        return match cluster.pod(text) {
            Some(p) => Ok(Endpoint::Pod(p)),
            None => Err(Error::Input(format!("no pod {text} in the snapshot"))),
        };
    }
    let ip: IpAddr =
        text.parse().map_err(|_| Error::Input(format!("{text:?} is neither ns/pod nor an IP address")))?;
    Ok(cluster.pods.iter().find(|p| p.ip == Some(ip)).map_or(Endpoint::Ip(ip), Endpoint::Pod))
}

#[derive(Serialize)]
pub struct Explanation {
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub port: u16,
    pub allowed: bool,
    pub semantic: Verdict,
    /// The compiled IR's walk (absent when an endpoint has no address to match on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiled: Option<Trace>,
    /// The same walk over the kernel's actual sets and rules (`--dataplane`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<KernelTrace>,
}

pub fn explain(
    cluster: &Cluster,
    from: Endpoint,
    to: Endpoint,
    protocol: Protocol,
    port: u16,
) -> Explanation {
    let semantic = semantic::evaluate(cluster, from, to, protocol, port);
    let compiled = match (from.ip(), to.ip()) {
        (Some(src), Some(dst)) => Some(compiled::evaluate(&compile(cluster), src, dst, protocol, port)),
        _ => None,
    };
    Explanation {
        from: from.name(),
        to: to.name(),
        protocol: protocol.to_string(),
        port,
        allowed: semantic.allowed,
        semantic,
        compiled,
        dataplane: None,
    }
}

pub fn explanation_text(e: &Explanation) -> String {
    let mut out = format!(
        "{} -> {} {}/{}: {}\n",
        e.from,
        e.to,
        e.protocol,
        e.port,
        if e.allowed { "ALLOWED" } else { "DENIED" }
    );
    if let Some(note) = &e.semantic.note {
        out += &format!("  note: {note}\n");
    }
    for (label, who, d) in [("egress", &e.from, &e.semantic.egress), ("ingress", &e.to, &e.semantic.ingress)]
    {
        out += &match (d.judged, d.isolated, d.allowed_by.is_empty()) {
            (false, _, _) => format!("  {label} of {who}: not a pod, no policy applies\n"),
            (true, false, _) => format!("  {label} of {who}: not isolated (no {label} policy selects it)\n"),
            (true, true, false) => format!(
                "  {label} of {who}: isolated by {}; allowed by {}\n",
                d.selected_by.join(", "),
                d.allowed_by.join(", ")
            ),
            (true, true, true) => {
                format!("  {label} of {who}: isolated by {}; no rule allows it\n", d.selected_by.join(", "))
            }
        };
    }
    if let Some(t) = &e.compiled {
        let agree = if t.allowed == e.allowed { "agrees" } else { "DISAGREES" };
        out += &format!("  compiled rules {agree}");
        if let Some(r) = &t.accepted_by {
            out += &format!(": accepted by \"{r}\"");
        }
        if let Some(r) = &t.dropped_by {
            out += &format!(": dropped by \"{r}\"");
        }
        out.push('\n');
    }
    if let Some(k) = &e.dataplane {
        let agree = if k.allowed == e.allowed { "agrees" } else { "DISAGREES" };
        out += &format!("  kernel ({}: {}) {agree}", k.backend, if k.allowed { "allows" } else { "denies" });
        let marked: Vec<&String> =
            k.trace.egress_allowed_by.iter().chain(&k.trace.ingress_allowed_by).collect();
        if !marked.is_empty() {
            out += &format!(
                ": allowed by \"{}\"",
                marked.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\", \"")
            );
        }
        if let Some(r) = &k.trace.accepted_by {
            out += &format!(": accepted by \"{r}\"");
        }
        if let Some(r) = &k.trace.dropped_by {
            out += &format!(": dropped by \"{r}\"");
        }
        out.push('\n');
        if !k.wired {
            out += "  kernel: the agent's chains are not (fully) hooked in; `azure-npm start` repairs this\n";
        }
        for p in &k.problems {
            out += &format!("  kernel: {p}\n");
        }
    }
    out
}

/// The compiled rules for one target, as text (nftables: an `nft -f` script of the node's
/// view); notes about what could not be rendered go to stderr.
pub fn render(cluster: &Cluster, target: &str, node: Option<&str>) -> Result<String> {
    let ir = compile(cluster);
    Ok(match target {
        "ipset" => {
            let mut notes = iptables::render::Notes::default();
            let text = iptables::render::ipset_restore(&ir, &mut notes);
            for n in notes.0 {
                eprintln!("azure-npm: {n}");
            }
            text
        }
        "iptables" => iptables::render::iptables_restore(&ir),
        "nftables" => {
            let ir = policy_compiler::compile::compile_for(cluster, node);
            let rs = nftables::render::render(&ir)?;
            nftables::text::script(&rs)
        }
        "hns" => {
            let rendered = hns::render(&ir, cluster, node);
            for u in &rendered.unsupported {
                eprintln!("azure-npm: not expressible on Windows: {u}");
            }
            serde_json::to_string_pretty(&rendered).map_err(|e| Error::Input(e.to_string()))? + "\n"
        }
        other => return Err(Error::Input(format!("unknown target {other}"))),
    })
}
