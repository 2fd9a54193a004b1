//! Running the kernel tools, behind a trait so the Linux dataplane can be tested without root.

use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

pub trait Exec {
    /// Runs `program args` with `stdin`; returns stdout, or the failure with stderr.
    fn run(&self, program: &str, args: &[&str], stdin: &str) -> Result<String>;
}

/// Real processes, optionally started through a wrapper such as `ip netns exec NAME`.
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub wrapper: Vec<String>,
}

impl Exec for Process {
    fn run(&self, program: &str, args: &[&str], stdin: &str) -> Result<String> {
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        // The input goes through an unlinked file, written in full before the tool starts: if the
        // agent is killed, the tool still reads a whole script (never half of one).
        let failed = |reason: String| Error::Exec { program: program.into(), reason };
        let mut input = tempfile::tempfile().map_err(|e| failed(format!("staging stdin: {e}")))?;
        input
            .write_all(stdin.as_bytes())
            .and_then(|_| input.seek(SeekFrom::Start(0)))
            .map_err(|e| failed(format!("staging stdin: {e}")))?;
        let child = cmd
            .args(args)
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Exec { program: program.into(), reason: e.to_string() })?;
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Exec { program: program.into(), reason: e.to_string() })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Failed {
                program: program.into(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}
