//! The `CNI_*` environment variables, parsed and validated before any plugin code runs.

use std::collections::HashMap;
use std::path::PathBuf;

use super::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    reason: format!(
                        "unknown command {other:?} (expected ADD, DEL, CHECK, VERSION, STATUS or GC)"
                    ),
                })
            }
        })
    }

    /// Commands that act on one container attachment.
    fn per_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// Everything the runtime passed in the environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS`, split on `;` into key/value pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Env> {
        let get = |name: &str| vars.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            Some(c) => Command::parse(c)?,
            None => return Err(missing("CNI_COMMAND")),
        };
        let per_container = command.per_container();
        let container_id = match get("CNI_CONTAINERID") {
            Some(id) => {
                validate_container_id(id)?;
                id.to_string()
            }
            None if per_container => return Err(missing("CNI_CONTAINERID")),
            None => String::new(),
        };
        let ifname = match get("CNI_IFNAME") {
            Some(name) => {
                validate_ifname(name)?;
                name.to_string()
            }
            None if per_container => return Err(missing("CNI_IFNAME")),
            None => String::new(),
        };
        // DEL must work after the namespace is gone, so the path is optional there.
        let netns = get("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            return Err(missing("CNI_NETNS"));
        }
        let path: Vec<PathBuf> = get("CNI_PATH")
            .map(|p| p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default();
        if path.is_empty() && per_container {
            return Err(missing("CNI_PATH"));
        }
        let args = match get("CNI_ARGS") {
            Some(a) => parse_args(a)?,
            None => Vec::new(),
        };
        Ok(Env { command, container_id, netns, ifname, args, path })
    }

    /// The value of one `CNI_ARGS` key, e.g. `K8S_POD_NAME`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn missing(name: &'static str) -> Error {
    Error::InvalidEnv { name, reason: "required but not set".into() }
}

/// The spec allows letters, digits, `_`, `.` and `-`, starting with a letter or digit.
fn validate_container_id(id: &str) -> Result<()> {
    let ok_start = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_start && ok_chars {
        Ok(())
    } else {
        Err(Error::InvalidEnv {
            name: "CNI_CONTAINERID",
            reason: format!(
                "{id:?} must start with a letter or digit and contain only letters, digits, '_', '.' or '-'"
            ),
        })
    }
}

/// Linux interface names: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
fn validate_ifname(name: &str) -> Result<()> {
    let reason = if name.len() > 15 {
        Some("is longer than 15 characters")
    } else if name == "." || name == ".." {
        Some("is not a valid interface name")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::InvalidEnv { name: "CNI_IFNAME", reason: format!("{name:?} {r}") }),
        None => Ok(()),
    }
}

fn parse_args(s: &str) -> Result<Vec<(String, String)>> {
    s.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::InvalidEnv { name: "CNI_ARGS", reason: format!("{kv:?} is not KEY=VALUE") }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn add_vars() -> HashMap<String, String> {
        vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web-0"),
        ])
    }

    fn failing_var(v: HashMap<String, String>) -> &'static str {
        match Env::from_vars(&v).unwrap_err() {
            Error::InvalidEnv { name, .. } => name,
            other => panic!("expected InvalidEnv, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_add_environment_parses() {
        let env = Env::from_vars(&add_vars()).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.path.len(), 2);
        assert_eq!(env.arg("K8S_POD_NAME"), Some("web-0"));
    }

    #[test]
    fn each_missing_variable_is_named() {
        for name in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let mut v = add_vars();
            v.remove(name);
            assert_eq!(failing_var(v), name);
        }
    }

    #[test]
    fn del_works_without_a_netns() {
        let mut v = add_vars();
        v.insert("CNI_COMMAND".into(), "DEL".into());
        v.remove("CNI_NETNS");
        assert!(Env::from_vars(&v).unwrap().netns.is_none());
    }

    #[test]
    fn bad_values_are_rejected_with_the_variable_named() {
        let cases = [
            ("CNI_COMMAND", "PUT"),
            ("CNI_CONTAINERID", "-leading-dash"),
            ("CNI_CONTAINERID", "has space"),
            ("CNI_IFNAME", "a-very-long-ifname"),
            ("CNI_IFNAME", "eth/0"),
            ("CNI_IFNAME", ".."),
            ("CNI_ARGS", "novalue"),
        ];
        for (name, value) in cases {
            let mut v = add_vars();
            v.insert(name.into(), value.into());
            assert_eq!(failing_var(v), name, "{name}={value}");
        }
    }

    #[test]
    fn version_needs_only_the_command() {
        let env = Env::from_vars(&vars(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(env.command, Command::Version);
    }
}
