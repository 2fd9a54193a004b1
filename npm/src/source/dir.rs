//! `--source dir:PATH`: every `*.yaml`, `*.yml` and `*.json` file of a directory (not
//! recursive), read as multi-document Kubernetes YAML. Changes are noticed by polling the
//! files' names, sizes and modification times.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use std::collections::HashMap;

use policy_compiler::model::Cluster;
use policy_compiler::snapshot::Snapshot;
use serde::Deserialize;
use serde_yaml::Value;

use super::{Kept, Update};
use crate::error::{Error, Result};

pub struct DirSource {
    pub path: PathBuf,
    /// Each file's documents as last read, every object in them valid: what a file that turns
    /// malformed, or an object that turns invalid, falls back to.
    last_good: HashMap<PathBuf, Vec<Value>>,
    /// What the last read held back, for `/readyz`.
    pub kept: Kept,
}

/// What the directory looked like: a change in it means "read again".
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// An object's identity: kind, namespace, name.
fn identity(v: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&v["kind"]), s(&v["metadata"]["namespace"]), s(&v["metadata"]["name"]))
}

/// Logs and counts an invalid file or object, and notes it for `/readyz`.
fn invalid(held: &mut Vec<String>, kind: &'static str, what: impl std::fmt::Display) {
    metrics::counter!(crate::metrics::INVALID_OBJECTS, "kind" => kind).increment(1);
    tracing::warn!("{what}");
    held.push(what.to_string());
}

impl DirSource {
    pub fn new(path: PathBuf) -> DirSource {
        DirSource { path, last_good: HashMap::new(), kept: Kept::default() }
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| io(&self.path, e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
            .collect();
        files.sort();
        Ok(files)
    }

    pub fn fingerprint(&self) -> Result<Fingerprint> {
        Ok(self
            .files()?
            .into_iter()
            .map(|p| {
                let meta = std::fs::metadata(&p).ok();
                let (len, modified) = meta.map_or((0, None), |m| (m.len(), m.modified().ok()));
                (p, len, modified)
            })
            .collect())
    }

    /// One file's documents, failing closed: a file that cannot be read or parsed keeps its
    /// last good version whole; an object that does not convert keeps its last good version
    /// (by kind, namespace and name), or is skipped if it never had one. Both are logged and
    /// counted in `npm_invalid_objects_total`, and noted in `held`.
    fn read_file(&self, file: &Path, held: &mut Vec<String>) -> Vec<Value> {
        let previous = self.last_good.get(file).cloned().unwrap_or_default();
        let text = match std::fs::read(file).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                invalid(
                    held,
                    "File",
                    format_args!("{} is not UTF-8; keeping its last good version", file.display()),
                );
                return previous;
            }
            Err(e) => {
                invalid(
                    held,
                    "File",
                    format_args!("reading {}: {e}; keeping its last good version", file.display()),
                );
                return previous;
            }
        };
        let docs: std::result::Result<Vec<Value>, _> =
            serde_yaml::Deserializer::from_str(&text).map(Value::deserialize).collect();
        let docs = match docs {
            Ok(d) => d,
            Err(e) => {
                invalid(
                    held,
                    "File",
                    format_args!("{} does not parse ({e}); keeping its last good version", file.display()),
                );
                return previous;
            }
        };
        let mut out = Vec::new();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let text = serde_yaml::to_string(&doc).unwrap_or_default();
            let refused = Snapshot::from_yaml(&text).map(|s| s.refused).unwrap_or_default();
            let Some(first) = refused.first() else {
                out.push(doc);
                continue;
            };
            let id = identity(&doc);
            match previous.iter().find(|p| identity(p) == id) {
                Some(old) => {
                    invalid(
                        held,
                        first.kind,
                        format_args!("{}: {first}; keeping its last good version", file.display()),
                    );
                    out.push(old.clone());
                }
                None => invalid(
                    held,
                    first.kind,
                    format_args!("{}: skipping invalid object: {first}", file.display()),
                ),
            }
        }
        out
    }

    /// Reads every file (see `read_file`); a file that is gone takes its objects with it.
    pub fn load(&mut self) -> Result<Cluster> {
        let mut good = HashMap::new();
        let mut text = String::new();
        let mut held = Vec::new();
        for file in self.files()? {
            let docs = self.read_file(&file, &mut held);
            for d in &docs {
                text += "---\n";
                text += &serde_yaml::to_string(d).map_err(|e| Error::Source(e.to_string()))?;
            }
            good.insert(file, docs);
        }
        self.last_good = good;
        self.kept.replace(held);
        let snap = Snapshot::from_yaml(&text).map_err(|e| Error::Source(e.to_string()))?;
        Ok(snap.cluster)
    }
}

impl DirSource {
    /// Polls the directory every `interval` and sends a snapshot whenever it changed (and once
    /// at the start). A directory that cannot be read is reported and tried again; the agent
    /// keeps what it programmed meanwhile. Ends when the agent is gone.
    pub fn spawn(mut self, interval: Duration, updates: Sender<Update>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("source-dir".into()).spawn(move || {
            let mut seen = None;
            loop {
                let changed = self.fingerprint().and_then(|f| match seen.as_ref() == Some(&f) {
                    true => Ok(None),
                    false => Ok(Some((self.load()?, f))),
                });
                match changed {
                    Ok(Some((cluster, fingerprint))) => {
                        seen = Some(fingerprint);
                        if updates.send(Update::Snapshot(cluster)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        metrics::counter!(crate::metrics::ERRORS, "kind" => e.metric_label()).increment(1);
                        tracing::error!("reading {}: {e}; keeping what is programmed", self.path.display());
                    }
                }
                std::thread::sleep(interval);
            }
        })
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Source(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_is_skipped_and_changes_show_in_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "kind: Namespace\nmetadata: {name: x}\n").unwrap();
        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut source = DirSource::new(dir.path().to_path_buf());
        let before = source.fingerprint().unwrap();
        assert_eq!(before.len(), 2, "only YAML and JSON files count");
        assert!(source.load().unwrap().namespaces.contains_key("x"));
        std::fs::write(dir.path().join("a.yaml"), "kind: Namespace\nmetadata: {name: renamed}\n").unwrap();
        assert_ne!(source.fingerprint().unwrap(), before);
        assert!(source.load().unwrap().namespaces.contains_key("renamed"));
    }

    #[test]
    fn a_file_or_object_gone_bad_keeps_its_last_good_version_and_only_deletion_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        let policy = |op: &str, app: &str| {
            format!(
                "kind: NetworkPolicy\nmetadata: {{name: deny, namespace: x}}\nspec:\n  podSelector:\n    \
                 matchExpressions: [{{key: app, operator: {op}, values: [{app}]}}]\n  policyTypes: [Ingress]\n"
            )
        };
        let selected = |c: &Cluster| -> Vec<String> {
            c.policies.iter().map(|p| format!("{}/{} {}", p.namespace, p.name, p.pod_selector)).collect()
        };
        std::fs::write(&file, policy("In", "db")).unwrap();
        let mut source = DirSource::new(dir.path().to_path_buf());
        let good = selected(&source.load().unwrap());
        assert_eq!(good, ["x/deny {app=db}"]);

        // A YAML typo, a truncated write, bytes that are not UTF-8: the last good file stays.
        for bad in [b"kind: NetworkPolicy\nmetadata: {name: deny".to_vec(), b"\xff\xfe".to_vec()] {
            std::fs::write(&file, bad).unwrap();
            assert_eq!(selected(&source.load().unwrap()), good);
            let kept = source.kept.lines();
            assert!(
                kept.len() == 1
                    && kept[0].contains("p.yaml")
                    && kept[0].ends_with("keeping its last good version"),
                "{kept:?}"
            );
        }
        // An object that turns invalid keeps its last valid form; others in the file still change.
        let other = "---\nkind: Namespace\nmetadata: {name: y}\n";
        std::fs::write(&file, policy("Sometimes", "web") + other).unwrap();
        let c = source.load().unwrap();
        assert_eq!(selected(&c), good);
        assert!(c.namespaces.contains_key("y"));
        let kept = source.kept.lines();
        assert!(
            kept.len() == 1 && kept[0].contains("Sometimes") && kept[0].contains("last good"),
            "{kept:?}"
        );
        // A valid edit replaces it; an invalid object never seen before is skipped.
        std::fs::write(&file, policy("In", "web")).unwrap();
        assert_eq!(selected(&source.load().unwrap()), ["x/deny {app=web}"]);
        assert!(source.kept.lines().is_empty(), "a valid edit leaves nothing held back");
        std::fs::write(dir.path().join("new.yaml"), policy("Sometimes", "db").replace("deny", "fresh"))
            .unwrap();
        assert_eq!(selected(&source.load().unwrap()), ["x/deny {app=web}"]);
        let kept = source.kept.lines();
        assert!(kept.len() == 1 && kept[0].contains("new.yaml: skipping invalid object"), "{kept:?}");
        // Only removing the file removes its policies.
        std::fs::remove_file(&file).unwrap();
        assert!(selected(&source.load().unwrap()).is_empty());
    }
}
