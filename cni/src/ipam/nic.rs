//! The node's own NICs, by MAC, so the source's interface list can be matched to them.

use std::path::PathBuf;

use super::source::Mac;
use crate::skel::error::{Error, Result};

pub trait NicLister {
    /// Every local interface with a usable MAC, as (name, MAC).
    fn list(&self) -> Result<Vec<(String, Mac)>>;
}

/// Reads `/sys/class/net/*/address` (sysfs shows the current network namespace's links).
pub struct Sysfs {
    pub root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Sysfs {
        Sysfs { root: PathBuf::from("/sys/class/net") }
    }
}

impl NicLister for Sysfs {
    fn list(&self) -> Result<Vec<(String, Mac)>> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| Error::io("listing", &self.root, e))?;
        let mut nics = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(text) = std::fs::read_to_string(entry.path().join("address")) else { continue };
            match text.trim().parse::<Mac>() {
                Ok(mac) if mac.0 != [0; 6] => nics.push((name, mac)),
                _ => {}
            }
        }
        nics.sort();
        Ok(nics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_macs_and_skips_links_without_one() {
        let dir = tempfile::tempdir().unwrap();
        for (name, addr) in
            [("eth0", Some("00:0d:3a:00:00:01\n")), ("lo", Some("00:00:00:00:00:00\n")), ("tun0", None)]
        {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            if let Some(a) = addr {
                std::fs::write(dir.path().join(name).join("address"), a).unwrap();
            }
        }
        let nics = Sysfs { root: dir.path().to_path_buf() }.list().unwrap();
        assert_eq!(nics, vec![("eth0".to_string(), "000D3A000001".parse().unwrap())]);
    }
}
