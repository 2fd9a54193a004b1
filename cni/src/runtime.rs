//! What a container runtime does with a network configuration list (libcni's behaviour, in
//! small): each plugin of a `.conflist` is exec'd in order on ADD with the previous plugin's
//! result as `prevResult`, in reverse order on DEL, with `cniVersion` and `name` copied in and
//! `runtimeConfig` holding only the capabilities a plugin declares. Used by the tests, the
//! benchmarks and the lab to drive the plugins exactly as kubelet's runtime would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Map, Value};

use crate::skel::error::{Error, Result};
use crate::vnet::delegate;

#[derive(Debug, Clone)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub plugins: Vec<Map<String, Value>>,
}

impl ConfList {
    /// Parses a `.conflist`, or a single `.conf` (treated as a list of one).
    pub fn parse(bytes: &[u8]) -> Result<ConfList> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::Decode(format!("network config: {e}")))?;
        let obj = v.as_object().ok_or_else(|| Error::Decode("network config must be an object".into()))?;
        let text = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::InvalidConfig(format!("{k} is required")))
        };
        let plugins = match obj.get("plugins") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|p| {
                    p.as_object()
                        .cloned()
                        .ok_or_else(|| Error::InvalidConfig("plugins[] must be objects".into()))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(Error::InvalidConfig("plugins must be an array".into())),
            None => vec![obj.clone()],
        };
        if plugins.is_empty() {
            return Err(Error::InvalidConfig("plugins is empty".into()));
        }
        Ok(ConfList { cni_version: text("cniVersion")?, name: text("name")?, plugins })
    }
}

/// One attachment, as the runtime describes it to every plugin.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
    /// Runtime-supplied capability values (`portMappings`, `dns`, `ips`, …).
    pub capabilities: HashMap<String, Value>,
    /// A command prefix to start plugins with, e.g. `ip netns exec NODE` to act as the
    /// runtime of a node that lives in a network namespace. Empty: run them directly.
    pub wrapper: Vec<String>,
}

impl Attachment {
    fn env(&self, command: &str) -> Vec<(String, String)> {
        // Runtimes (containerd, CRI-O) lead with IgnoreUnknown=1 so plugins that do not know
        // the K8S_* keys accept them.
        let mut args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !args.is_empty() && !self.args.iter().any(|(k, _)| k == "IgnoreUnknown") {
            args.insert(0, "IgnoreUnknown=1".into());
        }
        let path: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), self.netns.display().to_string()),
            ("CNI_IFNAME".into(), self.ifname.clone()),
            ("CNI_ARGS".into(), args.join(";")),
            ("CNI_PATH".into(), path.join(":")),
        ]
    }
}

/// The config one plugin receives.
fn plugin_config(
    list: &ConfList,
    plugin: &Map<String, Value>,
    at: &Attachment,
    prev: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("cniVersion".into(), list.cni_version.clone().into());
    conf.insert("name".into(), list.name.clone().into());
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let runtime: Map<String, Value> = at
        .capabilities
        .iter()
        .filter(|(k, _)| declared.and_then(|d| d.get(*k)).and_then(Value::as_bool) == Some(true))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    Value::Object(conf)
}

fn exec(
    list: &ConfList,
    plugin: &Map<String, Value>,
    at: &Attachment,
    command: &str,
    prev: Option<&Value>,
) -> Result<Option<Value>> {
    let kind = plugin
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidConfig("plugin without type".into()))?;
    let binary = delegate::find(kind, &at.path)?;
    let stdin = plugin_config(list, plugin, at, prev).to_string();
    let mut cmd = match at.wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    cmd.envs(at.env(command));
    delegate::run(cmd, &binary, command, stdin.as_bytes())
}

/// ADD through every plugin in order; returns the final result.
pub fn add(list: &ConfList, at: &Attachment) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for plugin in &list.plugins {
        prev = Some(
            exec(list, plugin, at, "ADD", prev.as_ref())?.unwrap_or_else(|| prev.clone().unwrap_or_default()),
        );
    }
    prev.ok_or_else(|| Error::InvalidConfig("no plugin returned a result".into()))
}

/// DEL through every plugin in reverse order (each is told the cached result); keeps going
/// past failures and returns the first.
pub fn del(list: &ConfList, at: &Attachment, cached: Option<&Value>) -> Result<()> {
    let mut first = None;
    for plugin in list.plugins.iter().rev() {
        if let Err(e) = exec(list, plugin, at, "DEL", cached) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK through every plugin in order with the cached result.
pub fn check(list: &ConfList, at: &Attachment, cached: &Value) -> Result<()> {
    for plugin in &list.plugins {
        exec(list, plugin, at, "CHECK", Some(cached))?;
    }
    Ok(())
}

/// STATUS through every plugin in order: is each ready for ADDs (CNI 1.1)?
pub fn status(list: &ConfList, at: &Attachment) -> Result<()> {
    for plugin in &list.plugins {
        exec(list, plugin, at, "STATUS", None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugins_get_name_version_prev_result_and_only_declared_capabilities() {
        let list = ConfList::parse(
            br#"{"cniVersion":"1.0.0","name":"azure","plugins":[
                {"type":"azure-vnet","capabilities":{"portMappings":true}},{"type":"tuning"}]}"#,
        )
        .unwrap();
        let at = Attachment {
            capabilities: HashMap::from([
                ("portMappings".to_string(), json!([{"hostPort": 80, "containerPort": 80}])),
                ("bandwidth".to_string(), json!({})),
            ]),
            ..Attachment::default()
        };
        let first = plugin_config(&list, &list.plugins[0], &at, None);
        assert_eq!((first["name"].as_str(), first["cniVersion"].as_str()), (Some("azure"), Some("1.0.0")));
        assert!(first["runtimeConfig"]["portMappings"].is_array());
        assert!(first["runtimeConfig"].get("bandwidth").is_none(), "undeclared capability");
        let second = plugin_config(&list, &list.plugins[1], &at, Some(&json!({"ips": []})));
        assert!(second.get("runtimeConfig").is_none());
        assert_eq!(second["prevResult"], json!({"ips": []}));
    }

    #[test]
    fn a_single_conf_is_a_list_of_one_and_bad_lists_are_refused() {
        assert_eq!(
            ConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"x"}"#).unwrap().plugins.len(),
            1
        );
        for bad in
            [&br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#[..], br#"{"name":"n","type":"x"}"#, b"[]"]
        {
            assert!(ConfList::parse(bad).is_err());
        }
    }
}
