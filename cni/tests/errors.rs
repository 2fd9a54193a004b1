//! Every bad input and fault named by the issue, through the real binary, with its exact code.

mod common;

use std::fs::{File, OpenOptions};

use common::{cni_env, Emulator, Node, Reply, IPAM};
use serde_json::{json, Value};

/// Runs the plugin with raw stdin bytes (for input that is not JSON).
fn raw_call(node: &Node, command: &str, stdin: &[u8], drop_var: Option<&str>) -> Reply {
    let mut cmd = node.ns.command(IPAM);
    cni_env(&mut cmd, command, "c1", "eth0", &node.ns.path());
    if let Some(v) = drop_var {
        cmd.env_remove(v);
    }
    Reply::from_output(common::spawn_with_stdin(cmd, stdin).wait_with_output().unwrap())
}

fn with_ipam(node: &Node, edit: &[(&str, Value)]) -> Value {
    let mut conf = node.config("1.0.0");
    for (k, v) in edit {
        conf["ipam"][*k] = v.clone();
    }
    conf
}

#[test]
fn malformed_input_and_environment() {
    let node = Node::new("input", 3);
    let good = node.config("1.0.0").to_string();
    let cases: [(&str, &[u8], Option<&str>, u64); 6] = [
        ("malformed JSON", b"{\"cniVersion\": ", None, 6),
        ("empty stdin", b"", None, 6),
        ("missing CNI_CONTAINERID", good.as_bytes(), Some("CNI_CONTAINERID"), 4),
        ("missing CNI_NETNS on ADD", good.as_bytes(), Some("CNI_NETNS"), 4),
        ("unsupported cniVersion", br#"{"cniVersion":"0.2.0","name":"vnet","ipam":{}}"#, None, 1),
        ("ipam section missing", br#"{"cniVersion":"1.0.0","name":"vnet"}"#, None, 7),
    ];
    for (what, stdin, drop_var, code) in cases {
        let reply = raw_call(&node, "ADD", stdin, drop_var);
        assert_eq!(reply.code(), code, "{what}: {}", reply.json);
    }
    assert_eq!(raw_call(&node, "FLY", good.as_bytes(), None).code(), 4, "unknown CNI_COMMAND");
}

#[test]
fn configuration_and_source_faults() {
    let node = Node::new("faults", 3);
    // A second host agent that answers too slowly, on another port.
    let _slow = Emulator::start(&node.ns, "168.63.129.16:8081", &node.xml, &["--delay-ms", "5000"]);
    let slow_url = "http://168.63.129.16:8081/machine/plugins?comp=nmagent&type=getinterfaceinfov1";
    let cases: Vec<(&str, Value, u64)> = vec![
        ("unknown environment", with_ipam(&node, &[("environment", json!("aws"))]), 7),
        ("wrong type names the field", with_ipam(&node, &[("stateFile", json!(42))]), 7),
        ("source unreachable (no route)", with_ipam(&node, &[("queryUrl", json!("http://10.99.0.1/x"))]), 11),
        (
            "source refuses the connection",
            with_ipam(&node, &[("queryUrl", json!("http://127.0.0.1:9/x"))]),
            11,
        ),
        (
            "source too slow (bounded timeout)",
            with_ipam(&node, &[("queryUrl", json!(slow_url)), ("queryTimeoutMs", json!(300))]),
            11,
        ),
        (
            "host agent answers 404",
            with_ipam(&node, &[("queryUrl", json!("http://168.63.129.16/nope"))]),
            103,
        ),
        (
            "interfaces file missing",
            with_ipam(
                &node,
                &[("environment", json!("mas")), ("interfacesFile", json!("/nonexistent/i.json"))],
            ),
            5,
        ),
    ];
    for (what, conf, code) in cases {
        let reply = node.ipam_call("ADD", "c1", &conf);
        assert_eq!(reply.code(), code, "{what}: {}", reply.json);
    }
}

#[test]
fn malformed_source_answers_and_no_matching_nic() {
    let node = Node::new("answers", 3);
    let conf = node.config("1.0.0");
    let valid = common::nmagent_xml(common::NODE_MAC, &common::secondaries(3));
    let huge = format!("{valid}<!--{}-->", "x".repeat(5 << 20));
    let entities = "<!DOCTYPE i [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>";
    let dtd = valid.replacen("<Interfaces", &format!("{entities}<Interfaces"), 1);
    let cases = [
        ("malformed XML", "<Interfaces><Interface", 104),
        ("XML of the wrong shape", "<Html/>", 104),
        ("an answer over 4 MiB", &*huge, 104),
        ("a DTD with entities (refused, never expanded)", &*dtd, 104),
        ("no NIC matches any MAC", &*common::nmagent_xml("02:00:00:00:00:99", &common::secondaries(3)), 105),
    ];
    for (what, body, code) in cases {
        node.set_answer(body);
        let reply = node.ipam_call("ADD", "c1", &conf);
        assert_eq!(reply.code(), code, "{what}: {}", reply.json);
    }
    let file = node.dir.path().join("interfaces.json");
    std::fs::write(&file, r#"{"Interfaces": [{"MacAddress": 7}]}"#).unwrap();
    let mas = with_ipam(&node, &[("environment", json!("mas")), ("interfacesFile", json!(file))]);
    assert_eq!(node.ipam_call("ADD", "c1", &mas).code(), 104, "malformed interfaces JSON");
}

#[test]
fn exhausted_pool_and_unavailable_requested_addresses() {
    let node = Node::new("pool", 2);
    let conf = node.config("1.0.0");
    node.ipam_call("ADD", "c1", &conf).address();
    node.ipam_call("ADD", "c2", &conf).address();
    assert_eq!(node.ipam_call("ADD", "c3", &conf).code(), 101, "exhausted pool");
    node.ipam_call("DEL", "c2", &conf);
    let taken = node.allocations()[0].0.clone();
    let mut want = conf.clone();
    want["runtimeConfig"] = json!({"ips": [taken]});
    let reply = node.ipam_call("ADD", "c3", &want);
    assert_eq!(reply.code(), 102, "requested address taken");
    assert!(reply.json["msg"].as_str().unwrap().contains("c1"), "names the holder: {}", reply.json);
    want["runtimeConfig"] = json!({"ips": ["10.240.9.9"]});
    assert_eq!(node.ipam_call("ADD", "c3", &want).code(), 102, "requested address outside the pool");
    want["runtimeConfig"] = json!({"ips": ["10.240.0.4"]});
    assert_eq!(node.ipam_call("ADD", "c3", &want).code(), 102, "the node's own primary address");
}

#[test]
fn lock_not_acquired_in_time_is_code_11() {
    let node = Node::new("lock", 3);
    let conf = with_ipam(&node, &[("lockTimeoutMs", json!(300))]);
    node.ipam_call("ADD", "c1", &conf).address(); // creates the state and lock files
    let mut lock_path = node.state_file().into_os_string();
    lock_path.push(".lock");
    let held = OpenOptions::new().write(true).open(&lock_path).unwrap();
    held.lock().unwrap();
    let reply = node.ipam_call("ADD", "c2", &conf);
    assert_eq!(reply.code(), 11, "{}", reply.json);
    assert_eq!(node.ipam_call("DEL", "c1", &conf).code(), 11);
    held.unlock().unwrap();
    node.ipam_call("ADD", "c2", &conf).address();
}

#[test]
fn corrupt_or_truncated_state_is_kept_untouched_and_reported() {
    let node = Node::new("corrupt", 3);
    let conf = node.config("1.1.0");
    node.ipam_call("ADD", "c1", &conf).address();
    let good = std::fs::read(node.state_file()).unwrap();
    for bad in [&b"not json at all"[..], &good[..good.len() / 2], b""] {
        std::fs::write(node.state_file(), bad).unwrap();
        for command in ["ADD", "DEL", "CHECK"] {
            let reply = node.ipam_call(command, "c1", &conf);
            assert_eq!(reply.code(), 100, "{command}: {}", reply.json);
            assert!(reply.json["details"].as_str().unwrap().contains("GC"), "says how to recover");
        }
        assert_eq!(std::fs::read(node.state_file()).unwrap(), bad, "the corrupt file is never overwritten");
    }
    // The documented recovery: move the file aside, then GC with the live attachments.
    let mut aside = node.state_file().into_os_string();
    aside.push(".bad");
    std::fs::rename(node.state_file(), &aside).unwrap();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(node.ipam_call("GC", "", &gc).ok);
    node.ipam_call("ADD", "c1", &conf).address();
}

#[test]
fn a_symlinked_state_file_is_read_but_never_written_through() {
    let node = Node::new("symlink", 3);
    let conf = node.config("1.1.0");
    node.ipam_call("ADD", "c1", &conf).address();
    let target = node.dir.path().join("elsewhere.json");
    std::fs::rename(node.state_file(), &target).unwrap();
    std::os::unix::fs::symlink(&target, node.state_file()).unwrap();
    let before = std::fs::read(&target).unwrap();
    node.ipam_call("ADD", "c2", &conf).address();
    assert_eq!(std::fs::read(&target).unwrap(), before, "the link's target is untouched");
    assert!(!node.state_file().symlink_metadata().unwrap().file_type().is_symlink(), "replaced by a file");
    let holders: Vec<String> = node.allocations().into_iter().map(|(_, id)| id).collect();
    assert_eq!(holders.len(), 2, "what the link held is kept: {holders:?}");
}

#[test]
fn an_unwritable_state_directory_is_code_5() {
    let node = Node::new("unwritable", 3);
    let blocker = node.dir.path().join("a-file");
    File::create(&blocker).unwrap();
    let conf = with_ipam(&node, &[("stateFile", json!(blocker.join("state.json")))]);
    assert_eq!(node.ipam_call("ADD", "c1", &conf).code(), 5);
    // Root ignores permission bits, so the other honest case is a read-only filesystem: mounted
    // inside `ip netns exec`'s private mount namespace, gone when the call ends.
    let ro = node.dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let conf = with_ipam(&node, &[("stateFile", json!(ro.join("state.json")))]);
    let mut cmd = node.ns.command("sh");
    cmd.args(["-c", &format!("mount -t tmpfs -o ro tmpfs {} && exec {IPAM}", ro.display())]);
    cni_env(&mut cmd, "ADD", "c1", "eth0", &node.ns.path());
    assert_eq!(Reply::from_output(common::pipe(cmd, &conf)).code(), 5);
}
