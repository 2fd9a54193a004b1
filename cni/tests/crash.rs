//! Crash safety: plugin processes SIGKILLed at random points of ADD and DEL. The state file is
//! always parseable; after the runtime's retries and a GC no address has two holders and none
//! is lost for good (the whole pool can be handed out again).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{cni_env, spawn_with_stdin, Node, Reply, IPAM};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

const POOL: usize = 40;
const ROUNDS: usize = 240;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Live,
    Gone,
    /// Killed mid-call: the runtime does not know what happened.
    Unknown,
}

/// Starts a call, kills it after `delay` (if still running) and reports whether it completed.
fn call_and_kill(
    node: &Node,
    command: &str,
    container: &str,
    conf: &Value,
    delay: Duration,
) -> Option<Reply> {
    let mut cmd = node.ns.command(IPAM);
    cni_env(&mut cmd, command, container, "eth0", &node.ns.path());
    let mut child = spawn_with_stdin(cmd, conf.to_string().as_bytes());
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL; harmless if it already exited
    let out = child.wait_with_output().unwrap();
    out.status.code().map(|_| Reply::from_output(out))
}

fn assert_state_parses(node: &Node) {
    if let Ok(bytes) = std::fs::read(node.state_file()) {
        let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
        assert!(parsed.is_ok(), "state file unparseable after a kill: {}", String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn killed_calls_never_corrupt_state_nor_lose_or_share_an_address() {
    let node = Node::new("crash", POOL);
    let conf = node.config("1.1.0");
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fate: BTreeMap<String, Fate> = BTreeMap::new();
    let (mut killed, mut completed) = (0, 0);
    for round in 0..ROUNDS {
        let container = format!("c{}", rng.gen_range(0..POOL / 2));
        let add = fate.get(&container).is_none_or(|f| *f != Fate::Live) && rng.gen_bool(0.7);
        let command = if add { "ADD" } else { "DEL" };
        let delay = Duration::from_micros(rng.gen_range(0..12_000));
        match call_and_kill(&node, command, &container, &conf, delay) {
            Some(reply) => {
                completed += 1;
                assert!(reply.ok, "round {round} {command} {container}: {}", reply.json);
                fate.insert(container, if add { Fate::Live } else { Fate::Gone });
            }
            None => {
                killed += 1;
                fate.insert(container, Fate::Unknown);
            }
        }
        assert_state_parses(&node);
    }
    eprintln!("{completed} calls completed, {killed} killed mid-way");
    assert!(killed > 0 && completed > 0, "the kill delays must hit both outcomes");

    // The survivors: for each call the runtime lost track of, it retries ADD, retries DEL, or
    // gives the container up (and only GC will reclaim it).
    let mut live = BTreeSet::new();
    for (container, f) in &fate {
        match (f, rng.gen_range(0..3)) {
            (Fate::Live, _) | (Fate::Unknown, 0) => {
                node.ipam_call("ADD", container, &conf).address();
                live.insert(container.clone());
            }
            (Fate::Unknown, 1) => assert!(node.ipam_call("DEL", container, &conf).ok),
            _ => {}
        }
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!(live.iter().map(|c| json!({"containerID": c, "ifname": "eth0"})).collect::<Vec<_>>());
    assert!(node.ipam_call("GC", "", &gc).ok);

    let allocations = node.allocations();
    let holders: BTreeSet<String> = allocations.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(holders.len(), allocations.len(), "no container holds two addresses");
    assert_eq!(holders, live, "after GC exactly the live containers hold addresses");
    // No address lost for good: every other pool address can be handed out, then the pool is full.
    for i in 0..POOL - live.len() {
        node.ipam_call("ADD", &format!("refill{i}"), &conf).address();
    }
    assert_eq!(node.ipam_call("ADD", "one-too-many", &conf).code(), 101);
}
