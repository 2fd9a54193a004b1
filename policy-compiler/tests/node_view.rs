//! Property: a node's view (rules for its own pods only, far ends matched cluster-wide)
//! decides exactly that node's part of every verdict — the egress of its pods and the ingress
//! of its pods — and the incremental compiler keeps a node's view equal to a full compile.

use policy_compiler::testing as common;

use std::net::IpAddr;

use common::{cluster, QUERIES};
use policy_compiler::compile::compile_for;
use policy_compiler::compiled;
use policy_compiler::model::Cluster;
use policy_compiler::reach::endpoints;
use policy_compiler::semantic::{self, Endpoint};
use proptest::prelude::*;

fn local(e: &Endpoint, node: &str) -> bool {
    matches!(e, Endpoint::Pod(p) if p.node.as_deref() == Some(node))
}

fn check(c: &Cluster, node: &str) -> Result<(), TestCaseError> {
    let ir = compile_for(c, Some(node));
    let externals: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap(), "10.0.9.9".parse().unwrap()];
    let (sources, destinations) = endpoints(c, &externals);
    for (protocol, port) in QUERIES {
        for from in &sources {
            for to in &destinations {
                if from.name() == to.name() {
                    continue;
                }
                let v = semantic::evaluate(c, *from, *to, protocol, port);
                let expected =
                    (!local(from, node) || v.egress.allows()) && (!local(to, node) || v.ingress.allows());
                let got =
                    compiled::evaluate(&ir, from.ip().unwrap(), to.ip().unwrap(), protocol, port).allowed;
                prop_assert_eq!(
                    got,
                    expected,
                    "node {} {}/{}: {} -> {}",
                    node,
                    protocol,
                    port,
                    from.name(),
                    to.name()
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_node_view_decides_its_own_pods_part(c in cluster()) {
        check(&c, "n0")?;
        check(&c, "n1")?;
    }
}
