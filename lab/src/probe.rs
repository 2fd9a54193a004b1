//! Real connections between every pair, as `azure-npm debug reachability` lists them: sources
//! are the pods, the external hosts and the nodes; destinations the pods and the externals.
//! One prober per source runs all its connections at once, after the nodes' conntrack tables
//! were flushed (every probe is a new connection).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use policy_compiler::model::{Cluster, Protocol};
use policy_compiler::reach::{reachability, Engine, Reach};

use crate::state::State;

const PROBE: &str = include_str!("../../testdata/probe/probe.py");

/// Where an endpoint's connections start: (namespace, source address).
fn origin(state: &State, name: &str) -> Option<(String, IpAddr)> {
    if let Some(p) = state.pods.iter().find(|p| p.key == name) {
        return Some((p.netns.clone(), IpAddr::V4(p.ip?)));
    }
    let ip: IpAddr = name.parse().ok()?;
    if let Some(n) = state.nodes.iter().find(|n| IpAddr::V4(n.ip) == ip) {
        return Some((n.netns.clone(), ip));
    }
    state.externals.iter().any(|e| IpAddr::V4(*e) == ip).then(|| (state.inet.clone(), ip))
}

fn address(state: &State, name: &str) -> Option<IpAddr> {
    origin(state, name).map(|o| o.1)
}

/// Probes every pair for one protocol and port; `expected` holds the compiled engine's answer.
pub fn probe(
    state: &State,
    cluster: &Cluster,
    protocol: Protocol,
    port: u16,
) -> Result<(Vec<Reach>, Vec<Reach>), String> {
    let externals: Vec<IpAddr> = state.externals.iter().map(|e| IpAddr::V4(*e)).collect();
    let expected = reachability(cluster, &externals, protocol, port, Engine::Compiled);
    let mut sources: Vec<&str> = Vec::new();
    for r in &expected {
        if !sources.contains(&r.from.as_str()) {
            sources.push(&r.from);
        }
    }
    // New connections only: a flow an earlier probe made under other policies (the same ports,
    // by chance) would pass as established in the node it crosses, as stateful firewalls do.
    for n in &state.nodes {
        crate::net::inside(&n.netns, || nfnl::conntrack::flush(&mut nfnl::Socket::open()?))?
            .map_err(|e| format!("flushing conntrack in {}: {e}", n.name))?;
    }
    let mut runs = Vec::new();
    for src in sources {
        let (ns, ip) = origin(state, src).ok_or_else(|| format!("{src} is not in the lab"))?;
        let rows: Vec<&Reach> = expected.iter().filter(|r| r.from == src).collect();
        let mut list = Vec::new();
        for r in &rows {
            let to = address(state, &r.to).ok_or_else(|| format!("{} is not in the lab", r.to))?;
            list.push((protocol.to_string(), to.to_string(), port));
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", PROBE, &ip.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("prober in {ns}: {e}"))?;
        let input = serde_json::to_string(&list).map_err(|e| e.to_string())?;
        child.stdin.take().ok_or("no stdin")?.write_all(input.as_bytes()).map_err(|e| e.to_string())?;
        runs.push((rows, child));
    }
    let mut got = Vec::new();
    for (rows, child) in runs {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let answers: Vec<bool> = serde_json::from_slice(&out.stdout)
            .map_err(|_| format!("prober failed: {}", String::from_utf8_lossy(&out.stderr)))?;
        for (r, allowed) in rows.into_iter().zip(answers) {
            got.push(Reach { from: r.from.clone(), to: r.to.clone(), allowed });
        }
    }
    Ok((got, expected))
}

/// The pairs where the connections disagree with the expectation.
pub fn differences(got: &[Reach], expected: &[Reach]) -> Vec<String> {
    got.iter()
        .zip(expected)
        .filter(|(g, e)| g.allowed != e.allowed)
        .map(|(g, e)| {
            format!(
                "{} -> {}: expected {}, the connection {}",
                g.from,
                g.to,
                if e.allowed { "allowed" } else { "denied" },
                if g.allowed { "got through" } else { "was dropped" }
            )
        })
        .collect()
}
