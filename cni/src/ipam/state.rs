//! The IPAM state file's contents: the pool last learnt from the source and who holds what.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::source::PoolSubnet;

/// Who an address belongs to: one attachment of one network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    #[serde(flatten)]
    pub key: Key,
    /// The subnet the address was handed out in (kept even if the source drops the address).
    pub subnet: IpNet,
    /// Milliseconds since the Unix epoch.
    pub since: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The pool as the source last described it.
    #[serde(default)]
    pub pool: Vec<PoolSubnet>,
    /// When the pool was fetched (ms since the epoch); 0 = never.
    #[serde(default)]
    pub pool_fetched_at: u64,
    /// Address → holder. One entry per address, so no address can have two holders.
    #[serde(default)]
    pub allocations: BTreeMap<IpAddr, Allocation>,
    /// Allocation rotates through the pool so a released address is not reused at once.
    #[serde(default)]
    pub last_reserved: Option<IpAddr>,
}

impl State {
    pub fn holding(&self, key: &Key) -> Option<(IpAddr, &Allocation)> {
        self.allocations.iter().find(|(_, a)| a.key == *key).map(|(ip, a)| (*ip, a))
    }

    pub fn in_pool(&self, addr: IpAddr) -> Option<IpNet> {
        self.pool.iter().find(|s| s.addresses.binary_search(&addr).is_ok()).map(|s| s.prefix)
    }

    pub fn pool_size(&self) -> usize {
        self.pool.iter().map(|s| s.addresses.len()).sum()
    }

    /// Allocations whose address the source no longer lists: kept until released.
    pub fn orphans(&self) -> Vec<IpAddr> {
        self.allocations.keys().filter(|ip| self.in_pool(**ip).is_none()).copied().collect()
    }
}
