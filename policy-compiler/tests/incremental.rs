//! Property: applying the deltas of any event sequence to the first IR gives exactly the full
//! compile of the resulting cluster, and so does the incremental compiler's own IR.

mod common;

use std::net::IpAddr;

use common::{cluster, labels, make_pod, policy, NAMESPACES};
use policy_compiler::compile::{compile, compile_for};
use policy_compiler::incremental::{Compiler, Event};
use policy_compiler::model::{Namespace, Node};
use proptest::prelude::*;

fn event() -> impl Strategy<Value = Event> {
    let pod = (
        0..3usize,
        0..10usize,
        labels(&["app", "tier"]),
        // A small address pool, so pods share and reuse addresses.
        proptest::option::weighted(0.9, 1..12u8),
        proptest::option::of(0..2usize),
        proptest::sample::subsequence(vec![0, 1, 2, 3, 4], 0..4),
    )
        .prop_map(|(ns, i, labels, ip, node, ports)| {
            Event::UpsertPod(make_pod(
                ns,
                i,
                labels,
                ip.map(|last| IpAddr::from([10, 0, 0, last])),
                node,
                &ports,
            ))
        });
    prop_oneof![
        5 => pod,
        2 => (0..3usize, 0..10usize)
            .prop_map(|(ns, i)| Event::DeletePod { namespace: NAMESPACES[ns].into(), name: format!("p{i}") }),
        1 => (0..3usize, labels(&["ns", "env"])).prop_map(|(ns, mut l)| {
            l.insert("kubernetes.io/metadata.name".into(), NAMESPACES[ns].into());
            Event::UpsertNamespace(Namespace { name: NAMESPACES[ns].into(), labels: l })
        }),
        1 => (policy(), 0..4usize).prop_map(|(mut p, i)| {
            p.name = format!("np{i}");
            Event::UpsertPolicy(p)
        }),
        1 => (0..3usize, 0..4usize)
            .prop_map(|(ns, i)| Event::DeletePolicy { namespace: NAMESPACES[ns].into(), name: format!("np{i}") }),
        1 => (0..3u8).prop_map(|n| Event::UpsertNode(Node { name: format!("n{n}"), internal_ip: Some(IpAddr::from([10, 240, 0, n + 9])) })),
        1 => (0..3u8).prop_map(|n| Event::DeleteNode(format!("n{n}"))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn a_node_view_stays_equal_to_its_full_compile(start in cluster(), events in proptest::collection::vec(event(), 1..25)) {
        let mut compiler = Compiler::for_node(start, Some("n0".into()));
        let mut applied = compiler.ir().clone();
        for (step, e) in events.into_iter().enumerate() {
            compiler.apply(e.clone()).apply(&mut applied);
            let full = compile_for(compiler.cluster(), Some("n0"));
            prop_assert_eq!(&applied, &full, "step {}: deltas diverged after {:?}", step, e);
            prop_assert_eq!(compiler.ir(), &full, "step {}: compiler state diverged after {:?}", step, e);
        }
    }

    #[test]
    fn deltas_applied_in_order_equal_a_full_compile(start in cluster(), events in proptest::collection::vec(event(), 1..25)) {
        let mut compiler = Compiler::new(start);
        let mut applied = compiler.ir().clone();
        for (step, e) in events.into_iter().enumerate() {
            let delta = compiler.apply(e.clone());
            delta.apply(&mut applied);
            let full = compile(compiler.cluster());
            prop_assert_eq!(&applied, &full, "step {}: deltas diverged after {:?}", step, e);
            prop_assert_eq!(compiler.ir(), &full, "step {}: compiler state diverged after {:?}", step, e);
        }
    }
}
