//! `--source dir:PATH`: every `*.yaml`, `*.yml` and `*.json` file of a directory (not
//! recursive), read as multi-document Kubernetes YAML. Changes are noticed by polling the
//! files' names, sizes and modification times.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use policy_compiler::model::Cluster;
use policy_compiler::snapshot::Snapshot;

use super::Update;
use crate::error::{Error, Result};

pub struct DirSource {
    pub path: PathBuf,
}

/// What the directory looked like: a change in it means "read again".
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl DirSource {
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

    /// Reads every file; objects that do not convert are logged and skipped, one by one.
    pub fn load(&self) -> Result<Cluster> {
        let mut text = String::new();
        for file in self.files()? {
            let content = std::fs::read_to_string(&file).map_err(|e| io(&file, e))?;
            // Each file on its own first, so one broken file is named and skipped.
            match Snapshot::from_yaml(&content) {
                Ok(_) => {
                    text += "\n---\n";
                    text += &content;
                }
                Err(e) => tracing::warn!("skipping {}: {e}", file.display()),
            }
        }
        let snap = Snapshot::from_yaml(&text).map_err(|e| Error::Source(e.to_string()))?;
        for refused in &snap.refused {
            metrics::counter!(crate::metrics::INVALID_OBJECTS, "kind" => refused.kind).increment(1);
            tracing::warn!("skipping invalid object: {refused}");
        }
        Ok(snap.cluster)
    }
}

impl DirSource {
    /// Polls the directory every `interval` and sends a snapshot whenever it changed (and once
    /// at the start). A directory that cannot be read is reported and tried again; the agent
    /// keeps what it programmed meanwhile. Ends when the agent is gone.
    pub fn spawn(self, interval: Duration, updates: Sender<Update>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("source-dir".into()).spawn(move || {
            let mut seen = None;
            loop {
                match self.fingerprint().and_then(|f| Ok((self.load()?, f))) {
                    Ok((cluster, fingerprint)) if seen.as_ref() != Some(&fingerprint) => {
                        seen = Some(fingerprint);
                        if updates.send(Update::Snapshot(cluster)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
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
        let source = DirSource { path: dir.path().to_path_buf() };
        let before = source.fingerprint().unwrap();
        assert_eq!(before.len(), 2, "only YAML and JSON files count");
        assert!(source.load().unwrap().namespaces.contains_key("x"));
        std::fs::write(dir.path().join("a.yaml"), "kind: Namespace\nmetadata: {name: renamed}\n").unwrap();
        assert_ne!(source.fingerprint().unwrap(), before);
        assert!(source.load().unwrap().namespaces.contains_key("renamed"));
    }
}
