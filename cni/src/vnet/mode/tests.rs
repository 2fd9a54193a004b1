//! Each mode's plan, rollback at every step, teardown and CHECK, against a recording fake
//! kernel that behaves like the real one where it matters: pod and host steps need the veth,
//! deleting the veth takes everything in the pod and the host side with it.

use super::*;
use crate::skel::error::Error;
use crate::vnet::config::Protocol;
use crate::vnet::step::{apply_all, first_missing, undo_all, Kernel};

#[derive(Default)]
struct Fake {
    facts: Vec<Step>,
    log: Vec<String>,
    fail_apply: Option<&'static str>,
    fail_undo: Vec<&'static str>,
}

fn goes_with_veth(s: &Step, host: &str) -> bool {
    match s {
        Step::HostOnBridge { host: h, .. } | Step::HostUp { host: h } | Step::HostRoute { host: h, .. } => {
            h == host
        }
        other => other.in_pod(),
    }
}

impl Kernel for Fake {
    fn apply(&mut self, step: &Step) -> crate::skel::error::Result<()> {
        self.log.push(format!("apply {}", step.name()));
        if self.fail_apply == Some(step.name()) {
            return Err(Error::Netlink(format!("injected failure at {}", step.name())));
        }
        let has_veth = self.facts.iter().any(|f| matches!(f, Step::Veth { .. }));
        let needs_veth = step.in_pod()
            || matches!(step, Step::HostOnBridge { .. } | Step::HostUp { .. } | Step::HostRoute { .. });
        if needs_veth && !has_veth {
            return Err(Error::Netlink(format!("{} before the veth exists", step.name())));
        }
        if !self.facts.contains(step) {
            self.facts.push(step.clone());
        }
        Ok(())
    }

    fn undo(&mut self, step: &Step) -> crate::skel::error::Result<()> {
        self.log.push(format!("undo {}", step.name()));
        if self.fail_undo.contains(&step.name()) {
            return Err(Error::Netlink(format!("injected undo failure at {}", step.name())));
        }
        if let Step::Veth { host, .. } = step {
            let host = host.clone();
            self.facts.retain(|f| !matches!(f, Step::Veth { .. }) && !goes_with_veth(f, &host));
        } else {
            self.facts.retain(|f| f != step);
        }
        Ok(())
    }

    fn holds(&mut self, step: &Step) -> crate::skel::error::Result<bool> {
        Ok(self.facts.contains(step))
    }
}

fn node(mode: Mode) -> Node {
    Node {
        mode,
        master: "eth0".into(),
        bridge: (mode == Mode::Bridge).then(|| "azure0".into()),
        table: (mode == Mode::Bridge).then(|| "azure-vnet-azure0".into()),
        node_v4: Some("10.240.0.4".parse().unwrap()),
        subnets: vec!["10.240.0.0/16".parse().unwrap()],
        snat_subnets: vec!["10.240.0.0/16".parse().unwrap()],
    }
}

fn attach(routes: Vec<Route>, mapped: bool) -> Attach {
    Attach {
        host_veth: "azv0123456789a".into(),
        ifname: "eth0".into(),
        addresses: vec!["10.240.1.5/16".parse().unwrap()],
        routes,
        port_mappings: if mapped {
            vec![PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None }]
        } else {
            Vec::new()
        },
        tag: "azure-vnet:c1/eth0".into(),
        snat: None,
    }
}

fn names(steps: &[Step]) -> Vec<&'static str> {
    steps.iter().map(Step::name).collect()
}

fn default_via(gw: &str) -> Route {
    Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some(gw.parse().unwrap()) }
}

fn plans() -> Vec<(Mode, Vec<Step>)> {
    let b = Bridge.plan(&node(Mode::Bridge), &attach(vec![default_via("10.240.0.4")], true));
    let t = Transparent.plan(&node(Mode::Transparent), &attach(vec![default_via("169.254.1.1")], true));
    vec![(Mode::Bridge, b), (Mode::Transparent, t)]
}

#[test]
fn bridge_mode_plans_the_pod_the_bridge_port_and_its_mac_translation() {
    let steps = Bridge.plan(&node(Mode::Bridge), &attach(vec![default_via("10.240.0.4")], true));
    assert_eq!(
        names(&steps),
        [
            "hold",
            "veth",
            "pod-address",
            "pod-up",
            "pod-route",
            "host-on-bridge",
            "host-up",
            "bridge-neighbour",
            "translation",
            "port-mappings"
        ]
    );
    let mac = Mac::for_address("10.240.1.5".parse().unwrap());
    assert!(steps.contains(&Step::Translation {
        table: "azure-vnet-azure0".into(),
        ip: "10.240.1.5".parse().unwrap(),
        mac
    }));
    assert!(
        matches!(&steps[1], Step::Veth { pod_mac, .. } if *pod_mac == mac),
        "the pod's MAC follows its address"
    );
    assert_eq!(steps[0], Step::Hold { ip: "10.240.1.5".parse().unwrap() }, "held before it has a route");
    assert!(matches!(&steps[2], Step::PodAddress { prefix_route: true, .. }), "the VNet is on-link");
    assert!(matches!(steps.last(), Some(Step::PortMappings { masquerade: true, .. })));
}

#[test]
fn transparent_mode_routes_everything_through_the_node() {
    let a = attach(vec![default_via("169.254.1.1")], false);
    let steps = Transparent.plan(&node(Mode::Transparent), &a);
    assert_eq!(
        names(&steps),
        [
            "hold",
            "veth",
            "pod-address",
            "pod-up",
            "pod-route",
            "pod-neighbour",
            "pod-route",
            "host-up",
            "host-route"
        ]
    );
    assert!(
        matches!(&steps[2], Step::PodAddress { prefix_route: false, .. }),
        "nothing on-link but the gateway"
    );
    assert!(steps.contains(&Step::PodRoute {
        ifname: "eth0".into(),
        dst: "169.254.1.1/32".parse().unwrap(),
        gw: None,
        link_scope: true
    }));
    assert!(steps.contains(&Step::PodNeighbour {
        ifname: "eth0".into(),
        ip: "169.254.1.1".parse().unwrap(),
        mac: a.host_mac()
    }));
    assert!(
        steps.contains(&Step::HostRoute { host: a.host_veth.clone(), dst: "10.240.1.5/32".parse().unwrap() })
    );
    assert!(!steps.iter().any(|s| matches!(s, Step::Translation { .. } | Step::HostOnBridge { .. })));
    let mapped = Transparent.plan(&node(Mode::Transparent), &attach(vec![default_via("169.254.1.1")], true));
    assert!(
        matches!(mapped.last(), Some(Step::PortMappings { masquerade: false, .. })),
        "clients keep their address"
    );
}

#[test]
fn a_new_subnet_brings_its_snat_and_a_known_one_does_not() {
    let mut a = attach(vec![default_via("10.240.0.4")], false);
    assert!(!names(&Bridge.plan(&node(Mode::Bridge), &a)).contains(&"snat"));
    a.snat = Some(Snat {
        subnets: vec!["10.241.0.0/16".parse().unwrap()],
        vnet: vec!["10.240.0.0/12".parse().unwrap()],
    });
    assert_eq!(names(&Transparent.plan(&node(Mode::Transparent), &a)).last(), Some(&"snat"));
}

#[test]
fn a_failure_at_any_step_leaves_nothing_behind_in_either_mode() {
    for (mode, steps) in plans() {
        for (i, failing) in steps.iter().enumerate() {
            let mut k = Fake { fail_apply: Some(failing.name()), ..Fake::default() };
            let err = apply_all(&mut k, &steps, |_| {}).unwrap_err();
            assert!(err.to_string().contains("injected"), "{mode:?} step {i}: {err}");
            assert!(
                k.facts.iter().all(|f| !f.undoable()),
                "{mode:?}: failing at {} left {:?}",
                failing.name(),
                k.facts
            );
            assert!(k.facts.iter().all(|f| !f.in_pod()), "{mode:?}: pod state without a veth");
            // Undone newest first: the veth (which takes the rest), then the hold, go last.
            let undone: Vec<&str> =
                k.log.iter().filter(|l| l.starts_with("undo")).map(|s| s.as_str()).collect();
            match i {
                0 => assert!(undone.is_empty(), "{mode:?}: nothing to undo before the first step"),
                1 => assert_eq!(undone, ["undo hold"], "{mode:?}"),
                _ => assert_eq!(
                    undone[undone.len() - 2..],
                    ["undo veth", "undo hold"],
                    "{mode:?} at {}",
                    failing.name()
                ),
            }
        }
    }
}

#[test]
fn teardown_removes_everything_keeps_going_past_failures_and_can_repeat() {
    for (mode, steps) in plans() {
        let mut k = Fake::default();
        apply_all(&mut k, &steps, |_| {}).unwrap();
        assert_eq!(first_missing(&mut k, &steps).unwrap(), None, "{mode:?}: CHECK passes after ADD");
        k.fail_undo = vec!["port-mappings"];
        let errors = undo_all(&mut k, &steps);
        assert_eq!(errors.len(), 1, "{mode:?}: {errors:?}");
        assert!(
            k.facts.iter().all(|f| matches!(f, Step::PortMappings { .. })),
            "the rest went anyway: {:?}",
            k.facts
        );
        k.fail_undo.clear();
        assert!(undo_all(&mut k, &steps).is_empty(), "DEL again is fine");
        assert!(k.facts.is_empty(), "{mode:?}: {:?}", k.facts);
    }
}

#[test]
fn check_names_the_first_step_that_no_longer_holds() {
    let (_, steps) = plans().remove(0);
    let mut k = Fake::default();
    apply_all(&mut k, &steps, |_| {}).unwrap();
    let translation = steps.iter().find(|s| s.name() == "translation").unwrap().clone();
    k.facts.retain(|f| *f != translation);
    assert_eq!(first_missing(&mut k, &steps).unwrap(), Some(&translation));
    // A repeated apply makes it hold again without duplicating anything.
    apply_all(&mut k, &steps, |_| {}).unwrap();
    assert_eq!(first_missing(&mut k, &steps).unwrap(), None);
    assert_eq!(k.facts.len(), steps.len());
}

#[test]
fn recorded_attachments_round_trip_through_the_state_file() {
    let mut a = attach(vec![default_via("10.240.0.4")], true);
    a.snat = Some(Snat {
        subnets: vec!["10.240.0.0/16".parse().unwrap()],
        vnet: vec!["10.240.0.0/16".parse().unwrap()],
    });
    let text = serde_json::to_string(&a).unwrap();
    let back: Attach = serde_json::from_str(&text).unwrap();
    assert_eq!(back, a);
    assert_eq!(Bridge.plan(&node(Mode::Bridge), &back), Bridge.plan(&node(Mode::Bridge), &a));
}
