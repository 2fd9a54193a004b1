//! Endpoint records: one small file per endpoint in `<stateFile>.d/`, so concurrent ADDs and
//! DELs never wait on one node-wide lock nor rewrite one file that grows with the node's pods
//! (the bottleneck Azure's plugin is known for: bursts of pod creations timed out on its store
//! lock). A record is written atomically before an ADD touches the kernel and removed when a
//! DEL is done; the runtime never runs two commands for one attachment at once, so a record
//! needs no lock of its own. The node's record stays in the state file itself.
//! Records of older versions, inside the state file's `endpoints`, are still read and removed.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::state::Endpoint;
use crate::skel::error::{Error, Result};
use crate::store;

pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn beside(state_file: &Path) -> Records {
        Records { dir: store::suffixed(state_file, ".d") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A record's file: the SHA-1 of its key (`containerID/ifname`, which may hold any byte a
    /// file name may not).
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.json", sha1_smol::Sha1::from(key).digest()))
    }

    pub fn get(&self, key: &str) -> Result<Option<Endpoint>> {
        read(&self.path(key))
    }

    pub fn put(&self, key: &str, ep: &Endpoint) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("creating", &self.dir, e))?;
        let path = self.path(key);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        store::write_atomically(&path, Path::new(&tmp), ep)
    }

    /// Removes a record; false when there was none.
    pub fn remove(&self, key: &str) -> Result<bool> {
        let path = self.path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                store::sync_dir(&path);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    /// Every readable record; unreadable ones are reported (and left alone) by name.
    pub fn all(&self) -> Result<(Vec<Endpoint>, Vec<Error>)> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(Error::io("listing", &self.dir, e)),
        };
        let (mut found, mut bad) = (Vec::new(), Vec::new());
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read(&path) {
                Ok(Some(ep)) => found.push(ep),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        found.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok((found, bad))
    }
}

fn read(path: &Path) -> Result<Option<Endpoint>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::CorruptState {
        path: path.display().to_string(),
        reason: if bytes.is_empty() { "the file is empty".into() } else { e.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnet::mode::Mode;

    fn endpoint(id: &str) -> Endpoint {
        Endpoint {
            container_id: id.into(),
            ifname: "eth0".into(),
            network: "azure".into(),
            netns: "/var/run/netns/x".into(),
            host_veth: "azv00000000000".into(),
            address: "10.240.1.5".parse().unwrap(),
            port_mappings: Vec::new(),
            mode: Mode::Bridge,
            attach: None,
            result: serde_json::value::to_raw_value(&serde_json::json!({"ips": []})).unwrap(),
        }
    }

    #[test]
    fn records_are_put_listed_and_removed_one_file_each() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::beside(&dir.path().join("azure-vnet.json"));
        assert!(r.get("a/eth0").unwrap().is_none());
        r.put("a/eth0", &endpoint("a")).unwrap();
        r.put("b/eth0", &endpoint("b")).unwrap();
        assert_eq!(r.get("a/eth0").unwrap().unwrap().container_id, "a");
        let (all, bad) = r.all().unwrap();
        assert_eq!(all.iter().map(|e| e.container_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(bad.is_empty());
        assert!(r.remove("a/eth0").unwrap());
        assert!(!r.remove("a/eth0").unwrap(), "twice is fine");
        assert_eq!(r.all().unwrap().0.len(), 1);
        assert!(std::fs::read_dir(r.dir())
            .unwrap()
            .flatten()
            .all(|e| !e.path().to_string_lossy().ends_with(".tmp")));
    }

    #[test]
    fn a_corrupt_record_is_reported_and_kept_while_the_others_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::beside(&dir.path().join("azure-vnet.json"));
        r.put("a/eth0", &endpoint("a")).unwrap();
        std::fs::write(r.path("b/eth0"), "{\"truncated").unwrap();
        let (all, bad) = r.all().unwrap();
        assert_eq!((all.len(), bad.len()), (1, 1));
        assert_eq!(r.get("b/eth0").unwrap_err().code(), 100);
        assert_eq!(std::fs::read_to_string(r.path("b/eth0")).unwrap(), "{\"truncated");
    }
}
