use std::cell::RefCell;

use super::*;
use crate::skel::result::IpConfig;

/// Records which command ran and answers with a fixed result or error.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<String>>,
    fail_with: Option<fn() -> Error>,
}

impl Recorder {
    fn outcome(&self, name: &str) -> Result<()> {
        self.calls.borrow_mut().push(name.into());
        self.fail_with.map_or(Ok(()), |f| Err(f()))
    }
}

impl Plugin for Recorder {
    fn add(&self, _: &Request) -> Result<CniResult> {
        self.outcome("add")?;
        Ok(CniResult {
            ips: vec![IpConfig {
                version: None,
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..CniResult::default()
        })
    }
    fn del(&self, _: &Request) -> Result<()> {
        self.outcome("del")
    }
    fn check(&self, _: &Request) -> Result<()> {
        self.outcome("check")
    }
    fn status(&self, _: &Request) -> Result<()> {
        self.outcome("status")
    }
    fn gc(&self, _: &Request, valid: &[Attachment]) -> Result<()> {
        self.outcome(&format!("gc {}", valid.len()))
    }
}

fn env(command: &str) -> HashMap<String, String> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn config(version: &str) -> String {
    format!(r#"{{"cniVersion":"{version}","name":"vnet","type":"x"}}"#)
}

fn code_of(out: &Outcome) -> u64 {
    assert_ne!(out.exit_code, 0, "errors exit non-zero: {out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
    v["code"].as_u64().unwrap()
}

#[test]
fn add_prints_the_result_in_the_configs_version() {
    let p = Recorder::default();
    let out = dispatch(&env("ADD"), config("0.4.0").as_bytes(), &p);
    assert_eq!(out.exit_code, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((v["cniVersion"].as_str(), v["ips"][0]["version"].as_str()), (Some("0.4.0"), Some("4")));
    assert_eq!(*p.calls.borrow(), ["add"]);
}

#[test]
fn version_lists_every_supported_version() {
    let out = dispatch(&env("VERSION"), config("1.1.0").as_bytes(), &Recorder::default());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["supportedVersions"], json!(version::SUPPORTED));
}

#[test]
fn del_check_status_and_gc_print_nothing_on_success() {
    let p = Recorder::default();
    let gc_config = r#"{"cniVersion":"1.1.0","name":"vnet","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#;
    for (cmd, conf) in [
        ("DEL", config("1.1.0")),
        ("CHECK", config("1.1.0")),
        ("STATUS", config("1.1.0")),
        ("GC", gc_config.into()),
    ] {
        let out = dispatch(&env(cmd), conf.as_bytes(), &p);
        assert_eq!(out, Outcome { stdout: String::new(), exit_code: 0 }, "{cmd}");
    }
    assert_eq!(*p.calls.borrow(), ["del", "check", "status", "gc 1"]);
}

#[test]
fn bad_input_gets_the_spec_code_and_never_reaches_the_plugin() {
    let p = Recorder::default();
    let mut no_ifname = env("ADD");
    no_ifname.remove("CNI_IFNAME");
    let cases: Vec<(HashMap<String, String>, String, u64)> = vec![
        (env("ADD"), "{not json".into(), 6),
        (env("ADD"), "".into(), 6),
        (env("ADD"), "[1,2]".into(), 6),
        (env("ADD"), config("0.2.0"), 1),
        (env("ADD"), config("9.9.9"), 1),
        (env("ADD"), r#"{"name":"vnet"}"#.into(), 7),
        (env("ADD"), r#"{"cniVersion":"1.0.0"}"#.into(), 7),
        (env("ADD"), r#"{"cniVersion":"1.0.0","name":"bad name"}"#.into(), 7),
        (env("CHECK"), config("0.3.1"), 1),
        (env("STATUS"), config("1.0.0"), 1),
        (env("GC"), config("1.0.0"), 1),
        (env("GC"), config("1.1.0"), 7),
        (env("BOGUS"), config("1.0.0"), 4),
        (no_ifname, config("1.0.0"), 4),
    ];
    for (vars, stdin, code) in cases {
        let out = dispatch(&vars, stdin.as_bytes(), &p);
        assert_eq!(code_of(&out), code, "{stdin}");
    }
    assert!(p.calls.borrow().is_empty());
}

#[test]
fn plugin_errors_keep_their_code_and_echo_the_version() {
    let p =
        Recorder { fail_with: Some(|| Error::PoolExhausted("all 3 in use".into())), ..Recorder::default() };
    let out = dispatch(&env("ADD"), config("0.3.0").as_bytes(), &p);
    assert_eq!(code_of(&out), 101);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "0.3.0");
}
