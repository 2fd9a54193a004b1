//! The CNI protocol, owned in one place: environment, stdin, version negotiation, output.
//!
//! `dispatch` turns (env vars, stdin) into (stdout, exit code) by calling a [`Plugin`]; `run`
//! wires it to the real process. Plugins never print and never exit.

pub mod env;
pub mod error;
pub mod result;
pub mod version;

use std::collections::HashMap;
use std::io::{Read, Write};

use serde_json::{json, Map, Value};

use env::{Command, Env};
use error::{Error, Result};
use result::CniResult;
use version::Version;

/// One CNI call as a plugin sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: Env,
    pub version: Version,
    /// The network name from the config.
    pub network: String,
    /// The whole network configuration object from stdin.
    pub config: Map<String, Value>,
}

/// A container attachment the runtime still uses (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

pub trait Plugin {
    fn add(&self, req: &Request) -> Result<CniResult>;
    fn del(&self, req: &Request) -> Result<()>;
    fn check(&self, req: &Request) -> Result<()>;
    fn status(&self, req: &Request) -> Result<()>;
    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<()>;
}

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// Runs one CNI command. Never panics on bad input: every failure becomes an error object.
pub fn dispatch(vars: &HashMap<String, String>, stdin: &[u8], plugin: &dyn Plugin) -> Outcome {
    // The error object echoes the config's version when it is one we speak.
    let echo_version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .filter(|v| Version::parse(v).is_ok())
        .unwrap_or_else(|| version::CURRENT.to_string());
    match run_command(vars, stdin, plugin) {
        Ok(Some(out)) => Outcome { stdout: out.to_string(), exit_code: 0 },
        Ok(None) => Outcome { stdout: String::new(), exit_code: 0 },
        Err(e) => {
            tracing::error!(code = e.code(), "{e}");
            Outcome { stdout: e.to_json(&echo_version).to_string(), exit_code: 1 }
        }
    }
}

fn run_command(vars: &HashMap<String, String>, stdin: &[u8], plugin: &dyn Plugin) -> Result<Option<Value>> {
    let env = Env::from_vars(vars)?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": version::CURRENT,
            "supportedVersions": version::SUPPORTED,
        })));
    }
    let req = parse_request(env, stdin)?;
    let command = req.env.command;
    if command == Command::Check && !req.version.has_check() {
        return Err(Error::IncompatibleVersion(format!(
            "CHECK needs cniVersion 0.4.0 or later, config has {}",
            req.version
        )));
    }
    if matches!(command, Command::Status | Command::Gc) && !req.version.has_status_and_gc() {
        return Err(Error::IncompatibleVersion(format!(
            "STATUS and GC need cniVersion 1.1.0, config has {}",
            req.version
        )));
    }
    tracing::debug!(?command, container = %req.env.container_id, ifname = %req.env.ifname, "CNI call");
    match command {
        Command::Add => plugin.add(&req).map(|r| Some(r.render(req.version))),
        Command::Del => plugin.del(&req).map(|()| None),
        Command::Check => plugin.check(&req).map(|()| None),
        Command::Status => plugin.status(&req).map(|()| None),
        Command::Gc => {
            let valid = valid_attachments(&req.config)?;
            plugin.gc(&req, &valid).map(|()| None)
        }
        Command::Version => unreachable!("answered above"),
    }
}

fn parse_request(env: Env, stdin: &[u8]) -> Result<Request> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Decode("no network configuration on stdin".into()));
    }
    let value: Value = serde_json::from_slice(stdin)
        .map_err(|e| Error::Decode(format!("network configuration is not valid JSON: {e}")))?;
    let Value::Object(config) = value else {
        return Err(Error::Decode("network configuration must be a JSON object".into()));
    };
    let version = match config.get("cniVersion") {
        Some(Value::String(s)) => Version::parse(s)?,
        Some(_) => return Err(Error::InvalidConfig("cniVersion must be a string".into())),
        None => return Err(Error::InvalidConfig("cniVersion is required".into())),
    };
    let network = match config.get("name") {
        Some(Value::String(s)) if valid_network_name(s) => s.clone(),
        Some(Value::String(s)) => {
            return Err(Error::InvalidConfig(format!(
                "name {s:?} must contain only letters, digits, '_', '.' or '-'"
            )))
        }
        Some(_) => return Err(Error::InvalidConfig("name must be a string".into())),
        None => return Err(Error::InvalidConfig("name is required".into())),
    };
    Ok(Request { env, version, network, config })
}

fn valid_network_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// libcni writes `cni.dev/valid-attachments`; older drafts said `cni.dev/attachments`.
pub(crate) fn valid_attachments(config: &Map<String, Value>) -> Result<Vec<Attachment>> {
    let list = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .iter()
        .find_map(|k| config.get(*k))
        .ok_or_else(|| {
            Error::InvalidConfig(
                "GC needs cni.dev/valid-attachments (refusing to treat a missing list as empty)".into(),
            )
        })?;
    let items = list
        .as_array()
        .ok_or_else(|| Error::InvalidConfig("cni.dev/valid-attachments must be an array".into()))?;
    items
        .iter()
        .map(|item| {
            let field = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
            match (field("containerID"), field("ifname")) {
                (Some(container_id), Some(ifname)) => Ok(Attachment { container_id, ifname }),
                _ => Err(Error::InvalidConfig(format!(
                    "valid attachment {item} needs string containerID and ifname"
                ))),
            }
        })
        .collect()
}

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Time since the plugin process started (since the first call, in tests): the `in …` of the
/// ADD and DEL log lines, so a runtime's CNI time can be read from the logs.
pub fn elapsed() -> std::time::Duration {
    STARTED.get_or_init(std::time::Instant::now).elapsed()
}

/// Process entry point for a plugin binary: handles `--version`/`--help`, reads the real
/// environment and stdin, prints the outcome and exits.
pub fn run(plugin: &dyn Plugin, name: &str, help: &str) -> ! {
    STARTED.get_or_init(std::time::Instant::now);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("--version" | "-v" | "version") => {
            println!(
                "{name} {} (CNI spec versions {})",
                env!("CARGO_PKG_VERSION"),
                version::SUPPORTED.join(", ")
            );
            std::process::exit(0);
        }
        Some("--help" | "-h" | "help") => {
            print!("{help}");
            std::process::exit(0);
        }
        Some(other) => {
            eprintln!("{name}: unexpected argument {other:?}; see {name} --help");
            std::process::exit(2);
        }
    }
    let vars: HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    // Without CNI_COMMAND this is a person at a terminal, not a runtime: do not wait on stdin.
    if vars.contains_key("CNI_COMMAND") {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let err = Error::Io(format!("reading stdin: {e}"));
            finish(&Outcome { stdout: err.to_json(version::CURRENT).to_string(), exit_code: 1 });
        }
    } else {
        eprintln!("{name}: CNI_COMMAND is not set; this is a CNI plugin run by a container runtime (see {name} --help)");
    }
    finish(&dispatch(&vars, &stdin, plugin))
}

fn finish(out: &Outcome) -> ! {
    let mut stdout = std::io::stdout().lock();
    if !out.stdout.is_empty() {
        let _ = writeln!(stdout, "{}", out.stdout);
    }
    let _ = stdout.flush();
    std::process::exit(out.exit_code)
}

#[cfg(test)]
mod tests;
