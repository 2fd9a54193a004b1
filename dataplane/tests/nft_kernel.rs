//! The nftables backend against a real kernel, in network namespaces the tests create: every
//! conformance case programmed and read back as rendered (and listed by `nft`), pod events as
//! small transactions, drift repaired, a foreign table refused, an older layout replaced, a
//! full set refused with the previous state kept, held pods let through, cleanup.

mod common;

use common::{case_ir, Netns};
use dataplane::nftables::read::TableState;
use dataplane::nftables::render::render;
use dataplane::nftables::{Nftables, TABLE};
use dataplane::{Dataplane, Drift, Error};
use policy_compiler::incremental::{diff, Compiler, Event};
use policy_compiler::ir::Ir;
use policy_compiler::snapshot::Snapshot;

fn full(ir: &Ir) -> policy_compiler::incremental::Delta {
    diff(&Ir::default(), ir)
}

/// The backend's view of the kernel equals the rendering of `ir`, fixed parts intact.
fn holds(nft: &mut Nftables, ir: &Ir) -> bool {
    let view = nft.read().unwrap();
    let want = render(ir).unwrap();
    let ok =
        view.table == TableState::Ours && view.fixed_ok && view.problems.is_empty() && view.ruleset == want;
    if !ok {
        eprintln!("table {:?}, fixed {}, problems {:?}", view.table, view.fixed_ok, view.problems);
        if view.ruleset != want {
            eprintln!("kernel:   {:?}\nrendered: {want:?}", view.ruleset);
        }
    }
    ok
}

#[test]
fn every_conformance_case_is_programmed_read_back_and_listed() {
    let ns = Netns::new("cases");
    let dir = format!("{}/../testdata/policy", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap().trim_end_matches(".yaml").to_string())
        .collect();
    names.sort();
    let irs: Vec<(String, Ir)> = names.iter().map(|n| (n.clone(), case_ir(n))).collect();
    let step = irs.clone();
    ns.enter(move || {
        let mut nft = Nftables::new().unwrap();
        let mut before = Ir::default();
        for (name, ir) in step {
            // From the previous case to this one: one transaction each.
            nft.adopt().unwrap();
            nft.apply(&diff(&Ir::default(), &ir)).unwrap();
            assert!(holds(&mut nft, &ir), "{name}");
            assert!(nft.drift(&ir).unwrap().is_empty(), "{name}");
            before = ir;
        }
        let _ = before;
    });
    let listed = ns.nft("list table inet azure-npm");
    assert!(listed.contains("comment \"azure-npm/1\""), "{listed}");
    assert!(listed.contains("ip saddr vmap @isolated-egress"), "{listed}");
    let (ok, json) = ns.run(&["nft", "-j", "list", "table", "inet", TABLE]);
    assert!(ok && json.contains("\"table\""), "nft reads the table as JSON too: {json}");
}

#[test]
fn the_nft_script_loads_into_what_the_netlink_encoder_writes() {
    let ns = Netns::new("script");
    for name in
        ["07-ipblock-except", "08-named-port", "09-end-port", "11-egress-defaulting", "14-policies-or"]
    {
        let rs = render(&case_ir(name)).unwrap();
        let file = std::env::temp_dir().join(format!("nft-script-{}-{name}", std::process::id()));
        std::fs::write(&file, dataplane::nftables::text::script(&rs)).unwrap();
        let (ok, err) = ns.run(&["nft", "-f", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        assert!(ok, "{name}: nft -f: {err}");
        let view = ns.enter(|| Nftables::new().unwrap().read().unwrap());
        assert_eq!(view.problems, Vec::<String>::new(), "{name}");
        assert!(view.table == TableState::Ours && view.fixed_ok, "{name}: {:?}", view.table);
        assert_eq!(view.ruleset, rs, "{name}");
    }
}

#[test]
fn pod_events_are_small_transactions_and_drift_is_repaired() {
    let ns = Netns::new("events");
    let yaml = std::fs::read_to_string(format!(
        "{}/../testdata/policy/07-ipblock-except.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cluster = Snapshot::from_yaml(&yaml).unwrap().cluster;
    let handle = ns.0.clone();
    ns.enter(move || {
        let ns = Netns(handle);
        let mut compiler = Compiler::new(cluster);
        let mut nft = Nftables::new().unwrap();
        nft.adopt().unwrap();
        nft.apply(&full(compiler.ir())).unwrap();
        assert!(holds(&mut nft, compiler.ir()));

        // y/b changes labels: a member-only delta.
        let mut pod = compiler.cluster().pod("y/b").unwrap().clone();
        pod.labels.insert("pod".into(), "bee".into());
        let delta = compiler.apply(Event::UpsertPod(pod));
        assert!(delta.chains.is_none() && delta.created.is_empty());
        nft.apply(&delta).unwrap();
        assert!(holds(&mut nft, compiler.ir()));
        assert!(nft.drift(compiler.ir()).unwrap().is_empty());

        // Drift, each repaired from the kernel's actual state.
        let set = render(compiler.ir()).unwrap().sets.into_iter().find(|(_, e)| e.count() > 0).unwrap().0;
        let listed = ns.nft(&format!("list set inet azure-npm {set}"));
        let element =
            listed.split("elements = { ").nth(1).unwrap().split([',', ' ', '}']).next().unwrap().to_string();
        for (what, script, drift) in [
            (
                "an element deleted",
                format!("delete element inet azure-npm {set} {{ {element} }}"),
                Drift::Sets,
            ),
            ("the entry chain flushed", "flush chain inet azure-npm entry".to_string(), Drift::Hooks),
            ("the table deleted", "delete table inet azure-npm".to_string(), Drift::Hooks),
        ] {
            ns.nft(&script);
            let found = nft.drift(compiler.ir()).unwrap();
            assert!(found.contains(&drift), "{what}: {found:?}");
            let adopted = nft.adopt().unwrap();
            nft.apply(&diff(&adopted, compiler.ir())).unwrap();
            assert!(holds(&mut nft, compiler.ir()), "{what} repaired");
        }
    });
}

#[test]
fn a_foreign_table_is_refused_and_an_older_layout_replaced() {
    let ns = Netns::new("foreign");
    ns.nft("add table inet azure-npm");
    ns.nft("add chain inet azure-npm mine { type filter hook forward priority 0; policy accept; }");
    let before = ns.nft("list table inet azure-npm");
    let ir = case_ir("07-ipblock-except");
    let err = ns.enter({
        let ir = ir.clone();
        move || {
            let mut nft = Nftables::new().unwrap();
            let adopted = nft.adopt();
            assert!(matches!(adopted, Err(Error::ForeignTable { .. })), "{adopted:?}");
            assert!(nft.apply(&full(&ir)).is_err(), "nothing is applied over a table that is not ours");
            adopted.unwrap_err().to_string()
        }
    });
    assert!(err.contains("not made by azure-npm"), "{err}");
    assert_eq!(ns.nft("list table inet azure-npm"), before, "the foreign table is untouched");

    ns.nft("delete table inet azure-npm");
    ns.nft("add table inet azure-npm { comment \"azure-npm/0\"; }");
    ns.nft("add chain inet azure-npm old");
    ns.nft("add set inet azure-npm hold { type ipv4_addr; }");
    ns.nft("add element inet azure-npm hold { 10.9.9.9 }");
    ns.enter(move || {
        let mut nft = Nftables::new().unwrap();
        assert_eq!(nft.read().unwrap().table, TableState::Older("azure-npm/0".into()));
        nft.adopt().unwrap();
        nft.apply(&full(&ir)).unwrap();
        assert!(holds(&mut nft, &ir));
        let held = nft.read().unwrap().hold;
        assert!(held.contains(&"10.9.9.9".parse().unwrap()), "the CNI's holds survive the rebuild");
    });
    assert!(!ns.nft("list table inet azure-npm").contains("chain old"));
}

#[test]
fn a_set_the_kernel_refuses_to_fill_keeps_the_previous_state() {
    let ns = Netns::new("full");
    let yaml = std::fs::read_to_string(format!(
        "{}/../testdata/policy/07-ipblock-except.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cluster = Snapshot::from_yaml(&yaml).unwrap().cluster;
    ns.enter(move || {
        let mut compiler = Compiler::new(cluster);
        // Room for what the case needs now, not for one more pod in the biggest set.
        let biggest = render(compiler.ir()).unwrap().sets.values().map(|e| e.count()).max().unwrap() as u32;
        let mut nft = Nftables::with_set_size(biggest).unwrap();
        nft.adopt().unwrap();
        nft.apply(&full(compiler.ir())).unwrap();
        let before = nft.read().unwrap();
        // A new pod like every other pod of namespace y joins their sets.
        let mut pod = compiler.cluster().pod("y/b").unwrap().clone();
        pod.name = "b2".into();
        pod.ip = Some("10.0.2.99".parse().unwrap());
        let delta = compiler.apply(Event::UpsertPod(pod));
        let err = nft.apply(&delta).unwrap_err().to_string();
        assert!(err.contains("the set is full") && err.contains("10.0.2.99"), "{err}");
        assert_eq!(nft.read().unwrap(), before, "nothing of the refused change was applied");
    });
}

#[test]
fn held_pods_are_let_through_and_cleanup_removes_only_the_agents_table() {
    let ns = Netns::new("hold");
    let ir = case_ir("01-deny-all-ingress");
    ns.enter({
        let ir = ir.clone();
        move || {
            let mut nft = Nftables::new().unwrap();
            nft.adopt().unwrap();
            nft.apply(&full(&ir)).unwrap();
        }
    });
    ns.nft("add element inet azure-npm hold { 10.0.1.1, 10.0.1.2 }");
    ns.nft("add table inet someone-else");
    ns.enter(|| {
        let mut nft = Nftables::new().unwrap();
        nft.admit(&["10.0.1.1".parse().unwrap(), "10.0.7.7".parse().unwrap()]).unwrap();
        let held: Vec<String> = nft.read().unwrap().hold.iter().map(|a| a.to_string()).collect();
        assert_eq!(held, ["10.0.1.2"]);
        nft.cleanup().unwrap();
        assert_eq!(nft.read().unwrap().table, TableState::Missing);
    });
    assert!(ns.run(&["nft", "list", "table", "inet", "someone-else"]).0);
}
