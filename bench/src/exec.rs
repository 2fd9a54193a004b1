//! Timed plugin calls, one exec each, as a runtime makes them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stats::percentile_ms;

pub struct Plugin {
    pub name: &'static str,
    pub binary: PathBuf,
    pub config: Value,
    pub cni_path: String,
}

/// One exec of the plugin for container `container` in `netns`, timed from spawn to exit.
pub fn call(p: &Plugin, command: &str, container: &str, netns: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new(&p.binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &p.cni_path)
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

/// Runs `command` for `targets` (container id, netns path) on `workers` threads.
pub fn phase(
    p: &Plugin,
    command: &str,
    targets: &[(String, PathBuf)],
    workers: usize,
) -> Result<Vec<Duration>, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    targets
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .map(|(c, ns)| call(p, command, c, ns))
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

/// Measures ADD then DEL for every plugin, `rounds` times with the plugins' order alternating
/// (a machine that speeds up or slows down during the run weighs on both sides alike), and
/// prints p50/p99 over all rounds' calls and the ratios (the first plugin is ours).
pub fn compare(
    plugins: &[Plugin],
    targets: &[(String, PathBuf)],
    workers: usize,
    rounds: usize,
) -> Result<(), String> {
    let mode = if workers == 1 { "sequential".to_string() } else { format!("{workers}-way") };
    // samples[command][plugin]
    let mut samples = vec![vec![Vec::new(); plugins.len()]; 2];
    for round in 0..rounds.max(1) {
        let mut order: Vec<usize> = (0..plugins.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            for (slot, command) in ["ADD", "DEL"].iter().enumerate() {
                samples[slot][i].extend(phase(&plugins[i], command, targets, workers)?);
                settle();
            }
        }
    }
    for (slot, command) in ["ADD", "DEL"].iter().enumerate() {
        let label = format!("{command} {} {mode}", targets.len());
        let figures: Vec<(f64, f64)> =
            samples[slot].iter().map(|lat| (percentile_ms(lat, 50.0), percentile_ms(lat, 99.0))).collect();
        for (p, (p50, p99)) in plugins.iter().zip(&figures) {
            println!("{label:<22} {:<28} {p50:>9.2} {p99:>9.2}", p.name);
        }
        let (ours, reference) = (figures[0], figures[1]);
        println!(
            "{label:<22} {:<28} {:>8.2}x {:>8.2}x",
            "ratio ours/reference",
            ours.0 / reference.0,
            ours.1 / reference.1
        );
    }
    Ok(())
}

/// Waits (up to 10 s) until azure-vnet's detached reaper has deleted the veths its DELs parked
/// (`azq*` links in this namespace), so that work is not timed as part of the next phase.
fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let links = Command::new("ip").args(["-o", "link", "show"]).output();
        let parked = links.is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split(": ").nth(1).is_some_and(|name| name.starts_with("azq")))
        });
        if !parked {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn header() {
    println!("{:<22} {:<28} {:>9} {:>9}", "phase", "plugin", "p50 ms", "p99 ms");
}
