//! vnet-bench: ADD/DEL latency of azure-vnet (+ azure-vnet-ipam) in bridge mode (with its MAC
//! translation) and in transparent mode, each against Debian's bridge (+ host-local) on the
//! same node, for 50 and 250 pods, sequential and 8-way concurrent; each call a real attachment
//! of a pod namespace inside a node namespace whose NIC is on a VNet with Azure's rules.
//! Printed as p50/p99 and ratios.

use std::path::{Path, PathBuf};

use bench::args::{number, numbers};
use bench::exec::{call, compare, header, Plugin};
use bench::node::{netns_path, sibling, BenchNode};
use serde_json::json;

const BRIDGE: &str = "/usr/lib/cni/bridge";

struct Options {
    sizes: Vec<usize>,
    workers: usize,
    rounds: usize,
    modes: Vec<String>,
    inner: Option<(PathBuf, String)>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        sizes: vec![50, 250],
        workers: 8,
        rounds: 3,
        modes: vec!["bridge".into(), "transparent".into()],
        inner: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pods" => o.sizes = numbers("--pods", args.next(), 1..=250)?,
            "--workers" => o.workers = number("--workers", args.next(), 1..=64)?,
            "--rounds" => o.rounds = number("--rounds", args.next(), 1..=100)?,
            "--modes" => {
                let v = args.next().ok_or("--modes needs a list like bridge,transparent")?;
                o.modes = v.split(',').map(str::to_string).collect();
                if let Some(bad) = o.modes.iter().find(|m| !["bridge", "transparent"].contains(&m.as_str())) {
                    return Err(format!("--modes: {bad:?} is not bridge or transparent"));
                }
            }
            "--inner" => {
                let dir = args.next().ok_or("--inner needs a dir")?;
                let prefix = args.next().ok_or("--inner needs a pod prefix")?;
                o.inner = Some((PathBuf::from(dir), prefix));
            }
            "--help" | "-h" => {
                println!(
                    "vnet-bench [--pods 50,250 (each 1..250)] [--workers 8 (1..64)] [--rounds 3 (1..100)] [--modes bridge,transparent]\n\
                     Prints ADD/DEL p50/p99 of azure-vnet in each mode and of Debian's bridge+host-local on the\n\
                     same node (its NIC on a VNet with Azure's rules), and their ratio, over --rounds rounds\n\
                     with the two plugins' order alternating. Needs root."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(o)
}

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("vnet-bench: {e}");
        std::process::exit(2)
    });
    let result = match &opts.inner {
        Some((dir, prefix)) => measure(&opts, dir, prefix),
        None => opts.modes.iter().try_for_each(|mode| {
            // One node per mode: a node runs one mode.
            let most = opts.sizes.iter().copied().max().unwrap_or(1);
            BenchNode::new(&format!("azvb{}", &mode[..1]), most).and_then(|node| {
                let sizes: Vec<String> = opts.sizes.iter().map(|s| s.to_string()).collect();
                let prefix = node.pods[0].trim_end_matches("p0").to_string() + "p";
                let args = [
                    "--pods",
                    &sizes.join(","),
                    "--workers",
                    &opts.workers.to_string(),
                    "--rounds",
                    &opts.rounds.to_string(),
                    "--modes",
                    mode,
                    "--inner",
                    &node.dir.display().to_string(),
                    &prefix,
                ];
                node.run_inside(&args.map(String::from))
            })
        }),
    };
    if let Err(e) = result {
        eprintln!("vnet-bench: {e}");
        std::process::exit(1);
    }
}

fn measure(opts: &Options, dir: &Path, prefix: &str) -> Result<(), String> {
    if !Path::new(BRIDGE).exists() {
        return Err(format!("{BRIDGE} missing: apt-get install containernetworking-plugins"));
    }
    let ours_dir = sibling("azure-vnet")?.parent().ok_or("no bin dir")?.display().to_string();
    let mode = opts.modes.first().map_or("bridge", String::as_str);
    let ours = json!({"cniVersion": "1.0.0", "name": "azure", "type": "azure-vnet", "mode": mode,
        "master": "eth0", "bridge": "azure0", "stateFile": dir.join("vnet.json"),
        "logFile": std::env::var("VNET_BENCH_LOG_FILE").map_or_else(|_| dir.join("vnet.log"), PathBuf::from),
        "logLevel": std::env::var("VNET_BENCH_LOG").unwrap_or_else(|_| "info".into()),
        "ipam": {"type": "azure-vnet-ipam", "stateFile": dir.join("ipam.json"), "logFile": dir.join("ipam.log")}});
    let reference = json!({"cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cnibr0",
        "isGateway": true, "ipam": {"type": "host-local", "dataDir": dir.join("hl"), "ranges": [[{
        "subnet": "10.241.0.0/16", "rangeStart": "10.241.0.5", "rangeEnd": "10.241.0.254", "gateway": "10.241.0.1"}]]}});
    let plugins = [
        Plugin {
            name: if mode == "bridge" { "azure-vnet bridge" } else { "azure-vnet transparent" },
            binary: sibling("azure-vnet")?,
            config: ours,
            cni_path: ours_dir,
        },
        Plugin {
            name: "bridge+host-local",
            binary: BRIDGE.into(),
            config: reference,
            cni_path: "/usr/lib/cni".into(),
        },
    ];
    let most = opts.sizes.iter().copied().max().unwrap_or(1);
    let pods: Vec<(String, PathBuf)> =
        (0..most).map(|i| (format!("{prefix}{i}"), netns_path(&format!("{prefix}{i}")))).collect();
    // Warm-up: the first ADD of each sets up its bridge; that one-off is not what we compare.
    for p in &plugins {
        call(p, "ADD", &pods[0].0, &pods[0].1)?;
        call(p, "DEL", &pods[0].0, &pods[0].1)?;
    }
    println!(
        "vnet-bench, {mode} mode: real pod attachments inside a node namespace on an Azure-faithful VNet, \
         exec'd plugin wall time, {} round(s) in alternating order",
        opts.rounds
    );
    header();
    for &size in &opts.sizes {
        for workers in [1, opts.workers] {
            compare(&plugins, &pods[..size], workers, opts.rounds)?;
        }
    }
    Ok(())
}
