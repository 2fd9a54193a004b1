//! The agent: cluster updates in, kernel programmed out.
//!
//! - Nothing touches the kernel before the source has delivered a complete snapshot; until then
//!   whatever a previous run left keeps enforcing.
//! - At startup the kernel's state is read back and adopted as "programmed", so the first
//!   program is a diff from it (stale sets destroyed, missing ones made) with no window where a
//!   pod under policy is open.
//! - A single pod event goes to the kernel as its own member-only delta; bursts and structural
//!   changes are diffed from what is programmed.
//! - Periodic verification reads the kernel back; any drift (a flushed chain, a deleted set, a
//!   missing jump) is counted and repaired from the kernel's actual state.
//! - A failed apply makes the next round start from the kernel's actual state, with backoff.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use policy_compiler::incremental::{diff, Compiler, Delta, Event};
use policy_compiler::ir::Ir;

use crate::dataplane::{Dataplane, Drift};
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::source::Update;

pub struct Agent<D: Dataplane> {
    pub dataplane: D,
    /// Enforce for this node's pods only (`None`: every pod, e.g. a single-host setup).
    pub node: Option<String>,
    compiler: Option<Compiler>,
    /// What the kernel holds, as far as the agent knows.
    programmed: Ir,
    /// Deltas from events not yet programmed, and whether a full diff is needed instead.
    pending: Vec<Delta>,
    full: bool,
    /// What the pending changes were, for the latency metric.
    trigger: &'static str,
    /// The pending events' timing metric, operation and arrival (Azure's controller timings).
    timings: Vec<(&'static str, &'static str, Instant)>,
    /// The kernel must be read back before the next program (startup, after a failure or
    /// drift).
    reread: bool,
    pub ready: Arc<AtomicBool>,
    /// What `/readyz` lists: the policies the node has no room for.
    pub notes: Arc<Mutex<Vec<String>>>,
    refused: Vec<policy_compiler::limits::Refused>,
    pub repairs: u64,
    /// The other backend, when it left state behind (a switch of `--dataplane`): cleaned up
    /// once this one has programmed, so the node is never left without enforcement.
    pub leftovers: Option<Box<dyn Dataplane>>,
    /// Asked at each verification: a line when the evidence behind the backend's choice has
    /// changed since the start (logged and reported, never followed).
    pub recheck: Option<Box<dyn FnMut() -> Option<String>>>,
    changed_evidence: Option<String>,
    /// This node's pods whose addresses the CNI may hold (render::HOLD_SET) and the agent has
    /// not yet let through: taken out right after the program that includes them. `admit_all`:
    /// every local pod (after a snapshot, and at each verification, for holds no event told of).
    to_admit: BTreeSet<IpAddr>,
    admit_all: bool,
}

fn trigger_of(event: &Event) -> &'static str {
    match event {
        Event::UpsertPod(_) | Event::DeletePod { .. } => "pod",
        Event::UpsertNamespace(_) | Event::DeleteNamespace(_) => "namespace",
        Event::UpsertPolicy(_) | Event::DeletePolicy { .. } => "policy",
        Event::UpsertNode(_) | Event::DeleteNode(_) => "node",
    }
}

/// Azure's timing metric and operation for an event (`known`: the object existed before).
fn timing_of(event: &Event, known: bool) -> (&'static str, &'static str) {
    let upsert = if known { "update" } else { "create" };
    match event {
        Event::UpsertPolicy(_) if !known => (m::ADD_POLICY_MS, "create"),
        Event::UpsertPolicy(_) => (m::CONTROLLER_POLICY_MS, "update"),
        Event::DeletePolicy { .. } => (m::CONTROLLER_POLICY_MS, "delete"),
        Event::UpsertPod(_) => (m::CONTROLLER_POD_MS, upsert),
        Event::DeletePod { .. } => (m::CONTROLLER_POD_MS, "delete"),
        Event::UpsertNamespace(_) => (m::CONTROLLER_NAMESPACE_MS, upsert),
        Event::DeleteNamespace(_) => (m::CONTROLLER_NAMESPACE_MS, "delete"),
        // Azure has no node timing; nodes count in the apply latency only.
        Event::UpsertNode(_) | Event::DeleteNode(_) => ("", ""),
    }
}

/// Records the pending events' timings (milliseconds since each arrived).
fn record_timings(timings: &mut Vec<(&'static str, &'static str, Instant)>, had_error: bool) {
    let had_error = if had_error { "true" } else { "false" };
    for (metric, operation, arrived) in timings.drain(..) {
        let ms = arrived.elapsed().as_secs_f64() * 1000.0;
        match metric {
            "" => {}
            m::ADD_POLICY_MS => metrics::histogram!(m::ADD_POLICY_MS, "had_error" => had_error).record(ms),
            _ => metrics::histogram!(metric, "operation" => operation, "had_error" => had_error).record(ms),
        }
    }
}

impl<D: Dataplane> Agent<D> {
    pub fn new(dataplane: D, node: Option<String>) -> Agent<D> {
        Agent {
            dataplane,
            node,
            compiler: None,
            programmed: Ir::default(),
            pending: Vec::new(),
            full: true,
            trigger: "snapshot",
            timings: Vec::new(),
            reread: true,
            ready: Arc::new(AtomicBool::new(false)),
            notes: Arc::default(),
            refused: Vec::new(),
            repairs: 0,
            leftovers: None,
            recheck: None,
            changed_evidence: None,
            to_admit: BTreeSet::new(),
            admit_all: true,
        }
    }

    fn local(&self, pod: &policy_compiler::model::Pod) -> bool {
        self.node.is_none() || pod.node == self.node
    }

    /// Lets the held pods through, once the kernel has them (see `to_admit`). Only addresses
    /// that belong to one of this node's pods now are admitted: a hold for a pod the agent has
    /// not seen yet stays.
    fn admit(&mut self) {
        let Some(compiler) = self.compiler.as_ref() else { return };
        let ips: Vec<IpAddr> = if self.admit_all {
            let local: BTreeSet<IpAddr> =
                compiler.cluster().pods.iter().filter(|p| self.local(p)).filter_map(|p| p.ip).collect();
            local.into_iter().collect()
        } else {
            // Only addresses one of this node's pods holds now (a pod deleted meanwhile may
            // have left its address to a pod the agent has not seen yet: that hold stays).
            let held_by_local = |ip: &&IpAddr| compiler.pods_with_ip(**ip).any(|p| self.local(p));
            self.to_admit.iter().filter(held_by_local).copied().collect()
        };
        if ips.is_empty() {
            self.to_admit.clear();
            self.admit_all = false;
            return;
        }
        match self.dataplane.admit(&ips).map_err(Error::from) {
            Ok(()) => {
                tracing::debug!("admitted {} new pods' addresses", ips.len());
                self.to_admit.clear();
                self.admit_all = false;
            }
            Err(e) => {
                self.count_error(&e);
                tracing::warn!("letting {} new pods through failed: {e}; retrying", ips.len());
                self.admit_all = true;
            }
        }
    }

    /// The state compiled from the source, once it has synced.
    pub fn desired(&self) -> Option<&Ir> {
        self.compiler.as_ref().map(Compiler::ir)
    }

    pub fn handle(&mut self, update: Update) {
        self.take(update);
        self.report_refusals();
    }

    /// Logs and publishes the policies the node has no room for, when that changes.
    fn report_refusals(&mut self) {
        let Some(compiler) = self.compiler.as_ref() else { return };
        if compiler.refused() == self.refused.as_slice() {
            return;
        }
        for r in compiler.refused().iter().filter(|r| !self.refused.contains(r)) {
            tracing::error!(
                "policy {} refused: {}; it is not enforced until room is made",
                r.policy,
                r.limit
            );
        }
        for r in self.refused.iter().filter(|r| !compiler.refused().iter().any(|n| n.policy == r.policy)) {
            tracing::info!("policy {} fits the node again", r.policy);
        }
        self.refused = compiler.refused().to_vec();
        metrics::gauge!(m::REFUSED_POLICIES).set(self.refused.len() as f64);
        self.publish_notes();
    }

    fn publish_notes(&self) {
        if let Ok(mut notes) = self.notes.lock() {
            *notes =
                self.refused.iter().map(|r| format!("refused policy {}: {}", r.policy, r.limit)).collect();
            notes.extend(self.changed_evidence.clone());
        }
    }

    fn take(&mut self, update: Update) {
        match update {
            Update::Snapshot(cluster) => {
                self.admit_all = true;
                self.compiler = Some(Compiler::for_node(cluster, self.node.clone()));
                self.pending.clear();
                self.full = true;
                self.trigger = "snapshot";
            }
            Update::Events(events) => {
                let Some(compiler) = self.compiler.as_mut() else {
                    tracing::warn!("{} events before the first snapshot dropped", events.len());
                    return;
                };
                for event in events {
                    let t = trigger_of(&event);
                    if !self.full && self.pending.is_empty() {
                        self.trigger = t;
                    } else if self.trigger != t && self.trigger != "snapshot" {
                        self.trigger = "mixed";
                    }
                    let (metric, operation) = timing_of(&event, compiler.knows(&event));
                    self.timings.push((metric, operation, Instant::now()));
                    if let Event::UpsertPod(p) = &event {
                        if let (true, Some(ip)) = (self.node.is_none() || p.node == self.node, p.ip) {
                            self.to_admit.insert(ip);
                        }
                    }
                    self.pending.push(compiler.apply(event));
                }
            }
        }
    }

    fn adopt(&mut self) -> Result<()> {
        self.programmed = self.dataplane.adopt()?;
        self.reread = false;
        self.full = true;
        Ok(())
    }

    /// Programs what changed since the last program. Returns true if the kernel was written
    /// (false: nothing pending, or the changes compiled to nothing).
    pub fn program(&mut self) -> Result<bool> {
        if self.compiler.is_none() || (!self.full && self.pending.is_empty()) {
            return Ok(false);
        }
        // After a read the backend may have found what the IR does not show (a missing hook,
        // a table to rebuild): it gets the delta even when the delta is empty.
        let adopted = self.reread;
        if adopted {
            if let Err(e) = self.adopt() {
                self.count_error(&e);
                return Err(e);
            }
        }
        let Some(compiler) = self.compiler.as_ref() else { return Ok(false) };
        let desired = compiler.ir();
        let incremental = !self.full && self.pending.len() == 1;
        let delta = if incremental {
            self.pending.pop().unwrap_or_default()
        } else {
            diff(&self.programmed, desired)
        };
        let start = Instant::now();
        let wrote = !delta.is_empty();
        let result =
            if wrote || adopted { self.dataplane.apply(&delta).map_err(Error::from) } else { Ok(()) };
        if let Err(e) = result {
            self.count_error(&e);
            metrics::counter!(m::APPLY_FAILURES, "trigger" => self.trigger, "kind" => e.metric_label())
                .increment(1);
            record_timings(&mut self.timings, true);
            self.reread = true;
            self.full = true;
            self.pending.clear();
            return Err(e);
        }
        let took = start.elapsed();
        delta.apply(&mut self.programmed);
        self.pending.clear();
        self.full = false;
        metrics::histogram!(m::APPLY_SECONDS, "trigger" => self.trigger).record(took.as_secs_f64());
        record_timings(&mut self.timings, false);
        self.publish_counts(compiler.cluster().policies.len());
        if !self.ready.swap(true, Ordering::Relaxed) {
            if let Some(mut other) = self.leftovers.take() {
                match other.cleanup() {
                    Ok(()) => tracing::info!("removed what the {} backend left", other.name()),
                    Err(e) => tracing::warn!("removing what the {} backend left failed: {e}", other.name()),
                }
            }
            tracing::info!(
                "kernel programmed: {} policies, {} rules, {} sets, {} entries in {took:?}",
                compiler.cluster().policies.len(),
                desired.rule_count(),
                desired.sets.len(),
                desired.member_count()
            );
        } else {
            tracing::debug!("{} change programmed in {took:?}", self.trigger);
        }
        self.admit();
        Ok(wrote)
    }

    fn publish_counts(&self, policies: usize) {
        if let Some(c) = &self.compiler {
            metrics::gauge!(m::PODS_WATCHED).set(c.cluster().pods.len() as f64);
        }
        metrics::gauge!(m::POLICIES).set(policies as f64);
        let installed = self.dataplane.installed();
        let (rules, sets, entries) = m::counts_of(self.dataplane.name());
        metrics::gauge!(rules).set(installed.rules as f64);
        metrics::gauge!(sets).set(installed.sets as f64);
        metrics::gauge!(entries).set(installed.entries as f64);
    }

    fn count_error(&self, e: &Error) {
        metrics::counter!(m::ERRORS, "kind" => e.metric_label()).increment(1);
    }

    /// Reads the kernel back and repairs drift. Returns what drifted (empty: nothing).
    pub fn verify(&mut self) -> Result<Vec<Drift>> {
        if self.compiler.is_none() || self.reread {
            return Ok(Vec::new());
        }
        let drift = match self.dataplane.drift(&self.programmed).map_err(Error::from) {
            Ok(d) => d,
            Err(e) => {
                self.count_error(&e);
                return Err(e);
            }
        };
        // Holds no event told of (a repeated ADD that kept its address) end here at the latest.
        self.admit_all = true;
        if drift.is_empty() {
            self.admit();
            return Ok(drift);
        }
        for what in &drift {
            metrics::counter!(m::DRIFT_REPAIRS, "what" => what.label()).increment(1);
        }
        self.repairs += 1;
        let what: Vec<&str> = drift.iter().map(|d| d.label()).collect();
        tracing::warn!("kernel drifted ({}); repairing from its actual state", what.join(", "));
        // The repair starts from what the kernel actually holds.
        self.reread = true;
        self.full = true;
        self.trigger = "repair";
        self.program()?;
        Ok(drift)
    }

    /// Reports (never follows) a change in the evidence the backend was chosen by.
    fn recheck_evidence(&mut self) {
        let Some(check) = self.recheck.as_mut() else { return };
        let now = check();
        if now != self.changed_evidence {
            if let Some(line) = &now {
                tracing::error!("{line}");
                metrics::counter!(m::EVIDENCE_CHANGES).increment(1);
            }
            self.changed_evidence = now;
            self.publish_notes();
        }
    }

    /// Runs until the update channel closes (the source is gone). Stopping leaves enforcement
    /// in place.
    pub fn run(&mut self, updates: Receiver<Update>, verify_every: Duration) {
        let mut backoff = Duration::from_millis(100);
        let mut next_verify = Instant::now() + verify_every;
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wake = retry_at.map_or(next_verify, |r| r.min(next_verify));
            match updates.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(update) => {
                    self.handle(update);
                    // Take whatever else is already queued into the same batch.
                    while let Ok(more) = updates.try_recv() {
                        self.handle(more);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    tracing::info!("source closed; leaving enforcement in place");
                    return;
                }
            }
            if retry_at.is_some_and(|r| Instant::now() < r) {
                continue;
            }
            match self.program() {
                Ok(_) => {
                    retry_at = None;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::error!(
                        kind = e.metric_label(),
                        "programming failed: {e}; retrying in {backoff:?}"
                    );
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            if Instant::now() >= next_verify {
                next_verify = Instant::now() + verify_every;
                if let Err(e) = self.verify() {
                    tracing::error!(kind = e.metric_label(), "verification failed: {e}");
                    retry_at = Some(Instant::now() + backoff);
                }
                self.recheck_evidence();
            }
        }
    }
}

#[cfg(test)]
mod tests;
