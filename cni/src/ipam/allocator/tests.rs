use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;

fn key(i: usize) -> Key {
    Key { network: "vnet".into(), container_id: format!("c{i}"), ifname: "eth0".into() }
}

fn addr(i: usize) -> IpAddr {
    IpAddr::from([10, 240, 0, 5 + i as u8])
}

fn pool_of(indexes: impl IntoIterator<Item = usize>) -> Vec<PoolSubnet> {
    vec![PoolSubnet {
        prefix: "10.240.0.0/16".parse().unwrap(),
        addresses: indexes.into_iter().map(addr).collect(),
    }]
}

fn state_with(n: usize) -> State {
    let mut s = State::default();
    refresh(&mut s, pool_of(0..n), 1);
    s
}

#[test]
fn a_repeated_add_returns_the_same_address() {
    let mut s = state_with(3);
    let first = reserve(&mut s, &key(1), None, 0).unwrap();
    let again = reserve(&mut s, &key(1), None, 0).unwrap();
    assert_eq!((first.address, first.new, again.new), (again.address, true, false));
}

#[test]
fn reservation_rotates_instead_of_reusing_a_just_released_address() {
    let mut s = state_with(3);
    let a = reserve(&mut s, &key(1), None, 0).unwrap().address;
    release(&mut s, &key(1));
    let b = reserve(&mut s, &key(2), None, 0).unwrap().address;
    assert_ne!(a, b);
}

#[test]
fn an_exhausted_pool_is_code_101() {
    let mut s = state_with(2);
    reserve(&mut s, &key(1), None, 0).unwrap();
    reserve(&mut s, &key(2), None, 0).unwrap();
    assert_eq!(reserve(&mut s, &key(3), None, 0).unwrap_err().code(), 101);
}

#[test]
fn requested_addresses_must_be_free_pool_members() {
    let mut s = state_with(3);
    let got = reserve(&mut s, &key(1), Some((addr(2), Some(16))), 0).unwrap();
    assert_eq!(got.address, addr(2));
    let taken = reserve(&mut s, &key(2), Some((addr(2), None)), 0).unwrap_err();
    assert_eq!(taken.code(), 102);
    assert!(taken.to_string().contains("c1"), "names the holder: {taken}");
    assert_eq!(reserve(&mut s, &key(2), Some((addr(50), None)), 0).unwrap_err().code(), 102);
    assert_eq!(reserve(&mut s, &key(2), Some((addr(1), Some(24))), 0).unwrap_err().code(), 102);
    let primary = "10.240.0.4".parse().unwrap();
    assert_eq!(reserve(&mut s, &key(2), Some((primary, None)), 0).unwrap_err().code(), 102);
    assert_eq!(reserve(&mut s, &key(1), Some((addr(0), None)), 0).unwrap_err().code(), 102, "cannot switch");
}

#[test]
fn a_refresh_keeps_addresses_in_use_even_when_the_source_drops_them() {
    let mut s = state_with(3);
    let a = reserve(&mut s, &key(1), None, 0).unwrap().address;
    assert!(refresh(&mut s, pool_of([2]), 2));
    assert_eq!(s.holding(&key(1)).map(|h| h.0), Some(a));
    assert_eq!(s.orphans(), vec![a]);
    assert_eq!(reserve(&mut s, &key(1), None, 0).unwrap().address, a, "a repeated ADD still works");
}

#[test]
fn gc_releases_only_unlisted_attachments_of_its_own_network() {
    let mut s = state_with(4);
    reserve(&mut s, &key(1), None, 0).unwrap();
    reserve(&mut s, &key(2), None, 0).unwrap();
    let other = Key { network: "other".into(), ..key(3) };
    reserve(&mut s, &other, None, 0).unwrap();
    let valid = HashSet::from([("c1".to_string(), "eth0".to_string())]);
    let released = collect_garbage(&mut s, "vnet", &valid);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].1, key(2));
    assert!(s.holding(&key(1)).is_some() && s.holding(&other).is_some());
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize, Option<usize>),
    Del(usize),
    Gc(Vec<bool>),
    Refresh(Vec<bool>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12usize, proptest::option::weighted(0.3, 0..10usize)).prop_map(|(k, r)| Op::Add(k, r)),
        3 => (0..12usize).prop_map(Op::Del),
        1 => proptest::collection::vec(any::<bool>(), 12).prop_map(Op::Gc),
        1 => proptest::collection::vec(any::<bool>(), 10).prop_map(Op::Refresh),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_sequence_of_operations_keeps_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = state_with(8);
        // The model: key index → address, maintained from the operations' documented meaning.
        let mut model: BTreeMap<usize, IpAddr> = BTreeMap::new();
        for op in ops {
            let before = s.clone();
            match op {
                Op::Add(k, req) => {
                    let requested = req.map(|r| (addr(r), None));
                    match reserve(&mut s, &key(k), requested, 0) {
                        Ok(lease) => {
                            if let Some(&held) = model.get(&k) {
                                prop_assert_eq!(lease.address, held);
                                prop_assert!(!lease.new);
                            } else {
                                prop_assert!(before.in_pool(lease.address).is_some(), "new leases come from the pool");
                                prop_assert!(!before.allocations.contains_key(&lease.address), "never a held address");
                                if let Some(r) = req { prop_assert_eq!(lease.address, addr(r)); }
                                model.insert(k, lease.address);
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(&s, &before, "a failed reserve changes nothing");
                            let free = before.pool.iter().flat_map(|p| &p.addresses)
                                .filter(|a| !before.allocations.contains_key(a)).count();
                            match (e.code(), req) {
                                (101, None) => prop_assert_eq!(free, 0, "exhausted only when nothing is free"),
                                (102, Some(r)) => prop_assert!(model.contains_key(&k)
                                    || before.in_pool(addr(r)).is_none()
                                    || before.allocations.contains_key(&addr(r))),
                                (code, _) => prop_assert!(false, "unexpected error {code}: {e}"),
                            }
                        }
                    }
                }
                Op::Del(k) => {
                    prop_assert_eq!(release(&mut s, &key(k)), model.remove(&k));
                }
                Op::Gc(mask) => {
                    let valid: HashSet<(String, String)> = (0..12).filter(|i| mask[*i])
                        .map(|i| (format!("c{i}"), "eth0".to_string())).collect();
                    collect_garbage(&mut s, "vnet", &valid);
                    model.retain(|k, _| mask[*k]);
                }
                Op::Refresh(mask) => {
                    refresh(&mut s, pool_of((0..10).filter(|i| mask[*i])), 3);
                    prop_assert_eq!(&s.allocations, &before.allocations, "a refresh never drops an address in use");
                }
            }
            // The state equals the model, and no key holds two addresses.
            let actual: BTreeMap<usize, IpAddr> = s.allocations.iter()
                .map(|(ip, a)| (a.key.container_id[1..].parse::<usize>().unwrap(), *ip)).collect();
            prop_assert_eq!(actual.len(), s.allocations.len(), "a key holds at most one address");
            prop_assert_eq!(&actual, &model);
        }
    }
}
