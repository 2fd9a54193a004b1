//! Where the cluster comes from. A source runs on its own thread and sends `Update`s: a full
//! snapshot once it has read everything (and again after any relist), then events.

pub mod dir;
pub mod kube;

use std::sync::{Arc, Mutex};

use policy_compiler::incremental::Event;
use policy_compiler::model::Cluster;

#[derive(Debug)]
pub enum Update {
    /// The whole cluster: the agent recompiles and diffs.
    Snapshot(Cluster),
    /// Changes since the last update, in order.
    Events(Vec<Event>),
}

/// What a source holds back: one line per file or object whose current form is invalid, saying
/// whether its last good form is kept or it is skipped. `/readyz` lists them. The source
/// replaces the whole list whenever it changes.
#[derive(Clone, Default)]
pub struct Kept(Arc<Mutex<Vec<String>>>);

impl Kept {
    pub fn replace(&self, mut lines: Vec<String>) {
        lines.sort();
        if let Ok(mut held) = self.0.lock() {
            *held = lines;
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
