//! Crash-safe state files: lockless reads, writes under an `flock` with a bounded wait.
//!
//! A reader sees either the old or the new file, never a torn one: writers fill a temporary
//! file, fsync it, rename it over the state file and fsync the directory. The lock is an
//! `flock` on `<state>.lock`, which the kernel drops when a process dies, so a killed plugin
//! never leaves a stale lock behind (the failure mode of PID-in-a-file locks).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::skel::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    lock_timeout: Duration,
}

/// Proof that this process holds the store's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _lock: File,
}

impl Store {
    pub fn new(path: impl Into<PathBuf>, lock_timeout: Duration) -> Store {
        Store { path: path.into(), lock_timeout }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        suffixed(&self.path, suffix)
    }

    /// Reads and decodes the state without the lock; `None` when there is no file yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &self.path, e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::CorruptState {
            path: self.path.display().to_string(),
            reason: if bytes.is_empty() { "the file is empty".into() } else { e.to_string() },
        })
    }

    /// Takes the lock, waiting at most the configured timeout (then code 11).
    pub fn lock(&self) -> Result<Locked<'_>> {
        let lock_path = self.sibling(".lock");
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating state directory", dir, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("opening lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => return Ok(Locked { store: self, _lock: file }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", &lock_path, e)),
        }
        // Contended: block in the kernel, which wakes us the moment the holder is done (polling
        // with sleeps made tail latency under 8-way load ten times worse). A helper thread does
        // the blocking call so the wait can be bounded; if we give up first, its late lock is
        // dropped with the channel and released at once.
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = tx.send(file.lock().map(|()| file));
        });
        match rx.recv_timeout(self.lock_timeout) {
            Ok(Ok(file)) => Ok(Locked { store: self, _lock: file }),
            Ok(Err(e)) => Err(Error::io("locking", &lock_path, e)),
            Err(RecvTimeoutError::Timeout) => Err(Error::TryAgainLater(format!(
                "timed out after {:?} waiting for the lock on {}",
                self.lock_timeout,
                lock_path.display()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Io(format!("lock helper for {} vanished", lock_path.display())))
            }
        }
    }
}

impl Locked<'_> {
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.store.load()
    }

    /// Replaces the state file atomically.
    pub fn save<T: Serialize>(&self, state: &T) -> Result<()> {
        write_atomically(&self.store.path, &self.store.sibling(".tmp"), state)
    }
}

/// `path` with `suffix` appended to its file name: the files kept beside a state file
/// (`<state>.lock`, `<state>.d`, …).
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces `path` with `value` as JSON: written to `tmp`, fsynced, renamed over `path`, the
/// directory fsynced, so a reader sees the old or the new file and a crash loses neither.
pub fn write_atomically<T: Serialize>(path: &Path, tmp: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec(value)
        .map_err(|e| Error::Io(format!("encoding state for {}: {e}", path.display())))?;
    bytes.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = File::create(tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io("writing", tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
    sync_dir(path);
    Ok(())
}

/// Makes a rename or unlink in `path`'s directory durable (some filesystems refuse to fsync a
/// directory; that is logged, not fatal).
pub fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::debug!("fsync of {} failed: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::new(dir.path().join("state.json"), Duration::from_millis(100))
    }

    #[test]
    fn a_missing_file_loads_as_none_and_saves_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        assert_eq!(s.load::<BTreeMap<String, u32>>().unwrap(), None);
        let state = BTreeMap::from([("a".to_string(), 1u32)]);
        s.lock().unwrap().save(&state).unwrap();
        assert_eq!(s.load::<BTreeMap<String, u32>>().unwrap(), Some(state));
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn corrupt_and_empty_files_are_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        for content in ["{\"truncated\": ", ""] {
            std::fs::write(s.path(), content).unwrap();
            let err = s.load::<BTreeMap<String, u32>>().unwrap_err();
            assert_eq!(err.code(), 100);
            assert_eq!(std::fs::read_to_string(s.path()).unwrap(), content);
        }
    }

    #[test]
    fn a_held_lock_times_out_with_code_11() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let _held = s.lock().unwrap();
        // flock locks belong to the open file description, so a second open contends.
        let err = s.lock().unwrap_err();
        assert_eq!(err.code(), 11);
    }

    #[test]
    fn the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        drop(s.lock().unwrap());
        assert!(s.lock().is_ok());
    }

    #[test]
    fn an_unwritable_state_directory_is_code_5() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let s = Store::new(blocker.join("sub/state.json"), Duration::from_millis(10));
        assert_eq!(s.lock().unwrap_err().code(), 5);
    }
}
