//! `--source kube`: kube-rs watchers for Namespaces, Pods, NetworkPolicies and Nodes feeding
//! trimmed stores (the compiler's model objects; the API objects are dropped on arrival).
//!
//! Nothing is sent before every kind has listed once; then one full snapshot, then events. A
//! watcher that relists (410 Gone, a torn connection; the watcher retries with backoff) replaces
//! its kind's store at the end of the relist and the agent gets a fresh snapshot, so nothing
//! deleted while the watch was down lingers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event as Watch};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config};
use policy_compiler::convert::{self, Invalid};
use policy_compiler::incremental::Event;
use policy_compiler::model::Cluster;

use super::{Kept, Update};
use crate::metrics as m;

/// Everything the agent asks of the API server: (API group, resource, verbs). The RBAC in
/// `manifests/azure-npm-rbac.yaml` must grant exactly this (a test checks).
pub const API_ACCESS: [(&str, &str, &[&str]); 4] = [
    ("", "namespaces", &["list", "watch"]),
    ("", "pods", &["list", "watch"]),
    ("", "nodes", &["list", "watch"]),
    ("networking.k8s.io", "networkpolicies", &["list", "watch"]),
];

/// A change of one kind, converted to the model (`Err`: why the object did not convert).
enum Change {
    Init(Kind),
    InitApply(Kind, String, Converted),
    InitDone(Kind),
    Apply(Kind, String, Converted),
    Delete(Kind, String),
    Error(Kind, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Namespace,
    Pod,
    Policy,
    Node,
}

const KINDS: [Kind; 4] = [Kind::Namespace, Kind::Pod, Kind::Policy, Kind::Node];

#[derive(Debug, Clone, PartialEq)]
enum Object {
    Namespace(policy_compiler::model::Namespace),
    Pod(policy_compiler::model::Pod),
    Policy(policy_compiler::model::NetworkPolicy),
    Node(policy_compiler::model::Node),
}

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Namespace => "Namespace",
        Kind::Pod => "Pod",
        Kind::Policy => "NetworkPolicy",
        Kind::Node => "Node",
    }
}

type Converted = Result<Object, String>;

fn converted<T>(result: Result<T, Invalid>, wrap: fn(T) -> Object) -> Converted {
    result.map(wrap).map_err(|invalid| {
        metrics::counter!(m::INVALID_OBJECTS, "kind" => invalid.kind).increment(1);
        invalid.to_string()
    })
}

fn key(namespace: Option<&String>, name: Option<&String>) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{}", name.map_or("", String::as_str)),
        None => name.cloned().unwrap_or_default(),
    }
}

/// One kind's watch as a stream of changes, restarting with backoff on errors.
fn watch<K, F>(api: Api<K>, kind: Kind, convert: F) -> BoxStream<'static, Change>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    F: Fn(&K) -> Converted + Send + Sync + 'static,
{
    let name_of = |o: &K| key(o.meta().namespace.as_ref(), o.meta().name.as_ref());
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| match event {
            Ok(Watch::Init) => Change::Init(kind),
            Ok(Watch::InitApply(o)) => Change::InitApply(kind, name_of(&o), convert(&o)),
            Ok(Watch::InitDone) => Change::InitDone(kind),
            Ok(Watch::Apply(o)) => Change::Apply(kind, name_of(&o), convert(&o)),
            Ok(Watch::Delete(o)) => Change::Delete(kind, name_of(&o)),
            Err(e) => Change::Error(kind, e.to_string()),
        })
        .boxed()
}

/// The stores and the sync state.
#[derive(Default)]
struct Stores {
    objects: HashMap<Kind, HashMap<String, Object>>,
    /// Objects of a relist in progress, per kind.
    relisting: HashMap<Kind, HashMap<String, Object>>,
    listed: HashMap<Kind, bool>,
    synced: bool,
    /// Objects whose current form is invalid, with what is done about it; per kind for a relist
    /// in progress.
    invalid: HashMap<(Kind, String), String>,
    relisting_invalid: HashMap<Kind, HashMap<String, String>>,
    /// `invalid` or `relisting_invalid` changed since `kept` was last written.
    noted: bool,
    kept: Kept,
}

impl Stores {
    fn cluster(&self) -> Cluster {
        let mut c = Cluster::default();
        for object in self.objects.values().flat_map(HashMap::values) {
            match object.clone() {
                Object::Namespace(n) => {
                    c.namespaces.insert(n.name.clone(), n);
                }
                Object::Pod(p) => c.pods.push(p),
                Object::Policy(p) => c.policies.push(p),
                Object::Node(n) => c.nodes.push(n),
            }
        }
        // Deterministic order, as a snapshot file would give.
        c.pods.sort_by_key(|p| p.key());
        c.policies.sort_by_key(|p| p.key());
        c.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// Takes one change; returns what to send to the agent.
    fn take(&mut self, change: Change) -> Option<Update> {
        let update = self.apply(change);
        if !std::mem::take(&mut self.noted) {
            return update; // a pod event's usual case: nothing held back changed
        }
        let mut lines: Vec<String> =
            self.invalid.iter().map(|((kind, key), why)| format!("{} {key}: {why}", label(*kind))).collect();
        lines.extend(self.relisting_invalid.iter().flat_map(|(kind, objects)| {
            objects.iter().map(move |(key, why)| format!("{} {key}: {why}", label(*kind)))
        }));
        self.kept.replace(lines);
        update
    }

    /// What is done with an object that does not convert: its last valid form is kept, or it
    /// is skipped if it never had one. Logged; returns the line for `/readyz`.
    fn hold_back(&self, kind: Kind, key: &str, why: &str) -> (Option<Object>, String) {
        let last = self.objects.get(&kind).and_then(|store| store.get(key)).cloned();
        let line = match last {
            Some(_) => format!("{why}; keeping its last valid form"),
            None => format!("{why}; skipped (never seen valid)"),
        };
        tracing::warn!("{} {key}: {line}", label(kind));
        (last, line)
    }

    /// An object valid again, or deleted, is no longer held back.
    fn forget_invalid(&mut self, kind: Kind, key: &str) {
        if !self.invalid.is_empty() && self.invalid.remove(&(kind, key.to_string())).is_some() {
            self.noted = true;
        }
    }

    fn apply(&mut self, change: Change) -> Option<Update> {
        match change {
            Change::Init(kind) => {
                self.relisting.insert(kind, HashMap::new());
                let old = self.relisting_invalid.insert(kind, HashMap::new());
                self.noted |= old.is_some_and(|o| !o.is_empty());
                None
            }
            Change::InitApply(kind, key, Ok(o)) => {
                self.relisting.entry(kind).or_default().insert(key, o);
                None
            }
            Change::InitApply(kind, key, Err(why)) => {
                // A relist never drops what an invalid object last was: only a deletion does.
                let (last, line) = self.hold_back(kind, &key, &why);
                if let Some(o) = last {
                    self.relisting.entry(kind).or_default().insert(key.clone(), o);
                }
                self.relisting_invalid.entry(kind).or_default().insert(key, line);
                self.noted = true;
                None
            }
            Change::InitDone(kind) => {
                let fresh = self.relisting.remove(&kind).unwrap_or_default();
                if self.listed.insert(kind, true).is_some() {
                    metrics::counter!(m::RELISTS, "kind" => label(kind)).increment(1);
                    tracing::info!("{} relisted: {} objects", label(kind), fresh.len());
                }
                self.objects.insert(kind, fresh);
                let before = self.invalid.len();
                self.invalid.retain(|(k, _), _| *k != kind);
                let invalid = self.relisting_invalid.remove(&kind).unwrap_or_default();
                self.noted |= before != self.invalid.len() || !invalid.is_empty();
                self.invalid.extend(invalid.into_iter().map(|(key, why)| ((kind, key), why)));
                let all = KINDS.iter().all(|k| self.listed.contains_key(k));
                if all && !self.synced {
                    tracing::info!("every list synced; programming");
                }
                self.synced = all;
                all.then(|| Update::Snapshot(self.cluster()))
            }
            Change::Apply(kind, key, Err(why)) => {
                let (_, line) = self.hold_back(kind, &key, &why);
                self.invalid.insert((kind, key), line);
                self.noted = true;
                None
            }
            Change::Apply(kind, key, Ok(object)) => {
                self.forget_invalid(kind, &key);
                let store = self.objects.entry(kind).or_default();
                if store.get(&key) == Some(&object) {
                    return None;
                }
                store.insert(key, object.clone());
                self.synced.then(|| Update::Events(vec![upsert(object)]))
            }
            Change::Delete(kind, key) => {
                self.forget_invalid(kind, &key);
                let old = self.objects.entry(kind).or_default().remove(&key)?;
                self.synced.then(|| Update::Events(vec![delete(old)]))
            }
            Change::Error(kind, e) => {
                metrics::counter!(m::ERRORS, "kind" => "source").increment(1);
                tracing::warn!(
                    "watching {}: {e}; retrying with backoff, the kernel keeps its state",
                    label(kind)
                );
                None
            }
        }
    }
}

fn upsert(object: Object) -> Event {
    match object {
        Object::Namespace(n) => Event::UpsertNamespace(n),
        Object::Pod(p) => Event::UpsertPod(p),
        Object::Policy(p) => Event::UpsertPolicy(p),
        Object::Node(n) => Event::UpsertNode(n),
    }
}

fn delete(object: Object) -> Event {
    match object {
        Object::Namespace(n) => Event::DeleteNamespace(n.name),
        Object::Pod(p) => Event::DeletePod { namespace: p.namespace, name: p.name },
        Object::Policy(p) => Event::DeletePolicy { namespace: p.namespace, name: p.name },
        Object::Node(n) => Event::DeleteNode(n.name),
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| e.to_string())?,
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

async fn run(kubeconfig: Option<PathBuf>, updates: Sender<Update>, kept: Kept) {
    let mut backoff = Duration::from_millis(500);
    let client = loop {
        match client(kubeconfig.as_ref()).await {
            Ok(c) => break c,
            Err(e) => {
                metrics::counter!(m::ERRORS, "kind" => "source").increment(1);
                tracing::error!("kube client: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let streams = vec![
        watch(Api::<core::Namespace>::all(client.clone()), Kind::Namespace, |o| {
            converted(convert::namespace(o), Object::Namespace)
        }),
        watch(Api::<core::Pod>::all(client.clone()), Kind::Pod, |o| converted(convert::pod(o), Object::Pod)),
        watch(Api::<net::NetworkPolicy>::all(client.clone()), Kind::Policy, |o| {
            converted(convert::policy(o), Object::Policy)
        }),
        watch(Api::<core::Node>::all(client), Kind::Node, |o| converted(convert::node(o), Object::Node)),
    ];
    let mut changes = stream::select_all(streams);
    let mut stores = Stores { kept, ..Stores::default() };
    while let Some(change) = changes.next().await {
        if let Some(update) = stores.take(change) {
            if updates.send(update).is_err() {
                return;
            }
        }
    }
}

/// Starts the watchers on their own thread (a small tokio runtime). `kept` gets the objects
/// whose current form is invalid.
pub fn spawn(
    kubeconfig: Option<PathBuf>,
    updates: Sender<Update>,
    kept: Kept,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("source-kube".into())
        .spawn(move || runtime.block_on(run(kubeconfig, updates, kept)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::model::Namespace;

    fn ns(name: &str) -> Converted {
        Ok(Object::Namespace(Namespace { name: name.into(), labels: Default::default() }))
    }

    fn bad() -> Converted {
        Err("unknown operator".into())
    }

    fn list(stores: &mut Stores, kind: Kind, objects: Vec<(&str, Converted)>) -> Option<Update> {
        assert!(stores.take(Change::Init(kind)).is_none());
        for (key, o) in objects {
            assert!(stores.take(Change::InitApply(kind, key.into(), o)).is_none());
        }
        stores.take(Change::InitDone(kind))
    }

    #[test]
    fn nothing_is_sent_before_every_kind_has_listed() {
        let mut s = Stores::default();
        assert!(list(&mut s, Kind::Namespace, vec![("a", ns("a"))]).is_none());
        assert!(s.take(Change::Apply(Kind::Namespace, "b".into(), ns("b"))).is_none(), "not synced yet");
        assert!(list(&mut s, Kind::Pod, vec![]).is_none());
        assert!(list(&mut s, Kind::Policy, vec![]).is_none());
        let Some(Update::Snapshot(c)) = list(&mut s, Kind::Node, vec![]) else { panic!("no snapshot") };
        assert_eq!(c.namespaces.keys().collect::<Vec<_>>(), ["a", "b"], "changes during the sync count");
        assert!(matches!(
            s.take(Change::Apply(Kind::Namespace, "c".into(), ns("c"))),
            Some(Update::Events(e)) if e.len() == 1
        ));
        assert!(
            s.take(Change::Apply(Kind::Namespace, "c".into(), ns("c"))).is_none(),
            "no-op updates are dropped"
        );
        assert!(
            s.take(Change::Delete(Kind::Namespace, "zz".into())).is_none(),
            "unknown deletes are dropped"
        );
    }

    #[test]
    fn a_relist_replaces_its_kind_and_sends_a_fresh_snapshot() {
        let mut s = Stores::default();
        list(&mut s, Kind::Namespace, vec![("a", ns("a")), ("gone", ns("gone"))]);
        for k in [Kind::Pod, Kind::Policy, Kind::Node] {
            list(&mut s, k, vec![]);
        }
        // 410 Gone: the watcher relists; "gone" was deleted while the watch was down.
        let Some(Update::Snapshot(c)) =
            list(&mut s, Kind::Namespace, vec![("a", ns("a")), ("new", ns("new"))])
        else {
            panic!("no snapshot after the relist")
        };
        assert_eq!(c.namespaces.keys().collect::<Vec<_>>(), ["a", "new"]);
    }

    #[test]
    fn invalid_objects_are_skipped_and_an_invalid_update_keeps_the_last_valid_form() {
        let mut s = Stores::default();
        list(&mut s, Kind::Namespace, vec![("a", ns("a")), ("bad", bad())]);
        assert_eq!(s.kept.lines(), ["Namespace bad: unknown operator; skipped (never seen valid)"]);
        assert!(s.take(Change::Apply(Kind::Namespace, "a".into(), bad())).is_none());
        assert_eq!(s.objects[&Kind::Namespace].len(), 1);
        assert!(s.objects[&Kind::Namespace].contains_key("a"));
        assert_eq!(
            s.kept.lines(),
            [
                "Namespace a: unknown operator; keeping its last valid form",
                "Namespace bad: unknown operator; skipped (never seen valid)"
            ]
        );
        s.take(Change::Apply(Kind::Namespace, "a".into(), ns("a")));
        s.take(Change::Delete(Kind::Namespace, "bad".into()));
        assert!(s.kept.lines().is_empty(), "a valid form or a deletion ends the note");
    }

    #[test]
    fn a_relist_keeps_the_last_valid_form_of_an_object_now_invalid() {
        let mut s = Stores::default();
        list(&mut s, Kind::Namespace, vec![("a", ns("a")), ("gone", ns("gone"))]);
        for k in [Kind::Pod, Kind::Policy, Kind::Node] {
            list(&mut s, k, vec![]);
        }
        // While the watch was down, "a" turned invalid and "gone" was deleted.
        let Some(Update::Snapshot(c)) = list(&mut s, Kind::Namespace, vec![("a", bad())]) else {
            panic!("no snapshot after the relist")
        };
        assert_eq!(c.namespaces.keys().collect::<Vec<_>>(), ["a"], "only a deletion removes");
        assert_eq!(s.kept.lines(), ["Namespace a: unknown operator; keeping its last valid form"]);
        list(&mut s, Kind::Namespace, vec![]);
        assert!(s.kept.lines().is_empty(), "deleted while the watch was down");
    }
}
