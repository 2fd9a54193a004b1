//! Where the cluster comes from. A source runs on its own thread and sends `Update`s: a full
//! snapshot once it has read everything (and again after any relist), then events.

pub mod dir;
pub mod kube;

use policy_compiler::incremental::Event;
use policy_compiler::model::Cluster;

#[derive(Debug)]
pub enum Update {
    /// The whole cluster: the agent recompiles and diffs.
    Snapshot(Cluster),
    /// Changes since the last update, in order.
    Events(Vec<Event>),
}
