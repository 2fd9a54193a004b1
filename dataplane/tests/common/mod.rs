//! Network namespaces the tests create (and remove, even when they fail), the root check,
//! and the conformance cases' IR.
#![allow(dead_code)]

use std::process::Command;

use policy_compiler::compile::compile;
use policy_compiler::ir::Ir;
use policy_compiler::snapshot::Snapshot;

pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("dp-{tag}-{}", std::process::id());
        testkit::add_netns(&name);
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
        testkit::enter(&self.0, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        testkit::del_netns(&self.0);
    }
}

pub fn case_ir(name: &str) -> Ir {
    let path = format!("{}/../testdata/policy/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    compile(&Snapshot::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap().cluster)
}
