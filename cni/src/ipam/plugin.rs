//! The azure-vnet-ipam plugin: CNI commands over the source, the allocator and the store.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use super::allocator::{self, Lease};
use super::config::{self, IpamConfig, Source};
use super::nic::NicLister;
use super::source::PoolSubnet;
use super::state::{Key, State};
use super::{http, interfaces_json, nmagent, source};
use crate::logging;
use crate::skel::error::{Error, Result};
use crate::skel::result::{CniResult, Dns, IpConfig, Route};
use crate::skel::{Attachment, Plugin, Request};
use crate::store::Store;

pub struct IpamPlugin {
    nics: Box<dyn NicLister>,
}

impl IpamPlugin {
    pub fn new(nics: Box<dyn NicLister>) -> IpamPlugin {
        IpamPlugin { nics }
    }

    fn setup(&self, req: &Request) -> Result<(IpamConfig, Store)> {
        let cfg = IpamConfig::from_network_config(&req.config)?;
        logging::init(&cfg.log_file, cfg.log_level);
        let store = Store::new(&cfg.state_file, cfg.lock_timeout);
        Ok((cfg, store))
    }

    /// Asks the source for the node's interfaces and picks the pod pool.
    fn fetch(&self, cfg: &IpamConfig) -> Result<Vec<PoolSubnet>> {
        let nics = match &cfg.source {
            Source::Azure { url } => {
                let body = http::get(url, cfg.query_timeout)?;
                let text = String::from_utf8(body)
                    .map_err(|_| Error::BadSourceAnswer(format!("answer from {url} is not UTF-8")))?;
                nmagent::parse(&text)?
            }
            Source::Mas { path } => {
                let bytes = std::fs::read(path).map_err(|e| Error::io("reading interfaces file", path, e))?;
                interfaces_json::parse(&bytes)?
            }
        };
        let pool = source::select_pool(&nics, &self.nics.list()?, cfg.subnet)?;
        tracing::debug!(
            "source lists {} pool addresses in [{}]",
            pool.iter().map(|s| s.addresses.len()).sum::<usize>(),
            pool.iter().map(|s| s.prefix.to_string()).collect::<Vec<_>>().join(", ")
        );
        Ok(pool)
    }

    /// Fetches; when the source fails but a pool is cached, keeps going on the cache.
    fn fetch_or_keep(
        &self,
        cfg: &IpamConfig,
        cached: Option<&State>,
    ) -> Result<Option<(Vec<PoolSubnet>, u64)>> {
        match self.fetch(cfg) {
            Ok(pool) => Ok(Some((pool, now_ms()))),
            Err(e) if cached.is_some_and(|s| !s.pool.is_empty()) => {
                tracing::warn!("address source failed ({e}); using the cached pool");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn reserve_locked(
        &self,
        store: &Store,
        fresh: Option<(Vec<PoolSubnet>, u64)>,
        key: &Key,
        requested: Option<(IpAddr, Option<u8>)>,
    ) -> Result<Lease> {
        let lock = store.lock()?;
        let mut state: State = lock.load()?.unwrap_or_default();
        let mut dirty = false;
        if let Some((pool, at)) = fresh.filter(|(_, at)| *at > state.pool_fetched_at) {
            if allocator::refresh(&mut state, pool, at) {
                tracing::info!("pool refreshed: {} addresses", state.pool_size());
                for orphan in state.orphans() {
                    tracing::warn!(
                        "{orphan} is no longer listed by the source but still in use; kept until released"
                    );
                }
            }
            dirty = true;
        }
        let result = allocator::reserve(&mut state, key, requested, now_ms());
        if dirty || result.as_ref().is_ok_and(|l| l.new) {
            lock.save(&state)?;
        }
        result
    }
}

impl Plugin for IpamPlugin {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let (cfg, store) = self.setup(req)?;
        let key = key_of(req);
        let requested = config::requested_address(req)?;
        let cached: Option<State> = store.load()?;
        let stale = cached.as_ref().is_none_or(|s| {
            s.pool.is_empty()
                || now_ms().saturating_sub(s.pool_fetched_at) >= cfg.refresh_interval.as_millis() as u64
        });
        let fresh = if stale { self.fetch_or_keep(&cfg, cached.as_ref())? } else { None };
        let mut result = self.reserve_locked(&store, fresh, &key, requested);
        // The cached pool may be behind the source: a full pool or an unknown requested
        // address gets one fresh look before the caller hears no.
        let retry = matches!(&result, Err(Error::PoolExhausted(_) | Error::NotInPool(_)));
        if retry && !stale {
            tracing::debug!("retrying with a fresh pool: {}", result.as_ref().unwrap_err());
            if let Ok(pool) = self.fetch(&cfg) {
                result = self.reserve_locked(&store, Some((pool, now_ms())), &key, requested);
            }
        }
        let lease = result?;
        tracing::info!(
            "{} {} to {}/{} in network {}",
            if lease.new { "reserved" } else { "returned held" },
            lease.address,
            key.container_id,
            key.ifname,
            key.network
        );
        Ok(lease_result(&lease))
    }

    fn del(&self, req: &Request) -> Result<()> {
        let (_, store) = self.setup(req)?;
        let key = key_of(req);
        let lock = store.lock()?;
        let Some(mut state) = lock.load::<State>()? else {
            tracing::info!("no state yet; nothing to release for {}/{}", key.container_id, key.ifname);
            return Ok(());
        };
        match allocator::release(&mut state, &key) {
            Some(ip) => {
                lock.save(&state)?;
                tracing::info!("released {ip} from {}/{}", key.container_id, key.ifname);
            }
            None => tracing::info!("{}/{} held no address; nothing to release", key.container_id, key.ifname),
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let (_, store) = self.setup(req)?;
        let key = key_of(req);
        let state: State = store.load()?.unwrap_or_default();
        let (ip, _) = state.holding(&key).ok_or_else(|| {
            Error::UnknownContainer(format!(
                "no address is allocated to {}/{} in network {}",
                key.container_id, key.ifname, key.network
            ))
        })?;
        let prev: Option<CniResult> =
            req.config.get("prevResult").and_then(|v| serde_json::from_value(v.clone()).ok());
        if let Some(prev) = prev.filter(|p| !p.ips.is_empty()) {
            if !prev.ips.iter().any(|c| c.address.addr() == ip) {
                return Err(Error::InvalidConfig(format!(
                    "prevResult does not list {ip}, which the allocation holds"
                )));
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let (cfg, store) = self.setup(req)?;
        let state: State = match store.load() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => return Err(Error::NotAvailable(e.to_string())),
        };
        let free = |pool: &[PoolSubnet]| {
            pool.iter().flat_map(|s| &s.addresses).filter(|a| !state.allocations.contains_key(a)).count()
        };
        if free(&state.pool) > 0 {
            return Ok(());
        }
        let pool = self.fetch(&cfg).map_err(|e| Error::NotAvailable(e.to_string()))?;
        match free(&pool) {
            0 => Err(Error::NotAvailable("no free address in the pool".into())),
            _ => Ok(()),
        }
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<()> {
        let (_, store) = self.setup(req)?;
        let valid: HashSet<(String, String)> =
            valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
        let lock = store.lock()?;
        let Some(mut state) = lock.load::<State>()? else { return Ok(()) };
        let released = allocator::collect_garbage(&mut state, &req.network, &valid);
        if !released.is_empty() {
            lock.save(&state)?;
        }
        for (ip, key) in &released {
            tracing::info!("GC released {ip} from {}/{}", key.container_id, key.ifname);
        }
        tracing::info!("GC kept {} attachments, released {}", valid.len(), released.len());
        Ok(())
    }
}

fn key_of(req: &Request) -> Key {
    Key {
        network: req.network.clone(),
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
    }
}

/// Azure's result shape: the address in its subnet, the subnet's first host as gateway and
/// default route, and Azure's DNS.
pub fn lease_result(lease: &Lease) -> CniResult {
    let gateway = first_host(lease.subnet);
    let default_dst: IpNet =
        if lease.address.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.parse().unwrap_or_default();
    CniResult {
        ips: vec![IpConfig {
            version: None,
            address: IpNet::new(lease.address, lease.subnet.prefix_len()).unwrap_or(lease.subnet),
            gateway: Some(gateway),
            interface: None,
        }],
        routes: vec![Route { dst: default_dst, gw: Some(gateway) }],
        dns: Dns { nameservers: vec![config::AZURE_DNS.to_string()], ..Dns::default() },
        ..CniResult::default()
    }
}

fn first_host(subnet: IpNet) -> IpAddr {
    match subnet.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_the_subnets_first_host() {
        assert_eq!(first_host("10.240.0.0/16".parse().unwrap()).to_string(), "10.240.0.1");
        assert_eq!(first_host("fd00::/64".parse().unwrap()).to_string(), "fd00::1");
        let lease = Lease {
            address: "10.240.3.7".parse().unwrap(),
            subnet: "10.240.0.0/16".parse().unwrap(),
            new: true,
        };
        let r = lease_result(&lease);
        assert_eq!(r.ips[0].address.to_string(), "10.240.3.7/16");
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
    }
}
