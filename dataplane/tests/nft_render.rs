//! Property: after any sequence of cluster events, the nftables model kept in step delta by
//! delta equals a full render of the resulting IR, and the changes it emitted, applied to the
//! old model, give the new one (what the kernel will hold is what was meant).

use dataplane::nftables::ops;
use dataplane::nftables::render::{render, Renderer};
use policy_compiler::incremental::Compiler;
use policy_compiler::testing::{cluster, event};
use proptest::prelude::*;

fn run(
    start: policy_compiler::model::Cluster,
    events: Vec<policy_compiler::incremental::Event>,
    node: Option<&str>,
) -> Result<(), TestCaseError> {
    let mut compiler = Compiler::for_node(start, node.map(String::from));
    let mut renderer = Renderer::new(compiler.ir().clone()).unwrap();
    let mut kernel = renderer.ruleset().clone();
    for (step, e) in events.into_iter().enumerate() {
        let delta = compiler.apply(e.clone());
        let changes = renderer.apply(&delta).unwrap();
        ops::apply(&mut kernel, &changes);
        let full = render(compiler.ir()).unwrap();
        prop_assert_eq!(renderer.ruleset(), &full, "step {}: the kept model diverged after {:?}", step, e);
        prop_assert_eq!(&kernel, &full, "step {}: the changes diverged after {:?}: {:?}", step, e, changes);
        // Nothing refers to what is not there.
        for chain in full.egress.values().chain(full.ingress.values()) {
            prop_assert!(
                full.chains.contains_key(chain),
                "step {}: a map points at missing chain {}",
                step,
                chain
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_kept_model_equals_a_full_render(start in cluster(), events in proptest::collection::vec(event(), 1..25)) {
        run(start, events, None)?;
    }

    #[test]
    fn a_node_views_kept_model_equals_a_full_render(start in cluster(), events in proptest::collection::vec(event(), 1..25)) {
        run(start, events, Some("n0"))?;
    }
}
