//! The iptables backend against a real kernel, inside a network namespace this test creates:
//! a full program, an incremental pod change, a policy removal (its sets destroyed after the
//! rules that used them), and cleanup leaving nothing behind.

mod common;

use common::Netns;
use npm::dataplane::exec::Exec;
use npm::dataplane::iptables::{render, Iptables};
use npm::dataplane::Dataplane;
use policy_compiler::incremental::{diff, Compiler, Event};
use policy_compiler::ir::{SetId, SetKind};
use policy_compiler::snapshot::Snapshot;

fn members(ns: &Netns, set: &str) -> String {
    ns.process().run("ipset", &["list", set], "").unwrap_or_default()
}

/// The conformance case with ipBlocks and `except` (sets of every kind).
fn ipblock_case() -> Compiler {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/policy/07-ipblock-except.yaml");
    Compiler::new(Snapshot::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap().cluster)
}

#[test]
fn programs_updates_and_cleans_up_a_real_kernel() {
    let ns = Netns::new("dataplane");
    let mut compiler = ipblock_case();
    let mut dp = Iptables::new(Box::new(ns.process())).unwrap();
    dp.apply(&diff(&Default::default(), compiler.ir())).unwrap();

    let save = ns.process().run("iptables-save", &["-t", "filter"], "").unwrap();
    assert!(save.contains("-A FORWARD -j AZURE-NPM") && save.contains("-A OUTPUT -j AZURE-NPM"), "{save}");
    assert_eq!(save.matches("-A AZURE-NPM-INGRESS").count(), compiler.ir().ingress.len());
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    for name in compiler.ir().sets.keys() {
        assert!(sets.lines().any(|l| l == name.to_string()), "{name} missing from the kernel");
    }
    let again = diff(&Default::default(), compiler.ir());
    dp.apply(&again).unwrap(); // programming the same state twice is harmless
    assert_eq!(
        ns.process().run("iptables-save", &["-t", "filter"], "").unwrap().matches("-j AZURE-NPM\n").count(),
        2
    );

    // y/b loses the label that let it reach x/a: it leaves that peer's set.
    let mut pod = compiler.cluster().pod("y/b").unwrap().clone();
    let peer = compiler.ir().sets.values().find(|s| s.key.contains("pod{pod=b}")).unwrap().id.to_string();
    assert!(members(&ns, &peer).contains("10.0.2.2"));
    pod.labels.insert("pod".into(), "bee".into());
    let delta = compiler.apply(Event::UpsertPod(pod));
    dp.apply(&delta).unwrap();
    assert!(!members(&ns, &peer).contains("10.0.2.2"), "{}", members(&ns, &peer));

    // The policy goes: its rules first, then its sets.
    let delta = compiler.apply(Event::DeletePolicy { namespace: "x".into(), name: "block".into() });
    assert!(!delta.destroyed.is_empty());
    dp.apply(&delta).unwrap();
    assert!(dp.pending_destroy.is_empty(), "{:?}", dp.pending_destroy);
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    for gone in &delta.destroyed {
        assert!(!sets.lines().any(|l| l == gone.to_string()), "{gone} should be destroyed");
    }

    dp.cleanup().unwrap();
    let save = ns.process().run("iptables-save", &["-t", "filter"], "").unwrap();
    assert!(!save.contains("AZURE-NPM"), "{save}");
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    assert!(!sets.lines().any(|l| l.starts_with("azn-")), "{sets}");
}

/// Sets made by an older version with ipset's default bound (65536 members), rules referring
/// to them, and the temporary set of a replacement interrupted by a crash: adopting and
/// programming replaces each set with one of the current bound, same name, same members, the
/// rules untouched, the temporary set gone. (`create -exist` refuses a set whose bound differs,
/// so an older set would otherwise stay capped, or fail the apply once recreated.)
#[test]
fn sets_an_older_version_made_smaller_are_replaced_in_place() {
    let ns = Netns::new("resize");
    let compiler = ipblock_case();
    let ir = compiler.ir();
    let old_sets = render::ipset_restore(ir, &mut Default::default())
        .replace("maxelem 1048576", "maxelem 65536")
        + "create azn-resize hash:net family inet maxelem 65536\nadd azn-resize 10.9.9.0/24\n";
    ns.process().run("ipset", &["restore"], &old_sets).unwrap();
    ns.process().run("iptables-restore", &["--noflush"], &render::iptables_restore(ir)).unwrap();
    let header =
        |name: &str| members(&ns, name).lines().find(|l| l.starts_with("Header:")).unwrap_or("").to_string();
    let any = ir.sets.keys().next().unwrap().to_string();
    assert!(header(&any).contains("maxelem 65536"), "{}", header(&any));

    let mut dp = Iptables::new(Box::new(ns.process())).unwrap();
    let adopted = dp.adopt().unwrap();
    assert_eq!(adopted.sets.len(), ir.sets.len(), "the older sets are adopted, members and all");
    let view = ns.kernel();
    assert_eq!(view.undersized.len(), ir.sets.len());
    assert!(view.resize_leftover && view.problems.is_empty(), "{:?}", view.problems);
    dp.apply(&diff(&adopted, ir)).unwrap();

    for (id, set) in &ir.sets {
        let name = id.to_string();
        assert!(header(&name).contains("maxelem 1048576"), "{name}: {}", header(&name));
        let listed = members(&ns, &name);
        let v4 = set.members.iter().filter(|m| m.is_v4()).count();
        assert_eq!(listed.lines().skip_while(|l| *l != "Members:").skip(1).count(), v4, "{name}: {listed}");
    }
    let sets = ns.process().run("ipset", &["list", "-n"], "").unwrap();
    assert!(!sets.lines().any(|l| l == "azn-resize"), "{sets}");
    let view = ns.kernel();
    assert!(view.undersized.is_empty() && !view.resize_leftover);
    assert_eq!(view.ir, npm::dataplane::iptables::readback::kernel_shape(ir));
    assert!(dp.drift(ir).unwrap().is_empty(), "nothing left to repair");
    dp.cleanup().unwrap();
}

/// A set named as the agent names sets but of a type it never makes that name (only another
/// tool could make one): `create -exist` would refuse it forever. The agent destroys it before
/// creating the name it needs, and destroys one it does not need with the sets it removes.
#[test]
fn sets_of_the_agents_names_but_another_type_are_replaced() {
    let ns = Netns::new("misfit");
    let compiler = ipblock_case();
    let ir = compiler.ir();
    let wanted = ir.sets.values().find(|s| s.kind() == SetKind::HashIp).unwrap().id.to_string();
    let unwanted = format!("{}000000000001", &wanted[..wanted.len() - 12]);
    assert!(unwanted.parse::<SetId>().is_ok() && !ir.sets.keys().any(|k| k.to_string() == unwanted));
    let foreign = format!(
        "create {wanted} hash:net family inet\nadd {wanted} 10.9.0.0/16\ncreate {unwanted} hash:net family inet\n"
    );
    ns.process().run("ipset", &["restore"], &foreign).unwrap();
    assert_eq!(ns.kernel().problems.len(), 2, "{:?}", ns.kernel().problems);

    let mut dp = Iptables::new(Box::new(ns.process())).unwrap();
    let adopted = dp.adopt().unwrap();
    dp.apply(&diff(&adopted, ir)).unwrap();

    let view = ns.kernel();
    assert!(view.problems.is_empty() && view.misfits.is_empty(), "{:?}", view.problems);
    assert_eq!(view.ir, npm::dataplane::iptables::readback::kernel_shape(ir));
    assert!(members(&ns, &wanted).contains("Type: hash:ip"), "{}", members(&ns, &wanted));
    assert!(!ns.process().run("ipset", &["list", "-n"], "").unwrap().lines().any(|l| l == unwanted));
    assert!(dp.drift(ir).unwrap().is_empty(), "nothing left to repair");
    dp.cleanup().unwrap();
}
