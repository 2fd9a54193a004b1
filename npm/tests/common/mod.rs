//! Shared by the agent's privileged tests: namespaces they create and remove, the root check,
//! polling, and running code inside a namespace.
#![allow(dead_code)]

pub mod fake_api;
pub mod kernel;
pub mod kube;

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const NPM: &str = env!("CARGO_BIN_EXE_azure-npm");

/// A network namespace with `lo` up, deleted (with the processes registered) on drop.
pub struct Netns {
    pub name: String,
    pub children: Vec<Child>,
    /// A handle on a namespace another `Netns` owns: dropping it removes nothing.
    pub borrowed: bool,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("aznpm-{tag}-{}", std::process::id());
        testkit::add_netns(&name);
        Netns { name, children: Vec::new(), borrowed: false }
    }

    /// A handle for another thread (the namespace stays this one's to remove).
    pub fn borrow(&self) -> Netns {
        Netns { name: self.name.clone(), children: Vec::new(), borrowed: true }
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command in the namespace; panics with its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command(args[0]).args(&args[1..]).output().unwrap();
        check(args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agent's process runner, wrapped to run inside this namespace.
    pub fn process(&self) -> npm::dataplane::exec::Process {
        npm::dataplane::exec::Process {
            wrapper: vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone()],
        }
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens live here).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        testkit::enter(&self.name, f)
    }

    /// `GET path` from a local HTTP server in this namespace: (status line, body).
    pub fn http_get(&self, port: u16, path: &str) -> Option<(String, String)> {
        let path = path.to_string();
        self.enter(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            let (head, body) = text.split_once("\r\n\r\n")?;
            Some((head.lines().next()?.to_string(), body.to_string()))
        })
    }

    /// Starts `azure-npm start --source kube` here (verifying every second, metrics on
    /// 127.0.0.1:10091), logging to `log`; it is stopped with the namespace.
    pub fn start_kube_agent(&mut self, kubeconfig: &std::path::Path, log: &std::path::Path) {
        let agent = self
            .command(NPM)
            .args(["start", "--source", "kube", "--kubeconfig", kubeconfig.to_str().unwrap()])
            .args([
                "--verify-interval-secs",
                "1",
                "--metrics-addr",
                "127.0.0.1:10091",
                "--dataplane",
                "iptables",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.children.push(agent);
    }

    /// The kernel holds exactly what the compiler makes of these YAML documents, hooks included.
    pub fn holds(&self, docs: &[&str]) -> bool {
        let cluster = policy_compiler::snapshot::Snapshot::from_yaml(&docs.join("\n---\n")).unwrap().cluster;
        let expected =
            npm::dataplane::iptables::readback::kernel_shape(&policy_compiler::compile::compile(&cluster));
        let view = self.kernel();
        view.ir == expected && view.wired(&["FORWARD", "OUTPUT"])
    }

    /// The agent's rules and sets as the kernel lists them.
    pub fn kernel(&self) -> npm::dataplane::iptables::readback::KernelView {
        let sets = self.run(&["ipset", "save"]);
        let rules = self.run(&["iptables-save", "-t", "filter"]);
        npm::dataplane::iptables::readback::KernelView::read(&sets, &rules).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.borrowed {
            return;
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        testkit::del_netns(&self.name);
    }
}

fn check(args: &[&str], out: &Output) {
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    check(args, &out);
}

/// Polls until `ok` holds; panics after `secs` seconds naming what it waited for.
pub fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out after {secs}s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A metric's value in Prometheus text (the sum over its label sets).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
