//! Running commands and long-lived processes inside the lab's namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command; its stderr becomes the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS args...`
pub fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs a command in a namespace.
pub fn exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Starts a process in a namespace, in its own session so it outlives this command; output
/// goes to `log`. `down` stops it with its namespace.
pub fn spawn(ns: &str, log: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    Command::new("setsid")
        .args(["ip", "netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {program} in {ns}: {e}"))?;
    Ok(())
}

/// Waits until `log` contains `needle`.
pub fn wait_log(log: &Path, needle: &str, what: &str) -> Result<(), String> {
    wait(what, Duration::from_secs(20), || std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)))
        .map_err(|e| format!("{e}; see {}", log.display()))
}

pub fn wait(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs `f` on a thread inside namespace `ns` (its sockets live there).
pub fn inside<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {path}: {e}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| "a thread inside the lab panicked".to_string())?
}

/// `GET path` from `127.0.0.1:port` inside `ns`: (status line, body).
pub fn http_get(ns: &str, port: u16, path: &str) -> Result<(String, String), String> {
    http_get_from(ns, std::net::Ipv4Addr::LOCALHOST.into(), port, path)
}

/// `GET path` from `address:port`, connecting from inside `ns`: (status line, body).
pub fn http_get_from(
    ns: &str,
    address: std::net::IpAddr,
    port: u16,
    path: &str,
) -> Result<(String, String), String> {
    let path = path.to_string();
    inside(ns, move || -> Result<(String, String), String> {
        use std::io::{Read, Write};
        let to = std::net::SocketAddr::new(address, port);
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| format!("{to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
        Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
    })?
}

/// A binary shipped beside this one (`cargo build` puts them all in one directory).
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory for this binary")?;
    // Test binaries live one level down, in deps/.
    for candidate in [dir.join(name), dir.join("..").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(format!("{name} not found beside {} (cargo build --workspace)", me.display()))
}

/// The last `n` lines of a log, for an error message (the lab's files go with a failed `up`).
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = lines[lines.len().saturating_sub(n)..].join("\n  ");
    format!("last lines of {}:\n  {last}", log.display())
}
