//! Prometheus metrics (Azure NPM's names and units where it has them) and the health endpoints,
//! served by a small HTTP/1.0 server on its own threads: `GET /metrics` (everything),
//! `/node-metrics` and `/cluster-metrics` (Azure's split, for its dashboards and scrape
//! configs), `/healthz` (the process is alive), `/readyz` (200 after the first successful
//! program of the kernel; the body lists what the agent refuses and what the source keeps from
//! before).
//! Labels are bounded sets.
//!
//! The server is written for a port anyone on the node can reach: at most `MAX_CLIENTS`
//! requests in flight (more are closed at once), each given `REQUEST_DEADLINE` to send a request
//! line of at most `MAX_REQUEST_LINE` bytes; anything else gets a 4xx, never a panic, and never
//! holds memory beyond that line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Policies programmed.
pub const POLICIES: &str = "npm_num_policies";
/// Rules in the agent's chains (entry chain included), as `iptables-save` lists them.
pub const IPTABLES_RULES: &str = "npm_num_iptables_rules";
/// Sets the agent owns (the hold set included), and their IPv4 members.
pub const IPSETS: &str = "npm_num_ipsets";
pub const IPSET_ENTRIES: &str = "npm_num_ipset_entries";
/// The same for the nftables backend: rules of the agent's table, its sets and maps, and their
/// elements (as `nft list table inet azure-npm` shows them).
pub const NFT_RULES: &str = "npm_num_nftables_rules";
pub const NFT_SETS: &str = "npm_num_nftables_sets";
pub const NFT_ELEMENTS: &str = "npm_num_nftables_elements";
/// 1, labelled with the backend the agent programs (`iptables` or `nftables`).
pub const DATAPLANE: &str = "npm_dataplane_info";
/// Times the evidence the backend was chosen by changed while the agent ran (reported, never
/// followed: a restart chooses again).
pub const EVIDENCE_CHANGES: &str = "npm_dataplane_evidence_changes_total";
/// Pods the agent's view of the cluster holds.
pub const PODS_WATCHED: &str = "npm_pods_watched";
/// Azure's controller timings, in milliseconds as Azure has them (here: from the event's arrival
/// to the kernel programmed), labelled `had_error`; the controller ones also `operation`
/// (`create`, `update`, `delete`). A policy's creation counts in `npm_add_policy_exec_time`,
/// its updates and deletions in `npm_controller_policy_exec_time`.
pub const ADD_POLICY_MS: &str = "npm_add_policy_exec_time";
pub const CONTROLLER_POLICY_MS: &str = "npm_controller_policy_exec_time";
pub const CONTROLLER_POD_MS: &str = "npm_controller_pod_exec_time";
pub const CONTROLLER_NAMESPACE_MS: &str = "npm_controller_namespace_exec_time";
/// Seconds from a batch of changes to the kernel programmed, by `trigger`
/// (snapshot, pod, namespace, policy, node, repair, mixed).
pub const APPLY_SECONDS: &str = "npm_apply_duration_seconds";
/// Applies that failed, by `trigger` and `kind` (`Error::metric_label`).
pub const APPLY_FAILURES: &str = "npm_apply_failures_total";
/// Failures by `kind` (`Error::metric_label`), wherever they happened.
pub const ERRORS: &str = "npm_errors_total";
/// Drift found and repaired by periodic verification, by `what` (sets, rules, hooks).
pub const DRIFT_REPAIRS: &str = "npm_drift_repairs_total";
/// Objects skipped because they do not convert, by `kind` (Pod, Namespace, NetworkPolicy, Node).
pub const INVALID_OBJECTS: &str = "npm_invalid_objects_total";
/// Policies left out because the node is at a limit (`policy_compiler::limits`).
pub const REFUSED_POLICIES: &str = "npm_refused_policies";
/// Relists of the cluster source (410 Gone, reconnects), by `kind`.
pub const RELISTS: &str = "npm_source_relists_total";

/// The rule, set and entry gauges of a backend.
pub fn counts_of(backend: &str) -> (&'static str, &'static str, &'static str) {
    match backend {
        "nftables" => (NFT_RULES, NFT_SETS, NFT_ELEMENTS),
        _ => (IPTABLES_RULES, IPSETS, IPSET_ENTRIES),
    }
}

/// Latency buckets (seconds): 100 µs to 10 s.
const BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0];
/// The same in milliseconds, for Azure's `_exec_time` metrics.
const MS_BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 500.0, 1000.0, 10000.0];

pub const MAX_CLIENTS: usize = 32;
pub const MAX_REQUEST_LINE: usize = 4096;
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// The recorder's builder, with the buckets above.
pub fn builder() -> Result<PrometheusBuilder, String> {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_exec_time".into()), &MS_BUCKETS))
        .map_err(|e| e.to_string())
}

/// Installs the global recorder (once per process).
pub fn install() -> Result<PrometheusHandle, String> {
    builder()?.install_recorder().map_err(|e| format!("installing the metrics recorder: {e}"))
}

/// What `/readyz` reports besides programmed or not.
#[derive(Clone, Default)]
pub struct Health {
    pub ready: Arc<AtomicBool>,
    /// One line per policy refused or evidence changed (set by the agent).
    pub notes: Arc<Mutex<Vec<String>>>,
    /// One line per file or object the source keeps from before or skips.
    pub kept: crate::source::Kept,
}

/// Serves the endpoints until the process ends. Binding happens before the call returns, so a
/// taken port is reported at startup.
pub fn serve(addr: SocketAddr, handle: PrometheusHandle, health: Health) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                busy.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!("metrics: {MAX_CLIENTS} requests in flight; closing a new connection");
                continue;
            }
            let (handle, health, busy) = (handle.clone(), health.clone(), busy.clone());
            let spawned = std::thread::Builder::new().name("metrics-client".into()).spawn(move || {
                if let Err(e) = answer(stream, &handle, &health) {
                    tracing::debug!("metrics client: {e}");
                }
                busy.fetch_sub(1, Ordering::AcqRel);
            });
            if let Err(e) = spawned {
                tracing::warn!("metrics: cannot start a client thread: {e}");
            }
        }
    })?;
    Ok(bound)
}

/// Reads the request line: at most `MAX_REQUEST_LINE` bytes, within `REQUEST_DEADLINE`.
fn request_line(stream: &mut TcpStream) -> Result<String, (&'static str, &'static str)> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let left = REQUEST_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(("408 Request Timeout", "the request line took too long\n"));
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(("400 Bad Request", "no request line\n")),
            Ok(n) => n,
            Err(_) => return Err(("408 Request Timeout", "the request line took too long\n")),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            return String::from_utf8(buf)
                .map_err(|_| ("400 Bad Request", "the request line is not UTF-8\n"));
        }
        if buf.len() > MAX_REQUEST_LINE {
            return Err(("414 URI Too Long", "the request line is too long\n"));
        }
    }
}

fn answer(mut stream: TcpStream, handle: &PrometheusHandle, health: &Health) -> std::io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let (status, body) = match request_line(&mut stream) {
        Err((status, body)) => (status, body.to_string()),
        Ok(line) => route(&line, handle, health),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn route(line: &str, handle: &PrometheusHandle, health: &Health) -> (&'static str, String) {
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "only GET\n".into());
    }
    // Scrapers may add a query (`?format=...`); it changes nothing here.
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => ("200 OK", handle.render()),
        "/node-metrics" => ("200 OK", only(&handle.render(), |name| !is_cluster_metric(name))),
        "/cluster-metrics" => ("200 OK", only(&handle.render(), is_cluster_metric)),
        "/healthz" => ("200 OK", "ok\n".into()),
        "/readyz" => {
            let mut lines = health.notes.lock().map(|n| n.clone()).unwrap_or_default();
            lines.extend(health.kept.lines());
            let notes: String = lines.iter().map(|l| format!("{l}\n")).collect();
            if health.ready.load(Ordering::Relaxed) {
                ("200 OK", format!("ok\n{notes}"))
            } else {
                ("503 Service Unavailable", format!("not programmed yet\n{notes}"))
            }
        }
        _ => ("404 Not Found", "try /metrics, /node-metrics, /cluster-metrics, /healthz or /readyz\n".into()),
    }
}

/// Azure serves the state counts on `/cluster-metrics` and the timings on `/node-metrics`.
fn is_cluster_metric(name: &str) -> bool {
    name.starts_with("npm_num_") || name == PODS_WATCHED || name == REFUSED_POLICIES
}

/// The families of a Prometheus text exposition whose name passes `keep`. A family's samples
/// follow its HELP and TYPE lines (a histogram's `_bucket`, `_sum` and `_count` among them), so
/// a sample belongs to the family last named when its name starts with it.
fn only(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut named = "";
    for line in text.lines() {
        let family = match line.strip_prefix("# ") {
            Some(comment) => {
                named = comment.split_whitespace().nth(1).unwrap_or("");
                named
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if !named.is_empty() && name.starts_with(named) {
                    named
                } else {
                    name
                }
            }
        };
        if !line.is_empty() && keep(family) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_and_cluster_paths_split_families_whole() {
        let text = "# HELP npm_num_policies x\n# TYPE npm_num_policies gauge\nnpm_num_policies 3\n\n\
                    # TYPE npm_add_policy_exec_time histogram\nnpm_add_policy_exec_time_bucket{le=\"1\"} 1\n\
                    npm_add_policy_exec_time_sum 0.5\nnpm_add_policy_exec_time_count 1\n";
        let cluster = only(text, is_cluster_metric);
        assert_eq!(cluster, "# HELP npm_num_policies x\n# TYPE npm_num_policies gauge\nnpm_num_policies 3\n");
        let node = only(text, |n| !is_cluster_metric(n));
        assert_eq!(node.lines().count(), 4);
        assert!(node.contains("npm_add_policy_exec_time_count 1"));
    }
}
