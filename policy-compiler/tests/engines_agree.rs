//! Property: on random clusters and policies, the compiled IR (walked as the kernel would) and
//! the semantic evaluator (the API's words) agree on every (source, destination, protocol,
//! port). The dataplanes' renderings are held to the same in `npm/tests/renderings.rs`.

use policy_compiler::testing as common;

use std::net::IpAddr;

use common::{cluster, QUERIES};
use policy_compiler::reach::{reachability, Engine};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compiled_and_semantic_agree_on_every_query(c in cluster()) {
        let externals: Vec<IpAddr> = vec!["203.0.113.9".parse().unwrap(), "10.0.9.9".parse().unwrap()];
        for (protocol, port) in QUERIES {
            let semantic = reachability(&c, &externals, protocol, port, Engine::Semantic);
            let compiled = reachability(&c, &externals, protocol, port, Engine::Compiled);
            for (s, k) in semantic.iter().zip(&compiled) {
                prop_assert_eq!(s, k, "{}/{}: {} -> {}\npolicies: {:#?}", protocol, port, s.from, s.to, c.policies);
            }
        }
    }
}
