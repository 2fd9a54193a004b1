//! The agent against an in-memory kernel: no program before a snapshot, single pod deltas,
//! holds let go only after the program, retries from the kernel's state, adoption, drift
//! repair, evidence changes reported.

use super::*;
use crate::dataplane::iptables::readback::kernel_shape;
use crate::dataplane::Error as DpError;
use crate::dataplane::{Installed, KernelTrace};
type DpResult<T> = crate::dataplane::Result<T>;
use policy_compiler::ir::Member;
use policy_compiler::model::{Cluster, Protocol};
use policy_compiler::snapshot::Snapshot;

/// A kernel in memory: applies deltas, can be told to fail, can drift.
#[derive(Default)]
struct Fake {
    kernel: Ir,
    hooked: bool,
    fail: usize,
    applies: Vec<Delta>,
    admitted: Vec<IpAddr>,
}

impl Dataplane for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn adopt(&mut self) -> DpResult<Ir> {
        Ok(kernel_shape(&self.kernel))
    }

    fn drift(&mut self, expected: &Ir) -> DpResult<Vec<Drift>> {
        let (kernel, expected) = (kernel_shape(&self.kernel), kernel_shape(expected));
        let mut out = Vec::new();
        if kernel.sets != expected.sets {
            out.push(Drift::Sets);
        }
        if (&kernel.accept, &kernel.egress, &kernel.ingress)
            != (&expected.accept, &expected.egress, &expected.ingress)
        {
            out.push(Drift::Rules);
        }
        if !self.hooked {
            out.push(Drift::Hooks);
        }
        Ok(out)
    }

    fn apply(&mut self, delta: &Delta) -> DpResult<()> {
        if self.fail > 0 {
            self.fail -= 1;
            return Err(DpError::Failed { program: "iptables-restore".into(), stderr: "scripted".into() });
        }
        delta.apply(&mut self.kernel);
        // Like the real backends, an apply puts the hooks back.
        self.hooked = true;
        self.applies.push(delta.clone());
        Ok(())
    }

    fn admit(&mut self, ips: &[IpAddr]) -> DpResult<()> {
        self.admitted.extend(ips.iter().copied());
        Ok(())
    }

    fn cleanup(&mut self) -> DpResult<()> {
        Ok(())
    }

    fn installed(&self) -> Installed {
        Installed { rules: self.kernel.rule_count(), sets: self.kernel.sets.len(), entries: 0 }
    }

    fn explain(&mut self, _: IpAddr, _: IpAddr, _: Protocol, _: u16) -> DpResult<KernelTrace> {
        Err(DpError::Unsupported("not a kernel".into()))
    }
}

fn case(name: &str) -> Cluster {
    let path = format!("{}/../testdata/policy/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    Snapshot::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap().cluster
}

fn in_step(agent: &Agent<Fake>) -> bool {
    kernel_shape(&agent.dataplane.kernel) == kernel_shape(agent.desired().unwrap()) && agent.dataplane.hooked
}

#[test]
fn nothing_is_programmed_before_the_first_snapshot() {
    let mut agent = Agent::new(Fake::default(), None);
    agent.handle(Update::Events(vec![Event::DeleteNamespace("x".into())]));
    assert!(!agent.program().unwrap());
    assert!(agent.dataplane.applies.is_empty() && !agent.ready.load(Ordering::Relaxed));
    agent.handle(Update::Snapshot(case("07-ipblock-except")));
    assert!(agent.program().unwrap());
    assert!(in_step(&agent) && agent.ready.load(Ordering::Relaxed));
}

#[test]
fn a_single_pod_event_is_programmed_as_its_own_small_delta() {
    let mut agent = Agent::new(Fake::default(), None);
    let cluster = case("07-ipblock-except");
    let mut pod = cluster.pod("y/b").unwrap().clone();
    agent.handle(Update::Snapshot(cluster));
    agent.program().unwrap();
    pod.labels.insert("pod".into(), "bee".into());
    agent.handle(Update::Events(vec![Event::UpsertPod(pod)]));
    assert!(agent.program().unwrap());
    let last = agent.dataplane.applies.last().unwrap();
    assert!(last.chains.is_none() && last.created.is_empty() && !last.removed.is_empty());
    assert!(in_step(&agent));
    assert!(!agent.program().unwrap(), "nothing pending");
}

#[test]
fn a_new_local_pod_is_let_through_only_after_the_program_that_includes_it() {
    let mut cluster = case("07-ipblock-except");
    for (k, p) in cluster.pods.iter_mut().enumerate() {
        p.node = Some(if k % 2 == 0 { "n0" } else { "n1" }.into());
    }
    let mut agent = Agent::new(Fake::default(), Some("n0".into()));
    agent.handle(Update::Snapshot(cluster.clone()));
    agent.program().unwrap();
    let local: Vec<IpAddr> =
        cluster.pods.iter().filter(|p| p.node.as_deref() == Some("n0")).filter_map(|p| p.ip).collect();
    assert_eq!(agent.dataplane.admitted, local, "after the snapshot: this node's pods, no others");

    agent.dataplane.admitted.clear();
    let mut new = cluster.pods[0].clone();
    new.name = "fresh".into();
    new.ip = Some("10.0.9.9".parse().unwrap());
    let mut remote = new.clone();
    remote.name = "elsewhere".into();
    remote.node = Some("n1".into());
    remote.ip = Some("10.0.9.10".parse().unwrap());
    agent.handle(Update::Events(vec![Event::UpsertPod(new.clone()), Event::UpsertPod(remote)]));
    assert!(agent.dataplane.admitted.is_empty(), "nothing is let through before the program");
    agent.program().unwrap();
    assert_eq!(agent.dataplane.admitted, [new.ip.unwrap()]);
    let target_sets =
        agent.dataplane.kernel.sets.values().filter(|s| s.members.contains(&Member::Ip(new.ip.unwrap())));
    assert!(target_sets.count() > 0, "the kernel had the pod when it was let through");
}

#[test]
fn a_failed_apply_is_retried_from_the_kernels_actual_state() {
    let mut agent = Agent::new(Fake { fail: 1, ..Fake::default() }, None);
    agent.handle(Update::Snapshot(case("07-ipblock-except")));
    assert!(agent.program().is_err());
    assert!(!agent.ready.load(Ordering::Relaxed));
    assert!(agent.program().unwrap(), "the retry programs everything");
    assert!(in_step(&agent));
}

#[test]
fn a_restart_adopts_the_kernel_and_destroys_what_is_stale() {
    let mut first = Agent::new(Fake::default(), None);
    first.handle(Update::Snapshot(case("07-ipblock-except")));
    first.program().unwrap();
    let left = Fake { kernel: first.dataplane.kernel.clone(), hooked: true, ..Fake::default() };
    let mut second = Agent::new(left, None);
    second.handle(Update::Snapshot(case("14-policies-or")));
    second.program().unwrap();
    assert!(in_step(&second));
    let only = &second.dataplane.applies;
    assert_eq!(only.len(), 1);
    assert!(!only[0].destroyed.is_empty(), "the old policy's sets go");
    assert!(only[0].created.len() < second.desired().unwrap().sets.len(), "shared sets are kept, not remade");
}

#[test]
fn a_change_of_evidence_is_reported_on_readyz_and_never_followed() {
    let mut agent = Agent::new(Fake::default(), None);
    agent.handle(Update::Snapshot(case("07-ipblock-except")));
    agent.program().unwrap();
    let said = std::rc::Rc::new(std::cell::RefCell::new(None::<String>));
    let source = said.clone();
    agent.recheck = Some(Box::new(move || source.borrow().clone()));
    agent.recheck_evidence();
    assert!(agent.notes.lock().unwrap().is_empty(), "nothing changed");
    *said.borrow_mut() = Some("the evidence now names iptables (legacy), not nftables".into());
    agent.recheck_evidence();
    assert_eq!(*agent.notes.lock().unwrap(), ["the evidence now names iptables (legacy), not nftables"]);
    let applies = agent.dataplane.applies.len();
    assert!(!agent.program().unwrap(), "still programming the same backend, nothing to do");
    assert_eq!(agent.dataplane.applies.len(), applies);
    *said.borrow_mut() = None;
    agent.recheck_evidence();
    assert!(agent.notes.lock().unwrap().is_empty(), "the note goes when the evidence agrees again");
}

#[test]
fn verification_repairs_drift_and_says_what_drifted() {
    let mut agent = Agent::new(Fake::default(), None);
    agent.handle(Update::Snapshot(case("07-ipblock-except")));
    agent.program().unwrap();
    assert!(agent.verify().unwrap().is_empty());
    agent.dataplane.kernel.ingress.clear();
    agent.dataplane.hooked = false;
    assert_eq!(agent.verify().unwrap(), [Drift::Rules, Drift::Hooks]);
    assert!(in_step(&agent) && agent.repairs == 1);
    let name = *agent.dataplane.kernel.sets.keys().next().unwrap();
    agent.dataplane.kernel.sets.get_mut(&name).unwrap().members.clear();
    assert_eq!(agent.verify().unwrap(), [Drift::Sets]);
    assert!(in_step(&agent));
}
