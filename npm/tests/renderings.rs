//! Every backend's rendering of the IR, judged against the API's semantics without a kernel:
//! on every conformance case and on random clusters, a simulation of what the dataplane would
//! do with the rendering must give the semantic evaluator's verdict.
//!
//! - nftables: the table's rules walked as the kernel walks them (`nftables::eval`), for the
//!   whole cluster and for each node's view;
//! - Windows HNS ACLs (first match by priority), SCTP aside (HNS cannot express it; reported).

use std::net::IpAddr;

use npm::dataplane::hns;
use npm::dataplane::nftables::{eval, render, ruleset};
use policy_compiler::compile::{compile, compile_for};
use policy_compiler::model::Protocol;
use policy_compiler::reach::{endpoints, reachability, Engine};
use policy_compiler::semantic::{self, Endpoint};
use policy_compiler::testing::conformance::{cases, mismatches};
use policy_compiler::testing::{cluster, QUERIES};
use proptest::prelude::*;

/// The nftables verdict on one connection, from the rendered table.
fn nft(rs: &ruleset::Ruleset, src: IpAddr, dst: IpAddr, protocol: Protocol, port: u16) -> bool {
    eval::evaluate(rs, &Default::default(), &|_| false, src, dst, protocol, port).allowed
}

#[test]
fn the_nftables_rendering_passes_every_conformance_case() {
    let mut failures = Vec::new();
    for case in cases() {
        let rs = render::render(&compile(&case.snap.cluster)).unwrap();
        failures.extend(mismatches(&case, "nftables", None, |src, dst, protocol, port| {
            nft(&rs, src, dst, protocol, port)
        }));
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_hns_rendering_passes_every_conformance_case_but_sctp() {
    let mut failures = Vec::new();
    for case in cases() {
        let rendered = hns::render(&compile(&case.snap.cluster), &case.snap.cluster, None);
        failures.extend(mismatches(&case, "HNS", Some(Protocol::Sctp), |src, dst, protocol, port| {
            hns::evaluate(&rendered, src, dst, protocol, port)
        }));
        if case.text.contains("protocol: SCTP}]") {
            assert!(!rendered.unsupported.is_empty(), "{}: SCTP must be reported as unsupported", case.name);
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_nftables_rendering_agrees_with_the_semantics_on_random_clusters(c in cluster()) {
        let externals: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap(), "10.0.9.9".parse().unwrap()];
        let whole = render::render(&compile(&c)).unwrap();
        // A node's view decides its own pods' part of each verdict (their egress, their ingress).
        let views: Vec<(String, ruleset::Ruleset)> = ["n0", "n1"].iter()
            .map(|n| (n.to_string(), render::render(&compile_for(&c, Some(n))).unwrap()))
            .collect();
        let local = |e: &Endpoint, node: &str| matches!(e, Endpoint::Pod(p) if p.node.as_deref() == Some(node));
        let (sources, destinations) = endpoints(&c, &externals);
        for (protocol, port) in QUERIES {
            for from in &sources {
                for to in &destinations {
                    if from.name() == to.name() {
                        continue;
                    }
                    let (src, dst) = (from.ip().unwrap(), to.ip().unwrap());
                    let v = semantic::evaluate(&c, *from, *to, protocol, port);
                    prop_assert_eq!(nft(&whole, src, dst, protocol, port), v.allowed,
                        "nftables {}/{}: {} -> {}\npolicies: {:#?}", protocol, port, from.name(), to.name(), c.policies);
                    for (node, view) in &views {
                        let expected = (!local(from, node) || v.egress.allows()) && (!local(to, node) || v.ingress.allows());
                        prop_assert_eq!(nft(view, src, dst, protocol, port), expected,
                            "nftables on {} {}/{}: {} -> {}", node, protocol, port, from.name(), to.name());
                    }
                }
            }
        }
    }

    #[test]
    fn the_hns_rendering_agrees_with_the_semantics_on_random_clusters(c in cluster()) {
        let externals: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap(), "10.0.9.9".parse().unwrap()];
        let windows = hns::render(&compile(&c), &c, None);
        let ip_of = |name: &str| -> IpAddr {
            c.pods.iter().find(|p| p.key() == name).and_then(|p| p.ip).unwrap_or_else(|| name.parse().unwrap())
        };
        for (protocol, port) in QUERIES.into_iter().filter(|(p, _)| *p != Protocol::Sctp) {
            for s in reachability(&c, &externals, protocol, port, Engine::Semantic) {
                let allowed = hns::evaluate(&windows, ip_of(&s.from), ip_of(&s.to), protocol, port);
                prop_assert_eq!(allowed, s.allowed, "HNS {}/{}: {} -> {}\npolicies: {:#?}", protocol, port, s.from, s.to, c.policies);
            }
        }
    }
}
