//! Running `ip`, `sysctl` and `nft` inside the fabric's namespaces.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Error, Result};

fn output(mut cmd: Command, stdin: Option<&str>) -> Result<String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command { command: shown.clone(), stderr: e.to_string() })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| Error::Command { command: shown.clone(), stderr: e.to_string() })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Command { command: shown.clone(), stderr: e.to_string() })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let input = stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default();
        return Err(Error::Command { command: shown, stderr: format!("{stderr}{input}") });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    c.args(["-n", ns]).args(args);
    output(c, None)
}

/// Many `ip` commands in one process (`ip -batch`), stopping at the first failure.
pub fn ip_batch(ns: &str, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut c = Command::new("ip");
    c.args(["-n", ns, "-batch", "-"]);
    output(c, Some(&(lines.join("\n") + "\n"))).map(|_| ())
}

pub fn sysctl(ns: &str, settings: &[String]) -> Result<()> {
    let mut c = in_ns(ns, "sysctl");
    c.arg("-q").arg("-w").args(settings);
    output(c, None).map(|_| ())
}

/// One `nft -f -` transaction.
pub fn nft(ns: &str, ruleset: &str) -> Result<()> {
    let mut c = in_ns(ns, "nft");
    c.args(["-f", "-"]);
    output(c, Some(ruleset)).map(|_| ())
}

pub fn nft_list_counters(ns: &str) -> Result<String> {
    let mut c = in_ns(ns, "nft");
    c.args(["list", "counters"]);
    output(c, None)
}
