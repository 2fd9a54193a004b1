//! A node that cannot hold every policy refuses the last ones in name order, whichever order
//! they arrived in, names the limit, and takes them back in when room is made.

use policy_compiler::incremental::{Compiler, Event};
use policy_compiler::limits::{Limit, NodeLimits};
use policy_compiler::model::Cluster;
use policy_compiler::snapshot::Snapshot;

fn policy(i: usize) -> policy_compiler::model::NetworkPolicy {
    let yaml = format!(
        "kind: NetworkPolicy\nmetadata: {{name: p{i:02}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{app: a{i}}}}}\n\
         \x20 ingress: [{{from: [{{podSelector: {{matchLabels: {{peer: b{i}}}}}}}]}}]\n"
    );
    Snapshot::from_yaml(&yaml).unwrap().cluster.policies.remove(0)
}

fn cluster(policies: impl IntoIterator<Item = usize>) -> Cluster {
    let mut c = Snapshot::from_yaml("kind: Namespace\nmetadata: {name: x}\n").unwrap().cluster;
    c.policies = policies.into_iter().map(policy).collect();
    c
}

#[test]
fn a_full_node_refuses_the_last_policies_by_name_and_takes_them_back_when_room_is_made() {
    // Each policy needs two sets of its own (targets, peer) plus the shared isolation set.
    let limits = NodeLimits { sets: 7, ..NodeLimits::DEFAULT };
    let forward = Compiler::within(cluster(0..5), None, limits.clone());
    let backward = Compiler::within(cluster((0..5).rev()), None, limits.clone());
    let refused: Vec<&str> = forward.refused().iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(refused, ["x/p03", "x/p04"]);
    assert!(
        matches!(forward.refused()[0].limit, Limit::Node { what: "sets", max: 7, .. }),
        "{:?}",
        forward.refused()
    );
    assert_eq!(forward.ir(), backward.ir(), "arrival order does not matter");
    assert_eq!(forward.ir().sets.len(), 7);
    assert_eq!(forward.ir(), &policy_compiler::compile::compile(&cluster(0..3)));

    // Deleting an admitted policy makes room for the first refused one.
    let mut c = forward;
    let delta = c.apply(Event::DeletePolicy { namespace: "x".into(), name: "p00".into() });
    assert!(!delta.is_empty());
    let refused: Vec<&str> = c.refused().iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(refused, ["x/p04"]);
    assert_eq!(c.ir(), &policy_compiler::compile::compile(&cluster(1..4)));

    // Within the limits nothing is refused.
    assert!(Compiler::within(cluster(0..3), None, limits).refused().is_empty());
}
