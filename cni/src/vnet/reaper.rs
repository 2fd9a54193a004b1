//! What DEL and GC leave to a detached copy of the binary, so the runtime does not wait for
//! the kernel's slow parts:
//! - deleting parked veths: unregistering a veth waits 20-30 ms here for an RCU barrier;
//! - removing MAC translation elements: a removal leaves work for a deferred kernel cleanup,
//!   and closing any nf_tables socket while that is pending makes the kernel wait for an RCU
//!   grace period holding its nf_tables lock, so removals by exiting DELs queue each other up
//!   (measured: 0.1 ms alone, 60 ms with 8 at once).
//!
//! One reaper at a time (a lock beside the state file): after `REAP_DELAY` it deletes link group
//! `REAP_GROUP` in one request (only DEL and GC put links there) and removes the translation
//! elements whose address no endpoint record holds; it looks again after letting go of the
//! lock, so nothing parked meanwhile is left behind. Usually the runtime has deleted the pod's
//! namespace by then, which destroys the pair anyway. A DEL that finds a reaper pending starts
//! none: the pending one will see what it parked.
//!
//! An ADD inserts its element under the translation lock, which the reaper holds from reading
//! the records to removing elements: an address reused meanwhile has its record written
//! before its ADD takes the lock, so its fresh element is never removed.

use std::collections::HashSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::netlink::Netlink;
use super::nft::Nft;
use super::records::Records;
use super::state::VnetState;
use super::translation;
use crate::skel::error::Result;
use crate::store::{suffixed, Store};

/// Set (to the state file) when azure-vnet runs as the reaper.
pub const REAP_ENV: &str = "AZURE_VNET_REAP";

/// The link group parked veths wait in ("azv" in ASCII; documented in docs/cni-config.md).
pub const REAP_GROUP: u32 = 0x0061_7a76;

/// How long a reaper waits before deleting, and before closing its nf_tables socket.
pub const REAP_DELAY: Duration = Duration::from_millis(500);

/// The reaper's bound on waiting for the translation lock (it has no config to read).
const REAPER_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The name a parked pod end gets: `azq` + the host end's hash.
pub fn parked_name(host: &str) -> String {
    format!("azq{}", host.trim_start_matches("azv"))
}

/// Serialises translation inserts (ADD) with the reaper's pruning.
pub fn translation_lock(state_file: &Path, timeout: Duration) -> Store {
    Store::new(suffixed(state_file, ".translation"), timeout)
}

fn open_lock(state_file: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(suffixed(state_file, ".reaper.lock"))
}

/// Whether a reaper holds the lock (it will see everything parked before it lets go).
pub fn pending(state_file: &Path) -> bool {
    open_lock(state_file).is_ok_and(|f| f.try_lock().is_err())
}

/// Starts a detached reaper (the runtime waits for neither it nor its children).
pub fn start(state_file: &Path) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .env_clear()
        .env(REAP_ENV, state_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok(child.id())
}

/// The reaper's main; returns the exit code.
pub fn run(state_file: &Path) -> i32 {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() else {
        return 1;
    };
    let Ok(lock) = open_lock(state_file) else { return 1 };
    rt.block_on(async {
        let Ok(nl) = Netlink::connect() else { return 1 };
        let mut nft = None;
        let mut pruned = 0;
        loop {
            if lock.try_lock().is_err() {
                break;
            }
            tokio::time::sleep(REAP_DELAY).await;
            let _ = nl.delete_group(REAP_GROUP).await;
            pruned += prune_translations(state_file, REAPER_LOCK_TIMEOUT, &mut nft).unwrap_or(0);
            let _ = lock.unlock();
            match nl.group(REAP_GROUP).await {
                Ok(left) if !left.is_empty() => continue,
                _ => break,
            }
        }
        if pruned > 0 {
            // Closing the socket before the kernel's cleanup of the removals would make it
            // wait for that cleanup, holding the nf_tables lock every ADD needs.
            tokio::time::sleep(REAP_DELAY).await;
        }
        0
    })
}

/// The addresses the endpoint records hold (their own files and those inside the state file).
pub fn owned_addresses(state_file: &Path, state: &VnetState) -> Result<HashSet<IpAddr>> {
    let (records, _) = Records::beside(state_file).all()?;
    Ok(records
        .iter()
        .chain(state.endpoints.values())
        .filter_map(|e| e.attach.as_ref())
        .flat_map(|a| a.addresses.iter().map(|n| n.addr()))
        .collect())
}

/// Removes the translation elements whose address no endpoint record holds. The records are
/// read under the translation lock, which an ADD takes to insert after writing its record, so
/// a fresh element is never taken for an orphan. `nft` is opened on first use and left open
/// for the caller (see the module doc on closing it). Returns how many were removed.
pub fn prune_translations(state_file: &Path, lock_timeout: Duration, nft: &mut Option<Nft>) -> Result<usize> {
    let state: VnetState = Store::new(state_file, lock_timeout).load()?.unwrap_or_default();
    let Some(node) = state.node.as_ref().filter(|n| n.ready && n.mode == super::mode::Mode::Bridge) else {
        return Ok(0);
    };
    let _guard = translation_lock(state_file, lock_timeout).lock()?;
    let owned = owned_addresses(state_file, &state)?;
    let table = translation::table(&node.bridge);
    let map = translation::map_ref(&table);
    if nft.is_none() {
        *nft = Some(Nft::open()?);
    }
    let Some(nft) = nft.as_mut() else { return Ok(0) };
    let elements = match nft.list(map) {
        Ok(e) => e,
        Err(crate::skel::error::Error::Nft { missing: true, .. }) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for e in elements {
        let Ok(octets) = <[u8; 4]>::try_from(e.key.as_slice()) else { continue };
        if !owned.contains(&IpAddr::from(octets)) {
            nft.remove(map, &e.key)?;
            tracing::info!("removed the translation of {} nobody holds", IpAddr::from(octets));
            removed += 1;
        }
    }
    Ok(removed)
}
