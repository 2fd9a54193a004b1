//! Reachability matrices from either engine, over the same endpoints.

use std::net::IpAddr;

use serde::Serialize;

use crate::ir::Ir;
use crate::model::{Cluster, Protocol};
use crate::semantic::{self, Endpoint};
use crate::{compile, compiled};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Semantic,
    Compiled,
}

/// One row of a reachability matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    pub from: String,
    pub to: String,
    pub allowed: bool,
}

/// Every ordered pair of distinct endpoints: sources are the pods (with an address), the
/// `externals` and the nodes' InternalIPs; destinations are the pods and the `externals`.
pub fn endpoints<'a>(cluster: &'a Cluster, externals: &[IpAddr]) -> (Vec<Endpoint<'a>>, Vec<Endpoint<'a>>) {
    let pods = cluster.pods.iter().filter(|p| p.ip.is_some()).map(Endpoint::Pod);
    let ext = externals.iter().map(|ip| Endpoint::Ip(*ip));
    let nodes = cluster.nodes.iter().filter_map(|n| n.internal_ip).map(Endpoint::Ip);
    let sources = pods.clone().chain(ext.clone()).chain(nodes).collect();
    let destinations = pods.chain(ext).collect();
    (sources, destinations)
}

pub fn reachability(
    cluster: &Cluster,
    externals: &[IpAddr],
    protocol: Protocol,
    port: u16,
    engine: Engine,
) -> Vec<Reach> {
    let ir: Option<Ir> = (engine == Engine::Compiled).then(|| compile::compile(cluster));
    let (sources, destinations) = endpoints(cluster, externals);
    let mut out = Vec::new();
    for from in &sources {
        for to in &destinations {
            if from.name() == to.name() {
                continue;
            }
            let allowed = match (&ir, from.ip(), to.ip()) {
                (Some(ir), Some(src), Some(dst)) => compiled::evaluate(ir, src, dst, protocol, port).allowed,
                _ => semantic::evaluate(cluster, *from, *to, protocol, port).allowed,
            };
            out.push(Reach { from: from.name(), to: to.name(), allowed });
        }
    }
    out
}
