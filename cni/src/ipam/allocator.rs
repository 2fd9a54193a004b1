//! Pure allocation over [`State`]: no files, no clock, no network.
//!
//! Invariants every function keeps (checked by the property tests below):
//! an address has at most one holder (by construction: a map keyed by address), a key holds at
//! most one address, new reservations come only from the pool, and a pool refresh never drops
//! an address that is in use.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::source::PoolSubnet;
use super::state::{Allocation, Key, State};
use crate::skel::error::{Error, Result};

/// The outcome of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: IpAddr,
    pub subnet: IpNet,
    /// False when the key already held this address (a repeated ADD).
    pub new: bool,
}

/// Reserves an address for `key`: the one it already holds, the requested one, or the next
/// free pool address after the last one handed out.
pub fn reserve(
    state: &mut State,
    key: &Key,
    requested: Option<(IpAddr, Option<u8>)>,
    now: u64,
) -> Result<Lease> {
    if let Some((address, held)) = state.holding(key) {
        if let Some((want, _)) = requested.filter(|(want, _)| *want != address) {
            return Err(Error::AddressUnavailable(format!(
                "{}/{} already holds {address}, cannot switch it to {want}",
                key.container_id, key.ifname
            )));
        }
        return Ok(Lease { address, subnet: held.subnet, new: false });
    }
    let (address, subnet) = match requested {
        Some((want, prefix_len)) => check_requested(state, want, prefix_len)?,
        None => next_free(state)?,
    };
    state.allocations.insert(address, Allocation { key: key.clone(), subnet, since: now });
    state.last_reserved = Some(address);
    Ok(Lease { address, subnet, new: true })
}

fn check_requested(state: &State, want: IpAddr, prefix_len: Option<u8>) -> Result<(IpAddr, IpNet)> {
    let subnet = state.in_pool(want).ok_or_else(|| {
        let pools: Vec<String> = state.pool.iter().map(|s| s.prefix.to_string()).collect();
        Error::NotInPool(format!("{want} is not in the pool (secondary addresses of [{}])", pools.join(", ")))
    })?;
    if let Some(len) = prefix_len.filter(|len| *len != subnet.prefix_len()) {
        return Err(Error::AddressUnavailable(format!(
            "{want}/{len} does not match the pool's subnet {subnet}"
        )));
    }
    if let Some(holder) = state.allocations.get(&want) {
        return Err(Error::AddressUnavailable(format!(
            "{want} is taken by container {} ({}) in network {}",
            holder.key.container_id, holder.key.ifname, holder.key.network
        )));
    }
    Ok((want, subnet))
}

fn next_free(state: &State) -> Result<(IpAddr, IpNet)> {
    let all: Vec<(IpAddr, IpNet)> =
        state.pool.iter().flat_map(|s| s.addresses.iter().map(move |a| (*a, s.prefix))).collect();
    let start =
        state.last_reserved.and_then(|last| all.iter().position(|(a, _)| *a == last)).map_or(0, |i| i + 1);
    let rotated = all[start.min(all.len())..].iter().chain(&all[..start.min(all.len())]);
    rotated.copied().find(|(a, _)| !state.allocations.contains_key(a)).ok_or_else(|| {
        Error::PoolExhausted(format!(
            "all {} pool addresses are in use ({} allocations)",
            all.len(),
            state.allocations.len()
        ))
    })
}

/// Releases whatever `key` holds; `None` when it held nothing (DEL of an unknown key).
pub fn release(state: &mut State, key: &Key) -> Option<IpAddr> {
    let (address, _) = state.holding(key)?;
    state.allocations.remove(&address);
    Some(address)
}

/// GC: releases every allocation of `network` whose attachment is not in `valid`.
pub fn collect_garbage(
    state: &mut State,
    network: &str,
    valid: &HashSet<(String, String)>,
) -> Vec<(IpAddr, Key)> {
    let stale: Vec<(IpAddr, Key)> = state
        .allocations
        .iter()
        .filter(|(_, a)| a.key.network == network)
        .filter(|(_, a)| !valid.contains(&(a.key.container_id.clone(), a.key.ifname.clone())))
        .map(|(ip, a)| (*ip, a.key.clone()))
        .collect();
    for (ip, _) in &stale {
        state.allocations.remove(ip);
    }
    stale
}

/// Replaces the pool with what the source now lists. Allocations are untouched: an address
/// that vanished from the source stays held (and is reported) until its holder releases it.
/// Returns true when the pool changed.
pub fn refresh(state: &mut State, mut pool: Vec<PoolSubnet>, fetched_at: u64) -> bool {
    for s in &mut pool {
        s.addresses.sort();
        s.addresses.dedup();
    }
    state.pool_fetched_at = fetched_at;
    if state.pool == pool {
        return false;
    }
    state.pool = pool;
    true
}

#[cfg(test)]
mod tests;
