//! ipam-bench: ADD/DEL latency of azure-vnet-ipam vs Debian's host-local (same pool size),
//! 250 sequential and 8-way concurrent calls, printed as p50/p99 and ratios. Needs root: it
//! builds one network namespace (a node with the emulated host agent) and removes it after.

use std::path::{Path, PathBuf};

use bench::args::number;
use bench::exec::{compare, header, Plugin};
use bench::node::{sibling, BenchNode};
use serde_json::json;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

struct Options {
    calls: usize,
    workers: usize,
    rounds: usize,
    inner: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options { calls: 250, workers: 8, rounds: 3, inner: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => o.calls = number("--calls", args.next(), 1..=250)?,
            "--workers" => o.workers = number("--workers", args.next(), 1..=64)?,
            "--rounds" => o.rounds = number("--rounds", args.next(), 1..=100)?,
            "--inner" => o.inner = Some(PathBuf::from(args.next().ok_or("--inner needs a dir")?)),
            "--help" | "-h" => {
                println!(
                    "ipam-bench [--calls N (1..250, default 250)] [--workers W (1..64, default 8)] [--rounds R (1..100, default 3)]\n\
                     Prints ADD/DEL p50/p99 of azure-vnet-ipam and host-local and their ratio, over R rounds\n\
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
        eprintln!("ipam-bench: {e}");
        std::process::exit(2)
    });
    let result = match &opts.inner {
        Some(dir) => measure(&opts, dir),
        None => BenchNode::new("azbench", 0).and_then(|node| {
            let dir = node.dir.display().to_string();
            let args = [
                "--calls",
                &opts.calls.to_string(),
                "--workers",
                &opts.workers.to_string(),
                "--rounds",
                &opts.rounds.to_string(),
                "--inner",
                &dir,
            ];
            node.run_inside(&args.map(String::from))
        }),
    };
    if let Err(e) = result {
        eprintln!("ipam-bench: {e}");
        std::process::exit(1);
    }
}

fn measure(opts: &Options, dir: &Path) -> Result<(), String> {
    if !Path::new(HOST_LOCAL).exists() {
        return Err(format!("{HOST_LOCAL} missing: apt-get install containernetworking-plugins"));
    }
    let azure = json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": {
        "type": "azure-vnet-ipam", "stateFile": dir.join("az/state.json"), "logFile": dir.join("az/ipam.log")}});
    let host_local = json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": {
        "type": "host-local", "dataDir": dir.join("hl"), "ranges": [[{"subnet": "10.240.0.0/16",
        "rangeStart": "10.240.0.5", "rangeEnd": "10.240.0.254", "gateway": "10.240.0.1"}]]}});
    let plugins = [
        Plugin {
            name: "azure-vnet-ipam",
            binary: sibling("azure-vnet-ipam")?,
            config: azure,
            cni_path: "/".into(),
        },
        Plugin { name: "host-local", binary: HOST_LOCAL.into(), config: host_local, cni_path: "/".into() },
    ];
    println!(
        "ipam-bench: {} calls per phase, {} round(s) in alternating order, pool of 250 addresses, exec'd \
         plugin wall time, state under {} (set TMPDIR to compare filesystems: Azure's default /var/run is tmpfs)",
        opts.calls,
        opts.rounds,
        dir.display()
    );
    header();
    let targets: Vec<(String, PathBuf)> =
        (0..opts.calls).map(|i| (format!("c{i}"), "/var/run/netns/none".into())).collect();
    for workers in [1, opts.workers] {
        compare(&plugins, &targets, workers, opts.rounds)?;
    }
    Ok(())
}
