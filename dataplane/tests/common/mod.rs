//! Network namespaces the tests create (and remove, even when they fail), the root check,
//! and the conformance cases' IR.
#![allow(dead_code)]

use std::process::Command;

use policy_compiler::compile::compile;
use policy_compiler::ir::Ir;
use policy_compiler::snapshot::Snapshot;

/// Fails loudly (never skips) when not root.
pub fn require_root(what: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "{what} needs root: sudo scripts/test.sh"
    );
}

pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root("this test builds a network namespace");
        let name = format!("dp-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Netns(name)
    }

    /// Runs a command here; (succeeded, stdout or stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip").args(["netns", "exec", &self.0]).args(args).output().unwrap();
        let text = if out.status.success() { &out.stdout } else { &out.stderr };
        (out.status.success(), String::from_utf8_lossy(text).into_owned())
    }

    /// `nft` here; panics with its error when it fails.
    pub fn nft(&self, script: &str) -> String {
        let (ok, text) = self.run(&["nft", script]);
        assert!(ok, "nft {script}: {text}");
        text
    }

    /// Runs `f` on a thread inside this namespace (the sockets it opens live here).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

pub fn case_ir(name: &str) -> Ir {
    let path = format!("{}/../testdata/policy/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    compile(&Snapshot::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap().cluster)
}
