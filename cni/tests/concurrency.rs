//! Concurrency: 8 processes at a time run 2,000 random ADD / DEL / repeated-ADD calls against one
//! state file. No two live containers ever share an address, and the end state equals the model.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use common::Node;
use rand::{rngs::StdRng, Rng, SeedableRng};

const WORKERS: usize = 8;
const CALLS: usize = 2000;
const KEYS_PER_WORKER: usize = 12;

/// A span during which `container` surely held `address`: from its ADD returning to its DEL starting.
struct Held {
    container: String,
    address: String,
    from: Instant,
    until: Instant,
}

#[test]
fn parallel_processes_never_share_an_address_and_end_in_the_model_state() {
    let node = Arc::new(Node::new("storm", 250));
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let node = node.clone();
            std::thread::spawn(move || worker(&node, w, seed.wrapping_add(w as u64)))
        })
        .collect();
    let mut held = Vec::new();
    let mut model = BTreeMap::new();
    for w in workers {
        let (h, live) = w.join().expect("worker panicked");
        held.extend(h);
        model.extend(live);
    }
    // Never two live containers with one address.
    held.sort_by_key(|h| h.from);
    for (i, a) in held.iter().enumerate() {
        for b in held[i + 1..].iter().take_while(|b| b.from < a.until) {
            assert!(
                a.address != b.address || a.container == b.container,
                "{} and {} both held {} at once",
                a.container,
                b.container,
                a.address
            );
        }
    }
    // The state file equals the model: exactly the live containers, with the addresses they got.
    let actual: BTreeMap<String, String> = node.allocations().into_iter().map(|(ip, c)| (c, ip)).collect();
    assert_eq!(actual, model);
}

fn worker(node: &Node, w: usize, seed: u64) -> (Vec<Held>, BTreeMap<String, String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let conf = node.config("1.0.0");
    let mut live: BTreeMap<String, (String, Instant)> = BTreeMap::new();
    let mut held = Vec::new();
    for _ in 0..CALLS / WORKERS {
        let container = format!("w{w}-c{}", rng.gen_range(0..KEYS_PER_WORKER));
        let is_live = live.contains_key(&container);
        // Live keys: DEL or a repeated ADD; others: ADD, or a DEL of an unknown key.
        let add = if is_live { rng.gen_bool(0.3) } else { rng.gen_bool(0.85) };
        if add {
            let reply = node.ipam_call("ADD", &container, &conf);
            let address = reply.address().split('/').next().unwrap().to_string();
            match live.get(&container) {
                Some((prev, _)) => assert_eq!(&address, prev, "a repeated ADD returns the same address"),
                None => {
                    live.insert(container, (address, Instant::now()));
                }
            }
        } else {
            let start = Instant::now();
            let reply = node.ipam_call("DEL", &container, &conf);
            assert!(reply.ok, "DEL {container}: {}", reply.json);
            if let Some((address, from)) = live.remove(&container) {
                held.push(Held { container, address, from, until: start });
            }
        }
    }
    let end = Instant::now();
    let mut model = BTreeMap::new();
    for (container, (address, from)) in live {
        held.push(Held { container: container.clone(), address: address.clone(), from, until: end });
        model.insert(container, address);
    }
    (held, model)
}
