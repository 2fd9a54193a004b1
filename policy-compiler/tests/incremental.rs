//! Property: applying the deltas of any event sequence to the first IR gives exactly the full
//! compile of the resulting cluster, and so does the incremental compiler's own IR.

use policy_compiler::testing as common;

use common::{cluster, event};
use policy_compiler::compile::{compile, compile_for};
use policy_compiler::incremental::Compiler;
use proptest::prelude::*;

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
