//! Delegation to the IPAM plugin: found in `CNI_PATH`, exec'd with our environment and the
//! same network config, its result or error passed back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::skel::error::{Error, Result};

pub fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf> {
    path.iter().map(|dir| dir.join(plugin)).find(|p| p.is_file()).ok_or_else(|| {
        let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
        Error::DelegateMissing(format!("{plugin} is not in CNI_PATH [{}]", dirs.join(", ")))
    })
}

/// Runs `command` on the plugin with our own environment (delegation keeps every `CNI_*`
/// variable but the command); `Ok(None)` for a success with empty output.
pub fn exec(binary: &Path, command: &str, stdin: &[u8]) -> Result<Option<Value>> {
    let mut cmd = Command::new(binary);
    cmd.env("CNI_COMMAND", command);
    run(cmd, binary, command, stdin)
}

/// Runs a prepared plugin command (environment set by the caller) and reads its answer.
pub fn run(mut cmd: Command, binary: &Path, command: &str, stdin: &[u8]) -> Result<Option<Value>> {
    let name =
        binary.file_name().map_or_else(|| binary.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
            Error::Delegate { plugin: name.clone(), code: 112, msg: format!("cannot run: {e}") }
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin is judged by its output below.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| Error::Delegate {
        plugin: name.clone(),
        code: 112,
        msg: format!("waiting: {e}"),
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(text.trim()).ok();
    if out.status.success() {
        return match (text.trim().is_empty(), parsed) {
            (true, _) => Ok(None),
            (false, Some(v)) => Ok(Some(v)),
            (false, None) => Err(Error::Delegate {
                plugin: name,
                code: 112,
                msg: format!("{command} succeeded but printed no JSON: {}", text.trim()),
            }),
        };
    }
    let code = parsed.as_ref().and_then(|v| v["code"].as_u64()).map(|c| c as u32);
    let msg = parsed.as_ref().and_then(|v| v["msg"].as_str()).map(str::to_string);
    match (code, msg) {
        (Some(code), Some(msg)) => Err(Error::Delegate { plugin: name, code, msg }),
        _ => Err(Error::Delegate {
            plugin: name,
            code: 112,
            msg: format!(
                "{command} failed ({}) without a CNI error: {} {}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}
