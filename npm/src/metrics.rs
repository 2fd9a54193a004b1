//! Prometheus metrics (Azure NPM's names where it has one) and the health endpoints, served by a
//! small HTTP/1.0 loop on its own thread: `GET /metrics`, `/healthz` (the process is alive),
//! `/readyz` (200 after the first successful program of the kernel). Labels are bounded sets.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Policies programmed.
pub const POLICIES: &str = "npm_num_policies";
/// Rules in the agent's chains (entry chain included), as `iptables-save` lists them.
pub const IPTABLES_RULES: &str = "npm_num_iptables_rules";
/// Sets the agent owns, and their members.
pub const IPSETS: &str = "npm_num_ipsets";
pub const IPSET_ENTRIES: &str = "npm_num_ipset_entries";
/// Seconds to program a policy add or change into the kernel.
pub const ADD_POLICY_SECONDS: &str = "npm_add_policy_exec_time";
/// Seconds from a batch of changes to the kernel programmed, by `trigger`
/// (snapshot, pod, namespace, policy, node, repair).
pub const APPLY_SECONDS: &str = "npm_apply_duration_seconds";
/// Failures by `kind` (`Error::metric_label`).
pub const ERRORS: &str = "npm_errors_total";
/// Drift found and repaired by periodic verification, by `what` (sets, rules, hooks).
pub const DRIFT_REPAIRS: &str = "npm_drift_repairs_total";
/// Objects skipped because they do not convert, by `kind` (Pod, Namespace, NetworkPolicy, Node).
pub const INVALID_OBJECTS: &str = "npm_invalid_objects_total";
/// Relists of the cluster source (410 Gone, reconnects), by `kind`.
pub const RELISTS: &str = "npm_source_relists_total";

/// Latency buckets (seconds): 100 µs to 10 s.
const BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0];

/// Installs the global recorder (once per process).
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))
}

/// Serves the endpoints until the process ends. Binding happens before the call returns, so a
/// taken port is reported at startup.
pub fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(stream, &handle, &ready) {
                tracing::debug!("metrics client: {e}");
            }
        }
    })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, handle: &PrometheusHandle, ready: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/metrics" => ("200 OK", handle.render()),
        "/healthz" => ("200 OK", "ok\n".to_string()),
        "/readyz" if ready.load(Ordering::Relaxed) => ("200 OK", "ok\n".to_string()),
        "/readyz" => ("503 Service Unavailable", "not programmed yet\n".to_string()),
        _ => ("404 Not Found", "try /metrics, /healthz or /readyz\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
