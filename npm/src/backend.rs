//! The backend for `azure-npm start`, `cleanup` and `debug explain --dataplane`: chosen by
//! `dataplane::choice` from the evidence on this node, opened, and watched for a change of
//! that evidence.

use std::time::{Duration, Instant};

use dataplane::choice::{self, Backend, Choice, Evidence};
use dataplane::exec::Process;
use dataplane::Dataplane;

use crate::error::{Error, Result};

/// Gathers the evidence and decides; the error says what was looked for.
pub fn choose(choice: Choice) -> Result<(Backend, Evidence)> {
    let evidence = choice::gather(&Process::default());
    let backend = choice::decide(choice, &evidence).map_err(Error::Input)?;
    Ok((backend, evidence))
}

/// Opens the chosen backend.
pub fn open(backend: Backend) -> Result<Box<dyn Dataplane>> {
    Ok(dataplane::open(backend, Box::new(Process::default()))?)
}

/// A check for the agent's verifications: every `every`, the evidence again; a line when it
/// now names another backend than the one programmed (`None` once it agrees again).
pub fn recheck(choice: Choice, chosen: Backend, every: Duration) -> Box<dyn FnMut() -> Option<String>> {
    let mut last: Option<(Instant, Option<String>)> = None;
    Box::new(move || {
        if let Some((at, said)) = &last {
            if at.elapsed() < every {
                return said.clone();
            }
        }
        let evidence = choice::gather(&Process::default());
        let said = match choice::decide(choice, &evidence) {
            Ok(now) if now == chosen => None,
            Ok(now) => Some(format!(
                "the evidence now names {now}, not {chosen}; still programming {chosen} (restart the agent to choose again): {}",
                evidence.describe()
            )),
            Err(e) => Some(format!("the evidence no longer supports {chosen} ({e}); still programming it")),
        };
        last = Some((Instant::now(), said.clone()));
        said
    })
}

/// Removes what either backend left. Returns what was done, or every failure.
pub fn cleanup_all() -> Result<Vec<String>> {
    let evidence = choice::gather(&Process::default());
    let mut done = Vec::new();
    let mut failed = Vec::new();
    if evidence.nf_tables.is_ok() {
        match dataplane::nftables::Nftables::new().and_then(|mut n| n.cleanup()) {
            Ok(()) => done.push("nftables: table inet azure-npm removed (if it was the agent's)".to_string()),
            Err(e) => failed.push(format!("nftables: {e}")),
        }
    }
    match evidence.variant() {
        Some(v) => {
            let mut ipt = dataplane::iptables::Iptables::for_variant(Box::new(Process::default()), v);
            match ipt.cleanup() {
                Ok(()) => {
                    done.push(format!("iptables ({}): the agent's chains, jumps and sets removed", v.name()))
                }
                Err(e) => failed.push(format!("iptables ({}): {e}", v.name())),
            }
        }
        None => done.push(format!("iptables: nothing to clean ({})", evidence.describe())),
    }
    if failed.is_empty() {
        Ok(done)
    } else {
        Err(Error::Input(format!("cleanup failed: {}", failed.join("; "))))
    }
}
