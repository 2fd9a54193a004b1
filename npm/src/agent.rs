//! The sync loop: notice a change in the source, compile, diff against what is programmed, hand
//! the delta to the dataplane. A failed apply is retried with backoff from the last state that
//! was programmed in full, so the kernel only ever holds a state the compiler produced.

use std::time::Duration;

use policy_compiler::compile::compile_for;
use policy_compiler::incremental::diff;
use policy_compiler::ir::Ir;

use crate::dataplane::Dataplane;
use crate::error::Result;
use crate::source::dir::{DirSource, Fingerprint};

pub struct Agent<D: Dataplane> {
    pub source: DirSource,
    pub dataplane: D,
    /// Enforce for this node's pods only (`None`: every pod, e.g. a single-host setup).
    pub node: Option<String>,
    /// What the kernel holds (as far as the agent knows).
    pub programmed: Ir,
    seen: Option<Fingerprint>,
}

impl<D: Dataplane> Agent<D> {
    pub fn new(source: DirSource, dataplane: D, node: Option<String>) -> Agent<D> {
        Agent { source, dataplane, node, programmed: Ir::default(), seen: None }
    }

    /// One round: when the source changed, program the new state. Returns true if it did.
    pub fn sync_once(&mut self) -> Result<bool> {
        let fingerprint = self.source.fingerprint()?;
        if self.seen.as_ref() == Some(&fingerprint) {
            return Ok(false);
        }
        let cluster = self.source.load()?;
        let desired = compile_for(&cluster, self.node.as_deref());
        let delta = diff(&self.programmed, &desired);
        let start = std::time::Instant::now();
        self.dataplane.apply(&delta)?;
        tracing::info!(
            "programmed {} policies: {} rules, {} sets, {} entries in {:?}",
            cluster.policies.len(),
            desired.rule_count(),
            desired.sets.len(),
            desired.member_count(),
            start.elapsed()
        );
        self.programmed = desired;
        self.seen = Some(fingerprint);
        Ok(true)
    }

    /// Runs until the process is stopped. Stopping leaves enforcement in place.
    pub fn run(&mut self, interval: Duration) -> ! {
        let mut backoff = interval;
        loop {
            match self.sync_once() {
                Ok(_) => backoff = interval,
                Err(e) => {
                    tracing::error!(kind = e.metric_label(), "sync failed: {e}; retrying in {backoff:?}");
                    // Force a full re-read next round.
                    self.seen = None;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            std::thread::sleep(backoff);
        }
    }
}
