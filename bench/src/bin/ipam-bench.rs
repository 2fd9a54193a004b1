//! ipam-bench: ADD/DEL latency of azure-vnet-ipam vs Debian's host-local (same pool size),
//! 250 sequential and 8-way concurrent calls, printed as p50/p99 and ratios. Needs root: it
//! builds one network namespace (a node with the emulated host agent) and removes it after.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::stats::percentile_ms;
use serde_json::{json, Value};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const MAC: &str = "00:0d:3a:00:00:01";

struct Options {
    calls: usize,
    workers: usize,
    inner: Option<PathBuf>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options { calls: 250, workers: 8, inner: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            args.next().and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number"))
        };
        match a.as_str() {
            "--calls" => o.calls = num("--calls")?.clamp(1, 250),
            "--workers" => o.workers = num("--workers")?.max(1),
            "--inner" => o.inner = Some(PathBuf::from(args.next().ok_or("--inner needs a dir")?)),
            "--help" | "-h" => {
                println!("ipam-bench [--calls N (1..250, default 250)] [--workers W (default 8)]\n\
                          Prints ADD/DEL p50/p99 of azure-vnet-ipam and host-local and their ratio. Needs root.");
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
        None => outer(&opts),
    };
    if let Err(e) = result {
        eprintln!("ipam-bench: {e}");
        std::process::exit(1);
    }
}

/// Everything the bench created; removed on drop, also when a step fails.
struct Lab {
    netns: String,
    dir: PathBuf,
    emulator: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.emulator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found; build the workspace first (cargo build --release --workspace)",
            path.display()
        ))
    }
}

fn outer(opts: &Options) -> Result<(), String> {
    let uid = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !uid.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        return Err("needs root (it builds a network namespace)".into());
    }
    if !Path::new(HOST_LOCAL).exists() {
        return Err(format!("{HOST_LOCAL} missing: apt-get install containernetworking-plugins"));
    }
    let emulator = sibling("azure-hostagent-emulator")?;
    sibling("azure-vnet-ipam")?;
    let id = std::process::id();
    let mut lab = Lab {
        netns: format!("azbench-{id}"),
        dir: std::env::temp_dir().join(format!("azbench-{id}")),
        emulator: None,
    };
    std::fs::create_dir_all(&lab.dir).map_err(|e| e.to_string())?;
    let n = lab.netns.clone();
    sh(&["ip", "netns", "add", &n])?;
    sh(&["ip", "-n", &n, "link", "set", "lo", "up"])?;
    sh(&["ip", "-n", &n, "link", "add", "eth0", "address", MAC, "type", "veth", "peer", "name", "vnet0"])?;
    sh(&["ip", "-n", &n, "link", "set", "eth0", "up"])?;
    sh(&["ip", "-n", &n, "addr", "add", "10.240.0.4/16", "dev", "eth0"])?;
    sh(&["ip", "-n", &n, "addr", "add", "168.63.129.16/32", "dev", "lo"])?;
    let xml = lab.dir.join("interfaces.xml");
    let mut doc = String::from(
        "<Interfaces><Interface MacAddress=\"000D3A000001\" IsPrimary=\"true\">\
        <IPSubnet Prefix=\"10.240.0.0/16\"><IPAddress Address=\"10.240.0.4\" IsPrimary=\"true\"/>",
    );
    for last in 5..=254 {
        doc += &format!("<IPAddress Address=\"10.240.0.{last}\" IsPrimary=\"false\"/>");
    }
    doc += "</IPSubnet></Interface></Interfaces>";
    std::fs::write(&xml, doc).map_err(|e| e.to_string())?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &n])
        .arg(&emulator)
        .args(["--listen", "168.63.129.16:80", "--interfaces"])
        .arg(&xml)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line);
    lab.emulator = Some(child);
    if !line.starts_with("listening") {
        return Err("host-agent emulator did not start".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = Command::new("ip")
        .args(["netns", "exec", &n])
        .arg(exe)
        .args(["--calls", &opts.calls.to_string(), "--workers", &opts.workers.to_string(), "--inner"])
        .arg(&lab.dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("measurement failed".into());
    }
    Ok(())
}

struct Plugin {
    name: &'static str,
    binary: PathBuf,
    config: Value,
}

fn plugins(dir: &Path) -> Result<Vec<Plugin>, String> {
    let azure = json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": {
        "type": "azure-vnet-ipam", "stateFile": dir.join("az/state.json"), "logFile": dir.join("az/ipam.log")}});
    let host_local = json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": {
        "type": "host-local", "dataDir": dir.join("hl"), "ranges": [[{"subnet": "10.240.0.0/16",
        "rangeStart": "10.240.0.5", "rangeEnd": "10.240.0.254", "gateway": "10.240.0.1"}]]}});
    Ok(vec![
        Plugin { name: "azure-vnet-ipam", binary: sibling("azure-vnet-ipam")?, config: azure },
        Plugin { name: "host-local", binary: PathBuf::from(HOST_LOCAL), config: host_local },
    ])
}

/// One exec of the plugin, timed from spawn to exit.
fn call(p: &Plugin, command: &str, container: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new(&p.binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", "/var/run/netns/none")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", p.binary.display()))?;
    let _ = child.stdin.take().map(|mut s| s.write_all(p.config.to_string().as_bytes()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{} {command} {container}: {}", p.name, String::from_utf8_lossy(&out.stdout)));
    }
    Ok(took)
}

/// Runs `command` for containers 0..calls on `workers` threads; returns every latency.
fn phase(p: &Plugin, command: &str, calls: usize, workers: usize) -> Result<Vec<Duration>, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    (w..calls)
                        .step_by(workers)
                        .map(|i| call(p, command, &format!("c{i}")))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| "worker panicked".to_string())??);
        }
        Ok(all)
    })
}

fn measure(opts: &Options, dir: &Path) -> Result<(), String> {
    let plugins = plugins(dir)?;
    println!(
        "ipam-bench: {} calls per phase, pool of 250 addresses, exec'd plugin wall time, state under {} \
         (set TMPDIR to compare filesystems: Azure's default /var/run is tmpfs)",
        opts.calls,
        dir.display()
    );
    println!("{:<26} {:<16} {:>9} {:>9}", "phase", "plugin", "p50 ms", "p99 ms");
    for workers in [1, opts.workers] {
        let mode = if workers == 1 { "sequential".to_string() } else { format!("{workers}-way") };
        for command in ["ADD", "DEL"] {
            let label = format!("{command} {} {mode}", opts.calls);
            let mut figures = Vec::new();
            for p in &plugins {
                let lat = phase(p, command, opts.calls, workers)?;
                let (p50, p99) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));
                println!("{label:<26} {:<16} {p50:>9.2} {p99:>9.2}", p.name);
                figures.push((p50, p99));
            }
            let (ours, reference) = (figures[0], figures[1]);
            println!(
                "{label:<26} {:<16} {:>8.2}x {:>8.2}x",
                "ratio az/hl",
                ours.0 / reference.0,
                ours.1 / reference.1
            );
        }
    }
    Ok(())
}
